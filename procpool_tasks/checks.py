"""Every system check of procpool_tasks, and its id: one id per mistake.

``ProcPoolBackend.check()`` (which the framework's own check calls for each backend) runs
``check_backend``; the app registers ``check_status_page`` for the page's settings. Each
message names the setting at fault and its hint says what to set.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.core import checks as django_checks
from django.db import connections
from django.utils.module_loading import import_string

from . import compat, journal, sqlite
from .exceptions import CronError
from .options import ScheduleOptions
from .periodic.cron import CronExpression
from .web.access import DEFAULT_REFRESH_S, PERMISSION_SETTING, REFRESH_SETTING

if TYPE_CHECKING:
    from .backend import ProcPoolBackend

__all__ = [
    "BAD_OPTIONS",
    "BAD_RETRY_EXCEPTION",
    "BAD_STATUS_PERMISSION",
    "BAD_STATUS_REFRESH",
    "JOURNAL_UNSAFE",
    "SCHEDULE_ARGUMENTS_NOT_JSON",
    "SCHEDULE_BAD_CRON",
    "SCHEDULE_BAD_PRIORITY",
    "SCHEDULE_BAD_QUEUE",
    "SCHEDULE_NOT_A_TASK",
    "SCHEDULE_WHEN",
    "SQLITE_WARNED_ENV",
    "SQLITE_WITHOUT_DEFAULTS",
    "TASK_OPTIONS_NOT_A_TASK",
    "check_backend",
    "check_status_page",
]

#: A value of the backend's ``OPTIONS`` is wrong; the message names the key.
BAD_OPTIONS = "procpool_tasks.E001"
#: The journal directory is not private (other users can write to it) or not usable.
JOURNAL_UNSAFE = "procpool_tasks.E002"
#: A retry policy's ``exceptions`` names something that is not an importable exception.
BAD_RETRY_EXCEPTION = "procpool_tasks.E003"
#: A key of ``task_options`` is not the path of a ``@task``.
TASK_OPTIONS_NOT_A_TASK = "procpool_tasks.E004"
#: ``PROCPOOL_TASKS_STATUS_PERMISSION`` is not a permission name.
BAD_STATUS_PERMISSION = "procpool_tasks.E005"
#: ``PROCPOOL_TASKS_STATUS_REFRESH_S`` is not a whole number of seconds >= 0.
BAD_STATUS_REFRESH = "procpool_tasks.E006"
#: A schedule's ``task`` is not the path of a ``@task``.
SCHEDULE_NOT_A_TASK = "procpool_tasks.E010"
#: A schedule's ``cron`` is not an expression this backend reads.
SCHEDULE_BAD_CRON = "procpool_tasks.E011"
#: A schedule gives both ``cron`` and ``every``, or neither.
SCHEDULE_WHEN = "procpool_tasks.E012"
#: A schedule's ``args`` or ``kwargs`` would not survive a JSON round trip.
SCHEDULE_ARGUMENTS_NOT_JSON = "procpool_tasks.E013"
#: A schedule's queue is not in the backend's ``QUEUES``.
SCHEDULE_BAD_QUEUE = "procpool_tasks.E014"
#: A schedule's priority is outside the framework's range.
SCHEDULE_BAD_PRIORITY = "procpool_tasks.E015"
#: A SQLite database that processes share with tasks lacks a busy timeout and IMMEDIATE,
#: and procpool_tasks does not add them (opted out, app not installed, another ENGINE).
SQLITE_WITHOUT_DEFAULTS = "procpool_tasks.W001"
#: Set (to "1") for the supervisors the reloader starts: it said W001 at start, they do not.
SQLITE_WARNED_ENV = "PROCPOOL_TASKS_SQLITE_WARNED"


def check_backend(backend: ProcPoolBackend) -> list[django_checks.CheckMessage]:
    """Every check of one ``ProcPoolBackend``: its options, journal, imports, schedules."""
    return [
        *_check_journal(backend),
        *_check_imports(backend),
        *_check_schedules(backend),
        *_check_sqlite(backend),
    ]


def check_status_page(app_configs: Any = None, **kwargs: Any) -> list[django_checks.CheckMessage]:
    """The status page's settings, if given, must make sense (E005, E006)."""
    return list(_status_page_errors())


