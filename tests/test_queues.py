"""Which queues a worker serves, and saying so when READY tasks wait in a queue that no
live supervisor serves: the supervisor's warning, ``procpool_status`` (text, ``--json``,
``--fail-if-no-worker``) and the status page's banner.

Workers are real ``procpool_worker`` subprocesses. A supervisor looks at the queues it does
not serve at each heartbeat (every 5 s); a test waits for its heartbeats, never a time.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone

from procpool_tasks import journal
from tests import tasks
from tests.conftest import Env, Worker, wait_for
from tests.support import status_of

# The page's users live in a test database of this process (``database``).
from tests.test_status_page import client_of, database, page_of  # noqa: F401

#: The supervisor's warning about the queue 'low', without its time.
WARNING_LOW = (
    "WARNING 2 READY task(s) wait in queue=low, which no live supervisor serves (this "
    "worker serves queues=default); serve it with --queue-name default,low or "
    "--queue-name '*'"
)


def beat_of(env: Env, worker: Worker) -> str | None:
    """When the worker's supervisor last wrote its heartbeat; None before the first."""
    workers = env.journal / "workers"
    for path in workers.glob("*.json") if workers.exists() else ():
        try:
            data: dict[str, Any] = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # being replaced
        if data.get("pid") == worker.process.pid:
            return str(data["beat_at"])
    return None


def wait_for_beats(env: Env, worker: Worker, count: int) -> None:
    """Wait until the worker wrote ``count`` heartbeats more; the supervisor looks at the
    queues it does not serve after each, so with 2 it has looked at least once since."""
    for n in range(count):
        before = beat_of(env, worker)

        def has_beaten(before: str | None = before) -> bool:
            return beat_of(env, worker) not in (None, before)

        wait_for(has_beaten, what=f"heartbeat {n + 1} of {count}")


def warnings_in(output: str) -> list[str]:
    """The worker's WARNING lines, without their time."""
    return [line.split(" ", 2)[2] for line in output.splitlines() if " WARNING " in line]


def test_a_task_on_a_second_queue_runs_on_a_worker_with_the_default_flags(env: Env) -> None:
    worker = env.start_worker("--processes", "1")

    on_low = tasks.add.using(queue_name="low").enqueue(1, 2)
    on_high = tasks.on_high_queue.enqueue(str(env.tmp_path / "high.txt"), "x")

    wait_for(
        lambda: [status_of(on_low), status_of(on_high)] == ["SUCCESSFUL", "SUCCESSFUL"],
        what="the tasks of 'low' and 'high' to run",
    )
    wait_for_beats(env, worker, 2)
    assert worker.stop() == 0
    assert warnings_in(worker.output) == [
        "WARNING Received SIGTERM - shutting down gracefully, waiting for 0 running task(s)"
        "... (send it again to stop them now)"
    ]


def test_a_supervisor_warns_once_about_a_queue_with_ready_tasks_that_nobody_serves(
    env: Env,
) -> None:
    waiting = [tasks.add.using(queue_name="low").enqueue(n, n) for n in (1, 2)]
    worker = env.start_worker("--processes", "1", "--queue-name", "default")

    wait_for(lambda: WARNING_LOW in warnings_in(worker.output), what="the warning")
    later = tasks.add.using(queue_name="low").enqueue(3, 3)
    on_default = tasks.add.enqueue(4, 4)
    wait_for(lambda: status_of(on_default) == "SUCCESSFUL", what="the default queue's task")
    wait_for_beats(env, worker, 2)

    assert warnings_in(worker.output) == [WARNING_LOW]
    assert [status_of(result) for result in [*waiting, later]] == ["READY"] * 3


def test_no_warning_while_another_live_supervisor_serves_the_queue(env: Env) -> None:
    serves_default = env.start_worker("--processes", "1", "--queue-name", "default")
    serves_low = env.start_worker("--processes", "1", "--queue-name", "low")
    on_low = [tasks.add.using(queue_name="low").enqueue(n, n) for n in (1, 2)]

    wait_for(
        lambda: all(status_of(result) == "SUCCESSFUL" for result in on_low),
        what="the tasks of 'low' to run",
    )
    wait_for_beats(env, serves_default, 2)

    assert warnings_in(serves_default.output) == []
    assert [serves_default.stop(), serves_low.stop()] == [0, 0]


