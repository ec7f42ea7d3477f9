"""Per-task options in ``@task(...)`` (Django 6.1, the backport 0.11+): checked when the
function is decorated, kept by ``.using()``, carried in the record, and layered over
``task_options`` and ``OPTIONS`` in that order."""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any

import django
import pytest

from procpool_tasks import compat
from procpool_tasks.options import BackendOptions, RetryPolicy, TaskOptions
from procpool_tasks.task import ProcPoolTask

A_TASK = "tests.unit.test_task_options.plain"

#: Django 6.0's @task passes no extra keyword arguments to the backend's task_class.
decorator_takes_options = pytest.mark.skipif(
    django.VERSION[:2] == (6, 0), reason="Django 6.0's @task takes no per-task options"
)


def plain() -> None:
    """A function to make tasks of."""


def linear(attempt: int) -> float:
    """A backoff function: one second more each attempt."""
    return float(attempt)


def make(**options: Any) -> ProcPoolTask:
    # Django 6.0's Task has no defaults for these.
    framework: dict[str, Any] = {
        "priority": 0,
        "backend": "default",
        "queue_name": "default",
        "run_after": None,
    }
    return ProcPoolTask(func=plain, **framework, **options)


def refused(**options: Any) -> str:
    with pytest.raises(compat.InvalidTask) as caught:
        make(**options)
    return str(caught.value)


def parse(**options: Any) -> BackendOptions:
    return BackendOptions.from_options("default", {"path": "journal", **options})


@decorator_takes_options
def test_the_frameworks_decorator_makes_a_procpool_task_with_its_options() -> None:
    decorator: Any = importlib.import_module(compat.FRAMEWORK).task
    send = decorator(max_attempts=5, backoff=3, timeout=30)(plain)

    assert isinstance(send, ProcPoolTask)
    assert (send.max_attempts, send.backoff, send.timeout) == (5, 3, 30)
    assert send.record_options() == {"max_attempts": 5, "backoff": 3, "timeout": 30}


def test_using_keeps_the_options() -> None:
    used = make(max_attempts=2, timeout=5).using(priority=7, queue_name="default")

    assert isinstance(used, ProcPoolTask)
    assert (used.priority, used.max_attempts, used.timeout) == (7, 2, 5)


def test_a_task_without_options_puts_none_in_its_record() -> None:
    assert make().record_options() == {}


def test_a_backoff_function_travels_as_its_dotted_path() -> None:
    assert make(backoff=linear).record_options() == {
        "backoff": "tests.unit.test_task_options.linear"
    }


def test_retry_false_turns_retries_off_and_a_policy_travels_as_given() -> None:
    assert make(retry=False).record_options() == {"retry": None}
    assert make(retry={"attempts": 4, "delay": 2}).record_options() == {
        "retry": {"attempts": 4, "delay": 2}
    }


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"max_attempts": 0},
            f"@task(...) of {A_TASK}: max_attempts must be a whole number >= 1, not 0",
        ),
        (
            {"timeout": -1},
            f"@task(...) of {A_TASK}: timeout must be a number of seconds > 0, or None; not -1",
        ),
        (
            {"backoff": 0.5},
            f"@task(...) of {A_TASK}: backoff must be a number >= 1 (1: the same wait each "
            "time), not 0.5",
        ),
        (
            {"backoff": lambda attempt: 1.0},
            f"@task(backoff=...) of {A_TASK}: tests.unit.test_task_options.<lambda> cannot be "
            "imported by that path; give a number, or a function defined at the top level of "
            "a module",
        ),
        (
            {"retry": 3},
            f"@task(retry=...) of {A_TASK} must be a dict such as {{'attempts': 3}}, or False "
            "for no retries; not 3",
        ),
        (
            {"retry": {"attempts": 0}},
            f"@task(...) of {A_TASK}: retry['attempts'] must be a whole number >= 1, not 0",
        ),
        (
            {"max_attempts": 2, "retry": {"attempts": 3}},
            f"@task(...) of {A_TASK} gives both 'max_attempts' and retry['attempts']; give one "
            "of them (max_attempts bounds every attempt, whatever ended it)",
        ),
    ],
)
def test_a_wrong_option_fails_at_decoration_naming_the_argument(
    options: dict[str, Any], message: str
) -> None:
    assert refused(**options) == message


def test_the_decorator_wins_over_task_options_which_win_over_the_backends() -> None:
    options = parse(
        max_attempts=3,
        task_timeout=60,
        retry={"attempts": 2, "delay": 5},
        task_options={A_TASK: {"timeout": 10, "retry": {"delay": 7}}},
    )

    assert options.for_task(A_TASK) == TaskOptions(
        retry=RetryPolicy(attempts=2, delay=7.0), timeout=10.0, max_attempts=3
    )
    assert options.for_task(A_TASK, decorated={"timeout": 1, "max_attempts": 5}) == TaskOptions(
        retry=RetryPolicy(attempts=5, delay=7.0, timeouts=True), timeout=1.0, max_attempts=5
    )


def test_max_attempts_turns_retries_on_with_the_default_policy_timeouts_included() -> None:
    options = parse().for_task(A_TASK, decorated={"max_attempts": 4})

    assert options == TaskOptions(retry=RetryPolicy(attempts=4, timeouts=True), max_attempts=4)


def test_a_backoff_factor_or_function_sets_the_wait_between_attempts() -> None:
    factor = parse(retry={"delay": 1, "jitter": False}).for_task(A_TASK, decorated={"backoff": 3})
    function = parse().for_task(
        A_TASK, decorated={"backoff": "tests.unit.test_task_options.linear"}
    )

    assert factor.retry is not None
    assert [factor.retry.delay_after(n) for n in (1, 2, 3)] == [1.0, 3.0, 9.0]
    assert function.retry is not None
    assert [function.retry.delay_after(n) for n in (1, 2, 3)] == [1.0, 2.0, 3.0]


def test_task_options_take_the_decorators_names_too_for_django_6_0() -> None:
    options = parse(task_options={A_TASK: {"max_attempts": 6, "backoff": 1.5}})

    assert options.for_task(A_TASK) == TaskOptions(
        retry=RetryPolicy(attempts=6, backoff=1.5, timeouts=True), max_attempts=6
    )


def test_retry_none_in_the_record_turns_the_backends_retries_off() -> None:
    options = parse(retry={"attempts": 5}).for_task(A_TASK, decorated={"retry": None})

    assert options.retry is None


def test_a_task_is_still_a_frozen_dataclass_of_the_framework() -> None:
    made = make(timeout=3)

    assert isinstance(made, compat.Task)
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.timeout = 4  # type: ignore[misc]
