"""More tasks for the tests; each name says what it does."""

from __future__ import annotations

import ctypes
import os
import resource
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from procpool_tasks.compat import TaskContext

try:
    from django.tasks import task
except ImportError:  # Django < 6
    from django_tasks import task  # type: ignore[no-redef]


@task()
def wait_for_gate(gate: str, marker: str, timeout: float = 30.0) -> str:
    """Touch ``marker``, then wait until ``gate`` exists: the test decides when it finishes."""
    Path(marker).touch()
    deadline = time.monotonic() + timeout
    while not Path(gate).exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{gate} did not appear within {timeout}s")
        time.sleep(0.01)
    return gate


# -- fault injection (tests/test_faults.py) ---------------------------------------------------


def append_to(path: str, line: str) -> None:
    """One O_APPEND write: lines from many processes never interleave."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


@task(takes_context=True)
def log_each_run(context: TaskContext[Any, Any], log: str, pause_s: float) -> int:
    """Log ``<id> <attempt>`` as the task starts, then work for ``pause_s``: one line per run."""
    append_to(log, f"{context.task_result.id} {context.attempt}")
    time.sleep(pause_s)
    return context.attempt


@task()
def log_start_then_wait(log: str, gate: str, timeout: float = 30.0) -> int:
    """Log this process's pid, then wait until ``gate`` exists; a re-run logs again."""
    append_to(log, str(os.getpid()))
    deadline = time.monotonic() + timeout
    while not Path(gate).exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{gate} did not appear within {timeout}s")
        time.sleep(0.01)
    return os.getpid()


@task()
def kill_own_process(signum: int) -> None:
    """Die by a signal, as the kernel's OOM killer (SIGKILL) or a crash would do it."""
    os.kill(os.getpid(), signum)
    time.sleep(60)  # never reached: the signal is delivered before the call returns


@task()
def dereference_null() -> None:
    """A segfault in C code."""
    ctypes.string_at(0)


@task()
def allocate_beyond_limit(limit_mb: int) -> None:
    """Cap this process's address space, then ask for more than the cap allows."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (_address_space_bytes() + limit_mb * 2**20, hard))
    try:
        b"x" * (2 * limit_mb * 2**20)
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def _address_space_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[0]) * resource.getpagesize()


_leaked: list[bytes] = []


@task()
def leak_memory(megabytes: int) -> dict[str, int]:
    """Keep ``megabytes`` more in this process for good; report its pid and resident size."""
    _leaked.append(os.urandom(16) * (megabytes * 2**16))  # written, so really resident
    return {"pid": os.getpid(), "rss_kb": _resident_kb()}


@task()
def leak_memory_then_fail(megabytes: int) -> None:
    """Keep ``megabytes`` more in this process for good, then raise, naming the pid."""
    leak_memory.call(megabytes)
    raise ValueError(f"leaked {megabytes} MiB in pid {os.getpid()}")


@task()
def grow_memory(total_mib: int, step_mib: int, pause_s: float, log: str) -> int:
    """Allocate ``total_mib`` in steps of ``step_mib`` (written, so really resident), with
    ``pause_s`` between; log ``pid <pid>``, then after each step one line
    ``<seconds since the start> <MiB allocated> <MiB resident>``."""
    append_to(log, f"pid {os.getpid()}")
    kept: list[bytes] = []
    started = time.monotonic()
    while len(kept) * step_mib < total_mib:
        kept.append(b"\x01" * (step_mib * 2**20))
        append_to(
            log,
            f"{time.monotonic() - started:.4f} {len(kept) * step_mib} {_resident_kb() / 1024:.1f}",
        )
        time.sleep(pause_s)
    return len(kept) * step_mib


def _resident_kb() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise LookupError("no VmRSS in /proc/self/status")


@task()
def sleep_with_alarm_blocked(seconds: float, marker: str) -> float:
    """Sleep in C with SIGALRM blocked: the soft time limit never reaches the task."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
    Path(marker).touch()
    time.sleep(seconds)
    return seconds


@task()
def swallow_time_limit(seconds: float, marker: str) -> float:
    """Catch everything, the time limit included, and go on working."""
    Path(marker).touch()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            time.sleep(0.05)
        except BaseException:  # noqa: S112 (the misbehaving task under test)
            continue
    return seconds


def touch_file(path: str) -> None:
    """A plain function, not a Task: a record that names it must never run it."""
    Path(path).touch()


@task()
def blocked_signals() -> list[int]:
    """The signals this process blocks (none, unless something left its mask behind)."""
    return sorted(int(signum) for signum in signal.pthread_sigmask(signal.SIG_BLOCK, []))


@task()
def read_standard_input() -> str:
    """What this process's standard input holds (nothing: it must not be a terminal's)."""
    return os.read(0, 100).decode()


@task()
def program_interrupted_by_sigint() -> int:
    """The exit code of a shell that sends itself SIGINT (-2: it died of it, as by default)."""
    return subprocess.run(["sh", "-c", "kill -INT $$; sleep 5"], check=False).returncode
