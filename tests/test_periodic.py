"""Periodic tasks (``OPTIONS["schedule"]``): the system checks, one test per check id, with
the full message and hint.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from procpool_tasks.backend import ProcPoolBackend
from tests.conftest import Env

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
