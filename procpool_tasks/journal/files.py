"""Low-level file access: no open follows a symlink planted in the journal, and a file is
appended to or replaced whole, so that a reader never sees half of a write.

The other modules call ``files._write_all`` through this module, never a copy of it: a
test replaces it here (``tests.disk_full``) to make every write of the journal fail.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import itertools
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from ..exceptions import JournalError

_DIR_MODE = 0o700
_FILE_MODE = 0o600
_OPEN_FLAGS = os.O_CLOEXEC | os.O_NOFOLLOW


def _fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _make_private(directory: Path) -> None:
    """0700, whatever the umask or the mode an existing directory was made with.

    Called once ``_check_directory`` refused symlinks below the root and directories
    others can write to.
    """
    if stat.S_IMODE(os.stat(directory).st_mode) != _DIR_MODE:
        os.chmod(directory, _DIR_MODE)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _read_file(path: Path | str, *, dir_fd: int | None = None) -> bytes:
    """Read a whole file, refusing to follow a symlink planted in the journal."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | _OPEN_FLAGS, dir_fd=dir_fd)
    try:
        return _read_all(fd)
    finally:
        os.close(fd)


def _read_all(fd: int) -> bytes:
    """Read an open file from where it is to its end."""
    chunks = []
    while chunk := os.read(fd, 1 << 16):
        chunks.append(chunk)
    return b"".join(chunks)


def _write_file_atomically(dir_fd: int, name: str, data: bytes, *, sync: bool = False) -> None:
    """Replace ``name`` in a directory: readers see the old file or the new, never half.

    Not synced unless ``sync`` is set (states that must survive power loss are in a
    supervisor's WAL first); with it, the new file and its name are on disk on return.
    """
    tmp_name = f".{name}.{os.getpid()}-{next(_tmp_numbers)}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _OPEN_FLAGS
    fd = os.open(tmp_name, flags, _FILE_MODE, dir_fd=dir_fd)
    try:
        _write_all(fd, data)
        if sync:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp_name, dir_fd=dir_fd)
        raise
    os.close(fd)
    if _exchange(dir_fd, tmp_name, name):
        os.unlink(tmp_name, dir_fd=dir_fd)  # it holds the old state now
    else:
        os.replace(tmp_name, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    if sync:
        # The rename survives power loss only once its directory entry is on disk.
        os.fsync(dir_fd)


_tmp_numbers = itertools.count()
_RENAME_EXCHANGE = 2
_renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)


def _is_tmp_of(entry: str, name: str) -> bool:
    """Whether ``entry`` is a temporary file ``_write_file_atomically`` made for ``name``."""
    return entry.startswith(f".{name}.") and entry.endswith(".tmp")


def _exchange(dir_fd: int, tmp_name: str, name: str) -> bool:
    """Swap two files atomically (Linux); False if ``name`` is missing or it cannot.

    Replacing a file with ``rename`` makes ext4 start writing the new one out at once
    (its ``auto_da_alloc`` safety net), which tripled the cost of a state change; we do
    not need that net, finished states are in the synced WAL first. An exchange keeps
    the same promise to readers (the old file or the new, never none) without it.
    """
    global _renameat2
    if _renameat2 is None:
        return False
    done = _renameat2(dir_fd, os.fsencode(tmp_name), dir_fd, os.fsencode(name), _RENAME_EXCHANGE)
    if done == 0:
        return True
    if ctypes.get_errno() in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        _renameat2 = None  # this kernel or filesystem cannot: plain rename from now on
    return False


@contextlib.contextmanager
def _directory(root: Path, *names: str, create: bool) -> Iterator[int]:
    """Open ``root/names...`` as a directory fd for the block; see ``_open_directory``."""
    fd = _open_directory(root, *names, create=create)
    try:
        yield fd
    finally:
        os.close(fd)


def _open_directory(root: Path, *names: str, create: bool) -> int:
    """Open ``root/names...`` as a directory fd, following no symlink below ``root``.

    Each step is opened relative to the last with O_NOFOLLOW: a symlink planted for
    ``results`` itself, not only for its last component, is refused (JournalError).
    FileNotFoundError if a directory is missing and ``create`` is false.
    """
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    path = root
    try:
        for name in names:
            path = path / name
            child = _open_directory_at(fd, name, path, create=create)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def _open_directory_at(dir_fd: int, name: str, path: Path, *, create: bool) -> int:
    flags = os.O_RDONLY | os.O_DIRECTORY | _OPEN_FLAGS
    try:
        try:
            return os.open(name, flags, dir_fd=dir_fd)
        except FileNotFoundError:
            if not create:
                raise
            with contextlib.suppress(FileExistsError):
                os.mkdir(name, _DIR_MODE, dir_fd=dir_fd)
            return os.open(name, flags, dir_fd=dir_fd)
    except OSError as error:
        if error.errno in (errno.ELOOP, errno.ENOTDIR):
            message = "a symlink was planted in the journal"
            raise JournalError(error.errno, message, str(path)) from error
        raise


def _read_line_at(fd: int, offset: int) -> bytes | None:
    """The line that starts at ``offset`` (without its newline); None if unfinished."""
    buffer = b""
    while True:
        chunk = os.pread(fd, 1 << 16, offset + len(buffer))
        if not chunk:
            return None
        end = chunk.find(b"\n")
        if end >= 0:
            return buffer + chunk[:end]
        buffer += chunk


def _is_flocked(path: Path) -> bool:
    """Is a live process appending to this segment (holding its flock)?"""
    try:
        fd = os.open(path, os.O_RDONLY | _OPEN_FLAGS)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False
