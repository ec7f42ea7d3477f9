"""``ProcPoolBackend``: validate and enqueue tasks into the journal, read their results,
cancel them."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from functools import partial
from typing import Any

from asgiref.sync import sync_to_async
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction
from django.utils import timezone

from . import checks as system_checks
from . import compat, journal, signals
from .exceptions import (
    CancelRefused,
    HandedOffResultDoesNotExist,
    InvalidTaskArguments,
    JournalUnavailable,
    TaskNotLoadable,
    UnsafeResult,
)
from .journal import Cancelling, Record
from .options import BackendOptions, is_positive_seconds
from .portability import PORTABLE_ONLY  # noqa: F401 (refuses Windows with a clear error)
from .results import build_task_result, load_task
from .task import ProcPoolTask

__all__ = [
    "BackendOptions",
    "HandedOffResultDoesNotExist",
    "InvalidTaskArguments",
    "JournalUnavailable",
    "ProcPoolBackend",
    "UnsafeResult",
    "cannot_cancel",
    "is_positive_seconds",
]

logger = logging.getLogger(__name__)


class ProcPoolBackend(compat.BaseTaskBackend):
    """Tasks go to a journal directory; ``manage.py procpool_worker`` runs them."""

    supports_defer = True
    supports_async_task = True
    supports_get_result = True
    supports_priority = True
    #: Takes ``@task(max_attempts=..., backoff=..., timeout=..., retry=...)`` (Django 6.1).
    task_class = ProcPoolTask

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        super().__init__(alias, params)
        self._options_error: ImproperlyConfigured | None = None
        self._options: BackendOptions | None = None
        try:
            self._options = BackendOptions.from_options(alias, self.options)
        except ImproperlyConfigured as error:
            self._options_error = error
        self._journal: journal.Journal | None = None

    def __str__(self) -> str:
        # How system checks name it: "TASKS['default']", not an object address.
        return f"TASKS[{self.alias!r}]"

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
        journal cannot be written; in both cases nothing was enqueued. A task enqueued on
        commit inside a transaction is written when the transaction commits (see
        ``_enqueue_on_commit``).
        """
        self.validate_task(task)
        record = self._record(task, args, kwargs)
        if self.backend_options.for_task(task.module_path).enqueue_on_commit:
            connection = transaction.get_connection()
            if connection.in_atomic_block:
                return self._enqueue_on_commit(connection, task, record)
        try:
            record_id = self.journal.append(record)
        except OSError as error:
            raise self._unavailable(task, error) from error
        result = build_task_result(dataclasses.replace(record, id=record_id), None, task)
        compat.task_enqueued.send(type(self), task_result=result)
        return result

    def _record(self, task: Any, args: Any, kwargs: Any) -> Record:
        try:
            json_args = journal.to_json_value(list(args), "args")
            json_kwargs = journal.to_json_value(dict(kwargs), "kwargs")
        except journal.ValueNotJSON as error:
            raise InvalidTaskArguments(
                f"{task.module_path}: {error}; pass an id or plain data instead"
            ) from None
        options = task.record_options() if isinstance(task, ProcPoolTask) else None
        try:
            json_options = journal.to_json_value(options, "@task(...) options")
        except journal.ValueNotJSON as error:
            raise compat.InvalidTask(f"{task.module_path}: {error}") from None
        return Record(
            id="",
            task_path=task.module_path,
            args=json_args,
            kwargs=json_kwargs,
            priority=task.priority,
            queue_name=task.queue_name,
            backend=self.alias,
            enqueued_at=timezone.now(),
            run_after=task.run_after,
            options=json_options or None,
        )

    def _enqueue_on_commit(self, connection: Any, task: Any, record: Record) -> Any:
        """Give the task its id now; write it when the outermost transaction commits.

        Nothing is written if the transaction (or the savepoint around this enqueue) rolls
        back: Django drops the on-commit callback, and the id's place in the journal is
        filled with a void line. ``task_enqueued`` is sent once the record is written.
        """
        write = _WriteOnCommit(self, task)
        try:
            write.reservation = self.journal.reserve(
                record, write, owner=connection, in_transaction=partial(_is_held, connection)
            )
        except OSError as error:
            raise self._unavailable(task, error) from error
        transaction.on_commit(write, using=connection.alias)
        reserved = dataclasses.replace(record, id=write.reservation.id)
        return build_task_result(reserved, None, task)

    def _unavailable(self, task: Any, error: OSError) -> JournalUnavailable:
        return JournalUnavailable(
            error.errno,
            f"{task.module_path} was not enqueued: the journal cannot be written "
            f"({error.strerror or error})",
            str(self.journal.path),
        )

    # -- results ---------------------------------------------------------------------------

    def get_result(self, result_id: str) -> Any:
        """Read a task's result by id: one file, whatever the journal's history.

        Raises the framework's TaskResultDoesNotExist for an id this backend did not
        issue, a pruned task, and a task enqueued on commit whose transaction has not
        committed (yet, or ever). A task handed off to another backend
        (``procpool_handoff``) returns that backend's result, by its id there; when that
        backend has none, HandedOffResultDoesNotExist (a TaskResultDoesNotExist) says
        where it went.
        """
        try:
            record = self.journal.read_record(result_id)
        except journal.RecordNotFound:
            raise compat.TaskResultDoesNotExist(self._missing(result_id)) from None
        if not self.owns(record):
            raise compat.TaskResultDoesNotExist(result_id)
        record = dataclasses.replace(record, backend=self.alias)  # under a former alias
        try:
            state = self.journal.read_state(result_id)
        except journal.JournalError as error:
            raise UnsafeResult(error.errno, error.strerror, error.filename) from error
        if state is None and self.journal.was_pruned(result_id):
            raise compat.TaskResultDoesNotExist(f"{result_id}: pruned")
        if state is not None and state.status == journal.HANDED_OFF:
            return _handed_off_result(result_id, state)
        try:
            task = load_task(record)
        except TaskNotLoadable as error:
            raise compat.TaskResultDoesNotExist(f"{result_id}: {error}") from error
        return build_task_result(record, state, task)

    # -- cancel ----------------------------------------------------------------------------

    def cancel(self, result_id: str) -> Any:
        """Cancel a READY (deferred or not) or RUNNING task; return its result as it is now.

        A READY task is FAILED on return, with a ``TaskCancelled`` error, and never runs.
        A RUNNING task's cancel is durable on return, its result still RUNNING: its
        supervisor stops its worker process (SIGTERM, SIGKILL after a grace period) and
        marks it FAILED with ``TaskCancelled`` moments later (``refresh()`` shows it), or,
        if that supervisor is gone, the next one to start does; it never runs again.

        Raises CancelRefused for a task that finished (or is being handed off), and the
        framework's TaskResultDoesNotExist for an id this backend has no task of.
        """
        try:
            record = self.journal.read_record(result_id)
        except journal.RecordNotFound:
            raise compat.TaskResultDoesNotExist(self._missing(result_id)) from None
        if not self.owns(record):
            raise compat.TaskResultDoesNotExist(result_id)
        done = self.cancel_task(record)
        if done.pruned:
            raise compat.TaskResultDoesNotExist(f"{result_id}: pruned")
        if done.refused:
            raise CancelRefused(result_id, done.status, cannot_cancel(done.status))
        return self.get_result(result_id)

    async def acancel(self, result_id: str) -> Any:
        """See ``cancel``."""
        return await sync_to_async(self.cancel, thread_sensitive=True)(result_id)

    def cancel_task(self, record: Record, *, dry_run: bool = False) -> Cancelling:
        """Cancel the task of one of this backend's records (``Journal.cancel``); say what
        was done. ``task_finished`` is sent for a task cancelled before it ran; a RUNNING
        task's supervisor sends it once it stopped the task."""
        done = self.journal.cancel(record.id, dry_run=dry_run)
        if done.after is not None and not dry_run:
            try:
                result = build_task_result(record, done.after, load_task(record))
            except TaskNotLoadable:
                return done  # no Task to report it with
            errors = done.after.errors
            signals.send_finished_with(type(self), result, errors[-1] if errors else None)
        return done

    def owns(self, record: Record) -> bool:
        """Whether a record of the journal is this backend's: enqueued under its alias, or
        under its ``former_alias``."""
        return record.backend in (self.alias, self.backend_options.former_alias)

    def _missing(self, result_id: str) -> str:
        """What to say of an id with no record: a transaction may still hold it."""
        with contextlib.suppress(Exception):
            if self.journal.is_reserved(result_id):
                return (
                    f"{result_id}: enqueued on commit; it exists once the transaction "
                    "commits, and never if it rolls back"
                )
        return result_id

    # -- checks ----------------------------------------------------------------------------

    def check(self, **kwargs: Any) -> list[checks.CheckMessage]:
        return [
            *super().check(**kwargs),
            *system_checks.check_backend(self),
        ]


