"""Waits on the programs the tests start end with what those programs said, never bare.

    run(command, timeout=..., what=...)   run to the end; past ``timeout``, fail with the
                                          stacks and output of the program
    stop_with_stacks(process)             stop a hung process and its descendants so that
                                          each Python one prints its threads' stacks

The tests start Python with ``PYTHONFAULTHANDLER=1`` (``tests/conftest.py``): SIGABRT then
makes it write every thread's stack to its stderr before it dies, which says where it
hung. A program that is not Python just dies of the SIGABRT.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

__all__ = ["STOP_TIMEOUT_S", "run", "stop_with_stacks"]

#: How long a process may take to print its stacks and die, or to die of SIGKILL.
STOP_TIMEOUT_S = 10.0


def _stat(pid: int) -> list[str]:
    """Fields 3 and on of /proc/PID/stat (state first); none once the process is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return []
    # The command name (field 2) is in parentheses and may hold spaces.
    return stat.rpartition(")")[2].split()


def _start_time(pid: int) -> str | None:
    """The process's start time (clock ticks since boot): with its pid, it names one process."""
    fields = _stat(pid)
    return fields[19] if fields else None


def _is_alive(pid: int, started: str | None) -> bool:
    fields = _stat(pid)
    return bool(fields) and fields[0] != "Z" and fields[19] == started


def _descendants(pid: int) -> list[int]:
    """The process's children, theirs and so on, parents first; none where /proc lacks them."""
    found: list[int] = []
    try:
        threads = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return found
    for thread in threads:
        try:
            children = [int(child) for child in (thread / "children").read_text().split()]
        except OSError:
            continue
        for child in children:
            found += [child, *_descendants(child)]
    return found


def _signal_each(
    processes: Sequence[tuple[int, str | None]], signum: int, *, one_by_one: bool = False
) -> None:
    """Signal each process that is still the one listed; ``one_by_one``: let each die
    (briefly) before the next, so that their stacks do not interleave."""
    for pid, started in processes:
        # A pid that died since may name another process now: only ours get the signal.
        if not _is_alive(pid, started):
            continue
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            continue
        deadline = time.monotonic() + (STOP_TIMEOUT_S / 5 if one_by_one else 0)
        while _is_alive(pid, started) and time.monotonic() < deadline:
            time.sleep(0.02)


def stop_with_stacks(process: subprocess.Popen[Any]) -> None:
    """SIGABRT ``process`` and its descendants, deepest first, then SIGKILL what is left.

    Each Python one prints its threads' stacks to its stderr as it dies. The descendants
    go too, also those in process groups of their own (RQ's work horse), so that none of
    them holds the output pipes open.
    """
    descendants = [(pid, _start_time(pid)) for pid in _descendants(process.pid)]
    _signal_each(descendants[::-1], signal.SIGABRT, one_by_one=True)
    process.send_signal(signal.SIGABRT)
    try:
        process.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
    _signal_each(descendants, signal.SIGKILL)
    process.wait(STOP_TIMEOUT_S)


def _collect(process: subprocess.Popen[str]) -> tuple[str, str]:
    """What a stopped process wrote, including what a wait that gave up had read already."""
    try:
        stdout, stderr = process.communicate(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return "(still open: a process outside its tree holds it)", ""
    return stdout or "", stderr or ""


def run(
    command: Sequence[str | Path],
    *,
    timeout: float,
    what: str,
    **popen_kwargs: Any,
) -> subprocess.CompletedProcess[str]:
    """Run ``command`` to its end and return its exit code and output (text).

    Past ``timeout`` seconds the test fails with the program's stacks and output
    (``stop_with_stacks``). Stopped by something else meanwhile (pytest-timeout, ^C), the
    program is stopped the same way and its output printed, which pytest shows.
    """
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
        **popen_kwargs,
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop_with_stacks(process)
        stdout, stderr = _collect(process)
        pytest.fail(
            f"{what} did not finish within {timeout}s; stopped with SIGABRT (exit code "
            f"{process.returncode}), it said:\nstdout:\n{stdout}\nstderr:\n{stderr}"
        )
    except BaseException:
        stop_with_stacks(process)
        stdout, stderr = _collect(process)
        # pytest shows this only when the test failed.
        print(f"--- {what}, stopped half-way ---\nstdout:\n{stdout}\nstderr:\n{stderr}")  # noqa: T201
        raise
    return subprocess.CompletedProcess(list(command), process.returncode, stdout, stderr)
