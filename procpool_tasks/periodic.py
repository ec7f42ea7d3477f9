"""Periodic tasks (``OPTIONS["schedule"]``): the system checks of what a schedule means.

``options`` checks the types of a schedule; these checks need the project's code and the
backend's QUEUES: the task imports, the cron expression parses, exactly one of ``cron``
and ``every``, arguments JSON can carry, a queue of QUEUES, a priority in range.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.core import checks
from django.utils.module_loading import import_string

from . import compat, journal
from .options import ScheduleOptions
from .schedule import CronError, CronExpression

__all__ = ["check_schedules"]


# --- system checks ------------------------------------------------------------------------


def check_schedules(backend: Any, schedules: Iterable[ScheduleOptions]) -> list[checks.Error]:
    """What ``OPTIONS["schedule"]`` gets wrong that its types do not say: an error with
    an id per kind of mistake (procpool_tasks.E010 to E015)."""
    errors: list[checks.Error] = []
    for options in schedules:
        where = f"TASKS[{backend.alias!r}]['OPTIONS']['schedule'][{options.name!r}]"
        errors.extend(_check_schedule(backend, where, options))
    return errors


def _check_schedule(backend: Any, where: str, options: ScheduleOptions) -> Iterable[checks.Error]:
    task = _checked_task(options.task_path)
    if not isinstance(task, compat.Task):
        yield checks.Error(
            f"{where}['task'] names {options.task_path!r}, which "
            + ("is not a task" if task is not None else "cannot be imported"),
            hint="Use the dotted path of a function decorated with @task (its module_path), "
            "e.g. 'myapp.tasks.report'.",
            obj=backend,
            id="procpool_tasks.E010",
        )
        task = None
    if options.cron is not None:
        try:
            CronExpression.parse(options.cron)
        except CronError as error:
            yield checks.Error(
                f"{where}['cron'] is not a cron expression this backend reads: {error}",
                hint="Give five fields, minute hour day-of-month month day-of-week, such as "
                "'0 3 * * *' (03:00 every day) or '*/15 9-17 * * mon-fri', or a macro such "
                "as '@daily'.",
                obj=backend,
                id="procpool_tasks.E011",
            )
    if (options.cron is None) == (options.every is None):
        yield checks.Error(
            f"{where} gives both 'cron' and 'every'; a schedule has one of them"
            if options.cron is not None
            else f"{where} gives neither 'cron' nor 'every', so it would never fire",
            hint="Keep 'cron' for times of day (a cron expression such as '0 3 * * *') or "
            "'every' for an interval (seconds, such as 300).",
            obj=backend,
            id="procpool_tasks.E012",
        )
    for key, value in (("args", options.args), ("kwargs", options.kwargs)):
        try:
            journal.to_json_value(value, f"{where}[{key!r}]")
        except journal.ValueNotJSON as error:
            yield checks.Error(
                str(error),
                hint="Give plain JSON data (text, numbers, booleans, None, lists, dicts with "
                "text keys): an id rather than a model instance, an ISO 8601 string rather "
                "than a datetime.",
                obj=backend,
                id="procpool_tasks.E013",
            )
    queue_name = options.queue_name or (task.queue_name if task is not None else None)
    if backend.queues and queue_name is not None and queue_name not in backend.queues:
        whose = (
            f"{where}['queue_name'] is"
            if options.queue_name
            else f"{where}['task'] {options.task_path!r} has the queue"
        )
        yield checks.Error(
            f"{whose} {queue_name!r}, which is not in the QUEUES of TASKS[{backend.alias!r}] "
            f"({', '.join(map(repr, sorted(backend.queues)))})",
            hint="Set 'queue_name' to one of QUEUES, or add the queue to QUEUES.",
            obj=backend,
            id="procpool_tasks.E014",
        )
    if options.priority is not None and not (
        compat.TASK_MIN_PRIORITY <= options.priority <= compat.TASK_MAX_PRIORITY
    ):
        yield checks.Error(
            f"{where}['priority'] is {options.priority}, outside the framework's range of "
            f"{compat.TASK_MIN_PRIORITY} to {compat.TASK_MAX_PRIORITY}",
            hint=f"Give a whole number from {compat.TASK_MIN_PRIORITY} to "
            f"{compat.TASK_MAX_PRIORITY} (higher runs first), or None for the task's own.",
            obj=backend,
            id="procpool_tasks.E015",
        )


def _checked_task(path: str) -> Any:
    try:
        return import_string(path)
    except ImportError:
        return None
