"""``procpool_handoff``: READY and deferred tasks move to another backend, which runs them.

Real targets: django-tasks-rq on a real ``redis-server`` with its ``rqworker``, and
django-tasks-db on a throw-away PostgreSQL cluster and on SQLite with its ``db_worker``
(``tests/services.py`` starts the servers). ``tests.backends.FileListBackend`` stands for a
backend that can hold little and that no finder knows. The command runs as an operator
runs it, beside a running ``procpool_worker``, and is killed half-way by ``tests.crash_at``
and by SIGKILL from outside.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import random
import sqlite3
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
from django.utils import timezone

from procpool_tasks import journal
from tests import tasks
from tests.conftest import REPO_ROOT, WAIT_S, Env, wait_for
from tests.crash_at import CRASH_AT_CALL_VARIABLE, CRASH_AT_VARIABLE, CRASH_STATUS_VARIABLE
from tests.processes import run
from tests.services import PostgresServer
from tests.support import journal_files, state_of

#: The table django-tasks-db keeps its tasks in.
DB_TABLE = "django_tasks_database_dbtaskresult"
#: RQ's key prefix of a job's hash.
RQ_JOB_PREFIX = "rq:job:"


@dataclass
class Target:
    """A backend to hand tasks to: its alias, how to run its worker, and its copies."""

    alias: str
    env: Env
    run_worker: Callable[[], None]
    copies: Callable[[], list[dict[str, Any]]]  # each: id, task, args, kwargs, queue

    def copies_by_args(self) -> Counter[str]:
        return Counter(json.dumps(copy["args"]) for copy in self.copies())


# -- the targets ---------------------------------------------------------------------------


def _redis(url: str) -> redis.Redis:
    """A client of the test's Redis whose every wait on it ends (redis.TimeoutError)."""
    return redis.Redis.from_url(url, socket_timeout=WAIT_S, socket_connect_timeout=WAIT_S)


def _postgres(conninfo: str, *, autocommit: bool = False) -> psycopg.Connection[Any]:
    """A connection to the test's PostgreSQL that gives up connecting after WAIT_S."""
    return psycopg.connect(conninfo, autocommit=autocommit, connect_timeout=int(WAIT_S))


def _rq_target(env: Env, redis_url: str) -> Target:
    from rq.job import Job

    client = _redis(redis_url)
    client.flushdb()  # one server per xdist worker: only the test before wrote here
    env.variables["PROCPOOL_TEST_REDIS_URL"] = redis_url

    def run_worker() -> None:
        env.manage("rqworker", "default", "high", "--burst", "--job-class", "django_tasks_rq.Job")

    def copies() -> list[dict[str, Any]]:
        ids = [
            key.decode()[len(RQ_JOB_PREFIX) :]
            for key in client.scan_iter(match=f"{RQ_JOB_PREFIX}*")
            if b":" not in key[len(RQ_JOB_PREFIX) :]
        ]
        return [
            {
                "id": job.id,
                "task": job.func_name,
                "args": list(job.args),
                "kwargs": job.kwargs,
                "queue": job.origin,
            }
            for job in Job.fetch_many(ids, connection=client)
            if job is not None
        ]

    return Target("rq", env, run_worker, copies)


def _db_target(env: Env, query: Callable[[str], list[tuple[Any, ...]]]) -> Target:
    def run_worker() -> None:
        env.manage(
            "db_worker", "--batch", "--backend", "db", "--queue-name", "*", "--no-startup-delay"
        )

    def copies() -> list[dict[str, Any]]:
        rows = query(f"SELECT id, task_path, args_kwargs, queue_name FROM {DB_TABLE}")  # noqa: S608
        found = []
        for row_id, task_path, args_kwargs, queue_name in rows:
            data = json.loads(args_kwargs) if isinstance(args_kwargs, str) else args_kwargs
            found.append(
                {
                    "id": str(uuid.UUID(str(row_id))),
                    "task": task_path,
                    "args": data["args"],
                    "kwargs": data["kwargs"],
                    "queue": queue_name,
                }
            )
        return found

    return Target("db", env, run_worker, copies)


