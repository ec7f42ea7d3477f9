"""Tie a process's life to its parent's, so that no orphan goes on working unsupervised."""

from __future__ import annotations

import ctypes
import os
import signal
import sys

__all__ = ["die_with_parent"]

_PR_SET_PDEATHSIG = 1


def die_with_parent(signum: int = signal.SIGKILL, *, parent: int | None = None) -> None:
    """Have the kernel send ``signum`` to this process when its parent dies.

    ``parent`` is the pid the caller expects as its parent (default: the current one); if
    that process is already gone, the signal is sent at once. Linux only (prctl); elsewhere
    it does nothing and an orphan runs on until it finishes its work.
    """
    if not sys.platform.startswith("linux"):
        return
    expected = os.getppid() if parent is None else parent
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signum)
    # The parent may have died before prctl took effect; then no signal would ever come.
    if os.getppid() != expected:
        os.kill(os.getpid(), signum)
