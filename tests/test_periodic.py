"""Periodic tasks (``OPTIONS["schedule"]``) fired by real supervisors: once per tick across
supervisors sharing a journal, once after a supervisor is killed while firing, catch-up
after downtime, the time zone of cron schedules, ``procpool_status`` and the system checks.

Schedules fire ``every`` 1 second, so that a test sees several ticks in a few seconds.
Which ticks fired is read from the journal: each fired record carries its marker,
``<name>@<tick>``. Supervisors are killed at a chosen point of a fire by
``tests.crash_at``. The arithmetic of fire times (cron, DST) is tested in
``test_schedule.py``; ``ticks_to_fire`` is tested here without a worker.
"""

from __future__ import annotations

import json
import os
import re
import signal
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import jsonschema
import pytest

from procpool_tasks import journal
from procpool_tasks.backend import ProcPoolBackend
from procpool_tasks.operations.status import SCHEMA_PATH
from procpool_tasks.periodic.cron import CronExpression, Every
from procpool_tasks.periodic.scheduler import Scheduler, ticks_to_fire
from tests import tasks
from tests.conftest import Env, Worker, wait_for
from tests.crash_at import CRASH_AT_CALL_VARIABLE, CRASH_AT_VARIABLE
from tests.test_status import table_rows

NAME = "tick"
EVERY_SECOND = {"task": "tests.tasks.add", "every": 1, "args": [1, 2]}
SECOND = timedelta(seconds=1)
#: The worker's line for a tick it fired, without its time and level.
FIRED = re.compile(
    r"Fired periodic task id=(?P<id>\S+) path=(?P<path>\S+) queue=(?P<queue>\S+) "
    r"marker=(?P<marker>\S+)(?P<catching_up> \(catching up on the ticks missed since \S+\))?"
)


def set_schedules(env: Env, time_zone: str | None = None, **schedules: Any) -> None:
    """Give every process this test starts these schedules (and this TIME_ZONE)."""
    env.variables["PROCPOOL_TEST_OPTIONS"] = json.dumps({"schedule": schedules})
    if time_zone is not None:
        env.variables["PROCPOOL_TEST_TIME_ZONE"] = time_zone


def tick_of(marker: str) -> datetime:
    return datetime.fromisoformat(marker.partition("@")[2].removesuffix("Z")).replace(tzinfo=UTC)


def iso(moment: datetime) -> str:
    """A tick as markers and log lines write it."""
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat() + "Z"


def fired(env: Env, name: str = NAME) -> dict[datetime, list[str]]:
    """The ids of the task records in the journal, per tick of the schedule ``name``."""
    records: dict[datetime, list[str]] = defaultdict(list)
    reader = journal.Journal(env.journal)
    if not reader.segments_dir.exists():
        return records
    tail = journal.SegmentTail(reader)
    for segment in reader.all_segment_names():
        for item in tail.read_segment(segment):
            if isinstance(item, journal.Record) and item.schedule is not None:
                if item.schedule.startswith(f"{name}@"):
                    records[tick_of(item.schedule)].append(item.id)
    return records


def fired_after(env: Env, moment: datetime) -> list[datetime]:
    return sorted(tick for tick in fired(env) if tick > moment)


def fire_lines(output: str) -> list[re.Match[str]]:
    return [match for line in output.splitlines() if (match := FIRED.search(line))]


def twice_or_never(env: Env) -> dict[datetime, int]:
    """Ticks whose records are not exactly one: empty when every tick fired once."""
    return {tick: len(ids) for tick, ids in fired(env).items() if len(ids) != 1}


def start_live_workers(env: Env, *worker_ids: str) -> list[Worker]:
    """Workers, started together, that have written their first heartbeat (and so watch
    their schedules)."""
    beats = env.journal / "workers"
    before = set(beats.glob("*.json")) if beats.exists() else set()
    workers = [
        env.start_worker("--processes", "1", *(("--worker-id", name) if name else ()))
        for name in worker_ids
    ]
    wait_for(
        lambda: beats.exists() and len(set(beats.glob("*.json")) - before) == len(workers),
        what="the workers' first heartbeats",
    )
    return workers


def start_live_worker(env: Env) -> Worker:
    [worker] = start_live_workers(env, "")
    return worker


