"""Periodic tasks: supervisors enqueue the ``OPTIONS["schedule"]`` entries at their ticks.

When (``schedule``): a cron expression matched against the wall clock of Django's
``TIME_ZONE``, or ``every`` N seconds since the Unix epoch. A *tick* is one such instant.
Every supervisor of the backend (not ``--batch``) watches every schedule and wakes for its
next tick; the tick becomes an ordinary task record, with the marker ``<name>@<tick>``
(``schedule.tick_key``), that any supervisor serving its queue runs.

Files (``journal``)::

    schedules.lock            held while a supervisor looks at the schedules and fires
    schedules/<name>.json     the last tick fired and its task id: the schedule's record
    schedules/<name>.firing   a tick being fired and the id its task record gets, written
                              durably before that record; removed once <name>.json says so

One fire, under the lock::

    1  resolve a <name>.firing left by a supervisor that died (see below)
    2  the ticks due: those after the last fired one up to now (``ticks_to_fire``)
    3  for each: <name>.firing (synced), the task record (synced: the commit point),
       <name>.json (synced), remove <name>.firing

Why a tick fires once: only the holder of the lock fires, and it first reads the last
tick fired, so a second supervisor waking for the same tick finds it fired and does
nothing. The task record is the commit point: the tick is fired if and only if its
record was written. The id a record gets is its place in the writer's segment, known
before it is written, so step 3 notes that id in ``<name>.firing`` first. Each write of
step 3 is on disk before the next begins (with ``durable``; without, the same holds for
crashes of the process), so a crash or a power loss leaves one of the states below. A
supervisor that dies within step 3 releases the lock with the kernel, and the next holder
finds ``<name>.firing`` in step 1:

- its tick is not after the last one in ``<name>.json``: died after recording it; the
  file is simply removed;
- a whole line starts at its id: the record was written; the tick is recorded as fired
  and is never fired again (died between the record and ``<name>.json``);
- no line there: the record was never written and never will be, since its writer is
  dead (or failed on that write and cut it off) and a segment has one writer; the tick
  did not fire, and step 2 fires it: on time for a supervisor that watched at that tick,
  else as a missed tick (``catch_up``).

And why none is lost: ``<name>.json`` only ever names a tick whose record is on disk, and
``<name>.firing`` goes only after it, so the last tick fired never runs ahead of the
journal. A segment with no line at the id may also be gone: removed by its writer when
the record was its first line and the write failed (a full disk), or pruned. Pruning
skips segments that a ``.firing`` file names (``history``), so a missing segment always
means "never written", never "written, run and pruned".

Which ticks fire: a tick is *on time* when it came after a supervisor started watching
(this one, or an older one still live by its heartbeat) and less than ``ON_TIME_GRACE_S``
ago; each on-time tick fires once, in order, even if the supervisors woke late. Older
ticks after the last one fired were *missed* (no supervisor ran, say): with ``catch_up``
(the default) the latest of them fires once, at start, standing for all; with
``"catch_up": False`` they are skipped. A schedule that never fired has missed nothing:
it first fires at its first tick after a supervisor started watching it.
"""

from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

from django.utils import timezone
from django.utils.module_loading import import_string

from .. import compat, journal
from ..journal.heartbeats import Heartbeat
from ..options import ScheduleOptions
from ..results import build_task_result
from .cron import (
    ON_TIME_GRACE_S,
    CronExpression,
    Every,
    Schedule,
    due_tick,
    latest_tick,
    tick_key,
)

logger = logging.getLogger(__name__)

__all__ = [
    "RETRY_S",
    "ScheduleStatus",
    "Scheduler",
    "parse_schedule",
    "schedule_statuses",
    "ticks_to_fire",
]

#: After a failure to fire (the journal cannot be written), look again this much later.
RETRY_S = 0.5


def parse_schedule(options: ScheduleOptions) -> Schedule:
    """The schedule's ``cron`` or ``every``; CronError for a bad cron expression and
    ValueError for both or neither."""
    if options.cron is not None and options.every is None:
        return CronExpression.parse(options.cron)
    if options.every is not None and options.cron is None:
        return Every(seconds=options.every)
    raise ValueError("give one of 'cron' and 'every'")


