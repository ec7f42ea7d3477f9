"""Enqueue: the part of ``Journal`` that writes task records and re-queue markers.

A process keeps one segment writer, and one book of reservations, per journal directory,
shared by its threads.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from .format import Record, Requeue, State, _dumps, _frame, _line_builder, parse_id, state_data
from .reservations import Reservation, _ReservationBook
from .resultfiles import _ResultFiles
from .segments import _Segments, _SegmentWriter

_writers: dict[tuple[str, bool], _SegmentWriter] = {}
_books: dict[tuple[str, bool], _ReservationBook] = {}
_writers_lock = threading.Lock()


def _forget_writers_after_fork() -> None:
    # A forked child must not append to its parent's segment (two writers, one file),
    # and the parent's lock objects may have been held by another thread at fork time.
    global _writers_lock
    _writers.clear()
    _books.clear()
    _writers_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_writers_after_fork)


class _Enqueue(_Segments, _ResultFiles):
    """Records and re-queue markers, appended durably to this process's segment."""

    def _writer(self) -> _SegmentWriter:
        key = (str(self.segments_dir), self.durable)
        writer = _writers.get(key)
        if writer is None:
            with _writers_lock:
                writer = _writers.setdefault(
                    key, _SegmentWriter(self.segments_dir, durable=self.durable)
                )
        return writer

    def append(self, record: Record, *, before_write: Any = None) -> str:
        """Write ``record`` (its id is replaced) durably; return the id it was given.

        Raises OSError (disk full, read-only, ...) with nothing acknowledged: a partial
        line is cut off again, and the segment is never written to afterwards.
        ``before_write(id)`` is called with the id the record is about to get, before any
        of it is written (periodic tasks note it durably first; see ``periodic``); what
        it raises is raised, with nothing written.
        """
        build_line = _line_builder(record)
        record_id: str = self._in_journal(lambda: self._writer().append(build_line, before_write))
        return record_id

    def reserve(
        self, record: Record, callback: Any, owner: Any, in_transaction: Any
    ) -> Reservation:
        """Give ``record`` its id now and write it later, with ``write_reserved``.

        For enqueue on commit: the id is final (its place in a segment that one
        transaction at a time writes to), nothing is on disk until the write.
        ``callback`` is what will write it: once it is gone (garbage, dropped by a
        rollback) the place is void. ``owner`` is the transaction's connection, and
        ``in_transaction(reservation)`` whether a reservation belongs to its open
        transaction. Raises OSError when the journal cannot be used.
        """
        build_line = _line_builder(record)
        book = self._book()
        reservation: Reservation = self._in_journal(
            lambda: book.reserve(build_line, callback, owner, in_transaction)
        )
        return reservation

    def write_reserved(self, reservation: Reservation) -> None:
        """Write a reserved record durably at its place; ReservationLost if it cannot be."""
        self._book().write(reservation)

    def is_reserved(self, record_id: str) -> bool:
        """Whether ``record_id`` is held for a transaction that may still commit."""
        return self._book().is_reserved(record_id)

    def _book(self) -> _ReservationBook:
        key = (str(self.segments_dir), self.durable)
        book = _books.get(key)
        if book is None:
            with _writers_lock:
                book = _books.setdefault(
                    key, _ReservationBook(self.segments_dir, durable=self.durable)
                )
        return book

    def append_requeue(self, record_id: str, state: State | None = None) -> None:
        """Tell every supervisor that task ``record_id`` is READY again.

        With ``state`` (READY), the marker itself makes the task READY: it is written
        durably before the state reaches the result file, so that a crash between the two
        leaves a marker that the next reader publishes (``publish_requeue``), never a task
        that is READY without anyone being told.
        """
        data: dict[str, Any] = {"requeue": record_id}
        if state is not None:
            data["state"] = state_data(state)
        line = _frame(_dumps(data))
        self._append(lambda _own_id: line)

    def is_behind(self, requeue: Requeue) -> bool:
        """Whether a re-queue marker's state has yet to reach the task's result file.

        Only a finished task is re-queued, so a task without a result file was pruned
        after its re-run finished: a marker read later is long over, never behind.
        """
        marked = requeue.state
        if marked is None:
            return False
        current = self.read_state(requeue.id)
        if current is None:
            return not self.was_pruned(requeue.id)
        return current.version < marked.version

    def publish_requeue(self, requeue: Requeue) -> tuple[State | None, bool]:
        """Bring a task's result file up to a re-queue marker's state; return the state
        now, and whether it was written.

        The caller holds the history lock: the task was finished, and the summary of its
        segment, which counts it so, is deleted before it changes. Under the claim lock,
        so that it never writes over a claim made meanwhile: the marker's state counts
        only if the file holds an older version.
        """
        with self.claim_lock():
            if not self.is_behind(requeue):
                return self.read_state(requeue.id), False
            assert requeue.state is not None  # noqa: S101 (is_behind says so)
            self.remove_summary(parse_id(requeue.id)[0])
            self.write_state(requeue.state)
            return requeue.state, True

    def _append(self, build_line: Any) -> str:
        record_id: str = self._in_journal(lambda: self._writer().append(build_line))
        return record_id

    def _in_journal(self, write: Any) -> Any:
        """Call ``write`` with the journal's directories in place, made again if need be."""
        self.ensure()
        try:
            return write()
        except FileNotFoundError:
            # The journal was removed since this process last wrote to it (and perhaps
            # made again): an append to the old, unlinked files would be lost.
            self._ready = False
            self.ensure()
            return write()