def start_killed_at(env: Env, point: str, call: int) -> Worker:
    """A worker that SIGKILLs itself at ``point`` of its ``call``-th time there."""
    env.variables[CRASH_AT_VARIABLE] = point
    env.variables[CRASH_AT_CALL_VARIABLE] = str(call)
    try:
        return env.start_worker("--processes", "1", module="tests.crash_at")
    finally:
        del env.variables[CRASH_AT_VARIABLE], env.variables[CRASH_AT_CALL_VARIABLE]


def have_run(*task_ids: str) -> bool:
    """Whether the tasks fired as these ids all ran, and returned what ``add(1, 2)`` does."""
    results = [tasks.add.get_result(task_id) for task_id in task_ids]
    return all(str(r.status) == "SUCCESSFUL" and r.return_value == 3 for r in results)


def now() -> datetime:
    return datetime.now(UTC)


# --- once per tick --------------------------------------------------------------------------


def test_two_supervisors_on_one_journal_fire_each_tick_once_and_skip_none(env: Env) -> None:
    set_schedules(env, tick=EVERY_SECOND)
    first, second = start_live_workers(env, "first", "second")
    both_watch = now()

    wait_for(lambda: len(fired_after(env, both_watch)) >= 5, what="5 ticks with both running")
    ran = [task_id for ids in fired(env).values() for task_id in ids]
    wait_for(lambda: have_run(*ran), what="the fired tasks to run")
    assert first.stop() == 0
    assert second.stop() == 0

    assert twice_or_never(env) == {}
    ticks = sorted(fired(env))
    assert ticks == [ticks[0] + n * SECOND for n in range(len(ticks))]
    lines = fire_lines(first.output) + fire_lines(second.output)
    assert sorted(tick_of(line["marker"]) for line in lines) == ticks
    assert {(line["path"], line["queue"], line["catching_up"]) for line in lines} == {
        ("tests.tasks.add", "default", None)
    }


# --- killed while firing -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("point", "written"),
    [
        pytest.param("after:write_firing", False, id="before-the-record"),
        pytest.param("after:append", True, id="after-the-record"),
        pytest.param("after:write_fired", True, id="after-recording-it"),
    ],
)
def test_a_supervisor_killed_while_firing_leaves_each_tick_fired_once(
    env: Env, point: str, written: bool
) -> None:
    set_schedules(env, tick=EVERY_SECOND)
    # Killed in its second fire, so that the schedule has fired once before.
    killed = start_killed_at(env, point, call=2)
    assert killed.wait() == -signal.SIGKILL
    firing = journal.Journal(env.journal).read_firing(NAME)
    assert firing is not None
    assert firing.task_id is not None
    first_tick = firing.tick - SECOND
    assert {tick: len(ids) for tick, ids in fired(env).items()} == (
        {first_tick: 1, firing.tick: 1} if written else {first_tick: 1}
    )

    survivor = start_live_worker(env)
    wait_for(lambda: len(fired_after(env, firing.tick)) >= 2, what="2 ticks after the kill")
    ran = [firing.task_id] if written else fired(env)[first_tick]
    wait_for(lambda: have_run(*ran), what="the task of the tick killed or before it to run")
    assert survivor.stop() == 0

    assert twice_or_never(env) == {}
    assert journal.Journal(env.journal).read_firing(NAME) is None
    messages = [line for line in survivor.output.splitlines() if "Schedule tick:" in line]
    if point == "after:write_firing":
        assert firing.tick not in fired(env) or fired(env)[firing.tick] != [firing.task_id]
        assert [m.split(" WARNING ", 1)[1] for m in messages] == [
            f"Schedule tick: a supervisor stopped while firing tick {iso(firing.tick)}, "
            "before its task was written; the tick was not fired"
        ]
        caught_up = [line for line in fire_lines(survivor.output) if line["catching_up"]]
        assert [line["catching_up"] for line in caught_up] == [
            f" (catching up on the ticks missed since {iso(first_tick)})"
        ]
    elif point == "after:append":
        assert fired(env)[firing.tick] == [firing.task_id]
        assert [m.split(" WARNING ", 1)[1] for m in messages] == [
            f"Schedule tick: tick {iso(firing.tick)} was enqueued as task id={firing.task_id}, "
            "but its supervisor stopped (or failed to write) before recording it; recorded "
            "now, not fired again"
        ]
    else:
        assert fired(env)[firing.tick] == [firing.task_id]
        assert messages == []