def ticks_to_fire(
    schedule: Schedule,
    *,
    last_tick: datetime | None,
    now: datetime,
    watching_since: datetime,
    tz: tzinfo,
    catch_up: bool,
) -> tuple[datetime | None, list[datetime]]:
    """The missed tick to catch up on (or None), and the on-time ticks, oldest first.

    See the module's docstring; ``last_tick`` is the last tick fired (None: never), and
    ``watching_since`` when the oldest live supervisor of the journal started.
    """
    on_time_after = _on_time_after(now, watching_since)
    missed = due_tick(
        schedule, last_tick=last_tick, now=on_time_after, tz=tz, catch_up=catch_up, grace_s=0
    )
    on_time: list[datetime] = []
    tick = max(moment for moment in (last_tick, missed, on_time_after) if moment is not None)
    while (tick := schedule.next_after(tick, tz)) <= now:
        on_time.append(tick)
    return missed, on_time


def _on_time_after(now: datetime, watching_since: datetime) -> datetime:
    """Ticks after this are on time: the supervisor watched, and they are recent."""
    return min(now, max(watching_since, now - timedelta(seconds=ON_TIME_GRACE_S)))


@dataclass(slots=True, kw_only=True)
class _Watched:
    """A schedule a supervisor fires: its record-to-be, and when to look at it next."""

    options: ScheduleOptions
    schedule: Schedule
    task: Any
    record: journal.Record
    look_at: datetime


