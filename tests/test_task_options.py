"""Per-task options given in ``@task(...)``, honoured by a real worker (Django 6.1 and the
backport; Django 6.0's decorator takes none, so these skip there: ``task_options`` is the
way on 6.0, see ``tests/test_retries.py``)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import django
import pytest

from tests.conftest import Env
from tests.support import TIMED_OUT, refreshed, set_options

pytestmark = pytest.mark.skipif(
    django.VERSION[:2] == (6, 0), reason="Django 6.0's @task takes no per-task options"
)


def starts(log: Path) -> list[float]:
    return [float(line) for line in log.read_text().splitlines()]


def test_a_task_declared_with_max_attempts_and_a_timeout_that_hangs_fails_after_its_attempts(
    env: Env,
) -> None:
    from tests import option_tasks

    log = env.tmp_path / "starts.log"
    result = option_tasks.hang_logging_starts.enqueue(str(log))

    env.run_batch("--processes", "1")

    assert refreshed(result).status == "FAILED"
    assert len(result.worker_ids) == 3
    assert len(starts(log)) == 3
    assert [error.traceback.rstrip().splitlines()[-1] for error in result.errors] == [
        f"{TIMED_OUT}: The task exceeded its timeout of 1s"
    ] * 3


def test_a_backoff_function_spaces_the_attempts_as_it_says(env: Env) -> None:
    from tests import option_tasks

    log = env.tmp_path / "starts.log"
    result = option_tasks.fail_twice_then_succeed.enqueue(str(log))

    env.run_batch("--processes", "1")

    assert refreshed(result).status == "SUCCESSFUL"
    assert result.return_value == 3
    gaps = [later - earlier for earlier, later in itertools.pairwise(starts(log))]
    assert len(gaps) == 2
    assert gaps[0] >= 0.1
    assert gaps[1] >= 0.2


def test_the_decorators_options_win_over_task_options_and_options(env: Env) -> None:
    from tests import option_tasks

    path = "tests.option_tasks.hang_logging_starts"
    set_options(
        env,
        max_attempts=1,
        task_timeout=60,
        task_options={path: {"timeout": 30, "max_attempts": 1}},
    )
    log = env.tmp_path / "starts.log"
    result = option_tasks.hang_logging_starts.enqueue(str(log))

    env.run_batch("--processes", "1")

    assert refreshed(result).status == "FAILED"
    assert len(result.worker_ids) == 3  # the decorator's max_attempts
    assert result.errors[-1].traceback.rstrip().endswith("timeout of 1s")  # and its timeout


def test_the_options_travel_in_the_tasks_record(env: Env) -> None:
    from tests import option_tasks

    result = option_tasks.fail_twice_then_succeed.enqueue(str(env.tmp_path / "starts.log"))

    [segment] = (env.journal / "segments").glob("*.log")
    [line] = [line for line in segment.read_text().splitlines() if result.id in line]
    record = json.loads(line.split(" ", 1)[1])
    assert record["options"] == {
        "max_attempts": 3,
        "backoff": "tests.option_tasks.tenth_of_a_second_more_each_time",
    }
