"""The worker's supervisor: claims ready tasks from the journal and runs them in a pool.

Flow::

    open   lock our instance, open our result log, try the claim lock: a journal we
           cannot write (read-only, full, a planted symlink) exits 3 before any claim
    start  replay the result logs of every dead supervisor; read every segment into the
           ready heap, recovering tasks a dead supervisor left RUNNING
    loop   wait for one event (journal changed, task finished, signal) or the next due
           run_after; read new segment lines; group-commit the finished tasks' states
           (one WAL sync); claim the best ready tasks, one per free process, and submit
    stop   first SIGTERM/SIGINT: claim nothing more, let running tasks finish, exit 0;
           second: terminate the children; their tasks stay RUNNING and the next
           supervisor to start recovers them

Signals, journal changes and finished futures all arrive on one ``queue.SimpleQueue``,
whose ``put`` is safe from a signal handler and from the pool's management thread.
"""

from __future__ import annotations

import contextlib
import functools
import heapq
import itertools
import logging
import multiprocessing
import os
import queue
import secrets
import signal
import threading
import time
from concurrent.futures import CancelledError, Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from types import FrameType
from typing import Any

import filelock
import watchfiles
from django.db import connections
from django.utils import timezone

from . import compat, execution, history, journal, sqlite
from .backend import ProcPoolBackend
from .heartbeat import HEARTBEAT_INTERVAL_S, HOST, Heartbeat
from .options import TaskOptions
from .pool import WorkerPool
from .results import TaskNotLoadable, build_task_result, load_task

logger = logging.getLogger(__name__)

__all__ = [
    "EXIT_FORCED_STOP",
    "EXIT_JOURNAL_UNUSABLE",
    "EXIT_OK",
    "SupervisorConfig",
    "TaskInterrupted",
    "WorkerProcessDied",
    "run_supervisor",
]

EXIT_OK = 0
EXIT_FORCED_STOP = 1
EXIT_JOURNAL_UNUSABLE = 3

#: How often an idle supervisor reads the journal even without a notification.
POLL_INTERVAL_S = 2.0
#: How long a retry of a failed result write waits.
WRITE_RETRY_S = 0.5
#: On a forced stop, how long children get between SIGTERM and SIGKILL.
KILL_GRACE_S = 5.0
#: While other tasks run, a finished state waits this long at most for more to share its
#: sync (group commit); with nothing else running it is written at once.
GROUP_COMMIT_WINDOW_S = 0.005
#: How often a supervisor brings the history's summaries up to date, marks finished
#: segments done and prunes by retention (one supervisor of a journal at a time).
HISTORY_INTERVAL_S = 60.0
#: How long past its time limit a task that ignores the limit is killed.
TIMEOUT_KILL_GRACE_S = 2.0


class TaskInterrupted(RuntimeError):
    """The supervisor running a task stopped before the task finished."""


class WorkerProcessDied(RuntimeError):
    """The worker process running a task died (killed, crashed, out of memory)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SupervisorConfig:
    """What ``procpool_worker`` was asked to do."""

    backend: ProcPoolBackend
    processes: int
    queue_names: frozenset[str] | None  # None: every queue
    worker_id: str
    batch: bool = False
    max_tasks: int | None = None
    max_tasks_per_child: int | None = None
    max_memory_per_child: float | None = None  # MiB
    task_timeout: float | None = None  # --task-timeout; see BackendOptions.for_task
    verbosity: int = 1

    def serves(self, queue_name: str) -> bool:
        return self.queue_names is None or queue_name in self.queue_names

    def options_for(self, record: journal.Record) -> TaskOptions:
        """The retry policy and timeout the record's task runs with."""
        return self.backend.backend_options.for_task(record.task_path, timeout=self.task_timeout)


@dataclass(slots=True)
class _InFlight:
    record: journal.Record
    state: journal.State
    pool: ProcessPoolExecutor | None
    timeout: float | None = None
    started: float = field(default_factory=time.monotonic)


def run_supervisor(config: SupervisorConfig) -> int:
    """Run until stopped (or, with --batch, until nothing is ready); return the exit code."""
    supervisor = Supervisor(config)
    try:
        supervisor.open()
    except journal.JournalError as error:
        logger.error("Cannot use the journal %s: %s", error.filename, error.strerror)
        return EXIT_JOURNAL_UNUSABLE
    return supervisor.run()


