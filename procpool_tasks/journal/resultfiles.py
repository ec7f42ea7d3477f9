"""Result files: ``results/<segment>/<offset>.json``, a task's states, appended one line
each; the last intact line counts."""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from types import TracebackType

from ..exceptions import JournalError
from ..portability import sync_data
from . import files
from .directory import _Directory
from .files import (
    _FILE_MODE,
    _OPEN_FLAGS,
    _directory,
    _fsync_directory,
    _open_directory,
    _read_all,
    _read_file,
    _write_file_atomically,
)
from .format import State, _unframe, decode_state, parse_id, state_line

#: Result directories (one per segment) a supervisor keeps open at most.
_KEPT_DIRECTORIES = 64


def result_file_name(record_id: str) -> tuple[str, str]:
    """A task's segment and the name of its result file in ``results/<segment>``."""
    segment, offset = parse_id(record_id)
    return segment, f"{offset:x}.json"


def _appended(line: bytes) -> bytes:
    """A framed state as appended to a result file: after a newline, so that a line torn
    before it (``_last_state``) cannot run into it."""
    return b"\n" + line


def _last_state(data: bytes) -> State | None:
    """The last intact state of a result file; None if it holds none yet.

    A line is torn while it is being appended, or by power loss before a supervisor
    replayed its WAL: then the state before it is the latest one that counts.
    """
    for line in reversed(data.split(b"\n")):
        if not line:
            continue
        try:
            return decode_state(_unframe(line))
        except (ValueError, KeyError, TypeError):
            continue
    return None


def _append_line(dir_fd: int, name: str, line: bytes, *, sync: bool = False) -> None:
    """Append to a result file, making it if need be; never through a planted symlink.

    The file is often there already, empty: made ahead of time (see
    ``Journal.prepare_result_file``). A symlink (or anything else planted in its place)
    is replaced whole by a file of our own that holds just this line. With ``sync``, the
    line and the file's name are on disk when this returns.
    """
    # O_NONBLOCK: a FIFO planted here fails at once (ENXIO) instead of hanging.
    flags = os.O_WRONLY | os.O_APPEND | os.O_NONBLOCK | _OPEN_FLAGS
    try:
        try:
            fd = os.open(name, flags, dir_fd=dir_fd)
        except FileNotFoundError:
            fd = os.open(name, flags | os.O_CREAT, _FILE_MODE, dir_fd=dir_fd)
    except OSError as error:
        if error.errno not in (errno.ELOOP, errno.EISDIR, errno.ENXIO):
            raise
        _write_file_atomically(dir_fd, name, line)
        if sync:
            fd = os.open(name, os.O_RDONLY | _OPEN_FLAGS, dir_fd=dir_fd)
            try:
                sync_data(fd)
            finally:
                os.close(fd)
            os.fsync(dir_fd)
        return
    try:
        files._write_all(fd, line)
        if sync:
            sync_data(fd)
    finally:
        os.close(fd)
    if sync:
        # A file survives power loss only once its directory entry is on disk; one made
        # by a claim, or ahead of it, may have been written since without a sync.
        os.fsync(dir_fd)


def _may_hold_a_state(entry: os.DirEntry[str]) -> bool:
    """Anything but an empty regular file (a symlink planted there included: reading it
    says so)."""
    try:
        if not entry.is_file(follow_symlinks=False):
            return True
        return entry.stat(follow_symlinks=False).st_size > 0
    except FileNotFoundError:
        return False  # pruned meanwhile


class ResultFile:
    """A task's result file, for a claim: its state read, then its next one appended,
    through one open of the file, where ``read_state`` and ``write_state`` open it once
    each (a supervisor claims every task). A file that is not there yet, or is not a
    plain file (planted), is left to those two, which deal with it as ever.
    """

    def __init__(self, result_files: _ResultFiles, record_id: str) -> None:
        self._result_files = result_files
        self._record_id = record_id
        self._fd: int | None = None

    def read_state(self) -> State | None:
        """As ``_ResultFiles.read_state``; the file stays open for ``write_state``."""
        self.close()
        self._fd = self._result_files._open_to_append(self._record_id)
        if self._fd is not None:
            try:
                return _last_state(_read_all(self._fd))
            except OSError:  # no file to read (a FIFO planted here, say)
                self.close()
        return self._result_files.read_state(self._record_id)

    def write_state(self, state: State) -> None:
        """As ``_ResultFiles.write_state``, to the file ``read_state`` read: a plain file
        is only ever appended to, never replaced, and the claim lock keeps other claims
        out meanwhile."""
        self.write_state_line(state_line(state))

    def write_state_line(self, line: bytes) -> None:
        """``write_state`` for a state framed already (``states.Claims``)."""
        if self._fd is None:
            self._result_files.write_state_line(self._record_id, line)
        else:
            files._write_all(self._fd, _appended(line))

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> ResultFile:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


