"""A worker process dies (os._exit, SIGKILL, a segfault) while its supervisor runs on.

Its own task fails, the tasks the broken process pool stopped run again, the pool is
replaced and the worker serves on.
"""

from __future__ import annotations

import functools
import re
import signal
from typing import Any

import pytest

from tests import more_tasks, tasks
from tests.conftest import Env, wait_for
from tests.support import INTERRUPTED, lines_of, set_options, status_of, worker_log

DIED = "procpool_tasks.exceptions.WorkerProcessDied"


@pytest.mark.parametrize(
    ("task", "args", "how"),
    [
        pytest.param(tasks.exit_hard, (3,), "exited with code 3", id="os._exit"),
        pytest.param(
            more_tasks.kill_own_process,
            (signal.SIGKILL,),
            "was killed by SIGKILL (perhaps out of memory?)",
            id="SIGKILL",
        ),
        pytest.param(more_tasks.dereference_null, (), "was killed by SIGSEGV", id="segfault"),
    ],
)
def test_dying_child_fails_its_task_alone_reruns_the_others_and_the_worker_serves_on(
    env: Env, task: Any, args: tuple[Any, ...], how: str
) -> None:
    starts = env.tmp_path / "starts.log"
    gate = env.tmp_path / "gate"
    bystanders = [more_tasks.log_start_then_wait.enqueue(str(starts), str(gate)) for _ in "ab"]
    worker = env.start_worker("--processes", "3")
    wait_for(lambda: len(lines_of(starts)) == 2, what="both bystanders to start")
    first_pids = set(lines_of(starts))

    dying = task.enqueue(*args)

    wait_for(lambda: status_of(dying) == "FAILED", what="the dying task to be marked FAILED")
    [error] = dying.errors
    assert error.exception_class_path == DIED
    match = re.fullmatch(
        rf"{DIED}: The worker process \(pid (\d+)\) running the task {re.escape(how)}\n",
        error.traceback,
    )
    assert match, error.traceback
    dead_pid = match[1]
    assert dead_pid not in first_pids
    assert worker_log(worker, "ERROR A worker process died; replacing the process pool")
    # The bystanders ran in other children of the broken pool: run again, not failed.
    wait_for(lambda: len(lines_of(starts)) == 4, what="both bystanders to run again")
    assert set(lines_of(starts)[2:]).isdisjoint(first_pids)
    gate.touch()
    for bystander in bystanders:
        wait_for(functools.partial(lambda r: status_of(r) == "SUCCESSFUL", bystander), what="rerun")
        assert len(bystander.worker_ids) == 2
        [interruption] = bystander.errors
        assert interruption.traceback == (
            f"{INTERRUPTED}: Another worker process (pid {dead_pid}) {how}; the process pool "
            "was replaced and this task was stopped before it finished\n"
        )
    later = tasks.add.enqueue(2, 3)
    wait_for(lambda: status_of(later) == "SUCCESSFUL", what="the worker to serve on")
    assert later.return_value == 5
    assert worker.process.poll() is None


def test_with_max_attempts_1_a_task_stopped_by_another_childs_death_still_runs_again(
    env: Env,
) -> None:
    set_options(env, max_attempts=1)
    starts = env.tmp_path / "starts.log"
    gate = env.tmp_path / "gate"
    bystander = more_tasks.log_start_then_wait.enqueue(str(starts), str(gate))
    worker = env.start_worker("--processes", "2")
    wait_for(lambda: len(lines_of(starts)) == 1, what="the bystander to start")

    dying = tasks.exit_hard.enqueue(7)

    wait_for(lambda: status_of(dying) == "FAILED", what="the dying task to fail")
    wait_for(lambda: len(lines_of(starts)) == 2, what="the bystander to run again")
    gate.touch()
    wait_for(lambda: status_of(bystander) == "SUCCESSFUL", what="the bystander to finish")
    [error] = bystander.errors
    assert re.fullmatch(
        rf"{INTERRUPTED}: Another worker process \(pid \d+\) exited with code 7; the process "
        r"pool was replaced and this task was stopped before it finished\n",
        error.traceback,
    ), error.traceback
    assert len(bystander.worker_ids) == 2
    assert worker.process.poll() is None


def test_many_dying_children_fail_only_themselves_and_every_other_task_succeeds(
    env: Env,
) -> None:
    starts = env.tmp_path / "starts.log"
    gate = env.tmp_path / "gate"
    gate.touch()
    others: list[Any] = [
        more_tasks.log_start_then_wait.enqueue(str(starts), str(gate)) for _ in range(6)
    ]
    dying = [tasks.exit_hard.enqueue(code) for code in range(1, 6)]
    others += [tasks.add.enqueue(n, n) for n in range(6)]

    env.run_batch("--processes", "2")

    assert [status_of(result) for result in dying] == ["FAILED"] * 5
    assert [status_of(result) for result in others] == ["SUCCESSFUL"] * 12
    for result in others:  # claimed but never started is no attempt
        assert len(result.worker_ids) == 1 + len(result.errors), result.errors