class Supervisor:
    def __init__(self, config: SupervisorConfig) -> None:
        self.config = config
        self.journal = config.backend.journal
        self.max_attempts = config.backend.backend_options.max_attempts
        self.instance = secrets.token_hex(8)
        self._events: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._tail = journal.SegmentTail(self.journal)
        self._order = itertools.count()
        self._ready: list[tuple[int, float, int, journal.Record]] = []
        self._waiting: list[tuple[float, int, journal.Record]] = []
        self._queued: set[str] = set()
        self._in_flight: dict[Future[execution.Outcome], _InFlight] = {}
        self._unwritten: list[journal.State] = []
        self._unannounced: list[tuple[journal.Record, journal.State]] = []
        self._unwritten_since = 0.0
        self._write_failed = False
        self._requeued: dict[str, tuple[journal.Record, journal.State]] = {}
        self._retrying: set[str] = set()  # ids this supervisor re-queued for a retry
        self._claim_paused_until = 0.0
        self._pids: dict[str, int] = {}
        self._deadlines: dict[str, float] = {}
        self._exit_codes: dict[int, int] = {}
        self._timed_out_pids: set[int] = set()
        self._started: Any = None
        self._dead_instances: dict[str, filelock.BaseFileLock] = {}
        self._alive_instances: set[str] = set()
        self._claimed = 0
        self._stopping = False
        self._signals = 0
        self._quarantined = 0
        self._watch_stop = threading.Event()
        #: Ids of queued tasks whose result files to make ahead of their claim; None: stop.
        self._to_prepare: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._pool: ProcessPoolExecutor | None = None
        self._result_log: journal.ResultLog | None = None
        self._instance_lock = self.journal.worker_lock(self.instance)
        self._started_at = timezone.now()
        self._next_beat = 0.0

    # -- lifecycle ---------------------------------------------------------------------------

    def open(self) -> None:
        """Take everything the supervisor writes to before it claims anything.

        Raises JournalError (a read-only or full disk, a symlink planted for a lock) so
        that the command exits with a clear message instead of a traceback mid-run.
        """
        try:
            self.journal.ensure()
            self.journal.keep_directories_open()
            self._instance_lock.acquire()
            self._result_log = journal.ResultLog(self.journal, self.instance)
            with self.journal.claim_lock():
                pass
        except journal.JournalError:
            self._close_instance()
            raise
        except OSError as error:
            self._close_instance()
            raise journal.JournalError.from_os_error(error) from error

    def _close_instance(self) -> None:
        """Undo a half-done ``open``: it claimed nothing, so there is nothing to recover."""
        self.journal.close()
        if self._result_log is not None:
            with contextlib.suppress(OSError):
                self._result_log.close(remove=True)
            self._result_log = None
        if self._instance_lock.is_locked:
            self._instance_lock.release()
            with contextlib.suppress(OSError):
                (self.journal.workers_dir / f"{self.instance}.lock").unlink(missing_ok=True)

    def run(self) -> int:
        """Run the loop on an opened supervisor; return the exit code."""
        assert self._result_log is not None  # noqa: S101 (open() comes first)
        instance_lock = self._instance_lock
        try:
            logger.info(
                "Starting worker worker_id=%s queues=%s processes=%d journal=%s",
                self.config.worker_id,
                "*"
                if self.config.queue_names is None
                else ",".join(sorted(self.config.queue_names)),
                self.config.processes,
                self.journal.path,
            )
            self._apply_sqlite_defaults()
            self._beat()
            self._install_signal_handlers()
            self._start_watcher()
            self._start_preparer()
            self._find_dead_instances()
            self._read_journal(initial=True)
            self._start_history_keeper()
            self._pool = self._new_pool()
            exit_code = self._loop()
        finally:
            self._watch_stop.set()
            self._to_prepare.put(None)
            self._restore_signal_handlers()
            if self._pool is not None:
                self._pool.shutdown(wait=True, cancel_futures=True)
            # With nothing of ours left RUNNING, every state in our log is published.
            clean = not self._in_flight and not self._unwritten
            self._result_log.close(remove=clean)
            self.journal.remove_heartbeat(self.instance)
            self.journal.close()
            instance_lock.release()
            if clean:
                # Otherwise the next supervisor finds the lock free and recovers our tasks.
                (self.journal.workers_dir / f"{self.instance}.lock").unlink(missing_ok=True)
        return exit_code

    def _loop(self) -> int:
        while self._in_flight or self._unwritten or not self._stopping:
            if self._signals >= 2:
                self._terminate_children()
                if self._unwritten:
                    # Tasks that did finish need not run again: one try to record them.
                    self._write_states()
                logger.warning(
                    "Stopped worker_id=%s at once; %d running task(s) will be recovered "
                    "on the next start",
                    self.config.worker_id,
                    len(self._in_flight),
                )
                return EXIT_FORCED_STOP
            self._submit_ready()
            if self._is_batch_done():
                logger.info(
                    "No more tasks to run for worker_id=%s - exiting gracefully.",
                    self.config.worker_id,
                )
                break
            self._handle_events(timeout=self._seconds_to_wait())
        logger.info("Worker worker_id=%s stopped", self.config.worker_id)
        return EXIT_OK

    def _apply_sqlite_defaults(self) -> None:
        """Let concurrent tasks wait for SQLite's write lock (see ``sqlite``); say so once."""
        if not self.config.backend.backend_options.sqlite_defaults:
            return
        for applied in sqlite.apply_sqlite_defaults():
            logger.info(
                "SQLite database %r: worker processes use %s, so that concurrent tasks wait "
                "for each other instead of failing with 'database is locked' (to keep your "
                "settings as they are, set OPTIONS['sqlite_defaults'] = False in TASKS[%r])",
                applied.alias,
                applied.describe(),
                self.config.backend.alias,
            )

    def _is_batch_done(self) -> bool:
        if self._in_flight or self._unwritten:
            return False
        if self._max_tasks_reached():
            return True
        if not self.config.batch or self._has_due_task() or self._awaits_retry():
            return False
        # One last look, for tasks enqueued while the batch ran.
        self._read_journal()
        return not self._has_due_task()

    def _awaits_retry(self) -> bool:
        """A batch sees the tasks it ran through their retries, backoff included."""
        waiting = {record.id for _, _, record in self._waiting}
        self._retrying &= waiting  # claimed since, or by another supervisor
        return bool(self._retrying)

    def _max_tasks_reached(self) -> bool:
        return self.config.max_tasks is not None and self._claimed >= self.config.max_tasks

    # -- events ------------------------------------------------------------------------------

    def _seconds_to_wait(self) -> float:
        timeout = POLL_INTERVAL_S
        if self._write_failed or self._claim_paused_until:
            timeout = WRITE_RETRY_S
        elif self._unwritten:
            commit_at = self._unwritten_since + GROUP_COMMIT_WINDOW_S
            timeout = max(0.0, commit_at - time.monotonic())
        if self._waiting and not self._stopping:
            timeout = min(timeout, max(0.0, self._waiting[0][0] - time.time()))
        if self._deadlines:
            timeout = min(timeout, max(0.0, min(self._deadlines.values()) - time.monotonic()))
        return min(timeout, max(0.0, self._next_beat - time.monotonic()))

    def _beat(self) -> None:
        """Write this supervisor's heartbeat (see ``heartbeat``); a failure only logs."""
        self._next_beat = time.monotonic() + HEARTBEAT_INTERVAL_S
        queues = self.config.queue_names
        beat = Heartbeat(
            instance=self.instance,
            worker_id=self.config.worker_id,
            pid=os.getpid(),
            host=HOST,
            backend=self.config.backend.alias,
            processes=self.config.processes,
            queues=None if queues is None else sorted(queues),
            started_at=self._started_at,
            beat_at=timezone.now(),
        )
        try:
            self.journal.write_heartbeat(self.instance, beat.to_json())
        except OSError as error:
            logger.warning("Cannot write the heartbeat of worker_id=%s: %s", beat.worker_id, error)

    def _handle_events(self, timeout: float) -> None:
        if time.monotonic() >= self._next_beat:
            self._beat()
        try:
            events = [self._events.get(timeout=timeout)]
        except queue.Empty:
            events = [("poll", None)]
        while True:
            try:
                events.append(self._events.get_nowait())
            except queue.Empty:
                break
        finished: list[Future[execution.Outcome]] = []
        journal_changed = False
        for kind, value in events:
            if kind == "done":
                finished.append(value)
            elif kind == "broken":
                self._exit_codes.update(value)
            elif kind == "signal":
                self._on_stop_signal(value)
            else:
                journal_changed = True
        if finished:
            self._collect_finished(finished)
            # Free processes get their next task before the group commit's sync, so that
            # they run while it waits for the disk; tasks finishing meanwhile join the next
            # group. Until the sync, a crash re-runs those finished tasks (at least once).
            self._submit_ready()
        if self._unwritten and self._is_commit_due():
            self._write_states()
        self._kill_overdue_tasks()
        if journal_changed and not self._stopping:
            self._read_journal()

    def _on_stop_signal(self, signum: int) -> None:
        self._signals += 1
        if self._signals == 1:
            self._stopping = True
            logger.warning(
                "Received %s - shutting down gracefully, waiting for %d running task(s)... "
                "(send it again to stop them now)",
                signal.Signals(signum).name,
                len(self._in_flight),
            )

    def _install_signal_handlers(self) -> None:
        self._previous_handlers = {
            signum: signal.signal(signum, self._on_signal)
            for signum in (signal.SIGTERM, signal.SIGINT)
        }

    def _restore_signal_handlers(self) -> None:
        for signum, handler in getattr(self, "_previous_handlers", {}).items():
            signal.signal(signum, handler)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._events.put_nowait(("signal", signum))

    def _start_history_keeper(self) -> None:
        thread = threading.Thread(target=self._keep_history, name="procpool-history", daemon=True)
        thread.start()

    def _keep_history(self) -> None:
        """Now and every HISTORY_INTERVAL_S: summarize, mark done, prune by retention.

        A thread of its own with its own Journal (no shared open directories), so that a
        long history never holds up claims; skipped while another process holds the
        history lock (another supervisor's pass, a prune). A pass cut short by exit is
        finished by the next one.
        """
        own_journal = journal.Journal(self.journal.path, durable=self.journal.durable)
        retention = self.config.backend.backend_options.retention
        try:
            while not self._watch_stop.is_set():
                self._history_pass(own_journal, retention)
                self._watch_stop.wait(HISTORY_INTERVAL_S)
        finally:
            own_journal.close()

    def _history_pass(self, own_journal: journal.Journal, retention: Any) -> None:
        try:
            with history.history_writer(own_journal, blocking=False) as held:
                if not held:
                    return
                survey = history.survey(own_journal, write=True, retention=retention)
        except OSError as error:
            logger.warning("Cannot keep the journal's history: %s", error)
            return
        if survey.pruned:
            logger.info(
                "Pruned %d task(s) past their retention (%s); %d segment(s) removed",
                sum(survey.pruned.values()),
                ", ".join(f"{count} {status}" for status, count in sorted(survey.pruned.items())),
                survey.pruned_segments,
            )

    def _start_preparer(self) -> None:
        thread = threading.Thread(
            target=self._prepare_result_files, name="procpool-prepare", daemon=True
        )
        thread.start()

    def _prepare_result_files(self) -> None:
        """Make spare result files for queued tasks, on another core than the claims.

        A file creation cost more than the rest of a claim on ext4 (a new inode); made
        here ahead of time, the claim only links the spare into place. A thread of its
        own with its own Journal, like the pruner; a spare that is not ready in time is
        no matter, the claim then creates the file itself.
        """
        own_journal = journal.Journal(self.journal.path, durable=self.journal.durable)
        own_journal.keep_directories_open()
        try:
            while (record_id := self._to_prepare.get()) is not None:
                with contextlib.suppress(OSError):
                    own_journal.prepare_result_file(record_id)
        finally:
            own_journal.close()

    def _start_watcher(self) -> None:
        thread = threading.Thread(target=self._watch, name="procpool-watch", daemon=True)
        thread.start()

    def _watch(self) -> None:
        """Turn filesystem notifications on the segments into wake-ups (ms, not a poll)."""
        try:
            for _changes in watchfiles.watch(
                self.journal.segments_dir,
                watch_filter=None,
                debounce=1,
                step=1,
                stop_event=self._watch_stop,
                raise_interrupt=False,
            ):
                self._events.put(("journal", None))
        except Exception:
            logger.exception("Journal notifications failed; polling every %ss", POLL_INTERVAL_S)

    # -- reading the journal -----------------------------------------------------------------

    def _read_journal(self, *, initial: bool = False) -> None:
        with_state: dict[str, frozenset[str] | None] = {}  # per segment, for the start only
        for item in self._tail.read_new():
            if isinstance(item, journal.Quarantined):
                self._quarantine(item)
            elif isinstance(item, journal.Requeue):
                self._on_requeue(item)
            elif self.config.serves(item.queue_name):
                # A new line has no state yet; at start every state must be looked at.
                state = self._state_at_start(item.id, with_state) if initial else None
                self._consider(item, state)
        self._release_dead_instances()

    def _state_at_start(
        self, record_id: str, with_state: dict[str, frozenset[str] | None]
    ) -> journal.State | None:
        segment = record_id.partition("-")[0]
        if segment not in with_state:
            try:
                with_state[segment] = self.journal.ids_with_state(segment)
            except journal.JournalError:
                with_state[segment] = None  # _read_state says why, task by task
        ids = with_state[segment]
        if ids is not None and record_id not in ids:
            return None  # never claimed; a claim re-reads the state under the lock anyway
        return self._read_state(record_id)

    def _read_state(self, record_id: str) -> journal.State | None:
        try:
            return self.journal.read_state(record_id)
        except journal.JournalError as error:
            logger.error("Task id=%s skipped: %s (%s)", record_id, error.strerror, error.filename)
            return _UNUSABLE

    def _quarantine(self, bad: journal.Quarantined) -> None:
        try:
            is_new = self.journal.quarantine(bad)
        except OSError as error:
            logger.error(
                "Cannot quarantine segment=%s offset=%d: %s", bad.segment, bad.offset, error
            )
            is_new = True
        if is_new:
            self._quarantined += 1
            logger.warning(
                "Quarantined an unreadable record segment=%s offset=%d reason=%s "
                "(%d quarantined since start)",
                bad.segment,
                bad.offset,
                bad.reason,
                self._quarantined,
            )

    def _on_requeue(self, marker: journal.Requeue) -> None:
        """A task is READY again: re-run after an interruption, or re-queued by hand."""
        try:
            record = self.journal.read_record(marker.id)
        except journal.RecordNotFound:
            return
        if not self.config.serves(record.queue_name):
            return
        state: journal.State | None = _UNUSABLE
        try:
            # A re-queue by hand counts from its marker; the result file may be behind
            # (the command was killed half-way), rarely: then publish it.
            if self.journal.is_behind(marker):
                with self.journal.history_lock():
                    state, _ = self.journal.publish_requeue(marker)
            else:
                state = self._read_state(marker.id)
        except journal.JournalError:
            state = self._read_state(marker.id)  # logs why
        except OSError as error:
            logger.error("Cannot re-queue task id=%s: %s", marker.id, error)
        self._consider(record, state)

    def _consider(self, record: journal.Record, state: journal.State | None) -> None:
        if state is None:
            self._to_prepare.put(record.id)
        if state is None or state.status == journal.READY:
            self._push(record, state.run_after if state else None)
        elif state.status == journal.RUNNING and not self._is_alive(state.owner):
            self._recover(record)

    def _push(self, record: journal.Record, run_after: datetime | None = None) -> None:
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

    def _has_due_task(self) -> bool:
        return bool(self._ready) or bool(self._waiting and self._waiting[0][0] <= time.time())

    # -- dead supervisors --------------------------------------------------------------------

    def _find_dead_instances(self) -> None:
        """Recover every supervisor that died, not only those with a task left RUNNING.

        Otherwise the lock file and result log of one that died idle stay forever.
        """
        for entry in os.scandir(self.journal.workers_dir):
            if entry.name.endswith(".lock"):
                self._is_alive(entry.name.removesuffix(".lock"))

    def _is_alive(self, instance: str | None) -> bool:
        if instance is None or instance in self._dead_instances:
            return False
        if instance == self.instance or instance in self._alive_instances:
            return True
        if not journal.is_instance_name(instance):
            # Not a name we give (a damaged or forged state): no lock file can be its,
            # and it must never become a path outside the journal.
            return False
        if not (self.journal.workers_dir / f"{instance}.lock").exists():
            return False
        lock = self.journal.worker_lock(instance)
        try:
            lock.acquire(blocking=False)
        except filelock.Timeout:
            self._alive_instances.add(instance)
            return True
        except OSError as error:
            # A planted symlink, say: never recover (and so perhaps re-run) its tasks.
            logger.error("Cannot tell whether supervisor instance=%s is alive: %s", instance, error)
            self._alive_instances.add(instance)
            return True
        # It died, and we hold its lock now: no other supervisor recovers its tasks.
        self._dead_instances[instance] = lock
        replayed = journal.replay_result_log(self.journal, instance)
        logger.warning(
            "Supervisor instance=%s died; recovering its tasks (%d finished states replayed)",
            instance,
            replayed,
        )
        return False

    def _release_dead_instances(self) -> None:
        for instance, lock in self._dead_instances.items():
            journal.remove_result_log(self.journal, instance)
            self.journal.remove_heartbeat(instance)
            lock.release()
            (self.journal.workers_dir / f"{instance}.lock").unlink(missing_ok=True)
        self._dead_instances.clear()

    def _recover(self, record: journal.Record) -> None:
        """Re-queue (or fail, after max_attempts) a task whose supervisor died."""
        with self.journal.claim_lock():
            state = self._read_state(record.id)
            if state is None or state.status != journal.RUNNING or self._is_alive(state.owner):
                return
            error = _error(
                TaskInterrupted,
                f"The worker {state.worker_ids[-1] if state.worker_ids else '?'} stopped "
                "before the task finished (supervisor killed, or stopped at once)",
            )
            self._retry_or_fail(record, state, error)
            self._write_states()

    def _retry_or_fail(
        self, record: journal.Record, state: journal.State, error: journal.TaskError
    ) -> None:
        """Queue a new attempt while attempts remain (``max_attempts``), else FAILED."""
        if len(state.worker_ids) < self.max_attempts:
            self._retry(record, state, error)
            return
        self._fail(record, state, error)
        logger.error(
            "Task id=%s path=%s queue=%s state=FAILED after %d attempt(s): %s",
            record.id,
            record.task_path,
            record.queue_name,
            len(state.worker_ids),
            error.traceback.strip(),
        )

    def _retry(
        self, record: journal.Record, state: journal.State, error: journal.TaskError
    ) -> None:
        """Queue a new attempt of an interrupted task, with what interrupted it."""
        self._finish(record, _ready_state(state, errors=(*state.errors, error)))
        logger.warning(
            "Task id=%s path=%s queue=%s re-queued as attempt %d: %s",
            record.id,
            record.task_path,
            record.queue_name,
            len(state.worker_ids) + 1,
            error.traceback.strip(),
        )

    # -- running tasks -----------------------------------------------------------------------

    def _new_pool(self) -> ProcessPoolExecutor:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["procpool_tasks._preload"])
        # No database socket may be shared with a child.
        connections.close_all()
        self._started = context.SimpleQueue()
        child_settings = execution.ChildSettings(
            verbosity=self.config.verbosity,
            supervisor_pid=os.getpid(),
            started=self._started,
            sqlite_defaults=self.config.backend.backend_options.sqlite_defaults,
        )
        return WorkerPool(
            max_workers=self.config.processes,
            mp_context=context,
            initializer=execution.init_child,
            initargs=(child_settings,),
            max_tasks_per_child=self.config.max_tasks_per_child,
            max_memory_mib=self.config.max_memory_per_child,
        )

    def _free_processes(self) -> int:
        free = self.config.processes - len(self._in_flight)
        if self.config.max_tasks is not None:
            free = min(free, self.config.max_tasks - self._claimed)
        return free

    def _submit_ready(self) -> None:
        if self._stopping or self._pool is None:
            return
        if self._claim_paused_until and time.monotonic() < self._claim_paused_until:
            return
        self._claim_paused_until = 0.0
        self._release_due()
        while self._ready and (free := self._free_processes()) > 0:
            picked = [heapq.heappop(self._ready)[-1] for _ in range(min(free, len(self._ready)))]
            for record in picked:
                self._queued.discard(record.id)
            for record, state in self._claim(picked):
                self._submit(record, state)
            if self._claim_paused_until:
                return

    def _release_due(self) -> None:
        now = time.time()
        while self._waiting and self._waiting[0][0] <= now:
            due_at, _, record = heapq.heappop(self._waiting)
            self._push_ready(record, due_at)

    def _claim(self, records: list[journal.Record]) -> list[tuple[journal.Record, journal.State]]:
        """Mark READY tasks RUNNING under the claim lock: each is claimed exactly once."""
        claimed = []
        with self.journal.claim_lock():
            for index, record in enumerate(records):
                state = self._read_state(record.id)
                if state is not None and state.status != journal.READY:
                    # Another supervisor claimed it, it finished, or procpool_handoff is
                    # moving it (HANDING_OFF) or moved it (HANDED_OFF) to another backend.
                    continue
                running = _running_state(record, state, self.config.worker_id, self.instance)
                try:
                    self.journal.write_state(running)
                except OSError as error:
                    logger.error(
                        "Cannot claim tasks (%s); trying again in %ss", error, WRITE_RETRY_S
                    )
                    for unclaimed in records[index:]:
                        self._push(unclaimed)
                    self._claim_paused_until = time.monotonic() + WRITE_RETRY_S
                    break
                claimed.append((record, running))
        self._claimed += len(claimed)
        return claimed

    def _submit(self, record: journal.Record, state: journal.State) -> None:
        assert self._pool is not None  # noqa: S101 (narrowing for mypy)
        logger.info(
            "Task id=%s path=%s queue=%s state=RUNNING attempt=%d",
            record.id,
            record.task_path,
            record.queue_name,
            len(state.worker_ids),
        )
        pool = self._pool
        timeout = self.config.options_for(record).timeout
        try:
            future = pool.submit(execution.run_job, execution.Job(record, state, timeout))
        except BrokenProcessPool:
            future = Future()
            future.set_exception(BrokenProcessPool("the pool broke before the task started"))
        else:
            _watch_new_processes(pool)
        self._in_flight[future] = _InFlight(record, state, pool, timeout)
        if timeout:
            # The child raises at the limit; a task that ignores it is killed this much
            # later. Counted from now: a free process starts the task at once.
            self._deadlines[record.id] = time.monotonic() + timeout + TIMEOUT_KILL_GRACE_S
        future.add_done_callback(functools.partial(self._on_done, pool))

    def _on_done(self, pool: ProcessPoolExecutor, future: Future[execution.Outcome]) -> None:
        """Runs in the pool's thread: forward the future, and who died if the pool broke.

        The pool fails its futures before it terminates the surviving children, so only
        the processes that died on their own have an exit code at this moment.
        """
        if not future.cancelled() and isinstance(future.exception(), BrokenProcessPool):
            # The executor keeps no public list of its processes.
            processes = dict(getattr(pool, "_processes", None) or {})
            exit_codes = {pid: p.exitcode for pid, p in processes.items()}
            self._events.put(("broken", {p: c for p, c in exit_codes.items() if c is not None}))
        self._events.put(("done", future))

    def _note_started_tasks(self) -> None:
        """Learn which process runs which task, for time limits and for deaths.

        Asked only when tasks finish or a time limit passes: each running task has put
        one message at most, so the pipe never fills, and a loop turn costs no poll.
        """
        while not self._started.empty():
            record_id, pid = self._started.get()
            self._pids[record_id] = pid

    def _kill_overdue_tasks(self) -> None:
        now = time.monotonic()
        overdue = [record_id for record_id, at in self._deadlines.items() if at <= now]
        if overdue:
            self._note_started_tasks()
        for record_id in overdue:
            pid = self._pids.get(record_id)
            if pid is not None:
                del self._deadlines[record_id]
                logger.warning("Task id=%s ignored its timeout; killing pid=%s", record_id, pid)
                self._timed_out_pids.add(pid)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

    def _collect_finished(self, futures: list[Future[execution.Outcome]]) -> None:
        self._note_started_tasks()
        broken = False
        for future in futures:
            flight = self._in_flight.pop(future)
            self._deadlines.pop(flight.record.id, None)
            pid = self._pids.pop(flight.record.id, None)
            try:
                outcome = future.result()
            except BrokenProcessPool:
                # Only the pool we use now needs replacing, not one replaced already.
                broken = broken or flight.pool is self._pool
                self._on_pool_broken(flight, pid)
                continue
            except CancelledError:  # never started: its pool was shut down first
                self._unclaim(flight.record, flight.state)
                continue
            except BaseException as error:  # the job could not be run at all
                outcome = execution.Outcome(
                    status=journal.FAILED,
                    finished_at=timezone.now(),
                    error=_error(type(error), f"The task could not be run: {error}"),
                )
            if outcome.unloadable:
                self._quarantine_record(flight.record, outcome)
            self._note_memory(pid, outcome)
            if outcome.retry:
                self._retry_later(flight, outcome)
                continue
            self._finish(flight.record, _finished_state(flight.state, outcome))
            self._log_finished(flight, outcome.status)
        if broken:
            self._replace_broken_pool()

    def _retry_later(self, flight: _InFlight, outcome: execution.Outcome) -> None:
        """READY again after the backoff of its retry policy, with this attempt's error."""
        policy = self.config.options_for(flight.record).retry
        attempt = len(flight.state.worker_ids)
        delay = policy.delay_after(attempt) if policy else 0.0
        error = outcome.error
        errors = flight.state.errors if error is None else (*flight.state.errors, error)
        run_after = timezone.now() + timedelta(seconds=delay)
        self._finish(flight.record, _ready_state(flight.state, errors=errors, run_after=run_after))
        self._retrying.add(flight.record.id)
        logger.warning(
            "Task id=%s path=%s queue=%s state=READY: attempt %d of %d raised %s; "
            "retrying in %.1fs",
            flight.record.id,
            flight.record.task_path,
            flight.record.queue_name,
            attempt,
            policy.attempts if policy else attempt,
            error.traceback.strip().splitlines()[-1] if error else "an error",
            delay,
        )

    def _note_memory(self, pid: int | None, outcome: execution.Outcome) -> None:
        limit = self.config.max_memory_per_child
        if limit is not None and outcome.memory_mib > limit:
            logger.info(
                "Worker process pid=%s uses %.0f MiB, over --max-memory-per-child %g MiB; "
                "replacing it",
                pid,
                outcome.memory_mib,
                limit,
            )

    def _log_finished(self, flight: _InFlight, status: str) -> None:
        logger.log(
            logging.INFO if status == journal.SUCCESSFUL else logging.WARNING,
            "Task id=%s path=%s queue=%s state=%s duration=%.3fs",
            flight.record.id,
            flight.record.task_path,
            flight.record.queue_name,
            status,
            time.monotonic() - flight.started,
        )

    def _quarantine_record(self, record: journal.Record, outcome: execution.Outcome) -> None:
        segment, offset = journal.parse_id(record.id)
        reason = outcome.error.traceback.strip().splitlines()[-1] if outcome.error else "?"
        self._quarantine(
            journal.Quarantined(segment, offset, reason, journal.encode_record(record))
        )

    def _on_pool_broken(self, flight: _InFlight, pid: int | None) -> None:
        """The process running this task died (FAILED), or another one did (re-run).

        A task that had not started is simply queued again, as if never claimed. One that
        was running in another process was stopped half-way through no fault of its own:
        it runs again as a new attempt whatever ``max_attempts`` says (each death fails
        the task that caused it, so this ends), with the interruption in its errors.
        """
        if pid is None:
            self._unclaim(flight.record, flight.state)
            return
        exit_code = self._exit_codes.get(pid)
        if exit_code is None:
            error = _interruption_error(self._exit_codes, self._timed_out_pids)
            self._retry(flight.record, flight.state, error)
            return
        if exit_code == -signal.SIGTERM and pid not in self._timed_out_pids:
            # Nothing of ours sends a running child SIGTERM: a process manager stopping
            # every process of the service did (systemd's default KillMode). A stop, not
            # a crash of the task: it runs again, as after a forced stop.
            error = _error(
                TaskInterrupted,
                f"The worker process (pid {pid}) running the task was stopped by SIGTERM "
                "from outside the worker (a process manager stopping every process?)",
            )
            self._retry_or_fail(flight.record, flight.state, error)
            return
        error = _death_error(pid, exit_code, pid in self._timed_out_pids, flight.timeout)
        self._fail(flight.record, flight.state, error)
        logger.error(
            "Task id=%s path=%s queue=%s state=FAILED: %s",
            flight.record.id,
            flight.record.task_path,
            flight.record.queue_name,
            error.traceback.strip(),
        )

    def _unclaim(self, record: journal.Record, state: journal.State) -> None:
        """Queue again a claimed task that never started: no attempt was made."""
        worker_ids = state.worker_ids[:-1]
        unclaimed = _ready_state(
            state,
            worker_ids=worker_ids,
            started_at=state.started_at if worker_ids else None,
            last_attempted_at=state.last_attempted_at if worker_ids else None,
        )
        self._finish(record, unclaimed)

    def _replace_broken_pool(self) -> None:
        logger.error("A worker process died; replacing the process pool")
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        self._exit_codes.clear()
        self._timed_out_pids.clear()
        # A stopping supervisor claims nothing more, so it needs no new processes.
        self._pool = None if self._stopping else self._new_pool()

    # -- writing states ----------------------------------------------------------------------

    def _finish(self, record: journal.Record, state: journal.State) -> None:
        """Queue a state for the next group commit; a READY one is run again after it."""
        if not self._unwritten:
            self._unwritten_since = time.monotonic()
        self._unwritten.append(state)
        if state.status == journal.READY:
            self._requeued[state.id] = (record, state)

    def _fail(self, record: journal.Record, state: journal.State, error: journal.TaskError) -> None:
        """Mark FAILED a task whose process could not say so itself (it died, or never
        ran); ``task_finished`` is sent here once the state is written."""
        failed = _failed_state(state, error)
        self._finish(record, failed)
        self._unannounced.append((record, failed))

    def _announce_failures(self) -> None:
        """Send ``task_finished`` for the FAILED states the supervisor decided."""
        unannounced, self._unannounced = self._unannounced, []
        for record, state in unannounced:
            try:
                result = build_task_result(record, state, load_task(record))
                compat.task_finished.send(sender=type(self.config.backend), task_result=result)
            except TaskNotLoadable:
                pass  # no Task to report it with; its record was quarantined
            except Exception:
                logger.exception("A task_finished receiver failed for task id=%s", record.id)

    def _is_commit_due(self) -> bool:
        """Whether to sync now, or let states that finish soon share the sync.

        One sync per task cost more than the task itself under load; waiting a few ms
        for the other processes' tasks to finish makes groups, and a crash meanwhile
        only re-runs tasks whose results were never acknowledged.
        """
        return (
            not self._in_flight
            or self._stopping
            or self._write_failed
            or time.monotonic() - self._unwritten_since >= GROUP_COMMIT_WINDOW_S
        )

    def _write_states(self) -> None:
        """Group-commit the queued states (one sync); on failure keep them and retry."""
        assert self._result_log is not None  # noqa: S101 (narrowing for mypy)
        try:
            self._result_log.commit(self._unwritten)
        except OSError as error:
            self._write_failed = True
            logger.error(
                "Cannot write %d result(s) to the journal (%s); retrying in %ss",
                len(self._unwritten),
                error,
                WRITE_RETRY_S,
            )
            return
        self._write_failed = False
        self._unwritten.clear()
        self._announce_failures()
        requeued, self._requeued = self._requeued, {}
        for record, state in requeued.values():
            self._push(record, state.run_after)
            try:
                self.journal.append_requeue(record.id)  # wakes the other supervisors
            except OSError as error:
                logger.warning("Cannot announce re-queued task id=%s: %s", record.id, error)

    def _terminate_children(self) -> None:
        """Second signal: stop the children now; their tasks stay RUNNING, recoverable."""
        if self._pool is None:
            return
        # The executor keeps no public list of its processes.
        processes = list(getattr(self._pool, "_processes", {}).values())
        for process in processes:
            process.terminate()
        deadline = time.monotonic() + KILL_GRACE_S
        for process in processes:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
                process.join()
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._pool = None


