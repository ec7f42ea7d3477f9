"""A stock SQLite project: tasks that read, then write, the same rows at once all succeed.

Every test here runs a real ``procpool_worker`` on a real SQLite file whose settings are
a new project's (no ``OPTIONS``), unless it says otherwise.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from procpool_tasks import sqlite
from tests import tasks
from tests.conftest import Env

#: Tasks per run: enough that with two processes their transactions overlap many times.
CONTENDING_TASKS = 200
#: What the worker says it applied to a database without OPTIONS.
APPLIED_TO_STOCK_SETTINGS = (
    "timeout=20, transaction_mode='IMMEDIATE'"
    if sqlite.HAS_TRANSACTION_MODE
    else "timeout=20, transactions that begin IMMEDIATE"
)


def use_database_options(env: Env, options: dict[str, Any], backend_options: Any = None) -> None:
    """Give the worker (and the helper processes) this SQLite OPTIONS and a fresh table."""
    env.variables["PROCPOOL_TEST_DB_OPTIONS"] = json.dumps(options)
    if backend_options is not None:
        env.variables["PROCPOOL_TEST_OPTIONS"] = json.dumps(backend_options)
    env.migrate()


def reset_counter(env: Env) -> None:
    env.run_python(
        "from tests.models import Counter\n"
        "Counter.objects.update_or_create(name='hits', defaults={'value': 0})\n"
    )


def counter_value(env: Env) -> int:
    output = env.run_python(
        "from tests.models import Counter\nprint(Counter.objects.get(name='hits').value)\n"
    )
    return int(output)


def run_contending_tasks(env: Env, processes: int) -> tuple[list[Any], str]:
    """Enqueue the read-modify-write tasks, drain them with a batch worker; results and log."""
    reset_counter(env)
    results = [tasks.increment_counter.enqueue("hits") for _ in range(CONTENDING_TASKS)]
    output = env.run_batch("--processes", str(processes))
    for result in results:
        result.refresh()
    return results, output


@pytest.mark.parametrize("processes", [2, 4])
def test_read_modify_write_tasks_on_stock_sqlite_all_succeed_and_lose_no_update(
    env: Env, processes: int
) -> None:
    use_database_options(env, {})

    # Rounds, so that a race the defaults lost once in a while would show.
    for _ in range(3):
        results, output = run_contending_tasks(env, processes)

        failed = [result.errors for result in results if result.status != "SUCCESSFUL"]
        assert failed == []
        assert counter_value(env) == CONTENDING_TASKS
    assert (
        f"SQLite database 'default': worker processes use {APPLIED_TO_STOCK_SETTINGS}, so that "
        "concurrent tasks wait for each other instead of failing with 'database is locked' "
        "(to keep your settings as they are, set OPTIONS['sqlite_defaults'] = False in "
        "TASKS['default'])"
    ) in output


def test_without_the_sqlite_defaults_the_same_tasks_fail_with_database_is_locked(
    env: Env,
) -> None:
    use_database_options(env, {}, backend_options={"sqlite_defaults": False})

    results, output = run_contending_tasks(env, processes=2)

    failed = [result for result in results if result.status == "FAILED"]
    assert failed, "no task failed: the race the defaults prevent did not happen"
    for result in failed:
        assert result.errors[-1].exception_class_path == "django.db.utils.OperationalError"
        assert (
            result.errors[-1]
            .traceback.rstrip()
            .endswith("django.db.utils.OperationalError: database is locked")
        )
    # Each failed task was rolled back: only the successful ones counted.
    assert counter_value(env) == CONTENDING_TASKS - len(failed)
    assert "sqlite_defaults" not in output


def test_a_value_the_project_set_is_kept_and_only_the_missing_one_is_added(env: Env) -> None:
    use_database_options(env, {"timeout": 7})
    result = tasks.database_options.enqueue()

    output = env.run_batch()

    result.refresh()
    if sqlite.HAS_TRANSACTION_MODE:
        assert result.return_value == {"timeout": 7, "transaction_mode": "IMMEDIATE"}
        assert "database 'default': worker processes use transaction_mode='IMMEDIATE'," in output
    else:
        assert result.return_value == {"timeout": 7}
        assert "worker processes use transactions that begin IMMEDIATE," in output


@pytest.mark.skipif(
    not sqlite.HAS_TRANSACTION_MODE, reason="Django < 5.1 has no transaction_mode to keep or add"
)
def test_settings_that_have_both_are_left_as_they_are_and_nothing_is_logged(env: Env) -> None:
    use_database_options(env, {"timeout": 3, "transaction_mode": "EXCLUSIVE"})
    result = tasks.database_options.enqueue()

    output = env.run_batch()

    result.refresh()
    assert result.return_value == {"timeout": 3, "transaction_mode": "EXCLUSIVE"}
    assert "SQLite database" not in output


def test_the_suggested_settings_are_what_the_check_and_the_worker_name() -> None:
    expected: dict[str, Any] = {"timeout": 20}
    if sqlite.HAS_TRANSACTION_MODE:
        expected["transaction_mode"] = "IMMEDIATE"
    assert sqlite.suggested_sqlite_settings() == expected