class Scheduler:
    """A supervisor's periodic tasks: ``fire_due`` from its loop, which sleeps at most
    ``seconds_to_next_look``."""

    def __init__(self, backend: Any, journal_: journal.Journal) -> None:
        self._backend = backend
        self._journal = journal_
        self._tz = timezone.get_default_timezone()
        self._watching_since = _now()
        self._watched = [
            watched
            for options in backend.backend_options.schedule.values()
            if (watched := self._watch(options)) is not None
        ]

    def _watch(self, options: ScheduleOptions) -> _Watched | None:
        """The schedule ready to fire; None, logged, for one the system checks refuse
        (the worker runs them, unless it was started with --skip-checks)."""
        try:
            schedule = parse_schedule(options)
            task = import_string(options.task_path)
            if not isinstance(task, compat.Task):
                raise TypeError(f"{options.task_path} is not a task")
            record = journal.Record(
                id="",
                task_path=task.module_path,
                args=journal.to_json_value(options.args, "args"),
                kwargs=journal.to_json_value(options.kwargs, "kwargs"),
                priority=task.priority if options.priority is None else options.priority,
                queue_name=options.queue_name or task.queue_name,
                backend=self._backend.alias,
                enqueued_at=_now(),
            )
        except (ImportError, TypeError, ValueError) as error:
            logger.error("Schedule %s is not fired: %s (see manage.py check)", options.name, error)
            return None
        return _Watched(
            options=options,
            schedule=schedule,
            task=task,
            record=record,
            look_at=self._watching_since,
        )

    def log_schedules(self) -> None:
        """Say which schedules this supervisor fires, and when each ticks next."""
        watched = {watched.options.name for watched in self._watched}
        for schedule in schedule_statuses(self._backend, _now()):
            if schedule.name in watched:
                logger.info(
                    "Will fire periodic task schedule=%s path=%s queue=%s when=%r next_tick=%s",
                    schedule.name,
                    schedule.task_path,
                    schedule.queue_name or "?",
                    schedule.when,
                    "-"
                    if schedule.next_tick is None
                    else schedule.next_tick.astimezone(schedule.tz).isoformat(),
                )

    def seconds_to_next_look(self) -> float:
        """Seconds until a schedule's next tick (0: one is due); inf without schedules."""
        if not self._watched:
            return math.inf
        look_at = min(watched.look_at for watched in self._watched)
        return max(0.0, (look_at - _now()).total_seconds())

    def fire_due(self) -> int:
        """Enqueue the ticks due now, each once across every supervisor of the journal;
        return how many this supervisor enqueued. Cheap while none is due."""
        now = _now()
        due = [watched for watched in self._watched if watched.look_at <= now]
        if not due:
            return 0
        fired = 0
        try:
            watching_since = self._watched_since(now)
            with self._journal.schedule_lock():
                for watched in due:
                    fired += self._fire_due(watched, now, watching_since)
        except OSError as error:  # the lock itself: the journal cannot be used
            logger.error("Cannot fire periodic tasks: %s; trying again in %ss", error, RETRY_S)
            for watched in due:
                watched.look_at = min(watched.look_at, now + timedelta(seconds=RETRY_S))
        return fired

    def _watched_since(self, now: datetime) -> datetime:
        """Since when a supervisor of the journal has watched the schedules: this one, or
        an older one still live (its heartbeat), which a stall kept from firing a tick
        that came before this one started; that tick is on time, not missed."""
        if self._watching_since <= now - timedelta(seconds=ON_TIME_GRACE_S):
            return self._watching_since  # older ticks are missed anyway
        since = self._watching_since
        beat_now = timezone.now()  # naive without USE_TZ, as heartbeats are written then
        for data in self._journal.read_heartbeats():
            peer = Heartbeat.from_json(data)
            if peer is None or peer.backend != self._backend.alias:
                continue
            with contextlib.suppress(TypeError):  # naive and aware times mixed
                if peer.is_live(beat_now):
                    started_at = peer.started_at
                    if timezone.is_naive(started_at):
                        started_at = timezone.make_aware(started_at, self._tz)
                    since = min(since, started_at)
        return since

    def _fire_due(self, watched: _Watched, now: datetime, watching_since: datetime) -> int:
        """Fire one schedule's due ticks (the caller holds the lock); how many."""
        name = watched.options.name
        try:
            last_tick = self._last_tick(name, now)
            missed, on_time = ticks_to_fire(
                watched.schedule,
                last_tick=last_tick,
                now=now,
                watching_since=watching_since,
                tz=self._tz,
                catch_up=watched.options.catch_up,
            )
            if last_tick is not None and missed is None:
                self._note_skipped(watched, last_tick, now, watching_since)
            fired = 0
            if missed is not None:
                self._fire(watched, missed, caught_up_since=last_tick)
                fired += 1
            for tick in on_time:
                self._fire(watched, tick)
                fired += 1
        except OSError as error:
            logger.error("Cannot fire schedule=%s: %s; trying again in %ss", name, error, RETRY_S)
            watched.look_at = now + timedelta(seconds=RETRY_S)
            return 0
        watched.look_at = watched.schedule.next_after(now, self._tz)
        return fired

    def _note_skipped(
        self, watched: _Watched, last_tick: datetime, now: datetime, watching_since: datetime
    ) -> None:
        """Say so when ``catch_up`` is off and ticks were missed since the last fired."""
        on_time_after = _on_time_after(now, watching_since)
        skipped = latest_tick(watched.schedule, after=last_tick, until=on_time_after, tz=self._tz)
        if skipped is not None:
            logger.info(
                "Schedule %s: skipped the ticks missed since %s, up to %s (catch_up is False)",
                watched.options.name,
                _iso(last_tick),
                _iso(skipped),
            )

    def _last_tick(self, name: str, now: datetime) -> datetime | None:
        """The last tick fired, once a fire cut short by a dead supervisor is resolved.

        See the module's docstring. A damaged file (a hand edit, a bad disk) is replaced
        by a state that counts every tick up to now as fired: a tick is skipped rather
        than perhaps fired twice.
        """
        try:
            last = self._journal.read_fired(name)
            firing = self._journal.read_firing(name)
        except ValueError as error:
            logger.error(
                "Schedule %s: its state in %s is damaged (%s); counting its ticks up to now "
                "as fired",
                name,
                self._journal.schedules_dir,
                error,
            )
            self._journal.write_fired(name, journal.Fire(tick=now, task_id=None, fired_at=now))
            self._journal.remove_firing(name)
            return now
        if firing is None:
            return last.tick if last else None
        if last is not None and firing.tick <= last.tick:
            pass  # recorded already; its supervisor died before it removed this
        elif firing.task_id is not None and self._journal.has_line_at(firing.task_id):
            logger.warning(
                "Schedule %s: tick %s was enqueued as task id=%s, but its supervisor stopped "
                "(or failed to write) before recording it; recorded now, not fired again",
                name,
                _iso(firing.tick),
                firing.task_id,
            )
            self._journal.write_fired(name, firing)
            last = firing
        else:
            logger.warning(
                "Schedule %s: a supervisor stopped while firing tick %s, before its task "
                "was written; the tick was not fired",
                name,
                _iso(firing.tick),
            )
        self._journal.remove_firing(name)
        return last.tick if last else None

    def _fire(
        self, watched: _Watched, tick: datetime, *, caught_up_since: datetime | None = None
    ) -> None:
        """Enqueue one tick: ``.firing``, the record, ``.json``; see the module's docstring.

        Raises OSError with the tick not fired (the record was not written) or fired
        (written, but not yet recorded: the next look resolves it).
        """
        name = watched.options.name
        record = replace(watched.record, enqueued_at=timezone.now(), schedule=tick_key(name, tick))
        fired_at = _now()

        def note_firing(record_id: str) -> None:
            fire = journal.Fire(tick=tick, task_id=record_id, fired_at=fired_at)
            self._journal.write_firing(name, fire)

        try:
            record_id = self._journal.append(record, before_write=note_firing)
        except OSError:
            # Nothing of the record is on disk: the tick was not fired.
            with contextlib.suppress(OSError):
                self._journal.remove_firing(name)
            raise
        self._journal.write_fired(
            name, journal.Fire(tick=tick, task_id=record_id, fired_at=fired_at)
        )
        # Only now: with neither file saying so, the tick would fire again.
        self._journal.remove_firing(name)
        logger.info(
            "Fired periodic task id=%s path=%s queue=%s marker=%s%s",
            record_id,
            record.task_path,
            record.queue_name,
            record.schedule,
            ""
            if caught_up_since is None
            else f" (catching up on the ticks missed since {_iso(caught_up_since)})",
        )
        self._announce(replace(record, id=record_id), watched.task)

    def _announce(self, record: journal.Record, task: Any) -> None:
        """Send ``task_enqueued``, as ``enqueue`` does."""
        try:
            result = build_task_result(record, None, task)
            compat.task_enqueued.send(type(self._backend), task_result=result)
        except Exception:
            logger.exception("A task_enqueued receiver failed for task id=%s", record.id)


