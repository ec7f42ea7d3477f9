"""The worker's supervisor: claims ready tasks from the journal and runs them in a pool.

Flow::

    fork   the zygote, which forks the worker processes, the one that makes result
           files ahead of claims and the one that commits finished states (``zygote``,
           ``background``, ``committer``): before this process opens
           its files or starts a thread, so that they inherit none of them
    open   lock our instance, open our result log, try the claim lock: a journal we
           cannot write (read-only, full, a planted symlink) exits 3 before any claim
    start  recover the supervisors that died (replay their result logs); read every
           segment into the ready set, re-queueing the tasks they left RUNNING
    loop   enqueue the periodic tasks due now (``periodic``); claim the best ready tasks,
           one per idle process, and one to queue behind each busy process running a short
           task, and send them (``dispatch``); wait in one selector for an
           outcome, a process's exit, a journal change, a commit, a signal, the next due
           ``run_after`` or the next tick; on an outcome, send that process its next task
           first, then hand the finished state to the committer, which syncs them in
           groups in a process of its own
    stop   first SIGTERM/SIGINT: claim nothing more, let running tasks finish, exit 0;
           second: stop the processes at once; their tasks stay RUNNING and the next
           supervisor to start recovers them; a second signal after the loop ended, up
           to the exit, ends the process with exit 1 too
    reload a request from the reloader (``reload``): claim nothing more, let running
           tasks finish within its grace period, then stop them and record them READY
           again, not as an attempt; exit 0, leaving nothing for recovery

Each part has a module of its own in this package (see its docstring).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import secrets
import selectors
import signal
import time
from dataclasses import dataclass
from types import FrameType
from typing import Any

from django.utils import timezone

from .. import journal, logs, sqlite
from ..backend import ProcPoolBackend
from ..journal.heartbeats import HEARTBEAT_INTERVAL_S, HOST, Heartbeat
from ..options import TaskOptions
from ..periodic import scheduler
from . import child, states
from .background import HistoryKeeper, ResultFilePreparer, make_result_files
from .committer import Committer, commit_states
from .dispatch import Dispatcher
from .intake import Intake
from .outcomes import Outcomes
from .pool import Pool
from .ready import ReadySet
from .recovery import Recovery
from .reload import ReloadRequest, ReloadRequests
from .states import TaskInterrupted, WorkerProcessDied
from .unserved import UnservedQueues
from .wakeups import JournalWatch, WakePipe
from .zygote import COMMITTER, PREPARER, WORKER, Zygote

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

#: The signals that stop the supervisor: first gracefully, second at once.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)

#: How often an idle supervisor reads the journal even without a notification.
POLL_INTERVAL_S = 2.0
#: On a forced stop, how long processes get between SIGTERM and SIGKILL.
KILL_GRACE_S = 5.0


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
    reload_requests: ReloadRequests | None = None  # started by the reloader (``reload``)

    def serves(self, queue_name: str) -> bool:
        return self.queue_names is None or queue_name in self.queue_names

    def options_for(self, record: journal.Record) -> TaskOptions:
        """The retry policy and timeout the record's task runs with."""
        return self.backend.backend_options.for_task(
            record.task_path, timeout=self.task_timeout, decorated=record.options
        )


def run_supervisor(config: SupervisorConfig) -> int:
    """Run until stopped (or, with --batch, until nothing is ready); return the exit code."""
    # First, before this process opens anything else or starts a thread (``zygote``).
    instance = secrets.token_hex(8)
    serves = {
        WORKER: functools.partial(child.serve, settings=_child_settings(config)),
        PREPARER: functools.partial(
            make_result_files,
            path=str(config.backend.journal.path),
            durable=config.backend.journal.durable,
            supervisor_pid=os.getpid(),
        ),
        COMMITTER: functools.partial(
            commit_states,
            path=str(config.backend.journal.path),
            durable=config.backend.journal.durable,
            instance=instance,
            supervisor_pid=os.getpid(),
        ),
    }
    zygote = Zygote(serves, close_in_zygote=_reload_fds(config))
    try:
        supervisor = Supervisor(config, zygote, instance)
        try:
            supervisor.open()
        except journal.JournalError as error:
            logger.error("Cannot use the journal %s: %s", error.filename, error.strerror)
            return EXIT_JOURNAL_UNUSABLE
        return supervisor.run()
    finally:
        zygote.close()  # once more if the supervisor closed it: it always lets it go