def make_quiet(segment: Path) -> None:
    """Make a segment look untouched for longer than QUIET_S, as if a minute had passed."""
    past = now().timestamp() - journal.QUIET_S - 60
    os.utime(segment, (past, past))


def test_prune_keeps_the_segment_of_a_fire_cut_short_until_a_supervisor_resolved_it(
    env: Env,
) -> None:
    set_schedules(env, tick=EVERY_SECOND)
    killed = start_killed_at(env, "after:append", call=1)
    assert killed.wait() == -signal.SIGKILL
    firing = journal.Journal(env.journal).read_firing(NAME)
    assert firing is not None
    assert firing.task_id is not None
    segment = env.journal / "segments" / f"{firing.task_id.partition('-')[0]}.log"
    env.run_batch("--processes", "1")  # runs the fired task; a batch fires nothing
    make_quiet(segment)

    kept = env.manage("procpool_prune", "--older-than", "0.01s")

    assert kept.stdout.startswith("Deleted 0 task(s)")
    assert segment.exists()
    survivor = start_live_worker(env)
    wait_for(lambda: not (env.journal / "schedules" / f"{NAME}.firing").exists(), what="resolve")
    assert survivor.stop() == 0
    make_quiet(segment)
    env.manage("procpool_prune", "--older-than", "0.01s")
    assert not segment.exists()
    assert journal.Journal(env.journal).read_fired(NAME) is not None
    assert firing.tick not in fired(env)  # pruned with its segment, and not fired again


