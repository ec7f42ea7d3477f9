"""A supervisor's helpers, away from its claims: a process of its own, and a thread.

``ResultFilePreparer`` makes each queued task's result file, empty, ahead of its claim:
creating a file (a new inode) cost more than the rest of a claim on ext4, and held the
directory's lock meanwhile; the claim then only opens the file. It runs in a process the
zygote forks (``make_result_files``), not in a thread of the supervisor: the kernel's work
of creating the files is then not the supervisor's CPU, and its Python not under the
supervisor's GIL. The supervisor sends it task ids, a line each, without ever waiting for
it; a file it did not make in time, or at all, is no matter: the claim makes it.

``HistoryKeeper`` keeps the journal's history now and every ``HISTORY_INTERVAL_S``:
segment summaries, segments marked done, pruning by retention (``history``); it skips a
pass while another process holds the history lock.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from multiprocessing.connection import Connection
from pathlib import Path

from .. import journal
from ..journal import history
from .zygote import ForkedProcess

logger = logging.getLogger(__name__)

__all__ = ["HISTORY_INTERVAL_S", "HistoryKeeper", "ResultFilePreparer", "make_result_files"]

#: How often a supervisor brings the history's summaries up to date, marks finished
#: segments done and prunes by retention (one supervisor of a journal at a time).
HISTORY_INTERVAL_S = 60.0
#: How long after the preparing process could not start, or died, another is tried.
RESTART_AFTER_S = 5.0
#: How long the preparing process gets to exit once stopped (SIGTERM), before SIGKILL.
STOP_GRACE_S = 5.0


class ResultFilePreparer:
    """The supervisor's side of the process that makes result files ahead of claims.

    ``spawn`` forks that process (``Zygote.spawn(PREPARER)``). Ids wait in a buffer while
    its pipe is full; the supervisor's loop calls ``flush`` on each turn.
    """

    def __init__(self, spawn: Callable[[], tuple[ForkedProcess, Connection]]) -> None:
        self._spawn = spawn
        self._process: ForkedProcess | None = None
        self._conn: Connection | None = None
        self._unsent = bytearray()
        self._next_start = 0.0  # monotonic

    def prepare(self, record_ids: list[str]) -> None:
        """Have the result files of these tasks made, in this order."""
        self._unsent += "".join(f"{record_id}\n" for record_id in record_ids).encode()
        self.flush()

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
            self._lost(f"{error}")
            return
        del self._unsent[:sent]

    def stop(self) -> None:
        """Stop the process now: what it has not made yet, the claims make."""
        self._unsent.clear()
        self._end()

    def _start(self) -> bool:
        if time.monotonic() < self._next_start:
            self._unsent.clear()  # for the claims to make: a backlog is not kept meanwhile
            return False
        try:
            self._process, self._conn = self._spawn()
        except OSError as error:
            self._lost(f"cannot start it: {error}")
            return False
        os.set_blocking(self._conn.fileno(), False)
        return True

    def _lost(self, why: str) -> None:
        pid = self._process.pid if self._process is not None else None
        logger.warning(
            "The process that makes result files ahead of their claims (pid %s) stopped "
            "(%s); the claims make them, and another is started in %gs",
            pid,
            why,
            RESTART_AFTER_S,
        )
        self._end()
        self._unsent.clear()
        self._next_start = time.monotonic() + RESTART_AFTER_S

    def _end(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        process, self._process = self._process, None
        if process is None:
            return
        process.terminate()
        process.join(STOP_GRACE_S)
        if process.exitcode is None:
            process.kill()
            process.join()
        process.close()


def make_result_files(conn: Connection, *, path: str, durable: bool) -> None:
    """In the preparing process: make the result file of each task id read, until the
    supervisor closes the pipe (``Journal.prepare_result_file``)."""
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
