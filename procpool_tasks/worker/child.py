"""What runs in a worker process: import the task, call it, report the outcome.

The supervisor sends a ``Job`` (the record and its RUNNING state) and gets back an
``Outcome``; both are plain values, so nothing but JSON data crosses the process boundary.
While a short task runs, the supervisor may send the process its next job ahead of time,
and ask for it back with a ``Recall`` if a better task comes meanwhile (``dispatch``): the
process hands back, with its outcome, each queued job it was asked for. If the task runs
past ``HAND_BACK_AFTER_S``, a thread hands every queued job back at once (``HandedBack``),
for the next free process to take.
Without /proc, where the supervisor cannot read a process's memory, a process over
``--max-memory-per-child`` while its task runs says so (``OverMemory``) and kills itself.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import pickle
import selectors
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from datetime import datetime
from multiprocessing.connection import Connection
from traceback import format_exception
from types import FrameType
from typing import Any

from django.db import close_old_connections
from django.utils import timezone
from django.utils.module_loading import import_string

from .. import compat, journal, logs, signals
from ..exceptions import TaskTimeoutError
from ..portability import HAS_PROC, resident_memory_mib
from ..results import build_task_result, load_task
from . import states
from .lifeline import die_with_process

logger = logging.getLogger(__name__)

__all__ = [
    "HAND_BACK_AFTER_S",
    "MEMORY_SAMPLE_INTERVAL_S",
    "ChildSettings",
    "HandedBack",
    "Job",
    "Outcome",
    "OverMemory",
    "Recall",
    "TaskTimeoutError",
    "init_child",
    "run_job",
    "serve",
]

#: How often the memory of a process running a task is read (--max-memory-per-child): by
#: the supervisor from /proc, or else by the process itself (``_own_memory_limit``).
MEMORY_SAMPLE_INTERVAL_S = 0.2
#: A job queued behind a task that has run this long is handed back, unrun: a task that
#: turned out long must not hold up the one behind it (the supervisor queues jobs only
#: behind tasks it expects to be short, see ``dispatch``).
HAND_BACK_AFTER_S = 1.0
#: How often the thread that hands jobs back looks at the pipe once the task has run long,
#: and how long a task runs, after short ones, before the thread watches the pipe at all.
HAND_BACK_CHECK_S = 0.25
#: A task that ran this long has the thread read the job queued behind the next one while
#: that one runs (``_Inbox``); a shorter one leaves it to the main thread, after the task.
READ_AHEAD_MIN_S = 0.002


@dataclass(frozen=True, slots=True)
class Job:
    record: journal.Record
    state: journal.State  # RUNNING, as the supervisor claimed it
    timeout: float | None = None  # seconds; see TaskOptions

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled as one call of ``_job`` with its record's and state's fields (see
        ``journal.pickled_by_fields``): pickle checks each class it names by import, and
        this names one, not three."""
        record, state = self.record.__getstate__(), self.state.__getstate__()
        return _job, (record, state, self.timeout)


def _job(record: tuple[Any, ...], state: tuple[Any, ...], timeout: float | None) -> Job:
    """A job as ``Job.__reduce__`` pickled it."""
    return Job(
        journal.from_pickled_fields(journal.Record, record),
        journal.from_pickled_fields(journal.State, state),
        timeout,
    )


@journal.pickled_by_fields
@dataclass(frozen=True, slots=True, kw_only=True)
class Outcome:
    status: str  # SUCCESSFUL or FAILED
    finished_at: datetime
    return_value: Any = None
    error: journal.TaskError | None = None
    unloadable: bool = False  # the record names no importable Task: quarantine it
    retry: bool = False  # FAILED by an exception its retry policy retries, attempts left
    memory_mib: float = 0.0  # the process's resident memory once the task ended
    #: A SUCCESSFUL task's finished state, framed as its result file holds it: the state
    #: the supervisor makes of this outcome (``states.finished``), encoded here rather
    #: than in the supervisor's process, whose CPU every task shares.
    line: bytes | None = None


@dataclass(frozen=True, slots=True)
class _Prepared:
    """What running a job needs that its run does not decide: its Task, the TaskResult it
    starts with, and its SUCCESSFUL line but for the finish time and return value.

    The inbox thread prepares each job it reads while the task before it runs, so that the
    time between the two tasks, where a process fresh from a wait runs its Python many times
    slower than in a loop, has that much less to do.
    """

    job: Job
    task: Any
    result: Any
    success_line: states.SuccessLine


