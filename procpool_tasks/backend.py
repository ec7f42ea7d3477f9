"""``ProcPoolBackend``: validate and enqueue tasks into the journal, read their results."""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.db import connections
from django.utils import timezone

from . import compat, journal, sqlite
from .results import TaskNotLoadable, build_task_result, load_task

__all__ = [
    "BackendOptions",
    "InvalidTaskArguments",
    "JournalUnavailable",
    "ProcPoolBackend",
    "UnsafeResult",
]

DEFAULT_JOURNAL_DIRNAME = ".procpool_tasks"


class InvalidTaskArguments(compat.InvalidTask, journal.ValueNotJSON):
    """Arguments that JSON cannot carry; raised by ``enqueue`` before anything is written."""


class JournalUnavailable(OSError):
    """The journal cannot take the task (disk full, read-only, unsafe permissions)."""


class UnsafeResult(compat.TaskResultDoesNotExist, journal.JournalError):
    """A task's result cannot be read safely: a symlink was planted in the journal.

    The framework's does-not-exist error, for code that asks only for that, and a
    ``JournalError`` (an ``OSError``) that says what was found and where.
    """


@dataclass(frozen=True, slots=True, kw_only=True)
class BackendOptions:
    """The backend's ``OPTIONS``, checked."""

    path: Path
    durable: bool = True
    max_attempts: int = 3
    task_timeout: float | None = None
    retention: float | None = None
    sqlite_defaults: bool = True

    @classmethod
    def from_options(cls, alias: str, options: Mapping[str, Any]) -> BackendOptions:
        """Raise ImproperlyConfigured, saying what to set, for anything wrong."""
        where = f"TASKS[{alias!r}]['OPTIONS']"
        known = [option.name for option in dataclasses.fields(cls)]
        unknown = set(options) - set(known)
        if unknown:
            raise ImproperlyConfigured(
                f"{where} has unknown keys {sorted(unknown)}; the keys are "
                f"{', '.join(map(repr, known[:-1]))} and {known[-1]!r}"
            )
        durable = _boolean(where, options, "durable", default=True)
        max_attempts = options.get("max_attempts", 3)
        if type(max_attempts) is not int or max_attempts < 1:
            raise ImproperlyConfigured(
                f"{where}['max_attempts'] must be a whole number >= 1, not {max_attempts!r}"
            )
        task_timeout = options.get("task_timeout")
        if task_timeout is not None and not is_positive_seconds(task_timeout):
            raise ImproperlyConfigured(
                f"{where}['task_timeout'] must be a number of seconds > 0, or None; "
                f"not {task_timeout!r}"
            )
        retention = options.get("retention")
        if retention is not None and not is_positive_seconds(retention):
            raise ImproperlyConfigured(
                f"{where}['retention'] must be a number of seconds > 0, or None; not {retention!r}"
            )
        return cls(
            path=_journal_path(where, options.get("path")),
            durable=durable,
            max_attempts=max_attempts,
            task_timeout=None if task_timeout is None else float(task_timeout),
            retention=None if retention is None else float(retention),
            sqlite_defaults=_boolean(where, options, "sqlite_defaults", default=True),
        )


def _boolean(where: str, options: Mapping[str, Any], key: str, *, default: bool) -> bool:
    value = options.get(key, default)
    if not isinstance(value, bool):
        raise ImproperlyConfigured(f"{where}[{key!r}] must be True or False, not {value!r}")
    return value


def is_positive_seconds(value: object) -> bool:
    """A finite number of seconds > 0 (not a bool)."""
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value > 0
    )


def _journal_path(where: str, path: Any) -> Path:
    if path is None:
        base_dir = getattr(settings, "BASE_DIR", None)
        if base_dir is None:
            raise ImproperlyConfigured(
                f"{where}['path'] is not set and there is no BASE_DIR setting; set "
                f"{where}['path'] to the journal directory"
            )
        return Path(base_dir) / DEFAULT_JOURNAL_DIRNAME
    if not isinstance(path, str | os.PathLike) or not os.fspath(path):
        raise ImproperlyConfigured(f"{where}['path'] must be a directory path, not {path!r}")
    return Path(path)


