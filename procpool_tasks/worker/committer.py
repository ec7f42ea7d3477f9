"""Group commit of finished states, off the supervisor's main thread.

A finished state counts once it is durable: it is appended to the supervisor's WAL,
synced, and only then appended to the task's result file, where ``get_result`` sees it
(``journal.ResultLog``). One sync for every state that finished since the last one began:
while the disk syncs a group, the main thread goes on collecting outcomes and handing out
tasks, and what finishes meanwhile forms the next group. A crash before a group's sync
runs its tasks again (they were never reported finished); after it, a supervisor that
starts replays the WAL.

A write that fails (a full disk) keeps its states, in order, and is tried again every
``RETRY_S`` until the disk has room. The main thread learns what was committed from
``committed()`` after a wake-up, and acts on it only then: a task re-queued for a retry is
queued again, and ``task_finished`` is sent for a FAILED state the supervisor decided.
"""

from __future__ import annotations

import logging
import threading

from .. import journal
from .wakeups import WakePipe

logger = logging.getLogger(__name__)

__all__ = ["Committer"]

#: How long a failed write waits before it is tried again.
RETRY_S = 0.5


class Committer:
    """A thread that makes queued states durable in groups; see the module docstring."""

    def __init__(self, result_log: journal.ResultLog, wake: WakePipe) -> None:
        self._log = result_log
        self._wake = wake
        self._changed = threading.Condition()
        self._queued: list[journal.State] = []
        self._writing = 0  # states taken by the thread, not yet committed
        self._done: list[journal.State] = []
        self._stopping = False
        self._give_up_on_failure = False
        self.failing = False
        self._thread = threading.Thread(target=self._run, name="procpool-commit", daemon=True)
        self._thread.start()

    def submit(self, states: list[journal.State]) -> None:
        """Queue states for the next group (in this order)."""
        if not states:
            return
        with self._changed:
            self._queued.extend(states)
            self._changed.notify()

    def committed(self) -> list[journal.State]:
        """The states made durable and published since the last call, in order."""
        with self._changed:
            done, self._done = self._done, []
        return done

    def is_busy(self) -> bool:
        """Whether a state submitted is not yet committed (or not yet taken back)."""
        with self._changed:
            return bool(self._queued or self._writing or self._done)

    def flush(self) -> None:
        """Wait until everything submitted so far is committed (or failing)."""
        with self._changed:
            self._changed.wait_for(lambda: not (self._queued or self._writing) or self.failing)

    def stop(self, *, wait_for_disk: bool) -> list[journal.State]:
        """Commit what is queued and stop; return the states that could not be written.

        Without ``wait_for_disk`` a failing write is not tried again (a forced stop).
        """
        with self._changed:
            self._stopping = True
            self._give_up_on_failure = not wait_for_disk
            self._changed.notify()
        self._thread.join()
        return list(self._queued)

    def _run(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: self._queued or self._stopping)
                if not self._queued:
                    return
                group, self._queued = self._queued, []
                self._writing = len(group)
            committed = self._commit(group)
            with self._changed:
                self._writing = 0
                if committed:
                    self._done.extend(group)
                else:
                    self._queued[:0] = group  # tried again, first
                    if self._give_up_on_failure:
                        return
                self._changed.notify_all()
            if committed:
                self._wake.wake()
            else:
                with self._changed:
                    self._changed.wait(RETRY_S)

    def _commit(self, group: list[journal.State]) -> bool:
        try:
            self._log.commit(group)
        except OSError as error:
            if not self.failing:
                logger.error(
                    "Cannot write %d result(s) to the journal (%s); retrying in %ss",
                    len(group),
                    error,
                    RETRY_S,
                )
            self.failing = True
            return False
        if self.failing:
            logger.warning("Results are written to the journal again")
        self.failing = False
        return True
