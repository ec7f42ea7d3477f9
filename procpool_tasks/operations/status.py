"""What a journal holds now: counts per queue and status, running tasks, live supervisors,
recent failures, quarantined records and the periodic tasks' schedules. ``procpool_status``
prints it and the status page shows it; ``to_json`` is the document both give, described
by the JSON Schema ``SCHEMA_PATH`` (``procpool_tasks/status.schema.json``, shipped with the
package).

It costs what a survey of the history costs (``history``): finished tasks are counted from
segment summaries, so the answer does not slow down as they pile up.
"""

from __future__ import annotations

import contextlib
import json
import stat
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from django.utils import timezone

from .. import compat
from .. import journal as j
from ..journal import history
from ..journal.heartbeats import Heartbeat, serve_flags
from ..periodic import scheduler

__all__ = [
    "COUNTED",
    "SCHEMA_PATH",
    "SCHEMA_VERSION",
    "Status",
    "UnservedQueue",
    "age_text",
    "collect",
    "journal_problem",
    "to_json",
    "warnings",
]

SCHEMA_VERSION = 1
#: The JSON Schema of ``to_json``'s document, installed with the package.
SCHEMA_PATH = Path(__file__).resolve().parent.parent / "status.schema.json"
#: What is counted per queue. READY is due now; DEFERRED is READY with a run_after in the
#: future; HANDING_OFF and HANDED_OFF tasks are being moved, or were moved, to another
#: backend (``handoff``); QUARANTINED counts copies of records that could not be run (see
#: quarantine/).
COUNTED = (
    "READY",
    "DEFERRED",
    "RUNNING",
    "SUCCESSFUL",
    "FAILED",
    "HANDING_OFF",
    "HANDED_OFF",
    "QUARANTINED",
)


@dataclass(slots=True, kw_only=True)
class QueueStatus:
    counts: Counter[str] = field(default_factory=Counter)
    oldest_ready_at: datetime | None = None  # when the longest-waiting due task became due

    def note_ready(self, due_at: datetime) -> None:
        if self.oldest_ready_at is None or due_at < self.oldest_ready_at:
            self.oldest_ready_at = due_at


@dataclass(frozen=True, slots=True, kw_only=True)
class RunningTask:
    id: str
    task_path: str
    queue_name: str
    worker_id: str
    supervisor: str | None
    supervisor_live: bool
    attempt: int
    started_at: datetime | None  # this attempt's start


@dataclass(frozen=True, slots=True, kw_only=True)
class QuarantinedRecord:
    name: str  # the file in quarantine/, and the id of the task when it has one
    file: str
    reason: str
    segment: str
    offset: int
    task_path: str | None
    queue_name: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class UnservedQueue:
    """A queue where READY tasks (due now) wait and that no live supervisor serves."""

    queue: str
    ready: int


@dataclass(slots=True, kw_only=True)
class Status:
    backend: str
    journal: str
    #: Why there is no journal to read (see ``journal_problem``); None when there is one.
    journal_problem: str | None
    generated_at: datetime
    queues: dict[str, QueueStatus]
    running: list[RunningTask]
    supervisors: list[Heartbeat]
    recent_failures: list[history.Failure]
    quarantined: list[QuarantinedRecord]
    #: The last hour, a minute at a time, oldest first: (minute's start, ended per status).
    finished_per_minute: list[tuple[datetime, Counter[str]]] = field(default_factory=list)
    #: The backend's periodic tasks, by name, with their last fire and next tick.
    schedules: list[scheduler.ScheduleStatus] = field(default_factory=list)
    #: The backend's QUEUES (empty: it accepts any queue name).
    known_queues: frozenset[str] = frozenset()

    def live_supervisors(self) -> list[Heartbeat]:
        return [beat for beat in self.supervisors if beat.is_live(self.generated_at)]

    def unserved_queues(self) -> list[UnservedQueue]:
        """The queues with READY tasks due now that no live supervisor serves, by name."""
        live = self.live_supervisors()
        return [
            UnservedQueue(queue=name, ready=queue.counts["READY"])
            for name, queue in sorted(self.queues.items())
            if queue.counts["READY"] and not any(beat.serves(name) for beat in live)
        ]

    def total(self) -> QueueStatus:
        total = QueueStatus()
        for queue in self.queues.values():
            total.counts.update(queue.counts)
            if queue.oldest_ready_at is not None:
                total.note_ready(queue.oldest_ready_at)
        return total


