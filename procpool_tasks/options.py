"""The backend's ``OPTIONS``, checked once, with what each task gets from them.

Everything is validated when the backend is made, so that a mistake is a system check
error (``procpool_tasks.E001``) that names the key and says what it takes, not a failure
in a worker later. What needs the project's code importable (the exception classes of a
retry policy, the task paths of ``task_options`` and ``schedule``) and what a schedule
means (its cron expression, its arguments, queue and priority) is checked by the system
checks (``backend``, ``periodic``).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import random
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

logger = logging.getLogger(__name__)

__all__ = [
    "DECORATOR_OPTIONS",
    "DEFAULT_JOURNAL_DIRNAME",
    "OPTION_MEANINGS",
    "RETRY_MEANINGS",
    "SCHEDULE_MEANINGS",
    "SCHEDULE_NAME_PATTERN",
    "TASK_OPTION_MEANINGS",
    "BackendOptions",
    "RetryPolicy",
    "ScheduleOptions",
    "TaskOptions",
    "is_positive_seconds",
    "parse_task_level",
]

DEFAULT_JOURNAL_DIRNAME = ".procpool_tasks"
#: The finished statuses a retention can be given for (HANDED_OFF: see ``handoff``).
RETAINED_STATUSES = ("SUCCESSFUL", "FAILED", "HANDED_OFF")
#: A schedule's name names its files in the journal (``schedules/<name>.json``) and its
#: ticks' markers (``<name>@<tick>``): no path separators, no hidden files, no ``@``.
SCHEDULE_NAME_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")


# -- what each key means ------------------------------------------------------------------
# The settings reference of the documentation is generated from these mappings and from the
# defaults of the dataclasses below (docs/_ext/reference.py): this is the one place where
# the meaning of a key is written. Markdown, one entry per key the parsers accept.

#: ``OPTIONS`` of a ``ProcPoolBackend``: key -> what it means.
OPTION_MEANINGS: dict[str, str] = {
    "path": (
        "The journal directory. Created 0700 on first use, with a `.gitignore` of `*` that "
        "keeps it out of git (it is the queue's data, not code: keep it out of your "
        "repository and your image); refused if other users can write to it. Without a "
        "`BASE_DIR` setting it must be set (system check `procpool_tasks.E001`)."
    ),
    "durable": (
        "Acknowledged tasks and finished results survive power loss (`fdatasync`). `False` "
        "trades that for speed: they still survive a crash of any process."
    ),
    "max_attempts": (
        "How many attempts a task interrupted mid-run (its supervisor died or was stopped at "
        "once) gets in all before it is marked FAILED; a task stopped by a `--reload` uses "
        'none. `1` means "fail instead of re-run". A task stopped because *another* worker '
        "process died always runs again."
    ),
    "task_timeout": (
        "Seconds a task may run; past that it ends FAILED with `TaskTimeoutError`. "
        "`--task-timeout` overrides it per worker, a task's own `timeout` overrides both. "
        "`None`: no limit."
    ),
    "retention": (
        "Seconds to keep finished tasks, for every finished status, or per status: "
        '`{"SUCCESSFUL": 86400, "FAILED": 2592000, "HANDED_OFF": 604800}` (a status '
        "left out is kept). Workers prune every minute. Empty (or `None`): finished tasks are "
        "kept until `procpool_prune` runs."
    ),
    "sqlite_defaults": (
        "In every process with the app installed (web, commands, worker), give SQLite "
        "databases the `timeout` (20 s) and `transaction_mode` (`IMMEDIATE`) their settings "
        'leave out, so that concurrent writers wait instead of failing with "database is '
        'locked". `False` on any ProcPoolBackend: nothing is added anywhere.'
    ),
    "retry": (
        "Run a task that raised again, after a backoff: a dict of the keys below, such as "
        '`{"attempts": 3, "exceptions": ["myapp.errors.Transient"]}`. `None`: a task '
        "that raises ends FAILED, as the framework says."
    ),
    "enqueue_on_commit": (
        "Inside `transaction.atomic()`, write the task when the outermost transaction "
        "commits, never if it rolls back."
    ),
    "task_options": (
        "Per task path, its own options (the keys below): "
        '`{"myapp.tasks.send_mail": {"retry": {"attempts": 5}, "timeout": 30}}`. '
        "A task's own `@task(...)` options win over these."
    ),
    "admin_actions": (
        "Give the status page buttons that re-queue FAILED tasks, cancel READY and RUNNING "
        "ones and drop quarantined records, for the users allowed to see it. `False`: the "
        "page is read-only, and a POST to its actions is refused (403)."
    ),
    "schedule": (
        "Periodic tasks, fired by the workers: schedule name -> a dict of the keys below, "
        'such as `{"nightly-report": {"task": "myapp.tasks.report", "cron": '
        '"0 3 * * *"}}`.'
    ),
    "former_alias": (
        "The alias this journal's tasks were enqueued under, when you gave the backend "
        "another one since (to hand its tasks to a new backend under the old alias): they "
        "stay readable and can be handed off."
    ),
}

#: Keys of a retry policy (``OPTIONS["retry"]``, a task's ``retry``) -> what they mean.
RETRY_MEANINGS: dict[str, str] = {
    "attempts": "Attempts in all, the first included, before a task that raised ends FAILED.",
    "backoff": (
        "The factor the wait grows by: `delay * backoff ** (n - 1)` seconds after attempt n "
        "(`1`: the same wait each time); or the dotted path of a module-level function "
        "`f(attempt) -> seconds`."
    ),
    "delay": "Seconds to wait after the first attempt.",
    "max_delay": "The longest wait, in seconds.",
    "jitter": (
        "Take a random share of up to half off each wait, so that tasks that failed together "
        "do not come back together."
    ),
    "exceptions": (
        "Dotted paths of the exception classes that are retried (subclasses too); empty: any "
        "`Exception`, never a `BaseException` such as the timeout error."
    ),
}

#: Keys of one task's entry in ``OPTIONS["task_options"]`` -> what they mean.
TASK_OPTION_MEANINGS: dict[str, str] = {
    "retry": (
        "Its retry policy, merged over the backend's `retry` (`{'attempts': 5}` changes "
        "only that); `None` turns retries off for this task."
    ),
    "max_attempts": (
        "Attempts in all, whatever ended each one (an exception, a timeout, an interruption); "
        "turns retries on."
    ),
    "backoff": "The retry policy's `backoff` for this task (a factor, or a function's path).",
    "timeout": (
        "Seconds an attempt may run, over `--task-timeout` and `task_timeout`; `None`: no "
        "limit for this task."
    ),
    "enqueue_on_commit": "`enqueue_on_commit` for this task.",
}

#: Keys of one schedule in ``OPTIONS["schedule"]`` -> what they mean.
SCHEDULE_MEANINGS: dict[str, str] = {
    "task": "The dotted path of a function decorated with `@task`. Required.",
    "cron": (
        "A cron expression, read on the clock of `TIME_ZONE`. Exactly one of `cron` and `every`."
    ),
    "every": (
        "An interval in seconds: ticks at the multiples of it since the Unix epoch (`300`: "
        "at :00, :05, :10...), the same in every process whenever it started."
    ),
    "args": "The task's positional arguments: JSON data, as for `enqueue`.",
    "kwargs": "The task's keyword arguments: JSON data, as for `enqueue`.",
    "queue_name": "The queue the task goes to; `None`: the task's own.",
    "priority": "The task's priority; `None`: the task's own.",
    "catch_up": "Fire a tick missed while no worker ran, once, when one starts again.",
}


class _Invalid(ValueError):
    """One option is wrong; the message says which key and what it takes."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """When a task that raised runs again: ``OPTIONS["retry"]`` or a task's own.

    ``attempts`` counts every attempt, the first included, as ``worker_ids`` does. The
    wait before attempt n+1 is ``delay * backoff**(n-1)``, at most ``max_delay``; with
    ``jitter`` a random share of up to half of it is taken off, so that tasks that failed
    together do not all come back at once.
    """

    attempts: int = 3
    backoff: float = 2.0
    delay: float = 1.0
    max_delay: float = 300.0
    jitter: bool = True
    #: Dotted paths of exception classes that are retried (subclasses too); empty: any
    #: ``Exception`` (not a ``BaseException`` such as a timeout).
    exceptions: tuple[str, ...] = ()
    #: The dotted path of a function ``f(attempt) -> seconds`` that gives the wait instead
    #: (``@task(backoff=f)``); None: ``delay``, ``backoff`` and ``max_delay`` give it.
    backoff_function: str | None = None
    #: Retry a task that ran past its timeout too (set by a task's own ``max_attempts``,
    #: which bounds every attempt, whatever ended it).
    timeouts: bool = False

    def delay_after(self, attempt: int) -> float:
        """Seconds to wait after attempt ``attempt`` (1 = the first) failed.

        Raises what a ``backoff_function`` raises, or ``TypeError``/``ValueError`` when it
        returns something that is not a number of seconds >= 0.
        """
        if self.backoff_function is not None:
            wait = import_string(self.backoff_function)(attempt)
            if not _is_number(wait) or wait < 0:
                raise ValueError(
                    f"{self.backoff_function}({attempt}) returned {wait!r}, not a number of "
                    "seconds >= 0"
                )
            return float(wait)
        try:
            wait = min(self.max_delay, self.delay * self.backoff ** (attempt - 1))
        except OverflowError:
            # backoff**(n-1) is past the largest float (2.0**1024): a delay > 0 is capped.
            wait = self.max_delay if self.delay else 0.0
        if self.jitter:
            wait -= random.uniform(0, wait / 2)  # noqa: S311 (spreading, not secrecy)
        return wait

    @classmethod
    def parse(cls, where: str, value: Any, base: RetryPolicy | None = None) -> RetryPolicy:
        """A policy from its mapping; keys not given come from ``base`` (or the defaults)."""
        if not isinstance(value, Mapping):
            raise _Invalid(f"{where} must be a dict such as {{'attempts': 3}}, not {value!r}")
        _refuse_unknown(where, value, list(_RETRY_CHECKS))
        changes: dict[str, Any] = {}
        for key, item in value.items():
            changes[key] = _RETRY_CHECKS[key](f"{where}[{key!r}]", item)
        if isinstance(changes.get("backoff"), str):  # a function's path, not a factor
            changes["backoff_function"] = changes.pop("backoff")
        elif "backoff" in changes:
            changes["backoff_function"] = None
        return dataclasses.replace(base or cls(), **changes)


def _whole_number_at_least_one(where: str, value: Any) -> int:
    if type(value) is not int or value < 1:
        raise _Invalid(f"{where} must be a whole number >= 1, not {value!r}")
    return value


def _seconds_or_zero(where: str, value: Any) -> float:
    if not _is_number(value) or value < 0:
        raise _Invalid(f"{where} must be a number of seconds >= 0, not {value!r}")
    return float(value)


def _factor(where: str, value: Any) -> float:
    if not _is_number(value) or value < 1:
        raise _Invalid(f"{where} must be a number >= 1 (1: the same wait each time), not {value!r}")
    return float(value)


def _boolean(where: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise _Invalid(f"{where} must be True or False, not {value!r}")
    return value


def _dotted_paths(where: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, list | tuple):
        raise _Invalid(f"{where} must be a list of exception class paths, not {value!r}")
    for path in value:
        if not isinstance(path, str) or "." not in path:
            raise _Invalid(
                f"{where} must hold dotted paths such as 'myapp.errors.Transient', not {path!r}"
            )
    return tuple(value)


_RETRY_CHECKS: dict[str, Any] = {
    "attempts": _whole_number_at_least_one,
    "backoff": lambda where, value: _backoff(where, value),
    "delay": _seconds_or_zero,
    "max_delay": _seconds_or_zero,
    "jitter": _boolean,
    "exceptions": _dotted_paths,
}


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskOptions:
    """What one task gets: its decorator's options, its ``task_options``, the backend's.

    ``max_attempts`` bounds the attempts of a task whose attempt was interrupted (its
    supervisor died or was stopped at once); ``retry.attempts`` those of a task that raised.
    A ``max_attempts`` given for one task sets both (see ``given``).
    """

    retry: RetryPolicy | None = None
    timeout: float | None = None
    enqueue_on_commit: bool = False
    max_attempts: int = 3

    def given(self, layer: Mapping[str, Any]) -> TaskOptions:
        """These options with one checked layer over them (``task_options``, a decorator's).

        ``retry`` (a policy merged over this one's, or None: off) comes first; then
        ``max_attempts``, which bounds every attempt whatever ended it and so turns retries
        on (this policy's, else the defaults) with that many attempts; then ``backoff``, a
        factor or a function's path, which turns retries on likewise.
        """
        retry = layer.get("retry", self.retry)
        max_attempts = layer.get("max_attempts", self.max_attempts)
        if "max_attempts" in layer:
            retry = dataclasses.replace(
                retry or RetryPolicy(), attempts=max_attempts, timeouts=True
            )
        backoff = layer.get("backoff")
        if isinstance(backoff, str):
            retry = dataclasses.replace(retry or RetryPolicy(), backoff_function=backoff)
        elif backoff is not None:
            retry = dataclasses.replace(
                retry or RetryPolicy(), backoff=backoff, backoff_function=None
            )
        return dataclasses.replace(
            self,
            retry=retry,
            max_attempts=max_attempts,
            timeout=layer.get("timeout", self.timeout),
            enqueue_on_commit=layer.get("enqueue_on_commit", self.enqueue_on_commit),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class ScheduleOptions:
    """One entry of ``OPTIONS["schedule"]``: which task to enqueue, with what, and when.

    Its types are checked here; whether it makes sense (the task imports, the cron
    expression parses, exactly one of ``cron`` and ``every``, JSON arguments, a queue of
    QUEUES, a priority in range) is for the system checks (``procpool_tasks.checks``).
    """

    name: str
    task_path: str
    cron: str | None = None
    every: float | None = None
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    queue_name: str | None = None  # None: the task's own
    priority: int | None = None  # None: the task's own
    #: Fire the latest tick missed while no supervisor ran, once, when one starts again.
    catch_up: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class BackendOptions:
    """The backend's ``OPTIONS``, checked."""

    path: Path
    durable: bool = True
    max_attempts: int = 3
    task_timeout: float | None = None
    #: Seconds to keep finished tasks, per status; a status missing: kept until pruned.
    retention: Mapping[str, float] = field(default_factory=dict)
    sqlite_defaults: bool = True
    retry: RetryPolicy | None = None
    enqueue_on_commit: bool = False
    #: Task path -> the options given for it (checked; a retry policy merged over
    #: ``retry``); what is not given comes from the defaults above.
    task_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    #: The status page's requeue and drop buttons (``procpool_tasks.urls``); off: read-only.
    admin_actions: bool = False
    #: Schedule name -> its periodic task (see ``periodic``).
    schedule: Mapping[str, ScheduleOptions] = field(default_factory=dict)
    #: The alias the journal's tasks were enqueued under, when the backend was given
    #: another one since (its old alias now names the backend they move to, see
    #: ``handoff``): they are still its own, to read and to hand off.
    former_alias: str | None = None

    def for_task(
        self,
        task_path: str,
        *,
        timeout: float | None = None,
        decorated: Mapping[str, Any] | None = None,
    ) -> TaskOptions:
        """The retry policy, timeouts, attempts and enqueue-on-commit choice of one task.

        Each of these wins over the next: ``decorated`` (the options its ``@task(...)``
        gave, as the task's record carries them: ``record_options``), its ``task_options``,
        ``timeout`` (a worker's ``--task-timeout``), the backend's ``OPTIONS``.
        """
        defaults = TaskOptions(
            retry=self.retry,
            timeout=timeout or self.task_timeout,
            enqueue_on_commit=self.enqueue_on_commit,
            max_attempts=self.max_attempts,
        )
        options = defaults.given(self.task_options.get(task_path, {}))
        if not decorated:
            return options
        # A record may come from newer code, with options this version does not know.
        known = {key: value for key, value in decorated.items() if key in DECORATOR_OPTIONS}
        try:
            return options.given(parse_task_level("the task's record", known, options.retry))
        except ValueError as error:  # a hand-edited record: its options are left out
            logger.warning("Options of %s left out: %s", task_path, error)
            return options

    @classmethod
    def from_options(cls, alias: str, options: Mapping[str, Any]) -> BackendOptions:
        """Raise ImproperlyConfigured, saying what to set, for anything wrong."""
        where = f"TASKS[{alias!r}]['OPTIONS']"
        try:
            return cls._parse(where, options)
        except _Invalid as error:
            raise ImproperlyConfigured(str(error)) from None

    @classmethod
    def _parse(cls, where: str, options: Mapping[str, Any]) -> BackendOptions:
        _refuse_unknown(where, options, [each.name for each in dataclasses.fields(cls)])

        def get(key: str, check: Any, default: Any) -> Any:
            value = options.get(key, default)
            return default if value is default else check(f"{where}[{key!r}]", value)

        retry = get("retry", RetryPolicy.parse, None)
        return cls(
            path=_journal_path(where, options.get("path")),
            durable=get("durable", _boolean, True),
            max_attempts=get("max_attempts", _whole_number_at_least_one, 3),
            task_timeout=get("task_timeout", _seconds_or_none, None),
            retention=get("retention", _retention, {}),
            sqlite_defaults=get("sqlite_defaults", _boolean, True),
            retry=retry,
            enqueue_on_commit=get("enqueue_on_commit", _boolean, False),
            task_options=get("task_options", lambda w, v: _task_options(w, v, retry), {}),
            admin_actions=get("admin_actions", _boolean, False),
            schedule=get("schedule", _schedules, {}),
            former_alias=get("former_alias", _alias, None),
        )


def _alias(where: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise _Invalid(f"{where} must be the alias (a string) of a backend in TASKS, not {value!r}")
    return value


def _refuse_unknown(where: str, given: Mapping[str, Any], known: list[str]) -> None:
    unknown = sorted(set(given) - set(known), key=str)
    if unknown:
        raise _Invalid(
            f"{where} has unknown keys {unknown}; the keys are "
            f"{', '.join(map(repr, known[:-1]))} and {known[-1]!r}"
        )


def _seconds_or_none(where: str, value: Any) -> float | None:
    if value is not None and not is_positive_seconds(value):
        raise _Invalid(f"{where} must be a number of seconds > 0, or None; not {value!r}")
    return None if value is None else float(value)


def _retention(where: str, value: Any) -> dict[str, float]:
    """A number of seconds for every finished status, or one per status."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        if not is_positive_seconds(value):
            raise _Invalid(
                f"{where} must be a number of seconds > 0, a dict such as "
                f"{{'SUCCESSFUL': 86400, 'FAILED': 2592000}}, or None; not {value!r}"
            )
        return dict.fromkeys(RETAINED_STATUSES, float(value))
    _refuse_unknown(where, value, list(RETAINED_STATUSES))
    retention = {}
    for status, seconds in value.items():
        if seconds is not None:
            if not is_positive_seconds(seconds):
                raise _Invalid(
                    f"{where}[{status!r}] must be a number of seconds > 0, or None; not {seconds!r}"
                )
            retention[status] = float(seconds)
    return retention


def _task_options(where: str, value: Any, retry: RetryPolicy | None) -> dict[str, dict[str, Any]]:
    if not isinstance(value, Mapping):
        raise _Invalid(f"{where} must be a dict of task paths to their options, not {value!r}")
    parsed = {}
    for task_path, options in value.items():
        own = f"{where}[{task_path!r}]"
        if not isinstance(task_path, str) or "." not in task_path:
            raise _Invalid(
                f"{where} keys must be dotted task paths such as 'myapp.tasks.send_mail', "
                f"not {task_path!r}"
            )
        if not isinstance(options, Mapping):
            raise _Invalid(f"{own} must be a dict such as {{'timeout': 30}}, not {options!r}")
        parsed[task_path] = parse_task_level(own, options, retry)
    return parsed


def _own_retry(where: str, value: Any, retry: RetryPolicy | None) -> RetryPolicy | None:
    """A task's retry policy, over the backend's; None turns retries off for the task."""
    return None if value is None else RetryPolicy.parse(where, value, retry)


def _backoff(where: str, value: Any) -> float | str:
    """A factor >= 1, or the dotted path of a function ``f(attempt) -> seconds``."""
    if isinstance(value, str):
        return _function_path(where, value)
    return _factor(where, value)


def _function_path(where: str, value: Any) -> str:
    if not isinstance(value, str) or "." not in value:
        raise _Invalid(
            f"{where} must be a number >= 1 or the dotted path of a module-level function "
            f"such as 'myapp.tasks.backoff', not {value!r}"
        )
    return value


_TASK_OPTION_CHECKS: dict[str, Any] = {
    "retry": _own_retry,
    "max_attempts": lambda where, value, _retry: _whole_number_at_least_one(where, value),
    "backoff": lambda where, value, _retry: _backoff(where, value),
    "timeout": lambda where, value, _retry: _seconds_or_none(where, value),
    "enqueue_on_commit": lambda where, value, _retry: _boolean(where, value),
}

#: What a ``@task(...)`` decorator may give (Django 6.1, the backport 0.11+): the names
#: the framework's proposals and django-ox use, and ``retry``, the whole policy.
DECORATOR_OPTIONS = ("max_attempts", "backoff", "timeout", "retry")


def parse_task_level(
    where: str,
    given: Mapping[str, Any],
    retry: RetryPolicy | None,
    *,
    decorator: bool = False,
) -> dict[str, Any]:
    """One task's own options, checked; ``retry`` policies merge over ``retry``.

    Raises ValueError (whose message names the key) for a wrong value; ``decorator``:
    the keys are named as ``@task`` arguments, ``where`` names the task.
    """
    known = list(DECORATOR_OPTIONS if decorator else _TASK_OPTION_CHECKS)
    _refuse_unknown(where, given, known)
    retry_given = given.get("retry")
    if "max_attempts" in given and isinstance(retry_given, Mapping) and "attempts" in retry_given:
        raise _Invalid(
            f"{where} gives both 'max_attempts' and retry['attempts']; give one of them "
            "(max_attempts bounds every attempt, whatever ended it)"
        )
    return {
        key: _TASK_OPTION_CHECKS[key](
            f"{where}: {key}" if decorator else f"{where}[{key!r}]", item, retry
        )
        for key, item in given.items()
    }


_SCHEDULE_EXAMPLE = "{'task': 'myapp.tasks.report', 'cron': '0 3 * * *'}"


def _schedules(where: str, value: Any) -> dict[str, ScheduleOptions]:
    if not isinstance(value, Mapping):
        raise _Invalid(
            f"{where} must be a dict of schedule names to schedules such as "
            f"{{'nightly-report': {_SCHEDULE_EXAMPLE}}}, not {value!r}"
        )
    parsed = {}
    for name, entry in value.items():
        if not isinstance(name, str) or not SCHEDULE_NAME_PATTERN.fullmatch(name):
            raise _Invalid(
                f"{where} has the schedule name {name!r}; a name is 1 to 64 letters, digits, "
                "'_', '.' and '-', starting with a letter, a digit or '_' (it names files in "
                "the journal)"
            )
        parsed[name] = _schedule(f"{where}[{name!r}]", name, entry)
    return parsed


def _schedule(where: str, name: str, entry: Any) -> ScheduleOptions:
    if not isinstance(entry, Mapping):
        raise _Invalid(f"{where} must be a dict such as {_SCHEDULE_EXAMPLE}, not {entry!r}")
    _refuse_unknown(where, entry, list(_SCHEDULE_CHECKS))
    if "task" not in entry:
        raise _Invalid(
            f"{where} has no 'task'; set it to the dotted path of a @task, such as "
            "'myapp.tasks.report'"
        )
    given = {
        key: _SCHEDULE_CHECKS[key](f"{where}[{key!r}]", item)
        for key, item in entry.items()
        if item is not None or key == "task"
    }
    task_path = given.pop("task")
    return ScheduleOptions(name=name, task_path=task_path, **given)


def _schedule_task(where: str, value: Any) -> str:
    if not isinstance(value, str) or "." not in value:
        raise _Invalid(
            f"{where} must be the dotted path of a @task, such as 'myapp.tasks.report', "
            f"not {value!r}"
        )
    return value


def _cron_text(where: str, value: Any) -> str:
    if not isinstance(value, str):
        raise _Invalid(f"{where} must be a cron expression such as '0 3 * * *', not {value!r}")
    return value


def _every_seconds(where: str, value: Any) -> float:
    # A timedelta holds at most 999999999 days; ticks are computed with timedeltas.
    if not is_positive_seconds(value) or value >= 86400 * 999999999:
        raise _Invalid(
            f"{where} must be a number of seconds > 0, such as 300 for every five minutes; "
            f"not {value!r}"
        )
    return float(value)


def _arguments(where: str, value: Any) -> list[Any]:
    if isinstance(value, str) or not isinstance(value, list | tuple):
        raise _Invalid(f"{where} must be a list of positional arguments, not {value!r}")
    return list(value)


def _keyword_arguments(where: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise _Invalid(f"{where} must be a dict of keyword arguments, not {value!r}")
    return dict(value)


def _queue_name(where: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise _Invalid(f"{where} must be a queue name, or None for the task's own; not {value!r}")
    return value


def _priority(where: str, value: Any) -> int:
    if type(value) is not int:
        raise _Invalid(f"{where} must be a whole number, or None for the task's own; not {value!r}")
    return value


_SCHEDULE_CHECKS: dict[str, Any] = {
    "task": _schedule_task,
    "cron": _cron_text,
    "every": _every_seconds,
    "args": _arguments,
    "kwargs": _keyword_arguments,
    "queue_name": _queue_name,
    "priority": _priority,
    "catch_up": _boolean,
}


def is_positive_seconds(value: object) -> bool:
    """A finite number of seconds > 0 (not a bool)."""
    return _is_number(value) and value > 0  # type: ignore[operator]


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _journal_path(where: str, path: Any) -> Path:
    if path is None:
        base_dir = getattr(settings, "BASE_DIR", None)
        if base_dir is None:
            raise _Invalid(
                f"{where}['path'] is not set and there is no BASE_DIR setting; set "
                f"{where}['path'] to the journal directory"
            )
        return Path(base_dir) / DEFAULT_JOURNAL_DIRNAME
    if not isinstance(path, str | os.PathLike) or not os.fspath(path):
        raise _Invalid(f"{where}['path'] must be a directory path, not {path!r}")
    return Path(path)
