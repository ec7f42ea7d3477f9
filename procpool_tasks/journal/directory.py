"""A journal directory: its tree of directories (0700, no planted symlink) and its locks."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import threading
from pathlib import Path

from ..exceptions import JournalError
from .files import _DIR_MODE, _FILE_MODE, _OPEN_FLAGS, _make_private


class ClaimLock:
    """An exclusive ``flock`` on a lock file (``claim.lock``), kept open between uses.

    A ``filelock.FileLock`` opens, stats and creates the file's directory on every
    acquire, which cost more than the claim itself. The flock is the same kind that
    filelock takes, so supervisors of either kind exclude each other. The thread lock
    makes the one open file safe to share between threads of a process.
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._fd: int | None = None
        self._thread_lock = threading.Lock()

    def __enter__(self) -> None:
        self.acquire()

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    def acquire(self, *, blocking: bool = True) -> bool:
        """Take the lock; without ``blocking``, False at once if another holds it."""
        if not self._thread_lock.acquire(blocking=blocking):
            return False
        try:
            if self._fd is None:
                flags = os.O_RDWR | os.O_CREAT | _OPEN_FLAGS
                self._fd = os.open(self._path, flags, _FILE_MODE)
            fcntl.flock(self._fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            self._thread_lock.release()
            return False
        except BaseException:
            self._thread_lock.release()
            raise
        return True

    def release(self) -> None:
        assert self._fd is not None  # noqa: S101 (acquire opened it)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._thread_lock.release()

    def close(self) -> None:
        with self._thread_lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


class _Directory:
    """One journal directory: its paths, its tree and its locks (the base of ``Journal``).

    Each concern of ``Journal`` is a subclass of this one in a module of its own.
    """

    def __init__(self, path: Path | str, *, durable: bool = True) -> None:
        self.path = Path(path)
        self.durable = durable
        self.segments_dir = self.path / "segments"
        self.results_dir = self.path / "results"
        self.wal_dir = self.path / "wal"
        self.workers_dir = self.path / "workers"
        self.quarantine_dir = self.path / "quarantine"
        self.schedules_dir = self.path / "schedules"
        self._ready = False
        self._claim_lock = ClaimLock(self.path / "claim.lock")
        self._history_lock = ClaimLock(self.path / "history.lock")
        self._schedule_lock = ClaimLock(self.path / "schedules.lock")
        self._handoff_lock = ClaimLock(self.path / "handoff.lock")
        #: results/<segment> fds kept open by ``keep_directories_open`` (supervisors).
        self._open_results_dirs: dict[str, int] | None = None
        #: The segments directory's, opened once kept directories ask about a segment.
        self._open_segments_dir: int | None = None

    def ensure(self) -> None:
        """Create the directory tree (0700) if needed; JournalError if it is unsafe."""
        if self._ready:
            return
        try:
            if not self.path.exists():
                # mkdir's mode passes through the umask: _make_private below fixes it.
                self.path.mkdir(mode=_DIR_MODE, parents=True)
        except FileExistsError:
            pass
        except OSError as error:
            raise JournalError(
                error.errno,
                f"cannot create the journal directory: {error.strerror}",
                str(self.path),
            ) from error
        self.check_permissions()
        _make_private(self.path)
        made = False
        for directory in (
            self.segments_dir,
            self.results_dir,
            self.wal_dir,
            self.workers_dir,
            self.quarantine_dir,
            self.schedules_dir,
        ):
            with contextlib.suppress(FileExistsError):
                directory.mkdir(mode=_DIR_MODE)
                made = True
            self._check_directory(directory)
            _make_private(directory)
        if made:
            self._write_gitignore()
        self._ready = True

    def _write_gitignore(self) -> None:
        """Keep a new journal out of git: a ``.gitignore`` of ``*`` (itself included).

        Only when the tree is made, so that one deleted on purpose stays deleted; one the
        project put there is kept. Nothing else reads it, and a journal works without it.
        """
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _OPEN_FLAGS
        with contextlib.suppress(OSError):
            fd = os.open(self.path / ".gitignore", flags, _FILE_MODE)
            try:
                os.write(fd, b"*\n")
            finally:
                os.close(fd)

    def is_writable(self) -> bool:
        """Whether this process may write the journal's files (not a read-only mount, nor
        a directory it may only read); readers that would keep summaries ask first."""
        return all(os.access(path, os.W_OK) for path in (self.path, self.segments_dir))

    def check_permissions(self) -> None:
        """JournalError unless the journal is a real directory only its owner can write."""
        self._check_directory(self.path)

    def _check_directory(self, path: Path) -> None:
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            return
        if stat.S_ISLNK(info.st_mode) and path != self.path:
            raise JournalError(errno.ELOOP, "a symlink was planted in the journal", str(path))
        if stat.S_ISLNK(info.st_mode):
            info = os.stat(path)
        if not stat.S_ISDIR(info.st_mode):
            raise JournalError(errno.ENOTDIR, "the journal path is not a directory", str(path))
        if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise JournalError(
                errno.EPERM,
                f"the journal directory is writable by other users (mode "
                f"{stat.S_IMODE(info.st_mode):o}); run chmod 700 on it",
                str(path),
            )
        if os.geteuid() != info.st_uid:
            raise JournalError(
                errno.EPERM, "the journal directory belongs to another user", str(path)
            )

    def close(self) -> None:
        """Close what ``keep_directories_open`` and ``claim_lock`` kept open."""
        for fd in (self._open_results_dirs or {}).values():
            os.close(fd)
        self._open_results_dirs = None
        self._forget_segments_directory()
        self._claim_lock.close()
        self._history_lock.close()
        self._schedule_lock.close()
        self._handoff_lock.close()

    def _forget_segments_directory(self) -> None:
        """Close the segments directory's fd (``was_pruned``); it is opened again if asked."""
        if self._open_segments_dir is not None:
            os.close(self._open_segments_dir)
            self._open_segments_dir = None

    def claim_lock(self) -> ClaimLock:
        """The journal-wide lock under which a READY task becomes RUNNING (one claim)."""
        return self._claim_lock

    def handoff_lock(self) -> ClaimLock:
        """Held by the one ``procpool_handoff`` that runs on this journal (``handoff``).

        Whoever holds it knows that a task left HANDING_OFF by another process was left by
        one that died: its lock went with it.
        """
        return self._handoff_lock

    def has_handoff_lock(self) -> bool:
        """Whether a handoff ever ran here (made its lock file): a dry run makes none."""
        return (self.path / "handoff.lock").exists()

    def history_lock(self) -> ClaimLock:
        """The lock for changing finished history: summaries, pruning, re-queues.

        Taken before the claim lock when both are needed. One summary writer at a time
        means a summary computed before a re-queue can never be written after it.
        """
        return self._history_lock