def collect(backend: Any) -> Status:
    """The status of a ProcPoolBackend's journal, now.

    Summaries it brings up to date are kept when no other process holds the history lock
    and this one may write the journal, so that the next call reads less; otherwise it
    only reads. A journal that does not exist is empty, and ``journal_problem`` says so.
    """
    journal: j.Journal = backend.journal
    problem = journal_problem(journal)
    if problem is None:
        # A read-only journal (a mount, a backup) is read as it is: no lock, no summary.
        with history.history_writer(journal, blocking=False, read_only_ok=True) as held:
            survey = history.survey(journal, write=held)
    else:
        # A look makes nothing: the first enqueue or worker makes the journal.
        survey = history.Survey()
    now = timezone.now()
    supervisors = _supervisors(journal, backend.alias)
    status = Status(
        backend=backend.alias,
        journal=str(journal.path),
        journal_problem=problem,
        generated_at=now,
        queues={name: QueueStatus() for name in sorted(backend.queues)},
        running=[],
        supervisors=supervisors,
        recent_failures=_recent_failures(survey),
        finished_per_minute=_finished_per_minute(survey, now),
        quarantined=quarantined_records(journal),
        schedules=scheduler.schedule_statuses(backend, now),
        known_queues=frozenset(backend.queues),
    )
    for summary in survey.summaries.values():
        for queue_name, by_status in summary.counts.items():
            status.queues.setdefault(queue_name, QueueStatus()).counts.update(by_status)
    live = {beat.instance for beat in status.live_supervisors()}
    for record, state in survey.unfinished:
        _count_unfinished(status, record, state, live)
    for bad in status.quarantined:
        if bad.queue_name is not None:
            status.queues.setdefault(bad.queue_name, QueueStatus()).counts["QUARANTINED"] += 1
    status.running.sort(key=lambda task: task.started_at or now)
    return status


def journal_problem(journal: j.Journal) -> str | None:
    """Why there is no journal to read at its path, or None when there is one.

    A mistyped ``path``, or a container whose BASE_DIR differs from the workers', must not
    look like a quiet journal. OSError if the path cannot be looked at.
    """
    try:
        info = journal.path.stat()
    except (FileNotFoundError, NotADirectoryError):
        return (
            f"The journal directory {journal.path} does not exist: no task was ever "
            "enqueued with this path, or OPTIONS['path'] points elsewhere"
        )
    if not stat.S_ISDIR(info.st_mode):
        return (
            f"The journal path {journal.path} is not a directory: point OPTIONS['path'] "
            "at a directory"
        )
    if not journal.segments_dir.is_dir():
        return (
            f"The journal directory {journal.path} holds no journal (no segments/): no "
            "task was ever enqueued with this path, or OPTIONS['path'] points elsewhere"
        )
    return None


def _count_unfinished(
    status: Status, record: j.Record, state: j.State | None, live: set[str]
) -> None:
    queue = status.queues.setdefault(record.queue_name, QueueStatus())
    if state is not None and state.status == j.RUNNING:
        queue.counts["RUNNING"] += 1
        status.running.append(
            RunningTask(
                id=record.id,
                task_path=record.task_path,
                queue_name=record.queue_name,
                worker_id=state.worker_ids[-1] if state.worker_ids else "",
                supervisor=state.owner,
                supervisor_live=state.owner in live,
                attempt=len(state.worker_ids),
                started_at=state.last_attempted_at,
            )
        )
    elif state is not None and state.status == j.HANDING_OFF:
        queue.counts[j.HANDING_OFF] += 1
    elif state is None or state.status == j.READY:
        due_at = (state.run_after if state else None) or record.run_after or record.enqueued_at
        if due_at > status.generated_at:
            queue.counts["DEFERRED"] += 1
        else:
            queue.counts["READY"] += 1
            queue.note_ready(due_at)


