"""What a supervisor decides about a task that stopped running, and when it counts.

Every decision is a new state handed to the committer (``committer``): the task's own
outcome, a retry after its backoff, a re-run after an interruption, FAILED when its
process died or its attempts ran out, or READY again, no attempt made, when it never
started or a code reload stopped it. Nothing is
acted on before its state is durable: a task re-queued is queued again (here, and for
the other supervisors by a re-queue marker), and the framework's signal is sent, only once
``committed`` hands the state back: ``task_finished`` for a FAILED state the supervisor
decided, ``task_enqueued`` (same id, READY) for a task that started and runs again. The
task's own outcome was announced by its worker process; a claim that never started
announces nothing, as nothing said it started.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from django.utils import timezone

from .. import journal, logs, signals
from ..exceptions import TaskNotLoadable
from ..options import RetryPolicy, TaskOptions
from ..results import build_task_result, load_task
from . import child, states
from .committer import Committer
from .ready import ReadySet

logger = logging.getLogger(__name__)

__all__ = ["Outcomes"]


class Outcomes:
    """Turns what happened to tasks into states, and acts on them once committed."""

    def __init__(
        self,
        journal_: journal.Journal,
        committer: Committer,
        ready: ReadySet,
        *,
        options_for: Callable[[journal.Record], TaskOptions],
        sender: Any,
    ) -> None:
        self._journal = journal_
        self._committer = committer
        self._ready = ready
        self._options_for = options_for  # the task's retry policy, timeout, max_attempts
        self._sender = sender  # the backend's class, for task_finished
        self._records: dict[str, journal.Record] = {}  # of states not yet committed
        #: Ids whose end is ours to announce: task_finished for FAILED, task_enqueued for READY.
        self._announce: set[str] = set()
        #: Ids this supervisor re-queued for a retry (a batch waits for them).
        self.retrying: set[str] = set()
        #: Ids whose cancel request goes once their end is committed (``cancels``).
        self._cancels: set[str] = set()

    # -- decisions ---------------------------------------------------------------------------

    def is_pending(self, task_id: str) -> bool:
        """Whether a state decided for this task is not committed yet.

        Its result file still shows the state before (RUNNING, say): a task seen twice
        meanwhile (its segment line and a re-queue marker, when recovering) must not be
        decided on twice.
        """
        return task_id in self._records

    def finish(
        self,
        record: journal.Record,
        state: journal.State,
        *,
        announce: bool = False,
        line: bytes | None = None,
    ) -> None:
        """Queue a state for the next group commit; ``announce`` it once committed.
        ``line``: the state framed already (``child.Outcome.line``)."""
        if state.id in self._records:  # a bug: the first decision stands
            logger.error("Task id=%s: a second state before the first was committed", state.id)
            return
        self._records[state.id] = record
        if announce:
            self._announce.add(state.id)
        self._committer.submit_framed(state, line or journal.state_line(state))

    def task_ended(
        self,
        record: journal.Record,
        running: journal.State,
        outcome: child.Outcome,
        policy: RetryPolicy | None,
    ) -> None:
        """The task's own outcome: as it is, or a retry by its ``policy``."""
        if outcome.retry:
            self.retry_later(record, running, outcome.error, policy=policy)
            return
        self.finish(
            record,
            states.finished(
                running, outcome.status, outcome.finished_at, outcome.error, outcome.return_value
            ),
            line=outcome.line,
        )

    def retry_later(
        self,
        record: journal.Record,
        running: journal.State,
        error: journal.TaskError | None,
        *,
        policy: RetryPolicy | None,
    ) -> None:
        """READY again after the backoff of its retry policy, with this attempt's error."""
        attempt = len(running.worker_ids)
        delay = policy.delay_after(attempt) if policy else 0.0
        errors = running.errors if error is None else (*running.errors, error)
        run_after = timezone.now() + timedelta(seconds=delay)
        # Not finished, so its worker process announced nothing: READY again is ours to.
        self.finish(
            record, states.ready_again(running, errors=errors, run_after=run_after), announce=True
        )
        self.retrying.add(record.id)
        logs.log_with_traceback(
            logger,
            logging.WARNING,
            error.traceback if error else "",
            "Task id=%s path=%s queue=%s state=READY: attempt %d of %d raised %s; "
            "retrying in %.1fs",
            record.id,
            record.task_path,
            record.queue_name,
            attempt,
            policy.attempts if policy else attempt,
            error.traceback.strip().splitlines()[-1] if error else "an error",
            delay,
        )

    def fail(self, record: journal.Record, state: journal.State, error: journal.TaskError) -> None:
        """FAILED by the supervisor (its process died, or never ran it); it announces it."""
        self.finish(record, states.failed(state, error), announce=True)

    def cancel(
        self, record: journal.Record, state: journal.State, error: journal.TaskError
    ) -> None:
        """FAILED by a cancel that stopped (or found stopped) the task; it announces it."""
        self.note_cancel(record.id)
        self.fail(record, state, error)
        logger.warning(
            "Task id=%s path=%s queue=%s state=FAILED: %s",
            record.id,
            record.task_path,
            record.queue_name,
            error.traceback.strip(),
        )

    def note_cancel(self, task_id: str) -> None:
        """The task's cancel request is acted on: it goes once the task's end is durable.

        Not before: a supervisor killed between the two would leave a RUNNING task that
        nobody knows was cancelled. A task that becomes READY instead (its retry was on
        its way) keeps the request, which its claim honours.
        """
        self._cancels.add(task_id)

    def announce(self, record: journal.Record, state: journal.State) -> None:
        """Send ``task_finished`` for a FAILED state this supervisor wrote durably itself."""
        self._send(record, state)

    def rerun(self, record: journal.Record, state: journal.State, error: journal.TaskError) -> None:
        """A new attempt of an interrupted task, with what interrupted it."""
        self.finish(record, states.ready_again(state, errors=(*state.errors, error)), announce=True)
        logger.warning(
            "Task id=%s path=%s queue=%s re-queued as attempt %d: %s",
            record.id,
            record.task_path,
            record.queue_name,
            len(state.worker_ids) + 1,
            error.traceback.strip(),
        )

    def rerun_or_fail(
        self, record: journal.Record, state: journal.State, error: journal.TaskError
    ) -> None:
        """A new attempt while attempts remain (``max_attempts``), else FAILED."""
        if len(state.worker_ids) < self._options_for(record).max_attempts:
            self.rerun(record, state, error)
            return
        self.fail(record, state, error)
        logger.error(
            "Task id=%s path=%s queue=%s state=FAILED after %d attempt(s): %s",
            record.id,
            record.task_path,
            record.queue_name,
            len(state.worker_ids),
            error.traceback.strip(),
        )

    def unclaim(self, record: journal.Record, state: journal.State) -> None:
        """Queue again a claimed task that never started: no attempt was made."""
        worker_ids = state.worker_ids[:-1]
        self.finish(
            record,
            states.ready_again(
                state,
                worker_ids=worker_ids,
                started_at=state.started_at if worker_ids else None,
                last_attempted_at=state.last_attempted_at if worker_ids else None,
            ),
        )

    def stopped_by_reload(
        self, record: journal.Record, state: journal.State, error: journal.TaskError
    ) -> None:
        """READY again, with the reload's error: a code reload is not an attempt of the
        task, so it counts neither against ``max_attempts`` nor against retries."""
        self.finish(
            record,
            states.ready_again(
                state, worker_ids=state.worker_ids[:-1], errors=(*state.errors, error)
            ),
            announce=True,  # it had started: READY again, with the reload's error, is news
        )

    # -- once durable ------------------------------------------------------------------------

    def on_committed(self) -> None:
        """Act on the states the committer made durable since the last call."""
        for state in self._committer.committed():
            record = self._records.pop(state.id)
            if state.status == journal.READY:
                self._ready.push(record, state.run_after)
                try:
                    self._journal.append_requeue(record.id)  # wakes the other supervisors
                except OSError as error:
                    logger.warning("Cannot announce re-queued task id=%s: %s", record.id, error)
            if state.id in self._announce:
                self._announce.discard(state.id)
                self._send(record, state)
            if state.is_finished and state.id in self._cancels:
                self._cancels.discard(state.id)
                try:
                    self._journal.remove_cancel_request(state.id)
                except OSError as error:  # harmless: a finished task is never claimed
                    logger.warning("Cannot remove the cancel of task id=%s: %s", state.id, error)

    def _send(self, record: journal.Record, state: journal.State) -> None:
        """Announce a committed state: what ``get_result`` returns from now on."""
        try:
            result = build_task_result(record, state, load_task(record))
        except TaskNotLoadable:
            return  # no Task to report it with; its record was quarantined
        if state.status == journal.READY:
            signals.send_enqueued(self._sender, result)
            return
        signals.send_finished_with(self._sender, result, state.errors[-1] if state.errors else None)