def _sqlite_target(env: Env) -> Target:
    env.migrate()
    path = env.variables["PROCPOOL_TEST_DB"]

    def query(sql: str) -> list[tuple[Any, ...]]:
        # sqlite3's own context manager commits but does not close (Python 3.13 warns).
        with contextlib.closing(sqlite3.connect(path, timeout=30)) as connection:
            return connection.execute(sql).fetchall()

    return _db_target(env, query)


@pytest.fixture(scope="session")
def postgres_template(
    postgres_server: PostgresServer, tmp_path_factory: pytest.TempPathFactory
) -> str:
    """A database migrated once per session; each test gets a copy of it (fast)."""
    name = "handoff_template"
    with _postgres(postgres_server.conninfo, autocommit=True) as connection:
        connection.execute(f"CREATE DATABASE {name}")
    database = {**postgres_server.django_database, "NAME": name}
    done = run(
        [sys.executable, "-m", "django", "migrate", "-v", "0"],
        timeout=120,
        what="migrate on PostgreSQL",
        env={
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tests.settings",
            "PROCPOOL_TASKS_PATH": str(tmp_path_factory.mktemp("template") / "journal"),
            "PROCPOOL_TEST_DATABASE": json.dumps(database),
            "PYTHONPATH": str(REPO_ROOT),
        },
        cwd=REPO_ROOT,
    )
    assert done.returncode == 0, f"exit code {done.returncode}:\n{done.stdout}{done.stderr}"
    return name


def _postgres_target(env: Env, server: PostgresServer, template: str) -> Target:
    name = f"handoff_{uuid.uuid4().hex[:12]}"
    with _postgres(server.conninfo, autocommit=True) as connection:
        connection.execute(f"CREATE DATABASE {name} TEMPLATE {template}")
    env.variables["PROCPOOL_TEST_DATABASE"] = json.dumps({**server.django_database, "NAME": name})
    conninfo = f"host={server.host} port={server.port} user={server.user} dbname={name}"

    def query(sql: str) -> list[tuple[Any, ...]]:
        with _postgres(conninfo) as connection:
            return connection.execute(sql).fetchall()

    return _db_target(env, query)


@pytest.fixture
def target(env: Env, request: pytest.FixtureRequest) -> Target:
    """The backend a test hands tasks to, by the test's parameter, fresh and empty."""
    kind = request.param
    if kind == "rq":
        return _rq_target(env, request.getfixturevalue("redis_server"))
    if kind == "db-postgres":
        server = request.getfixturevalue("postgres_server")
        return _postgres_target(env, server, request.getfixturevalue("postgres_template"))
    assert kind == "db-sqlite"
    return _sqlite_target(env)


def list_copies(env: Env) -> list[dict[str, Any]]:
    path = Path(f"{env.journal}-list.jsonl")
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


# -- helpers -------------------------------------------------------------------------------


def handoff(env: Env, *args: str, expect_code: int = 0) -> subprocess.CompletedProcess[str]:
    return env.manage("procpool_handoff", *args, expect_code=expect_code)


READ_RESULTS = """
import json, sys
from procpool_tasks import compat
backend = compat.task_backends["default"]
found = {}
for old_id in sys.argv[1:]:
    try:
        result = backend.get_result(old_id)
    except Exception as error:
        found[old_id] = {
            "error": type(error).__name__,
            "message": str(error),
            "does_not_exist": isinstance(error, compat.TaskResultDoesNotExist),
        }
        continue
    status = str(result.status)
    run_after = result.task.run_after
    found[old_id] = {
        "id": str(result.id),
        "backend": result.backend,
        "status": status,
        "return_value": result.return_value if status == "SUCCESSFUL" else None,
        "task": result.task.module_path,
        "priority": result.task.priority,
        "queue_name": result.task.queue_name,
        "run_after": run_after.timestamp() if run_after else None,
        "args": result.args,
        "kwargs": result.kwargs,
    }
print(json.dumps(found))
"""


def read_results(env: Env, *ids: str) -> dict[str, dict[str, Any]]:
    """What ``get_result`` of each old id says, in a process that sees the targets."""
    found: dict[str, dict[str, Any]] = json.loads(env.run_python(READ_RESULTS, *ids))
    return found


def status_here(env: Env, result_id: str) -> str:
    """The task's status in the journal (READY while untouched)."""
    state = state_of(env, result_id)
    return "READY" if state is None else state.status