def _child_settings(config: SupervisorConfig) -> child.ChildSettings:
    return child.ChildSettings(
        verbosity=config.verbosity,
        supervisor_pid=os.getpid(),
        max_tasks=config.max_tasks_per_child,
        max_memory_mib=config.max_memory_per_child,
    )


def _reload_fds(config: SupervisorConfig) -> list[int]:
    """The reloader's pipe, which is for the supervisor alone."""
    requests = config.reload_requests
    return [] if requests is None else [requests.fileno()]


class Supervisor:
    """One supervisor instance: its loop, signals and lifecycle; see the module docstring."""

    def __init__(self, config: SupervisorConfig, zygote: Zygote, instance: str) -> None:
        self.config = config
        self._zygote = zygote
        self.journal = config.backend.journal
        self.instance = instance  # 16 hex digits: its lock, heartbeat and WAL are named so
        self.ready = ReadySet()
        self._selector = selectors.DefaultSelector()
        self._wake = WakePipe()
        self._signals: list[int] = []  # as they came; appended by the handler
        self._signals_handled = 0
        self._stop_level = 0  # 1: stopping gracefully (or for a reload), 2: at once
        self._reload: ReloadRequest | None = None
        self._reload_deadline: float | None = None  # monotonic; then running tasks stop
        self._closed = False  # the loop ended and everything is let go
        self._instance_lock = self.journal.worker_lock(self.instance)
        self._result_log: journal.ResultLog | None = None
        self._started_at = timezone.now()
        self._next_beat = 0.0
        self._next_poll = 0.0
        self._schedules = (
            None if config.batch else scheduler.Scheduler(config.backend, self.journal)
        )

    # -- lifecycle ---------------------------------------------------------------------------

    def open(self) -> None:
        """Take everything the supervisor writes to before it claims anything.

        Raises JournalError (a read-only or full disk, a symlink planted for a lock) so
        that the command exits with a clear message instead of a traceback mid-run.
        """
        # First: from here on a signal is recorded, never the death of a half-started
        # supervisor that leaves its lock for the next one to report as "died".
        self._install_signal_handlers()
        try:
            self.journal.ensure()
            self.journal.keep_directories_open()
            self._instance_lock.acquire()
            # The log's own Journal, for the commits the supervisor makes itself while
            # no committing process runs (``committer``).
            committer_journal = journal.Journal(self.journal.path, durable=self.journal.durable)
            committer_journal.keep_directories_open()
            self._result_log = journal.ResultLog(committer_journal, self.instance)
            with self.journal.claim_lock():
                pass
        except journal.JournalError:
            self._restore_wakeup_fd()
            self._close_instance(clean=True)
            raise
        except OSError as error:
            self._restore_wakeup_fd()
            self._close_instance(clean=True)
            raise journal.JournalError.from_os_error(error) from error

    def run(self) -> int:
        """Run the loop on an opened supervisor; return the exit code."""
        assert self._result_log is not None  # noqa: S101 (open() comes first)
        self._log_start()
        if self._schedules is not None:
            self._schedules.log_schedules()
        self._log_sqlite_defaults()
        self._beat()
        self._watch = JournalWatch(self.journal.segments_dir, self._wake)
        self.committer = Committer(
            self._result_log, functools.partial(self._zygote.spawn, COMMITTER), self._selector
        )
        self._preparer = ResultFilePreparer(
            functools.partial(self._zygote.spawn, PREPARER), self._selector
        )
        self.outcomes = Outcomes(
            self.journal,
            self.committer,
            self.ready,
            options_for=self.config.options_for,
            sender=type(self.config.backend),
        )
        recovery = Recovery(self.journal, self.instance, self.outcomes)
        self._unserved = self._watch_unserved()
        self.intake = Intake(
            self.journal,
            serves=self.config.serves,
            ready=self.ready,
            recovery=recovery,
            committer=self.committer,
            prepare=self._preparer.prepare,
            unserved=self._unserved.note if self._unserved else _ignore,
            stop_cancelled=lambda task_id: self.dispatcher.cancel(task_id),
        )
        self.dispatcher = Dispatcher(
            self.config, self.journal, self.instance, self.ready, self.outcomes, recovery,
            quarantine=self.intake.quarantine,
        )  # fmt: skip
        self._history = HistoryKeeper(self.journal, self.config.backend.backend_options.retention)
        try:
            self._register_wakeups()
            recovery.find_dead()
            self.intake.read(initial=True)
            self.dispatcher.pool = self._new_pool()
            exit_code = self._loop()
        finally:
            self._close()
        self._closed = True  # from now on a second signal exits at once (``_on_signal``)
        if self._signals_handled + len(self._signals) >= 2:
            return EXIT_FORCED_STOP  # the second came while it closed
        return exit_code

    def _log_start(self) -> None:
        queues = self.config.queue_names
        logger.info(
            "Starting worker worker_id=%s queues=%s processes=%d journal=%s",
            self.config.worker_id,
            "*" if queues is None else ",".join(sorted(queues)),
            self.config.processes,
            self.journal.path,
        )
        requests = self.config.reload_requests
        if requests is not None and requests.reloaded_for is not None:
            logger.info("Reloaded: running the new code (changed %s)", requests.reloaded_for)

    def _watch_unserved(self) -> UnservedQueues | None:
        """What says so when READY tasks wait in a queue nobody serves; None for '*'."""
        served = self.config.queue_names
        if served is None:
            return None
        unserved = UnservedQueues(
            self.journal,
            backend_alias=self.config.backend.alias,
            known_queues=self.config.backend.queues,
            served=served,
        )
        unserved.look()  # not to keep the backlog of the queues others serve
        return unserved

    def _close(self) -> None:
        """Stop the helpers and the processes; keep what the next supervisor recovers.

        The signal handlers stay until the process exits: a second signal still means a
        stop at once, exit 1, not the death of the process by the signal.
        """
        self._restore_wakeup_fd()
        self._watch.close()
        self._preparer.stop()
        self._history.stop()
        if self.dispatcher.pool is not None:
            self.dispatcher.pool.close()
        unwritten = self.committer.stop(
            wait_for_disk=self._stop_level < 2,
            give_up=lambda: self._signals_handled + len(self._signals) >= 2,
        )
        self._zygote.close()
        self.outcomes.on_committed()
        self._selector.close()
        self._wake.close()
        # With nothing of ours left RUNNING, every state in our log is published.
        self._close_instance(clean=not self.dispatcher.in_flight and not unwritten)

    def _close_instance(self, *, clean: bool) -> None:
        """Let the instance go; unless ``clean``, the next supervisor recovers its tasks."""
        if self._result_log is not None:
            with contextlib.suppress(OSError):
                self._result_log.close(remove=clean)
        with contextlib.suppress(OSError):  # a read-only journal has none to remove
            self.journal.remove_heartbeat(self.instance)
        self.journal.close()
        if self._instance_lock.is_locked:
            self._instance_lock.release()
            if clean:
                with contextlib.suppress(OSError):
                    self.journal.remove_worker_lock(self.instance)

    # -- the loop ----------------------------------------------------------------------------

    def _loop(self) -> int:
        # A turn's lines are written in one write, before the selector waits (``_wait``).
        with logs.held_lines():
            return self._turns()

    def _turns(self) -> int:
        self._handle_signals()  # those that came while it started: before any claim
        self._read_reload_requests()
        while self.dispatcher.in_flight or self.committer.is_busy() or not self._stop_level:
            if self._stop_level >= 2:
                return self._stop_now()
            self._stop_for_reload_if_due()
            if not self._stop_level:
                self._fire_schedules()
                self.dispatcher.dispatch()
            if self._is_batch_done():
                logger.info(
                    "No more tasks to run for worker_id=%s - exiting gracefully.",
                    self.config.worker_id,
                )
                break
            self._wait(self._seconds_to_wait())
        logger.info("Worker worker_id=%s stopped", self.config.worker_id)
        return EXIT_OK

    def _wait(self, timeout: float) -> None:
        """Wait for anything to happen (or ``timeout``), then handle all that happened."""
        if time.monotonic() >= self._next_beat:
            self._beat()
            if self._unserved is not None:
                self._unserved.check()
        self._preparer.flush()  # the ids read in since the last turn, once claims are made
        self.committer.send()  # the states decided on this turn
        logs.write_held()  # the lines logged on this turn
        if self.committer.seconds_to_wait() == 0:
            timeout = 0  # it committed them itself (its process just ended)
        events = self._selector.select(timeout)
        journal_changed = time.monotonic() >= self._next_poll
        for key, _ in events:
            kind = key.data if isinstance(key.data, str) else key.data[0]
            if kind == "wake":
                self._wake.drain()
                journal_changed |= not self._watch.uses_inotify
            elif kind == "journal":
                self._watch.drain()
                journal_changed = True
            elif kind == "reload":
                self._read_reload_requests()
            elif kind == "commit":
                self.committer.receive()
            elif kind == "preparer":
                self._preparer.on_exit()
            else:
                self._on_process_event(*key.data)
        self._handle_signals()
        self.outcomes.on_committed()
        self.dispatcher.kill_overdue()
        if journal_changed and not self._stop_level:
            self._next_poll = time.monotonic() + POLL_INTERVAL_S
            self.intake.read()

    def _on_process_event(self, kind: str, worker: Any) -> None:
        pool = self.dispatcher.pool
        if pool is None or worker not in pool.workers:
            return  # gone already: the other event of its end was handled first
        if kind == "outcome":
            self.dispatcher.on_outcome(worker, send_next=not self._stop_level)
        else:
            self.dispatcher.on_exit(worker)

    def _seconds_to_wait(self) -> float:
        waits = [
            POLL_INTERVAL_S,
            self._next_beat - time.monotonic(),
            self.dispatcher.seconds_to_next_kill(),
            self.dispatcher.seconds_to_claims(),
            self.committer.seconds_to_wait(),
        ]
        if self._reload_deadline is not None:
            waits.append(self._reload_deadline - time.monotonic())
        if not self._stop_level:
            waits.append(self.ready.seconds_to_next_due())
            if self._schedules is not None:
                waits.append(self._schedules.seconds_to_next_look())
            pool = self.dispatcher.pool
            waits.append(pool.seconds_to_next_start() if pool is not None else None)
        return max(0.0, min(wait for wait in waits if wait is not None))

    def _fire_schedules(self) -> None:
        """Enqueue the periodic tasks due now (``periodic``), and read them in at once."""
        if self._schedules is not None and self._schedules.fire_due():
            self.intake.read()

    def _is_batch_done(self) -> bool:
        if self.dispatcher.in_flight or self.committer.is_busy():
            return False
        max_tasks = self.config.max_tasks
        if max_tasks is not None and self.dispatcher.claimed >= max_tasks:
            return True
        if not self.config.batch or self.ready.has_due() or self._awaits_retry():
            return False
        # One last look, for tasks enqueued while the batch ran. It may also recover the
        # tasks of a supervisor that died meanwhile: their states, still on their way to
        # the disk, are re-queued (or failed) only once committed, so the batch waits.
        self.intake.read()
        return not (self.ready.has_due() or self.committer.is_busy())

    def _awaits_retry(self) -> bool:
        """A batch sees the tasks it ran through their retries, backoff included."""
        retrying = self.outcomes.retrying
        retrying &= self.ready.waiting_ids()  # claimed since, or by another supervisor
        return bool(retrying)

    def _stop_now(self) -> int:
        """Second signal: stop the processes now; their tasks stay RUNNING, recoverable."""
        self.dispatcher.stop_processes_now(KILL_GRACE_S)
        logger.warning(
            "Stopped worker_id=%s at once; %d running task(s) will be recovered on the next start",
            self.config.worker_id,
            len(self.dispatcher.in_flight),
        )
        return EXIT_FORCED_STOP

    # -- reloading ---------------------------------------------------------------------------

    def _read_reload_requests(self) -> None:
        requests = self.config.reload_requests
        if requests is None:
            return
        for request in requests.read():
            self._begin_reload(request)
        if requests.closed:  # the reloader is gone, and its end stays readable: stop looking
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(requests)

    def _begin_reload(self, request: ReloadRequest) -> None:
        """Stop claiming; running tasks get the grace period to finish (``reload``)."""
        if self._stop_level:
            return  # stopping on a signal already: the reloader waits for that
        self._stop_level = 1
        self._reload = request
        self.dispatcher.recall_queued()  # claim nothing more: nor start a queued task
        running = self.dispatcher.running
        if not running:
            logger.info("Reloading: changed %s", request.changed)
            return
        self._reload_deadline = time.monotonic() + request.grace_period_s
        logger.info(
            "Reloading: changed %s; stopping %d running task%s within %g s",
            request.changed,
            running,
            "" if running == 1 else "s",
            request.grace_period_s,
        )

    def _stop_for_reload_if_due(self) -> None:
        """Past the grace period: stop the running tasks; they run again, no attempt used."""
        deadline = self._reload_deadline
        if deadline is None or time.monotonic() < deadline or self._reload is None:
            return
        self._reload_deadline = None
        running = self.dispatcher.running
        if not running:
            return
        logger.warning(
            "Tasks still running after the %gs grace period; stopping %d task(s), they run "
            "again under the new code (not counted as an attempt)",
            self._reload.grace_period_s,
            running,
        )
        self.dispatcher.stop_for_reload(KILL_GRACE_S, states.reload_error(self._reload.changed))

    # -- signals and wake-ups ----------------------------------------------------------------

    def _register_wakeups(self) -> None:
        self._selector.register(self._wake, selectors.EVENT_READ, "wake")
        if self._watch.uses_inotify:
            self._selector.register(self._watch, selectors.EVENT_READ, "journal")
        if self.config.reload_requests is not None:
            self._selector.register(self.config.reload_requests, selectors.EVENT_READ, "reload")

    def _install_signal_handlers(self) -> None:
        # The C handler writes to the wake pipe, so the selector returns at once.
        self._previous_wakeup_fd = signal.set_wakeup_fd(
            self._wake.write_fd, warn_on_full_buffer=False
        )
        for signum in STOP_SIGNALS:
            signal.signal(signum, self._on_signal)
        # A reloader starts us with them blocked (``reload``): what came meanwhile comes now.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)

    def _restore_wakeup_fd(self) -> None:
        """Before the wake pipe closes: the C handler must not write to its reused number."""
        if hasattr(self, "_previous_wakeup_fd"):
            signal.set_wakeup_fd(self._previous_wakeup_fd)
            del self._previous_wakeup_fd

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signals.append(signum)  # the loop decides what it means
        if self._closed and self._signals_handled + len(self._signals) >= 2:
            # No loop is left to decide, and nothing to stop or to save: a second signal
            # ends the process now, with the exit code of a stop at once.
            os._exit(EXIT_FORCED_STOP)

    def _handle_signals(self) -> None:
        while self._signals:
            signum = self._signals.pop(0)
            self._signals_handled += 1
            if self._signals_handled >= 2:
                self._stop_level = 2
            else:
                self._stop_level = 1
                self._reload_deadline = None  # a stop, not a reload: running tasks finish
                self.dispatcher.recall_queued()  # claim nothing more: nor start a queued task
                logger.warning(
                    "Received %s - shutting down gracefully, waiting for %d running task(s)"
                    "... (send it again to stop them now)",
                    signal.Signals(signum).name,
                    self.dispatcher.running,
                )

    # -- set-up ------------------------------------------------------------------------------

    def _log_sqlite_defaults(self) -> None:
        """Say what the app gave this project's SQLite databases (see ``sqlite``), once."""
        process = sqlite.process_defaults()
        for applied in process.applied if process is not None else ():
            logger.info(
                "SQLite database %r: every process with procpool_tasks installed (web, "
                "commands, workers) uses %s, so that concurrent writes wait for each other "
                "instead of failing with 'database is locked' (to keep your settings as they "
                "are, set OPTIONS['sqlite_defaults'] = False in TASKS[%r])",
                applied.alias,
                applied.describe(),
                self.config.backend.alias,
            )

    def _new_pool(self) -> Pool:
        return Pool(self.config.processes, self._zygote.spawn, self._selector)

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


def _ignore(record: journal.Record) -> None:
    """No queue is left unserved by a supervisor that serves them all."""