def _prepare(job: Job) -> _Prepared:
    """Raises ImportError (TaskNotLoadable) for a record that names no importable Task."""
    task = load_task(job.record)
    result = build_task_result(job.record, job.state, task)
    return _Prepared(job, task, result, states.SuccessLine(job.state))


def _prepare_ahead(job: Job) -> _Prepared | None:
    """``_prepare`` in the inbox thread; None where the main thread must do it: for a task
    whose module is not imported yet, as importing runs the module's code, which may expect
    the main thread (``signal.signal`` works only there), and for any failure, which the
    main thread meets again and reports. A module the main thread is importing still (its
    task's own import, say) counts as not imported: the thread would wait for it, holding
    the inbox's lock, or import it again itself if that import failed."""
    module = sys.modules.get(job.record.task_path.rpartition(".")[0])
    if module is None or getattr(getattr(module, "__spec__", None), "_initializing", False):
        return None
    try:
        return _prepare(job)
    except Exception:
        return None


@dataclass(frozen=True, slots=True)
class Recall:
    """Asks for a job sent ahead back, unrun, if the process has not started it yet."""

    task_id: str


@dataclass(frozen=True, slots=True)
class HandedBack:
    """Sent while a task runs long: the ids of the jobs queued behind it, not to be run."""

    task_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class OverMemory:
    """Sent instead of an outcome by a process that passed the memory limit; it dies next."""

    used_mib: float


@dataclass(frozen=True, slots=True)
class ChildSettings:
    """What every worker process is told when it starts."""

    verbosity: int
    supervisor_pid: int
    max_tasks: int | None = None  # leave after this many tasks (--max-tasks-per-child)
    max_memory_mib: float | None = None  # leave past this RSS (--max-memory-per-child)


def init_child(settings: ChildSettings) -> None:
    """Prepare a fresh worker process: logging, and signals left to the supervisor.

    Django is set up already: the process is a fork of the supervisor's (``zygote``).
    """
    # SIGINT (a Ctrl+C, or a service stopped with it) is the supervisor's to act on: no
    # KeyboardInterrupt in the task. A handler that does nothing, not SIG_IGN, which the
    # programs a task runs would inherit: they could not be interrupted.
    signal.signal(signal.SIGINT, _ignore_signal)
    # A killed supervisor must not leave this process running its task (which the next
    # supervisor runs again) or waiting for work forever.
    die_with_process(settings.supervisor_pid)
    logs.configure(settings.verbosity, sys.stdout)


def _ignore_signal(signum: int, frame: FrameType | None) -> None:
    """Handled, so that nothing happens; reset to the default in a program that runs."""


def serve(conn: Connection, settings: ChildSettings) -> None:
    """A worker process: run the jobs that come down ``conn``, one at a time.

    Sends back each outcome with whether the process leaves after it, and the ids of
    the jobs queued behind it that it hands back unrun: those recalled, and all of them
    when it leaves. It leaves after ``max_tasks_per_child`` tasks, or once a task left it
    over ``max_memory_mib`` of resident memory (the task keeps its outcome); the pool
    starts another in its place. It exits when the supervisor closes the pipe, or is gone
    (killed: the pipe is reset, and this process is about to be killed too, see
    ``die_with_process``), quietly.
    """
    init_child(settings)
    inbox = _Inbox(conn)
    ran = 0
    measure_memory = settings.max_memory_mib is not None
    while True:
        try:
            job, prepared = inbox.next_job()
        except (EOFError, OSError):
            return
        try:
            with inbox.running(), _own_memory_limit(inbox, settings.max_memory_mib):
                outcome = run_job(job, measure_memory=measure_memory, prepared=prepared)
        except BaseException as error:  # the job could not be run at all
            outcome = Outcome(
                status=journal.FAILED,
                finished_at=timezone.now(),
                error=_failed(error).error,
            )
        ran += 1
        leaving = (settings.max_tasks is not None and ran >= settings.max_tasks) or (
            settings.max_memory_mib is not None and outcome.memory_mib > settings.max_memory_mib
        )
        try:
            inbox.reply(outcome, leaving)
        except (EOFError, OSError):
            return  # the supervisor is gone; the next one recovers the task
        if leaving:
            return


