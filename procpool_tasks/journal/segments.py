"""Segments: the append-only files of task records, one writer process each.

``_SegmentWriter`` appends one process's records to a segment of its own; ``_Segments``,
a part of ``Journal``, lists the segments, reads one record, and keeps their done markers
and summaries; ``SegmentTail`` reads what every writer appended since it last looked.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import secrets
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..exceptions import RecordNotFound
from ..portability import sync_data
from . import files
from .directory import _Directory
from .files import (
    _FILE_MODE,
    _OPEN_FLAGS,
    _directory,
    _fsync_directory,
    _is_flocked,
    _open_directory,
    _read_file,
    _read_line_at,
    _write_file_atomically,
)
from .format import (
    _NAME_PATTERN,
    CancelRequest,
    Quarantined,
    Record,
    Requeue,
    _dumps,
    _unframe,
    decode_record,
    decode_state,
    is_instance_name,
    parse_id,
    parse_id_checked,
)

if TYPE_CHECKING:
    from . import Journal

# The name it had before the journal became a package (log formats may show it).
logger = logging.getLogger("procpool_tasks.journal")

#: Start a new segment once the current one holds this many bytes.
SEGMENT_MAX_BYTES = 8 * 1024 * 1024
#: ... or once it is this old, so that a quiet web process seals its segments too.
SEGMENT_MAX_AGE_S = 3600.0
#: A sealed segment untouched this long has been read to its end by every supervisor
#: (they look at least every 2 s): only then may it be marked done or pruned.
QUIET_S = 60.0
_SEGMENT_SUFFIX = ".log"
#: ``segments/<task id>.cancel``: a cancel request (``cancels``), beside the segments so
#: that the supervisors' watch and listing of this directory notice it at no extra cost.
CANCEL_SUFFIX = ".cancel"


class _SegmentWriter:
    """Appends the records of one process to its own segment, one writer at a time."""

    def __init__(self, directory: Path, *, durable: bool) -> None:
        self._directory = directory
        self._durable = durable
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._segment = ""
        self._offset = 0
        self._opened_at = 0.0

    def append(self, build_line: Any, before_write: Any = None) -> str:
        """Append ``build_line(id)`` durably and return the id it was given.

        ``before_write(id)``, if given, is called once the id is known and before any of
        the line is written; if it raises, nothing is written.
        """
        with self._lock:
            if self._needs_new_segment():
                self._open_new_segment()
            record_id = f"{self._segment}-{self._offset:x}"
            if before_write is not None:
                before_write(record_id)
            self._write_durably(build_line(record_id))
            return record_id

    def _needs_new_segment(self) -> bool:
        return (
            self._fd is None
            or os.fstat(self._fd).st_nlink == 0  # removed, with its journal perhaps
            or self._offset >= SEGMENT_MAX_BYTES
            or time.monotonic() - self._opened_at > SEGMENT_MAX_AGE_S
        )

    def _write_durably(self, data: bytes) -> None:
        """Append ``data`` at the end and sync it; on failure, never write here again."""
        assert self._fd is not None  # noqa: S101 (a segment is open)
        try:
            files._write_all(self._fd, data)
            if self._durable:
                sync_data(self._fd)
        except OSError:
            self._abandon_segment()
            raise
        self._offset += len(data)

    def _open_new_segment(self) -> None:
        self.close()
        segment = secrets.token_hex(8)
        tmp_path = self._directory / f".{segment}.tmp"
        fd = os.open(
            tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | _OPEN_FLAGS, _FILE_MODE
        )
        try:
            # Readers take a free flock to mean "sealed": lock before the file is visible.
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.rename(tmp_path, self._directory / f"{segment}{_SEGMENT_SUFFIX}")
            if self._durable:
                _fsync_directory(self._directory)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(tmp_path)
            raise
        self._fd, self._segment, self._offset = fd, segment, 0
        self._opened_at = time.monotonic()

    def _abandon_segment(self) -> None:
        """After a failed write: cut off any partial line, then never write here again.

        A segment that holds no record is removed: an app retrying enqueue on a full disk
        must not leave a new empty file behind for every try.
        """
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, self._offset)
        if self._offset == 0:
            with contextlib.suppress(OSError):
                os.unlink(self._directory / f"{self._segment}{_SEGMENT_SUFFIX}")
        self.close()

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # also releases the flock: the segment is sealed
            self._fd = None


class _Segments(_Directory):
    """The segments of a journal, as supervisors, status and pruning see them."""

    def segment_path(self, segment: str) -> Path:
        return self.segments_dir / f"{segment}{_SEGMENT_SUFFIX}"

    def read_record(self, record_id: str) -> Record:
        """Read the record a task id points at; RecordNotFound if there is none."""
        segment, offset = parse_id(record_id)
        try:
            with _directory(self.path, "segments", create=False) as dir_fd:
                fd = os.open(
                    f"{segment}{_SEGMENT_SUFFIX}", os.O_RDONLY | _OPEN_FLAGS, dir_fd=dir_fd
                )
        except OSError as error:  # missing, or a planted symlink: never read through it
            raise RecordNotFound(record_id) from error
        try:
            line = _read_line_at(fd, offset)
        finally:
            os.close(fd)
        if line is None:
            raise RecordNotFound(record_id)
        try:
            record = decode_record(_unframe(line))
        except (ValueError, KeyError, TypeError) as error:
            raise RecordNotFound(record_id) from error
        if record.id != record_id:
            raise RecordNotFound(record_id)
        return record

    def has_line_at(self, record_id: str) -> bool:
        """Whether a whole line starts where ``record_id`` points (its record, unless the
        line is damaged); False if the segment is missing or ends before it."""
        segment, offset = parse_id(record_id)
        try:
            with _directory(self.path, "segments", create=False) as dir_fd:
                fd = os.open(
                    f"{segment}{_SEGMENT_SUFFIX}", os.O_RDONLY | _OPEN_FLAGS, dir_fd=dir_fd
                )
        except FileNotFoundError:
            return False
        try:
            return _read_line_at(fd, offset) is not None
        finally:
            os.close(fd)

    def segment_names(self) -> list[str]:
        """Segments that may still hold unfinished tasks (not marked done)."""
        return self.list_segments()[0]

    def list_segments(self) -> tuple[list[str], list[str]]:
        """The segments not marked done, and the ids with a cancel request (``cancels``),
        from one listing: a supervisor's every read costs no more than it did."""
        names = []
        done = set()
        cancels = []
        for entry in os.scandir(self.segments_dir):
            if entry.name.endswith(_SEGMENT_SUFFIX):
                names.append(entry.name.removesuffix(_SEGMENT_SUFFIX))
            elif entry.name.endswith(".done"):
                done.add(entry.name.removesuffix(".done"))
            elif entry.name.endswith(CANCEL_SUFFIX) and not entry.name.startswith("."):
                cancels.append(entry.name.removesuffix(CANCEL_SUFFIX))
        return sorted(set(names) - done), sorted(cancels)

    def is_sealed(self, segment: str) -> bool:
        return not _is_flocked(self.segment_path(segment))

    def all_segment_names(self) -> list[str]:
        """Every segment whose name is one we give, done or not."""
        return sorted(
            name.removesuffix(_SEGMENT_SUFFIX)
            for name in os.listdir(self.segments_dir)
            if name.endswith(_SEGMENT_SUFFIX) and is_instance_name(name[: -len(_SEGMENT_SUFFIX)])
        )

    def is_done(self, segment: str) -> bool:
        """Whether the segment is marked done: start-up may skip it (see ``history``)."""
        return _exists(self._segment_path(segment, ".done"))

    def was_pruned(self, record_id: str) -> bool:
        """Whether a task found without a result file was pruned rather than never claimed.

        Its segment is then done or deleted. Ask after reading the state: pruning marks a
        segment done before it deletes any of its result files, and deletes a segment's
        records before its results, so a state missing because of a prune is never taken
        for a READY task that was never claimed.
        """
        segment = parse_id(record_id)[0]
        if self._is_live_in_kept_directory(segment):
            return False  # the usual answer, for a claim of a task whose file was made ahead
        pruned = self.is_done(segment) or not _exists(self._segment_path(segment, _SEGMENT_SUFFIX))
        if not pruned:
            self._forget_segments_directory()  # it disagreed: removed, and made again since?
        return pruned

    def _segment_path(self, segment: str, suffix: str) -> str:
        """A plain string, not a Path: a claim asks ``was_pruned`` for every task."""
        return f"{self.segments_dir}{os.sep}{segment}{suffix}"

    def _is_live_in_kept_directory(self, segment: str) -> bool:
        """Whether the segments directory a supervisor keeps open (``keep_directories_open``)
        holds the segment's records and no done mark: two ``stat``s relative to it, not
        walks of the whole path. Any other answer is asked again by path: the directory kept
        may be one removed since (a journal removed and made again)."""
        if self._open_results_dirs is None:
            return False  # directories are not kept (a web process)
        if self._open_segments_dir is None:
            try:
                self._open_segments_dir = _open_directory(self.path, "segments", create=False)
            except OSError:  # a JournalError too (a symlink planted for it)
                return False
        fd = self._open_segments_dir
        return _exists(f"{segment}{_SEGMENT_SUFFIX}", dir_fd=fd) and not _exists(
            f"{segment}.done", dir_fd=fd
        )

    def mark_done(self, segment: str) -> None:
        """Mark a segment done; durably, as a prune may delete its results next (a task
        without a result file then reads as pruned, see ``was_pruned``, not as READY)."""
        with _directory(self.path, "segments", create=False) as dir_fd:
            _write_file_atomically(dir_fd, f"{segment}.done", b"", sync=self.durable)

    def read_summary(self, segment: str) -> Any:
        """A segment's summary as JSON data (see ``history``); None if it has none."""
        try:
            with _directory(self.path, "segments", create=False) as dir_fd:
                return json.loads(_read_file(f"{segment}.summary", dir_fd=dir_fd))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as error:
            logger.warning("Ignoring the unreadable summary of segment=%s: %s", segment, error)
            return None

    def write_summary(self, segment: str, data: Mapping[str, Any]) -> None:
        """Replace a segment's summary; not synced, it can always be computed again."""
        with _directory(self.path, "segments", create=False) as dir_fd:
            _write_file_atomically(dir_fd, f"{segment}.summary", _dumps(data))

    def remove_summary(self, segment: str) -> None:
        """Delete a segment's summary: it is computed afresh (a task in it changed)."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.segments_dir / f"{segment}.summary")


#: The errors ``Path.exists`` takes for a missing file.
_MISSING = frozenset({errno.ENOENT, errno.ENOTDIR, errno.EBADF, errno.ELOOP})


def _exists(path: str, *, dir_fd: int | None = None) -> bool:
    """``Path.exists``, as cheap as a stat: for the checks made on each claim."""
    try:
        os.stat(path, dir_fd=dir_fd)
    except OSError as error:
        if error.errno in _MISSING:
            return False
        raise
    return True


class SegmentTail:
    """Reads the lines appended to the journal's segments since the last call."""

    def __init__(self, journal: Journal) -> None:
        self._journal = journal
        self._offsets: dict[str, int] = {}
        self._cancels: frozenset[str] = frozenset()  # the cancel requests seen last time

    def read_new(self) -> Iterator[Record | Requeue | Quarantined | CancelRequest]:
        """New lines, then each cancel request that appeared since the last call."""
        segments, cancels = self._journal.list_segments()
        for segment in segments:
            if _NAME_PATTERN.fullmatch(segment):
                yield from self.read_segment(segment)
            elif segment not in self._offsets:
                # A copy or hand edit: its ids could not be ours, so none of it can run.
                self._offsets[segment] = -1
                yield Quarantined(segment, 0, "not a segment: its name is not one we give", b"")
        seen, self._cancels = self._cancels, frozenset(cancels)
        for record_id in cancels:
            if record_id not in seen:
                yield CancelRequest(record_id)

    def offsets(self) -> dict[str, int]:
        return dict(self._offsets)

    def seek(self, segment: str, offset: int) -> None:
        """Read ``segment`` from ``offset`` (the start of a line) at the next read."""
        self._offsets[segment] = offset

    def read_at(self, segment: str, offsets: Iterable[int]) -> dict[int, Record | Requeue]:
        """The records (or markers) on the lines that start at ``offsets``, from one read.

        Lines that are not there (yet), or that cannot be read, are left out.
        """
        try:
            data = _read_file(self._journal.segment_path(segment))
        except FileNotFoundError:
            return {}
        items: dict[int, Record | Requeue] = {}
        for offset in offsets:
            end = data.find(b"\n", offset)
            if end < 0:
                continue
            item = self._parse(segment, offset, data[offset:end])
            if isinstance(item, Record | Requeue):
                items[offset] = item
        return items

    def read_segment(self, segment: str) -> Iterator[Record | Requeue | Quarantined]:
        start = self._offsets.get(segment, 0)
        if start < 0:
            return  # unreadable, and reported once already
        try:
            fd = os.open(self._journal.segment_path(segment), os.O_RDONLY | _OPEN_FLAGS)
        except FileNotFoundError:
            return
        except OSError as error:
            self._offsets[segment] = -1
            yield Quarantined(segment, 0, f"the segment cannot be opened: {error}", b"")
            return
        try:
            size = os.fstat(fd).st_size
            if size <= start:
                return
            data = os.pread(fd, size - start, start)
        finally:
            os.close(fd)
        # Line by line, not split at once: a segment holds tens of thousands of lines.
        lines_end = data.rfind(b"\n") + 1
        tail = data[lines_end:]  # after the last newline: empty, or a line still being written
        position = 0
        while position < lines_end:
            newline = data.index(b"\n", position)
            item = self._parse(segment, start + position, data[position:newline])
            if item is not None:
                yield item
            position = newline + 1
        offset = start + lines_end
        if tail and self._journal.is_sealed(segment):
            # The writer died mid-line: that enqueue never returned, so nothing is lost.
            yield Quarantined(segment, offset, "torn line left by a writer that died", tail)
            offset += len(tail)
        self._offsets[segment] = offset

    def _parse(
        self, segment: str, offset: int, line: bytes
    ) -> Record | Requeue | Quarantined | None:
        try:
            data = _unframe(line)
        except ValueError as error:
            return Quarantined(segment, offset, str(error), line)
        try:
            if "requeue" in data:
                state = data.get("state")
                return Requeue(
                    parse_id_checked(data["requeue"]),
                    None if state is None else decode_state(state),
                )
            if "void" in data:
                return None  # a reservation whose transaction rolled back
            record = decode_record(data)
        except (KeyError, TypeError, ValueError, RecordNotFound) as error:
            return Quarantined(segment, offset, f"wrong schema: {error!r}", line)
        if record.id != f"{segment}-{offset:x}":
            return Quarantined(segment, offset, f"the id {record.id!r} is not its place", line)
        return record
