"""What the journal's files hold: task records and states as JSON, one checksummed line each.

The data classes that the rest of procpool_tasks passes around, their JSON encoding (and
``to_json_value``, which checks a value at the edge), the framing of a line, task ids, and
the errors of the journal.
"""

from __future__ import annotations

import json
import operator
import re
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import datetime
from typing import Any, TypeVar

from ..exceptions import RecordNotFound, ValueNotJSON

_Class = TypeVar("_Class", bound=type)
_T = TypeVar("_T")


def pickled_by_fields(cls: _Class) -> _Class:
    """Pickle a slotted dataclass as the tuple of its fields' values, its times (the
    fields annotated ``datetime``) as ISO 8601 strings.

    For what a supervisor and its worker processes send each other for every task (the
    job, its record and state, the outcome): the state methods ``dataclass`` writes for a
    slotted class look the fields up on every call, which cost a third of pickling a job;
    and pickle checks the classes of an aware ``datetime``, its ``timezone`` and its
    ``timedelta``, by import, for each one, which cost two thirds of the rest. A time
    comes back as the same instant with the same UTC offset, and encodes the same
    (a ``zoneinfo`` zone becomes that fixed offset: the supervisor's times are UTC, or
    read back from ISO text already). For classes of two fields or more, with no
    subclass that adds any.
    """
    declared = fields(cls)
    if len(declared) < 2:  # attrgetter would give the value itself, not a tuple
        raise TypeError(f"{cls.__name__} has fewer than two fields to pickle as a tuple")
    names = tuple(each.name for each in declared)
    values_of = operator.attrgetter(*names)
    times = [index for index, each in enumerate(declared) if _is_time(each.type)]
    set_attribute = object.__setattr__  # frozen classes too

    def get_state(self: Any) -> tuple[Any, ...]:
        values: tuple[Any, ...] = values_of(self)
        return _with_times(values, times, datetime.isoformat) if times else values

    def set_state(self: Any, state: tuple[Any, ...]) -> None:
        if times:
            state = _with_times(state, times, datetime.fromisoformat)
        for name, value in zip(names, state, strict=True):
            set_attribute(self, name, value)

    setattr(cls, "__getstate__", get_state)  # noqa: B010 (not what mypy knows of type)
    setattr(cls, "__setstate__", set_state)  # noqa: B010
    return cls


def from_pickled_fields(cls: type[_T], state: tuple[Any, ...]) -> _T:
    """An instance of a ``pickled_by_fields`` class from its fields as pickled, for a
    class that pickles it within its own (``child.Job``)."""
    instance = cls.__new__(cls)
    instance.__setstate__(state)  # type: ignore[attr-defined]
    return instance


def _with_times(
    values: tuple[Any, ...], times: list[int], convert: Callable[[Any], Any]
) -> tuple[Any, ...]:
    """``values`` with the times at these indexes converted (None stays None)."""
    listed = list(values)
    for index in times:
        if listed[index] is not None:
            listed[index] = convert(listed[index])
    return tuple(listed)


def _is_time(annotation: object) -> bool:
    """Whether a field is annotated ``datetime`` or ``datetime | None`` (as a string,
    under ``from __future__ import annotations``, or as the type)."""
    return annotation in ("datetime", "datetime | None", datetime, datetime | None)


#: Task ids are at most 64 characters, as the framework asks.
MAX_ID_LENGTH = 64

READY, RUNNING, SUCCESSFUL, FAILED = "READY", "RUNNING", "SUCCESSFUL", "FAILED"
#: Being moved to another backend by ``procpool_handoff``: no supervisor claims it.
HANDING_OFF = "HANDING_OFF"
#: Moved to another backend, which runs it; finished as far as this journal goes.
HANDED_OFF = "HANDED_OFF"
FINISHED_STATUSES = frozenset({SUCCESSFUL, FAILED, HANDED_OFF})

_ID_PATTERN = re.compile(r"([0-9a-f]{16})-([0-9a-f]{1,12})")
#: Segment names and supervisor instance names are both 16 hex digits.
_NAME_PATTERN = re.compile(r"[0-9a-f]{16}")


@pickled_by_fields
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
    #: The options its ``@task(...)`` gave (``ProcPoolTask.record_options``), if any.
    options: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Fire:
    """A tick of a periodic task's schedule, enqueued as the task ``task_id``."""

    tick: datetime
    #: None in the state that replaced a damaged one: every tick up to ``tick`` counts as
    #: fired, by tasks unknown.
    task_id: str | None
    fired_at: datetime


@pickled_by_fields
@dataclass(frozen=True, slots=True, kw_only=True)
class TaskError:
    """One failed attempt: the exception's class path and its traceback."""

    exception_class_path: str
    traceback: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Handoff:
    """Where a task is being moved, or was moved: a backend alias, and its id there."""

    backend: str
    started_at: datetime
    id: str | None = None  # known once the target backend took the task