class _Inbox:
    """The pipe's messages: jobs and recalls. Between tasks the main thread reads them;
    while a task runs, a thread does, as each comes: the job queued behind the task is
    unpickled while the task waits on I/O, not after it ends (where it cost a short task
    more than the rest of its bookkeeping), and once the task has run long the thread hands
    the queued jobs back.

    The thread watches a task from its start only when it is the process's first, or the
    task before it ran at least ``READ_AHEAD_MIN_S``; after a shorter one, only once it
    has run ``HAND_BACK_CHECK_S``, in time to hand back at ``HAND_BACK_AFTER_S``. Waking
    it at every start cost a no-op task about a sixth of its process's CPU time, in futex
    calls and GIL hand-offs, to read a job the main thread reads as cheaply a moment later.

    One reader at a time: the thread reads only under the lock, while the task it saw start
    still runs; the main thread reads outside the lock only when no task runs. The thread
    also prepares each job it reads (``_Prepared``).
    """

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        # One selector for the process's life, and one for the thread: ``Connection.poll``
        # builds one per call, which cost more than the rest of a short task's bookkeeping.
        self._readable = selectors.DefaultSelector()
        self._readable.register(conn, selectors.EVENT_READ)
        # The thread's, registered here: the pipe may be closed by the time the thread runs.
        self._watch = selectors.DefaultSelector()
        self._watch.register(conn, selectors.EVENT_READ)
        self._lock = threading.Lock()  # the pipe, and what was read from it
        self._queued: list[Job | Recall] = []  # read, not acted on yet: in order
        self._prepared: dict[str, _Prepared] = {}  # by task id: of jobs in ``_queued``
        self._task_started: float | None = None  # monotonic, while a task runs
        self._starts = 0  # tasks started: whether any did while the thread waited
        self._read_ahead = True  # the last task ran READ_AHEAD_MIN_S: watch the next at once
        self._asleep = False  # the thread waits for a task to start (``_sleep_until_a_task``)
        self._wake = threading.Event()  # set at a task's start if the thread is to know
        self._failure: BaseException | None = None  # what the thread could not read
        reader = threading.Thread(target=self._read_while_running, name="procpool-inbox")
        reader.daemon = True
        reader.start()

    def next_job(self) -> tuple[Job, _Prepared | None]:
        """The next job to run: queued already (perhaps prepared), or the next to come."""
        while True:
            prepared = None
            with self._lock:
                if self._failure is not None:
                    raise self._failure
                message = self._queued.pop(0) if self._queued else None
                if isinstance(message, Job):
                    prepared = self._prepared.pop(message.record.id, None)
            if message is None:
                message = _receive(self._conn)  # only this thread reads while none runs
            if isinstance(message, Job):
                return message, prepared
            # A recall whose job ran already, or was handed back: too late, or done.

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        """While a task runs, the thread reads the pipe (and may hand back what is queued)."""
        started = self._task_started = time.monotonic()
        self._starts += 1
        # Read after the start is written, as the thread reads them the other way round:
        # either it sees the task, or this sees it asleep and wakes it.
        if self._read_ahead or self._asleep:
            self._wake.set()
        try:
            yield
        finally:
            self._read_ahead = time.monotonic() - started >= READ_AHEAD_MIN_S
            with self._lock:  # waits for a read or a hand-back under way
                self._task_started = None

    def send(self, message: OverMemory) -> None:
        with self._lock:
            self._conn.send_bytes(pickle.dumps(message))

    def reply(self, outcome: Outcome, leaving: bool) -> None:
        """Send the outcome, with the jobs handed back: recalled, or all if ``leaving``."""
        with self._lock:
            returned = self._hand_back(everything=leaving)
            reply = (outcome, leaving, returned)
            self._conn.send_bytes(pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL))

    def _read_pending(self) -> None:
        """Queue every message the pipe holds now (the lock held)."""
        while self._readable.select(0):
            self._queued.append(_receive(self._conn))

    def _hand_back(self, *, everything: bool) -> tuple[str, ...]:
        """Read what came meanwhile; take the recalled jobs (or, with ``everything``, all)
        out of the queue and return their ids. A recall whose job is not queued came too
        late (the job ran): it goes too."""
        self._read_pending()
        if not self._queued:
            return ()
        recalled = {message.task_id for message in self._queued if isinstance(message, Recall)}
        returned = tuple(
            message.record.id
            for message in self._queued
            if isinstance(message, Job) and (everything or message.record.id in recalled)
        )
        self._queued = [
            message
            for message in self._queued
            if isinstance(message, Job) and message.record.id not in returned
        ]
        for task_id in returned:
            self._prepared.pop(task_id, None)
        return returned

    def _read_while_running(self) -> None:
        """The thread. What it cannot read is raised by the main thread before its next job,
        as if it had read it itself: the process dies, and the supervisor takes the job back."""
        try:
            self._serve_while_running()
        except (EOFError, OSError):
            return  # the supervisor is gone
        except BaseException as error:
            self._failure = error

    def _serve_while_running(self) -> None:
        """Watch each task that runs long enough to be worth it (``_task_to_watch``)."""
        while True:
            self._watch_task(self._task_to_watch())

    def _task_to_watch(self) -> float:
        """The start of the running task the thread is to watch: at once if the task
        before it ran ``READ_AHEAD_MIN_S``, else once it has run ``HAND_BACK_CHECK_S``.
        No task running for a while: it sleeps until one starts."""
        starts_seen = -1
        while True:
            self._wake.clear()
            started = self._task_started
            if started is not None:
                watch_from = started + HAND_BACK_CHECK_S
                now = time.monotonic()
                if self._read_ahead or now >= watch_from:
                    return started
                self._wake.wait(watch_from - now)  # or a later task's start, to read ahead
            elif self._starts == starts_seen:  # none for HAND_BACK_CHECK_S: the process idles
                self._sleep_until_a_task()
            else:  # between two tasks: sleeping till the next would wake it at every one
                starts_seen = self._starts
                if self._wake.wait(HAND_BACK_CHECK_S):
                    starts_seen = -1  # woken early: not a whole interval without a start

    def _sleep_until_a_task(self) -> None:
        """Wait for a task to start: ``running`` wakes the thread if it sees it asleep."""
        self._asleep = True
        try:
            if self._task_started is None:  # read after ``_asleep`` is written (``running``)
                self._wake.wait()
        finally:
            self._asleep = False

    def _watch_task(self, started: float) -> None:
        """While the task that started at ``started`` runs: queue each message as it comes;
        once it has run ``HAND_BACK_AFTER_S``, hand back every job queued behind it, and
        any that comes later."""
        long_after = started + HAND_BACK_AFTER_S
        handed_back = False
        while True:
            now = time.monotonic()
            if now < long_after:
                self._watch.select(long_after - now)
            elif handed_back:
                self._watch.select(HAND_BACK_CHECK_S)
            with self._lock:
                if self._task_started != started:
                    return  # it ended: the main thread reads the pipe now
                if time.monotonic() < long_after:
                    self._read_pending()
                    self._prepare_queued()
                    continue
                handed_back = True
                returned = self._hand_back(everything=True)
                if returned:
                    self._conn.send_bytes(pickle.dumps(HandedBack(returned)))

    def _prepare_queued(self) -> None:
        """Prepare the queued jobs not prepared yet (the lock held; in the thread)."""
        for message in self._queued:
            if isinstance(message, Job) and message.record.id not in self._prepared:
                prepared = _prepare_ahead(message)
                if prepared is not None:
                    self._prepared[message.record.id] = prepared