# -- the backend ---------------------------------------------------------------------------


def _check_journal(backend: ProcPoolBackend) -> Iterable[django_checks.CheckMessage]:
    if backend._options_error is not None:
        yield django_checks.Error(
            str(backend._options_error),
            hint="Fix the backend's OPTIONS in the TASKS setting.",
            obj=backend,
            id=BAD_OPTIONS,
        )
        return
    try:
        backend.journal.check_permissions()
    except journal.JournalError as error:
        yield django_checks.Error(
            f"The journal directory {error.filename} cannot be used safely: {error.strerror}",
            hint=_journal_hint(error),
            obj=backend,
            id=JOURNAL_UNSAFE,
        )


def _journal_hint(error: journal.JournalError) -> str:
    """What to do about an unusable journal directory, by what is wrong with it."""
    if error.errno == errno.ENOTDIR:
        return (
            "OPTIONS['path'] names a file, not a directory: point it at a directory (one "
            "that does not exist yet is made)."
        )
    if error.errno == errno.ELOOP:
        return "Remove the symlink, or point OPTIONS['path'] at a private directory."
    if "another user" in (error.strerror or ""):
        return (
            "Run every process of the project as the user it belongs to, or point "
            "OPTIONS['path'] at a directory of their own."
        )
    return "Run chmod 700 on it, or point OPTIONS['path'] at a private directory."


def _check_imports(backend: ProcPoolBackend) -> Iterable[django_checks.CheckMessage]:
    """The retry exceptions and the task paths of ``task_options`` must import."""
    options = backend._options
    if options is None:
        return
    where = f"TASKS[{backend.alias!r}]['OPTIONS']"
    policies = [(f"{where}['retry']", options.retry)] + [
        (f"{where}['task_options'][{path!r}]['retry']", own.get("retry"))
        for path, own in options.task_options.items()
    ]
    for place, policy in policies:
        for path in policy.exceptions if policy else ():
            found = _import(path)
            if not (isinstance(found, type) and issubclass(found, BaseException)):
                yield django_checks.Error(
                    f"{place}['exceptions'] names {path!r}, which "
                    + ("is not an exception class" if found is not None else "cannot be imported"),
                    hint="Give the dotted path of an exception class, such as "
                    "'myapp.errors.Transient'.",
                    obj=backend,
                    id=BAD_RETRY_EXCEPTION,
                )
    for path in options.task_options:
        if not isinstance(_import(path), compat.Task):
            yield django_checks.Error(
                f"{where}['task_options'] names {path!r}, which is not a task",
                hint="Use the dotted path of a function decorated with @task "
                "(its module_path), e.g. 'myapp.tasks.send_mail'.",
                obj=backend,
                id=TASK_OPTIONS_NOT_A_TASK,
            )


