"""Enqueue on commit: inside ``transaction.atomic()`` a task is written when the outermost
transaction commits, and never if it rolls back.

A real SQLite database (migrated per test) and a "web process" that the test drives one
expression at a time, so that a transaction stays open while the test looks at the
journal from outside and a real ``procpool_worker`` runs what it finds.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from procpool_tasks import compat
from tests import tasks
from tests.conftest import REPO_ROOT, Env, wait_for
from tests.signal_log import SIGNAL_LOG_VARIABLE

#: A web process: evaluates one expression per line of stdin, answers with a JSON line.
WEB_PROCESS = """
import json, sys, threading
import django
django.setup()
from django.db import connections, transaction
from procpool_tasks import compat
from tests import tasks
from tests.models import Note

class Rollback(Exception):
    '''Leaves an atomic block as an exception raised in it would.'''

blocks = []
hooked = []

def begin():
    block = transaction.atomic()
    block.__enter__()
    blocks.append(block)

def commit():
    blocks.pop().__exit__(None, None, None)

def rollback():
    blocks.pop().__exit__(Rollback, Rollback(), None)

def enqueue(line):
    return tasks.append_line.enqueue(sys.argv[1], line).id

def enqueue_in_own_transaction(line):
    with transaction.atomic():
        return enqueue(line)

def enqueue_in_threads(count):
    '''One transaction per thread, each thread ending after it, as request threads do.'''
    ids = []
    def request(n):
        try:
            ids.append(enqueue_in_own_transaction(f"thread {n}"))
        finally:
            connections.close_all()  # as Django does when a request finishes
    for n in range(count):
        thread = threading.Thread(target=request, args=(n,))
        thread.start()
        thread.join()
    return ids

def missing(result_id):
    '''What get_result says of an id it does not find; None if it finds it.'''
    try:
        tasks.append_line.get_backend().get_result(result_id)
    except compat.TaskResultDoesNotExist as error:
        return str(error)
    return None

def notes():
    return sorted(Note.objects.values_list("text", flat=True))

for line in sys.stdin:
    try:
        reply = {"value": eval(line, globals())}
    except Exception as error:
        reply = {"error": f"{type(error).__name__}: {error}"}
    print("REPLY " + json.dumps(reply), flush=True)