class _ResultFiles(_Directory):
    """The tasks' states, as supervisors write them and ``get_result`` reads them."""

    def read_state(self, record_id: str) -> State | None:
        """The task's latest state, or None while no supervisor has touched it.

        Raises JournalError if a symlink was planted where its result file belongs.
        """
        segment, name = result_file_name(record_id)
        try:
            with self._results_directory(segment, create=False) as dir_fd:
                data = _read_file(name, dir_fd=dir_fd)
        except FileNotFoundError:
            return None
        except OSError as error:
            if error.errno == errno.ELOOP:
                raise JournalError.from_os_error(error) from error
            raise
        return _last_state(data)

    def result_file(self, record_id: str) -> ResultFile:
        """The task's result file, to read its state and append the next (a claim)."""
        return ResultFile(self, record_id)

    def _open_to_append(self, record_id: str) -> int | None:
        """The task's result file, open to read and append; None if it is not there, or
        cannot be opened so (a symlink, a directory or a socket planted there)."""
        segment, name = result_file_name(record_id)
        # O_NONBLOCK: a FIFO planted here does not hang the open, nor the read.
        flags = os.O_RDWR | os.O_APPEND | os.O_NONBLOCK | _OPEN_FLAGS
        try:
            with self._results_directory(segment, create=False) as dir_fd:
                return os.open(name, flags, dir_fd=dir_fd)
        except OSError:
            return None

    def write_state(self, state: State) -> None:
        """Append the task's new state to its result file; not synced (see the WAL for
        finished states)."""
        self.write_state_line(state.id, state_line(state))

    def write_state_line(self, record_id: str, line: bytes) -> None:
        """``write_state`` for a state framed already."""
        segment, name = result_file_name(record_id)
        with self._results_directory(segment, create=True) as dir_fd:
            _append_line(dir_fd, name, _appended(line))

    def write_state_durably(self, state: State) -> None:
        """Append the task's new state to its result file and sync it (with ``durable``).

        For the states of a handoff, which no WAL covers: once this returns, the state
        survives power loss, and a results directory made for it too.
        """
        segment, name = result_file_name(state.id)
        with self._results_directory(segment, create=True) as dir_fd:
            _append_line(dir_fd, name, _appended(state_line(state)), sync=self.durable)
        if self.durable:
            # Whoever made the file and its directory (a claim, or a supervisor's process
            # ahead of it) synced neither name: rare states, so both are synced each time.
            _fsync_directory(self.results_dir)

    def prepare_result_file(self, record_id: str) -> None:
        """Make the empty result file of a task that has none yet: it reads as no state.

        Creating a file (a new inode) is the costliest step of a task's first state
        change on ext4, and it holds the directory's lock meanwhile; a process of the
        supervisor's makes the files of the tasks it has queued, so that the claim
        only opens one and takes no lock of the directory. Never over a file that is
        there (``O_EXCL``). One made for a task that finished and was pruned meanwhile
        (by another supervisor) reads as pruned, as a missing one does: its segment is
        done (``was_pruned``); it goes with its segment.
        """
        segment, name = result_file_name(record_id)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _OPEN_FLAGS
        with self._results_directory(segment, create=True) as dir_fd:
            with contextlib.suppress(FileNotFoundError):
                # A look first, which takes no lock of the directory, as a create does:
                # a supervisor that starts makes the files of its backlog again.
                os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
                return
            with contextlib.suppress(FileExistsError):
                os.close(os.open(name, flags, _FILE_MODE, dir_fd=dir_fd))

    def ids_with_state(self, segment: str) -> frozenset[str]:
        """The ids of a segment's tasks whose result file may hold a state, from one
        listing: not those without a file, nor those whose file is empty (made ahead).

        A supervisor starting on a long backlog asks this once per segment instead of
        trying to open a result file per task: most have no state yet.
        """
        try:
            with self._results_directory(segment, create=False) as dir_fd:
                with os.scandir(dir_fd) as entries:
                    return frozenset(
                        f"{segment}-{entry.name.removesuffix('.json')}"
                        for entry in entries
                        if entry.name.endswith(".json")
                        and not entry.name.startswith(".")
                        and _may_hold_a_state(entry)
                    )
        except FileNotFoundError:
            return frozenset()

    def keep_directories_open(self) -> None:
        """Keep the result directories this process uses open until ``close``.

        For a supervisor, which reads and writes a task's result file two or three times:
        walking ``results/<segment>`` from the root each time (three opens, no symlink
        followed) was a third of its system calls. Web processes never keep them: a
        journal directory removed and made again must not swallow their writes.
        """
        if self._open_results_dirs is None:
            self._open_results_dirs = {}

    @contextlib.contextmanager
    def _results_directory(self, segment: str, *, create: bool) -> Iterator[int]:
        kept = self._open_results_dirs
        if kept is None:
            with _directory(self.path, "results", segment, create=create) as dir_fd:
                yield dir_fd
            return
        if segment not in kept:
            if len(kept) >= _KEPT_DIRECTORIES:
                os.close(kept.pop(next(iter(kept))))  # the oldest segment
            kept[segment] = _open_directory(self.path, "results", segment, create=create)
        yield kept[segment]
