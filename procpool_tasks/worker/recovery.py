"""Supervisors that died: found by their free instance lock, their tasks taken over.

Every live supervisor holds ``workers/<instance>.lock``. A supervisor that finds one it
can take knows that instance died: holding the lock, it alone replays the dead one's WAL
(its finished states that were synced but perhaps not published) and re-queues, as a new
attempt, or fails after ``max_attempts``, the tasks the dead one left RUNNING
(``Outcomes.rerun_or_fail``), or fails those whose cancel was asked for. Once those states
are committed it lets the lock, the WAL and the heartbeat go. Supervisors that died idle
are cleaned up the same way at start.
"""

from __future__ import annotations

import logging

import filelock

from .. import journal
from . import states
from .outcomes import Outcomes

logger = logging.getLogger(__name__)

__all__ = ["UNUSABLE", "Recovery"]

#: Stands for a state that cannot be read safely: neither READY nor recoverable.
UNUSABLE = journal.State(id="", status="UNUSABLE", version=0)


class Recovery:
    """Tells live supervisors from dead ones and takes over the dead ones' tasks."""

    def __init__(self, journal_: journal.Journal, instance: str, outcomes: Outcomes) -> None:
        self._journal = journal_
        self._instance = instance
        self._outcomes = outcomes
        self._dead: dict[str, filelock.BaseFileLock] = {}
        self._alive: set[str] = set()

    def find_dead(self) -> None:
        """Look at every supervisor's lock, not only those with a task left RUNNING.

        Otherwise the lock file and result log of one that died idle stay forever.
        """
        for instance in self._journal.supervisor_instances():
            self.is_alive(instance)

    @property
    def has_dead(self) -> bool:
        return bool(self._dead)

    def is_alive(self, instance: str | None) -> bool:
        if instance is None or instance in self._dead:
            return False
        if instance == self._instance or instance in self._alive:
            return True
        if not journal.is_instance_name(instance):
            # Not a name we give (a damaged or forged state): no lock file can be its,
            # and it must never become a path outside the journal.
            return False
        if not self._journal.has_worker_lock(instance):
            return False
        return self._take_over_if_dead(instance)

    def _take_over_if_dead(self, instance: str) -> bool:
        lock = self._journal.worker_lock(instance)
        try:
            lock.acquire(blocking=False)
        except filelock.Timeout:
            self._alive.add(instance)
            return True
        except OSError as error:
            # A planted symlink, say: never recover (and so perhaps re-run) its tasks.
            logger.error("Cannot tell whether supervisor instance=%s is alive: %s", instance, error)
            self._alive.add(instance)
            return True
        # It died, and we hold its lock now: no other supervisor recovers its tasks.
        self._dead[instance] = lock
        replayed = journal.replay_result_log(self._journal, instance)
        logger.warning(
            "Supervisor instance=%s died; recovering its tasks (%d finished states replayed)",
            instance,
            replayed,
        )
        return False

    def recover(self, record: journal.Record) -> None:
        """Re-queue (or fail, after max_attempts) a task whose supervisor died."""
        if self._outcomes.is_pending(record.id):
            return  # recovered already; its new state is on its way to the disk
        with self._journal.claim_lock():
            state = self.read_state(record.id)
            if state is None or state.status != journal.RUNNING or self.is_alive(state.owner):
                return
            worker = state.worker_ids[-1] if state.worker_ids else "?"
            if self._journal.has_cancel_request(record.id):
                self._outcomes.cancel(record, state, states.cancelled_unsupervised(worker))
                return
            error = states.error(
                states.TaskInterrupted,
                f"The worker {worker} stopped before the task finished (supervisor killed, "
                "or stopped at once)",
            )
            self._outcomes.rerun_or_fail(record, state, error)

    def release(self) -> None:
        """Let the dead supervisors go; their recovered states must be committed first."""
        for instance, lock in self._dead.items():
            journal.remove_result_log(self._journal, instance)
            self._journal.remove_heartbeat(instance)
            lock.release()
            self._journal.remove_worker_lock(instance)
        self._dead.clear()

    def read_state(
        self, record_id: str, file: journal.ResultFile | None = None
    ) -> journal.State | None:
        """A task's state (read through ``file`` if given); UNUSABLE (logged) when a
        symlink was planted for its file."""
        try:
            return self._journal.read_state(record_id) if file is None else file.read_state()
        except journal.JournalError as error:
            logger.error("Task id=%s skipped: %s (%s)", record_id, error.strerror, error.filename)
            return UNUSABLE