"""


class WebProcess:
    """A Django process that runs what the test says, as a view would, and keeps its state."""

    def __init__(self, env: Env, out: Path) -> None:
        self.stderr_path = env.tmp_path / "web-process.err"
        with self.stderr_path.open("w") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, "-c", WEB_PROCESS, str(out)],
                env=env.variables,
                cwd=REPO_ROOT,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
            )
        env.processes.append(self.process)

    def __call__(self, expression: str) -> Any:
        """Evaluate ``expression`` in the process; its value, or AssertionError if it raised."""
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.process.stdin.write(expression + "\n")
        self.process.stdin.flush()
        for line in self.process.stdout:
            if line.startswith("REPLY "):
                reply = json.loads(line.removeprefix("REPLY "))
                if "error" in reply:
                    raise AssertionError(f"{expression} raised {reply['error']}")
                return reply["value"]
        pytest.fail(f"the web process died; stderr:\n{self.stderr_path.read_text()}")


@pytest.fixture
def out(env: Env) -> Path:
    """The file ``tests.tasks.append_line`` tasks write to: one line per task that ran."""
    return env.tmp_path / "out.txt"


def start_web(env: Env, out: Path, **options: Any) -> WebProcess:
    """A web process (and workers) with these backend OPTIONS, on a migrated database."""
    env.variables["PROCPOOL_TEST_OPTIONS"] = json.dumps(options)
    env.variables[SIGNAL_LOG_VARIABLE] = str(env.tmp_path / "signals.log")
    env.migrate()
    return WebProcess(env, out)


@pytest.fixture
def web(env: Env, out: Path) -> WebProcess:
    """A web process enqueueing every task on commit."""
    return start_web(env, out, enqueue_on_commit=True)


ON_COMMIT_FOR_APPEND_LINE = {"tests.tasks.append_line": {"enqueue_on_commit": True}}


def lines_of(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def enqueued_signals(env: Env) -> list[str]:
    """The task_enqueued signals sent, in order (the log has started and finished too)."""
    return [line for line in lines_of(env.tmp_path / "signals.log") if line.startswith("enqueued ")]


def not_found(result_id: str) -> str:
    """What get_result in this (another) process says of the id; fails if it finds it."""
    with pytest.raises(compat.TaskResultDoesNotExist) as missing:
        tasks.append_line.get_result(result_id)
    return str(missing.value)


def pending_message(result_id: str) -> str:
    return (
        f"{result_id}: enqueued on commit; it exists once the transaction commits, and "
        "never if it rolls back"
    )


def segment_line_at(env: Env, result_id: str) -> Any:
    """The JSON of the segment line a task id points at."""
    segment, _, offset = result_id.partition("-")
    data = (env.journal / "segments" / f"{segment}.log").read_bytes()
    start = int(offset, 16)
    line = data[start : data.index(b"\n", start)]
    return json.loads(line.split(b" ", 1)[1])


def assert_nothing_quarantined(env: Env, output: str) -> None:
    assert "Quarantined" not in output
    assert list((env.journal / "quarantine").iterdir()) == []


# -- commit and rollback ---------------------------------------------------------------------


def test_task_enqueued_in_a_transaction_is_written_at_commit_under_the_id_it_was_given(
    env: Env, web: WebProcess, out: Path
) -> None:
    web("begin()")
    web("Note.objects.create(text='with the task').pk")
    result_id = web("enqueue('committed')")

    assert web(f"missing({result_id!r})") == pending_message(result_id)
    assert not_found(result_id) == result_id
    assert enqueued_signals(env) == []

    web("commit()")

    result = tasks.append_line.get_result(result_id)
    assert (result.status, result.args) == ("READY", [str(out), "committed"])
    assert web(f"missing({result_id!r})") is None
    assert enqueued_signals(env) == [f"enqueued {result_id} READY"]
    env.run_batch("--processes", "1")
    assert tasks.append_line.get_result(result_id).status == "SUCCESSFUL"
    assert lines_of(out) == ["committed"]
    assert web("notes()") == ["with the task"]


def test_task_enqueued_in_a_transaction_that_rolls_back_never_exists(
    env: Env, web: WebProcess, out: Path
) -> None:
    web("begin()")
    web("Note.objects.create(text='rolled back').pk")
    result_id = web("enqueue('rolled back')")
    web("rollback()")

    assert web(f"missing({result_id!r})") == result_id
    assert not_found(result_id) == result_id
    output = env.run_batch("--processes", "1")

    assert not_found(result_id) == result_id
    assert lines_of(out) == []
    assert web("notes()") == []
    assert enqueued_signals(env) == []
    assert_nothing_quarantined(env, output)


def test_task_committed_after_a_rollback_in_the_same_thread_is_written_after_a_void_line(
    env: Env, web: WebProcess, out: Path
) -> None:
    web("begin()")
    rolled_back = web("enqueue('rolled back')")
    web("rollback()")
    web("begin()")
    committed = web("enqueue('committed')")
    web("commit()")

    output = env.run_batch("--processes", "1")

    # One segment per thread: the rolled-back id's place is filled, the next one follows.
    assert committed.partition("-")[0] == rolled_back.partition("-")[0]
    assert segment_line_at(env, rolled_back) == {"void": rolled_back}
    assert tasks.append_line.get_result(committed).status == "SUCCESSFUL"
    assert not_found(rolled_back) == rolled_back
    assert lines_of(out) == ["committed"]
    assert enqueued_signals(env) == [f"enqueued {committed} READY"]
    assert_nothing_quarantined(env, output)


def test_outside_a_transaction_a_task_enqueued_on_commit_is_written_at_once(
    env: Env, web: WebProcess, out: Path
) -> None:
    result_id = web("enqueue('at once')")

    assert tasks.append_line.get_result(result_id).status == "READY"
    assert enqueued_signals(env) == [f"enqueued {result_id} READY"]
    env.run_batch("--processes", "1")
    assert lines_of(out) == ["at once"]


def test_task_options_enqueue_on_commit_applies_to_that_task_only(env: Env, out: Path) -> None:
    per_task = start_web(env, out, task_options=ON_COMMIT_FOR_APPEND_LINE)
    per_task("begin()")
    on_commit = per_task("enqueue('on commit')")
    at_once = per_task("tasks.add.enqueue(1, 2).id")

    assert not_found(on_commit) == on_commit
    assert tasks.add.get_result(at_once).status == "READY"
    per_task("rollback()")

    env.run_batch("--processes", "1")
    assert not_found(on_commit) == on_commit
    assert tasks.add.get_result(at_once).return_value == 3


# -- nested atomic blocks ----------------------------------------------------------------------


def test_rolled_back_savepoint_drops_its_task_and_the_outer_transactions_tasks_run(
    env: Env, web: WebProcess, out: Path
) -> None:
    web("begin()")
    before = web("enqueue('outer, before')")
    web("begin()")
    inner = web("enqueue('inner')")
    web("Note.objects.create(text='inner').pk")
    web("rollback()")
    after = web("enqueue('outer, after')")

    assert web(f"missing({inner!r})") == inner
    assert web(f"missing({before!r})") == pending_message(before)
    assert web(f"missing({after!r})") == pending_message(after)
    web("commit()")

    output = env.run_batch("--processes", "1")
    assert [tasks.append_line.get_result(i).status for i in (before, after)] == ["SUCCESSFUL"] * 2
    assert not_found(inner) == inner
    assert segment_line_at(env, inner) == {"void": inner}
    assert lines_of(out) == ["outer, before", "outer, after"]
    assert web("notes()") == []
    assert sorted(enqueued_signals(env)[:2]) == sorted(
        [f"enqueued {before} READY", f"enqueued {after} READY"]
    )
    assert_nothing_quarantined(env, output)


@pytest.mark.parametrize("outer", ["commit", "rollback"])
def test_task_of_a_released_savepoint_waits_for_the_outermost_transaction(
    env: Env, web: WebProcess, out: Path, outer: str
) -> None:
    web("begin()")
    web("begin()")
    result_id = web("enqueue('inner')")
    web("commit()")  # releases the savepoint only

    assert web(f"missing({result_id!r})") == pending_message(result_id)
    assert not_found(result_id) == result_id
    web(f"{outer}()")

    output = env.run_batch("--processes", "1")
    if outer == "commit":
        assert tasks.append_line.get_result(result_id).status == "SUCCESSFUL"
        assert lines_of(out) == ["inner"]
    else:
        assert not_found(result_id) == result_id
        assert web(f"missing({result_id!r})") == result_id
        assert lines_of(out) == []
    assert_nothing_quarantined(env, output)


# -- a worker running meanwhile ----------------------------------------------------------------


def test_running_worker_never_runs_a_task_whose_transaction_is_open_or_rolled_back(
    env: Env, out: Path
) -> None:
    web = start_web(env, out, task_options=ON_COMMIT_FOR_APPEND_LINE)
    worker = env.start_worker("--processes", "1")
    web("begin()")
    first = web("enqueue('first')")
    web("commit()")
    wait_for(lambda: lines_of(out) == ["first"], what="the committed task to run")

    web("begin()")
    held = web("enqueue('held')")
    web("Note.objects.create(text='held').pk")
    # Written at once, after the reservation: once it ran, the worker has read past it.
    marker = web("tasks.add.enqueue(1, 2).id")
    wait_for(lambda: tasks.add.get_result(marker).status == "SUCCESSFUL", what="the marker task")
    assert not_found(held) == held
    web("rollback()")
    web("begin()")
    after = web("enqueue('after')")
    web("commit()")
    wait_for(lambda: len(lines_of(out)) == 2, what="the task committed after the rollback")
    assert worker.stop() == 0

    assert lines_of(out) == ["first", "after"]
    assert first.partition("-")[0] == held.partition("-")[0] == after.partition("-")[0]
    assert not_found(held) == held
    assert web("notes()") == []
    assert_nothing_quarantined(env, worker.output)


# -- hooks that enqueue while the transaction's own hooks run --------------------------------


def test_task_enqueued_on_commit_survives_an_earlier_hook_that_enqueues_in_its_own_transaction(
    env: Env, web: WebProcess, out: Path
) -> None:
    web("begin()")
    web("transaction.on_commit(lambda: hooked.append(enqueue_in_own_transaction('hook')))")
    committed = web("enqueue('committed')")
    web("commit()")

    hooked = web("hooked")
    assert [tasks.append_line.get_result(i).status for i in [committed, *hooked]] == ["READY"] * 2
    env.run_batch("--processes", "1")
    assert sorted(lines_of(out)) == ["committed", "hook"]


# -- threads ---------------------------------------------------------------------------------


def test_request_threads_that_enqueue_on_commit_one_after_another_share_one_segment(
    env: Env, web: WebProcess, out: Path
) -> None:
    # A thread per request (runserver, ASGI) must not leave a segment (and an open file)
    # behind each: the places of finished transactions are used again.
    result_ids = web("enqueue_in_threads(3)")
    assert len({result_id.partition("-")[0] for result_id in result_ids}) == 1

    env.run_batch("--processes", "1")
    assert sorted(lines_of(out)) == ["thread 0", "thread 1", "thread 2"]
    assert len(list((env.journal / "segments").glob("*.log"))) == 1
