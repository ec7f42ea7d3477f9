"""Time limits: a task over ``task_timeout`` (or ``--task-timeout``) fails with a
timeout error; one that ignores it is killed with its process; the worker serves on.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests import more_tasks, tasks
from tests.conftest import Env, wait_for
from tests.support import TIMED_OUT, set_options, status_of, worker_log


def _timeout_message(limit: str) -> str:
    return f"{TIMED_OUT}: The task exceeded its timeout of {limit}"


def test_task_over_the_options_time_limit_fails_and_its_process_serves_on(env: Env) -> None:
    set_options(env, task_timeout=1)
    before = tasks.process_id.using(priority=10).enqueue()
    slow = tasks.sleep_for.enqueue(60)
    after = tasks.process_id.using(priority=-10).enqueue()

    env.run_batch("--processes", "1")

    assert status_of(slow) == "FAILED"
    [error] = slow.errors
    assert error.exception_class_path == TIMED_OUT
    assert error.traceback.rstrip().splitlines()[-1] == _timeout_message("1s")
    assert "time.sleep(seconds)" in error.traceback  # where the task was stopped
    assert status_of(before) == status_of(after) == "SUCCESSFUL"
    assert before.return_value == after.return_value  # stopped softly: no process killed


def test_task_timeout_flag_overrides_the_options_time_limit(env: Env) -> None:
    set_options(env, task_timeout=600)
    slow = tasks.sleep_for.enqueue(60)

    env.run_batch("--processes", "1", "--task-timeout", "0.5")

    assert status_of(slow) == "FAILED"
    [error] = slow.errors
    assert error.traceback.rstrip().splitlines()[-1] == _timeout_message("0.5s")


@pytest.mark.slow
@pytest.mark.parametrize(
    "stubborn", [more_tasks.sleep_with_alarm_blocked, more_tasks.swallow_time_limit]
)
def test_task_that_ignores_its_time_limit_is_killed_and_fails_and_the_worker_serves_on(
    env: Env, stubborn: Any
) -> None:
    marker = env.tmp_path / "stubborn-started"
    worker = env.start_worker("--processes", "2", "--task-timeout", "1")

    ignoring = stubborn.enqueue(60, str(marker))

    wait_for(lambda: status_of(ignoring) == "FAILED", what="the stubborn task to be killed")
    assert marker.exists()
    [error] = ignoring.errors
    assert error.exception_class_path == TIMED_OUT
    assert re.fullmatch(
        rf"{TIMED_OUT}: The task exceeded its timeout of 1s and did not stop; its "
        r"worker process \(pid \d+\) was killed\n",
        error.traceback,
    ), error.traceback
    assert worker_log(worker, rf"WARNING Task id={ignoring.id} ignored its timeout; killing")
    later = tasks.add.enqueue(2, 3)
    wait_for(lambda: status_of(later) == "SUCCESSFUL", what="the worker to serve on")
    assert worker.stop() == 0
