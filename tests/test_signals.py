"""The framework's signals, as a monitoring app stores them: one per end of an attempt.

Receivers (``tests/signal_rows.py``) write a row per ``task_enqueued``, ``task_started``
and ``task_finished`` into the project's SQLite database, from whichever process sends it:
the web process that enqueues, the worker process, the supervisor, a command. Each test
ends a task one way, with real processes and real kills, then checks that each attempt
ended with exactly one row (``task_finished``, or ``task_enqueued`` again with the same
id when it runs again), that the last row says what ``get_result`` says (status,
attempts, worker ids, errors), and that no receiver failed to write.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Env, wait_for
from tests.signal_rows import SIGNAL_ROWS_VARIABLE
from tests.support import TIMED_OUT, lines_of, set_options

DIED = "procpool_tasks.exceptions.WorkerProcessDied"
INTERRUPTED = "procpool_tasks.exceptions.TaskInterrupted"
CANCELLED = "procpool_tasks.exceptions.TaskCancelled"
TRANSIENT = "tests.tasks.TransientError"
#: What the worker and the commands log when a receiver raised (a write that failed).
RECEIVER_FAILED = "receiver failed"
#: What ``get_result`` and each row say about a task.
FIELDS = ("status", "attempts", "worker_ids", "errors")

#: A row in short: signal, status, attempts.
Row = tuple[str, str, int]


def enqueued(attempts: int = 0) -> Row:
    return ("enqueued", "READY", attempts)


def started(attempt: int) -> Row:
    return ("started", "RUNNING", attempt)


def finished(status: str, attempts: int) -> Row:
    return ("finished", status, attempts)


@pytest.fixture
def monitored(env: Env) -> Env:
    """The test's processes store every signal in the test's SQLite database."""
    env.variables[SIGNAL_ROWS_VARIABLE] = "1"
    env.migrate()
    return env


ENQUEUE = """
import json, sys
from django.utils.module_loading import import_string
for path, args in json.loads(sys.argv[1]):
    print(import_string(path).enqueue(*args).id)
"""


def enqueue(env: Env, *calls: tuple[str, list[Any]]) -> list[str]:
    """Enqueue tasks (path, args) from a web process of the project; their ids."""
    return env.run_python(ENQUEUE, json.dumps(calls)).split()


READ_RESULTS = """
import json, sys
from procpool_tasks import compat
backend = compat.task_backends["default"]
found = {}
for result_id in sys.argv[1:]:
    result = backend.get_result(result_id)
    found[result_id] = {
        "id": result.id,
        "status": str(result.status),
        "attempts": result.attempts,
        "worker_ids": list(result.worker_ids),
        "errors": [error.exception_class_path for error in result.errors],
    }