def _watch_new_processes(pool: ProcessPoolExecutor) -> None:
    """Make the pool watch a process that ``submit`` may just have started.

    ``submit`` wakes the pool's manager thread *before* it starts a new process (seen in
    CPython 3.11 and 3.12), so the manager may wait on without that process and notice its
    death only when some other task finishes, or never: its task would stay RUNNING and
    its slot busy. A second wake-up, now that the process is in the pool, closes that window.
    """
    wakeup = getattr(pool, "_executor_manager_thread_wakeup", None)  # no public hook
    if wakeup is not None:
        with contextlib.suppress(OSError, ValueError):  # the pool broke meanwhile
            wakeup.wakeup()


#: Stands for a state that cannot be read safely: neither READY nor recoverable.
_UNUSABLE = journal.State(id="", status="UNUSABLE", version=0)


def _running_state(
    record: journal.Record, state: journal.State | None, worker_id: str, instance: str
) -> journal.State:
    now = timezone.now()
    return journal.State(
        id=record.id,
        status=journal.RUNNING,
        version=(state.version if state else 0) + 1,
        worker_ids=(*(state.worker_ids if state else ()), worker_id),
        owner=instance,
        started_at=(state.started_at if state else None) or now,
        last_attempted_at=now,
        errors=state.errors if state else (),
    )