def _receive(conn: Connection) -> Job | Recall:
    # From our own supervisor, over a private pipe: never data from the journal.
    message = pickle.loads(conn.recv_bytes())  # noqa: S301
    assert isinstance(message, Job | Recall)  # noqa: S101 (our own supervisor sent it)
    return message


def run_job(job: Job, *, measure_memory: bool = True, prepared: _Prepared | None = None) -> Outcome:
    """Run one task as Django's request cycle would: fresh connections before and after.

    With ``measure_memory`` (only a limit needs it), the outcome says the process's
    resident memory after the task. ``prepared``: the job's, if the inbox thread made it.
    """
    close_old_connections()
    try:
        outcome = _run(job, prepared)
    finally:
        close_old_connections()
    if not measure_memory:
        return outcome
    return replace(outcome, memory_mib=resident_memory_mib())


#: What a task runs in without a time limit, or without a memory limit to check itself: a
#: context that does nothing, and costs less between two tasks than a generator's would.
_NO_LIMIT = contextlib.nullcontext()


def _own_memory_limit(inbox: _Inbox, limit_mib: float | None) -> AbstractContextManager[None]:
    """Without /proc, check this process's memory while the task runs, in a thread.

    Only its peak is known there (``portability``), never less than its size now: past
    ``limit_mib`` it tells the supervisor the size and kills the process, as the supervisor
    does where it can read the size itself; from the task's first interval on, as there.
    A task that holds the GIL in C code delays the check until it lets go.
    """
    if limit_mib is None or HAS_PROC:
        return _NO_LIMIT
    return _memory_watcher(inbox, limit_mib)


