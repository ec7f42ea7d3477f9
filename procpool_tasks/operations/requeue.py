"""Run FAILED tasks again: a new attempt of the same task id.

A caller holding the old ``TaskResult`` sees the new outcome with ``refresh()``; earlier
errors stay in ``errors`` and ``worker_ids`` grows with the new attempt. Each id is
re-queued wholly or not at all:

1. under the history lock, then the claim lock (no supervisor claims meanwhile), the
   task's state must be FAILED;
2. its segment's summary is deleted, so that no count keeps it as FAILED;
3. a re-queue marker carrying the READY state is appended durably: the commit point, and
   what wakes the supervisors;
4. the READY state is appended to the task's result file;
5. once every lock is released, the framework's ``task_enqueued`` is sent for it, with the
   same id and the READY result ``get_result`` returns: a new attempt, as after a retry.

A crash before 3 leaves the task FAILED (and its summary to be computed again); after 3,
whoever reads the marker first (a supervisor, a history pass) publishes its state if 4
did not happen.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace

from django.utils import timezone

from .. import compat, signals
from .. import journal as j
from ..exceptions import TaskNotLoadable
from ..journal import history
from ..results import build_task_result, load_task

__all__ = ["Requeued", "failed_tasks", "requeue"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Requeued:
    """What happened to one id: re-queued (``refused`` is None), or why not."""

    id: str
    task_path: str | None = None
    attempt: int = 0  # the attempt it runs as
    refused: str | None = None


def requeue(
    journal: j.Journal, ids: Iterable[str], *, backend_alias: str, dry_run: bool = False
) -> list[Requeued]:
    """Re-queue each FAILED task of ``ids``; refuse the others, saying why."""
    if not journal.path.is_dir():  # nothing was ever enqueued: no task to find
        return [
            Requeued(id=each, refused="there is no task of this id in the journal") for each in ids
        ]
    outcomes = []
    requeued: list[tuple[j.Record, j.State]] = []
    with journal.history_lock():
        for record_id in ids:
            outcome, done = _requeue_one(journal, record_id, backend_alias, dry_run=dry_run)
            outcomes.append(outcome)
            if done is not None:
                requeued.append(done)
    # Not under the locks: a receiver that writes to a database must not hold up claims.
    for record, state in requeued:
        _announce(record, state, backend_alias)
    return outcomes


def _requeue_one(
    journal: j.Journal, record_id: str, alias: str, *, dry_run: bool
) -> tuple[Requeued, tuple[j.Record, j.State] | None]:
    """Re-queue one id (or refuse it); with the READY state written, to announce."""
    try:
        record = journal.read_record(record_id)
    except j.RecordNotFound:
        return Requeued(id=record_id, refused="there is no task of this id in the journal"), None
    if record.backend != alias:
        return Requeued(id=record_id, refused=f"it belongs to backend {record.backend!r}"), None
    with journal.claim_lock():
        state = journal.read_state(record_id)
        if state is None and journal.was_pruned(record_id):
            refused = "it was pruned"
            return Requeued(id=record_id, task_path=record.task_path, refused=refused), None
        if state is None or state.status != j.FAILED:
            return Requeued(
                id=record_id,
                task_path=record.task_path,
                refused=f"it is {state.status if state else j.READY}; only FAILED tasks can "
                "be re-queued",
            ), None
        again = replace(
            state,
            status=j.READY,
            version=state.version + 1,
            owner=None,
            finished_at=None,
            return_value=None,
            run_after=timezone.now(),  # READY since now: ordered, and aged, from here
        )
        if not dry_run:
            journal.remove_summary(j.parse_id(record_id)[0])
            # A cancel left behind (the task ended before its cancel stopped it) must not
            # cancel the new attempt: gone before the marker, the re-queue's commit point.
            journal.remove_cancel_request(record_id)
            journal.append_requeue(record_id, again)
            journal.write_state(again)
    requeued = Requeued(id=record_id, task_path=record.task_path, attempt=len(state.worker_ids) + 1)
    return requeued, None if dry_run else (record, again)


def _announce(record: j.Record, state: j.State, alias: str) -> None:
    """Send ``task_enqueued`` for a re-queued task: its id, READY, as ``get_result`` reads it."""
    try:
        task = load_task(record)
        sender = type(compat.task_backends[alias])
    except (TaskNotLoadable, compat.InvalidTaskBackend):
        return  # no Task (or backend) to report it with; it runs all the same
    signals.send_enqueued(sender, build_task_result(record, state, task))


def failed_tasks(
    journal: j.Journal,
    *,
    queues: frozenset[str] | None = None,
    task_path: str | None = None,
    dry_run: bool = False,
) -> Iterator[j.Record]:
    """The FAILED tasks of the journal, oldest segment first; of some queues or one task.

    Reads only the segments whose summaries count failures (and those without one). The
    summaries it brings up to date are kept, except in a ``dry_run``, which writes nothing.
    """
    if not journal.path.is_dir():
        return  # nothing was ever enqueued
    survey = history.survey_and_keep(journal, dry_run=dry_run)
    for segment, summary in survey.summaries.items():
        failures = sum(by_status.get(j.FAILED, 0) for by_status in summary.counts.values())
        if not failures:
            continue
        for item in j.SegmentTail(journal).read_segment(segment):
            if not isinstance(item, j.Record):
                continue
            if queues is not None and item.queue_name not in queues:
                continue
            if task_path is not None and item.task_path != task_path:
                continue
            state = journal.read_state(item.id)
            if state is not None and state.status == j.FAILED:
                yield item
