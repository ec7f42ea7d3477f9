"""What a supervisor reads from the journal: new records, re-queue markers, bad lines,
cancel requests.

At start every segment not marked done is read, with the state of every task that has
one (a listing per segment says which), so that tasks a dead supervisor left RUNNING
are found before anything is claimed. Later only the lines appended since are read, on
a wake-up. A record of a served queue that is READY goes to the ready set (its result
file is made ahead, see ``background``); one of another queue to ``unserved``, which says
so when no live supervisor serves that queue; an unreadable line is quarantined and counted.
A new cancel request goes to ``stop_cancelled``, which stops the task if it runs here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from .. import journal
from .committer import Committer
from .ready import ReadySet
from .recovery import UNUSABLE, Recovery

logger = logging.getLogger(__name__)

__all__ = ["Intake"]


class Intake:
    """Reads the journal's new lines and queues the tasks this supervisor serves."""

    def __init__(
        self,
        journal_: journal.Journal,
        *,
        serves: Callable[[str], bool],
        ready: ReadySet,
        recovery: Recovery,
        committer: Committer,
        prepare: Callable[[list[str]], None],
        unserved: Callable[[journal.Record], None],
        stop_cancelled: Callable[[str], None] | None = None,
    ) -> None:
        self._journal = journal_
        self._serves = serves
        self._ready = ready
        self._recovery = recovery
        self._committer = committer
        self._prepare = prepare
        self._to_prepare: list[str] = []  # handed over at the end of each read, at once
        self._unserved = unserved
        self._stop_cancelled = stop_cancelled
        self._tail = journal.SegmentTail(journal_)
        self.quarantined = 0

    def read(self, *, initial: bool = False) -> None:
        """Read new lines (at start: every segment, with the states there are)."""
        with_state: dict[str, frozenset[str] | None] = {}  # per segment, for the start only
        for item in self._tail.read_new():
            if isinstance(item, journal.Quarantined):
                self.quarantine(item)
            elif isinstance(item, journal.Requeue):
                self._on_requeue(item)
            elif isinstance(item, journal.CancelRequest):
                if self._stop_cancelled is not None:
                    self._stop_cancelled(item.id)
            elif self._serves(item.queue_name):
                # A new line has no state yet; at start every state must be looked at.
                state = self._state_at_start(item.id, with_state) if initial else None
                self._consider(item, state)
            else:
                self._unserved(item)
        if self._to_prepare:
            self._prepare(self._to_prepare)
            self._to_prepare = []
        if self._recovery.has_dead:
            # Their tasks' new states must be durable before another supervisor may
            # take their locks and look at those tasks again: while the disk refuses
            # them, the locks are kept, and a later read lets them go.
            self._committer.flush()
            if not self._committer.has_pending():
                self._recovery.release()

    def _state_at_start(
        self, record_id: str, with_state: dict[str, frozenset[str] | None]
    ) -> journal.State | None:
        segment = record_id.partition("-")[0]
        if segment not in with_state:
            try:
                with_state[segment] = self._journal.ids_with_state(segment)
            except journal.JournalError:
                with_state[segment] = None  # read_state says why, task by task
        ids = with_state[segment]
        if ids is not None and record_id not in ids:
            return None  # never claimed; a claim re-reads the state under the lock anyway
        return self._recovery.read_state(record_id)

    def _consider(self, record: journal.Record, state: journal.State | None) -> None:
        if state is None:
            self._to_prepare.append(record.id)
        if state is None or state.status == journal.READY:
            self._ready.push(record, state.run_after if state else None)
        elif state.status == journal.RUNNING and not self._recovery.is_alive(state.owner):
            self._recovery.recover(record)

    def _on_requeue(self, marker: journal.Requeue) -> None:
        """A task is READY again: re-run after an interruption, or re-queued by hand."""
        try:
            record = self._journal.read_record(marker.id)
        except journal.RecordNotFound:
            return
        if not self._serves(record.queue_name):
            self._unserved(record)
            return
        state: journal.State | None = UNUSABLE
        try:
            # A re-queue by hand counts from its marker; the result file may be behind
            # (the command was killed half-way), rarely: then publish it.
            if self._journal.is_behind(marker):
                with self._journal.history_lock():
                    state, _ = self._journal.publish_requeue(marker)
            else:
                state = self._recovery.read_state(marker.id)
        except journal.JournalError:
            state = self._recovery.read_state(marker.id)  # logs why
        except OSError as error:
            logger.error("Cannot re-queue task id=%s: %s", marker.id, error)
        self._consider(record, state)

    def quarantine(self, bad: journal.Quarantined) -> None:
        """Keep a copy of a record that cannot be run with its reason; log it with a count."""
        try:
            is_new = self._journal.quarantine(bad)
        except OSError as error:
            logger.error(
                "Cannot quarantine segment=%s offset=%d: %s", bad.segment, bad.offset, error
            )
            is_new = True
        if not is_new:
            return
        self.quarantined += 1
        if bad.task_path is not None:
            logger.warning(
                "Quarantined task id=%s-%x path=%s: its task does not import (%s; %d "
                "quarantined since start)",
                bad.segment,
                bad.offset,
                bad.task_path,
                bad.reason,
                self.quarantined,
            )
        else:
            logger.warning(
                "Quarantined an unreadable record segment=%s offset=%d reason=%s "
                "(%d quarantined since start)",
                bad.segment,
                bad.offset,
                bad.reason,
                self.quarantined,
            )
