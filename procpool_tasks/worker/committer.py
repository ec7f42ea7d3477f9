"""Group commit of finished states, in a process of their own.

A finished state counts once it is durable: it is appended to the supervisor's WAL,
synced, and only then appended to the task's result file, where ``get_result`` sees it
(``journal.ResultLog``). One sync for every state that came since the last one began:
while the disk syncs a group, the supervisor goes on collecting outcomes and handing out
tasks, and what finishes meanwhile forms the next group. A crash before a group's sync
runs its tasks again (they were never reported finished); after it, a supervisor that
starts replays the WAL.

The commits run in a process the zygote forks (``commit_states``), not in a thread of the
supervisor: the sync, the appends and the kernel's work behind them are then not the
supervisor's CPU, and its loop takes no turns with a thread for its GIL. Each state is
encoded once (a SUCCESSFUL one by the worker process that ran its task, ``submit_framed``)
and sent, a line each, on each turn of the supervisor's loop, never waiting for the
process; the process answers how many states each group made durable, in order,
and says when a write fails (a full disk): it keeps its group and tries it again every
``RETRY_S``, before anything sent later. The supervisor logs both, and acts on a state only
once it is committed (``committed``): a task re-queued for a retry is queued again, and
``task_finished`` is sent for a FAILED state the supervisor decided.

If the process dies, whatever it had not answered for is sent again, to another process
(a state published twice is the same line twice: the last one counts); until another
runs, the supervisor commits itself, in its loop. Nothing is acted on twice, nor lost.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import selectors
import signal
import time
from collections import deque
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Protocol

from .. import journal
from .lifeline import Restarts, die_with_process, watch_process

logger = logging.getLogger(__name__)

__all__ = ["Committer", "commit_states"]

#: How long a failed write waits before it is tried again.
RETRY_S = 0.5
#: How long a stop waits for the committing process to exit once it is told to; and how
#: long a forced stop waits for what is sent to be committed, before it gives up on it.
STOP_WAIT_S = 5.0

#: The process's answers: "C<n>": the next n states are committed; "F<n> <error>": a
#: group of n states could not be written (said once a streak of failures).
_COMMITTED = b"C"
_FAILING = b"F"


class Process(Protocol):
    """What the committer needs of its process: a ``zygote.ForkedProcess`` (or, in tests,
    a ``multiprocessing.Process``)."""

    @property
    def pid(self) -> int | None: ...
    @property
    def exitcode(self) -> int | None: ...
    def kill(self) -> None: ...
    def join(self, timeout: float | None = None) -> None: ...
    def close(self) -> None: ...


Spawn = Callable[[], tuple[Process, Connection]]


class Committer:
    """The supervisor's side of the committing process; see the module docstring.

    ``spawn`` forks that process (``Zygote.spawn(COMMITTER)``); ``selector`` is the
    supervisor's, which wakes on its answers (and on room in its pipe when states wait).
    ``result_log`` is the supervisor's own handle of its WAL: for the commits it makes
    itself while no process runs.
    """

    def __init__(
        self, result_log: journal.ResultLog, spawn: Spawn, selector: selectors.BaseSelector
    ) -> None:
        self._log = result_log
        self._spawn = spawn
        self._selector = selector
        self._process: Process | None = None
        self._conn: Connection | None = None
        self._answers = b""  # a part of an answer not read whole yet
        # Submitted, not yet committed, in order: each with its line for the process.
        self._pending: deque[tuple[journal.State, bytes]] = deque()
        self._unsent = bytearray()  # the lines of the pending states the process lacks
        self._done: list[journal.State] = []
        self._restarts = Restarts()  # of the process; the supervisor commits meanwhile
        self._next_try = 0.0  # monotonic: of a failed commit of the supervisor's own
        self._stopping = False  # no process is started any more: the supervisor commits
        self.failing = False
        self._start()

    # -- the supervisor's loop ---------------------------------------------------------------

    def submit(self, states: list[journal.State]) -> None:
        """Queue states for the next group (in this order); sent on the next ``send``."""
        for state in states:
            self.submit_framed(state, journal.state_line(state))

    def submit_framed(self, state: journal.State, line: bytes) -> None:
        """``submit`` a state framed already: ``line``, as its result file holds it."""
        self._pending.append((state, line))
        self._unsent += _wire(state, line)

    def send(self) -> None:
        """Send what the pipe takes now; never wait (once a turn of the loop)."""
        if self._conn is None:
            if not self._pending:
                return
            if not self._start():
                self._commit_here()
                return
        assert self._conn is not None  # noqa: S101 (started)
        if not self._unsent:
            return
        try:
            sent = os.write(self._conn.fileno(), self._unsent)
        except BlockingIOError:
            sent = 0
        except OSError:
            self._lost()
            return
        del self._unsent[:sent]
        self._watch(write=bool(self._unsent))

    def committed(self) -> list[journal.State]:
        """The states made durable and published since the last call, in order (the
        process's answers are read by ``receive``, when the selector says they came)."""
        done, self._done = self._done, []
        return done

    def is_busy(self) -> bool:
        """Whether a state submitted is not yet committed (or not yet taken back)."""
        return bool(self._pending or self._done)

    def has_pending(self) -> bool:
        """Whether a state submitted is not yet durable."""
        return bool(self._pending)

    def seconds_to_wait(self) -> float | None:
        """How long the loop may wait for this: 0 once states it committed itself wait to
        be taken, its next try while it commits itself; None (no limit) otherwise."""
        if self._done:
            return 0.0
        if self._conn is None and self._pending:
            next_start = self._restarts.next_start
            return max(0.0, min(self._next_try, next_start) - time.monotonic())
        return None

    def flush(self) -> None:
        """Wait until everything submitted so far is committed (or failing)."""
        self._wait_until_committed(while_failing=False, stuck_after_s=None)

    def stop(
        self, *, wait_for_disk: bool, give_up: Callable[[], bool] = lambda: False
    ) -> list[journal.State]:
        """Commit what is queued and stop; return the states that could not be written.

        No process is started from now on. Without ``wait_for_disk`` (a forced stop) a
        failing write is not waited for, nor a process stuck for ``STOP_WAIT_S``; with it,
        the same holds once ``give_up`` says so (a second signal while it waits). What is
        not committed then stays RUNNING in the result files, for the next supervisor.
        """
        self._stopping = True
        stuck_after_s = None if wait_for_disk else STOP_WAIT_S
        self._wait_until_committed(
            while_failing=wait_for_disk, stuck_after_s=stuck_after_s, give_up=give_up
        )
        self._end(kill=bool(self._pending))
        return [state for state, _ in self._pending]

    def _wait_until_committed(
        self,
        *,
        while_failing: bool,
        stuck_after_s: float | None,
        give_up: Callable[[], bool] = lambda: False,
    ) -> None:
        """Until nothing is pending; unless ``while_failing``, until a write fails; or for
        ``stuck_after_s`` at most. ``give_up`` turns it into a forced stop's wait."""
        deadline = None if stuck_after_s is None else time.monotonic() + stuck_after_s
        while True:
            self.send()
            self.receive()
            if while_failing and give_up():
                while_failing, deadline = False, time.monotonic() + STOP_WAIT_S
            if not self._pending or (self.failing and not while_failing):
                return
            if deadline is not None and time.monotonic() >= deadline:
                return
            if self._conn is not None:  # for its answer, or room for what waits
                select.select([self._conn], [self._conn] if self._unsent else [], [], RETRY_S)
            else:
                time.sleep(max(0.0, min(RETRY_S, self._next_try - time.monotonic())))

    # -- the process -------------------------------------------------------------------------

    def _start(self) -> bool:
        if self._stopping or not self._restarts.due():
            return False
        try:
            self._process, self._conn = self._spawn()
        except OSError as error:
            self._give_up(f"Cannot start the process that commits finished tasks ({error})")
            return False
        os.set_blocking(self._conn.fileno(), False)
        self._selector.register(self._conn, selectors.EVENT_READ, "commit")
        # Everything not committed yet: after a process that died, all it left.
        self._unsent = bytearray().join(_wire(state, line) for state, line in self._pending)
        return True

    def _watch(self, *, write: bool) -> None:
        """Wake the loop on answers, and while lines wait for room, on room too."""
        if self._conn is not None:
            events = selectors.EVENT_READ | (selectors.EVENT_WRITE if write else 0)
            self._selector.modify(self._conn, events, "commit")

    def receive(self) -> None:
        """Read the process's answers (the loop: when its pipe is readable)."""
        if self._conn is None:
            return
        try:
            data = os.read(self._conn.fileno(), 1 << 16)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._lost()
            return
        self._on_answers(data)

    def _on_answers(self, data: bytes) -> None:
        *answers, self._answers = (self._answers + data).split(b"\n")
        for answer in answers:
            self._on_answer(answer)

    def _on_answer(self, answer: bytes) -> None:
        kind, rest = answer[:1], answer[1:]
        if kind == _COMMITTED:
            self._restarts.worked()  # it committed: a death now is news
            self._committed(int(rest))
        elif kind == _FAILING:
            count, _, error = rest.partition(b" ")
            self._log_failing(int(count), error.decode(errors="replace"))

    def _committed(self, count: int) -> None:
        """The first ``count`` pending states are durable and published."""
        if self.failing:
            logger.warning("Results are written to the journal again")
        self.failing = False
        for _ in range(count):
            self._done.append(self._pending.popleft()[0])

    def _log_failing(self, count: int, error: object) -> None:
        if not self.failing:
            logger.error(
                "Cannot write %d result(s) to the journal (%s); retrying in %ss",
                count,
                error,
                RETRY_S,
            )
        self.failing = True

    def _lost(self) -> None:
        """The process ended: what it did not answer for goes to the next one."""
        process = self._process
        pid = process.pid if process is not None else None
        if process is not None:
            process.kill()  # (if its pipe failed while it runs)
            process.join(STOP_WAIT_S)
        self._read_last_answers()
        code = process.exitcode if process is not None else None
        self._end(kill=True)
        self._give_up(f"The process that commits finished tasks (pid {pid}) ended ({code})")
        # What it published without saying so counts, and is never written again: the
        # task may have moved on since (a READY state claimed by another supervisor).
        published = 0
        for state, _ in self._pending:
            if not self._log.is_published(state):
                break
            published += 1
        if published:
            self._committed(published)  # (and the disk works again, if it failed)

    def _read_last_answers(self) -> None:
        """Every answer the process sent before it ended."""
        conn = self._conn
        while conn is not None and conn is self._conn:
            try:
                data = os.read(conn.fileno(), 1 << 16)
            except OSError:
                return
            if not data:
                return
            self._on_answers(data)

    def _give_up(self, why: str) -> None:
        logger.warning(
            "%s; the worker commits them itself, and another is started in %gs",
            why,
            self._restarts.after_s,
        )
        self._log.resume()  # it may have died half-way through a line
        self._restarts.failed()

    def _end(self, *, kill: bool) -> None:
        """Close the pipe; the process exits at its end (or is killed, if ``kill``)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(conn)
            conn.close()
        process, self._process = self._process, None
        if process is not None:
            if kill:
                process.kill()
            process.join(STOP_WAIT_S)
            if process.exitcode is None:
                process.kill()
                process.join(STOP_WAIT_S)
            process.close()
        self._answers = b""
        self._unsent.clear()

    def _commit_here(self) -> None:
        """No process runs: commit in the supervisor's loop, as it would."""
        if time.monotonic() < self._next_try:
            return
        entries = [(state.id, line) for state, line in self._pending]
        try:
            self._log.commit_lines(entries)
        except OSError as error:
            self._log_failing(len(entries), error)
            self._next_try = time.monotonic() + RETRY_S
            return
        self._committed(len(entries))
        self._unsent.clear()


def commit_states(
    conn: Connection, *, path: str, durable: bool, instance: str, supervisor_pid: int
) -> None:
    """In the committing process: commit each group of states read, in order, until the
    supervisor closes the pipe or dies; answer for each (see the module docstring).

    The signals that stop a service stop the supervisor, which stops this process once
    everything is committed: meanwhile it goes on, as the worker processes do.
    """
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, signal.SIG_IGN)
    die_with_process(supervisor_pid)
    supervisor_runs = watch_process(supervisor_pid)
    store = journal.Journal(Path(path), durable=durable)
    store.keep_directories_open()
    result_log = journal.ResultLog(store, instance)
    fd, received = conn.fileno(), bytearray()
    while data := os.read(fd, 1 << 20):
        received += data
        if b"\n" not in data:
            continue  # a long state, on its way
        end = received.rindex(b"\n")
        group = [_entry(line) for line in bytes(received[:end]).split(b"\n")]
        del received[: end + 1]
        _commit_until_written(result_log, group, fd, supervisor_runs)
        os.write(fd, b"%s%d\n" % (_COMMITTED, len(group)))


def _wire(state: journal.State, line: bytes) -> bytes:
    """A state as the process reads it: its task id, a space, its framed line."""
    return b"%s %s" % (state.id.encode(), line)


def _entry(line: bytes) -> tuple[str, bytes]:
    """A state as the process read it (``_wire``): its task id and its framed line."""
    task_id, _, framed = line.partition(b" ")
    return task_id.decode(), framed + b"\n"


def _commit_until_written(
    result_log: journal.ResultLog,
    group: list[tuple[str, bytes]],
    fd: int,
    supervisor_runs: Callable[[], bool],
) -> None:
    said = False
    while True:
        try:
            result_log.log_lines(group)  # its first takes the log over (``resume``)
            if not supervisor_runs():
                # Its successor may be replaying this log and recovering its tasks: a
                # state published now could come after a newer one. Never acknowledged,
                # the states are the replay's to publish (or its tasks run again).
                os._exit(0)
            result_log.publish(group)
            return
        except OSError as error:
            if not said:
                message = str(error).replace("\n", " ")
                os.write(
                    fd,
                    b"%s%d %s\n"
                    % (_FAILING, len(group), message.encode(errors="backslashreplace")),
                )
                said = True
            time.sleep(RETRY_S)
