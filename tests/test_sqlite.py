"""A stock SQLite project: tasks, and a web process, that write the same rows at once all succeed.

Every test here runs a real ``procpool_worker`` on a real SQLite file whose settings are
a new project's (no ``OPTIONS``), unless it says otherwise.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from procpool_tasks import sqlite
from tests import tasks
from tests.conftest import Env, wait_for
from tests.support import status_of

#: Tasks per run: enough that with two processes their transactions overlap many times.
CONTENDING_TASKS = 200
#: What the worker says the app applied to a database without OPTIONS.
APPLIED_TO_STOCK_SETTINGS = "timeout=20, transaction_mode='IMMEDIATE'"


def use_database_options(env: Env, options: dict[str, Any], backend_options: Any = None) -> None:
    """Give the worker (and the helper processes) this SQLite OPTIONS and a fresh table."""
    env.variables["PROCPOOL_TEST_DB_OPTIONS"] = json.dumps(options)
    if backend_options is not None:
        env.variables["PROCPOOL_TEST_OPTIONS"] = json.dumps(backend_options)
    env.migrate()


def reset_counter(env: Env, name: str = "hits") -> None:
    env.run_python(
        "import sys\n"
        "from tests.models import Counter\n"
        "Counter.objects.update_or_create(name=sys.argv[1], defaults={'value': 0})\n",
        name,
    )


def counter_value(env: Env, name: str = "hits") -> int:
    output = env.run_python(
        "import sys\n"
        "from tests.models import Counter\n"
        "print(Counter.objects.get(name=sys.argv[1]).value)\n",
        name,
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
        "SQLite database 'default': every process with procpool_tasks installed (web, "
        f"commands, workers) uses {APPLIED_TO_STOCK_SETTINGS}, so that concurrent writes wait "
        "for each other instead of failing with 'database is locked' (to keep your settings "
        "as they are, set OPTIONS['sqlite_defaults'] = False in TASKS['default'])"
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
    assert "SQLite database" not in output  # nothing applied; W001 says why


def test_a_value_the_project_set_is_kept_and_only_the_missing_one_is_added(env: Env) -> None:
    use_database_options(env, {"timeout": 7})
    result = tasks.database_options.enqueue()

    output = env.run_batch()

    result.refresh()
    assert result.return_value == {"timeout": 7, "transaction_mode": "IMMEDIATE"}
    assert "(web, commands, workers) uses transaction_mode='IMMEDIATE', so" in output


def test_settings_that_have_both_are_left_as_they_are_and_nothing_is_logged(env: Env) -> None:
    use_database_options(env, {"timeout": 3, "transaction_mode": "EXCLUSIVE"})
    result = tasks.database_options.enqueue()

    output = env.run_batch()

    result.refresh()
    assert result.return_value == {"timeout": 3, "transaction_mode": "EXCLUSIVE"}
    assert "SQLite database" not in output


def test_the_suggested_settings_are_what_the_check_and_the_worker_name() -> None:
    assert sqlite.suggested_sqlite_settings() == {"timeout": 20, "transaction_mode": "IMMEDIATE"}


# -- a web process writing while tasks do ------------------------------------------------------

#: Enqueues by the web process, each counted in the database by its task_enqueued receiver.
WEB_ENQUEUES = 200
#: How long each enqueued task holds SQLite's write lock. The web's receiver reads, then
#: writes; under a deferred BEGIN that write fails at once when a task holds the lock. With
#: tasks holding it for a few ms now and then, that race is lost now and then (1 to 5 of
#: 11 writes in the report); held for this long by two worker processes while the web
#: process enqueues faster than they drain, a task holds it nearly all the time, so
#: without the settings most of the web's writes fail in every run, not some in some.
HOLD_WRITE_LOCK_S = 0.02

#: A web process as a monitoring app makes it: a ``task_enqueued`` receiver that counts
#: each enqueue in the database. Prints the enqueues that raised, as JSON.
WEB_PROCESS = """
import json, sys
from django.db import transaction
from procpool_tasks.compat import task_enqueued
from tests import tasks
from tests.models import Counter

def count_enqueue(sender, task_result, **kwargs):
    with transaction.atomic():
        counter = Counter.objects.get(name="enqueued")
        counter.value += 1
        counter.save(update_fields=["value"])