# --- status -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ScheduleStatus:
    """One schedule as ``procpool_status`` shows it."""

    name: str
    task_path: str
    cron: str | None
    every: float | None
    queue_name: str | None  # None: the task's own, which does not import
    catch_up: bool
    last_fire: journal.Fire | None
    #: The first tick after now; None if the schedule cannot fire (see the checks).
    next_tick: datetime | None
    tz: tzinfo = field(default=UTC)

    @property
    def when(self) -> str:
        """The cron expression, or ``every 300s``."""
        return self.cron if self.cron is not None else f"every {self.every:g}s"


def schedule_statuses(backend: Any, now: datetime) -> list[ScheduleStatus]:
    """The backend's schedules with their last fire and next tick, by name; reads only."""
    tz = timezone.get_default_timezone()
    statuses = []
    for name, options in sorted(backend.backend_options.schedule.items()):
        try:
            next_tick: datetime | None = parse_schedule(options).next_after(now, tz)
        except ValueError:  # CronError too
            next_tick = None
        statuses.append(
            ScheduleStatus(
                name=name,
                task_path=options.task_path,
                cron=options.cron,
                every=options.every,
                queue_name=options.queue_name or _own_queue(options.task_path),
                catch_up=options.catch_up,
                last_fire=_last_fire(backend.journal, name),
                next_tick=next_tick,
                tz=tz,
            )
        )
    return statuses


def _last_fire(journal_: journal.Journal, name: str) -> journal.Fire | None:
    """As ``Scheduler._last_tick`` resolves it, without writing (or locking) anything."""
    if not journal_.path.is_dir():
        return None
    try:
        last = journal_.read_fired(name)
        firing = journal_.read_firing(name)
    except ValueError:
        return None
    if firing is not None and firing.task_id and (last is None or firing.tick > last.tick):
        if journal_.has_line_at(firing.task_id):
            return firing
    return last


def _own_queue(task_path: str) -> str | None:
    with contextlib.suppress(ImportError):
        task = import_string(task_path)
        if isinstance(task, compat.Task):
            return str(task.queue_name)
    return None


def _now() -> datetime:
    # Not timezone.now(): naive without USE_TZ, and ticks are instants.
    return datetime.now(UTC)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat() + "Z"
