"""When periodic tasks fire: cron expressions and ``every`` intervals, as pure arithmetic.

No Django, no I/O and no clock of its own: the caller reads the settings, remembers the
last tick it fired and passes ``now``. A *tick* is the UTC instant at which a schedule
fires; ``tick_key`` names one, so that processes agree on which tick they fire.

A cron expression is matched against the wall clock of a time zone. Where daylight saving
time skips or repeats local times, it behaves like Debian's cron:

- A job with a wildcard in its minute or hour field (the field starts with ``*``, as in
  ``*/15 * * * *``, ``0 * * * *`` or ``5 */2 * * *``) follows elapsed time: it does not
  fire at local times that are skipped, and fires at both occurrences of repeated ones.
- Any other job (``0 3 * * *``, ``30 2 * * *``) fires at the first instant at which the
  local clock reads its time or later: once, at the end of the gap, for a time that is
  skipped; once, at its first occurrence, for a time that is repeated.

Fires that land on the same instant (``0 2,3 * * *`` on a day that skips 02:00) are one
tick. ``every`` schedules ignore time zones: their ticks are the multiples of the interval
since the Unix epoch, so every process computes the same ones.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import TypeAlias

from ..exceptions import CronError

__all__ = [
    "ON_TIME_GRACE_S",
    "CronError",
    "CronExpression",
    "Every",
    "Schedule",
    "due_tick",
    "latest_tick",
    "tick_key",
]

#: How late a tick may be found and still count as on time rather than missed.
ON_TIME_GRACE_S = 60.0

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SECOND = timedelta(seconds=1)
_MINUTE = timedelta(minutes=1)
_HOUR = timedelta(hours=1)
_DAY = timedelta(days=1)
#: A bound on the search for a cron expression's next match; a full Gregorian cycle, so
#: it is never reached by an expression that ``CronExpression.parse`` accepts.
_SEARCH_YEARS = 400

_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_TERM = re.compile(r"(?P<start>\*|[0-9a-z]+)(?:-(?P<end>[0-9a-z]+))?(?:/(?P<step>[0-9]+))?")
_MONTH_NAMES = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_WEEKDAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_DAYS_IN_MONTH = (0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)  # February of leap years


@dataclass(frozen=True, slots=True, kw_only=True)
class _Field:
    name: str
    low: int
    high: int
    #: Names for ``low``, ``low + 1``, ...: jan-dec for months, sun-sat for weekdays.
    names: tuple[str, ...] = ()
    #: For error messages: what a value is, and which ones are allowed.
    kind: str = "a number"
    allowed: str


_FIELDS = (
    _Field(name="minute", low=0, high=59, allowed="0-59"),
    _Field(name="hour", low=0, high=23, allowed="0-23"),
    _Field(name="day-of-month", low=1, high=31, allowed="1-31"),
    _Field(
        name="month",
        low=1,
        high=12,
        names=_MONTH_NAMES,
        kind="a number or month name",
        allowed="1-12 or jan-dec",
    ),
    # 7 is Sunday too, as in Vixie cron, so that ranges such as fri-7 can wrap the week.
    _Field(
        name="day-of-week",
        low=0,
        high=7,
        names=_WEEKDAY_NAMES,
        kind="a number or weekday name",
        allowed="0-7 or sun-sat",
    ),
)


@dataclass(frozen=True, slots=True, kw_only=True)
class CronExpression:
    """A parsed five-field cron expression; make one with ``CronExpression.parse``."""

    text: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    #: 0 is Sunday, 6 Saturday.
    weekdays: frozenset[int]
    #: Vixie cron's day rule: when neither day field starts with ``*``, a day matches if
    #: either field does; otherwise both must.
    either_day_matches: bool
    #: A wildcard in the minute or hour field: DST gaps and repeats are taken as they come.
    follows_elapsed_time: bool

    @classmethod
    def parse(cls, text: str) -> CronExpression:
        """Parse ``minute hour day-of-month month day-of-week`` or a macro such as ``@daily``.

        Raises ``CronError``, naming the field, the bad value and what is allowed, for
        syntax errors and for expressions that can never fire (``0 0 30 2 *``).
        """
        fields = _split(text)
        minutes, hours, days, months, weekdays = (
            _parse_field(text, field, spec) for field, spec in zip(_FIELDS, fields, strict=True)
        )
        expression = cls(
            text=text,
            minutes=minutes,
            hours=hours,
            days=days,
            months=months,
            weekdays=frozenset(day % 7 for day in weekdays),
            either_day_matches=not (fields[2].startswith("*") or fields[4].startswith("*")),
            follows_elapsed_time=fields[0].startswith("*") or fields[1].startswith("*"),
        )
        if not expression._can_fire():
            raise CronError(
                f"cron {text!r}: the day-of-month field {fields[2]!r} names no day that "
                f"the months of the month field {fields[3]!r} have, so it would never fire"
            )
        return expression

    def next_after(self, moment: datetime, tz: tzinfo) -> datetime:
        """The first fire time strictly after the aware ``moment``, in UTC.

        The fields are matched against the wall clock of ``tz`` (a PEP 495 zone such as
        ``ZoneInfo``), with the DST rules of the module docstring.
        """
        _require_aware(moment, "moment")
        if self.follows_elapsed_time:
            return self._next_in_elapsed_time(moment, tz)
        return self._next_in_wall_time(moment, tz)

    def _next_in_wall_time(self, moment: datetime, tz: tzinfo) -> datetime:
        # The first instant reading a wall time only grows with the wall time, so the
        # first match whose instant is after ``moment`` is the answer; only inside a
        # repeated interval are there earlier matches to pass over.
        wall = _wall_time(moment, tz)
        while True:
            wall = self._next_wall_time(wall)
            instant = _first_instant_reading(wall, tz)
            if instant > moment:
                return instant

    def _next_in_elapsed_time(self, moment: datetime, tz: tzinfo) -> datetime:
        # Within a repeated interval, wall times up to one repeat back from ``moment``
        # come again after it (their second occurrence), so the search starts there.
        wall = _wall_time(moment, tz)
        readings = _instants_reading(wall, tz)
        wall -= readings[-1] - readings[0]
        best: datetime | None = None
        while True:
            wall = self._next_wall_time(wall)
            readings = _instants_reading(wall, tz)
            later = [instant for instant in readings if instant > moment]
            if not later:
                continue
            best = later[0] if best is None else min(best, later[0])
            # A first occurrence after ``moment``: every later wall time reads later still.
            if later[0] == readings[0]:
                return best

    def _next_wall_time(self, after: datetime) -> datetime:
        """The first naive wall-clock minute strictly after ``after`` that matches."""
        wall = after.replace(second=0, microsecond=0) + _MINUTE
        last_year = wall.year + _SEARCH_YEARS
        while wall.year <= last_year:
            if wall.month not in self.months:
                wall = _start_of_day((wall.replace(day=1) + 32 * _DAY).replace(day=1))
            elif not self._is_day(wall.date()):
                wall = _start_of_day(wall + _DAY)
            elif wall.hour not in self.hours:
                hour = _next_value(self.hours, wall.hour)
                next_day = _start_of_day(wall + _DAY)
                wall = next_day if hour is None else wall.replace(hour=hour, minute=0)
            elif wall.minute not in self.minutes:
                minute = _next_value(self.minutes, wall.minute)
                next_hour = wall.replace(minute=0) + _HOUR
                wall = next_hour if minute is None else wall.replace(minute=minute)
            else:
                return wall
        raise CronError(f"cron {self.text!r}: no match within {_SEARCH_YEARS} years of {after}")

    def _is_day(self, day: date) -> bool:
        in_month = day.day in self.days
        in_week = day.isoweekday() % 7 in self.weekdays
        return (in_month or in_week) if self.either_day_matches else (in_month and in_week)

    def _can_fire(self) -> bool:
        # Every weekday falls on every date of the calendar in some year (February 29
        # too, within 28 years), so only day-of-month against month can rule out a fire.
        if self.either_day_matches:
            return True
        return any(day <= _DAYS_IN_MONTH[month] for month in self.months for day in self.days)


@dataclass(frozen=True, slots=True, kw_only=True)
class Every:
    """Fire every ``seconds``, at the multiples of it since the Unix epoch.

    Aligning to the epoch, not to a start time, makes the ticks the same in every
    process, whenever it started. Raises ``ValueError`` unless ``seconds`` is positive.
    """

    seconds: float

    def __post_init__(self) -> None:
        if _period(self.seconds) is None:
            raise ValueError(
                f"every {self.seconds!r}: not a positive number of seconds; "
                "use for example 300 for every five minutes"
            )

    def tick_at_or_before(self, moment: datetime) -> datetime:
        """The latest tick at or before the aware ``moment``, in UTC."""
        _require_aware(moment, "moment")
        period = timedelta(seconds=self.seconds)
        return _EPOCH + (moment - _EPOCH) // period * period

    def next_after(self, moment: datetime, tz: tzinfo | None = None) -> datetime:
        """The first tick strictly after the aware ``moment``, in UTC; ``tz`` is ignored."""
        return self.tick_at_or_before(moment) + timedelta(seconds=self.seconds)


#: What the settings may declare: ``"cron"`` or ``"every"``.
Schedule: TypeAlias = CronExpression | Every


def tick_key(schedule_name: str, tick: datetime) -> str:
    """A stable name for one tick of one schedule: ``"nightly-report@2025-03-30T01:00:00Z"``.

    The same instant gives the same key in any process and any time zone. The schedule
    name is used as it is: a caller that makes a file name of the key must restrict it.
    """
    _require_aware(tick, "tick")
    return f"{schedule_name}@{tick.astimezone(UTC).replace(tzinfo=None).isoformat()}Z"


def latest_tick(
    schedule: Schedule, *, after: datetime, until: datetime, tz: tzinfo
) -> datetime | None:
    """The latest tick later than ``after`` and at or before ``until``, or None.

    Costs a few dozen ``next_after`` calls however many ticks the span holds.
    """
    if isinstance(schedule, Every):
        tick = schedule.tick_at_or_before(until)
        return tick if tick > after else None
    found = schedule.next_after(after, tz)
    if found > until:
        return None
    # Bisect: ``found`` is a tick in the span, and none lies between ``ceiling`` and
    # ``until``; each turn halves the time between the two.
    ceiling = until
    while schedule.next_after(found, tz) <= until:
        middle = found + (ceiling - found) / 2
        beyond_middle = schedule.next_after(middle, tz)
        if beyond_middle <= until:
            found = beyond_middle
        else:
            ceiling = middle
    return found


def due_tick(
    schedule: Schedule,
    *,
    last_tick: datetime | None,
    now: datetime,
    tz: tzinfo,
    catch_up: bool,
    grace_s: float = ON_TIME_GRACE_S,
) -> datetime | None:
    """The one tick to fire at ``now``, or None; never a backlog of ticks.

    ``last_tick`` is the latest tick fired (None: never fired). The latest tick after it,
    up to ``now``, is due when it is less than ``grace_s`` old: it is on time, and the
    caller only woke a little late. An older one was missed (no worker ran, say): with
    ``catch_up`` it is due once, standing for all the ticks missed before it too; without,
    it is dropped and the schedule goes on with the next tick. With no ``last_tick``
    nothing counts as missed, since the schedule may be new: only an on-time tick is due.
    A ``last_tick`` after ``now`` (the clock went back) makes nothing due before it.
    """
    on_time_after = now - timedelta(seconds=grace_s)
    if last_tick is None:
        after = on_time_after
    elif catch_up:
        after = last_tick
    else:
        after = max(last_tick, on_time_after)
    return latest_tick(schedule, after=after, until=now, tz=tz)


def _split(text: str) -> list[str]:
    """The five fields of ``text``, macros expanded, lower-cased."""
    fields = text.lower().split()
    if fields and fields[0].startswith("@"):
        if fields[0] not in _MACROS:
            raise CronError(
                f"cron {text!r}: unknown macro {fields[0]!r}; use one of {', '.join(_MACROS)}"
            )
        if len(fields) != 1:
            raise CronError(f"cron {text!r}: a macro stands alone, with no fields after it")
        return _MACROS[fields[0]].split()
    if len(fields) != 5:
        raise CronError(
            f"cron {text!r}: expected 5 fields (minute hour day-of-month month "
            f"day-of-week) or a macro such as @daily, not {len(fields)}"
        )
    return fields


def _parse_field(text: str, field: _Field, spec: str) -> frozenset[int]:
    values: set[int] = set()
    for term in spec.split(","):
        values.update(_parse_term(text, field, spec, term))
    return frozenset(values)


def _parse_term(text: str, field: _Field, spec: str, term: str) -> range:
    """The values of one list item: ``*``, ``a``, ``a-b``, each with an optional ``/n``."""
    match = _TERM.fullmatch(term)
    if match is None or (match["start"] == "*" and match["end"] is not None):
        raise CronError(
            f"cron {text!r}: {field.name} field {spec!r} is malformed; use *, a value, a "
            "range a-b, a step */n, a-b/n or a/n, or a comma-separated list of these"
        )
    if match["start"] == "*":
        values = range(field.low, field.high + 1)
    else:
        start = _parse_value(text, field, match["start"])
        if match["end"] is not None:
            end = _parse_value(text, field, match["end"])
        elif match["step"] is not None:
            end = field.high  # a/n: from a to the end of the field
        else:
            end = start
        if end < start:
            raise CronError(
                f"cron {text!r}: {field.name} field {term!r} is a reversed range; "
                "put the smaller value first"
                + (" (7 is Sunday too, as in fri-7)" if field.name == "day-of-week" else "")
            )
        values = range(start, end + 1)
    return values[:: _parse_step(text, field, term, match["step"])]


def _parse_value(text: str, field: _Field, token: str) -> int:
    if token in field.names:
        return field.low + field.names.index(token)
    if not token.isdigit():
        raise CronError(
            f"cron {text!r}: {field.name} field {token!r} is not {field.kind}; use {field.allowed}"
        )
    # Every bound is below 100, so a longer number need not be converted to be refused.
    if len(token.lstrip("0")) > 2 or not field.low <= int(token) <= field.high:
        raise CronError(
            f"cron {text!r}: {field.name} field {token!r} is out of range {field.allowed}"
        )
    return int(token)


def _parse_step(text: str, field: _Field, term: str, token: str | None) -> int:
    if token is None:
        return 1
    if len(token.lstrip("0")) > 2 or not 1 <= int(token) <= field.high:
        raise CronError(
            f"cron {text!r}: {field.name} field {term!r} has step {token}; "
            f"use a step of 1-{field.high}"
        )
    return int(token)


def _next_value(values: frozenset[int], current: int) -> int | None:
    return min((value for value in values if value > current), default=None)


def _start_of_day(moment: datetime) -> datetime:
    return datetime.combine(moment.date(), time())


def _wall_time(moment: datetime, tz: tzinfo) -> datetime:
    """What the clock on the wall in ``tz`` reads at ``moment``, as a naive datetime."""
    return moment.astimezone(tz).replace(tzinfo=None, fold=0)


def _instants_reading(wall: datetime, tz: tzinfo) -> list[datetime]:
    """The UTC instants at which the clock of ``tz`` reads ``wall``, in order.

    None for a time in a skipped interval, two for one in a repeated interval.
    """
    candidates = {wall.replace(tzinfo=tz, fold=fold).astimezone(UTC) for fold in (0, 1)}
    return sorted(instant for instant in candidates if _wall_time(instant, tz) == wall)


def _first_instant_reading(wall: datetime, tz: tzinfo) -> datetime:
    """The first instant at which the clock of ``tz`` reads ``wall`` or later."""
    readings = _instants_reading(wall, tz)
    if readings:
        return readings[0]
    # Skipped: PEP 495 maps ``wall`` with the offsets before and after the gap to an
    # instant on each side of its end. Bisect to that end, which tz data keeps to seconds.
    before, after = sorted(wall.replace(tzinfo=tz, fold=fold).astimezone(UTC) for fold in (0, 1))
    while after - before > _SECOND:
        middle = before + (after - before) // (2 * _SECOND) * _SECOND
        if _wall_time(middle, tz) >= wall:
            after = middle
        else:
            before = middle
    return after


def _period(seconds: float) -> timedelta | None:
    try:
        period = timedelta(seconds=seconds)
    except (OverflowError, ValueError, TypeError):
        return None
    return period if math.isfinite(seconds) and period > timedelta(0) else None


def _require_aware(moment: datetime, what: str) -> None:
    if moment.utcoffset() is None:
        raise ValueError(f"{what} {moment!r} is naive; pass an aware datetime")