def cannot_cancel(status: str) -> str:
    """Why a task of this status cannot be cancelled."""
    return f"it is {status}; only READY and RUNNING tasks can be cancelled"


class _WriteOnCommit:
    """The on-commit callback of one task enqueued on commit; see ``_enqueue_on_commit``.

    Only Django's list of on-commit callbacks holds it, so that it is garbage the moment
    a rollback drops it: the journal then knows that the task's place is void.
    """

    def __init__(self, backend: ProcPoolBackend, task: Any) -> None:
        self.backend = backend
        self.task = task
        self.reservation: journal.Reservation | None = None

    def __call__(self) -> None:
        assert self.reservation is not None  # noqa: S101 (set before registering)
        backend = self.backend
        try:
            backend.journal.write_reserved(self.reservation)
        except OSError as error:
            raise backend._unavailable(self.task, error) from error
        record = backend.journal.read_record(self.reservation.id)
        result = build_task_result(record, None, self.task)
        compat.task_enqueued.send(type(backend), task_result=result)


def _handed_off_result(result_id: str, state: journal.State) -> Any:
    """The result of a HANDED_OFF task: its new backend's, by its id there.

    Raises HandedOffResultDoesNotExist, naming where it went, when that backend is no longer
    configured, cannot look results up, or has none of that id (pruned or expired there).
    """
    target, target_id = _handoff_target(result_id, state)
    try:
        return target.get_result(target_id)
    except NotImplementedError:
        raise _cannot_look_up(result_id, target.alias, target_id) from None
    except compat.RESULT_DOES_NOT_EXIST_ERRORS as error:
        raise _not_there(result_id, target.alias, target_id) from error