def where_it_went(env: Env, result_id: str) -> tuple[str, str | None, str | None]:
    """The task's status here, and the backend and id its handoff names."""
    state = state_of(env, result_id)
    if state is None:
        return "READY", None, None
    if state.handoff is None:
        return state.status, None, None
    return state.status, state.handoff.backend, state.handoff.id


def spare_of(env: Env, result_id: str) -> Path:
    """The result file a worker makes, empty, for a task it has queued."""
    segment, offset = journal.parse_id(result_id)
    return env.journal / "results" / segment / f"{offset:x}.json"


def status_counts(env: Env) -> dict[str, Any]:
    document = json.loads(env.manage("procpool_status", "--json").stdout)
    totals: dict[str, Any] = document["totals"]
    return totals


def crash_variables(env: Env, status: str, *, call: int = 1, after: bool = False) -> Env:
    env.variables.update(
        {
            CRASH_AT_VARIABLE: ("after:" if after else "") + "write_state_durably",
            CRASH_STATUS_VARIABLE: status,
            CRASH_AT_CALL_VARIABLE: str(call),
        }
    )
    return env


def without_crash(env: Env) -> None:
    for name in (CRASH_AT_VARIABLE, CRASH_STATUS_VARIABLE, CRASH_AT_CALL_VARIABLE):
        env.variables.pop(name, None)


ALL_TARGETS = ["rq", "db-postgres", "db-sqlite"]


# -- moving and running --------------------------------------------------------------------

REFRESH_ACROSS_THE_HANDOFF = """
import json, subprocess, sys
from tests import tasks
result = tasks.add.get_result(sys.argv[1])
before = (str(result.status), result.id, result.backend)
for command in json.loads(sys.argv[2]):
    done = subprocess.run(
        [sys.executable, "-m", "django", *command], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
result.refresh()
print(json.dumps({"before": before, "after": [str(result.status), result.return_value]}))
"""


@pytest.mark.parametrize("target", ALL_TARGETS, indirect=True)
def test_handed_off_tasks_run_on_the_target_and_their_old_ids_read_the_results(
    env: Env, target: Target
) -> None:
    added = tasks.add.enqueue(2, 3)
    echoed = tasks.echo.enqueue(1, "two", [3], key={"nested": True})
    failed = tasks.fail_with.enqueue("boom")
    worker = (
        ["rqworker", "default", "high", "--burst", "--job-class", "django_tasks_rq.Job"]
        if target.alias == "rq"
        else ["db_worker", "--batch", "--backend", "db", "--queue-name", "*", "--no-startup-delay"]
    )

    # One process holds the old result across the handoff and the target's worker.
    script = env.run_python(
        REFRESH_ACROSS_THE_HANDOFF,
        added.id,
        json.dumps([["procpool_handoff", "--to", target.alias], worker]),
    )

    assert json.loads(script) == {
        "before": ["READY", added.id, "default"],
        "after": ["SUCCESSFUL", 5],
    }
    results = read_results(env, added.id, echoed.id, failed.id)
    copies = {copy["id"]: copy for copy in target.copies()}
    assert sorted(copies) == sorted(result["id"] for result in results.values())
    assert [
        (results[each.id]["backend"], results[each.id]["status"], results[each.id]["return_value"])
        for each in (added, echoed, failed)
    ] == [
        (target.alias, "SUCCESSFUL", 5),
        (
            target.alias,
            "SUCCESSFUL",
            {"args": [1, "two", [3]], "kwargs": {"key": {"nested": True}}},
        ),
        (target.alias, "FAILED", None),
    ]
    assert [status_here(env, each.id) for each in (added, echoed, failed)] == ["HANDED_OFF"] * 3
    totals = status_counts(env)
    assert (totals["HANDED_OFF"], totals["READY"], totals["HANDING_OFF"]) == (3, 0, 0)


