"""A supervisor's helper threads, each with a Journal of its own, away from its claims.

``SparePreparer`` makes each queued task's result file, empty, ahead of its claim:
creating a file (a new inode) cost more than the rest of a claim on ext4, and held the
directory's lock meanwhile; the claim then only opens the file. ``HistoryKeeper`` keeps
the journal's history now and every ``HISTORY_INTERVAL_S``: segment summaries, segments
marked done, pruning by retention (``history``); it skips a pass while another process
holds the history lock.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from collections.abc import Mapping

from .. import journal
from ..journal import history

logger = logging.getLogger(__name__)

__all__ = ["HISTORY_INTERVAL_S", "HistoryKeeper", "SparePreparer"]

#: How often a supervisor brings the history's summaries up to date, marks finished
#: segments done and prunes by retention (one supervisor of a journal at a time).
HISTORY_INTERVAL_S = 60.0


class SparePreparer:
    """Makes the empty result files of queued tasks, on another core than the claims."""

    def __init__(self, journal_: journal.Journal) -> None:
        self._journal = journal.Journal(journal_.path, durable=journal_.durable)
        self._batches: queue.SimpleQueue[list[str] | None] = queue.SimpleQueue()
        threading.Thread(target=self._run, name="procpool-prepare", daemon=True).start()

    def prepare(self, record_ids: list[str]) -> None:
        """Make the result files of these tasks, in this order: one hand-over (one
        wake-up of the thread) for all the tasks a read of the journal queued."""
        self._batches.put(record_ids)

    def stop(self) -> None:
        self._batches.put(None)

    def _run(self) -> None:
        self._journal.keep_directories_open()
        try:
            while (record_ids := self._batches.get()) is not None:
                for record_id in record_ids:
                    # A file not made in time is no matter: the claim creates it.
                    with contextlib.suppress(OSError):
                        self._journal.prepare_result_file(record_id)
        finally:
            self._journal.close()


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