@pickled_by_fields
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
    #: While HANDING_OFF and once HANDED_OFF: the backend it goes to (``handoff``).
    handoff: Handoff | None = None

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


@dataclass(frozen=True, slots=True)
class CancelRequest:
    """A task's cancel was asked for while it ran: its supervisor stops it (``cancels``)."""

    id: str


@dataclass(slots=True)
class Quarantined:
    """A line that cannot be run, and why: it could not be read, or (``task_path``) it is
    a record whose task does not import."""

    segment: str
    offset: int
    reason: str
    line: bytes = field(repr=False)
    task_path: str | None = None


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
    raise ValueNotJSON(f"{where} is {a_type_name(value)}, which JSON cannot carry")


def a_type_name(value: object) -> str:
    """The type of ``value`` with its article, as messages name it: ``a set``, ``an int``."""
    name = type(value).__name__
    return f"{'an' if name[:1].lower() in 'aeiou' else 'a'} {name}"


def _encode_time(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _decode_time(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


#: One encoder for every record and state: ``json.dumps`` with options builds an encoder
#: per call, which cost four times the encoding of a state.
_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False)


def _dumps(data: Any) -> bytes:
    return _ENCODER.encode(data).encode()


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
    if record.options:
        data["options"] = record.options
    return _dumps(data)


def _line_builder(record: Record) -> Any:
    """``build_line(id)``: the record's framed line once its id is known.

    Encoded once, before the writer's lock; the id (known only under it) goes in front.
    """
    after_id = encode_record(replace(record, id=""))[len(_EMPTY_ID_PREFIX) :]

    def build_line(record_id: str) -> bytes:
        return _frame(b'{"id":"%s"%s' % (record_id.encode(), after_id))

    return build_line


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
        options=data.get("options"),
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
        and isinstance(record.options, dict | None)
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


def state_line(state: State) -> bytes:
    """A state as a line of its result file and of the WAL: checksum, JSON, newline."""
    return _frame(encode_state(state))


class StateLineTemplate:
    """A state's line encoded ahead but for some fields' values, which ``fill`` adds.

    The encoder writes an object as its pairs joined, ``{"a":1,"b":2}``, so a line made of
    pairs encoded one by one is byte for byte ``state_line`` of the state with those values.
    A worker process encodes its task's finished state this way: all but the finish time
    and the return value while the task before it runs, the rest between the two tasks.
    """

    __slots__ = ("_blanks", "_pieces")

    def __init__(self, state: State, blanks: tuple[str, ...]) -> None:
        data = state_data(state)
        if tuple(key for key in data if key in blanks) != blanks:
            raise ValueError(f"the blanks {blanks} are not fields of a state, in its order")
        pieces: list[bytes] = []
        text = b"{"
        for index, (key, value) in enumerate(data.items()):
            text += (b"," if index else b"") + _dumps(key) + b":"
            if key in blanks:
                pieces.append(text)
                text = b""
            else:
                text += _dumps(value)
        pieces.append(text + b"}")
        self._blanks = blanks
        self._pieces = pieces

    def fill(self, *values: Any) -> bytes:
        """The framed line with ``values`` for the blanks, in their order, as a ``State``
        holds them: a time as a datetime, anything else as JSON data."""
        if len(values) != len(self._blanks):
            raise TypeError(f"fill needs {len(self._blanks)} values, got {len(values)}")
        parts = [self._pieces[0]]
        for value, piece in zip(values, self._pieces[1:], strict=True):
            parts += (_dumps_field(value), piece)
        return _frame(b"".join(parts))


def _dumps_field(value: Any) -> bytes:
    """A field's value as ``state_data`` encodes it; without the encoder for a time (whose
    ISO text needs no escaping) and for None, which a worker process encodes for most
    tasks between two of them, where each function it has not run lately costs."""
    if value is None:
        return b"null"
    if isinstance(value, datetime):
        return b'"%s"' % value.isoformat().encode()
    return _dumps(value)


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
    if state.handoff is not None:
        data["handoff"] = {
            "backend": state.handoff.backend,
            "started_at": _encode_time(state.handoff.started_at),
            "id": state.handoff.id,
        }
    return data


def decode_state(data: Mapping[str, Any]) -> State:
    handoff = data.get("handoff")
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
        handoff=None
        if handoff is None
        else Handoff(
            backend=handoff["backend"],
            started_at=_decode_time(handoff["started_at"]),  # type: ignore[arg-type]
            id=handoff["id"],
        ),
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


# --- Lines and ids -----------------------------------------------------------------------


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


def parse_id_checked(record_id: Any) -> str:
    parse_id(record_id)
    return str(record_id)