@pytest.mark.parametrize("target", ["db-postgres", "rq"], indirect=True)
def test_handoff_keeps_task_path_args_kwargs_priority_queue_and_run_after(
    env: Env, target: Target
) -> None:
    later = timezone.now() + timedelta(days=1)
    priority = 7 if target.alias == "db" else 0  # RQ has no priorities (see the refusals)
    deferred = tasks.echo.using(priority=priority, queue_name="high", run_after=later).enqueue(
        1, "two", key={"nested": [True, None]}
    )
    ready = tasks.add.using(queue_name="high").enqueue(4, 5)

    done = handoff(env, "--to", target.alias)

    assert done.stdout.splitlines()[-1] == f"2 task(s) handed off to '{target.alias}'; 0 refused"
    results = read_results(env, deferred.id, ready.id)
    moved = results[deferred.id]
    # RQ's scheduler keeps whole seconds.
    precision = 1.0 if target.alias == "rq" else 1e-6
    assert abs(moved.pop("run_after") - later.timestamp()) < precision
    assert moved == {
        "id": moved["id"],
        "backend": target.alias,
        "status": "READY",
        "return_value": None,
        "task": "tests.tasks.echo",
        "priority": priority,
        "queue_name": "high",
        "args": [1, "two"],
        "kwargs": {"key": {"nested": [True, None]}},
    }
    assert (results[ready.id]["queue_name"], results[ready.id]["run_after"]) == ("high", None)
    assert sorted(copy["queue"] for copy in target.copies()) == ["high", "high"]


def test_handoff_refuses_per_task_what_the_target_cannot_hold_and_moves_the_rest(
    env: Env,
) -> None:
    later = timezone.now() + timedelta(hours=1)
    moved = tasks.add.enqueue(1, 1)
    passed = tasks.add.using(run_after=timezone.now() - timedelta(minutes=1)).enqueue(1, 2)
    deferred = tasks.add.using(run_after=later).enqueue(1, 3)
    prioritised = tasks.add.using(priority=3).enqueue(1, 4)
    low = tasks.add.using(queue_name="low").enqueue(1, 5)
    coroutine = tasks.async_add.enqueue(1, 6)

    done = handoff(env, "--to", "list", expect_code=1)

    assert sorted(done.stderr.splitlines()) == sorted(
        [
            f"Refused {deferred.id} (tests.tasks.add): it is deferred until "
            f"{later.isoformat()}, which backend 'list' cannot hold (it cannot defer tasks)",
            f"Refused {prioritised.id} (tests.tasks.add): it has priority 3, which backend "
            "'list' cannot keep (it has no priorities)",
            f"Refused {low.id} (tests.tasks.add): its queue 'low' is not in the QUEUES of "
            "backend 'list' (default, high)",
            f"Refused {coroutine.id} (tests.tasks.async_add): it is an async task, which "
            "backend 'list' cannot run",
        ]
    )
    assert done.stdout.splitlines()[-1] == "2 task(s) handed off to 'list'; 4 refused"
    # A run_after that has passed defers nothing: that task went as a READY one.
    assert sorted(copy["args"] for copy in list_copies(env)) == [[1, 1], [1, 2]]
    assert [status_here(env, each.id) for each in (moved, passed)] == ["HANDED_OFF"] * 2
    # The refused ones are READY here still, and run here.
    env.run_batch("--processes", "1", "--queue-name", "*")
    assert [str(tasks.add.get_result(each.id).status) for each in (prioritised, low)] + [
        str(tasks.async_add.get_result(coroutine.id).status)
    ] == ["SUCCESSFUL"] * 3
    assert str(tasks.add.get_result(deferred.id).status) == "READY"


def test_dry_run_lists_what_would_move_and_what_is_refused_and_changes_nothing(env: Env) -> None:
    first = tasks.add.enqueue(1, 1)
    refused = tasks.add.using(priority=3).enqueue(1, 2)
    before = journal_files(env)

    done = handoff(env, "--to", "list", "--dry-run", expect_code=1)

    assert done.stdout.splitlines() == [
        f"Would hand off {first.id} (tests.tasks.add, queue 'default') to 'list'",
        "1 task(s) would be handed off to 'list'; 1 refused",
    ]
    assert done.stderr.splitlines() == [
        f"Refused {refused.id} (tests.tasks.add): it has priority 3, which backend 'list' "
        "cannot keep (it has no priorities)"
    ]
    assert journal_files(env) == before
    assert list_copies(env) == []


def test_queue_name_hands_off_only_the_tasks_of_those_queues(env: Env) -> None:
    on_default = tasks.add.enqueue(1, 1)
    on_high = tasks.add.using(queue_name="high").enqueue(1, 2)

    done = handoff(env, "--to", "list", "--queue-name", "high")

    assert done.stdout.splitlines() == [
        f"Handed off {on_high.id} (tests.tasks.add, queue 'high') to 'list' as "
        f"{list_copies(env)[0]['id']}",
        "1 task(s) handed off to 'list'; 0 refused",
    ]
    assert [copy["args"] for copy in list_copies(env)] == [[1, 2]]
    assert state_of(env, on_default.id) is None  # READY, untouched