def test_a_damaged_schedule_state_is_replaced_and_counts_its_ticks_up_to_now_as_fired(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    backend = ProcPoolBackend(
        alias="default",
        params={"OPTIONS": {"path": str(env.journal), "schedule": {NAME: EVERY_SECOND}}},
    )
    backend.journal.ensure()
    (env.journal / "schedules" / f"{NAME}.json").write_text('{"tick": "yesterday"')
    scheduler = Scheduler(backend, backend.journal)

    before = now()
    assert scheduler.fire_due() == 0

    replaced = backend.journal.read_fired(NAME)
    assert replaced is not None
    assert (replaced.task_id, before <= replaced.tick <= now()) == (None, True)
    [record] = [r for r in caplog.records if r.name == "procpool_tasks.periodic.scheduler"]
    assert record.getMessage().startswith(
        f"Schedule tick: its state in {env.journal / 'schedules'} is damaged (not a "
        "schedule's fire: "
    )
    assert record.getMessage().endswith("); counting its ticks up to now as fired")
    wait_for(scheduler.fire_due, what="the next tick to fire")
    assert list(fired(env)) == [fired_tick := max(fired(env))]
    assert fired_tick > replaced.tick
    backend.journal.close()


# --- downtime -------------------------------------------------------------------------------


def stopped_after_a_fire(env: Env) -> datetime:
    """Run a supervisor until it fired, stop it, and wait for 2 more ticks to pass."""
    worker = start_live_worker(env)
    wait_for(lambda: fired(env), what="a first fire")
    assert worker.stop() == 0
    last = max(fired(env))
    # The downtime must span ticks: wait for the clock, not for anything the code does.
    wait_for(lambda: now() > last + 2.2 * SECOND, what="2 ticks of downtime")
    return last


def test_a_supervisor_started_after_downtime_fires_the_latest_missed_tick_once(env: Env) -> None:
    set_schedules(env, tick=EVERY_SECOND)
    last = stopped_after_a_fire(env)

    restarted = start_live_worker(env)
    wait_for(lambda: len(fire_lines(restarted.output)) >= 2, what="a catch-up and a tick")
    assert restarted.stop() == 0

    lines = fire_lines(restarted.output)
    caught_up = tick_of(lines[0]["marker"])
    assert lines[0]["catching_up"] == f" (catching up on the ticks missed since {iso(last)})"
    assert [line["catching_up"] for line in lines[1:]] == [None] * (len(lines) - 1)
    assert caught_up >= last + 2 * SECOND
    assert fired_after(env, last)[:2] == [caught_up, caught_up + SECOND]
    assert twice_or_never(env) == {}


def test_with_catch_up_false_a_supervisor_skips_the_ticks_missed_while_down(env: Env) -> None:
    set_schedules(env, tick={**EVERY_SECOND, "catch_up": False})
    last = stopped_after_a_fire(env)

    restarted = start_live_worker(env)
    wait_for(lambda: len(fire_lines(restarted.output)) >= 2, what="2 ticks after the restart")
    assert restarted.stop() == 0

    skipped = re.search(
        rf"INFO Schedule tick: skipped the ticks missed since {re.escape(iso(last))}, up to "
        r"(\S+) \(catch_up is False\)",
        restarted.output,
    )
    assert skipped is not None, restarted.output
    latest_skipped = tick_of(f"@{skipped[1]}")
    assert latest_skipped >= last + 2 * SECOND
    lines = fire_lines(restarted.output)
    assert [line["catching_up"] for line in lines] == [None] * len(lines)
    assert fired_after(env, last)[0] == latest_skipped + SECOND
    assert twice_or_never(env) == {}


# --- cron in TIME_ZONE -----------------------------------------------------------------------


def latest_local_3am(zone: ZoneInfo, moment: datetime) -> datetime:
    """The last 03:00 on the clocks of ``zone`` at or before ``moment``, in UTC."""
    local = moment.astimezone(zone)
    today = local.replace(hour=3, minute=0, second=0, microsecond=0)
    day = today if today <= local else (today - timedelta(days=1)).replace(hour=3)
    return day.astimezone(UTC)


@pytest.mark.parametrize("use_tz", [True, False], ids=["USE_TZ", "no-USE_TZ"])
def test_cron_schedules_follow_time_zone_and_catch_up_once_on_days_missed(
    env: Env, use_tz: bool
) -> None:
    zone = ZoneInfo("America/New_York")
    set_schedules(
        env,
        "America/New_York",
        nightly={"task": "tests.tasks.add", "cron": "0 3 * * *", "args": [2, 2]},
    )
    env.variables["PROCPOOL_TEST_USE_TZ"] = "1" if use_tz else "0"
    seeded = journal.Journal(env.journal)
    seeded.ensure()
    three_days_ago = latest_local_3am(zone, now()) - timedelta(days=3)
    seeded.write_fired(
        "nightly",
        journal.Fire(tick=three_days_ago, task_id="0123456789abcdef-0", fired_at=three_days_ago),
    )

    started = now()
    worker = start_live_worker(env)
    wait_for(lambda: "state=SUCCESSFUL" in worker.output, what="the missed 03:00 to run")
    assert worker.stop() == 0

    expected = latest_local_3am(zone, started)
    assert {tick: len(ids) for tick, ids in fired(env, "nightly").items()} == {expected: 1}
    assert expected.astimezone(zone).hour == 3
    [line] = fire_lines(worker.output)
    assert line["marker"] == f"nightly@{iso(expected)}"
    assert line["catching_up"] == f" (catching up on the ticks missed since {iso(three_days_ago)})"
    [task_id] = fired(env, "nightly")[expected]
    assert f"Task id={task_id} path=tests.tasks.add queue=default state=SUCCESSFUL" in worker.output


# --- procpool_status -----------------------------------------------------------------------


def test_status_shows_each_schedule_with_its_last_and_next_tick(env: Env) -> None:
    set_schedules(
        env,
        "Europe/Berlin",
        tick=EVERY_SECOND,
        yearly={"task": "tests.tasks.echo", "cron": "0 0 1 1 *", "queue_name": "low"},
    )
    worker = start_live_worker(env)
    wait_for(lambda: fired(env), what="a first fire")
    assert worker.stop() == 0
    last_tick, [last_id] = max(fired(env).items())

    document = json.loads(env.manage("procpool_status", "--json").stdout)

    jsonschema.validate(document, json.loads(SCHEMA_PATH.read_text()))
    generated_at = datetime.fromisoformat(document["generated_at"])
    fired_at = datetime.fromisoformat(document["schedules"][0]["last_fired_at"])
    assert last_tick <= fired_at <= generated_at
    berlin = ZoneInfo("Europe/Berlin")
    new_year = datetime(generated_at.astimezone(berlin).year + 1, 1, 1, tzinfo=berlin)
    assert document["schedules"] == [
        {
            "name": "tick",
            "task_path": "tests.tasks.add",
            "cron": None,
            "every": 1.0,
            "queue_name": "default",
            "catch_up": True,
            "last_tick": last_tick.isoformat(),
            "last_task_id": last_id,
            "last_fired_at": fired_at.isoformat(),
            "next_tick": (generated_at.replace(microsecond=0) + SECOND).isoformat(),
        },
        {
            "name": "yearly",
            "task_path": "tests.tasks.echo",
            "cron": "0 0 1 1 *",
            "every": None,
            "queue_name": "low",
            "catch_up": True,
            "last_tick": None,
            "last_task_id": None,
            "last_fired_at": None,
            "next_tick": new_year.astimezone(UTC).isoformat(),
        },
    ]
    output = env.manage("procpool_status").stdout
    lines = output.splitlines()
    heads = lines[lines.index("Schedules: 2 (times in Europe/Berlin)") + 1]
    assert heads.split() == words(
        "NAME", "TASK", "QUEUE", "WHEN", "LAST TICK", "LAST TASK ID", "NEXT TICK"
    )
    rows = table_rows(output, "Schedules:")
    last_local = last_tick.astimezone(berlin)
    assert rows["tick"][:-3] == words(
        "tests.tasks.add", "default", "every 1s", f"{last_local:%Y-%m-%d %H:%M:%S %Z}", last_id
    )
    assert rows["yearly"] == words(
        "tests.tasks.echo", "low", "0 0 1 1 *", "-", "-", f"{new_year:%Y-%m-%d %H:%M:%S %Z}"
    )


def test_a_worker_lists_the_schedules_it_will_fire_after_its_start_line(env: Env) -> None:
    set_schedules(
        env,
        "Europe/Berlin",
        yearly={"task": "tests.tasks.echo", "cron": "0 0 1 1 *", "queue_name": "low"},
        aeon={"task": "tests.tasks.add", "every": 10**9, "args": [1, 2]},
    )
    worker = start_live_worker(env)
    assert worker.stop() == 0

    berlin = ZoneInfo("Europe/Berlin")
    started = datetime.now(berlin)
    new_year = datetime(started.year + 1, 1, 1, tzinfo=berlin)
    lines = [line.split(" ", 3)[3] for line in worker.output.splitlines() if " INFO " in line]
    start = next(n for n, line in enumerate(lines) if line.startswith("Starting worker "))
    assert lines[start + 1 : start + 3] == [
        "Will fire periodic task schedule=aeon path=tests.tasks.add queue=default "
        "when='every 1e+09s' next_tick=2033-05-18T05:33:20+02:00",
        "Will fire periodic task schedule=yearly path=tests.tasks.echo queue=low "
        f"when='0 0 1 1 *' next_tick={new_year.isoformat()}",
    ]


def words(*cells: str) -> list[str]:
    """Table cells as ``table_rows`` splits them: a cell with spaces is several words."""
    return " ".join(cells).split()


# --- which ticks fire, without a worker ----------------------------------------------------


START = datetime(2026, 5, 4, 12, 0, 0, tzinfo=UTC)


def to_fire(
    schedule: Any = None,
    *,
    last: datetime | None,
    at: datetime,
    since: datetime = START,
    catch_up: bool = True,
) -> tuple[datetime | None, list[datetime]]:
    return ticks_to_fire(
        schedule or Every(seconds=10),
        last_tick=last,
        now=at,
        watching_since=since,
        tz=UTC,
        catch_up=catch_up,
    )


def test_each_tick_since_the_last_fires_once_even_when_the_supervisor_woke_late() -> None:
    assert to_fire(last=START, at=START + 10 * SECOND) == (None, [START + 10 * SECOND])
    assert to_fire(last=START, at=START + 35 * SECOND) == (
        None,
        [START + 10 * SECOND, START + 20 * SECOND, START + 30 * SECOND],
    )
    assert to_fire(last=START + 30 * SECOND, at=START + 35 * SECOND) == (None, [])


def test_a_new_schedule_fires_from_its_first_tick_after_the_supervisor_started() -> None:
    since = START + 15 * SECOND
    assert to_fire(last=None, at=START + 25 * SECOND, since=since) == (None, [START + 20 * SECOND])
    assert to_fire(last=None, at=since, since=since) == (None, [])


def test_ticks_missed_while_no_supervisor_ran_fire_once_or_never() -> None:
    since = START + timedelta(hours=1, seconds=5)
    at = since + SECOND
    latest_missed = START + timedelta(hours=1)
    assert to_fire(last=START, at=at, since=since) == (latest_missed, [])
    assert to_fire(last=START, at=at, since=since, catch_up=False) == (None, [])
    # Past the grace of a minute, a tick counts as missed even for a running supervisor.
    late = START + timedelta(minutes=10)
    assert to_fire(last=START, at=late, since=START) == (
        late - timedelta(minutes=1),
        [late - timedelta(seconds=50) + n * 10 * SECOND for n in range(6)],
    )


def test_no_tick_fires_while_the_clock_is_behind_the_last_fired_one() -> None:
    assert to_fire(last=START + timedelta(hours=1), at=START + 30 * SECOND) == (None, [])


def test_cron_ticks_are_fired_in_the_given_time_zone() -> None:
    cron = CronExpression.parse("0 3 * * *")
    zone = ZoneInfo("America/New_York")
    at = datetime(2026, 3, 8, 12, tzinfo=UTC)  # the day New York springs forward
    missed, on_time = ticks_to_fire(
        cron,
        last_tick=at - timedelta(days=3),
        now=at,
        watching_since=at,
        tz=zone,
        catch_up=True,
    )
    assert (missed, on_time) == (datetime(2026, 3, 8, 7, tzinfo=UTC), [])


# --- system checks -------------------------------------------------------------------------

WHERE = "TASKS['default']['OPTIONS']['schedule']"
OPTIONS_HINT = "Fix the backend's OPTIONS in the TASKS setting."


def checked_options(
    env: Env, schedules: Any, queues: tuple[str, ...] = ("default", "high", "low")
) -> list[tuple[str | None, str, str | None]]:
    """The backend's own check messages for this schedule option, as (id, message, hint)."""
    backend = ProcPoolBackend(
        alias="default",
        params={
            "QUEUES": list(queues),
            "OPTIONS": {"path": str(env.journal), "schedule": schedules},
        },
    )
    return [(m.id, m.msg, m.hint) for m in backend.check() if (m.id or "").startswith("procpool")]


def checked(env: Env, **schedules: Any) -> list[tuple[str | None, str, str | None]]:
    return checked_options(env, schedules)


def test_valid_schedules_pass_every_check(env: Env) -> None:
    assert (
        checked(
            env,
            nightly={
                "task": "tests.tasks.add",
                "cron": "0 3 * * *",
                "args": [1, 2],
                "kwargs": {},
                "queue_name": "high",
                "priority": 100,
                "catch_up": False,
            },
            poll={"task": "tests.tasks.echo", "every": 300, "kwargs": {"a": [1, {"b": None}]}},
            **{"a.b_c-9": {"task": "tests.tasks.echo", "cron": "@hourly", "priority": -100}},
        )
        == []
    )


@pytest.mark.parametrize(
    ("schedules", "message"),
    [
        pytest.param(
            ["nightly"],
            f"{WHERE} must be a dict of schedule names to schedules such as "
            "{'nightly-report': {'task': 'myapp.tasks.report', 'cron': '0 3 * * *'}}, "
            "not ['nightly']",
            id="not-a-dict",
        ),
        pytest.param(
            {"nightly/report": {"task": "tests.tasks.add", "every": 1}},
            f"{WHERE} has the schedule name 'nightly/report'; a name is 1 to 64 letters, "
            "digits, '_', '.' and '-', starting with a letter, a digit or '_' (it names "
            "files in the journal)",
            id="name-with-a-slash",
        ),
        pytest.param(
            {"x" * 65: {"task": "tests.tasks.add", "every": 1}},
            f"{WHERE} has the schedule name {'x' * 65!r}; a name is 1 to 64 letters, "
            "digits, '_', '.' and '-', starting with a letter, a digit or '_' (it names "
            "files in the journal)",
            id="name-too-long",
        ),
        pytest.param(
            {"nightly": "tests.tasks.add"},
            f"{WHERE}['nightly'] must be a dict such as {{'task': 'myapp.tasks.report', "
            "'cron': '0 3 * * *'}, not 'tests.tasks.add'",
            id="entry-not-a-dict",
        ),
        pytest.param(
            {"nightly": {"task": "tests.tasks.add", "every": 1, "when": "3am"}},
            f"{WHERE}['nightly'] has unknown keys ['when']; the keys are 'task', 'cron', "
            "'every', 'args', 'kwargs', 'queue_name', 'priority' and 'catch_up'",
            id="unknown-key",
        ),
        pytest.param(
            {"nightly": {"every": 1}},
            f"{WHERE}['nightly'] has no 'task'; set it to the dotted path of a @task, such "
            "as 'myapp.tasks.report'",
            id="no-task",
        ),
        pytest.param(
            {"nightly": {"task": "add", "every": 1}},
            f"{WHERE}['nightly']['task'] must be the dotted path of a @task, such as "
            "'myapp.tasks.report', not 'add'",
            id="task-not-dotted",
        ),
        pytest.param(
            {"nightly": {"task": "tests.tasks.add", "cron": 3}},
            f"{WHERE}['nightly']['cron'] must be a cron expression such as '0 3 * * *', not 3",
            id="cron-not-text",
        ),
        pytest.param(
            {"nightly": {"task": "tests.tasks.add", "every": 0}},
            f"{WHERE}['nightly']['every'] must be a number of seconds > 0, such as 300 for "
            "every five minutes; not 0",
            id="every-zero",
        ),
        pytest.param(
            {"nightly": {"task": "tests.tasks.add", "every": "300"}},
            f"{WHERE}['nightly']['every'] must be a number of seconds > 0, such as 300 for "
            "every five minutes; not '300'",
            id="every-text",
        ),
        pytest.param(
            {"nightly": {"task": "tests.tasks.add", "every": 1, "args": "12"}},
            f"{WHERE}['nightly']['args'] must be a list of positional arguments, not '12'",
            id="args-text",
        ),
        pytest.param(
            {"nightly": {"task": "tests.tasks.add", "every": 1, "kwargs": [1]}},
            f"{WHERE}['nightly']['kwargs'] must be a dict of keyword arguments, not [1]",
            id="kwargs-list",
        ),
        pytest.param(
            {"nightly": {"task": "tests.tasks.add", "every": 1, "priority": 1.5}},
            f"{WHERE}['nightly']['priority'] must be a whole number, or None for the task's "
            "own; not 1.5",
            id="priority-float",
        ),
        pytest.param(
            {"nightly": {"task": "tests.tasks.add", "every": 1, "queue_name": 7}},
            f"{WHERE}['nightly']['queue_name'] must be a queue name, or None for the task's "
            "own; not 7",
            id="queue-not-text",
        ),
        pytest.param(
            {"nightly": {"task": "tests.tasks.add", "every": 1, "catch_up": "no"}},
            f"{WHERE}['nightly']['catch_up'] must be True or False, not 'no'",
            id="catch-up-not-bool",
        ),
    ],
)
def test_schedules_of_the_wrong_shape_are_check_error_e001_naming_the_key(
    env: Env, schedules: Any, message: str
) -> None:
    assert checked_options(env, schedules) == [("procpool_tasks.E001", message, OPTIONS_HINT)]


TASK_HINT = (
    "Use the dotted path of a function decorated with @task (its module_path), "
    "e.g. 'myapp.tasks.report'."
)


def test_a_schedule_whose_task_does_not_import_or_is_no_task_is_check_error_e010(
    env: Env,
) -> None:
    assert checked(
        env,
        missing={"task": "tests.tasks.no_such_task", "every": 60},
        plain={"task": "tests.tasks.not_a_task", "every": 60},
    ) == [
        (
            "procpool_tasks.E010",
            f"{WHERE}['missing']['task'] names 'tests.tasks.no_such_task', which cannot be "
            "imported",
            TASK_HINT,
        ),
        (
            "procpool_tasks.E010",
            f"{WHERE}['plain']['task'] names 'tests.tasks.not_a_task', which is not a task",
            TASK_HINT,
        ),
    ]


def test_a_schedule_with_a_bad_cron_field_is_check_error_e011(env: Env) -> None:
    assert checked(env, nightly={"task": "tests.tasks.add", "cron": "0 24 * * *"}) == [
        (
            "procpool_tasks.E011",
            f"{WHERE}['nightly']['cron'] is not a cron expression this backend reads: cron "
            "'0 24 * * *': hour field '24' is out of range 0-23",
            "Give five fields, minute hour day-of-month month day-of-week, such as "
            "'0 3 * * *' (03:00 every day) or '*/15 9-17 * * mon-fri', or a macro such as "
            "'@daily'.",
        )
    ]


def test_a_schedule_with_both_or_neither_of_cron_and_every_is_check_error_e012(
    env: Env,
) -> None:
    hint = (
        "Keep 'cron' for times of day (a cron expression such as '0 3 * * *') or 'every' "
        "for an interval (seconds, such as 300)."
    )
    assert checked(
        env,
        both={"task": "tests.tasks.add", "cron": "0 3 * * *", "every": 60},
        neither={"task": "tests.tasks.add"},
    ) == [
        (
            "procpool_tasks.E012",
            f"{WHERE}['both'] gives both 'cron' and 'every'; a schedule has one of them",
            hint,
        ),
        (
            "procpool_tasks.E012",
            f"{WHERE}['neither'] gives neither 'cron' nor 'every', so it would never fire",
            hint,
        ),
    ]


def test_a_schedule_with_arguments_json_cannot_carry_is_check_error_e013(env: Env) -> None:
    hint = (
        "Give plain JSON data (text, numbers, booleans, None, lists, dicts with text keys): "
        "an id rather than a model instance, an ISO 8601 string rather than a datetime."
    )
    assert checked(
        env,
        nightly={
            "task": "tests.tasks.echo",
            "every": 60,
            "args": [1, {2, 3}],
            "kwargs": {"when": datetime(2026, 1, 1, tzinfo=UTC)},
        },
    ) == [
        (
            "procpool_tasks.E013",
            f"{WHERE}['nightly']['args'][1] is a set, which JSON cannot carry",
            hint,
        ),
        (
            "procpool_tasks.E013",
            f"{WHERE}['nightly']['kwargs']['when'] is a datetime, which JSON cannot carry",
            hint,
        ),
    ]


def test_a_schedule_on_a_queue_not_in_queues_is_check_error_e014(env: Env) -> None:
    hint = "Set 'queue_name' to one of QUEUES, or add the queue to QUEUES."
    schedules = {
        "given": {"task": "tests.tasks.add", "every": 60, "queue_name": "emails"},
        "own": {"task": "tests.tasks.on_high_queue", "every": 60},
        "moved": {"task": "tests.tasks.on_high_queue", "every": 60, "queue_name": "low"},
    }
    assert checked_options(env, schedules, queues=("default", "low")) == [
        (
            "procpool_tasks.E014",
            f"{WHERE}['given']['queue_name'] is 'emails', which is not in the QUEUES of "
            "TASKS['default'] ('default', 'low')",
            hint,
        ),
        (
            "procpool_tasks.E014",
            f"{WHERE}['own']['task'] 'tests.tasks.on_high_queue' has the queue 'high', which "
            "is not in the QUEUES of TASKS['default'] ('default', 'low')",
            hint,
        ),
    ]


def test_a_schedule_with_a_priority_out_of_range_is_check_error_e015(env: Env) -> None:
    assert checked(env, nightly={"task": "tests.tasks.add", "every": 60, "priority": 101}) == [
        (
            "procpool_tasks.E015",
            f"{WHERE}['nightly']['priority'] is 101, outside the framework's range of -100 to 100",
            "Give a whole number from -100 to 100 (higher runs first), or None for the task's own.",
        )
    ]


def test_a_worker_with_a_schedule_check_error_refuses_to_start(env: Env) -> None:
    set_schedules(env, nightly={"task": "tests.tasks.add", "cron": "0 3 * * *", "every": 60})

    worker = env.start_worker("--processes", "1")

    assert worker.wait() == 1
    assert (
        f"(procpool_tasks.E012) {WHERE}['nightly'] gives both 'cron' and 'every'; a "
        "schedule has one of them" in worker.output
    )
    assert fired(env, "nightly") == {}
