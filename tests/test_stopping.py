"""Stopping from outside: a SIGKILLed supervisor leaves no process behind; SIGTERM to
its process group, or to every process at once as systemd sends it; a second signal stops
running tasks at once and the next start recovers them.
"""

from __future__ import annotations

import functools
import os
import signal
from pathlib import Path

import pytest

from procpool_tasks.worker.supervisor import KILL_GRACE_S
from tests import more_tasks
from tests.conftest import Env, wait_for
from tests.pause_at import PAUSE_AT_VARIABLE, PAUSE_FILE_VARIABLE
from tests.support import INTERRUPTED, hold_running, lines_of, set_options, status_of


def proc_stat(pid: int) -> list[str]:
    """The fields of /proc/PID/stat after the command name: state, parent pid, ..."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def is_gone(pid: int) -> bool:
    """Has this process exited (a zombie waiting for its reaper counts as exited)?"""
    try:
        state = proc_stat(pid)[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")


def parent_of(pid: int) -> int:
    return int(proc_stat(pid)[1])


def test_supervisor_killed_mid_task_leaves_no_process_behind_and_the_task_runs_once_more(
    env: Env,
) -> None:
    held = hold_running(env, 2, "--worker-id", "killed")
    forkserver = parent_of(held.pids[0])
    assert forkserver != held.worker.process.pid
    # The worker processes, and the one that makes result files ahead of claims.
    forked = [
        pid
        for pid in map(int, filter(str.isdigit, os.listdir("/proc")))
        if _is_child(pid, forkserver)
    ]
    assert set(held.pids) < set(forked)

    held.worker.send(signal.SIGKILL)
    held.worker.wait()

    # Left alone, the children would finish their tasks while the next supervisor re-runs
    # them, or idle forever holding their forkserver (and their memory) alive.
    for pid in [*forked, forkserver]:
        wait_for(functools.partial(is_gone, pid), timeout=5, what=f"process {pid} to exit")
    held.gate.touch()
    env.run_batch("--processes", "2", "--worker-id", "recovering")
    for result in held.results:
        assert status_of(result) == "SUCCESSFUL"
        assert result.worker_ids == ["killed", "recovering"]
    assert len(lines_of(held.starts)) == 4


def _is_child(pid: int, parent: int) -> bool:
    try:
        return parent_of(pid) == parent
    except OSError:
        return False  # gone meanwhile


def test_sigterm_to_the_workers_process_group_lets_running_tasks_finish(env: Env) -> None:
    held = hold_running(env, 2, own_process_group=True)

    os.killpg(held.worker.process.pid, signal.SIGTERM)  # kill -TERM -PGID, as a shell would

    wait_for(lambda: "shutting down gracefully" in held.worker.output, what="the graceful stop")
    held.gate.touch()
    assert held.worker.wait() == 0, held.worker.output
    assert [status_of(result) for result in held.results] == ["SUCCESSFUL", "SUCCESSFUL"]


def test_sigterm_to_the_worker_and_its_processes_at_once_interrupts_tasks_for_a_rerun(
    env: Env,
) -> None:
    held = hold_running(env, 1, "--worker-id", "stopped")
    [running], [child] = held.results, held.pids

    # As systemd's default KillMode=control-group stops a service: every process at once.
    for pid in (held.worker.process.pid, child):
        os.kill(pid, signal.SIGTERM)

    assert held.worker.wait() == 0, held.worker.output
    assert status_of(running) == "READY"
    [error] = running.errors
    assert error.traceback == (
        f"{INTERRUPTED}: The worker process (pid {child}) running the task was stopped by "
        "SIGTERM from outside the worker (a process manager stopping every process?)\n"
    )
    held.gate.touch()
    env.run_batch("--worker-id", "next")
    assert status_of(running) == "SUCCESSFUL"
    assert running.worker_ids == ["stopped", "next"]


@pytest.mark.parametrize("second_signal", [signal.SIGTERM, signal.SIGINT])
def test_second_signal_stops_running_tasks_at_once_exits_1_and_the_next_start_recovers_them(
    env: Env, second_signal: signal.Signals
) -> None:
    starts = env.tmp_path / "starts.log"
    gate = env.tmp_path / "gate"
    running = [more_tasks.log_start_then_wait.enqueue(str(starts), str(gate)) for _ in "ab"]
    worker = env.start_worker("--processes", "2", "--worker-id", "stopped-at-once")
    wait_for(lambda: len(lines_of(starts)) == 2, what="both tasks to start")
    worker.send(signal.SIGTERM)
    wait_for(lambda: "shutting down gracefully" in worker.output, what="the graceful stop")

    worker.send(second_signal)

    assert worker.wait(timeout=KILL_GRACE_S) == 1, worker.output
    assert (
        "WARNING Stopped worker_id=stopped-at-once at once; 2 running task(s) will be "
        "recovered on the next start"
    ) in worker.output
    for pid in lines_of(starts):
        wait_for(functools.partial(is_gone, int(pid)), what=f"child {pid} to be stopped")
    assert [status_of(result) for result in running] == ["RUNNING", "RUNNING"]
    gate.touch()
    env.run_batch("--processes", "2", "--worker-id", "recovering")
    for result in running:
        assert status_of(result) == "SUCCESSFUL"
        assert result.worker_ids == ["stopped-at-once", "recovering"]
        assert [error.traceback for error in result.errors] == [
            f"{INTERRUPTED}: The worker stopped-at-once stopped before the task finished "
            "(supervisor killed, or stopped at once)\n"
        ]
    assert len(lines_of(starts)) == 4


def test_with_max_attempts_1_a_task_stopped_at_once_fails_on_the_next_start(env: Env) -> None:
    set_options(env, max_attempts=1)
    starts = env.tmp_path / "starts.log"
    gate = env.tmp_path / "gate"
    running = more_tasks.log_start_then_wait.enqueue(str(starts), str(gate))
    worker = env.start_worker("--processes", "1", "--worker-id", "stopped-at-once")
    wait_for(lambda: lines_of(starts), what="the task to start")
    worker.send(signal.SIGTERM)
    wait_for(lambda: "shutting down gracefully" in worker.output, what="the graceful stop")
    worker.send(signal.SIGTERM)
    assert worker.wait(timeout=KILL_GRACE_S) == 1, worker.output
    gate.touch()

    output = env.run_batch("--worker-id", "recovering")

    assert status_of(running) == "FAILED"
    assert running.worker_ids == ["stopped-at-once"]
    message = (
        f"{INTERRUPTED}: The worker stopped-at-once stopped before the task finished "
        "(supervisor killed, or stopped at once)"
    )
    assert [error.traceback for error in running.errors] == [message + "\n"]
    assert f"state=FAILED after 1 attempt(s): {message}" in output
    assert len(lines_of(starts)) == 1


@pytest.mark.parametrize("point", ["close", "exit"])
def test_a_second_signal_after_the_worker_stopped_still_exits_1_not_killed_by_it(
    env: Env, point: str
) -> None:
    # Paused where the race would put the second signal: after "Worker ... stopped", while
    # it lets everything go (close), or with everything let go, about to exit (exit).
    paused = env.tmp_path / "paused"
    env.variables.update({PAUSE_AT_VARIABLE: point, PAUSE_FILE_VARIABLE: str(paused)})
    worker = env.start_worker("--processes", "1", "--worker-id", "late", module="tests.pause_at")
    wait_for(lambda: "Starting worker" in worker.output, what="the worker to start")
    worker.send(signal.SIGTERM)
    wait_for(paused.exists, what=f"the worker to pause at {point}")

    worker.send(signal.SIGTERM)
    paused.unlink()

    assert worker.wait() == 1, worker.output
    assert "INFO Worker worker_id=late stopped\n" in worker.output