def test_handoff_refuses_a_second_handoff_and_a_target_that_is_the_journal_itself(
    env: Env,
) -> None:
    tasks.add.enqueue(1, 1)
    same = handoff(env, "--to", "default", expect_code=1)
    assert same.stderr.strip() == "CommandError: --to: 'default' is the backend the tasks are in"

    lock = os.open(env.journal / "handoff.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        busy = handoff(env, "--to", "list", expect_code=1)
    finally:
        os.close(lock)
    assert busy.stderr.strip() == (
        f"CommandError: another procpool_handoff is running on the journal {env.journal}; "
        "wait for it to finish"
    )
    assert list_copies(env) == []


@pytest.mark.parametrize("target", ["rq"], indirect=True)
def test_a_result_the_target_no_longer_has_raises_an_error_naming_where_the_task_went(
    env: Env, target: Target
) -> None:
    added = tasks.add.enqueue(2, 3)
    handoff(env, "--to", "rq")
    [copy] = target.copies()
    # As RQ does result_ttl after a job finished.
    _redis(env.variables["PROCPOOL_TEST_REDIS_URL"]).delete(f"{RQ_JOB_PREFIX}{copy['id']}")

    assert read_results(env, added.id)[added.id] == {
        "error": "HandedOffResultDoesNotExist",
        "message": f"{added.id} was handed off to backend 'rq' as {copy['id']}, and that "
        "backend has no result of that id (any more: pruned there, or expired)",
        "does_not_exist": True,
    }


@pytest.mark.parametrize("target", ["db-sqlite"], indirect=True)
def test_a_backend_moved_to_another_alias_hands_off_and_reads_what_its_old_alias_enqueued(
    env: Env, target: Target
) -> None:
    added = tasks.add.enqueue(2, 3)
    kept = tasks.add.using(queue_name="low").enqueue(1, 1)  # the target has no queue 'low'
    # The journal, now under the alias "second"; "default" would name the new backend.
    env.variables["PROCPOOL_TEST_SECOND_OPTIONS"] = json.dumps(
        {"path": str(env.journal), "durable": True, "former_alias": "default"}
    )

    done = handoff(env, "--backend", "second", "--to", "db", expect_code=1)

    assert done.stdout.splitlines()[-1] == "1 task(s) handed off to 'db'; 1 refused"
    target.run_worker()
    found = json.loads(
        env.run_python(
            "import json, sys\n"
            "from procpool_tasks import compat\n"
            "second = compat.task_backends['second']\n"
            "results = [second.get_result(each) for each in sys.argv[1:]]\n"
            "print(json.dumps([[r.backend, str(r.status)] for r in results]))",
            added.id,
            kept.id,
        )
    )
    assert found == [["db", "SUCCESSFUL"], ["second", "READY"]]


@pytest.mark.parametrize("target", ["rq"], indirect=True)
def test_a_target_that_fails_to_enqueue_stops_the_handoff_and_the_next_one_finishes_the_move(
    env: Env, target: Target
) -> None:
    first = tasks.add.enqueue(1, 1)
    second = tasks.add.enqueue(1, 2)
    redis_url = env.variables["PROCPOOL_TEST_REDIS_URL"]
    env.variables["PROCPOOL_TEST_REDIS_URL"] = "redis://127.0.0.1:1/0"  # nothing listens

    failed = handoff(env, "--to", "rq", expect_code=1)

    error = failed.stderr.strip()
    assert error.startswith(f"CommandError: Cannot hand off {first.id} to backend 'rq': ")
    assert error.endswith(
        "It stays HANDING_OFF (no worker here runs it); run procpool_handoff again to finish "
        "its move, which first looks for it there"
    )
    assert [status_here(env, each.id) for each in (first, second)] == ["HANDING_OFF", "READY"]
    env.variables["PROCPOOL_TEST_REDIS_URL"] = redis_url

    done = handoff(env, "--to", "rq")

    assert done.stdout.splitlines()[-1] == "2 task(s) handed off to 'rq'; 0 refused"
    assert target.copies_by_args() == Counter({"[1, 1]": 1, "[1, 2]": 1})


# -- beside a running worker ---------------------------------------------------------------


@pytest.mark.parametrize("target", ["db-sqlite"], indirect=True)
def test_a_running_worker_never_runs_a_handed_off_task_and_a_running_task_finishes_here(
    env: Env, target: Target
) -> None:
    lines = env.tmp_path / "lines.txt"
    release, started = env.tmp_path / "release", env.tmp_path / "started"
    worker = env.start_worker("--processes", "1", "--queue-name", "*")
    blocking = tasks.block_until.enqueue(str(release), str(started))
    wait_for(started.exists, what="the blocking task to start")
    waiting = [tasks.append_line.enqueue(str(lines), f"line {n}") for n in range(20)]
    # The worker queued them all (it makes their result files ahead of their claim).
    wait_for(spare_of(env, waiting[-1].id).exists, what="the worker to queue the tasks")

    done = handoff(env, "--to", "db")

    assert done.stdout.splitlines()[-1] == "20 task(s) handed off to 'db'; 0 refused"
    release.touch()
    # Behind the 20 in the worker's queue: once it ran, the worker had its try at them.
    sentinel = tasks.append_line.enqueue(str(lines), "sentinel")
    wait_for(lambda: lines.exists() and "sentinel" in lines.read_text(), what="the sentinel")
    assert lines.read_text().splitlines() == ["sentinel"]
    # The worker hands out its next task (the sentinel) before the one that ended is
    # committed: that task's result may still be on its way to the disk.
    wait_for(
        lambda: str(tasks.block_until.get_result(blocking.id).status) == "SUCCESSFUL",
        what="the running task's result",
    )
    assert worker.stop() == 0
    assert {status_here(env, each.id) for each in waiting} == {"HANDED_OFF"}
    target.run_worker()
    assert Counter(lines.read_text().splitlines()) == Counter(
        ["sentinel", *(f"line {n}" for n in range(20))]
    )
    assert str(tasks.append_line.get_result(sentinel.id).status) == "SUCCESSFUL"


@pytest.mark.parametrize("target", ["db-sqlite"], indirect=True)
def test_tasks_racing_between_a_running_worker_and_a_handoff_each_run_exactly_once(
    env: Env, target: Target
) -> None:
    lines = env.tmp_path / "lines.txt"
    queued = [tasks.append_line.enqueue(str(lines), f"line {n}") for n in range(60)]
    worker = env.start_worker("--processes", "2", "--queue-name", "*")

    handoff(env, "--to", "db")

    wait_for(
        lambda: all(status_here(env, each.id) in ("SUCCESSFUL", "HANDED_OFF") for each in queued),
        what="every task to run here or be handed off",
    )
    assert worker.stop() == 0
    target.run_worker()
    assert Counter(lines.read_text().splitlines()) == Counter(f"line {n}" for n in range(60))


# -- killed half-way -----------------------------------------------------------------------


@pytest.mark.parametrize("target", ALL_TARGETS, indirect=True)
def test_a_handoff_killed_between_the_targets_enqueue_and_the_mark_leaves_one_copy(
    env: Env, target: Target
) -> None:
    added = tasks.add.enqueue(2, 3)

    crash_variables(env, "HANDED_OFF")  # after the target's enqueue, before the mark
    env.manage("procpool_handoff", "--to", target.alias, module="tests.crash_at", expect_code=-9)

    [copy] = target.copies()
    assert where_it_went(env, added.id) == ("HANDING_OFF", target.alias, None)
    assert str(tasks.add.get_result(added.id).status) == "READY"  # it has not run
    without_crash(env)
    assert status_counts(env)["HANDING_OFF"] == 1

    done = handoff(env, "--to", target.alias)

    assert done.stdout.splitlines() == [
        f"Marked {added.id} (tests.tasks.add, queue 'default') handed off: the handoff that "
        f"stopped had given it to '{target.alias}' as {copy['id']}",
        f"1 task(s) handed off to '{target.alias}'; 0 refused",
    ]
    assert [each["id"] for each in target.copies()] == [copy["id"]]
    assert where_it_went(env, added.id) == ("HANDED_OFF", target.alias, copy["id"])
    target.run_worker()
    assert read_results(env, added.id)[added.id]["return_value"] == 5


@pytest.mark.parametrize("target", ["rq", "db-sqlite"], indirect=True)
def test_a_handoff_killed_before_the_targets_enqueue_hands_the_task_off_once_when_run_again(
    env: Env, target: Target
) -> None:
    added = tasks.add.enqueue(2, 3)
    crash_variables(env, "HANDING_OFF", after=True)
    env.manage("procpool_handoff", "--to", target.alias, module="tests.crash_at", expect_code=-9)
    assert status_here(env, added.id) == "HANDING_OFF"
    assert target.copies() == []
    without_crash(env)

    done = handoff(env, "--to", target.alias)

    [copy] = target.copies()
    assert done.stdout.splitlines()[0] == (
        f"Handed off {added.id} (tests.tasks.add, queue 'default') again (the handoff that "
        f"stopped had not) to '{target.alias}' as {copy['id']}"
    )


def test_a_target_without_a_finder_gets_the_task_again_after_a_kill_past_its_enqueue(
    env: Env,
) -> None:
    added = tasks.add.enqueue(2, 3)
    crash_variables(env, "HANDED_OFF")
    env.manage("procpool_handoff", "--to", "list", module="tests.crash_at", expect_code=-9)
    without_crash(env)

    done = handoff(env, "--to", "list")

    # Documented: no way to ask that backend, so the one task may be there twice.
    assert [copy["args"] for copy in list_copies(env)] == [[2, 3], [2, 3]]
    assert (
        f"Task id={added.id} was being handed off to backend=list when that handoff stopped; "
        "that backend cannot be asked whether it got it, so it is handed off again (it may "
        "run twice there)"
    ) in done.stderr
    assert where_it_went(env, added.id) == ("HANDED_OFF", "list", list_copies(env)[1]["id"])


@pytest.mark.slow
@pytest.mark.parametrize("target", ["rq", "db-sqlite"], indirect=True)
def test_handoffs_killed_at_random_moments_move_every_task_exactly_once(
    env: Env, target: Target
) -> None:
    seed = random.randrange(1 << 32)  # noqa: S311 (kill points, not secrets)
    rng = random.Random(seed)  # noqa: S311
    count = 40
    queued = [tasks.add.enqueue(n, 0) for n in range(count)]
    kills = 0
    for round_number in range(12):
        if all(status_here(env, each.id) == "HANDED_OFF" for each in queued):
            break
        if round_number % 2 == 0:
            # At a chosen write: before HANDING_OFF, after it, or after the target's enqueue.
            status = rng.choice(["HANDING_OFF", "HANDED_OFF"])
            crash_variables(env, status, call=rng.randint(1, 8), after=rng.random() < 0.5)
            done = run(
                [sys.executable, "-m", "tests.crash_at", "procpool_handoff", "--to", target.alias],
                timeout=120,
                what=f"procpool_handoff killed at a chosen write (seed {seed})",
                env=env.variables,
                cwd=REPO_ROOT,
            )
            without_crash(env)
            assert done.returncode in (0, -9), f"seed {seed}: {done.stdout}{done.stderr}"
            kills += done.returncode == -9
        else:
            # From outside, at whatever step it is in once the target holds a few more.
            threshold = len(target.copies()) + rng.randint(1, 6)
            process = subprocess.Popen(
                [sys.executable, "-m", "django", "procpool_handoff", "--to", target.alias],
                env=env.variables,
                cwd=REPO_ROOT,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            try:
                wait_for(
                    lambda: process.poll() is not None or len(target.copies()) >= threshold,  # noqa: B023
                    timeout=120,
                    what=f"the handoff to move more tasks (seed {seed})",
                )
                if process.poll() is None:
                    process.kill()
                    kills += 1
            finally:
                if process.poll() is None:
                    process.kill()
                process.wait(30)

    handoff(env, "--to", target.alias)

    assert kills > 0, f"seed {seed}: no handoff was killed"
    assert target.copies_by_args() == Counter(json.dumps([n, 0]) for n in range(count)), seed
    copies = {copy["id"]: copy["args"] for copy in target.copies()}
    for each in queued:
        status, backend, target_id = where_it_went(env, each.id)
        assert (status, backend) == ("HANDED_OFF", target.alias), seed
        assert copies[str(target_id)] == each.args, seed