def _check_sqlite(backend: ProcPoolBackend) -> Iterable[django_checks.CheckMessage]:
    """Warn about each SQLite database that processes use without a busy timeout and IMMEDIATE.

    The app gives them to every process it is installed in (``sqlite``), so this warns
    only where that does not happen: a backend opted out (``sqlite_defaults``), the app
    is not in INSTALLED_APPS, or the database's ENGINE is not Django's SQLite backend.
    One backend says it, once per database, and the supervisors the reloader starts
    leave it to the reloader, which said it at start.
    """
    if os.environ.get(SQLITE_WARNED_ENV) or not _reports_sqlite(backend):
        return
    process = sqlite.process_defaults()
    for alias in connections:
        database = connections.settings[alias]
        if sqlite.is_other_sqlite(database):
            yield django_checks.Warning(
                f"Database {alias!r} is SQLite through ENGINE {database['ENGINE']!r}, which "
                "is not built on Django's SQLite backend, so procpool_tasks gives it no busy "
                "timeout and IMMEDIATE transactions: processes that write to it while tasks "
                "do may fail with 'database is locked'.",
                hint="Set the busy timeout and IMMEDIATE transactions the way its ENGINE "
                "offers, then add 'procpool_tasks.W001' to SILENCED_SYSTEM_CHECKS; or use "
                "ENGINE 'django.db.backends.sqlite3'.",
                obj=backend,
                id=SQLITE_WITHOUT_DEFAULTS,
            )
            continue
        missing = sqlite.missing_sqlite_settings(database)
        if not missing:
            continue
        lines = ", ".join(f"{key!r}: {value!r}" for key, value in missing.items())
        if process is None:
            why = "'procpool_tasks' is not in INSTALLED_APPS, so this process does not add them"
            remedy = "add 'procpool_tasks' to INSTALLED_APPS"
        else:
            why = (
                f"OPTIONS['sqlite_defaults'] is False in TASKS[{process.opted_out[0]!r}], so "
                "procpool_tasks adds them in no process"
            )
            remedy = "remove 'sqlite_defaults': False"
        yield django_checks.Warning(
            f"Database {alias!r} is SQLite without a busy timeout and IMMEDIATE transactions, "
            f"and {why}: processes that write to it while tasks do will fail with 'database "
            "is locked'.",
            hint=f"Add {lines} to DATABASES[{alias!r}]['OPTIONS'], or {remedy}.",
            obj=backend,
            id=SQLITE_WITHOUT_DEFAULTS,
        )


def _reports_sqlite(backend: ProcPoolBackend) -> bool:
    """Whether this backend says W001: the first that opted out, else the first of TASKS."""
    process = sqlite.process_defaults()
    if process is not None and process.opted_out:
        return backend.alias == process.opted_out[0]
    from .backend import ProcPoolBackend  # backend imports this module

    for alias in compat.task_backends.settings:
        try:
            if isinstance(compat.task_backends[alias], ProcPoolBackend):
                return backend.alias == alias
        except compat.InvalidTaskBackend:
            continue  # the framework's own check reports it
    return False


def _import(path: str) -> Any:
    try:
        return import_string(path)
    except ImportError:
        return None


# -- periodic tasks ------------------------------------------------------------------------


def _check_schedules(backend: ProcPoolBackend) -> Iterable[django_checks.CheckMessage]:
    """What ``OPTIONS["schedule"]`` gets wrong that its types do not say (E010 to E015)."""
    if backend._options is None:
        return
    for options in backend._options.schedule.values():
        where = f"TASKS[{backend.alias!r}]['OPTIONS']['schedule'][{options.name!r}]"
        yield from _check_schedule(backend, where, options)


def _check_schedule(
    backend: ProcPoolBackend, where: str, options: ScheduleOptions
) -> Iterable[django_checks.CheckMessage]:
    task = _import(options.task_path)
    if not isinstance(task, compat.Task):
        yield django_checks.Error(
            f"{where}['task'] names {options.task_path!r}, which "
            + ("is not a task" if task is not None else "cannot be imported"),
            hint="Use the dotted path of a function decorated with @task (its module_path), "
            "e.g. 'myapp.tasks.report'.",
            obj=backend,
            id=SCHEDULE_NOT_A_TASK,
        )
        task = None
    yield from _check_when(backend, where, options)
    yield from _check_arguments(backend, where, options)
    yield from _check_queue_and_priority(backend, where, options, task)


def _check_when(
    backend: ProcPoolBackend, where: str, options: ScheduleOptions
) -> Iterable[django_checks.CheckMessage]:
    """A cron expression this backend reads, or ``every``; one of them (E011, E012)."""
    if options.cron is not None:
        try:
            CronExpression.parse(options.cron)
        except CronError as error:
            yield django_checks.Error(
                f"{where}['cron'] is not a cron expression this backend reads: {error}",
                hint="Give five fields, minute hour day-of-month month day-of-week, such as "
                "'0 3 * * *' (03:00 every day) or '*/15 9-17 * * mon-fri', or a macro such "
                "as '@daily'.",
                obj=backend,
                id=SCHEDULE_BAD_CRON,
            )
    if (options.cron is None) == (options.every is None):
        yield django_checks.Error(
            f"{where} gives both 'cron' and 'every'; a schedule has one of them"
            if options.cron is not None
            else f"{where} gives neither 'cron' nor 'every', so it would never fire",
            hint="Keep 'cron' for times of day (a cron expression such as '0 3 * * *') or "
            "'every' for an interval (seconds, such as 300).",
            obj=backend,
            id=SCHEDULE_WHEN,
        )


