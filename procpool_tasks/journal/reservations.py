"""Enqueue on commit: a record gets its id (its place in a segment) when it is enqueued, and
is written at that place once its transaction commits."""

from __future__ import annotations

import errno
import os
import threading
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..exceptions import ReservationLost
from .format import _frame
from .segments import _SegmentWriter


@dataclass(eq=False, slots=True)
class Reservation:
    """A record given its id (its place in a segment) before it is written."""

    id: str
    line: bytes
    offset: int
    batch: _Batch
    #: The on-commit callback that will write it; dead once Django dropped it unrun (the
    #: transaction or its savepoint rolled back). Only Django's lists hold the callback.
    callback: weakref.ref[Any]

    def is_pending(self) -> bool:
        """Whether its transaction may still commit, or committed and will write it."""
        return self.callback() is not None


class _Batch(_SegmentWriter):
    """A segment whose records are written at the places their ids named at enqueue.

    One transaction at a time reserves places in it (its ``owner``, a connection); when
    a reservation is written, every earlier one still unwritten belongs to the same
    transaction and was dropped by a rollback (Django runs a transaction's on-commit
    callbacks in the order they were registered), so its bytes become a void line of the
    same length: the segment only ever grows at its end, and every id points at its own
    record or at a void line.
    """

    def __init__(self, directory: Path, *, durable: bool) -> None:
        super().__init__(directory, durable=durable)
        self.reserved: list[Reservation] = []  # given out, not yet written, in order
        self.end = 0  # the offset the next reservation gets
        self.owner: Any = None

    def is_free(self) -> bool:
        """No reservation of it can still be written: another transaction may use it."""
        return not any(each.is_pending() for each in self.reserved)

    def serves(self, owner: Any, in_transaction: Any) -> bool:
        """Whether ``owner``'s open transaction may add to it: it holds no place that
        another transaction (one committed and running its callbacks) will still write."""
        return self.owner is owner and all(
            in_transaction(each) or not each.is_pending() for each in self.reserved
        )

    def reserve(self, build_line: Any, callback: Any, owner: Any) -> Reservation:
        if self.is_free():
            self.void_all()
            if self._needs_new_segment():
                self._open_new_segment()
                self.end = self._offset
        record_id = f"{self._segment}-{self.end:x}"
        line = build_line(record_id)
        reservation = Reservation(record_id, line, self.end, self, weakref.ref(callback))
        self.end += len(line)
        self.reserved.append(reservation)
        self.owner = owner
        return reservation

    def write(self, reservation: Reservation) -> None:
        """Append the reserved record durably, after void lines for rolled-back ones."""
        if reservation not in self.reserved or self._fd is None:
            raise ReservationLost(
                errno.EIO, "its segment was given up after a failed write", reservation.id
            )
        if os.fstat(self._fd).st_nlink == 0:
            raise ReservationLost(errno.ENOENT, "the journal was removed", reservation.id)
        count = self.reserved.index(reservation)
        voids = b"".join(map(_void_line, self.reserved[:count]))
        self._write_durably(voids + reservation.line)
        del self.reserved[: count + 1]

    def void_all(self) -> None:
        if self.reserved and self._fd is not None:
            self._write_durably(b"".join(map(_void_line, self.reserved)))
        self.reserved.clear()

    def _abandon_segment(self) -> None:
        super()._abandon_segment()
        self.reserved.clear()


class _ReservationBook:
    """A process's batches for one journal: as many segments as transactions that enqueue
    on commit at once (threads, and transactions opened by on-commit callbacks), reused
    once their places are written, so that a thread per request makes no segment each."""

    #: Batches kept open while free; more are closed (their segments sealed).
    KEPT_FREE = 2

    def __init__(self, directory: Path, *, durable: bool) -> None:
        self._directory = directory
        self._durable = durable
        self._lock = threading.Lock()
        self._batches: list[_Batch] = []

    def reserve(
        self, build_line: Any, callback: Any, owner: Any, in_transaction: Any
    ) -> Reservation:
        with self._lock:
            batch = next((b for b in self._batches if b.serves(owner, in_transaction)), None)
            if batch is None:
                batch = next((b for b in self._batches if b.is_free()), None)
            if batch is None:
                batch = _Batch(self._directory, durable=self._durable)
                self._batches.append(batch)
            reservation = batch.reserve(build_line, callback, owner)
            self._close_idle(keep=batch)
            return reservation

    def write(self, reservation: Reservation) -> None:
        with self._lock:
            reservation.batch.write(reservation)

    def is_reserved(self, record_id: str) -> bool:
        with self._lock:
            return any(
                each.id == record_id and each.is_pending()
                for batch in self._batches
                for each in batch.reserved
            )

    def _close_idle(self, keep: _Batch) -> None:
        free = [batch for batch in self._batches if batch is not keep and batch.is_free()]
        for batch in free[self.KEPT_FREE :]:
            batch.void_all()
            batch.close()
            self._batches.remove(batch)


def _void_line(reservation: Reservation) -> bytes:
    """A line as long as the reservation's record that readers skip (JSON allows spaces)."""
    payload = b'{"void":"%s"}' % reservation.id.encode()
    padding = len(reservation.line) - len(_frame(payload))
    return _frame(payload[:-1] + b" " * padding + b"}")