class ProcPoolBackend(compat.BaseTaskBackend):
    """Tasks go to a journal directory; ``manage.py procpool_worker`` runs them."""

    supports_defer = True
    supports_async_task = True
    supports_get_result = True
    supports_priority = True

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        super().__init__(alias, params)
        self._options_error: ImproperlyConfigured | None = None
        self._options: BackendOptions | None = None
        try:
            self._options = BackendOptions.from_options(alias, self.options)
        except ImproperlyConfigured as error:
            self._options_error = error
        self._journal: journal.Journal | None = None

    @property
    def backend_options(self) -> BackendOptions:
        if self._options is None:
            raise compat.InvalidTaskBackend(str(self._options_error))
        return self._options

    @property
    def journal(self) -> journal.Journal:
        if self._journal is None:
            options = self.backend_options
            self._journal = journal.Journal(options.path, durable=options.durable)
        return self._journal

    # -- enqueue ---------------------------------------------------------------------------

    def enqueue(self, task: Any, args: Any, kwargs: Any) -> Any:
        """Write a READY record durably and return its result.

        Raises InvalidTaskArguments (a subclass of the framework's invalid-task error and
        of TypeError) for arguments JSON cannot carry, and JournalUnavailable when the
        journal cannot be written; in both cases nothing was enqueued.
        """
        self.validate_task(task)
        try:
            json_args = journal.to_json_value(list(args), "args")
            json_kwargs = journal.to_json_value(dict(kwargs), "kwargs")
        except journal.ValueNotJSON as error:
            raise InvalidTaskArguments(
                f"{task.module_path}: {error}; pass an id or plain data instead"
            ) from None
        record = journal.Record(
            id="",
            task_path=task.module_path,
            args=json_args,
            kwargs=json_kwargs,
            priority=task.priority,
            queue_name=task.queue_name,
            backend=self.alias,
            enqueued_at=timezone.now(),
            run_after=task.run_after,
        )
        try:
            record_id = self.journal.append(record)
        except OSError as error:
            raise JournalUnavailable(
                error.errno,
                f"{task.module_path} was not enqueued: the journal cannot be written "
                f"({error.strerror or error})",
                str(self.journal.path),
            ) from error
        result = build_task_result(dataclasses.replace(record, id=record_id), None, task)
        compat.task_enqueued.send(type(self), task_result=result)
        return result

    # -- results ---------------------------------------------------------------------------

    def get_result(self, result_id: str) -> Any:
        """Read a task's result by id: one file, whatever the journal's history."""
        try:
            record = self.journal.read_record(result_id)
        except journal.RecordNotFound:
            raise compat.TaskResultDoesNotExist(result_id) from None
        if record.backend != self.alias:
            raise compat.TaskResultDoesNotExist(result_id)
        try:
            state = self.journal.read_state(result_id)
        except journal.JournalError as error:
            raise UnsafeResult(error.errno, error.strerror, error.filename) from error
        try:
            task = load_task(record)
        except TaskNotLoadable as error:
            raise compat.TaskResultDoesNotExist(f"{result_id}: {error}") from error
        return build_task_result(record, state, task)

    # -- checks ----------------------------------------------------------------------------

    def check(self, **kwargs: Any) -> list[checks.CheckMessage]:
        return [*super().check(**kwargs), *self._check_journal(), *_check_sqlite(self)]

    def _check_journal(self) -> Iterable[checks.CheckMessage]:
        if self._options_error is not None:
            yield checks.Error(
                str(self._options_error),
                hint="Fix the backend's OPTIONS in the TASKS setting.",
                obj=self,
                id="procpool_tasks.E001",
            )
            return
        try:
            self.journal.check_permissions()
        except journal.JournalError as error:
            yield checks.Error(
                f"The journal directory {error.filename} cannot be used safely: {error.strerror}",
                hint="Run chmod 700 on it, or point OPTIONS['path'] at a private directory.",
                obj=self,
                id="procpool_tasks.E002",
            )


def _check_sqlite(backend: ProcPoolBackend) -> Iterable[checks.CheckMessage]:
    """Warn when web processes would share SQLite with tasks under its default settings.

    The worker's own processes get the settings they lack (``sqlite_defaults``); the web
    processes run the project's settings as written.
    """
    for alias in connections:
        missing = sqlite.missing_sqlite_settings(connections.settings[alias])
        if not missing:
            continue
        lines = ", ".join(f"{key!r}: {value!r}" for key, value in missing.items())
        yield checks.Warning(
            f"Database {alias!r} is SQLite without a busy timeout and IMMEDIATE transactions; "
            "web processes that write to it while tasks do will fail with 'database is "
            "locked' (procpool_worker sets these in its own processes).",
            hint=f"Add {lines} to DATABASES[{alias!r}]['OPTIONS']"
            + ("." if sqlite.HAS_TRANSACTION_MODE else "; Django 5.1+ adds 'transaction_mode'."),
            obj=backend,
            id="procpool_tasks.W001",
        )
