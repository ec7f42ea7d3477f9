"""Short tasks queued behind a busy process's task: taken back unrun when they must be.

A worker sends a process its next task before the one it runs ends, when tasks of the
running task's path were short lately (``dispatch``). Such a task is claimed (RUNNING in
its result file) but not started; these tests hold the task ahead of it with a release
file, so that every step is seen, and check what the Guarantees promise: strict priority
order, no attempt counted for a task that never started, cancels, deaths and stops.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

from tests import tasks
from tests.conftest import Env, Worker, wait_for
from tests.support import refreshed


def status_of(result: Any) -> str:
    return str(refreshed(result).status)


#: Short tasks run first, so that the worker's moving average of the path's durations
#: is short even if the first, which imports the task's module, was slow.
WARM_UPS = 12


def hold_behind_warm_up(env: Env) -> tuple[Any, Path, Path]:
    """Enqueue ``WARM_UPS`` short ``block_until`` tasks, then one that runs until its
    release file exists: by the time it starts, the worker knows its path is short.

    Enqueued before the worker starts, with the task to queue behind it enqueued next:
    the supervisor queues that task the moment the holding one starts, however busy the
    machine is (a task is queued only behind one that has run less than 100 ms).
    """
    released = env.tmp_path / "released-at-once"
    released.touch()
    for _ in range(WARM_UPS):
        tasks.block_until.enqueue(str(released), str(env.tmp_path / "warm-up.started"))
    marker, release = env.tmp_path / "holding.started", env.tmp_path / "holding.release"
    return tasks.block_until.enqueue(str(release), str(marker)), marker, release


def queue_one_behind(env: Env, line: str, *worker_args: str) -> tuple[Any, Any, Path, Worker]:
    """Start a one-process worker on a holding task with ``append_line(order, line)``
    queued behind it; return the holding task, the queued one, the release file, the
    worker."""
    holding, marker, release = hold_behind_warm_up(env)
    behind = tasks.append_line.enqueue(str(env.tmp_path / "order.txt"), line)
    worker = env.start_worker("--processes", "1", *worker_args)
    wait_for(marker.exists, what="the holding task to start")
    wait_for(lambda: queued_behind(behind), what="the next task to be queued behind it")
    return holding, behind, release, worker


def handed_back(worker: Any, result: Any) -> bool:
    return any(
        f"id={result.id} " in line and "handed back unrun" in line
        for line in worker.output.splitlines()
    )


def queued_behind(result: Any) -> bool:
    """Claimed while the only process is busy: queued behind its task."""
    return status_of(result) == "RUNNING"


def test_a_task_queued_behind_a_long_one_is_taken_back_and_counts_no_attempt(env: Env) -> None:
    order = env.tmp_path / "order.txt"
    holding, behind, release, worker = queue_one_behind(env, "behind")

    # The task ahead runs on: the queued one is taken back, READY, with no attempt made.
    wait_for(lambda: status_of(behind) == "READY", what="the queued task to be taken back")
    assert not order.exists(), "the queued task ran while the one ahead of it still ran"
    assert behind.worker_ids == []
    release.touch()

    wait_for(lambda: status_of(behind) == "SUCCESSFUL", what="the queued task to run")
    assert len(behind.worker_ids) == 1, "a task that never started counted an attempt"
    assert status_of(holding) == "SUCCESSFUL"
    assert worker.stop() == 0, worker.output


def test_a_higher_priority_task_runs_before_one_queued_ahead_of_it(env: Env) -> None:
    order = env.tmp_path / "order.txt"
    _, low, release, worker = queue_one_behind(env, "low", "-v", "2")

    high = tasks.append_line.using(priority=5).enqueue(str(order), "high")
    # Asked back at once; or, on a machine too busy to see the new task within a second,
    # handed back because the task ahead of it runs long. Either way, before it ran.
    wait_for(
        lambda: handed_back(worker, low) or f"id={low.id}: asking" in worker.output,
        what="the low task to be asked back",
    )
    release.touch()

    wait_for(lambda: status_of(low) == "SUCCESSFUL", what="both tasks to run")
    assert order.read_text().splitlines() == ["high", "low"]
    assert status_of(high) == "SUCCESSFUL"
    assert len(low.worker_ids) == 1
    assert worker.stop() == 0, worker.output


def test_a_cancelled_task_queued_ahead_never_runs(env: Env) -> None:
    order = env.tmp_path / "order.txt"
    _, behind, release, worker = queue_one_behind(env, "cancelled")

    env.manage("procpool_cancel", behind.id)
    wait_for(lambda: handed_back(worker, behind), what="the cancelled task to be handed back")
    release.touch()

    wait_for(lambda: status_of(behind) == "FAILED", what="the cancelled task to end")
    assert not order.exists(), "a cancelled task ran"
    assert behind.errors[-1].exception_class_path == "procpool_tasks.exceptions.TaskCancelled"
    assert worker.stop() == 0, worker.output


def test_a_task_queued_behind_one_whose_process_dies_runs_as_its_first_attempt(
    env: Env,
) -> None:
    order = env.tmp_path / "order.txt"
    pids = env.tmp_path / "pids.txt"
    released = env.tmp_path / "released-at-once"
    released.touch()
    for _ in range(WARM_UPS):
        tasks.log_pid_then_block.enqueue(str(pids), str(released))
    dying = tasks.log_pid_then_block.enqueue(str(pids), str(env.tmp_path / "never"))
    behind = tasks.append_line.enqueue(str(order), "behind")
    worker = env.start_worker("--processes", "1")
    wait_for(
        lambda: pids.exists() and len(pids.read_text().split()) == WARM_UPS + 1,
        what="the task to start",
    )
    wait_for(lambda: queued_behind(behind), what="the task to be queued behind it")

    os.kill(int(pids.read_text().split()[-1]), signal.SIGKILL)

    wait_for(lambda: status_of(behind) == "SUCCESSFUL", what="the queued task to run")
    assert len(behind.worker_ids) == 1, "a task that never started counted an attempt"
    assert status_of(dying) == "FAILED"
    assert worker.stop() == 0, worker.output


def test_a_graceful_stop_leaves_a_queued_task_ready_and_exits_0(env: Env) -> None:
    order = env.tmp_path / "order.txt"
    holding, behind, release, worker = queue_one_behind(env, "behind")

    worker.send(signal.SIGTERM)
    wait_for(lambda: "shutting down gracefully" in worker.output, what="the stop to begin")
    release.touch()

    assert worker.wait() == 0, worker.output
    assert status_of(holding) == "SUCCESSFUL"
    assert status_of(behind) == "READY"
    assert behind.worker_ids == []
    assert not order.exists()


def test_a_task_too_big_for_the_pipe_waits_in_the_supervisor_and_is_handed_back_alike(
    env: Env,
) -> None:
    order = env.tmp_path / "order.txt"
    big = "x" * (512 * 1024)  # more than a pipe's buffer: never queued in the pipe
    holding, behind, release, worker = queue_one_behind(env, big)

    wait_for(lambda: handed_back(worker, behind), what="the big task to be handed back")
    assert "(the task ahead of it runs long)" in worker.output
    wait_for(lambda: status_of(behind) == "READY", what="the big task to be READY again")
    release.touch()

    wait_for(lambda: status_of(behind) == "SUCCESSFUL", what="the big task to run")
    assert order.read_text() == big + "\n"
    assert len(behind.worker_ids) == 1
    assert status_of(holding) == "SUCCESSFUL"
    assert worker.stop() == 0, worker.output
