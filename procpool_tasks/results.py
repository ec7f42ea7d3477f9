"""Turn the journal's records and states into the framework's ``Task`` and ``TaskResult``."""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Any

from django.utils.module_loading import import_string

from . import compat, journal
from .exceptions import TaskNotLoadable


def load_task(record: journal.Record) -> Any:
    """Import the ``Task`` a record names, with the priority, queue and time it was given.

    Raises TaskNotLoadable for anything that is not a framework ``Task``: the worker
    never calls a plain function, class or module attribute named by a record.
    """
    return _task_as_enqueued(
        record.task_path, record.priority, record.queue_name, record.run_after, record.backend
    )


@functools.lru_cache(maxsize=1024)
def _task_as_enqueued(
    task_path: str, priority: int, queue_name: str, run_after: datetime | None, backend: str
) -> Any:
    """The Task of a path, as ``using()`` makes it: cached, as Tasks are immutable and
    ``using()`` validates the task again every time (a third of a short task's cost)."""
    try:
        task = import_string(task_path)
    except ImportError as error:
        raise TaskNotLoadable(f"{task_path!r} cannot be imported: {error}") from error
    if not isinstance(task, compat.Task):
        raise TaskNotLoadable(
            f"{task_path!r} is {journal.a_type_name(task)}, not a Task; only functions "
            "decorated with @task can be enqueued and run"
        )
    try:
        return task.using(
            priority=priority, queue_name=queue_name, run_after=run_after, backend=backend
        )
    except compat.InvalidTask:
        # The settings changed since enqueue (a queue was removed, ...): the record
        # still says what was enqueued, so report the task as it is registered now.
        return task


def build_task_result(record: journal.Record, state: journal.State | None, task: Any) -> Any:
    """The framework's ``TaskResult`` for a record and its latest state (None: READY).

    A task being handed off (HANDING_OFF) reads as READY: it has not run. A HANDED_OFF
    task's result is its new backend's (``ProcPoolBackend.get_result``), never built here.
    """
    state = state or journal.State(id=record.id, status=journal.READY, version=0)
    status = journal.READY if state.status == journal.HANDING_OFF else state.status
    result: Any = compat.TaskResult(
        task=task,
        id=record.id,
        status=compat.TaskResultStatus(status),
        enqueued_at=record.enqueued_at,
        started_at=state.started_at,
        finished_at=state.finished_at,
        last_attempted_at=state.last_attempted_at,
        args=record.args,
        kwargs=record.kwargs,
        backend=record.backend,
        errors=[
            compat.TaskError(
                exception_class_path=error.exception_class_path, traceback=error.traceback
            )
            for error in state.errors
        ],
        worker_ids=list(state.worker_ids),
    )
    if state.status == journal.SUCCESSFUL:
        compat.set_result_field(result, "_return_value", state.return_value)
    return result
