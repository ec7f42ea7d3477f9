"""Tie a process's life to another's, so that no orphan goes on working unsupervised; and
when a supervisor's helper process that ended is started again."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import select
import signal
import threading
import time
from collections.abc import Callable

from ..journal.heartbeats import is_running
from ..portability import HAS_PARENT_DEATH_SIGNAL, HAS_PIDFD

__all__ = ["Restarts", "die_with_parent", "die_with_process", "watch_process"]

_PR_SET_PDEATHSIG = 1
#: How long after a helper process could not start, or died, another is tried; each
#: failure in a row doubles it, up to ``RESTART_AFTER_MAX_S``.
RESTART_AFTER_S = 5.0
RESTART_AFTER_MAX_S = 300.0
#: Where pidfds are missing (not Linux, or a kernel before 5.3): how often to look.
_POLL_S = 1.0


def die_with_parent(signum: int = signal.SIGKILL, *, parent: int | None = None) -> None:
    """Have the kernel send ``signum`` to this process when its parent dies.

    ``parent`` is the pid the caller expects as its parent (default: the current one); if
    that process is already gone, the signal is sent at once. The kernel does it on Linux
    (prctl); elsewhere ``die_with_process`` watches the parent.
    """
    expected = os.getppid() if parent is None else parent
    if not HAS_PARENT_DEATH_SIGNAL:
        die_with_process(expected, signum)
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signum)
    # The parent may have died before prctl took effect; then no signal would ever come.
    if os.getppid() != expected:
        os.kill(os.getpid(), signum)


def die_with_process(pid: int, signum: int = signal.SIGKILL) -> None:
    """Send ``signum`` to this process as soon as process ``pid`` (not our parent) exits.

    For worker processes, whose parent is the zygote, not the supervisor: a parent-death
    signal would come only once the zygote noticed the supervisor's death, and the
    children would meanwhile finish a task that the next supervisor runs again. A daemon
    thread waits on a pidfd (no polling); where there is none, it looks every second.
    """
    try:
        pidfd = os.pidfd_open(pid) if HAS_PIDFD else None
    except OSError:
        pidfd = None
    if pidfd is None and not is_running(pid):
        os.kill(os.getpid(), signum)
        return
    thread = threading.Thread(
        target=_wait_then_kill, args=(pid, pidfd, signum), name="procpool-lifeline", daemon=True
    )
    thread.start()


def watch_process(pid: int) -> Callable[[], bool]:
    """A check of whether process ``pid`` (not our parent) still runs, cheap enough to
    ask before each write that only it may have asked for: one poll of a pidfd."""
    try:
        pidfd = os.pidfd_open(pid) if HAS_PIDFD else None
    except OSError:
        pidfd = None
    if pidfd is None:
        return functools.partial(is_running, pid)
    return lambda: not select.select([pidfd], [], [], 0)[0]


def _wait_then_kill(pid: int, pidfd: int | None, signum: int) -> None:
    if pidfd is not None:
        with contextlib.suppress(InterruptedError):
            select.select([pidfd], [], [])  # readable once the process has exited
    else:
        while is_running(pid):
            time.sleep(_POLL_S)
    os.kill(os.getpid(), signum)


class Restarts:
    """When a helper process of the supervisor's (``background``, ``committer``) that could
    not start, or died, is started again: a process that keeps failing is tried less often,
    one that works again starts the count afresh."""

    def __init__(self) -> None:
        self.next_start = 0.0  # monotonic
        self.after_s = RESTART_AFTER_S  # the wait after the next failure

    def due(self) -> bool:
        return time.monotonic() >= self.next_start

    def failed(self) -> None:
        self.next_start = time.monotonic() + self.after_s
        self.after_s = min(2 * self.after_s, RESTART_AFTER_MAX_S)

    def worked(self) -> None:
        self.after_s = RESTART_AFTER_S
