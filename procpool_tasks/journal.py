"""The journal: procpool_tasks' on-disk format, and the only module that touches it.

Layout of a journal directory (0700; every file 0600)::

    segments/<segment>.log           append-only task records; one writer process each,
                                     which holds an flock on the file while it appends
    segments/<segment>.summary       what its tasks came to, for status and pruning
                                     (``history``); can always be computed again
    segments/<segment>.done          marker: sealed, quiet, and every task in it finished
                                     (supervisors skip it; a missing result is pruned)
    results/<segment>/<offset>.json  a task's states, appended: the last intact line counts
    results/<segment>/.<offset>.json.spare  empty, made ahead of the claim (see below)
    wal/<instance>.log               a supervisor's log of finished states (group commit)
    workers/<instance>.lock          held by a live supervisor; free once it has died
    workers/<instance>.json          its heartbeat (``heartbeat``)
    claim.lock                       taken briefly for every claim and recovery
    history.lock                     taken to change summaries, prune, and re-queue
    quarantine/                      copies of unreadable records, with the reason
    schedules/<name>.json            the last tick a periodic task's schedule fired, and
                                     the task id it was enqueued as (``periodic``)
    schedules/<name>.firing          the same, written durably just before that record:
                                     the tick counts as fired if the record is there
    schedules.lock                   taken to fire periodic tasks (one supervisor at a time)

A task id is ``<segment>-<offset in hex>``: where its record starts. So ``get_result``
reads one result file, or the record itself while no supervisor has touched the task.

Every segment line is ``<crc32 as 8 hex digits> <JSON>\\n``. JSON never contains a raw
newline, so a torn or damaged line is detected (bad checksum, or no newline yet) and the
next line is still found. Besides records, a segment holds re-queue markers (a task is
READY again; an operator's carries the READY state and is the re-queue's commit point)
and void lines (the place reserved for a task enqueued on commit whose transaction rolled
back, as long as the record would have been). Result files hold lines of the same form,
each written after a newline of its own, so that a line torn by a crash never joins the
next one; a reader takes the last intact line, and so sees the old state or the new one,
never half of one. Appending costs one file per task: creating a file (a new inode) was
the most expensive step of a state change, and replacing the file whole took a second
one. Supervisors make that file ahead of time, as a hidden spare that the claim links
into place.

Durability: an enqueue is acknowledged after its line is ``fdatasync``-ed (with the
``durable`` option). Finished states are appended to the supervisor's WAL and synced in
groups before they are appended to their result files without a sync of their own; a
supervisor that starts replays the WAL of every dead one, so no finished state is lost.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import itertools
import json
import logging
import os
import re
import secrets
import stat
import threading
import time
import weakref
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import filelock

logger = logging.getLogger(__name__)

#: Start a new segment once the current one holds this many bytes.
SEGMENT_MAX_BYTES = 8 * 1024 * 1024
#: ... or once it is this old, so that a quiet web process seals its segments too.
SEGMENT_MAX_AGE_S = 3600.0
#: A sealed segment untouched this long has been read to its end by every supervisor
#: (they look at least every 2 s): only then may it be marked done or pruned.
QUIET_S = 60.0
#: Start a new WAL (after one global sync) once the current one holds this many bytes.
WAL_MAX_BYTES = 32 * 1024 * 1024
#: Result directories (one per segment) a supervisor keeps open at most.
_KEPT_DIRECTORIES = 64
#: Task ids are at most 64 characters, as the framework asks.
MAX_ID_LENGTH = 64

READY, RUNNING, SUCCESSFUL, FAILED = "READY", "RUNNING", "SUCCESSFUL", "FAILED"
FINISHED_STATUSES = frozenset({SUCCESSFUL, FAILED})

_ID_PATTERN = re.compile(r"([0-9a-f]{16})-([0-9a-f]{1,12})")
#: Segment names and supervisor instance names are both 16 hex digits.
_NAME_PATTERN = re.compile(r"[0-9a-f]{16}")
_SEGMENT_SUFFIX = ".log"
_DIR_MODE = 0o700
_FILE_MODE = 0o600
_OPEN_FLAGS = os.O_CLOEXEC | os.O_NOFOLLOW


class JournalError(OSError):
    """The journal directory cannot be used (permissions, a planted symlink, ...)."""

    @classmethod
    def from_os_error(cls, error: OSError) -> JournalError:
        """The same failure, saying so when it is a symlink planted in the journal."""
        if error.errno == errno.ELOOP:
            return cls(error.errno, "a symlink was planted in the journal", error.filename)
        return cls(error.errno, error.strerror or str(error), error.filename)


class RecordNotFound(LookupError):
    """No task of this id is in the journal; carries the id."""


class ValueNotJSON(TypeError):
    """A value that does not survive a JSON round trip; says where it is and what."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Record:
    """A task as enqueued: what to run, with what, where and when."""

    id: str
    task_path: str
    args: list[Any]
    kwargs: dict[str, Any]
    priority: int
    queue_name: str
    backend: str
    enqueued_at: datetime
    run_after: datetime | None = None
    #: The marker of the schedule tick that enqueued it, ``<name>@<tick>`` (``periodic``).
    schedule: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Fire:
    """A tick of a periodic task's schedule, enqueued as the task ``task_id``."""

    tick: datetime
    #: None in the state that replaced a damaged one: every tick up to ``tick`` counts as
    #: fired, by tasks unknown.
    task_id: str | None
    fired_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskError:
    """One failed attempt: the exception's class path and its traceback."""

    exception_class_path: str
    traceback: str