@contextlib.contextmanager
def _memory_watcher(inbox: _Inbox, limit_mib: float) -> Iterator[None]:
    done = threading.Event()

    def watch() -> None:
        while not done.wait(MEMORY_SAMPLE_INTERVAL_S):
            used_mib = resident_memory_mib()
            if used_mib > limit_mib:
                with contextlib.suppress(OSError):
                    inbox.send(OverMemory(used_mib))
                # SIGKILL: a task over its limit must not get to allocate more.
                os.kill(os.getpid(), signal.SIGKILL)

    watcher = threading.Thread(target=watch, name="procpool-memory-limit", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        done.set()
        watcher.join()


def _time_limit(seconds: float | None) -> AbstractContextManager[None]:
    """Raise TaskTimeoutError in the task after ``seconds``; the supervisor kills it later."""
    return _alarm(seconds) if seconds else _NO_LIMIT


@contextlib.contextmanager
def _alarm(seconds: float) -> Iterator[None]:
    def on_alarm(signum: int, frame: FrameType | None) -> None:
        raise TaskTimeoutError(f"The task exceeded its timeout of {seconds:g}s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _run(job: Job, prepared: _Prepared | None) -> Outcome:
    if prepared is None or prepared.job is not job:
        try:
            prepared = _prepare(job)
        except ImportError as error:
            return replace(_failed(error), unloadable=True)
    task, result = prepared.task, prepared.result
    sender = _backend_class(task.backend)
    signals.send_started(sender, result)
    try:
        # Only the task's own call is timed: the limit must not stop the receivers of
        # task_finished halfway, which would leave the end of the task unsaid.
        with _time_limit(job.timeout):
            if task.takes_context:
                context: Any = compat.TaskContext(task_result=result)
                value = task.call(context, *result.args, **result.kwargs)
            else:
                value = task.call(*result.args, **result.kwargs)
        return_value = journal.to_json_value(value, "the return value")
    except BaseException as error:
        outcome = _failed(error)
        if _will_retry(job, error):
            # Not finished: it runs again after its backoff (the supervisor logs it).
            return replace(outcome, retry=True)
        compat.set_result_field(result, "status", compat.TaskResultStatus.FAILED)
        compat.set_result_field(result, "finished_at", outcome.finished_at)
        result.errors.append(
            compat.TaskError(
                exception_class_path=outcome.error.exception_class_path,  # type: ignore[union-attr]
                traceback=outcome.error.traceback,  # type: ignore[union-attr]
            )
        )
        # Sent inside the handler, so the framework's receiver logs the traceback.
        signals.send_finished(sender, result)
        return outcome
    finished_at = timezone.now()
    outcome = Outcome(
        status=journal.SUCCESSFUL,
        finished_at=finished_at,
        return_value=return_value,
        line=prepared.success_line.line(finished_at, return_value),
    )
    compat.set_result_field(result, "status", compat.TaskResultStatus.SUCCESSFUL)
    compat.set_result_field(result, "finished_at", outcome.finished_at)
    compat.set_result_field(result, "_return_value", return_value)
    signals.send_finished(sender, result)
    return outcome


@functools.cache
def _backend_class(alias: str) -> Any:
    """The class that sends a task's signals, its backend's: looked up once per alias, as
    the framework's lookup (a thread-critical local) cost a tenth of a short task."""
    return type(compat.task_backends[alias])


def _will_retry(job: Job, error: BaseException) -> bool:
    """Whether the task's retry policy runs it again after ``error``, attempts left."""
    try:
        backend: Any = compat.task_backends[job.record.backend]
        options = backend.backend_options
        policy = options.for_task(job.record.task_path, decorated=job.record.options).retry
    except Exception:  # not a ProcPoolBackend any more: no policy
        return False
    if policy is None or len(job.state.worker_ids) >= policy.attempts:
        return False
    if policy.timeouts and isinstance(error, TaskTimeoutError):
        return True
    if not policy.exceptions:
        return isinstance(error, Exception)
    return isinstance(error, _exception_classes(policy.exceptions))


@functools.cache
def _exception_classes(paths: tuple[str, ...]) -> tuple[type[BaseException], ...]:
    """The classes a retry policy names; one that does not import matches nothing.

    The system check ``procpool_tasks.E003`` reports such a path when the project starts.
    """
    classes = []
    for path in paths:
        try:
            found = import_string(path)
        except ImportError:
            logger.error("Cannot import the retry exception %s", path)
            continue
        if isinstance(found, type) and issubclass(found, BaseException):
            classes.append(found)
    return tuple(classes)


def _failed(error: BaseException) -> Outcome:
    error_type = type(error)
    return Outcome(
        status=journal.FAILED,
        finished_at=timezone.now(),
        error=journal.TaskError(
            exception_class_path=f"{error_type.__module__}.{error_type.__qualname__}",
            traceback="".join(format_exception(error)),
        ),
    )