task_enqueued.connect(count_enqueue)
failures = []
for _ in range(int(sys.argv[1])):
    try:
        tasks.hold_write_lock.enqueue(float(sys.argv[2]))
    except Exception as error:
        failures.append(f"{type(error).__module__}.{type(error).__name__}: {error}")
print(json.dumps(failures))
"""


def enqueue_from_a_web_process_while_tasks_write(env: Env) -> list[str]:
    """Run ``WEB_PROCESS`` while a worker runs what it enqueues; the enqueues that failed."""
    reset_counter(env, "enqueued")
    worker = env.start_worker("--processes", "2")
    # The worker's processes run tasks before the web process starts: its enqueues meet
    # running tasks from the first.
    first = tasks.hold_write_lock.enqueue(0)
    wait_for(lambda: status_of(first) == "SUCCESSFUL", what="the first task to succeed")

    output = env.run_python(WEB_PROCESS, str(WEB_ENQUEUES), str(HOLD_WRITE_LOCK_S), timeout=120)

    assert worker.stop() == 0
    failures: list[str] = json.loads(output.splitlines()[-1])
    return failures


def test_a_web_process_counting_each_enqueue_in_sqlite_loses_no_write_while_tasks_write(
    env: Env,
) -> None:
    use_database_options(env, {})

    failures = enqueue_from_a_web_process_while_tasks_write(env)

    assert failures == []
    assert counter_value(env, "enqueued") == WEB_ENQUEUES


def test_without_the_sqlite_defaults_the_web_process_loses_writes_to_database_is_locked(
    env: Env,
) -> None:
    use_database_options(env, {}, backend_options={"sqlite_defaults": False})

    failures = enqueue_from_a_web_process_while_tasks_write(env)

    assert failures, "no write failed: the race the defaults prevent did not happen"
    assert set(failures) == {"django.db.utils.OperationalError: database is locked"}
    assert counter_value(env, "enqueued") == WEB_ENQUEUES - len(failures)


# -- the system check W001 ---------------------------------------------------------------------

#: W001 as a process prints it when the default backend opts out of the SQLite settings.
W001_OPTED_OUT = (
    "TASKS['default']: (procpool_tasks.W001) Database 'default' is SQLite without a busy "
    "timeout and IMMEDIATE transactions, and OPTIONS['sqlite_defaults'] is False in "
    "TASKS['default'], so procpool_tasks adds them in no process: processes that write to "
    "it while tasks do will fail with 'database is locked'.\n"
    "\tHINT: Add 'timeout': 20, 'transaction_mode': 'IMMEDIATE' to "
    "DATABASES['default']['OPTIONS'], or remove 'sqlite_defaults': False.\n"
)


def test_w001_is_printed_once_by_a_worker_start_and_never_by_the_read_only_commands(
    env: Env,
) -> None:
    use_database_options(env, {}, backend_options={"sqlite_defaults": False})

    output = env.run_batch()

    assert output.count("procpool_tasks.W001") == 1
    assert W001_OPTED_OUT in output
    for command in [
        ["procpool_status"],
        ["procpool_status", "-v", "0", "--fail-if-no-worker", "--fail-if-older", "60"],
        ["procpool_status", "--json"],
        ["procpool_quarantine", "list"],
    ]:
        done = env.manage(*command, expect_code=1 if "--fail-if-no-worker" in command else 0)
        assert "W001" not in done.stdout + done.stderr, command
    # A command that changes the journal still runs the checks.
    done = env.manage("procpool_prune", "--older-than", "60")
    assert done.stderr.count("procpool_tasks.W001") == 1


def test_w001_is_printed_once_by_a_reloading_worker_not_again_on_each_reload(env: Env) -> None:
    use_database_options(env, {}, backend_options={"sqlite_defaults": False})
    code = env.tmp_path / "code"
    code.mkdir()
    module = code / "edited.py"
    module.write_text("X = 1\n")
    worker = env.start_worker("--reload", "--reload-dir", str(code))
    wait_for(lambda: "Starting worker" in worker.output, what="the first supervisor to start")

    module.write_text("X = 2\n")
    wait_for(
        lambda: worker.output.count("Starting worker") == 2, what="the second supervisor to start"
    )

    assert worker.output.count("procpool_tasks.W001") == 1
    assert W001_OPTED_OUT in worker.output
