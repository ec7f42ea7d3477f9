"""The backend's OPTIONS: their defaults, what each key takes, and the message for a wrong
value; retry policies and their backoff; what each task gets."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from procpool_tasks.options import (
    DEFAULT_JOURNAL_DIRNAME,
    BackendOptions,
    RetryPolicy,
    ScheduleOptions,
    TaskOptions,
    is_positive_seconds,
)

WHERE = "TASKS['default']['OPTIONS']"
KEYS = (
    "'path', 'durable', 'max_attempts', 'task_timeout', 'retention', 'sqlite_defaults', "
    "'retry', 'enqueue_on_commit', 'task_options', 'admin_actions', 'schedule' and "
    "'former_alias'"
)
RETRY_KEYS = "'attempts', 'backoff', 'delay', 'max_delay', 'jitter' and 'exceptions'"
SCHEDULE_KEYS = "'task', 'cron', 'every', 'args', 'kwargs', 'queue_name', 'priority' and 'catch_up'"
A_TASK = "tests.tasks.add"


def parse(**options: Any) -> BackendOptions:
    return BackendOptions.from_options("default", {"path": "journal", **options})


def refused(options: dict[str, Any]) -> str:
    with pytest.raises(ImproperlyConfigured) as caught:
        BackendOptions.from_options("default", options)
    return str(caught.value)


# Defaults


def test_only_a_path_given_every_other_option_takes_its_default() -> None:
    assert parse() == BackendOptions(
        path=Path("journal"),
        durable=True,
        max_attempts=3,
        task_timeout=None,
        retention={},
        sqlite_defaults=True,
        retry=None,
        enqueue_on_commit=False,
        task_options={},
        admin_actions=False,
        schedule={},
        former_alias=None,
    )


def test_without_a_path_the_journal_is_in_base_dir() -> None:
    with override_settings(BASE_DIR=Path("project")):
        options = BackendOptions.from_options("default", {})

    assert (
        options.path == Path("project") / DEFAULT_JOURNAL_DIRNAME == Path("project/.procpool_tasks")
    )


def test_without_a_path_or_base_dir_the_message_says_to_set_the_path() -> None:
    with override_settings(BASE_DIR=None):
        message = refused({})

    assert message == (
        f"{WHERE}['path'] is not set and there is no BASE_DIR setting; set {WHERE}['path'] "
        "to the journal directory"
    )


def test_a_path_may_be_a_path_object() -> None:
    assert BackendOptions.from_options("default", {"path": Path("elsewhere")}).path == Path(
        "elsewhere"
    )


def test_a_retry_policy_given_in_part_takes_the_defaults_for_the_rest() -> None:
    assert parse(retry={"attempts": 5}).retry == RetryPolicy(
        attempts=5, backoff=2.0, delay=1.0, max_delay=300.0, jitter=True, exceptions=()
    )


# Accepted values, as they are kept


@pytest.mark.parametrize(
    ("key", "value", "kept"),
    [
        ("durable", False, False),
        ("max_attempts", 1, 1),
        ("task_timeout", 5, 5.0),
        ("task_timeout", 0.5, 0.5),
        ("task_timeout", None, None),
        ("retention", 60, {"SUCCESSFUL": 60.0, "FAILED": 60.0, "HANDED_OFF": 60.0}),
        ("retention", {"FAILED": 30, "SUCCESSFUL": None}, {"FAILED": 30.0}),
        ("retention", None, {}),
        ("sqlite_defaults", False, False),
        ("enqueue_on_commit", True, True),
        ("admin_actions", True, True),
        ("former_alias", "old", "old"),
    ],
)
def test_a_valid_value_is_kept_as_given_or_in_its_canonical_form(
    key: str, value: Any, kept: Any
) -> None:
    assert getattr(parse(**{key: value}), key) == kept


def test_a_retry_policy_keeps_every_key_given() -> None:
    retry = {
        "attempts": 4,
        "backoff": 3,
        "delay": 0,
        "max_delay": 60,
        "jitter": False,
        "exceptions": ["myapp.errors.Transient", "builtins.OSError"],
    }

    assert parse(retry=retry).retry == RetryPolicy(
        attempts=4,
        backoff=3.0,
        delay=0.0,
        max_delay=60.0,
        jitter=False,
        exceptions=("myapp.errors.Transient", "builtins.OSError"),
    )


def test_a_schedule_keeps_its_fields_and_leaves_those_set_to_none_at_their_defaults() -> None:
    schedule = {
        "report": {
            "task": A_TASK,
            "cron": "0 3 * * *",
            "args": (1, 2),
            "kwargs": {"to": "ops"},
            "queue_name": "low",
            "priority": -5,
            "catch_up": False,
            "every": None,
        },
        "poll": {"task": A_TASK, "every": 30},
    }

    assert parse(schedule=schedule).schedule == {
        "report": ScheduleOptions(
            name="report",
            task_path=A_TASK,
            cron="0 3 * * *",
            args=[1, 2],
            kwargs={"to": "ops"},
            queue_name="low",
            priority=-5,
            catch_up=False,
        ),
        "poll": ScheduleOptions(name="poll", task_path=A_TASK, every=30.0),
    }


# What each task gets


def test_a_task_without_options_of_its_own_gets_the_backends() -> None:
    options = parse(retry={"attempts": 2}, task_timeout=10, enqueue_on_commit=True)

    assert options.for_task(A_TASK) == TaskOptions(
        retry=RetryPolicy(attempts=2), timeout=10.0, enqueue_on_commit=True
    )


def test_a_tasks_own_options_win_and_its_retry_policy_is_merged_over_the_backends() -> None:
    options = parse(
        retry={"attempts": 2, "delay": 5},
        task_timeout=10,
        task_options={A_TASK: {"retry": {"attempts": 7}, "timeout": 3, "enqueue_on_commit": True}},
    )

    assert options.for_task(A_TASK, timeout=20) == TaskOptions(
        retry=RetryPolicy(attempts=7, delay=5.0), timeout=3.0, enqueue_on_commit=True
    )


def test_retry_none_in_a_tasks_options_turns_retries_off_for_that_task_only() -> None:
    options = parse(retry={"attempts": 2}, task_options={A_TASK: {"retry": None}})

    assert options.for_task(A_TASK).retry is None
    assert options.for_task("tests.tasks.echo").retry == RetryPolicy(attempts=2)


def test_a_workers_task_timeout_stands_in_for_the_option() -> None:
    assert parse(task_timeout=10).for_task(A_TASK, timeout=20).timeout == 20
    assert parse(task_timeout=10).for_task(A_TASK).timeout == 10


# Wrong values: the message names the key, the value and what it takes


@pytest.mark.parametrize(
    ("options", "message"),
    [
        pytest.param(
            {"path": "journal", "max_attempt": 3, "0": 1},
            f"{WHERE} has unknown keys ['0', 'max_attempt']; the keys are {KEYS}",
            id="unknown-keys",
        ),
        pytest.param(
            {"path": 5}, f"{WHERE}['path'] must be a directory path, not 5", id="path-number"
        ),
        pytest.param(
            {"path": ""}, f"{WHERE}['path'] must be a directory path, not ''", id="path-empty"
        ),
        pytest.param(
            {"path": "journal", "durable": 1},
            f"{WHERE}['durable'] must be True or False, not 1",
            id="durable",
        ),
        pytest.param(
            {"path": "journal", "max_attempts": 0},
            f"{WHERE}['max_attempts'] must be a whole number >= 1, not 0",
            id="max-attempts-zero",
        ),
        pytest.param(
            {"path": "journal", "max_attempts": True},
            f"{WHERE}['max_attempts'] must be a whole number >= 1, not True",
            id="max-attempts-bool",
        ),
        pytest.param(
            {"path": "journal", "max_attempts": 2.0},
            f"{WHERE}['max_attempts'] must be a whole number >= 1, not 2.0",
            id="max-attempts-float",
        ),
        pytest.param(
            {"path": "journal", "task_timeout": 0},
            f"{WHERE}['task_timeout'] must be a number of seconds > 0, or None; not 0",
            id="task-timeout-zero",
        ),
        pytest.param(
            {"path": "journal", "task_timeout": math.inf},
            f"{WHERE}['task_timeout'] must be a number of seconds > 0, or None; not inf",
            id="task-timeout-infinite",
        ),
        pytest.param(
            {"path": "journal", "task_timeout": "30"},
            f"{WHERE}['task_timeout'] must be a number of seconds > 0, or None; not '30'",
            id="task-timeout-text",
        ),
        pytest.param(
            {"path": "journal", "retention": -1},
            f"{WHERE}['retention'] must be a number of seconds > 0, a dict such as "
            "{'SUCCESSFUL': 86400, 'FAILED': 2592000}, or None; not -1",
            id="retention-negative",
        ),
        pytest.param(
            {"path": "journal", "retention": {"SUCCESSFUL": 0}},
            f"{WHERE}['retention']['SUCCESSFUL'] must be a number of seconds > 0, or None; not 0",
            id="retention-status-zero",
        ),
        pytest.param(
            {"path": "journal", "retention": {"RUNNING": 60}},
            f"{WHERE}['retention'] has unknown keys ['RUNNING']; the keys are 'SUCCESSFUL', "
            "'FAILED' and 'HANDED_OFF'",
            id="retention-unknown-status",
        ),
        pytest.param(
            {"path": "journal", "sqlite_defaults": "yes"},
            f"{WHERE}['sqlite_defaults'] must be True or False, not 'yes'",
            id="sqlite-defaults",
        ),
        pytest.param(
            {"path": "journal", "enqueue_on_commit": None},
            f"{WHERE}['enqueue_on_commit'] must be True or False, not None",
            id="enqueue-on-commit",
        ),
        pytest.param(
            {"path": "journal", "admin_actions": 0},
            f"{WHERE}['admin_actions'] must be True or False, not 0",
            id="admin-actions",
        ),
        pytest.param(
            {"path": "journal", "former_alias": ""},
            f"{WHERE}['former_alias'] must be the alias (a string) of a backend in TASKS, not ''",
            id="former-alias",
        ),
    ],
)
def test_a_wrong_option_is_refused_with_a_message_naming_it(
    options: dict[str, Any], message: str
) -> None:
    assert refused(options) == message


@pytest.mark.parametrize(
    ("retry", "message"),
    [
        pytest.param(
            3,
            f"{WHERE}['retry'] must be a dict such as {{'attempts': 3}}, not 3",
            id="not-a-dict",
        ),
        pytest.param(
            {"retries": 3},
            f"{WHERE}['retry'] has unknown keys ['retries']; the keys are {RETRY_KEYS}",
            id="unknown-key",
        ),
        pytest.param(
            {"attempts": 0},
            f"{WHERE}['retry']['attempts'] must be a whole number >= 1, not 0",
            id="attempts",
        ),
        pytest.param(
            {"backoff": 0.5},
            f"{WHERE}['retry']['backoff'] must be a number >= 1 (1: the same wait each "
            "time), not 0.5",
            id="backoff",
        ),
        pytest.param(
            {"delay": -1},
            f"{WHERE}['retry']['delay'] must be a number of seconds >= 0, not -1",
            id="delay",
        ),
        pytest.param(
            {"max_delay": math.nan},
            f"{WHERE}['retry']['max_delay'] must be a number of seconds >= 0, not nan",
            id="max-delay",
        ),
        pytest.param(
            {"jitter": "no"},
            f"{WHERE}['retry']['jitter'] must be True or False, not 'no'",
            id="jitter",
        ),
        pytest.param(
            {"exceptions": "myapp.errors.Transient"},
            f"{WHERE}['retry']['exceptions'] must be a list of exception class paths, not "
            "'myapp.errors.Transient'",
            id="exceptions-text",
        ),
        pytest.param(
            {"exceptions": ["Transient"]},
            f"{WHERE}['retry']['exceptions'] must hold dotted paths such as "
            "'myapp.errors.Transient', not 'Transient'",
            id="exceptions-not-dotted",
        ),
    ],
)
def test_a_wrong_retry_policy_is_refused_with_a_message_naming_its_key(
    retry: Any, message: str
) -> None:
    assert refused({"path": "journal", "retry": retry}) == message


@pytest.mark.parametrize(
    ("task_options", "message"),
    [
        pytest.param(
            [A_TASK],
            f"{WHERE}['task_options'] must be a dict of task paths to their options, not "
            "['tests.tasks.add']",
            id="not-a-dict",
        ),
        pytest.param(
            {"add": {}},
            f"{WHERE}['task_options'] keys must be dotted task paths such as "
            "'myapp.tasks.send_mail', not 'add'",
            id="path-not-dotted",
        ),
        pytest.param(
            {A_TASK: 30},
            f"{WHERE}['task_options']['tests.tasks.add'] must be a dict such as "
            "{'timeout': 30}, not 30",
            id="options-not-a-dict",
        ),
        pytest.param(
            {A_TASK: {"retries": 3}},
            f"{WHERE}['task_options']['tests.tasks.add'] has unknown keys ['retries']; the "
            "keys are 'retry', 'max_attempts', 'backoff', 'timeout' and 'enqueue_on_commit'",
            id="unknown-key",
        ),
        pytest.param(
            {A_TASK: {"retry": {"attempts": -1}}},
            f"{WHERE}['task_options']['tests.tasks.add']['retry']['attempts'] must be a "
            "whole number >= 1, not -1",
            id="retry",
        ),
        pytest.param(
            {A_TASK: {"timeout": 0}},
            f"{WHERE}['task_options']['tests.tasks.add']['timeout'] must be a number of "
            "seconds > 0, or None; not 0",
            id="timeout",
        ),
        pytest.param(
            {A_TASK: {"enqueue_on_commit": 1}},
            f"{WHERE}['task_options']['tests.tasks.add']['enqueue_on_commit'] must be True "
            "or False, not 1",
            id="enqueue-on-commit",
        ),
    ],
)
def test_wrong_task_options_are_refused_with_a_message_naming_the_task_and_key(
    task_options: Any, message: str
) -> None:
    assert refused({"path": "journal", "task_options": task_options}) == message


REPORT = f"{WHERE}['schedule']['report']"


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        pytest.param(
            [],
            f"{WHERE}['schedule'] must be a dict of schedule names to schedules such as "
            "{'nightly-report': {'task': 'myapp.tasks.report', 'cron': '0 3 * * *'}}, not []",
            id="not-a-dict",
        ),
        pytest.param(
            {"report": "0 3 * * *"},
            f"{REPORT} must be a dict such as {{'task': 'myapp.tasks.report', 'cron': "
            "'0 3 * * *'}, not '0 3 * * *'",
            id="entry-not-a-dict",
        ),
        pytest.param(
            {"report": {"task": A_TASK, "crontab": "0 3 * * *"}},
            f"{REPORT} has unknown keys ['crontab']; the keys are {SCHEDULE_KEYS}",
            id="unknown-key",
        ),
        pytest.param(
            {"report": {"cron": "0 3 * * *"}},
            f"{REPORT} has no 'task'; set it to the dotted path of a @task, such as "
            "'myapp.tasks.report'",
            id="no-task",
        ),
        pytest.param(
            {"report": {"task": None, "cron": "0 3 * * *"}},
            f"{REPORT}['task'] must be the dotted path of a @task, such as "
            "'myapp.tasks.report', not None",
            id="task-none",
        ),
        pytest.param(
            {"report": {"task": "report", "cron": "0 3 * * *"}},
            f"{REPORT}['task'] must be the dotted path of a @task, such as "
            "'myapp.tasks.report', not 'report'",
            id="task-not-dotted",
        ),
        pytest.param(
            {"report": {"task": A_TASK, "cron": 3}},
            f"{REPORT}['cron'] must be a cron expression such as '0 3 * * *', not 3",
            id="cron-not-text",
        ),
        pytest.param(
            {"report": {"task": A_TASK, "every": 0}},
            f"{REPORT}['every'] must be a number of seconds > 0, such as 300 for every five "
            "minutes; not 0",
            id="every-zero",
        ),
        pytest.param(
            {"report": {"task": A_TASK, "every": True}},
            f"{REPORT}['every'] must be a number of seconds > 0, such as 300 for every five "
            "minutes; not True",
            id="every-bool",
        ),
        pytest.param(
            {"report": {"task": A_TASK, "every": 86400 * 999999999}},
            f"{REPORT}['every'] must be a number of seconds > 0, such as 300 for every five "
            "minutes; not 86399999913600",
            id="every-past-a-timedelta",
        ),
        pytest.param(
            {"report": {"task": A_TASK, "every": 60, "args": "x"}},
            f"{REPORT}['args'] must be a list of positional arguments, not 'x'",
            id="args",
        ),
        pytest.param(
            {"report": {"task": A_TASK, "every": 60, "kwargs": [("a", 1)]}},
            f"{REPORT}['kwargs'] must be a dict of keyword arguments, not [('a', 1)]",
            id="kwargs",
        ),
        pytest.param(
            {"report": {"task": A_TASK, "every": 60, "queue_name": ""}},
            f"{REPORT}['queue_name'] must be a queue name, or None for the task's own; not ''",
            id="queue-name",
        ),
        pytest.param(
            {"report": {"task": A_TASK, "every": 60, "priority": True}},
            f"{REPORT}['priority'] must be a whole number, or None for the task's own; not True",
            id="priority",
        ),
        pytest.param(
            {"report": {"task": A_TASK, "every": 60, "catch_up": "yes"}},
            f"{REPORT}['catch_up'] must be True or False, not 'yes'",
            id="catch-up",
        ),
    ],
)
def test_a_wrong_schedule_is_refused_with_a_message_naming_it_and_its_key(
    schedule: Any, message: str
) -> None:
    assert refused({"path": "journal", "schedule": schedule}) == message


@pytest.mark.parametrize("name", [".hidden", "-dash", "a/b", "tick@1", "", "x" * 65, 5])
def test_a_schedule_name_that_cannot_name_a_file_is_refused(name: Any) -> None:
    assert refused({"path": "journal", "schedule": {name: {"task": A_TASK, "every": 60}}}) == (
        f"{WHERE}['schedule'] has the schedule name {name!r}; a name is 1 to 64 letters, "
        "digits, '_', '.' and '-', starting with a letter, a digit or '_' (it names files "
        "in the journal)"
    )


@pytest.mark.parametrize("name", ["nightly-report", "_private", "v1.2", "x" * 64, "0"])
def test_a_schedule_name_of_letters_digits_and_punctuation_is_accepted(name: str) -> None:
    assert list(parse(schedule={name: {"task": A_TASK, "every": 60}}).schedule) == [name]


def test_the_alias_in_the_message_is_the_backends() -> None:
    with pytest.raises(ImproperlyConfigured) as caught:
        BackendOptions.from_options("second", {"path": "journal", "durable": "no"})

    assert (
        str(caught.value) == "TASKS['second']['OPTIONS']['durable'] must be True or False, not 'no'"
    )


# Backoff


def test_the_backoff_grows_by_its_factor_up_to_max_delay() -> None:
    policy = RetryPolicy(attempts=10, delay=0.5, backoff=3, max_delay=10, jitter=False)

    assert [policy.delay_after(attempt) for attempt in range(1, 6)] == [0.5, 1.5, 4.5, 10, 10]


def test_a_backoff_past_the_range_of_a_float_waits_max_delay_or_nothing_without_a_delay() -> None:
    huge = RetryPolicy(attempts=5, delay=1, backoff=1e200, max_delay=60, jitter=False)
    none = RetryPolicy(attempts=5, delay=0, backoff=1e200, max_delay=60, jitter=False)

    assert huge.delay_after(3) == 60
    assert none.delay_after(3) == 0


def test_jitter_takes_up_to_half_of_the_wait_off() -> None:
    policy = RetryPolicy(delay=8, backoff=1, jitter=True)

    waits = [policy.delay_after(1) for _ in range(200)]

    assert all(4 <= wait <= 8 for wait in waits)
    # Spread over the range, not one fixed share.
    assert min(waits) < 5
    assert max(waits) > 7


@pytest.mark.parametrize(
    ("value", "positive"),
    [
        (1, True),
        (0.001, True),
        (0, False),
        (-1, False),
        (True, False),
        (math.inf, False),
        (math.nan, False),
        ("1", False),
        (None, False),
    ],
)
def test_positive_seconds_are_finite_numbers_above_zero_and_not_bools(
    value: object, positive: bool
) -> None:
    assert is_positive_seconds(value) is positive