def test_a_supervisor_does_not_count_the_tasks_another_one_ran_before_it_stopped(
    env: Env,
) -> None:
    """Tasks of 'low' that a worker ran are no READY tasks, though their records are
    still in a segment the next supervisor reads at start."""
    on_low = tasks.add.using(queue_name="low").enqueue(1, 2)
    env.run_batch("--queue-name", "low")
    assert status_of(on_low) == "SUCCESSFUL"
    waiting = tasks.add.using(queue_name="low").enqueue(3, 4)

    worker = env.start_worker("--processes", "1", "--queue-name", "default")

    one_waits = WARNING_LOW.replace("WARNING 2 READY", "WARNING 1 READY")
    wait_for(lambda: one_waits in warnings_in(worker.output), what="the warning")
    assert status_of(waiting) == "READY"
    assert journal.Journal(env.journal).read_state(on_low.id) is not None


# -- procpool_status and the status page ------------------------------------------------------

#: What procpool_status and the page say about the queue 'low', which the worker does not serve.
UNSERVED_LOW = (
    "2 READY task(s) wait in queue 'low', which no live supervisor serves; serve it with "
    "--queue-name default,low or --queue-name '*'"
)
NO_SUPERVISOR = (
    "No live supervisor serves backend 'default', and READY tasks wait (1 in 'default', "
    "2 in 'low'); start a worker: manage.py procpool_worker"
)


@pytest.fixture
def staff(request: pytest.FixtureRequest) -> Iterator[Client]:
    """A logged-in staff user's client for the status page."""
    request.getfixturevalue("database")
    user = User.objects.create_user("staff", is_staff=True)
    yield client_of(user)
    user.delete()


def start_live_worker(env: Env, *args: str) -> Worker:
    worker = env.start_worker("--processes", "1", *args)
    wait_for(lambda: beat_of(env, worker), what="the worker's first heartbeat")
    return worker


def test_status_warns_at_the_top_about_a_queue_with_ready_tasks_that_nobody_serves(
    env: Env, staff: Client
) -> None:
    for n in (1, 2):
        tasks.add.using(queue_name="low").enqueue(n, n)
    start_live_worker(env, "--queue-name", "default")

    text = env.manage("procpool_status").stdout.splitlines()
    document = json.loads(env.manage("procpool_status", "--json").stdout)
    unhealthy = env.manage("procpool_status", "-v", "0", "--fail-if-no-worker", expect_code=1)
    page = page_of(staff, "/tasks/")

    assert text[:3] == [f"WARNING: {UNSERVED_LOW}", "", text[2]]
    assert text[2].startswith("Backend 'default', journal ")
    assert (document["live_supervisors"], document["unserved_queues"]) == (
        1,
        [{"queue": "low", "ready": 2}],
    )
    assert (unhealthy.stdout, unhealthy.stderr.splitlines()) == (
        "",
        ["UNHEALTHY: no live supervisor serves queue 'low', where 2 READY task(s) wait"],
    )
    assert page.texts["warnings"] == UNSERVED_LOW
    # The forms that name queues keep their meaning.
    env.manage("procpool_status", "--fail-if-no-worker", "default", expect_code=0)
    env.manage("procpool_status", "--fail-if-no-worker", "--queue-name", "default")


def test_status_is_quiet_and_healthy_when_every_queue_with_ready_tasks_is_served(
    env: Env, staff: Client
) -> None:
    start_live_worker(env, "--queue-name", "default")
    tasks.add.using(queue_name="high", run_after=timezone.now() + timedelta(hours=1)).enqueue(1, 1)

    text = env.manage("procpool_status", "--fail-if-no-worker").stdout.splitlines()
    document = json.loads(env.manage("procpool_status", "--json").stdout)
    page = page_of(staff, "/tasks/")

    assert text[0].startswith("Backend 'default', journal ")  # a deferred task waits its time
    assert (document["live_supervisors"], document["unserved_queues"]) == (1, [])
    assert "warnings" not in page.texts


def test_status_and_the_page_warn_when_no_supervisor_is_live_while_tasks_are_ready(
    env: Env, staff: Client
) -> None:
    tasks.add.enqueue(1, 1)
    for n in (1, 2):
        tasks.add.using(queue_name="low").enqueue(n, n)

    text = env.manage("procpool_status").stdout.splitlines()
    document = json.loads(env.manage("procpool_status", "--json").stdout)
    page = page_of(staff, "/tasks/")

    assert text[:2] == [f"WARNING: {NO_SUPERVISOR}", ""]
    assert (document["live_supervisors"], document["unserved_queues"]) == (
        0,
        [{"queue": "default", "ready": 1}, {"queue": "low", "ready": 2}],
    )
    assert page.texts["warnings"] == NO_SUPERVISOR
    assert env.manage("procpool_status", "--fail-if-no-worker", expect_code=1).stderr == (
        "UNHEALTHY: no live supervisor serves backend 'default'\n"
    )
