"""A supervisor's helpers, away from its claims: a process of its own, and a thread.

``ResultFilePreparer`` makes each queued task's result file, empty, ahead of its claim:
creating a file (a new inode) cost more than the rest of a claim on ext4, and held the
directory's lock meanwhile; the claim then only opens the file. It runs in a process the
zygote forks (``make_result_files``), not in a thread of the supervisor: the kernel's work
of creating the files is then not the supervisor's CPU, and its Python not under the
supervisor's GIL. The supervisor sends it task ids, a line each, without ever waiting for
it; a file it did not make in time, or at all, is no matter: the claim makes it. Its end
is watched on the supervisor's selector: a process that died just after it took the last
ids would otherwise go unnoticed (and not be started again) until more ids came.

``HistoryKeeper`` keeps the journal's history now and every ``HISTORY_INTERVAL_S``:
segment summaries, segments marked done, pruning by retention (``history``); it skips a
pass while another process holds the history lock.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import signal
import threading
from collections.abc import Callable, Mapping
from multiprocessing.connection import Connection
from pathlib import Path

from .. import journal
from ..journal import history
from .lifeline import Restarts, die_with_process
from .zygote import ForkedProcess

logger = logging.getLogger(__name__)

__all__ = ["HISTORY_INTERVAL_S", "HistoryKeeper", "ResultFilePreparer", "make_result_files"]

#: How often a supervisor brings the history's summaries up to date, marks finished
#: segments done and prunes by retention (one supervisor of a journal at a time).
HISTORY_INTERVAL_S = 60.0
#: How many bytes of ids wait for the preparing process at most: past that, a process
#: that does not keep up (stuck on its disk) is sent no more; the claims make those files.
UNSENT_MAX_BYTES = 1 << 20
#: The preparing process gives way to the supervisor and the worker processes: a file it
#: has not made in time, the claim makes.
NICENESS = 10
#: How long a stop waits for the preparing process's exit once it is killed.
STOP_WAIT_S = 1.0


class ResultFilePreparer:
    """The supervisor's side of the process that makes result files ahead of claims.

    ``spawn`` forks that process (``Zygote.spawn(PREPARER)``). Ids wait in a buffer while
    its pipe is full; the supervisor's loop calls ``flush`` on each turn, and ``on_exit``
    when ``selector`` (the supervisor's) says the process ended. Nothing here waits for
    the process, but a start (the zygote's answer) and a stop (at most ``STOP_WAIT_S``).
    """

    def __init__(
        self,
        spawn: Callable[[], tuple[ForkedProcess, Connection]],
        selector: selectors.BaseSelector,
    ) -> None:
        self._spawn = spawn
        self._selector = selector
        self._process: ForkedProcess | None = None
        self._conn: Connection | None = None
        self._unsent = bytearray()
        self._restarts = Restarts()

    def prepare(self, record_ids: list[str]) -> None:
        """Have the result files of these tasks made, in this order, from the next
        ``flush`` on: the loop's, once it has claimed what it could (a start-up does not
        wait for this process's fork before its first task)."""
        if len(self._unsent) < UNSENT_MAX_BYTES:
            self._unsent += "".join(f"{record_id}\n" for record_id in record_ids).encode()

    def flush(self) -> None:
        """Send what the pipe takes now; never wait."""
        if not self._unsent or (self._conn is None and not self._start()):
            return
        assert self._conn is not None  # noqa: S101 (started)
        try:
            sent = os.write(self._conn.fileno(), self._unsent)
        except BlockingIOError:
            return  # full: the rest on a later turn
        except OSError as error:
            self._give_up(self._ended())
            logger.debug("Writing to it failed: %s", error)
            return
        del self._unsent[:sent]
        self._restarts.worked()  # it took ids: it runs

    def on_exit(self) -> None:
        """The process's end, which the selector saw: another starts later, for work."""
        if self._process is not None and (code := self._process.exitcode) is not None:
            self._give_up(f"{self._ended()} ({code})")

    def stop(self) -> None:
        """Stop the process now (it has nothing to lose): the claims make the rest."""
        self._unsent.clear()
        self._end(wait_s=STOP_WAIT_S)

    def _start(self) -> bool:
        if not self._restarts.due():
            self._unsent.clear()  # for the claims to make: a backlog is not kept meanwhile
            return False
        try:
            self._process, self._conn = self._spawn()
        except OSError as error:
            self._give_up(
                f"Cannot start the process that makes result files ahead of claims ({error})"
            )
            return False
        os.set_blocking(self._conn.fileno(), False)
        self._selector.register(self._process.sentinel, selectors.EVENT_READ, "preparer")
        return True

    def _ended(self) -> str:
        pid = self._process.pid if self._process is not None else None
        return f"The process that makes result files ahead of claims (pid {pid}) ended"

    def _give_up(self, why: str) -> None:
        """Let the process go, for now: the claims make the files, until another starts."""
        logger.warning(
            "%s; the claims make them, and another is started in %gs", why, self._restarts.after_s
        )
        self._end(wait_s=0)
        self._unsent.clear()
        self._restarts.failed()

    def _end(self, *, wait_s: float) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        process, self._process = self._process, None
        if process is not None:
            with contextlib.suppress(KeyError, ValueError):  # (a start that failed half-way)
                self._selector.unregister(process.sentinel)
            process.kill()  # the zygote reaps it, and says so on its status pipe
            process.join(wait_s)
            process.close()


def make_result_files(conn: Connection, *, path: str, durable: bool, supervisor_pid: int) -> None:
    """In the preparing process: make the result file of each task id read, until the
    supervisor closes the pipe (``Journal.prepare_result_file``) or dies.

    The signals that stop a service stop the supervisor, which stops this process in turn:
    meanwhile it goes on, as the worker processes do.
    """
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, signal.SIG_IGN)
    die_with_process(supervisor_pid)
    os.nice(NICENESS)
    store = journal.Journal(Path(path), durable=durable)
    store.keep_directories_open()
    fd, rest = conn.fileno(), b""
    while data := os.read(fd, 1 << 16):
        *lines, rest = (rest + data).split(b"\n")
        for line in lines:
            # A file not made is no matter: the claim makes it.
            with contextlib.suppress(OSError, ValueError):
                store.prepare_result_file(line.decode())


class HistoryKeeper:
    """Summarizes, marks done and prunes the history, now and every minute."""

    def __init__(self, journal_: journal.Journal, retention: Mapping[str, float]) -> None:
        self._journal = journal.Journal(journal_.path, durable=journal_.durable)
        self._retention = retention
        self._stop = threading.Event()
        threading.Thread(target=self._run, name="procpool-history", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self._pass()
                self._stop.wait(HISTORY_INTERVAL_S)
        finally:
            self._journal.close()

    def _pass(self) -> None:
        try:
            with history.history_writer(self._journal, blocking=False) as held:
                if not held:
                    return
                survey = history.survey(self._journal, write=True, retention=self._retention)
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