def _handoff_target(result_id: str, state: journal.State) -> tuple[Any, str]:
    handoff = state.handoff
    if handoff is None or handoff.id is None:  # a hand-edited state: say what is known
        raise compat.TaskResultDoesNotExist(f"{result_id}: handed off, but not said where")
    try:
        return compat.task_backends[handoff.backend], handoff.id
    except compat.InvalidTaskBackend:
        raise HandedOffResultDoesNotExist(
            result_id, handoff.backend, handoff.id, "that backend is not in TASKS any more"
        ) from None


def _cannot_look_up(result_id: str, alias: str, target_id: str) -> HandedOffResultDoesNotExist:
    return HandedOffResultDoesNotExist(
        result_id, alias, target_id, "that backend cannot look results up"
    )


def _not_there(result_id: str, alias: str, target_id: str) -> HandedOffResultDoesNotExist:
    return HandedOffResultDoesNotExist(
        result_id,
        alias,
        target_id,
        "that backend has no result of that id (any more: pruned there, or expired)",
    )


def _is_held(connection: Any, reservation: journal.Reservation) -> bool:
    """Whether the open transaction of ``connection`` holds the reservation's callback."""
    callback = reservation.callback()
    return callback is not None and any(
        registered is callback for _, registered, *_ in getattr(connection, "run_on_commit", ())
    )