def _check_arguments(
    backend: ProcPoolBackend, where: str, options: ScheduleOptions
) -> Iterable[django_checks.CheckMessage]:
    """Arguments that go into a JSON record as they are (E013)."""
    for key, value in (("args", options.args), ("kwargs", options.kwargs)):
        try:
            journal.to_json_value(value, f"{where}[{key!r}]")
        except journal.ValueNotJSON as error:
            yield django_checks.Error(
                str(error),
                hint="Give plain JSON data (text, numbers, booleans, None, lists, dicts with "
                "text keys): an id rather than a model instance, an ISO 8601 string rather "
                "than a datetime.",
                obj=backend,
                id=SCHEDULE_ARGUMENTS_NOT_JSON,
            )


def _check_queue_and_priority(
    backend: ProcPoolBackend, where: str, options: ScheduleOptions, task: Any
) -> Iterable[django_checks.CheckMessage]:
    """A queue of the backend's QUEUES (E014) and a priority in the framework's range (E015)."""
    queue_name = options.queue_name or (task.queue_name if task is not None else None)
    if backend.queues and queue_name is not None and queue_name not in backend.queues:
        whose = (
            f"{where}['queue_name'] is"
            if options.queue_name
            else f"{where}['task'] {options.task_path!r} has the queue"
        )
        yield django_checks.Error(
            f"{whose} {queue_name!r}, which is not in the QUEUES of TASKS[{backend.alias!r}] "
            f"({', '.join(map(repr, sorted(backend.queues)))})",
            hint="Set 'queue_name' to one of QUEUES, or add the queue to QUEUES.",
            obj=backend,
            id=SCHEDULE_BAD_QUEUE,
        )
    if options.priority is not None and not (
        compat.TASK_MIN_PRIORITY <= options.priority <= compat.TASK_MAX_PRIORITY
    ):
        yield django_checks.Error(
            f"{where}['priority'] is {options.priority}, outside the framework's range of "
            f"{compat.TASK_MIN_PRIORITY} to {compat.TASK_MAX_PRIORITY}",
            hint=f"Give a whole number from {compat.TASK_MIN_PRIORITY} to "
            f"{compat.TASK_MAX_PRIORITY} (higher runs first), or None for the task's own.",
            obj=backend,
            id=SCHEDULE_BAD_PRIORITY,
        )


# -- the status page -----------------------------------------------------------------------


def _status_page_errors() -> Iterable[django_checks.CheckMessage]:
    permission = getattr(settings, PERMISSION_SETTING, None)
    if permission is not None and not _is_permission_name(permission):
        yield django_checks.Error(
            f"{PERMISSION_SETTING} must be a permission such as 'myapp.view_tasks' "
            f"(app_label.codename), or None for staff users; not {permission!r}",
            hint=f"Set {PERMISSION_SETTING} to 'app_label.codename' or remove it.",
            id=BAD_STATUS_PERMISSION,
        )
    refresh = getattr(settings, REFRESH_SETTING, DEFAULT_REFRESH_S)
    if refresh is not None and (type(refresh) is not int or refresh < 0):
        yield django_checks.Error(
            f"{REFRESH_SETTING} must be a whole number of seconds >= 0 (0 or None: the "
            f"status page does not reload itself); not {refresh!r}",
            hint=f"Set {REFRESH_SETTING} to, e.g., {DEFAULT_REFRESH_S}.",
            id=BAD_STATUS_REFRESH,
        )


def _is_permission_name(value: object) -> bool:
    if not isinstance(value, str):
        return False
    app_label, dot, codename = value.partition(".")
    return bool(app_label and dot and codename) and "." not in codename
