"""Hand the READY and deferred tasks of a journal to another Tasks backend.

For a site that outgrew one server: ``procpool_handoff --to rq`` moves the tasks still
waiting here to any configured backend with an ``enqueue`` (django-tasks-rq, django-tasks-db,
...), each with its task path, args, kwargs, priority, queue and ``run_after``. One handoff
runs on a journal at a time (it holds ``handoff.lock`` throughout), and moves one task at a
time:

1. under the history lock, then the claim lock, the task must be READY (or never touched);
   it becomes HANDING_OFF, owned by this handoff, with the target's alias and the moment
   this step began, synced to disk. Supervisors claim only READY tasks: none runs it now;
2. the target's ``enqueue``, through the task itself (``task.using(..., backend=alias)``),
   so that the framework's own validation runs;
3. under the same locks, HANDED_OFF with the target's alias and its id there, synced.
   ``get_result`` of the old id reads the target's result from then on.

A handoff killed anywhere leaves each task READY, HANDING_OFF or HANDED_OFF: nothing is
lost, and a HANDING_OFF task is never run here. The next handoff, which holds the lock
and so knows that the one before is gone, resumes it: the target's finder (``finders``)
says whether step 2 happened, and the task is marked HANDED_OFF with the copy's id or
handed off again. For a target without a finder it is handed off again, so a handoff
killed between 2 and 3 may leave two copies of that one task there.

What the target cannot hold is refused, task by task, and stays READY here: a deferred task
on a backend without ``supports_defer``, a priority on one without ``supports_priority``, a
queue missing from its QUEUES, an async task on one without ``supports_async_task``, and
whatever else its validation refuses. RUNNING tasks finish where they are.
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from inspect import iscoroutinefunction
from typing import Any

from django.utils import timezone
from django.utils.module_loading import import_string

from .. import compat
from .. import journal as j
from ..exceptions import HandoffRefused, HandoffStopped
from ..journal import history
from .finders import finder_for

logger = logging.getLogger(__name__)

#: What a finder can say of a killed handoff's copy, besides its id.
_ABSENT, _UNKNOWN = object(), object()

__all__ = ["HandedOff", "HandoffRefused", "HandoffStopped", "hand_off"]


@dataclass(frozen=True, slots=True, kw_only=True)
class HandedOff:
    """What became of one task: moved to ``backend`` as ``target_id`` (None in a dry run),
    or why not (``refused``)."""

    id: str
    task_path: str
    queue_name: str
    backend: str
    target_id: str | None = None
    refused: str | None = None
    #: Not moved, as a worker here took it meanwhile (it runs here): says so.
    taken: str | None = None
    #: Left HANDING_OFF by a handoff that was killed; ``found``: its copy was there.
    resumed: bool = False
    found: bool = False


def hand_off(
    backend: Any,
    target_alias: str,
    *,
    queues: frozenset[str] | None = None,
    dry_run: bool = False,
) -> Iterator[HandedOff]:
    """Move the READY and deferred tasks of ``backend`` (of ``queues``; None: every one) to
    the backend ``target_alias``, one at a time; yield what became of each.

    Raises HandoffRefused before it moves anything when another handoff runs on the
    journal or the target is no backend to move to, and HandoffStopped when the target's
    ``enqueue`` fails (its server is down, say): that task stays HANDING_OFF, and the next
    handoff finishes its move.
    """
    target = _target(backend, target_alias)
    journal: j.Journal = backend.journal
    if not journal.path.is_dir():
        return  # nothing was ever enqueued
    # A dry run makes no lock file: with none, no handoff runs.
    lock = journal.handoff_lock() if not dry_run or journal.has_handoff_lock() else None
    if lock is not None and not lock.acquire(blocking=False):
        raise HandoffRefused(
            f"another procpool_handoff is running on the journal {journal.path}; wait for "
            "it to finish"
        )
    try:
        mover = _Mover(journal, target, dry_run=dry_run)
        for record, state in _waiting_tasks(journal, backend, queues, dry_run=dry_run):
            yield mover.move(record, state)
    finally:
        if lock is not None:
            lock.release()


def _target(backend: Any, alias: str) -> Any:
    try:
        target = compat.task_backends[alias]
    except compat.InvalidTaskBackend as error:
        raise HandoffRefused(f"--to: {error}") from None
    if alias == backend.alias:
        raise HandoffRefused(f"--to: {alias!r} is the backend the tasks are in")
    target_journal = getattr(target, "journal", None)
    if target_journal is not None and target_journal.path == backend.journal.path:
        raise HandoffRefused(f"--to: backend {alias!r} uses the same journal")
    if not callable(getattr(target, "enqueue", None)):
        raise HandoffRefused(f"--to: backend {alias!r} has no enqueue")
    return target


def _waiting_tasks(
    journal: j.Journal, backend: Any, queues: frozenset[str] | None, *, dry_run: bool
) -> list[tuple[j.Record, j.State | None]]:
    """READY, deferred and HANDING_OFF tasks of the queues, in the order they would run.

    The target gets them in that order, so that a first-in-first-out queue (RQ) runs
    them as this backend would have.
    """
    survey = history.survey_and_keep(journal, dry_run=dry_run)
    waiting = [
        (record, state)
        for record, state in survey.unfinished
        if backend.owns(record)
        and (queues is None or record.queue_name in queues)
        and (state is None or state.status in (j.READY, j.HANDING_OFF))
    ]
    waiting.sort(key=lambda each: (-each[0].priority, _due_at(*each), each[0].enqueued_at))
    return waiting


def _due_at(record: j.Record, state: j.State | None) -> datetime:
    return (state.run_after if state else None) or record.run_after or record.enqueued_at


class _Mover:
    """Moves tasks to one target, each under the protocol of the module's docstring."""

    def __init__(self, journal: j.Journal, target: Any, *, dry_run: bool) -> None:
        self.journal = journal
        self.target = target
        self.dry_run = dry_run
        self.instance = secrets.token_hex(8)

    def move(self, record: j.Record, seen: j.State | None) -> HandedOff:
        outcome = HandedOff(
            id=record.id,
            task_path=record.task_path,
            queue_name=record.queue_name,
            backend=self.target.alias,
        )
        copy: str | object = _ABSENT
        if seen is not None and seen.status == j.HANDING_OFF:
            outcome = dataclasses.replace(outcome, resumed=True)
            copy = self._look_for_copy(record, seen)
            if isinstance(copy, str):
                assert seen.handoff is not None  # noqa: S101 (a finder was asked where)
                if not self.dry_run:
                    self._finish(record, seen, copy)
                return dataclasses.replace(
                    outcome, backend=seen.handoff.backend, target_id=copy, found=True
                )
            if copy is _UNKNOWN and seen.handoff and seen.handoff.backend != self.target.alias:
                return dataclasses.replace(
                    outcome,
                    refused=f"it was being handed off to backend {seen.handoff.backend!r} "
                    "when that handoff stopped, and whether it got there cannot be told; "
                    f"finish that move with procpool_handoff --to {seen.handoff.backend}",
                )
        reason = self._why_not(record, seen)
        if reason is not None:
            if outcome.resumed and copy is _UNKNOWN:
                # It may be there already: READY here, it could run twice.
                reason += "; it stays HANDING_OFF, as it may have reached that backend"
            elif outcome.resumed and not self.dry_run:
                assert seen is not None  # noqa: S101 (a resumed task has its state)
                self._back_to_ready(record, seen)
            return dataclasses.replace(outcome, refused=reason)
        if self.dry_run:
            return outcome
        handing = self._start(record)
        if isinstance(handing, str):
            return dataclasses.replace(outcome, taken=handing)
        task = _task_for(record, handing, self.target)
        try:
            result = task.enqueue(*record.args, **record.kwargs)
        except Exception as error:
            raise HandoffStopped(record.id, self.target.alias, error) from error
        target_id = str(result.id)
        self._finish(record, handing, target_id)
        return dataclasses.replace(outcome, target_id=target_id)

    # -- what the target can hold --------------------------------------------------------

    def _why_not(self, record: j.Record, state: j.State | None) -> str | None:
        target, alias = self.target, self.target.alias
        try:
            registered = import_string(record.task_path)
        except ImportError as error:
            return f"its task does not import ({error})"
        if not isinstance(registered, compat.Task):
            return f"{record.task_path} is not a task (@task)"
        if iscoroutinefunction(registered.func) and not target.supports_async_task:
            return f"it is an async task, which backend {alias!r} cannot run"
        if record.priority != compat.DEFAULT_TASK_PRIORITY and not target.supports_priority:
            return (
                f"it has priority {record.priority}, which backend {alias!r} cannot keep "
                "(it has no priorities)"
            )
        run_after = _run_after(record, state)
        if run_after is not None and not target.supports_defer:
            return (
                f"it is deferred until {run_after.isoformat()}, which backend {alias!r} "
                "cannot hold (it cannot defer tasks)"
            )
        if target.queues and record.queue_name not in target.queues:
            return (
                f"its queue {record.queue_name!r} is not in the QUEUES of backend {alias!r} "
                f"({', '.join(sorted(target.queues))})"
            )
        try:
            _task_for(record, state, target)  # the framework's own validation
        except compat.INVALID_TASK_ERRORS as error:
            return f"backend {alias!r} refuses it: {error}"
        return None

    # -- the protocol ----------------------------------------------------------------------

    def _start(self, record: j.Record) -> j.State | str:
        """READY (or untouched) -> HANDING_OFF, synced; or why not (it ran meanwhile)."""
        with self.journal.history_lock(), self.journal.claim_lock():
            state = self.journal.read_state(record.id)
            if state is None and self.journal.was_pruned(record.id):
                return "it finished and was pruned meanwhile: a worker here took it"
            if state is not None and state.status not in (j.READY, j.HANDING_OFF):
                return f"it is {state.status} now: a worker here took it meanwhile"
            handing = j.State(
                id=record.id,
                status=j.HANDING_OFF,
                version=(state.version if state else 0) + 1,
                worker_ids=state.worker_ids if state else (),
                owner=self.instance,
                started_at=state.started_at if state else None,
                last_attempted_at=state.last_attempted_at if state else None,
                errors=state.errors if state else (),
                run_after=state.run_after if state else None,
                handoff=j.Handoff(backend=self.target.alias, started_at=timezone.now()),
            )
            self.journal.write_state_durably(handing)
        return handing

    def _finish(self, record: j.Record, handing: j.State, target_id: str) -> None:
        """HANDING_OFF -> HANDED_OFF with the target's id, synced."""
        assert handing.handoff is not None  # noqa: S101 (a HANDING_OFF state says where to)
        handed = dataclasses.replace(
            handing,
            status=j.HANDED_OFF,
            version=handing.version + 1,
            owner=None,
            finished_at=timezone.now(),
            handoff=dataclasses.replace(handing.handoff, id=target_id),
        )
        with self.journal.history_lock(), self.journal.claim_lock():
            self.journal.write_state_durably(handed)
        logger.debug(  # the command says so on stdout
            "Task id=%s path=%s queue=%s state=HANDED_OFF backend=%s target_id=%s",
            record.id,
            record.task_path,
            record.queue_name,
            handing.handoff.backend,
            target_id,
        )

    def _look_for_copy(self, record: j.Record, state: j.State) -> str | object:
        """Whether a killed handoff's enqueue reached its target: the copy's id there,
        ``_ABSENT``, or ``_UNKNOWN`` (that backend has no finder, or is gone from TASKS)."""
        handoff = state.handoff
        if handoff is None:  # a hand-edited state: no target to ask
            return _UNKNOWN
        try:
            target = compat.task_backends[handoff.backend]
        except compat.InvalidTaskBackend:
            return _UNKNOWN
        finder = finder_for(target)
        if finder is None:
            if handoff.backend == self.target.alias:
                logger.warning(
                    "Task id=%s was being handed off to backend=%s when that handoff "
                    "stopped; that backend cannot be asked whether it got it, so it is "
                    "handed off again (it may run twice there)",
                    record.id,
                    handoff.backend,
                )
            return _UNKNOWN
        found = finder(target, record, handoff.started_at)
        if found is None:
            logger.info(
                "Task id=%s: the handoff to backend=%s that stopped had not given it "
                "there; handing it off again",
                record.id,
                handoff.backend,
            )
            return _ABSENT
        logger.warning(
            "Task id=%s: the handoff that stopped had given it to backend=%s as %s",
            record.id,
            handoff.backend,
            found,
        )
        return found

    def _back_to_ready(self, record: j.Record, state: j.State) -> None:
        """A resumed task that the target refuses is READY here again, and supervisors
        are told, as a re-queue tells them (its marker is the commit point)."""
        ready = dataclasses.replace(
            state, status=j.READY, version=state.version + 1, owner=None, handoff=None
        )
        with self.journal.history_lock(), self.journal.claim_lock():
            self.journal.append_requeue(record.id, ready)
            self.journal.write_state(ready)


def _run_after(record: j.Record, state: j.State | None) -> datetime | None:
    """When the task may run, if that is still ahead (a retry's backoff wins); else None.

    A time already past defers nothing: the task goes as a READY one, also to a backend
    that cannot defer (and RQ runs it without waiting for its scheduler).
    """
    due = (state.run_after if state else None) or record.run_after
    return due if due is not None and due > timezone.now() else None


def _task_for(record: j.Record, state: j.State | None, target: Any) -> Any:
    """The registered task as the target gets it: its priority, queue and ``run_after``.

    Made with ``dataclasses.replace``, which validates it as ``using`` does (the target's
    own ``validate_task``; raises its invalid-task error), from the registered task: a
    ``run_after`` that has passed must be dropped, which ``using`` cannot do.
    """
    return dataclasses.replace(
        import_string(record.task_path),
        priority=record.priority,
        queue_name=record.queue_name,
        run_after=_run_after(record, state),
        backend=target.alias,
    )
