"""Cancel tasks that have not finished: READY (deferred or not) and RUNNING ones.

A cancelled task ends FAILED with a ``procpool_tasks.exceptions.TaskCancelled`` error and
never runs again. Each id is cancelled under the journal's claim lock
(``Journal.cancel``):

- READY: its FAILED state is written (synced) there and then; no supervisor claims it;
- RUNNING: a cancel request is made durably; the supervisor running it stops its worker
  process (SIGTERM, then SIGKILL after a grace period), the other processes go on, and
  it records FAILED; a supervisor that died first leaves that to the next one to start.

Finished tasks are refused. A crash half-way leaves each task cancelled or untouched.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from .. import journal as j
from ..backend import ProcPoolBackend, cannot_cancel
from ..journal import history

__all__ = ["Cancelled", "cancel", "unfinished_tasks"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Cancelled:
    """What happened to one id: cancelled (``refused`` is None), or why not."""

    id: str
    task_path: str | None = None
    status: str | None = None  # before the cancel: READY or RUNNING
    worker_id: str | None = None  # RUNNING: the worker running it
    refused: str | None = None

    @property
    def is_running(self) -> bool:
        """Whether its supervisor was asked to stop it (it ends FAILED moments later)."""
        return self.status == j.RUNNING


def cancel(
    backend: ProcPoolBackend, ids: Iterable[str], *, dry_run: bool = False
) -> list[Cancelled]:
    """Cancel each READY or RUNNING task of ``ids``; refuse the others, saying why."""
    if not backend.journal.path.is_dir():  # nothing was ever enqueued: no task to find
        return [
            Cancelled(id=each, refused="there is no task of this id in the journal") for each in ids
        ]
    return [_cancel_one(backend, record_id, dry_run=dry_run) for record_id in ids]


def _cancel_one(backend: ProcPoolBackend, record_id: str, *, dry_run: bool) -> Cancelled:
    try:
        record = backend.journal.read_record(record_id)
    except j.RecordNotFound:
        return Cancelled(id=record_id, refused="there is no task of this id in the journal")
    if not backend.owns(record):
        return Cancelled(id=record_id, refused=f"it belongs to backend {record.backend!r}")
    done = backend.cancel_task(record, dry_run=dry_run)
    if done.pruned:
        return Cancelled(id=record_id, task_path=record.task_path, refused="it was pruned")
    if done.refused:
        return Cancelled(
            id=record_id, task_path=record.task_path, refused=cannot_cancel(done.status)
        )
    before = done.before
    return Cancelled(
        id=record_id,
        task_path=record.task_path,
        status=done.status,
        worker_id=before.worker_ids[-1]
        if done.requested and before and before.worker_ids
        else None,
    )


def unfinished_tasks(
    journal: j.Journal,
    *,
    queues: frozenset[str] | None = None,
    task_path: str | None = None,
    dry_run: bool = False,
) -> Iterator[j.Record]:
    """The READY (deferred or not) and RUNNING tasks of the journal; of some queues, or of
    one task. The summaries it brings up to date are kept, except in a ``dry_run``."""
    if not journal.path.is_dir():
        return  # nothing was ever enqueued
    survey = history.survey_and_keep(journal, dry_run=dry_run)
    for record, state in survey.unfinished:
        if queues is not None and record.queue_name not in queues:
            continue
        if task_path is not None and record.task_path != task_path:
            continue
        if state is None or state.status in (j.READY, j.RUNNING):
            yield record