print(json.dumps(found))
"""


def results_of(env: Env, *ids: str) -> dict[str, dict[str, Any]]:
    """What ``get_result`` returns for each id, in a process of the project."""
    found: dict[str, dict[str, Any]] = json.loads(env.run_python(READ_RESULTS, *ids))
    return found


def rows_of(env: Env, task_id: str) -> list[dict[str, Any]]:
    """The rows the receivers stored for a task id, in the order they were written."""
    with contextlib.closing(sqlite3.connect(env.variables["PROCPOOL_TEST_DB"])) as db:
        found = db.execute(
            "SELECT signal, status, attempts, worker_ids, errors FROM tests_signalrow "
            "WHERE task_id = ? ORDER BY id",
            (task_id,),
        ).fetchall()
    return [
        {
            "signal": signal_name,
            "status": status,
            "attempts": attempts,
            "worker_ids": json.loads(worker_ids),
            "errors": json.loads(errors),
        }
        for signal_name, status, attempts, worker_ids, errors in found
    ]


def short(rows: list[dict[str, Any]]) -> list[Row]:
    return [(row["signal"], row["status"], row["attempts"]) for row in rows]


def wait_for_rows(env: Env, task_id: str, count: int) -> None:
    wait_for(
        lambda: len(rows_of(env, task_id)) >= count,
        what=f"{count} signal rows for task {task_id}",
    )


def assert_signals(
    env: Env, expected: dict[str, list[Row]], *outputs: str
) -> dict[str, list[dict[str, Any]]]:
    """Each task's rows are ``expected``, the last one says what ``get_result`` says, and
    no receiver failed in the processes whose ``outputs`` are given; the rows by id."""
    for task_id, sequence in expected.items():
        wait_for_rows(env, task_id, len(sequence))
    results = results_of(env, *expected)
    rows = {task_id: rows_of(env, task_id) for task_id in expected}
    for task_id, sequence in expected.items():
        assert short(rows[task_id]) == sequence, task_id
        assert all(row["attempts"] == len(row["worker_ids"]) for row in rows[task_id])
        last, result = rows[task_id][-1], results[task_id]
        assert {name: last[name] for name in FIELDS} == {name: result[name] for name in FIELDS}
    for output in outputs:
        assert RECEIVER_FAILED not in output, output
    return rows


def last_errors(rows: dict[str, list[dict[str, Any]]], task_id: str) -> list[str]:
    errors: list[str] = rows[task_id][-1]["errors"]
    return errors


# -- ends of a task in one run of a worker -----------------------------------------------------


@dataclass(frozen=True)
class Case:
    """A task (its path, and its args made from the test's directory), how it runs, and the
    rows and errors it must end with."""

    task_path: str
    args: Callable[[Path], list[Any]]
    rows: list[Row]
    errors: list[str]
    options: dict[str, Any] = field(default_factory=dict)
    worker_args: tuple[str, ...] = ()


def _retry(attempts: int) -> dict[str, Any]:
    policy = {"attempts": attempts, "delay": 0.05, "jitter": False, "exceptions": [TRANSIENT]}
    return {"retry": policy}


ONE_RUN = {
    "succeeds": Case(
        "tests.tasks.add",
        lambda tmp: [1, 2],
        [enqueued(), started(1), finished("SUCCESSFUL", 1)],
        [],
    ),
    "raises": Case(
        "tests.tasks.fail_with",
        lambda tmp: ["as planned"],
        [enqueued(), started(1), finished("FAILED", 1)],
        ["builtins.ValueError"],
    ),
    "times out": Case(
        "tests.tasks.sleep_for",
        lambda tmp: [30],
        [enqueued(), started(1), finished("FAILED", 1)],
        [TIMED_OUT],
        options={"task_timeout": 0.5},
    ),
    "ignores its timeout and is killed": Case(
        "tests.more_tasks.swallow_time_limit",
        lambda tmp: [30, str(tmp / "marker")],
        [enqueued(), started(1), finished("FAILED", 1)],
        [TIMED_OUT],
        options={"task_timeout": 0.5},
    ),
    "leaves its process over the memory limit": Case(
        "tests.tasks.add",
        lambda tmp: [1, 2],
        [enqueued(), started(1), finished("SUCCESSFUL", 1)],
        [],
        worker_args=("--max-memory-per-child", "1"),
    ),
    "kills its own process": Case(
        "tests.more_tasks.kill_own_process",
        lambda tmp: [signal.SIGKILL],
        [enqueued(), started(1), finished("FAILED", 1)],
        [DIED],
    ),
    "is retried until it succeeds": Case(
        "tests.tasks.fail_times",
        lambda tmp: [str(tmp / "attempts.log"), 1],
        [enqueued(), started(1), enqueued(1), started(2), finished("SUCCESSFUL", 2)],
        [TRANSIENT],
        options=_retry(attempts=3),
    ),
    "is retried until its last attempt": Case(
        "tests.tasks.fail_times",
        lambda tmp: [str(tmp / "attempts.log"), 5],
        [enqueued(), started(1), enqueued(1), started(2), finished("FAILED", 2)],
        [TRANSIENT, TRANSIENT],
        options=_retry(attempts=2),
    ),
}


@pytest.mark.parametrize("case", ONE_RUN.values(), ids=ONE_RUN.keys())
def test_a_task_that_ends_in_its_worker_sends_one_signal_per_attempt_equal_to_get_result(
    monitored: Env, case: Case
) -> None:
    env = monitored
    set_options(env, **case.options)
    [task_id] = enqueue(env, (case.task_path, case.args(env.tmp_path)))

    output = env.run_batch("--processes", "1", *case.worker_args)

    rows = assert_signals(env, {task_id: case.rows}, output)
    assert last_errors(rows, task_id) == case.errors


# -- processes killed --------------------------------------------------------------------------


def start_held(env: Env, count: int, *worker_args: str) -> tuple[list[str], Any, Path, Path]:
    """Enqueue ``count`` tasks that wait for a gate and start a worker that runs them all;
    their ids, the worker, the log of their pids and the gate."""
    starts, gate = env.tmp_path / "starts.log", env.tmp_path / "gate"
    held = ("tests.more_tasks.log_start_then_wait", [str(starts), str(gate)])
    ids = enqueue(env, *[held] * count)
    worker = env.start_worker("--processes", str(count), *worker_args)
    wait_for(lambda: len(lines_of(starts)) == count, what=f"{count} task(s) to start")
    return ids, worker, starts, gate


def test_a_killed_worker_process_fails_its_task_and_its_neighbour_runs_again_one_signal_each(
    monitored: Env,
) -> None:
    env = monitored
    ids, worker, starts, gate = start_held(env, 2)

    os.kill(int(lines_of(starts)[0]), signal.SIGKILL)

    def announced_failed() -> list[str]:
        return [each for each in ids if ("finished", "FAILED", 1) in short(rows_of(env, each))]

    [killed] = wait_for(announced_failed, what="the killed task to be announced FAILED")
    [rerun] = [each for each in ids if each != killed]
    gate.touch()
    wait_for_rows(env, rerun, 5)
    assert worker.stop() == 0

    rows = assert_signals(
        env,
        {
            killed: [enqueued(), started(1), finished("FAILED", 1)],
            rerun: [enqueued(), started(1), enqueued(1), started(2), finished("SUCCESSFUL", 2)],
        },
        worker.output,
    )
    assert last_errors(rows, killed) == [DIED]
    assert rows[rerun][2]["errors"] == [INTERRUPTED]


@pytest.mark.parametrize(
    ("max_attempts", "after"),
    [
        (3, [enqueued(1), started(2), finished("SUCCESSFUL", 2)]),
        (1, [finished("FAILED", 1)]),
    ],
    ids=["runs again", "fails"],
)
def test_a_task_whose_supervisor_was_killed_is_announced_once_by_the_next_supervisor(
    monitored: Env, max_attempts: int, after: list[Row]
) -> None:
    env = monitored
    set_options(env, max_attempts=max_attempts)
    [task_id], first, starts, gate = start_held(env, 1)

    first.send(signal.SIGKILL)
    first.wait()
    pid = int(lines_of(starts)[0])
    wait_for(lambda: not _is_running(pid), what="its worker process to die with its supervisor")
    gate.touch()
    output = env.run_batch("--processes", "1")

    rows = assert_signals(env, {task_id: [enqueued(), started(1), *after]}, output)
    assert rows[task_id][2]["errors"] == [INTERRUPTED]


def _is_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


# -- ends decided by an operator -------------------------------------------------------------

CANCEL_IN_WEB = """
import sys
from procpool_tasks import compat
compat.task_backends["default"].cancel(sys.argv[1])
"""


def test_a_task_cancelled_before_it_ran_is_announced_failed_once_by_the_web_process(
    monitored: Env,
) -> None:
    env = monitored
    [task_id] = enqueue(env, ("tests.tasks.add", [1, 2]))

    env.run_python(CANCEL_IN_WEB, task_id)
    output = env.run_batch("--processes", "1")

    rows = assert_signals(env, {task_id: [enqueued(), finished("FAILED", 0)]}, output)
    assert last_errors(rows, task_id) == [CANCELLED]


def test_a_task_cancelled_while_it_runs_is_announced_failed_once_by_its_supervisor(
    monitored: Env,
) -> None:
    env = monitored
    [task_id], worker, _, _ = start_held(env, 1)

    done = env.manage("procpool_cancel", task_id)
    wait_for_rows(env, task_id, 3)
    assert worker.stop() == 0

    rows = assert_signals(
        env,
        {task_id: [enqueued(), started(1), finished("FAILED", 1)]},
        worker.output,
        done.stdout + done.stderr,
    )
    assert last_errors(rows, task_id) == [CANCELLED]


def test_a_requeued_task_is_enqueued_again_under_its_id_and_runs_as_a_new_attempt(
    monitored: Env,
) -> None:
    env = monitored
    [task_id] = enqueue(env, ("tests.tasks.fail_with", ["as planned"]))
    first = env.run_batch("--processes", "1")

    done = env.manage("procpool_requeue", task_id)
    again = assert_signals(
        env,
        {task_id: [enqueued(), started(1), finished("FAILED", 1), enqueued(1)]},
        done.stdout + done.stderr,
    )
    second = env.run_batch("--processes", "1")

    rows = assert_signals(
        env,
        {
            task_id: [
                enqueued(),
                started(1),
                finished("FAILED", 1),
                enqueued(1),
                started(2),
                finished("FAILED", 2),
            ]
        },
        first,
        second,
    )
    assert again[task_id][-1]["errors"] == ["builtins.ValueError"]
    assert last_errors(rows, task_id) == ["builtins.ValueError"] * 2


def test_a_handed_off_task_is_announced_by_its_new_backend_under_the_id_get_result_returns(
    monitored: Env,
) -> None:
    pytest.importorskip("django_tasks_db")
    env = monitored
    [task_id] = enqueue(env, ("tests.tasks.add", [1, 2]))

    done = env.manage("procpool_handoff", "--to", "db")

    [result] = results_of(env, task_id).values()
    target_id = result["id"]
    assert target_id != task_id
    # Nothing ran here: the old id's one row says what it said; the move is the new
    # backend's task_enqueued, under the id that get_result of the old id returns now.
    assert short(rows_of(env, task_id)) == [enqueued()]
    rows = rows_of(env, target_id)
    assert short(rows) == [enqueued()]
    assert {name: rows[-1][name] for name in FIELDS} == {name: result[name] for name in FIELDS}
    assert RECEIVER_FAILED not in done.stdout + done.stderr