@dataclass(frozen=True, slots=True, kw_only=True)
class State:
    """What a supervisor last wrote for a task; ``version`` grows with every write."""

    id: str
    status: str
    version: int
    worker_ids: tuple[str, ...] = ()
    owner: str | None = None  # the supervisor instance running it, while RUNNING
    started_at: datetime | None = None
    last_attempted_at: datetime | None = None
    finished_at: datetime | None = None
    errors: tuple[TaskError, ...] = ()
    return_value: Any = None
    #: While READY: not before this time (a retry's backoff), instead of the record's.
    run_after: datetime | None = None

    @property
    def is_finished(self) -> bool:
        return self.status in FINISHED_STATUSES


@dataclass(frozen=True, slots=True)
class Requeue:
    """A marker line: the task of this id is READY again (a new attempt).

    With ``state``, the marker is the commit point of an operator's re-queue (see
    ``Journal.append_requeue``): that READY state counts once the marker is on disk, and
    whoever reads the marker publishes it if the task's result file is behind.
    """

    id: str
    state: State | None = None


@dataclass(slots=True)
class Quarantined:
    """A line that could not be read, and why."""

    segment: str
    offset: int
    reason: str
    line: bytes = field(repr=False)


# --- JSON, at the edge -------------------------------------------------------------------


def to_json_value(value: Any, where: str) -> Any:
    """Return ``value`` as plain JSON data, as the framework normalises it.

    Raises ValueNotJSON, naming the place (``where``) of the first value that would not
    come back the same from a JSON round trip: sets, datetimes, models, NaN, non-string
    keys. Tuples become lists and UTF-8 bytes become text, as ``normalize_json`` does.
    """
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueNotJSON(f"{where} is {value!r}, which JSON cannot carry")
        return float(value)
    if isinstance(value, Mapping):
        result = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueNotJSON(
                    f"{where} has the key {key!r} ({type(key).__name__}); JSON object "
                    "keys must be strings"
                )
            result[str.__str__(key)] = to_json_value(item, f"{where}[{key!r}]")
        return result
    if isinstance(value, bytes):
        try:
            return value.decode()
        except UnicodeDecodeError:
            raise ValueNotJSON(f"{where} is bytes that are not UTF-8 text") from None
    if isinstance(value, Sequence):
        return [to_json_value(item, f"{where}[{index}]") for index, item in enumerate(value)]
    raise ValueNotJSON(f"{where} is a {type(value).__name__}, which JSON cannot carry")


