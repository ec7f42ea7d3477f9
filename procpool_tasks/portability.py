"""What the operating system offers, in one place: Linux calls where they exist, portable
ones elsewhere.

procpool_tasks is tested on Linux. macOS lacks ``fdatasync``, ``/proc``, inotify, pidfds and
``prctl``; each has a portable stand-in here (``fsync`` with ``F_FULLFSYNC``, the peak
resident size from ``getrusage``, watchfiles, polling). Setting the environment variable
``PROCPOOL_TASKS_PORTABLE=1`` switches the Linux-only calls off on Linux too, so that the
portable paths run in the test suite (tox's ``portable`` environment). Windows has no
``fork``, ``flock`` or POSIX signals: importing the backend there raises ``ImportError``.
"""

from __future__ import annotations

import os
import sys

__all__ = [
    "HAS_INOTIFY",
    "HAS_PARENT_DEATH_SIGNAL",
    "HAS_PIDFD",
    "HAS_PROC",
    "PORTABLE_ONLY",
    "resident_memory_mib",
    "sync_data",
]

if sys.platform == "win32":  # pragma: no cover - not a platform the tests run on
    raise ImportError(
        "procpool_tasks needs a POSIX system (Linux, or macOS): it forks worker processes, "
        "locks files with flock and stops tasks with signals. On Windows, run the project "
        "under WSL."
    )

#: Use only the calls every POSIX system has (a switch for tests of the portable paths).
PORTABLE_ONLY = os.environ.get("PROCPOOL_TASKS_PORTABLE") == "1"
_LINUX = sys.platform.startswith("linux") and not PORTABLE_ONLY

#: inotify, for the supervisor's wake-ups (else watchfiles' thread).
HAS_INOTIFY = _LINUX
#: prctl(PR_SET_PDEATHSIG), so that a reloader's supervisor dies with it (else polling).
HAS_PARENT_DEATH_SIGNAL = _LINUX
#: pidfds, to wait for a process's exit without polling (Linux 5.3+).
HAS_PIDFD = _LINUX and hasattr(os, "pidfd_open")
#: /proc/<pid>/statm, for a process's current resident memory.
HAS_PROC = _LINUX and os.path.exists("/proc/self/statm")

_HAS_FDATASYNC = _LINUX and hasattr(os, "fdatasync")


def sync_data(fd: int) -> None:
    """Put a file's data on the disk (``fdatasync``; elsewhere a full ``fsync``).

    On macOS ``fsync`` leaves the data in the drive's cache; ``F_FULLFSYNC`` flushes it.
    """
    if _HAS_FDATASYNC:
        os.fdatasync(fd)
        return
    import fcntl

    full_fsync = getattr(fcntl, "F_FULLFSYNC", None)
    if full_fsync is not None:
        try:
            fcntl.fcntl(fd, full_fsync)
            return
        except OSError:  # a filesystem that does not support it
            pass
    os.fsync(fd)


def resident_memory_mib(pid: int | None = None) -> float:
    """A process's resident memory in MiB (this one's by default); 0.0 if unknown.

    Without /proc only this process's own can be known, and only its peak
    (``getrusage``), which is never less than its current size.
    """
    if HAS_PROC:
        try:
            # os.open, not open(): three system calls where a file object makes eight,
            # once per task in every worker process.
            fd = os.open(f"/proc/{pid or 'self'}/statm", os.O_RDONLY | os.O_CLOEXEC)
            try:
                resident_pages = int(os.read(fd, 256).split()[1])
            finally:
                os.close(fd)
        except (OSError, ValueError, IndexError):
            return 0.0
        return resident_pages * os.sysconf("SC_PAGE_SIZE") / (1024 * 1024)
    if pid is not None and pid != os.getpid():
        return 0.0
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux counts it in KiB, macOS in bytes.
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024
