"""Running tasks: claims, the pool's processes, outcomes, deaths and time limits.

A claim marks READY tasks RUNNING under the journal's claim lock, so each task is claimed
by exactly one supervisor; each is then sent to an idle process of the pool (``pool``).
An outcome goes to ``Outcomes``.

Short tasks are sent one ahead: a process that runs a task of a path that ran shorter
than ``AHEAD_BELOW_S`` lately, and has run it for less than that, gets its next task
queued behind it, so that it starts that one without waiting for the supervisor's round
trip. Such a task is claimed (its result file says RUNNING) but not started, and its
time limit counts from its start. It is READY again, with no attempt made, if the process
hands it back unrun: asked to (``child.Recall``) because a better task became due (strict
priority order: it waits for one running task at most, as it would without), because it
was cancelled, or because the supervisor stops; of its own accord when the task ahead of
it runs past ``child.HAND_BACK_AFTER_S``; or because the process leaves or dies. A process that dies
while it runs a task fails that task (``WorkerProcessDied``, or the timeout error when
the supervisor killed it for ignoring its time limit); SIGTERM from outside (a process
manager stopping every process of the service) re-runs it instead. Either way the
process pool is replaced, as the Guarantees promise: the tasks running in the other
processes are stopped and run again as a new attempt, whatever ``max_attempts`` says
(each death fails the task that caused it, so this ends). A process stopped because its
task was cancelled (``cancel``) fails that task, and only that process is replaced.
So does one killed for growing past ``--max-memory-per-child`` while its task ran
(``MemoryLimitExceeded``): the supervisor reads the resident size of each busy process
every ``MEMORY_SAMPLE_INTERVAL_S`` (only with the flag, only while tasks run) and kills
one over the limit at once. A task shorter than that is left to the check after it, which
replaces its process and leaves it its outcome.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .. import journal, logs
from ..options import TaskOptions
from ..portability import HAS_PROC, resident_memory_mib
from . import child, states
from .outcomes import Outcomes
from .pool import Pool, WorkerProcess
from .ready import ReadySet
from .recovery import Recovery

logger = logging.getLogger(__name__)

__all__ = ["Dispatcher", "InFlight"]

#: How long a retry of a claim that could not be written waits.
CLAIM_RETRY_S = 0.5
#: How long past its time limit a task that ignores the limit is killed.
TIMEOUT_KILL_GRACE_S = 2.0
#: When the pool is replaced, how long its other processes get between SIGTERM and SIGKILL.
REPLACE_GRACE_S = 5.0
#: How long the process of a cancelled task gets between SIGTERM and SIGKILL.
CANCEL_GRACE_S = 5.0
#: How often the resident memory of each busy process is read (--max-memory-per-child):
#: a task is stopped within this of passing the limit, at one read of /proc per process.
#: Without /proc each process reads its own (``child``) and says when it is over.
MEMORY_SAMPLE_INTERVAL_S = child.MEMORY_SAMPLE_INTERVAL_S
#: A task is queued behind a busy process's task only when tasks of that task's path ran
#: shorter than this lately (a moving average), and it has run less than this: where the
#: supervisor's round trip between two tasks is a share worth saving, and the wait short.
AHEAD_BELOW_S = 0.1
#: The weight of a task's duration in the moving average of its path's durations.
DURATION_WEIGHT = 0.25


@dataclass(slots=True)
class InFlight:
    """A task sent to a process, and what the supervisor needs to know about it."""

    record: journal.Record
    state: journal.State  # RUNNING, as claimed
    worker: WorkerProcess
    options: TaskOptions  # read once per task: its retry policy and time limit
    started: float = field(default_factory=time.monotonic)
    kill_at: float | None = None  # monotonic; past it, the process is killed
    sent: bool = True  # False: its process was gone before it got the task
    ahead: bool = False  # queued behind its process's task, not started yet
    recalled: str | None = None  # why it was asked back; the process's reply says if in time

    @property
    def timeout(self) -> float | None:
        return self.options.timeout


def _stopped_for(pid: int, task_id: str | None) -> journal.TaskError:
    """The error of a task whose process was stopped for the task before it."""
    return states.error(
        states.TaskInterrupted,
        f"The worker process (pid {pid}) was stopped for task {task_id}, which ended as it "
        "was; this task, queued behind that one, had just started",
    )


class Dispatcher:
    """Claims ready tasks for idle processes and follows them until they end."""

    def __init__(
        self,
        config: Any,  # supervisor.SupervisorConfig
        journal_: journal.Journal,
        instance: str,
        ready: ReadySet,
        outcomes: Outcomes,
        recovery: Recovery,
        quarantine: Callable[[journal.Quarantined], None],
    ) -> None:
        self._config = config
        self._quarantine = quarantine
        self._journal = journal_
        self._instance = instance
        self._ready = ready
        self._outcomes = outcomes
        self._recovery = recovery
        self._claims = states.Claims(config.worker_id, instance)
        self.pool: Pool | None = None
        self.in_flight: dict[str, InFlight] = {}
        self.claimed = 0
        self._claims_paused_until = 0.0
        # pids killed for running past a time limit, and pids stopped because their task was
        # cancelled: the id of that task, which is not always the one a death finds running
        # (a task queued behind it may have started the moment it ended).
        self._timed_out: dict[int, str] = {}
        self._cancelled: dict[int, str] = {}
        self._over_memory: dict[int, float] = {}  # pids killed over the memory limit: MiB
        # Sampled here only where /proc tells one process another's size (``portability``).
        self._samples_memory = config.max_memory_per_child is not None and HAS_PROC
        self._next_memory_sample = 0.0  # monotonic
        self._durations: dict[str, float] = {}  # task path: moving average, seconds

    # -- claiming and sending ----------------------------------------------------------------

    def dispatch(self) -> None:
        """Claim the best ready tasks, one per idle process, and send them; then one
        behind each busy process whose task is short; then take one back if a better
        task waits (see the module docstring)."""
        if self.pool is None or time.monotonic() < self._claims_paused_until:
            return
        try:
            self.pool.fill()
        except OSError as error:  # out of processes or memory: try again a little later
            logger.error("Cannot start a worker process: %s", error)
            self.pool.delay_starts()
        if self._send_to(self.pool.idle()) and self._send_to(self._ahead_targets()):
            self._recall_if_outranked()

    def _send_to(self, workers: list[WorkerProcess]) -> bool:
        """Claim a ready task for each of ``workers`` and send it; False if claims paused."""
        if self._config.max_tasks is not None:
            workers = workers[: max(0, self._config.max_tasks - self.claimed)]
        while workers and self._ready.has_due():
            picked = self._ready.take(len(workers))
            for record, running in self._claim(picked):
                self._send(workers.pop(), record, running)
            if self._claims_paused_until:
                return False
        return True

    def _ahead_targets(self) -> list[WorkerProcess]:
        """The busy processes to queue a task behind: each runs a short task, and stays."""
        assert self.pool is not None  # noqa: S101 (dispatch checked)
        last = self._config.max_tasks_per_child
        return [
            worker
            for worker in self.pool.busy()
            if (last is None or worker.ran + 1 < last) and self._runs_short(worker.task_id)
        ]

    def _runs_short(self, task_id: str | None) -> bool:
        flight = self.in_flight.get(task_id) if task_id else None
        if flight is None:
            return False
        average = self._durations.get(flight.record.task_path)
        running_for = time.monotonic() - flight.started
        return average is not None and average < AHEAD_BELOW_S and running_for < AHEAD_BELOW_S

    def _recall_if_outranked(self) -> None:
        """Ask back every queued task a due task outranks (strict priority order): the
        first process to end its task then takes the better one, whichever it is."""
        best = self._ready.best_key()
        if best is None:
            return
        outranked = [
            flight
            for flight in self.in_flight.values()
            if flight.ahead and not flight.recalled and ReadySet.order_of(flight.record) > best
        ]
        for flight in outranked:
            self._recall(flight, "a task of higher priority is due")

    def _recall(self, flight: InFlight, reason: str) -> None:
        assert self.pool is not None  # noqa: S101 (a flight is in one of its processes)
        if self.pool.drop_held(flight.worker):
            self._take_back((flight.record.id,), flight.worker, reason)  # it never left here
            return
        flight.recalled = reason
        logger.debug(
            "Task id=%s: asking worker process pid=%s to hand it back unrun (%s)",
            flight.record.id,
            flight.worker.pid,
            reason,
        )
        self.pool.recall(flight.worker)

    def recall_queued(self) -> None:
        """Take back every queued task (the supervisor stops, or reloads)."""
        for flight in list(self.in_flight.values()):  # (one held here goes back at once)
            if flight.ahead and not flight.recalled:
                self._recall(flight, "the worker stops")

    @property
    def running(self) -> int:
        """How many tasks run now (queued ones are not counted)."""
        return sum(not flight.ahead for flight in self.in_flight.values())

    def _claim(self, records: list[journal.Record]) -> list[tuple[journal.Record, journal.State]]:
        """Mark READY tasks RUNNING under the claim lock: each is claimed exactly once."""
        claimed = []
        cancelled = []
        with self._journal.claim_lock():
            for index, record in enumerate(records):
                if self._outcomes.is_pending(record.id):
                    continue  # re-queued, not committed yet: pushed again once it is
                with self._journal.result_file(record.id) as file:
                    state = self._recovery.read_state(record.id, file)
                    if state is None and self._journal.was_pruned(record.id):
                        continue  # it finished and was pruned since this supervisor read it
                    if state is not None and state.status != journal.READY:
                        # Another supervisor claimed it, it finished, or procpool_handoff is
                        # moving it (HANDING_OFF) or moved it (HANDED_OFF) to another backend.
                        continue
                    try:
                        # Cancelled while an attempt ran, READY again since: it never runs
                        # again. Only a task run before can have a cancel request (a stat).
                        if state is not None and self._journal.has_cancel_request(record.id):
                            file.close()
                            failed = self._journal.write_cancelled(record.id, state)
                            cancelled.append((record, failed))
                            continue
                        running, line = self._claims.claim(record, state)
                        file.write_state_line(line)
                    except OSError as error:
                        self._pause_claims(records[index:], error)
                        break
                claimed.append((record, running))
        for record, failed in cancelled:
            logger.warning(
                "Task id=%s path=%s queue=%s state=FAILED: cancelled before attempt %d ran",
                record.id,
                record.task_path,
                record.queue_name,
                len(failed.worker_ids) + 1,
            )
            self._outcomes.announce(record, failed)
        self.claimed += len(claimed)
        return claimed

    def _pause_claims(self, unclaimed: list[journal.Record], error: OSError) -> None:
        logger.error("Cannot claim tasks (%s); trying again in %ss", error, CLAIM_RETRY_S)
        for record in unclaimed:
            self._ready.push(record)
        self._claims_paused_until = time.monotonic() + CLAIM_RETRY_S

    def seconds_to_claims(self) -> float | None:
        """How long claims stay paused after a failed claim write; None if they are not."""
        if not self._claims_paused_until:
            return None
        left = self._claims_paused_until - time.monotonic()
        if left <= 0:
            self._claims_paused_until = 0.0
            return None
        return left

    def _send(self, worker: WorkerProcess, record: journal.Record, running: journal.State) -> None:
        assert self.pool is not None  # noqa: S101 (dispatch checked)
        flight = InFlight(record, running, worker, self._config.options_for(record))
        self.in_flight[record.id] = flight
        if worker.task_id is None:
            self._start(flight)
        else:
            flight.ahead = True
        if not self.pool.send(worker, child.Job(record, running, flight.timeout)):
            flight.sent = False  # the process is gone: its exit un-claims the task

    def _start(self, flight: InFlight) -> None:
        """The process starts the task now: an idle one at once, a busy one after its task."""
        record = flight.record
        logs.log(
            logger,
            logging.INFO,
            "Task id=%s path=%s queue=%s state=RUNNING attempt=%d",
            record.id,
            record.task_path,
            record.queue_name,
            len(flight.state.worker_ids),
        )
        flight.ahead = False
        flight.started = time.monotonic()
        if flight.timeout:
            # The process raises at the limit; a task that ignores it is killed this much
            # later.
            flight.kill_at = flight.started + flight.timeout + TIMEOUT_KILL_GRACE_S

    # -- what comes back ---------------------------------------------------------------------

    def on_outcome(self, worker: WorkerProcess, *, send_next: bool = False) -> None:
        """A process sent the outcome of its task (or closed its pipe: ``on_exit`` follows).

        With ``send_next`` (the loop, while it claims), the idle process gets its next
        task before this one's outcome is handed on and logged: it does not wait for that.
        """
        assert self.pool is not None  # noqa: S101 (only a pool's pipe is watched)
        task_id = worker.task_id
        received = self.pool.receive(worker)
        if received is None or task_id is None:
            return
        if isinstance(received, child.OverMemory):
            flight = self.in_flight.get(task_id)
            if flight is not None and worker.pid not in self._over_memory:
                self._kill_for_memory(flight, received.used_mib)  # it is killing itself, too
            return
        if isinstance(received, child.HandedBack):
            self._take_back(received.task_ids, worker, "the task ahead of it runs long")
            return
        outcome, handed_back = received
        flight = self.in_flight.pop(task_id)
        self._note_duration(flight)
        self._take_back(handed_back, worker, "its process leaves")
        if worker.task_id is not None:
            self._start_queued(self.in_flight[worker.task_id])
        if send_next and not worker.leaving:
            self.dispatch()
        if outcome.unloadable:
            self._quarantine_record(flight.record, outcome)
        self._note_memory(worker, outcome)
        self._outcomes.task_ended(flight.record, flight.state, outcome, flight.options.retry)
        if not outcome.retry:
            self._log_finished(flight, outcome)

    def _note_duration(self, flight: InFlight) -> None:
        path = flight.record.task_path
        duration = time.monotonic() - flight.started
        average = self._durations.get(path, duration)
        self._durations[path] = average + (duration - average) * DURATION_WEIGHT

    def _take_back(self, task_ids: tuple[str, ...], worker: WorkerProcess, reason: str) -> None:
        """Tasks queued in a process that it handed back unrun: READY again, no attempt
        made. ``reason``: why, unless they were asked back."""
        for task_id in task_ids:
            flight = self.in_flight.pop(task_id, None)
            if flight is None:
                continue
            logger.info(
                "Task id=%s path=%s queue=%s state=READY: queued behind the task of worker "
                "process pid=%s, handed back unrun (%s)",
                task_id,
                flight.record.task_path,
                flight.record.queue_name,
                worker.pid,
                flight.recalled or reason,
            )
            self._outcomes.unclaim(flight.record, flight.state)
            self.claimed -= 1  # --max-tasks counts the tasks run

    def _start_queued(self, flight: InFlight) -> None:
        """The process went on to the task queued behind its last one (or gets it now, if
        the supervisor held it: ``Pool.send``)."""
        assert self.pool is not None  # noqa: S101 (a flight is in one of its processes)
        recalled, flight.recalled = flight.recalled, None
        if not self.pool.send_held(flight.worker):
            flight.sent = False  # the process is gone: its exit un-claims the task
        self._start(flight)
        if recalled:
            self.cancel(flight.record.id)  # too late to take back: if for a cancel, stop it

    def _reap(self, worker: WorkerProcess) -> int:
        """Forget a process that exited (see ``Pool.reap``); its queued task is READY again."""
        assert self.pool is not None  # noqa: S101 (the process was one of its)
        exit_code = self.pool.reap(worker)
        if worker.ahead is not None:
            self._take_back((worker.ahead,), worker, "its process ended")
            worker.ahead = None
        return exit_code

    def on_exit(self, worker: WorkerProcess) -> None:
        """A process exited: as it said it would, or it died (see the module docstring)."""
        assert self.pool is not None  # noqa: S101 (only a pool's sentinel is watched)
        self._take_last_outcome(worker)  # its last outcome came with its exit: that first
        used_mib = self._over_memory.pop(worker.pid, None)
        if worker.leaving:
            self._cancelled.pop(worker.pid, None)
            self._reap(worker)
            return
        if worker.pid in self._cancelled:
            self._end_cancelled(worker)  # the other processes go on
            return
        if used_mib is not None:
            self._end_over_memory(worker, used_mib)  # the other processes go on
            return
        self._replace_pool({worker.pid: self._end_dead(worker)})

    def _take_last_outcome(self, worker: WorkerProcess) -> None:
        """Act on an outcome the process sent before it exited or was stopped.

        Its task did finish: run again, it would run twice (a task that succeeded, too).
        So may the task queued behind it. A closed pipe has nothing more to say (and
        ``poll`` would raise).
        """
        while worker.task_id is not None and not worker.conn.closed and worker.conn.poll(0):
            before = (worker.task_id, worker.ahead)
            self.on_outcome(worker)
            if (worker.task_id, worker.ahead) == before:
                return  # the pipe closed, or the process said it is over its memory limit

    def _end_dead(self, worker: WorkerProcess) -> int:
        """Forget a process that died; fail (or re-run) its task; return its exit code."""
        assert self.pool is not None  # noqa: S101 (the dead process was one of its)
        task_id = worker.task_id
        exit_code = self._reap(worker)
        flight = self.in_flight.pop(task_id, None) if task_id else None
        if flight is not None:
            self._on_death(flight, worker.pid, exit_code)
        elif worker.ran == 0:
            self.pool.delay_starts()  # it died starting up: a broken project must not spin
        return exit_code

    def _on_death(self, flight: InFlight, pid: int, exit_code: int) -> None:
        record, running = flight.record, flight.state
        if not flight.sent:
            self._outcomes.unclaim(record, running)  # never started: no attempt was made
            return
        if pid in self._timed_out and self._timed_out[pid] != record.id:
            # Killed for the task before it, which ended as the signal went: not this one's.
            self._outcomes.rerun_or_fail(record, running, _stopped_for(pid, self._timed_out[pid]))
            return
        timed_out = pid in self._timed_out
        if exit_code == -signal.SIGTERM and not timed_out:
            # Nothing of ours sends a running process SIGTERM: a process manager stopping
            # every process of the service did (systemd's default KillMode). A stop, not
            # a crash of the task: it runs again, as after a forced stop.
            error = states.error(
                states.TaskInterrupted,
                f"The worker process (pid {pid}) running the task was stopped by SIGTERM "
                "from outside the worker (a process manager stopping every process?)",
            )
            self._outcomes.rerun_or_fail(record, running, error)
            return
        error = states.death_error(pid, exit_code, timed_out, flight.timeout)
        self._outcomes.fail(record, running, error)
        logger.error(
            "Task id=%s path=%s queue=%s state=FAILED: %s",
            record.id,
            record.task_path,
            record.queue_name,
            error.traceback.strip(),
        )

    def _replace_pool(self, deaths: dict[int, int]) -> None:
        """Stop every other process of the pool; their tasks run again as a new attempt.

        ``deaths``: the exit codes of the processes that died, by pid. Others may have
        died in the same moment, their exits still unread in the loop's batch of events:
        each of those is a death of its own, which fails its task, not an interruption.
        """
        assert self.pool is not None  # noqa: S101 (a death came from it)
        logger.error("A worker process died; replacing the process pool")
        for worker in list(self.pool.workers):
            self._take_last_outcome(worker)
            if worker.pid in self._over_memory:
                worker.process.join()  # killed with SIGKILL: gone at once
                self._end_over_memory(worker, self._over_memory.pop(worker.pid))
            elif worker.process.exitcode is not None and not worker.leaving:
                deaths[worker.pid] = self._end_dead(worker)
        others = list(self.pool.workers)
        self.pool.stop(others, REPLACE_GRACE_S)
        error = states.interruption_error(deaths, set(self._timed_out))
        for worker in others:
            self._take_last_outcome(worker)  # finished while it was being stopped
            self._interrupt(worker, error)
            self._reap(worker)
        self._timed_out.clear()
        self._cancelled.clear()
        self._over_memory.clear()

    def _interrupt(self, worker: WorkerProcess, error: journal.TaskError) -> None:
        """The task of a process stopped with its pool: a new attempt, or none was made."""
        flight = self.in_flight.pop(worker.task_id, None) if worker.task_id else None
        if flight is None:
            return
        if flight.sent:
            self._outcomes.rerun(flight.record, flight.state, error)
        else:
            self._outcomes.unclaim(flight.record, flight.state)  # it never got the task

    # -- cancels -----------------------------------------------------------------------------

    def cancel(self, task_id: str) -> None:
        """A cancel was asked for: stop the process running the task, if it is ours.

        SIGTERM, then SIGKILL after ``CANCEL_GRACE_S`` (``kill_overdue``); its exit
        records FAILED (``_end_cancelled``). An outcome that comes first stands.
        """
        flight = self.in_flight.get(task_id)
        if flight is None or not flight.sent or flight.worker.pid in self._cancelled:
            return  # another supervisor's, over, or never started (its claim honours it)
        if flight.worker.process.exitcode is not None:
            return  # its process ended: its exit decides (and its pid may be another's now)
        if not self._journal.has_cancel_request(task_id):
            return  # re-queued by hand since: that cancel is over
        if flight.ahead:
            if not flight.recalled:
                self._recall(flight, "cancelled")  # its next claim records the cancel
            return
        pid = flight.worker.pid
        self._cancelled[pid] = task_id
        self._outcomes.note_cancel(task_id)
        logger.warning(
            "Task id=%s path=%s queue=%s was cancelled; stopping its worker process pid=%s",
            task_id,
            flight.record.task_path,
            flight.record.queue_name,
            pid,
        )
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        kill_at = time.monotonic() + CANCEL_GRACE_S
        flight.kill_at = kill_at if flight.kill_at is None else min(flight.kill_at, kill_at)

    def _end_cancelled(self, worker: WorkerProcess) -> None:
        """Forget a process stopped for a cancel; its task, unless it ended first, FAILED."""
        assert self.pool is not None  # noqa: S101 (the process was one of its)
        # (a cancel stands over a memory limit's kill)
        cancelled = self._cancelled.pop(worker.pid, None)
        task_id = worker.task_id
        self._reap(worker)
        flight = self.in_flight.pop(task_id, None) if task_id else None
        if flight is None:
            return
        if cancelled != flight.record.id:
            # The cancelled task ended as the signal went, and this one, queued behind it,
            # had started: stopped, not cancelled.
            self._outcomes.rerun_or_fail(
                flight.record, flight.state, _stopped_for(worker.pid, cancelled)
            )
            return
        self._outcomes.cancel(
            flight.record, flight.state, states.cancelled_while_running(worker.pid)
        )

    # -- time and memory limits -------------------------------------------------------------

    def kill_overdue(self) -> None:
        """Kill the processes past their time limit, or over the memory limit."""
        now = time.monotonic()
        self._hand_back_held(now)
        for flight in self.in_flight.values():
            if flight.kill_at is not None and flight.kill_at <= now:
                flight.kill_at = None
                pid = flight.worker.pid
                if pid in self._cancelled:
                    logger.warning(
                        "Task id=%s was cancelled and did not stop on SIGTERM; killing pid=%s",
                        flight.record.id,
                        pid,
                    )
                else:
                    logger.warning(
                        "Task id=%s ignored its timeout; killing pid=%s", flight.record.id, pid
                    )
                    self._timed_out[pid] = flight.record.id
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        if self._samples_memory and self.in_flight and now >= self._next_memory_sample:
            self._next_memory_sample = now + MEMORY_SAMPLE_INTERVAL_S
            self._kill_over_memory(now)

    def _hand_back_held(self, now: float) -> None:
        """A job the supervisor holds behind a task that runs long goes back, as one in a
        process's pipe would (``child.HAND_BACK_AFTER_S``)."""
        for worker, deadline in self._held_deadlines():
            held = worker.ahead
            if deadline <= now and held is not None and self.pool and self.pool.drop_held(worker):
                self._take_back((held,), worker, "the task ahead of it runs long")

    def _held_deadlines(self) -> list[tuple[WorkerProcess, float]]:
        """Each process whose next job the supervisor holds, and when that job goes back."""
        if self.pool is None:
            return []
        return [
            (worker, self.in_flight[worker.task_id].started + child.HAND_BACK_AFTER_S)
            for worker in self.pool.workers
            if worker.held is not None and worker.task_id in self.in_flight
        ]

    def seconds_to_next_kill(self) -> float | None:
        """When ``kill_overdue`` has work next: a time limit, a memory sample, or a job held
        behind a task that may run long."""
        kills = [f.kill_at for f in self.in_flight.values() if f.kill_at is not None]
        kills.extend(deadline for _, deadline in self._held_deadlines())
        if self._samples_memory and self.in_flight:
            kills.append(self._next_memory_sample)
        return max(0.0, min(kills) - time.monotonic()) if kills else None

    def _kill_over_memory(self, now: float) -> None:
        """SIGKILL each busy process whose resident memory is over --max-memory-per-child.

        SIGKILL, not SIGTERM: a task over its limit must not get to allocate more (nor run
        a handler that does). Its exit fails the task (``_end_over_memory``). A task that
        ran less than an interval yet is left alone: one that ends soon is checked as it
        ends, and keeps its outcome (``child.serve``), however busy the machine is.
        """
        limit = self._config.max_memory_per_child
        for flight in self.in_flight.values():
            pid = flight.worker.pid
            if (
                flight.ahead
                or not flight.sent
                or pid in self._over_memory
                or pid in self._timed_out
            ):
                continue  # not started, never got the task, or killed already
            if now - flight.started < MEMORY_SAMPLE_INTERVAL_S:
                continue
            used_mib = resident_memory_mib(pid)
            if used_mib > limit:
                self._kill_for_memory(flight, used_mib)

    def _kill_for_memory(self, flight: InFlight, used_mib: float) -> None:
        """Kill a process over the memory limit now; its exit fails its task."""
        pid = flight.worker.pid
        self._over_memory[pid] = used_mib
        flight.kill_at = None  # killed now: not again for a time limit or a cancel
        logger.warning(
            "Task id=%s path=%s queue=%s: worker process pid=%s uses %.0f MiB, over "
            "--max-memory-per-child %g MiB; killing it",
            flight.record.id,
            flight.record.task_path,
            flight.record.queue_name,
            pid,
            used_mib,
            self._config.max_memory_per_child,
        )
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)

    def _end_over_memory(self, worker: WorkerProcess, used_mib: float) -> None:
        """Forget a process killed over the memory limit; its task, unless it ended first,
        FAILED. Only this process is replaced (``dispatch`` starts another)."""
        assert self.pool is not None  # noqa: S101 (the process was one of its)
        task_id = worker.task_id
        self._reap(worker)
        flight = self.in_flight.pop(task_id, None) if task_id else None
        if flight is not None:
            self._fail_over_memory(flight, used_mib)

    def _fail_over_memory(self, flight: InFlight, used_mib: float) -> None:
        error = states.over_memory_error(used_mib, self._config.max_memory_per_child)
        self._outcomes.fail(flight.record, flight.state, error)
        logger.error(
            "Task id=%s path=%s queue=%s state=FAILED: %s",
            flight.record.id,
            flight.record.task_path,
            flight.record.queue_name,
            error.traceback.strip(),
        )

    # -- stopping ----------------------------------------------------------------------------

    def stop_processes_now(self, grace_s: float) -> None:
        """A forced stop: the processes go (SIGTERM, then SIGKILL); their running tasks
        stay RUNNING, for the next supervisor to recover. An outcome a process sent before
        it stopped stands, and a task still queued behind another is READY again."""
        if self.pool is None:
            return
        workers = list(self.pool.workers)
        self.pool.stop(workers, grace_s)
        for worker in workers:
            self._take_last_outcome(worker)  # finished while it was being stopped: it stands
            self._reap(worker)  # a task still queued behind another never started: READY

    def stop_for_reload(self, grace_s: float, error: journal.TaskError) -> None:
        """A code reload's grace period is over: stop the processes now (SIGTERM, then
        SIGKILL); their tasks are READY again, not as a new attempt (``Outcomes``)."""
        assert self.pool is not None  # noqa: S101 (tasks in flight ran in it)
        workers = list(self.pool.workers)
        self.pool.stop(workers, grace_s)
        for worker in workers:
            self._take_last_outcome(worker)  # finished while it was being stopped
            flight = self.in_flight.pop(worker.task_id, None) if worker.task_id else None
            used_mib = self._over_memory.pop(worker.pid, None)
            if flight is not None and used_mib is not None:
                self._fail_over_memory(flight, used_mib)  # killed before the reload stopped it
            elif flight is not None and flight.sent:
                self._outcomes.stopped_by_reload(flight.record, flight.state, error)
            elif flight is not None:
                self._outcomes.unclaim(flight.record, flight.state)  # it never got the task
            self._reap(worker)

    # -- logging -----------------------------------------------------------------------------

    def _quarantine_record(self, record: journal.Record, outcome: child.Outcome) -> None:
        segment, offset = journal.parse_id(record.id)
        reason = outcome.error.traceback.strip().splitlines()[-1] if outcome.error else "?"
        self._quarantine(
            journal.Quarantined(
                segment, offset, reason, journal.encode_record(record), record.task_path
            )
        )

    def _note_memory(self, worker: WorkerProcess, outcome: child.Outcome) -> None:
        limit = self._config.max_memory_per_child
        if limit is not None and outcome.memory_mib > limit:
            logger.info(
                "Worker process pid=%s uses %.0f MiB, over --max-memory-per-child %g MiB; "
                "replacing it",
                worker.pid,
                outcome.memory_mib,
                limit,
            )

    def _log_finished(self, flight: InFlight, outcome: child.Outcome) -> None:
        line = "Task id=%s path=%s queue=%s state=%s duration=%.3fs"
        fields = (
            flight.record.id,
            flight.record.task_path,
            flight.record.queue_name,
            outcome.status,
            time.monotonic() - flight.started,
        )
        if outcome.error is None:
            logs.log(
                logger,
                logging.INFO if outcome.status == journal.SUCCESSFUL else logging.WARNING,
                line,
                *fields,
            )
            return
        # The exception on the line itself, its traceback (from the child) after it.
        traceback = outcome.error.traceback
        logs.log_with_traceback(
            logger,
            logging.WARNING,
            traceback,
            line + ": %s",
            *fields,
            traceback.strip().splitlines()[-1],
        )
