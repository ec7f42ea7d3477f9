"""``procpool_status``: counts after a real run, its ``--json`` document against the schema
shipped with the package (``procpool_tasks/status.schema.json``), and its health checks' exit
codes.

Workers are real ``procpool_worker`` subprocesses; a task is held RUNNING with
``block_until`` and a task path is broken by removing its module (``tests.deploy``).
"""

from __future__ import annotations

import json
import re
import signal
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from django.utils import timezone

from procpool_tasks import journal
from procpool_tasks.operations.status import SCHEMA_PATH
from tests import tasks
from tests.conftest import Env, Worker, wait_for
from tests.deploy import Deploy
from tests.support import state_of, status_of

COUNTS = (
    "READY",
    "DEFERRED",
    "RUNNING",
    "SUCCESSFUL",
    "FAILED",
    "HANDING_OFF",
    "HANDED_OFF",
    "QUARANTINED",
)


def status_json(env: Env, *args: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(env.manage("procpool_status", "--json", *args).stdout)
    return document


def counts(**nonzero: int) -> dict[str, Any]:
    """A queue's counts as ``--json`` gives them, with its oldest READY age left out."""
    return {name: nonzero.get(name, 0) for name in COUNTS}


def without_age(queue: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in queue.items() if name != "oldest_ready_age_s"}


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def age_s(moment: datetime, generated_at: datetime) -> float:
    """An age as the document gives them: seconds, to the millisecond."""
    return round(max(0.0, (generated_at - moment).total_seconds()), 3)


def utc(moment: datetime | None) -> str:
    assert moment is not None
    return moment.astimezone(UTC).isoformat()


def heartbeat_files(env: Env) -> list[Path]:
    workers = env.journal / "workers"
    return sorted(workers.glob("*.json")) if workers.exists() else []


def start_live_worker(env: Env, *args: str) -> Worker:
    """A worker that has written its first heartbeat."""
    before = set(heartbeat_files(env))
    worker = env.start_worker(*args)
    wait_for(lambda: set(heartbeat_files(env)) - before, what="the worker's first heartbeat")
    return worker


@dataclass
class MixedRun:
    """A journal with a task of every status, a worker still running one of them."""

    worker: Worker
    successful: list[Any]
    failed: Any
    running: Any
    deferred: Any
    ready: list[Any]
    not_importable: str  # an id: its task path no longer imports
    release: Path


@pytest.fixture
def mixed_run(env: Env) -> Iterator[MixedRun]:
    yield from run_mixed(env)


def run_mixed(env: Env) -> Iterator[MixedRun]:
    """The mixed run, for as long as the generator is not closed (the status page's tests
    use it too)."""
    deploy = Deploy(env)
    deploy.deploy()
    not_importable = deploy.enqueue_greet("world")
    deploy.break_it()
    release, marker = env.tmp_path / "release", env.tmp_path / "started"
    run = MixedRun(
        worker=env.start_worker("--queue-name", "default", "--processes", "2", "--worker-id", "w1"),
        successful=[tasks.add.enqueue(1, 2), tasks.add.enqueue(3, 4)],
        failed=tasks.fail_with.enqueue("boom"),
        running=tasks.block_until.enqueue(str(release), str(marker)),
        deferred=tasks.add.using(run_after=timezone.now() + timedelta(hours=1)).enqueue(5, 6),
        # The worker serves only 'default': these wait.
        ready=[tasks.add.using(queue_name="low").enqueue(n, n) for n in (7, 8)],
        not_importable=not_importable,
        release=release,
    )
    wait_for(marker.exists, what="block_until to start")
    wait_for(
        lambda: all(status_of(result) == "SUCCESSFUL" for result in run.successful),
        what="the add tasks to succeed",
    )
    wait_for(lambda: status_of(run.failed) == "FAILED", what="fail_with to fail")
    wait_for(
        lambda: (state := state_of(env, not_importable)) is not None and state.is_finished,
        what="the task that does not import to fail",
    )
    yield run
    release.touch()
    wait_for(lambda: status_of(run.running) == "SUCCESSFUL", what="block_until to finish")
    assert run.worker.stop() == 0


def table_rows(output: str, heading: str) -> dict[str, list[str]]:
    """The rows of the table under the line that starts with ``heading``, by first cell."""
    lines = output.splitlines()
    start = next(index for index, line in enumerate(lines) if line.startswith(heading))
    rows = {}
    for line in lines[start + 2 :]:  # past the heading and the table's own head
        if not line.startswith("  "):
            break
        first, *rest = line.split()
        rows[first] = rest
    return rows


def assert_tables_show(output: str, env: Env, run: MixedRun) -> None:
    """The human-readable form of the mixed run: the same numbers as the JSON."""
    warning, blank, *lines = output.splitlines()
    assert [warning, blank] == [
        "WARNING: 2 READY task(s) wait in queue 'low', which no live supervisor serves; "
        "serve it with --queue-name default,low or --queue-name '*'",
        "",
    ]
    assert lines[0].startswith(f"Backend 'default', journal {env.journal}, at ")
    assert lines[2].split() == ["QUEUE", *COUNTS, "OLDEST", "READY"]
    queues = {line.split()[0]: line.split()[1:] for line in lines[3:7]}
    assert queues["default"] == ["0", "1", "1", "2", "2", "0", "0", "1", "-"]
    assert queues["high"] == ["0", "0", "0", "0", "0", "0", "0", "0", "-"]
    assert queues["low"][:8] == ["2", "0", "0", "0", "0", "0", "0", "0"]
    assert re.fullmatch(r"\d+\.\ds", queues["low"][8]), queues["low"]
    assert queues["(all)"][:8] == ["2", "1", "1", "2", "2", "0", "0", "1"]
    assert queues["(all)"][8] == queues["low"][8]

    assert "Supervisors: 1 live" in lines
    assert "Running: 1" in lines
    [(running_id, running)] = table_rows(output, "Running: ").items()
    assert running_id == run.running.id
    assert running[:4] == ["tests.tasks.block_until", "default", "w1", "1"]
    assert "Recent failures: 2" in lines
    assert "Quarantined: 1" in lines
    [(name, quarantined)] = table_rows(output, "Quarantined: ").items()
    assert name == run.not_importable
    assert quarantined[0] == "deployed_tasks.greet"
    assert quarantined[-1] == str(env.journal / "quarantine" / f"{name}.json")


def test_status_counts_every_status_per_queue_after_a_mixed_run(
    env: Env, mixed_run: MixedRun
) -> None:
    run = mixed_run

    document = status_json(env)

    generated_at = at(document["generated_at"])
    assert {name: without_age(queue) for name, queue in document["queues"].items()} == {
        "default": counts(DEFERRED=1, RUNNING=1, SUCCESSFUL=2, FAILED=2, QUARANTINED=1),
        "high": counts(),
        "low": counts(READY=2),
    }
    oldest_low = age_s(run.ready[0].enqueued_at, generated_at)
    assert [queue["oldest_ready_age_s"] for queue in document["queues"].values()] == [
        None,
        None,
        oldest_low,
    ]
    assert document["totals"] == {
        **counts(READY=2, DEFERRED=1, RUNNING=1, SUCCESSFUL=2, FAILED=2, QUARANTINED=1),
        "oldest_ready_age_s": oldest_low,
    }
    assert document["schema_version"] == 1
    assert document["backend"] == "default"
    assert document["journal"] == str(env.journal)
    assert generated_at.utcoffset() == timedelta(0)

    [beat_file] = heartbeat_files(env)
    instance = beat_file.stem
    running = run.running
    running.refresh()
    assert document["running"] == [
        {
            "id": running.id,
            "task_path": "tests.tasks.block_until",
            "queue_name": "default",
            "worker_id": "w1",
            "supervisor": instance,
            "supervisor_live": True,
            "attempt": 1,
            "started_at": utc(running.last_attempted_at),
            "running_for_s": age_s(running.last_attempted_at, generated_at),
        }
    ]
    [supervisor] = document["supervisors"]
    beat_at = at(supervisor["last_heartbeat_at"])
    assert supervisor == {
        "instance": instance,
        "worker_id": "w1",
        "pid": run.worker.process.pid,
        "host": socket.gethostname(),
        "processes": 2,
        "queues": ["default"],
        "started_at": supervisor["started_at"],
        "last_heartbeat_at": supervisor["last_heartbeat_at"],
        "heartbeat_age_s": age_s(beat_at, generated_at),
        "live": True,
    }
    assert at(supervisor["started_at"]) <= beat_at <= generated_at

    failed = run.failed
    greet_state = state_of(env, run.not_importable)
    assert greet_state is not None
    not_importable = {
        "id": run.not_importable,
        "task_path": "deployed_tasks.greet",
        "queue_name": "default",
        "finished_at": utc(greet_state.finished_at),
        "exception_class_path": "procpool_tasks.exceptions.TaskNotLoadable",
        "error": "procpool_tasks.exceptions.TaskNotLoadable: 'deployed_tasks.greet' cannot be "
        "imported: No module named 'deployed_tasks'",
        "attempts": 1,
    }
    raised = {
        "id": failed.id,
        "task_path": "tests.tasks.fail_with",
        "queue_name": "default",
        "finished_at": utc(failed.finished_at),
        "exception_class_path": "builtins.ValueError",
        "error": "ValueError: boom",
        "attempts": 1,
    }
    newest_first = sorted(
        [not_importable, raised], key=lambda failure: failure["finished_at"], reverse=True
    )
    assert document["recent_failures"] == newest_first

    minutes = document["finished_per_minute"]
    assert len(minutes) == 60
    starts = [at(minute["minute"]) for minute in minutes]
    assert starts == [starts[0] + timedelta(minutes=n) for n in range(60)]
    assert starts[-1] <= generated_at < starts[-1] + timedelta(minutes=1)
    assert sum(minute["SUCCESSFUL"] for minute in minutes) == 2
    assert sum(minute["FAILED"] for minute in minutes) == 2

    segment, offset = journal.parse_id(run.not_importable)
    assert document["quarantined"] == [
        {
            "name": run.not_importable,
            "file": str(env.journal / "quarantine" / f"{run.not_importable}.json"),
            "reason": not_importable["error"],
            "segment": segment,
            "offset": offset,
            "task_path": "deployed_tasks.greet",
            "queue_name": "default",
        }
    ]

    assert_tables_show(env.manage("procpool_status").stdout, env, run)


# -- the documented schema -------------------------------------------------------------------


def schema_validator() -> jsonschema.protocols.Validator:
    schema = json.loads(SCHEMA_PATH.read_text())
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    # jsonschema checks date-time only with an optional package; this one is exact enough.
    formats = jsonschema.FormatChecker(formats=())

    @formats.checks("date-time", raises=ValueError)
    def is_utc_date_time(value: object) -> bool:
        return not isinstance(value, str) or at(value).utcoffset() == timedelta(0)

    validator: jsonschema.protocols.Validator = validator_class(schema, format_checker=formats)
    return validator


def schema_errors(document: dict[str, Any]) -> list[str]:
    return sorted(
        f"{'/'.join(map(str, error.absolute_path))}: {error.message}"
        for error in schema_validator().iter_errors(document)
    )


def test_status_json_of_a_mixed_run_matches_the_documented_schema(
    env: Env, mixed_run: MixedRun
) -> None:
    document = status_json(env)

    lists = ("running", "supervisors", "recent_failures", "quarantined")
    assert [len(document[key]) for key in lists] == [1, 1, 2, 1]  # none left unchecked
    assert document["unserved_queues"] == [{"queue": "low", "ready": 2}]
    assert schema_errors(document) == []


def test_the_schema_rejects_a_document_that_strays_from_it(env: Env) -> None:
    tasks.add.enqueue(1, 2)
    document = status_json(env)
    document["queues"]["default"]["RUNNING"] = -1
    document["totals"]["STUCK"] = 0
    del document["queues"]["low"]["oldest_ready_age_s"]
    document["generated_at"] = "2026-01-01T00:00:00+02:00"
    document["surprise"] = True

    assert schema_errors(document) == [
        ": Additional properties are not allowed ('surprise' was unexpected)",
        "generated_at: '2026-01-01T00:00:00+02:00' is not a 'date-time'",
        "queues/default/RUNNING: -1 is less than the minimum of 0",
        "queues/low: 'oldest_ready_age_s' is a required property",
        "totals: Additional properties are not allowed ('STUCK' was unexpected)",
    ]


# -- health checks ---------------------------------------------------------------------------


def health(env: Env, *args: str, expect_code: int) -> list[str]:
    """Run a health check; the reasons it gives on stderr."""
    done = env.manage("procpool_status", *args, expect_code=expect_code)
    return done.stderr.splitlines()


def test_fail_if_no_worker_exits_1_without_a_live_worker_and_0_with_one(env: Env) -> None:
    tasks.add.enqueue(1, 2)
    assert health(env, "--fail-if-no-worker", "--json", expect_code=1) == [
        "UNHEALTHY: no live supervisor serves backend 'default'"
    ]

    worker = start_live_worker(env)
    assert health(env, "--fail-if-no-worker", expect_code=0) == []
    assert worker.stop() == 0

    # A worker that stopped takes its heartbeat with it.
    assert heartbeat_files(env) == []
    assert health(env, "--fail-if-no-worker", expect_code=1) == [
        "UNHEALTHY: no live supervisor serves backend 'default'"
    ]


def test_status_of_a_journal_that_does_not_exist_says_so_and_every_health_check_fails(
    env: Env,
) -> None:
    missing = (
        f"The journal directory {env.journal} does not exist: no task was ever enqueued "
        "with this path, or OPTIONS['path'] points elsewhere"
    )
    done = env.manage("procpool_status", "--json", "--fail-if-no-worker", expect_code=1)

    assert done.stderr.splitlines() == [
        f"UNHEALTHY: t{missing[1:]}",
        "UNHEALTHY: no live supervisor serves backend 'default'",
    ]
    document = json.loads(done.stdout)
    assert schema_errors(document) == []
    assert document["journal_problem"] == missing
    assert document["queues"] == {
        name: {**counts(), "oldest_ready_age_s": None} for name in ("default", "high", "low")
    }
    assert document["running"] == document["supervisors"] == document["recent_failures"] == []
    assert document["quarantined"] == []
    assert health(env, "--fail-if-older", "60", expect_code=1) == [f"UNHEALTHY: t{missing[1:]}"]
    assert env.manage("procpool_status").stdout.splitlines()[1:] == ["", missing]
    assert not env.journal.exists()  # a look makes nothing


def test_status_of_a_directory_that_holds_no_journal_says_so_and_fails_the_health_checks(
    env: Env,
) -> None:
    env.journal.mkdir(mode=0o700)  # a volume mounted where the workers' journal is not
    problem = (
        f"The journal directory {env.journal} holds no journal (no segments/): no task "
        "was ever enqueued with this path, or OPTIONS['path'] points elsewhere"
    )

    assert env.manage("procpool_status").stdout.splitlines()[1:] == ["", problem]
    assert status_json(env)["journal_problem"] == problem
    assert health(env, "--fail-if-older", "60", expect_code=1) == [f"UNHEALTHY: t{problem[1:]}"]


def test_status_of_a_journal_with_nothing_in_it_yet_is_healthy_by_fail_if_older(
    env: Env,
) -> None:
    tasks.add.using(run_after=timezone.now() + timedelta(hours=1)).enqueue(1, 2)

    assert status_json(env)["journal_problem"] is None
    assert health(env, "--fail-if-older", "60", expect_code=0) == []


def test_fail_if_no_worker_with_queues_needs_a_live_worker_serving_each(env: Env) -> None:
    start_live_worker(env, "--queue-name", "high")

    assert health(env, "--fail-if-no-worker", "high", expect_code=0) == []
    assert health(env, "--fail-if-no-worker", "default", expect_code=1) == [
        "UNHEALTHY: no live supervisor serves queue 'default'"
    ]
    assert health(env, "--fail-if-no-worker", "--queue-name", "high,low", expect_code=1) == [
        "UNHEALTHY: no live supervisor serves queue 'low'"
    ]
    assert health(env, "--fail-if-no-worker", "default,high,low", expect_code=1) == [
        "UNHEALTHY: no live supervisor serves queue 'default'",
        "UNHEALTHY: no live supervisor serves queue 'low'",
    ]

    start_live_worker(env, "--queue-name", "*")
    assert health(env, "--fail-if-no-worker", "default,high,low", expect_code=0) == []


def test_a_sigkilled_worker_stops_counting_as_live_once_its_process_is_gone(env: Env) -> None:
    release, marker = env.tmp_path / "release", env.tmp_path / "started"
    held = tasks.block_until.enqueue(str(release), str(marker))
    worker = start_live_worker(env, "--queue-name", "*")
    wait_for(marker.exists, what="block_until to start")
    assert health(env, "--fail-if-no-worker", expect_code=0) == []

    worker.send(signal.SIGKILL)
    worker.wait()

    # Its heartbeat is recent, but no process has its pid any more.
    [beat_file] = heartbeat_files(env)
    assert json.loads(beat_file.read_text())["pid"] == worker.process.pid
    done = env.manage("procpool_status", "--json", "--fail-if-no-worker", expect_code=1)
    assert done.stderr.splitlines() == ["UNHEALTHY: no live supervisor serves backend 'default'"]
    document = json.loads(done.stdout)
    assert schema_errors(document) == []
    [supervisor] = document["supervisors"]
    assert (supervisor["pid"], supervisor["queues"], supervisor["live"]) == (
        worker.process.pid,
        None,
        False,
    )
    assert supervisor["heartbeat_age_s"] < 30
    # Its task is RUNNING still, until the next worker recovers it.
    assert [(task["id"], task["supervisor_live"]) for task in document["running"]] == [
        (held.id, False)
    ]


def test_fail_if_older_exits_1_for_a_ready_task_that_waited_too_long(env: Env) -> None:
    # Due an hour ago: it has waited an hour, with no sleep in the test.
    due_at = timezone.now() - timedelta(hours=1)
    tasks.add.using(run_after=due_at).enqueue(1, 2)

    reasons = health(env, "--fail-if-older", "60", "--fail-if-no-worker", expect_code=1)

    assert reasons[0] == "UNHEALTHY: no live supervisor serves backend 'default'"
    match = re.fullmatch(
        r"UNHEALTHY: the oldest READY task of queue 'default' has waited (\d+\.\d)s "
        r"\(more than 60s\)",
        reasons[1],
    )
    assert match, reasons
    assert len(reasons) == 2
    assert 3600 <= float(match[1]) <= (timezone.now() - due_at).total_seconds()


def test_fail_if_older_exits_0_for_fresh_deferred_and_other_queues_tasks(env: Env) -> None:
    tasks.add.enqueue(1, 2)
    tasks.add.using(run_after=timezone.now() + timedelta(hours=1)).enqueue(3, 4)
    tasks.add.using(queue_name="low", run_after=timezone.now() - timedelta(hours=1)).enqueue(5, 6)

    assert health(env, "--fail-if-older", "3600", "--queue-name", "default", expect_code=0) == []
    [reason] = health(env, "--fail-if-older", "3600", expect_code=1)
    assert reason.startswith("UNHEALTHY: the oldest READY task of queue 'low' has waited 36")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ("--fail-if-older", "60", "--queue-name", "defualt"),
            "CommandError: --queue-name: defualt not in the QUEUES of backend 'default' "
            "(default, high, low)",
        ),
        (
            ("--fail-if-no-worker", "high,hihg,*"),
            "CommandError: --fail-if-no-worker: *, hihg not in the QUEUES of backend "
            "'default' (default, high, low)",
        ),
    ],
    ids=["fail-if-older", "fail-if-no-worker"],
)
def test_a_health_check_on_a_queue_the_backend_does_not_have_is_refused_not_passed(
    env: Env, args: tuple[str, ...], message: str
) -> None:
    tasks.add.using(run_after=timezone.now() - timedelta(hours=1)).enqueue(1, 2)

    done = env.manage("procpool_status", *args, expect_code=1)

    assert done.stderr.splitlines() == [message]
    assert done.stdout == ""


def test_status_help_names_every_status_it_counts_and_the_schema_of_json(env: Env) -> None:
    help_text = " ".join(env.manage("procpool_status", "--help").stdout.split())

    assert [name for name in COUNTS if name not in help_text] == []
    # argparse breaks a path longer than a line anywhere: compare without the white space.
    assert f"itsJSONSchemais{SCHEMA_PATH}" in "".join(help_text.split())
    assert SCHEMA_PATH.parent == Path(journal.__file__).parent.parent  # in the package
