"""The tasks a supervisor may run: READY ones in priority order, and those not due yet.

Highest ``priority`` first; within a priority, the earliest ``run_after`` (or enqueue
time) first. A task whose ``run_after`` is in the future waits in a second heap, ordered
by that time, until it is due. The supervisor takes at most one task per idle process
from here (and one to queue behind each busy process running a short task, which it takes
back when a better one is due: ``dispatch``), so a high-priority task enqueued late waits
for one running task at most.
"""

from __future__ import annotations

import heapq
import itertools
import time
from datetime import datetime

from .. import journal

__all__ = ["ReadySet"]


class ReadySet:
    """READY tasks by priority, and the ones waiting for their time, each queued once."""

    def __init__(self) -> None:
        self._order = itertools.count()
        self._ready: list[tuple[int, float, int, journal.Record]] = []
        self._waiting: list[tuple[float, int, journal.Record]] = []
        self._queued: set[str] = set()

    def push(self, record: journal.Record, run_after: datetime | None = None) -> None:
        """Queue a READY task; ``run_after`` (a retry's backoff) stands for the record's."""
        if record.id in self._queued:
            return
        self._queued.add(record.id)
        due_at = (run_after or record.run_after or record.enqueued_at).timestamp()
        if due_at > time.time():
            heapq.heappush(self._waiting, (due_at, next(self._order), record))
        else:
            self._push_ready(record, due_at)

    def _push_ready(self, record: journal.Record, due_at: float) -> None:
        heapq.heappush(self._ready, (-record.priority, due_at, next(self._order), record))

    def take(self, count: int) -> list[journal.Record]:
        """Up to ``count`` due tasks, best first; they leave the set."""
        self._release_due()
        taken = [heapq.heappop(self._ready)[-1] for _ in range(min(count, len(self._ready)))]
        self._queued.difference_update(record.id for record in taken)
        return taken

    def best_key(self) -> tuple[int, float] | None:
        """The order of the best due task (as ``order_of``); None if none is due."""
        self._release_due()
        if not self._ready:
            return None
        negated_priority, due_at, _, _ = self._ready[0]
        return negated_priority, due_at

    @staticmethod
    def order_of(record: journal.Record) -> tuple[int, float]:
        """Where a task sorts: lower first (a retry's backoff aside)."""
        return -record.priority, (record.run_after or record.enqueued_at).timestamp()

    def _release_due(self) -> None:
        now = time.time()
        while self._waiting and self._waiting[0][0] <= now:
            due_at, _, record = heapq.heappop(self._waiting)
            self._push_ready(record, due_at)

    def has_due(self) -> bool:
        return bool(self._ready) or bool(self._waiting and self._waiting[0][0] <= time.time())

    def seconds_to_next_due(self) -> float | None:
        """How long until a waiting task is due; None when none waits."""
        if not self._waiting:
            return None
        return max(0.0, self._waiting[0][0] - time.time())

    def waiting_ids(self) -> set[str]:
        return {record.id for _, _, record in self._waiting}
