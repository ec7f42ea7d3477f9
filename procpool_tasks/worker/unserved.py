"""READY tasks of queues that no live supervisor serves: noticed, and said once per queue.

A worker started with a narrower ``--queue-name`` than the tasks need would leave them
READY for ever, silently. The intake hands over each record of a queue its supervisor does
not serve (``note``: a set lookup, and nothing kept for a queue another live supervisor
serves). At each heartbeat (``check``) the supervisor reads the heartbeats, only while it
keeps something or others serve queues it does not; for each queue that no live
supervisor serves, it counts the kept tasks that are still READY and due (one listing of a
results directory per segment, a state read only for a task that has a result file) and
logs a WARNING with the flag that serves it. A queue is forgotten once warned about.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection

from django.utils import timezone

from .. import journal
from ..journal.heartbeats import Heartbeat, serve_flags

logger = logging.getLogger(__name__)

__all__ = ["UnservedQueues"]


class UnservedQueues:
    """The READY tasks of the queues a supervisor does not serve, until someone does."""

    def __init__(
        self,
        journal_: journal.Journal,
        *,
        backend_alias: str,
        known_queues: Collection[str],
        served: frozenset[str],
    ) -> None:
        self._journal = journal_
        self._alias = backend_alias
        self._known = known_queues
        self._served = served
        #: Per queue no live supervisor served at the last look: task id -> due (epoch s).
        self._kept: dict[str, dict[str, float]] = {}
        self._served_elsewhere: frozenset[str] = frozenset()
        self._all_served_elsewhere = False  # a live supervisor serves '*'
        self._warned: set[str] = set()

    def note(self, record: journal.Record) -> None:
        """A record of a queue this supervisor does not serve; READY, as far as it knows."""
        queue = record.queue_name
        if self._all_served_elsewhere or queue in self._served_elsewhere or queue in self._warned:
            return
        due_at = (record.run_after or record.enqueued_at).timestamp()
        self._kept.setdefault(queue, {})[record.id] = due_at

    def look(self) -> None:
        """Read which queues other live supervisors serve; a failure only logs."""
        beat_now = timezone.now()  # naive without USE_TZ, as heartbeats are written then
        try:
            beats = [Heartbeat.from_json(data) for data in self._journal.read_heartbeats()]
        except OSError as error:
            logger.debug("Cannot read the heartbeats: %s", error)
            return
        live = [
            beat
            for beat in beats
            if beat is not None and beat.backend == self._alias and beat.is_live(beat_now)
        ]
        self._all_served_elsewhere = any(beat.queues is None for beat in live)
        self._served_elsewhere = frozenset(queue for beat in live for queue in (beat.queues or ()))

    def check(self) -> None:
        """Warn once about each queue with READY tasks that no live supervisor serves."""
        if not (self._kept or self._served_elsewhere or self._all_served_elsewhere):
            return  # nothing waits, and no look can change what ``note`` keeps
        self.look()
        now = time.time()
        for queue in sorted(self._kept):
            kept = self._kept[queue]
            if self._all_served_elsewhere or queue in self._served_elsewhere:
                del self._kept[queue]
                continue
            try:
                ready = self._count_ready(kept, now)
            except OSError as error:
                logger.debug("Cannot read the states of queue=%s: %s", queue, error)
                continue
            if ready:
                logger.warning(
                    "%d READY task(s) wait in queue=%s, which no live supervisor serves "
                    "(this worker serves queues=%s); serve it with %s",
                    ready,
                    queue,
                    ",".join(sorted(self._served)),
                    serve_flags(queue, self._served, self._known),
                )
                self._warned.add(queue)
            if ready or not kept:
                del self._kept[queue]

    def _count_ready(self, kept: dict[str, float], now: float) -> int:
        """How many of ``kept`` are READY and due; those that ended or run are dropped."""
        with_state: dict[str, frozenset[str]] = {}
        ready = 0
        for record_id, due_at in list(kept.items()):
            if due_at > now:
                continue  # deferred: looked at again once due
            segment = record_id.partition("-")[0]
            if segment not in with_state:
                with_state[segment] = self._journal.ids_with_state(segment)
            has_state = record_id in with_state[segment]
            state = self._journal.read_state(record_id) if has_state else None
            if state is not None and state.status != journal.READY:
                del kept[record_id]  # claimed, or ended, by a supervisor that served it
            elif state is not None and state.run_after and state.run_after.timestamp() > now:
                kept[record_id] = state.run_after.timestamp()  # a retry's backoff
            else:
                ready += 1
        return ready
