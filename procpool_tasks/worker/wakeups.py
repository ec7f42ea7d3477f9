"""What wakes a supervisor: a self-pipe, and changes to the journal's segments.

The supervisor's main thread waits in one selector (``supervisor``). Signals reach it
through ``signal.set_wakeup_fd`` on the wake pipe. Journal changes come from an inotify
descriptor on ``segments/`` in the same selector, on Linux: a new record wakes the
supervisor within a system call, with no thread that polls (watchfiles' own loop woke a
thousand times a second to look at its stop flag). Elsewhere a watchfiles thread turns
its events into wake-ups, through the wake pipe.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import threading
from pathlib import Path

import watchfiles

from ..portability import HAS_INOTIFY

logger = logging.getLogger(__name__)

__all__ = ["JournalWatch", "WakePipe"]

_IN_NONBLOCK = os.O_NONBLOCK
_IN_CLOEXEC = os.O_CLOEXEC
#: Every way a segment changes: IN_MODIFY, IN_CLOSE_WRITE, IN_MOVED_TO, IN_CREATE, IN_DELETE.
_IN_EVENTS = 0x002 | 0x008 | 0x080 | 0x100 | 0x200


class WakePipe:
    """A non-blocking pipe: anything written wakes the selector that watches ``fileno``."""

    def __init__(self) -> None:
        self._read_fd, self._write_fd = os.pipe()  # not inheritable (PEP 446); no pipe2 on macOS
        for fd in (self._read_fd, self._write_fd):
            os.set_blocking(fd, False)

    def fileno(self) -> int:
        return self._read_fd

    @property
    def write_fd(self) -> int:
        return self._write_fd

    def wake(self) -> None:
        with contextlib.suppress(BlockingIOError):  # full: it will wake anyway
            os.write(self._write_fd, b"\0")

    def drain(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self._read_fd, 4096):
                pass

    def close(self) -> None:
        os.close(self._read_fd)
        os.close(self._write_fd)


class JournalWatch:
    """Notices changes to a journal's ``segments/`` directory.

    ``fileno`` is an inotify descriptor to put in a selector, or the wake pipe's when a
    watchfiles thread stands in for inotify; ``drain`` empties it after a wake-up.
    """

    def __init__(self, directory: Path, wake: WakePipe) -> None:
        self._directory = directory
        self._wake = wake
        self._stop = threading.Event()
        self._inotify = _inotify_watch(directory)
        if self._inotify is None:
            threading.Thread(target=self._watch, name="procpool-watch", daemon=True).start()

    @property
    def uses_inotify(self) -> bool:
        return self._inotify is not None

    def fileno(self) -> int:
        return self._inotify if self._inotify is not None else self._wake.fileno()

    def drain(self) -> None:
        if self._inotify is None:
            return
        with contextlib.suppress(BlockingIOError):
            while os.read(self._inotify, 65536):
                pass

    def close(self) -> None:
        self._stop.set()
        if self._inotify is not None:
            os.close(self._inotify)
            self._inotify = None

    def _watch(self) -> None:
        """Where inotify is missing: watchfiles' events, as wake-ups (ms, not a poll)."""
        try:
            for _changes in watchfiles.watch(
                self._directory,
                watch_filter=None,
                debounce=1,
                step=1,
                stop_event=self._stop,
                raise_interrupt=False,
            ):
                self._wake.wake()
        except Exception:
            logger.exception("Journal notifications failed; the supervisor polls instead")


def _inotify_watch(directory: Path) -> int | None:
    """An inotify descriptor watching ``directory``; None where there is none (not Linux)."""
    if not HAS_INOTIFY:
        return None
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name, use_errno=True)
        init, add = libc.inotify_init1, libc.inotify_add_watch
    except (OSError, AttributeError):
        return None
    fd = int(init(_IN_NONBLOCK | _IN_CLOEXEC))
    if fd < 0:
        return None
    if add(fd, os.fsencode(directory), _IN_EVENTS) < 0:
        os.close(fd)
        return None
    return fd
