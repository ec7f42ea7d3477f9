"""The supervisor's result log (WAL): finished states, synced in groups before they reach
their result files; replayed by the next supervisor when its writer died."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..portability import sync_data
from . import files
from .files import _FILE_MODE, _OPEN_FLAGS, _read_file
from .format import State, _unframe, decode_state, state_line

if TYPE_CHECKING:
    from . import Journal

#: Start a new WAL (after one global sync) once the current one holds this many bytes.
WAL_MAX_BYTES = 32 * 1024 * 1024


class ResultLog:
    """A supervisor's WAL of finished states, synced once for a group of them."""

    def __init__(self, journal: Journal, instance: str) -> None:
        self._journal = journal
        self._path = journal.wal_dir / f"{instance}.log"
        self._fd = os.open(
            self._path, os.O_RDWR | os.O_CREAT | os.O_APPEND | _OPEN_FLAGS, _FILE_MODE
        )
        self._size = os.fstat(self._fd).st_size
        self._taken_over = False  # see ``resume``: a handle's first write takes it over

    def resume(self) -> None:
        """Take the log over, on the next write, from another writer of it that may have
        died mid-write (the supervisor's and its committing process's handles of it).

        Its size is read again, and a torn last line is ended, so that it is not joined
        to the first line written next: replay skips it, as it skips any torn line (a
        line never synced was never acknowledged).
        """
        self._taken_over = False

    def _take_over(self) -> None:
        self._size = os.fstat(self._fd).st_size
        if self._size and os.pread(self._fd, 1, self._size - 1) != b"\n":
            files._write_all(self._fd, b"\n")
            self._size += 1
        self._taken_over = True

    def commit(self, states: Sequence[State]) -> None:
        """Make ``states`` durable with one sync, then publish their result files."""
        self.commit_lines([(state.id, state_line(state)) for state in states])

    def commit_lines(self, entries: Sequence[tuple[str, bytes]]) -> None:
        """``commit`` for states framed already: (task id, framed line) each."""
        self.log_lines(entries)
        self.publish(entries)

    def log_lines(self, entries: Sequence[tuple[str, bytes]]) -> None:
        """The first half of a commit: the lines in the log, synced."""
        if not entries:
            return
        data = b"".join(line for _, line in entries)  # encoded once for both halves
        try:
            if not self._taken_over:
                self._take_over()  # in here: a full disk then fails the write, tried again
            files._write_all(self._fd, data)
            if self._journal.durable:
                sync_data(self._fd)
        except OSError:
            # Half a line (a full disk) would join the first line of the retry into one
            # unreadable line, and replay would lose that state: cut it off again.
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, self._size)
            raise
        self._size += len(data)

    def publish(self, entries: Sequence[tuple[str, bytes]]) -> None:
        """The second half of a commit: each state in its result file, once logged."""
        for task_id, line in entries:
            self._journal.write_state_line(task_id, line)
        if self._size > WAL_MAX_BYTES:
            self._rotate()

    def is_published(self, state: State) -> bool:
        """Whether the task's result file holds this state already (or a later one): a
        writer of this log that died may have published it before it could say so."""
        try:
            current = self._journal.read_state(state.id)
        except OSError:
            return False
        return current is not None and current.version >= state.version

    def _rotate(self) -> None:
        # Every result file this log covers must be on disk before the log goes.
        os.sync()
        os.ftruncate(self._fd, 0)
        self._size = 0

    def close(self, *, remove: bool) -> None:
        """Close the log (and its Journal); with ``remove``, delete it once what it covers
        is on disk."""
        size = os.fstat(self._fd).st_size  # written by the committing process too
        os.close(self._fd)
        self._journal.close()
        if remove:
            if size:
                os.sync()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._path)


def replay_result_log(journal: Journal, instance: str) -> int:
    """Re-publish the finished states a dead supervisor logged; return how many."""
    path = journal.wal_dir / f"{instance}.log"
    try:
        data = _read_file(path)
    except FileNotFoundError:
        return 0
    replayed = 0
    for line in data.split(b"\n"):
        try:
            state = decode_state(_unframe(line))
        except (ValueError, KeyError, TypeError):
            continue  # the torn tail of the last group: never acknowledged
        current = journal.read_state(state.id)
        if current is None and journal.was_pruned(state.id):
            # Finished (by this supervisor or, after a retry, another) and pruned since.
            # Asked after the read: a prune may run while this replays.
            continue
        if current is None or current.version < state.version:
            journal.write_state(state)
            replayed += 1
    if data:
        # Every result file this log covers, whether the dead supervisor published it or
        # we just did, must be on disk before the log goes: neither was synced.
        os.sync()
    return replayed


def remove_result_log(journal: Journal, instance: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(journal.wal_dir / f"{instance}.log")