def _supervisors(journal: j.Journal, alias: str) -> list[Heartbeat]:
    beats = [Heartbeat.from_json(data) for data in journal.read_heartbeats()]
    return sorted(
        (beat for beat in beats if beat is not None and beat.backend == alias),
        key=lambda beat: beat.started_at,
    )


def _finished_per_minute(
    survey: history.Survey, now: datetime
) -> list[tuple[datetime, Counter[str]]]:
    last = int(now.timestamp() // 60)
    minutes = {
        minute: Counter[str]() for minute in range(last - history.MINUTES_KEPT + 1, last + 1)
    }
    for summary in survey.summaries.values():
        for minute, by_status in summary.minutes.items():
            if int(minute) in minutes:
                minutes[int(minute)].update(by_status)
    return [(datetime.fromtimestamp(minute * 60, UTC), count) for minute, count in minutes.items()]


def _recent_failures(survey: history.Survey) -> list[history.Failure]:
    failures = [failure for summary in survey.summaries.values() for failure in summary.failures]
    failures.sort(key=lambda failure: failure.finished_at, reverse=True)
    return failures[: history.RECENT_FAILURES]


def quarantined_records(journal: j.Journal) -> list[QuarantinedRecord]:
    """The copies in quarantine/, oldest first; the task path and queue where readable."""
    records = []
    for name, data in journal.quarantined():
        task_path, queue_name = _task_of(data.get("line", ""))
        records.append(
            QuarantinedRecord(
                name=name.removesuffix(".json"),
                file=str(journal.quarantine_path(name)),
                reason=str(data.get("reason", "")),
                segment=str(data.get("segment", "")),
                offset=int(data.get("offset", 0)),
                task_path=task_path,
                queue_name=queue_name,
            )
        )
    return records


def _task_of(line: str) -> tuple[str | None, str | None]:
    """The task path and queue of a quarantined line, if it is a readable record."""
    for text in (line, line[9:]):  # a record as JSON, or a framed line: checksum + JSON
        with contextlib.suppress(ValueError, TypeError, AttributeError):
            data = json.loads(text)
            task, queue = data.get("task"), data.get("queue")
            if isinstance(task, str) and isinstance(queue, str):
                return task, queue
    return None, None


def warnings(status: Status) -> list[str]:
    """What ``procpool_status`` says at its top and the page in its banner: READY tasks
    that no live supervisor will run."""
    unserved = status.unserved_queues()
    if not unserved:
        return []
    live = status.live_supervisors()
    if not live:
        backend = (
            ""
            if status.backend == compat.DEFAULT_TASK_BACKEND_ALIAS
            else f" --backend {status.backend}"
        )
        waiting = ", ".join(f"{queue.ready} in {queue.queue!r}" for queue in unserved)
        return [
            f"No live supervisor serves backend {status.backend!r}, and READY tasks wait "
            f"({waiting}); start a worker: manage.py procpool_worker{backend}"
        ]
    served = {name for beat in live for name in (beat.queues or ())}
    return [
        f"{queue.ready} READY task(s) wait in queue {queue.queue!r}, which no live "
        f"supervisor serves; serve it with {serve_flags(queue.queue, served, status.known_queues)}"
        for queue in unserved
    ]


# --- JSON ---------------------------------------------------------------------------------


def to_json(status: Status) -> dict[str, Any]:
    """The status as the JSON document ``procpool_status --json`` prints (``SCHEMA_PATH``)."""
    now = status.generated_at
    return {
        "schema_version": SCHEMA_VERSION,
        "backend": status.backend,
        "journal": status.journal,
        "journal_problem": status.journal_problem,
        "generated_at": _time(now),
        "queues": {name: _queue_json(queue, now) for name, queue in status.queues.items()},
        "totals": _queue_json(status.total(), now),
        "running": [_running_json(task, now) for task in status.running],
        "supervisors": [_supervisor_json(beat, now) for beat in status.supervisors],
        "recent_failures": [_failure_json(failure) for failure in status.recent_failures],
        "finished_per_minute": [
            {"minute": _time(minute), "SUCCESSFUL": count[j.SUCCESSFUL], "FAILED": count[j.FAILED]}
            for minute, count in status.finished_per_minute
        ],
        "quarantined": [_quarantined_json(bad) for bad in status.quarantined],
        "schedules": [_schedule_json(schedule) for schedule in status.schedules],
        "live_supervisors": len(status.live_supervisors()),
        "unserved_queues": [
            {"queue": queue.queue, "ready": queue.ready} for queue in status.unserved_queues()
        ],
    }


def _running_json(task: RunningTask, now: datetime) -> dict[str, Any]:
    return {
        "id": task.id,
        "task_path": task.task_path,
        "queue_name": task.queue_name,
        "worker_id": task.worker_id,
        "supervisor": task.supervisor,
        "supervisor_live": task.supervisor_live,
        "attempt": task.attempt,
        "started_at": _time(task.started_at),
        "running_for_s": _age(task.started_at, now),
    }


def _supervisor_json(beat: Heartbeat, now: datetime) -> dict[str, Any]:
    return {
        "instance": beat.instance,
        "worker_id": beat.worker_id,
        "pid": beat.pid,
        "host": beat.host,
        "processes": beat.processes,
        "queues": beat.queues,
        "started_at": _time(beat.started_at),
        "last_heartbeat_at": _time(beat.beat_at),
        "heartbeat_age_s": _age(beat.beat_at, now),
        "live": beat.is_live(now),
    }


def _failure_json(failure: history.Failure) -> dict[str, Any]:
    return {
        "id": failure.id,
        "task_path": failure.task_path,
        "queue_name": failure.queue_name,
        "finished_at": _time(datetime.fromtimestamp(failure.finished_at, UTC)),
        "exception_class_path": failure.exception_class_path,
        "error": failure.error,
        "attempts": failure.attempts,
    }


def _quarantined_json(bad: QuarantinedRecord) -> dict[str, Any]:
    return {
        "name": bad.name,
        "file": bad.file,
        "reason": bad.reason,
        "segment": bad.segment,
        "offset": bad.offset,
        "task_path": bad.task_path,
        "queue_name": bad.queue_name,
    }


def _schedule_json(schedule: scheduler.ScheduleStatus) -> dict[str, Any]:
    last = schedule.last_fire
    return {
        "name": schedule.name,
        "task_path": schedule.task_path,
        "cron": schedule.cron,
        "every": schedule.every,
        "queue_name": schedule.queue_name,
        "catch_up": schedule.catch_up,
        "last_tick": _time(last.tick if last else None),
        "last_task_id": last.task_id if last else None,
        "last_fired_at": _time(last.fired_at if last else None),
        "next_tick": _time(schedule.next_tick),
    }


def _queue_json(queue: QueueStatus, now: datetime) -> dict[str, Any]:
    return {
        **{name: queue.counts[name] for name in COUNTED},
        "oldest_ready_age_s": _age(queue.oldest_ready_at, now),
    }


def _time(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).isoformat()


def _age(moment: datetime | None, now: datetime) -> float | None:
    return None if moment is None else round(max(0.0, (now - moment).total_seconds()), 3)


def age_text(moment: datetime | None, now: datetime) -> str:
    """How long before ``now`` ``moment`` was, as the tables and the status page say it:
    ``0.8s``, ``12m``, ``3.5h``; ``-`` for no moment."""
    if moment is None:
        return "-"
    seconds = max(0.0, (now - moment).total_seconds())
    if seconds < 120:
        return f"{seconds:.1f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"