def _encode_time(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _decode_time(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def _dumps(data: Mapping[str, Any]) -> bytes:
    return json.dumps(data, separators=(",", ":"), allow_nan=False).encode()


#: How ``encode_record`` starts (the id comes first) for a record whose id is still empty.
_EMPTY_ID_PREFIX = b'{"id":""'


def encode_record(record: Record) -> bytes:
    data = {
        "id": record.id,
        "task": record.task_path,
        "args": record.args,
        "kwargs": record.kwargs,
        "priority": record.priority,
        "queue": record.queue_name,
        "backend": record.backend,
        "enqueued_at": _encode_time(record.enqueued_at),
        "run_after": _encode_time(record.run_after),
    }
    if record.schedule is not None:
        data["schedule"] = record.schedule
    return _dumps(data)


def decode_record(data: Mapping[str, Any]) -> Record:
    """Build a Record from its JSON; KeyError/TypeError/ValueError on a wrong schema."""
    record = Record(
        id=data["id"],
        task_path=data["task"],
        args=data["args"],
        kwargs=data["kwargs"],
        priority=data["priority"],
        queue_name=data["queue"],
        backend=data["backend"],
        enqueued_at=_decode_time(data["enqueued_at"]),  # type: ignore[arg-type]
        run_after=_decode_time(data["run_after"]),
        schedule=data.get("schedule"),
    )
    types_ok = (
        isinstance(record.task_path, str)
        and isinstance(record.args, list)
        and isinstance(record.kwargs, dict)
        and type(record.priority) is int
        and isinstance(record.queue_name, str)
        and isinstance(record.backend, str)
        and record.enqueued_at is not None
        and isinstance(record.schedule, str | None)
    )
    if not types_ok:
        raise TypeError("a field has the wrong type")
    try:
        # The supervisor orders tasks by these; a time it cannot convert (year 1, naive)
        # must make the record unreadable here, not stop every supervisor that reads it.
        for moment in (record.enqueued_at, record.run_after):
            if moment is not None:
                moment.timestamp()
    except (OverflowError, ValueError) as error:
        raise ValueError(f"a time is out of range: {error}") from None
    return record


def encode_state(state: State) -> bytes:
    return _dumps(state_data(state))


def state_data(state: State) -> dict[str, Any]:
    """A state as JSON data (what ``decode_state`` reads back)."""
    data: dict[str, Any] = {
        "id": state.id,
        "status": state.status,
        "version": state.version,
        "worker_ids": list(state.worker_ids),
        "owner": state.owner,
        "started_at": _encode_time(state.started_at),
        "last_attempted_at": _encode_time(state.last_attempted_at),
        "finished_at": _encode_time(state.finished_at),
        "errors": [
            {"exception_class_path": e.exception_class_path, "traceback": e.traceback}
            for e in state.errors
        ],
        "return_value": state.return_value,
    }
    if state.run_after is not None:
        data["run_after"] = _encode_time(state.run_after)
    return data


def decode_state(data: Mapping[str, Any]) -> State:
    return State(
        id=data["id"],
        status=data["status"],
        version=data["version"],
        worker_ids=tuple(data["worker_ids"]),
        owner=data["owner"],
        started_at=_decode_time(data["started_at"]),
        last_attempted_at=_decode_time(data["last_attempted_at"]),
        finished_at=_decode_time(data["finished_at"]),
        errors=tuple(TaskError(**error) for error in data["errors"]),
        return_value=data["return_value"],
        run_after=_decode_time(data.get("run_after")),
    )


def encode_fire(fire: Fire) -> bytes:
    return _dumps(
        {
            "tick": _encode_time(fire.tick),
            "task_id": fire.task_id,
            "fired_at": _encode_time(fire.fired_at),
        }
    )


def decode_fire(data: bytes) -> Fire:
    """The fire a schedule file holds; ValueError if it is damaged."""
    try:
        fields = json.loads(data)
        task_id = fields["task_id"]
        fire = Fire(
            tick=_decode_time(fields["tick"]),  # type: ignore[arg-type]
            task_id=None if task_id is None else parse_id_checked(task_id),
            fired_at=_decode_time(fields["fired_at"]),  # type: ignore[arg-type]
        )
    except (KeyError, TypeError, ValueError, RecordNotFound) as error:
        raise ValueError(f"not a schedule's fire: {error!r}") from None
    if fire.tick.utcoffset() is None or fire.fired_at.utcoffset() is None:
        raise ValueError("not a schedule's fire: its times are naive")
    return fire


def _frame(payload: bytes) -> bytes:
    return b"%08x %s\n" % (zlib.crc32(payload), payload)


def _unframe(line: bytes) -> Any:
    """Return the JSON of one framed line (without its newline); ValueError if damaged."""
    if len(line) < 10 or line[8:9] != b" ":
        raise ValueError("the line has no checksum header")
    payload = line[9:]
    if int(line[:8], 16) != zlib.crc32(payload):
        raise ValueError("the checksum does not match (torn or damaged line)")
    try:
        return json.loads(payload)
    except RecursionError:
        raise ValueError("the JSON is nested too deeply") from None


# --- Files --------------------------------------------------------------------------------


def is_instance_name(name: str) -> bool:
    """Is this a supervisor instance name as ``Supervisor`` gives them (never a path)?"""
    return _NAME_PATTERN.fullmatch(name) is not None


def parse_id(record_id: object) -> tuple[str, int]:
    """Split a task id into its segment and offset; RecordNotFound for any other form."""
    if not isinstance(record_id, str) or len(record_id) > MAX_ID_LENGTH:
        raise RecordNotFound(record_id)
    match = _ID_PATTERN.fullmatch(record_id)
    if match is None:
        raise RecordNotFound(record_id)
    return match[1], int(match[2], 16)


def _fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _make_private(directory: Path) -> None:
    """0700, whatever the umask or the mode an existing directory was made with.

    Called once ``_check_directory`` refused symlinks below the root and directories
    others can write to.
    """
    if stat.S_IMODE(os.stat(directory).st_mode) != _DIR_MODE:
        os.chmod(directory, _DIR_MODE)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _read_file(path: Path | str, *, dir_fd: int | None = None) -> bytes:
    """Read a whole file, refusing to follow a symlink planted in the journal."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | _OPEN_FLAGS, dir_fd=dir_fd)
    try:
        chunks = []
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _last_state(data: bytes) -> State | None:
    """The last intact state of a result file; None if it holds none yet.

    A line is torn while it is being appended, or by power loss before a supervisor
    replayed its WAL: then the state before it is the latest one that counts.
    """
    for line in reversed(data.split(b"\n")):
        if not line:
            continue
        try:
            return decode_state(_unframe(line))
        except (ValueError, KeyError, TypeError):
            continue
    return None


def _append_line(dir_fd: int, name: str, line: bytes) -> None:
    """Append to a result file, making it if need be; never through a planted symlink.

    A new result file takes the inode of its spare if one was made ahead of time (see
    ``Journal.prepare_result_file``). A symlink (or anything else planted in its place)
    is replaced whole by a file of our own that holds just this line.
    """
    # O_NONBLOCK: a FIFO planted here fails at once (ENXIO) instead of hanging.
    flags = os.O_WRONLY | os.O_APPEND | os.O_NONBLOCK | _OPEN_FLAGS
    try:
        try:
            fd = os.open(name, flags, dir_fd=dir_fd)
        except FileNotFoundError:
            _take_spare(dir_fd, name)
            fd = os.open(name, flags | os.O_CREAT, _FILE_MODE, dir_fd=dir_fd)
    except OSError as error:
        if error.errno not in (errno.ELOOP, errno.EISDIR, errno.ENXIO):
            raise
        _write_file_atomically(dir_fd, name, line)
        return
    try:
        _write_all(fd, line)
    finally:
        os.close(fd)


def _spare_name(name: str) -> str:
    return f".{name}.spare"  # hidden: never taken for a task's state


def _take_spare(dir_fd: int, name: str) -> None:
    """Give the missing result file ``name`` the inode of its spare, if it has one.

    A link, not a rename, so that a result file that appeared meanwhile is never
    replaced; the spare is no use then and goes.
    """
    spare = _spare_name(name)
    try:
        os.link(spare, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return  # none was made in time
    except OSError:
        pass  # the result file exists after all (or cannot be linked): create it
    with contextlib.suppress(OSError):
        os.unlink(spare, dir_fd=dir_fd)


def _write_file_atomically(dir_fd: int, name: str, data: bytes, *, sync: bool = False) -> None:
    """Replace ``name`` in a directory: readers see the old file or the new, never half.

    Not synced unless ``sync`` is set (states that must survive power loss are in a
    supervisor's WAL first); with it, the new file and its name are on disk on return.
    """
    tmp_name = f".{name}.{os.getpid()}-{next(_tmp_numbers)}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _OPEN_FLAGS
    fd = os.open(tmp_name, flags, _FILE_MODE, dir_fd=dir_fd)
    try:
        _write_all(fd, data)
        if sync:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp_name, dir_fd=dir_fd)
        raise
    os.close(fd)
    if _exchange(dir_fd, tmp_name, name):
        os.unlink(tmp_name, dir_fd=dir_fd)  # it holds the old state now
    else:
        os.replace(tmp_name, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    if sync:
        # The rename survives power loss only once its directory entry is on disk.
        os.fsync(dir_fd)


def _is_tmp_of(entry: str, name: str) -> bool:
    """Whether ``entry`` is a temporary file ``_write_file_atomically`` made for ``name``."""
    return entry.startswith(f".{name}.") and entry.endswith(".tmp")


_tmp_numbers = itertools.count()
_RENAME_EXCHANGE = 2
_renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)


def _exchange(dir_fd: int, tmp_name: str, name: str) -> bool:
    """Swap two files atomically (Linux); False if ``name`` is missing or it cannot.

    Replacing a file with ``rename`` makes ext4 start writing the new one out at once
    (its ``auto_da_alloc`` safety net), which tripled the cost of a state change; we do
    not need that net, finished states are in the synced WAL first. An exchange keeps
    the same promise to readers (the old file or the new, never none) without it.
    """
    global _renameat2
    if _renameat2 is None:
        return False
    done = _renameat2(dir_fd, os.fsencode(tmp_name), dir_fd, os.fsencode(name), _RENAME_EXCHANGE)
    if done == 0:
        return True
    if ctypes.get_errno() in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        _renameat2 = None  # this kernel or filesystem cannot: plain rename from now on
    return False


@contextlib.contextmanager
def _directory(root: Path, *names: str, create: bool) -> Iterator[int]:
    """Open ``root/names...`` as a directory fd for the block; see ``_open_directory``."""
    fd = _open_directory(root, *names, create=create)
    try:
        yield fd
    finally:
        os.close(fd)


def _open_directory(root: Path, *names: str, create: bool) -> int:
    """Open ``root/names...`` as a directory fd, following no symlink below ``root``.

    Each step is opened relative to the last with O_NOFOLLOW: a symlink planted for
    ``results`` itself, not only for its last component, is refused (JournalError).
    FileNotFoundError if a directory is missing and ``create`` is false.
    """
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    path = root
    try:
        for name in names:
            path = path / name
            child = _open_directory_at(fd, name, path, create=create)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def _open_directory_at(dir_fd: int, name: str, path: Path, *, create: bool) -> int:
    flags = os.O_RDONLY | os.O_DIRECTORY | _OPEN_FLAGS
    try:
        try:
            return os.open(name, flags, dir_fd=dir_fd)
        except FileNotFoundError:
            if not create:
                raise
            with contextlib.suppress(FileExistsError):
                os.mkdir(name, _DIR_MODE, dir_fd=dir_fd)
            return os.open(name, flags, dir_fd=dir_fd)
    except OSError as error:
        if error.errno in (errno.ELOOP, errno.ENOTDIR):
            message = "a symlink was planted in the journal"
            raise JournalError(error.errno, message, str(path)) from error
        raise


def _read_line_at(fd: int, offset: int) -> bytes | None:
    """The line that starts at ``offset`` (without its newline); None if unfinished."""
    buffer = b""
    while True:
        chunk = os.pread(fd, 1 << 16, offset + len(buffer))
        if not chunk:
            return None
        end = chunk.find(b"\n")
        if end >= 0:
            return buffer + chunk[:end]
        buffer += chunk


def _is_flocked(path: Path) -> bool:
    """Is a live process appending to this segment (holding its flock)?"""
    try:
        fd = os.open(path, os.O_RDONLY | _OPEN_FLAGS)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def _line_builder(record: Record) -> Any:
    """``build_line(id)``: the record's framed line once its id is known.

    Encoded once, before the writer's lock; the id (known only under it) goes in front.
    """
    after_id = encode_record(replace(record, id=""))[len(_EMPTY_ID_PREFIX) :]

    def build_line(record_id: str) -> bytes:
        return _frame(b'{"id":"%s"%s' % (record_id.encode(), after_id))

    return build_line


def _quarantine_entry(dir_fd: int, name: str) -> tuple[float, dict[str, Any]]:
    """A quarantine file's time and JSON; a damaged file's JSON says what is wrong."""
    try:
        modified = os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mtime
        data = json.loads(_read_file(name, dir_fd=dir_fd))
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as error:
        return 0.0, {"reason": f"unreadable quarantine file: {error}"}
    return modified, data


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
            _write_all(self._fd, data)
            if self._durable:
                os.fdatasync(self._fd)
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


class ReservationLost(OSError):
    """A reserved record can no longer be written at its id (its segment was abandoned)."""


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


class ClaimLock:
    """An exclusive ``flock`` on a lock file (``claim.lock``), kept open between uses.

    A ``filelock.FileLock`` opens, stats and creates the file's directory on every
    acquire, which cost more than the claim itself. The flock is the same kind that
    filelock takes, so supervisors of either kind exclude each other. The thread lock
    makes the one open file safe to share between threads of a process.
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._fd: int | None = None
        self._thread_lock = threading.Lock()

    def __enter__(self) -> None:
        self.acquire()

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    def acquire(self, *, blocking: bool = True) -> bool:
        """Take the lock; without ``blocking``, False at once if another holds it."""
        if not self._thread_lock.acquire(blocking=blocking):
            return False
        try:
            if self._fd is None:
                flags = os.O_RDWR | os.O_CREAT | _OPEN_FLAGS
                self._fd = os.open(self._path, flags, _FILE_MODE)
            fcntl.flock(self._fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            self._thread_lock.release()
            return False
        except BaseException:
            self._thread_lock.release()
            raise
        return True

    def release(self) -> None:
        assert self._fd is not None  # noqa: S101 (acquire opened it)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._thread_lock.release()

    def close(self) -> None:
        with self._thread_lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


class Journal:
    """One journal directory: enqueue, read, claim and finish tasks there."""

    def __init__(self, path: Path | str, *, durable: bool = True) -> None:
        self.path = Path(path)
        self.durable = durable
        self.segments_dir = self.path / "segments"
        self.results_dir = self.path / "results"
        self.wal_dir = self.path / "wal"
        self.workers_dir = self.path / "workers"
        self.quarantine_dir = self.path / "quarantine"
        self.schedules_dir = self.path / "schedules"
        self._ready = False
        self._claim_lock = ClaimLock(self.path / "claim.lock")
        self._history_lock = ClaimLock(self.path / "history.lock")
        self._schedule_lock = ClaimLock(self.path / "schedules.lock")
        #: results/<segment> fds kept open by ``keep_directories_open`` (supervisors).
        self._open_results_dirs: dict[str, int] | None = None

    # -- setup ---------------------------------------------------------------------------

    def ensure(self) -> None:
        """Create the directory tree (0700) if needed; JournalError if it is unsafe."""
        if self._ready:
            return
        try:
            if not self.path.exists():
                # mkdir's mode passes through the umask: _make_private below fixes it.
                self.path.mkdir(mode=_DIR_MODE, parents=True)
        except FileExistsError:
            pass
        except OSError as error:
            raise JournalError(
                error.errno,
                f"cannot create the journal directory: {error.strerror}",
                str(self.path),
            ) from error
        self.check_permissions()
        _make_private(self.path)
        for directory in (
            self.segments_dir,
            self.results_dir,
            self.wal_dir,
            self.workers_dir,
            self.quarantine_dir,
            self.schedules_dir,
        ):
            with contextlib.suppress(FileExistsError):
                directory.mkdir(mode=_DIR_MODE)
            self._check_directory(directory)
            _make_private(directory)
        self._ready = True

    def check_permissions(self) -> None:
        """JournalError unless the journal is a real directory only its owner can write."""
        self._check_directory(self.path)

    def _check_directory(self, path: Path) -> None:
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            return
        if stat.S_ISLNK(info.st_mode) and path != self.path:
            raise JournalError(errno.ELOOP, "a symlink was planted in the journal", str(path))
        if stat.S_ISLNK(info.st_mode):
            info = os.stat(path)
        if not stat.S_ISDIR(info.st_mode):
            raise JournalError(errno.ENOTDIR, "the journal path is not a directory", str(path))
        if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise JournalError(
                errno.EPERM,
                f"the journal directory is writable by other users (mode "
                f"{stat.S_IMODE(info.st_mode):o}); run chmod 700 on it",
                str(path),
            )
        if os.geteuid() != info.st_uid:
            raise JournalError(
                errno.EPERM, "the journal directory belongs to another user", str(path)
            )

    # -- enqueue ---------------------------------------------------------------------------

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
        """Whether a re-queue marker's state has yet to reach the task's result file."""
        current = self.read_state(requeue.id)
        marked = requeue.state
        return marked is not None and (current is None or current.version < marked.version)

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

    # -- read ------------------------------------------------------------------------------

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

    def read_state(self, record_id: str) -> State | None:
        """The task's latest state, or None while no supervisor has touched it.

        Raises JournalError if a symlink was planted where its result file belongs.
        """
        segment, offset = parse_id(record_id)
        try:
            with self._results_directory(segment, create=False) as dir_fd:
                data = _read_file(f"{offset:x}.json", dir_fd=dir_fd)
        except FileNotFoundError:
            return None
        except OSError as error:
            if error.errno == errno.ELOOP:
                raise JournalError.from_os_error(error) from error
            raise
        return _last_state(data)

    def write_state(self, state: State, line: bytes | None = None) -> None:
        """Append the task's new state (``line``: already framed) to its result file; not
        synced (see the WAL for finished states)."""
        segment, offset = parse_id(state.id)
        line = b"\n" + (line or _frame(encode_state(state)))
        with self._results_directory(segment, create=True) as dir_fd:
            _append_line(dir_fd, f"{offset:x}.json", line)

    def prepare_result_file(self, record_id: str) -> None:
        """Make a spare, empty result file for a task that has none yet.

        Creating a file (a new inode) is the costliest step of a task's first state
        change on ext4; a supervisor's background thread makes the spares of the tasks
        it has queued, so that the claim only links one into place.
        """
        segment, offset = parse_id(record_id)
        name = f"{offset:x}.json"
        with self._results_directory(segment, create=True) as dir_fd:
            with contextlib.suppress(FileNotFoundError):
                os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
                return  # it has a state already
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _OPEN_FLAGS
            with contextlib.suppress(FileExistsError):
                os.close(os.open(_spare_name(name), flags, _FILE_MODE, dir_fd=dir_fd))

    def ids_with_state(self, segment: str) -> frozenset[str]:
        """The ids of a segment's tasks that have a result file, from one listing.

        A supervisor starting on a long backlog asks this once per segment instead of
        trying to open a result file per task: most have none yet.
        """
        try:
            with self._results_directory(segment, create=False) as dir_fd:
                names = os.listdir(dir_fd)
        except FileNotFoundError:
            return frozenset()
        return frozenset(
            f"{segment}-{name.removesuffix('.json')}"
            for name in names
            if name.endswith(".json") and not name.startswith(".")
        )

    def keep_directories_open(self) -> None:
        """Keep the result directories this process uses open until ``close``.

        For a supervisor, which reads and writes a task's result file two or three times:
        walking ``results/<segment>`` from the root each time (three opens, no symlink
        followed) was a third of its system calls. Web processes never keep them: a
        journal directory removed and made again must not swallow their writes.
        """
        if self._open_results_dirs is None:
            self._open_results_dirs = {}

    def close(self) -> None:
        """Close what ``keep_directories_open`` and ``claim_lock`` kept open."""
        for fd in (self._open_results_dirs or {}).values():
            os.close(fd)
        self._open_results_dirs = None
        self._claim_lock.close()
        self._history_lock.close()
        self._schedule_lock.close()

    @contextlib.contextmanager
    def _results_directory(self, segment: str, *, create: bool) -> Iterator[int]:
        kept = self._open_results_dirs
        if kept is None:
            with _directory(self.path, "results", segment, create=create) as dir_fd:
                yield dir_fd
            return
        if segment not in kept:
            if len(kept) >= _KEPT_DIRECTORIES:
                os.close(kept.pop(next(iter(kept))))  # the oldest segment
            kept[segment] = _open_directory(self.path, "results", segment, create=create)
        yield kept[segment]

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

    def claim_lock(self) -> ClaimLock:
        """The journal-wide lock under which a READY task becomes RUNNING (one claim)."""
        return self._claim_lock

    def history_lock(self) -> ClaimLock:
        """The lock for changing finished history: summaries, pruning, re-queues.

        Taken before the claim lock when both are needed. One summary writer at a time
        means a summary computed before a re-queue can never be written after it.
        """
        return self._history_lock

    # -- periodic tasks (``periodic``) ------------------------------------------------------

    def schedule_lock(self) -> ClaimLock:
        """The lock under which a supervisor reads and fires the schedules' ticks."""
        return self._schedule_lock

    def read_fired(self, name: str) -> Fire | None:
        """The last tick the schedule ``name`` fired (``<name>.json``), or None.

        Raises ValueError if the file is damaged.
        """
        return self._read_fire(f"{name}.json")

    def read_firing(self, name: str) -> Fire | None:
        """The tick the schedule ``name`` was firing when its supervisor stopped, or None.

        Raises ValueError if the file is damaged.
        """
        fire = self._read_fire(f"{name}.firing")
        if fire is not None and fire.task_id is None:
            raise ValueError("not a schedule's fire: it names no task id")
        return fire

    def write_firing(self, name: str, fire: Fire) -> None:
        """Note, durably, the tick about to be enqueued as ``fire.task_id``."""
        self._write_fire(f"{name}.firing", fire)

    def write_fired(self, name: str, fire: Fire) -> None:
        """Record, durably, the tick last enqueued, once its task record is written."""
        self._write_fire(f"{name}.json", fire)

    def remove_firing(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            with _directory(self.path, "schedules", create=False) as dir_fd:
                os.unlink(f"{name}.firing", dir_fd=dir_fd)

    def firing_segments(self) -> set[str]:
        """The segments that a ``<name>.firing`` file names (their records decide whether
        a tick fired, so they are not pruned while it is there)."""
        segments = set()
        try:
            with _directory(self.path, "schedules", create=False) as dir_fd:
                for name in os.listdir(dir_fd):
                    if name.endswith(".firing") and not name.startswith("."):
                        with contextlib.suppress(OSError, ValueError):
                            fire = decode_fire(_read_file(name, dir_fd=dir_fd))
                            if fire.task_id is not None:
                                segments.add(parse_id(fire.task_id)[0])
        except FileNotFoundError:
            pass
        return segments

    def _read_fire(self, file_name: str) -> Fire | None:
        try:
            with _directory(self.path, "schedules", create=False) as dir_fd:
                return decode_fire(_read_file(file_name, dir_fd=dir_fd))
        except FileNotFoundError:
            return None

    def _write_fire(self, file_name: str, fire: Fire) -> None:
        with _directory(self.path, "schedules", create=True) as dir_fd:
            _write_file_atomically(dir_fd, file_name, encode_fire(fire), sync=self.durable)

    # -- supervisors -----------------------------------------------------------------------

    def worker_lock(self, instance: str) -> filelock.BaseFileLock:
        return filelock.FileLock(
            self.workers_dir / f"{instance}.lock", mode=_FILE_MODE, thread_local=False
        )

    def write_heartbeat(self, instance: str, data: Mapping[str, Any]) -> None:
        """Replace a supervisor's heartbeat file (``heartbeat``); not synced."""
        with _directory(self.path, "workers", create=False) as dir_fd:
            _write_file_atomically(dir_fd, f"{instance}.json", _dumps(data))

    def read_heartbeats(self) -> list[Any]:
        """The JSON of every supervisor heartbeat; unreadable ones are left out."""
        beats = []
        try:
            with _directory(self.path, "workers", create=False) as dir_fd:
                for name in os.listdir(dir_fd):
                    if name.endswith(".json") and is_instance_name(name[:-5]):
                        with contextlib.suppress(OSError, ValueError):
                            beats.append(json.loads(_read_file(name, dir_fd=dir_fd)))
        except FileNotFoundError:
            pass
        return beats

    def remove_heartbeat(self, instance: str) -> None:
        """Remove a supervisor's heartbeat, and the temporary files of its replacements.

        A supervisor killed while it replaced its heartbeat leaves one behind (the new
        heartbeat before the rename, or the old one after the exchange). Only the
        supervisor itself, as it stops, or the one that recovered it once it died knows
        that nobody writes them any more.
        """
        name = f"{instance}.json"
        try:
            with _directory(self.path, "workers", create=False) as dir_fd:
                for leftover in os.listdir(dir_fd):
                    if leftover == name or _is_tmp_of(leftover, name):
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(leftover, dir_fd=dir_fd)
        except FileNotFoundError:
            pass

    # -- segments, for supervisors ---------------------------------------------------------

    def segment_names(self) -> list[str]:
        """Segments that may still hold unfinished tasks (not marked done)."""
        names = []
        done = set()
        for entry in os.scandir(self.segments_dir):
            if entry.name.endswith(_SEGMENT_SUFFIX):
                names.append(entry.name.removesuffix(_SEGMENT_SUFFIX))
            elif entry.name.endswith(".done"):
                done.add(entry.name.removesuffix(".done"))
        return sorted(set(names) - done)

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
        return (self.segments_dir / f"{segment}.done").exists()

    def mark_done(self, segment: str) -> None:
        with _directory(self.path, "segments", create=False) as dir_fd:
            _write_file_atomically(dir_fd, f"{segment}.done", b"")

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

    def remove_result(self, record_id: str) -> None:
        """Delete one task's result file (pruning a finished task of a done segment)."""
        segment, offset = parse_id(record_id)
        with contextlib.suppress(FileNotFoundError):
            with self._results_directory(segment, create=False) as dir_fd:
                os.unlink(f"{offset:x}.json", dir_fd=dir_fd)

    def remove_segment(self, segment: str) -> None:
        """Delete a segment and its results: its ids no longer exist afterwards.

        The record goes first: without it an id cannot be mistaken for a READY task whose
        result file is missing. Result files left by a crash half-way are orphans that
        ``prune`` removes next time.
        """
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.segment_path(segment))
        self._remove_results(segment)
        for suffix in (".summary", ".done"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.segments_dir / f"{segment}{suffix}")

    def remove_orphan_results(self) -> None:
        """Remove results, summaries and done markers whose segment is gone (a prune that
        crashed half-way).

        A segment is looked for again just before its leftovers go: one created after the
        listing already has a results directory once a task of it is claimed. Segment
        names are never used twice, so a segment missing then is gone for good.
        """
        segments = set(self.all_segment_names())
        for name in os.listdir(self.results_dir):
            if is_instance_name(name) and name not in segments and self._is_gone(name):
                self._remove_results(name)
        for name in os.listdir(self.segments_dir):
            stem, _, suffix = name.partition(".")
            if suffix in ("summary", "done") and is_instance_name(stem) and stem not in segments:
                if self._is_gone(stem):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(self.segments_dir / name)

    def _is_gone(self, segment: str) -> bool:
        return not os.path.lexists(self.segment_path(segment))

    def _remove_results(self, segment: str) -> None:
        try:
            with _directory(self.path, "results", create=False) as results_fd:
                with _directory(self.path, "results", segment, create=False) as dir_fd:
                    for name in os.listdir(dir_fd):
                        os.unlink(name, dir_fd=dir_fd)
                os.rmdir(segment, dir_fd=results_fd)
        except FileNotFoundError:
            pass

    def quarantined(self) -> list[tuple[str, dict[str, Any]]]:
        """The files in quarantine/ with their JSON, oldest first; damaged ones say so."""
        try:
            with _directory(self.path, "quarantine", create=False) as dir_fd:
                names = [
                    name
                    for name in os.listdir(dir_fd)
                    if name.endswith(".json") and not name.startswith(".")
                ]
                entries = [(*_quarantine_entry(dir_fd, name), name) for name in names]
        except FileNotFoundError:
            return []
        return [(name, data) for _, data, name in sorted(entries, key=lambda e: (e[0], e[2]))]

    def quarantined_file(self, name: str) -> dict[str, Any]:
        """The JSON of one quarantine file (as ``quarantined`` names it)."""
        with _directory(self.path, "quarantine", create=False) as dir_fd:
            return _quarantine_entry(dir_fd, name)[1]

    def remove_quarantined(self, name: str) -> bool:
        """Delete the quarantine file ``name`` (as ``quarantined`` lists it); False if absent."""
        if "/" in name or not name.endswith(".json") or name.startswith("."):
            return False
        try:
            os.unlink(self.quarantine_dir / name)
        except FileNotFoundError:
            return False
        return True

    def quarantine(self, bad: Quarantined) -> bool:
        """Keep a copy of an unreadable line with its reason; False if kept before."""
        path = self.quarantine_dir / f"{bad.segment}-{bad.offset:x}.json"
        body = json.dumps(
            {
                "segment": bad.segment,
                "offset": bad.offset,
                "reason": bad.reason,
                "line": bad.line.decode("utf-8", "backslashreplace"),
            }
        ).encode()
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _OPEN_FLAGS, _FILE_MODE)
        except FileExistsError:
            return False
        try:
            _write_all(fd, body)
        finally:
            os.close(fd)
        return True


class SegmentTail:
    """Reads the lines appended to the journal's segments since the last call."""

    def __init__(self, journal: Journal) -> None:
        self._journal = journal
        self._offsets: dict[str, int] = {}

    def read_new(self) -> Iterator[Record | Requeue | Quarantined]:
        for segment in self._journal.segment_names():
            if _NAME_PATTERN.fullmatch(segment):
                yield from self.read_segment(segment)
            elif segment not in self._offsets:
                # A copy or hand edit: its ids could not be ours, so none of it can run.
                self._offsets[segment] = -1
                yield Quarantined(segment, 0, "not a segment: its name is not one we give", b"")

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
        offset = start
        lines = data.split(b"\n")
        tail = lines.pop()  # after the last newline: empty, or a line still being written
        for line in lines:
            item = self._parse(segment, offset, line)
            if item is not None:
                yield item
            offset += len(line) + 1
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


def parse_id_checked(record_id: Any) -> str:
    parse_id(record_id)
    return str(record_id)


class ResultLog:
    """A supervisor's WAL of finished states, synced once for a group of them."""

    def __init__(self, journal: Journal, instance: str) -> None:
        self._journal = journal
        self._path = journal.wal_dir / f"{instance}.log"
        self._fd = os.open(
            self._path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | _OPEN_FLAGS, _FILE_MODE
        )
        self._size = os.fstat(self._fd).st_size

    def commit(self, states: Sequence[State]) -> None:
        """Make ``states`` durable with one sync, then publish their result files."""
        if not states:
            return
        lines = [_frame(encode_state(state)) for state in states]  # encoded once for both
        data = b"".join(lines)
        try:
            _write_all(self._fd, data)
            if self._journal.durable:
                os.fdatasync(self._fd)
        except OSError:
            # Half a line (a full disk) would join the first line of the retry into one
            # unreadable line, and replay would lose that state: cut it off again.
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, self._size)
            raise
        self._size += len(data)
        for state, line in zip(states, lines, strict=True):
            self._journal.write_state(state, line)
        if self._size > WAL_MAX_BYTES:
            self._rotate()

    def _rotate(self) -> None:
        # Every result file this log covers must be on disk before the log goes.
        os.sync()
        os.ftruncate(self._fd, 0)
        self._size = 0

    def close(self, *, remove: bool) -> None:
        """Close the log (and its Journal); with ``remove``, delete it once what it covers
        is on disk."""
        os.close(self._fd)
        self._journal.close()
        if remove:
            if self._size:
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
        if not journal.segment_path(parse_id(state.id)[0]).exists():
            continue  # pruned since it finished
        current = journal.read_state(state.id)
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