def _finished_state(running: journal.State, outcome: execution.Outcome) -> journal.State:
    return replace(
        running,
        status=outcome.status,
        version=running.version + 1,
        owner=None,
        finished_at=outcome.finished_at,
        errors=running.errors if outcome.error is None else (*running.errors, outcome.error),
        return_value=outcome.return_value,
    )


def _ready_state(state: journal.State, **changes: Any) -> journal.State:
    return replace(state, status=journal.READY, version=state.version + 1, owner=None, **changes)


def _failed_state(state: journal.State, error: journal.TaskError) -> journal.State:
    return replace(
        state,
        status=journal.FAILED,
        version=state.version + 1,
        owner=None,
        finished_at=timezone.now(),
        errors=(*state.errors, error),
    )


def _death_error(
    pid: int, exit_code: int, timed_out: bool, task_timeout: float | None
) -> journal.TaskError:
    if timed_out:
        return _error(
            execution.TaskTimeoutError,
            f"The task exceeded its timeout of {task_timeout:g}s and did not stop; "
            f"its worker process (pid {pid}) was killed",
        )
    how = _how_it_died(exit_code, timed_out=False)
    return _error(WorkerProcessDied, f"The worker process (pid {pid}) running the task {how}")


def _interruption_error(exit_codes: dict[int, int], timed_out: set[int]) -> journal.TaskError:
    """For a task stopped only because another process of its pool died."""
    deaths = " and ".join(
        f"(pid {pid}) {_how_it_died(code, timed_out=pid in timed_out)}"
        for pid, code in sorted(exit_codes.items())
    )
    return _error(
        TaskInterrupted,
        f"Another worker process {deaths or 'died'}; the process pool was replaced and this "
        "task was stopped before it finished",
    )


def _how_it_died(exit_code: int, *, timed_out: bool) -> str:
    if timed_out:
        return "was killed for running past its timeout"
    if exit_code < 0:
        name = signal.Signals(-exit_code).name
        hint = " (perhaps out of memory?)" if -exit_code == signal.SIGKILL else ""
        return f"was killed by {name}{hint}"
    return f"exited with code {exit_code}"


def _error(exception_class: type[BaseException], message: str) -> journal.TaskError:
    path = f"{exception_class.__module__}.{exception_class.__qualname__}"
    return journal.TaskError(exception_class_path=path, traceback=f"{path}: {message}\n")
