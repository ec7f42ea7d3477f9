"""``manage.py procpool_status``: what is queued, running, failed and stuck; a health check."""

from __future__ import annotations

import json
import sys
from argparse import ArgumentParser
from datetime import datetime
from typing import Any

from django.core.management.base import CommandError

from procpool_tasks.backend import ProcPoolBackend
from procpool_tasks.management.arguments import (
    ProcPoolCommand,
    add_backend_argument,
    backend_of,
    positive_seconds,
)
from procpool_tasks.operations import status
from procpool_tasks.periodic import scheduler

EXIT_HEALTHY = 0
EXIT_UNHEALTHY = 1


class Command(ProcPoolCommand):
    help = (
        "Show a ProcPoolBackend's tasks: per queue the READY (due now), DEFERRED (READY, "
        "run_after in the future), RUNNING, SUCCESSFUL, FAILED, HANDING_OFF and HANDED_OFF "
        "(being moved, and moved, to another backend by procpool_handoff) and QUARANTINED "
        "counts and the age of the oldest READY task; the running tasks, the live supervisors, the "
        "recent failures, the quarantined records and the periodic tasks' schedules with "
        "their last and next tick. With --fail-if-no-worker or "
        "--fail-if-older it is a health check: exit 1, with the reason on stderr, when "
        "unhealthy."
    )
    # A read-only look that health checks run every few seconds, often with -v 0: the
    # system checks' warnings (W001) would be noise on its stderr, and what it needs of
    # the settings, a usable backend, it reports itself (--backend).
    requires_system_checks = ()

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument(
            "--json",
            action="store_true",
            help="Print one JSON document instead of tables; its JSON Schema is "
            f"{status.SCHEMA_PATH}",
        )
        parser.add_argument(
            "--fail-if-no-worker",
            nargs="?",
            const="",
            default=None,
            metavar="QUEUES",
            help="Exit 1 unless a live supervisor serves each of these queues (comma-"
            "separated; default: those of --queue-name, else any queue, and each queue "
            "where READY tasks wait)",
        )
        parser.add_argument(
            "--fail-if-older",
            type=positive_seconds,
            default=None,
            metavar="SECONDS",
            help="Exit 1 if a READY task (not deferred) has waited longer than this",
        )
        parser.add_argument(
            "--queue-name",
            default=None,
            help="The queues the health checks look at, comma-separated (default: all)",
        )
        add_backend_argument(parser, " to look at")

    def handle(self, *args: Any, **options: Any) -> None:
        backend = backend_of(options)
        no_worker = _queue_names(options["fail_if_no_worker"], "--fail-if-no-worker", backend)
        queues = _queue_names(options["queue_name"], "--queue-name", backend)
        try:
            current = status.collect(backend)
        except OSError as error:
            raise CommandError(
                f"Cannot read the journal {backend.journal.path}: {error}"
            ) from error
        if options["json"]:
            self.stdout.write(json.dumps(status.to_json(current), indent=2))
        elif options["verbosity"] > 0:
            self.stdout.write(render(current))
        problems = health_problems(
            current,
            no_worker=no_worker,
            older_than=options["fail_if_older"],
            queues=queues,
        )
        for problem in problems:
            sys.stderr.write(f"UNHEALTHY: {problem}\n")
        if problems:
            raise SystemExit(EXIT_UNHEALTHY)


def _names(value: str | None) -> list[str] | None:
    """Comma-separated names; None when the option was not given, [] for none."""
    if value is None:
        return None
    return [name.strip() for name in value.split(",") if name.strip()]


def _queue_names(value: str | None, option: str, backend: ProcPoolBackend) -> list[str] | None:
    """``_names`` of the backend's QUEUES: a mistyped queue must not pass a health check."""
    names = _names(value)
    unknown = sorted(set(names or ()) - backend.queues) if backend.queues else []
    if unknown:
        raise CommandError(
            f"{option}: {', '.join(unknown)} not in the QUEUES of backend {backend.alias!r} "
            f"({', '.join(sorted(backend.queues))})"
        )
    return names


def health_problems(
    current: status.Status,
    *,
    no_worker: list[str] | None,
    older_than: float | None,
    queues: list[str] | None,
) -> list[str]:
    """Why the backend is unhealthy by the checks asked for; empty when it is healthy."""
    problems = []
    if current.journal_problem is not None and (no_worker is not None or older_than is not None):
        problems.append(current.journal_problem[0].lower() + current.journal_problem[1:])
    live = current.live_supervisors()
    if no_worker is not None:
        wanted = no_worker or queues or []
        if not wanted and not live:
            problems.append(f"no live supervisor serves backend {current.backend!r}")
        for queue_name in wanted:
            if not any(beat.serves(queue_name) for beat in live):
                problems.append(f"no live supervisor serves queue {queue_name!r}")
        if not no_worker and live:
            # Without names: also each queue where READY tasks wait for nobody.
            for unserved in current.unserved_queues():
                if unserved.queue not in wanted and (not queues or unserved.queue in queues):
                    problems.append(
                        f"no live supervisor serves queue {unserved.queue!r}, where "
                        f"{unserved.ready} READY task(s) wait"
                    )
    if older_than is not None:
        for name, queue in current.queues.items():
            if (queues and name not in queues) or queue.oldest_ready_at is None:
                continue
            waited = (current.generated_at - queue.oldest_ready_at).total_seconds()
            if waited > older_than:
                problems.append(
                    f"the oldest READY task of queue {name!r} has waited {waited:.1f}s "
                    f"(more than {older_than:g}s)"
                )
    return problems


# --- the human-readable form --------------------------------------------------------------


def render(current: status.Status) -> str:
    now = current.generated_at
    head = f"Backend {current.backend!r}, journal {current.journal}, at {_when(now)}"
    if current.journal_problem is not None:
        return "\n".join([head, "", current.journal_problem])
    warnings = [f"WARNING: {warning}" for warning in status.warnings(current)]
    lines = [
        *warnings,
        *([""] if warnings else []),
        head,
        "",
        *_queues(current),
        "",
        *_supervisors(current),
        "",
        *_running(current),
        "",
        *_failures(current),
        "",
        f"Quarantined: {len(current.quarantined)}",
        *_table(
            ["NAME", "TASK", "REASON", "FILE"],
            [[bad.name, bad.task_path or "-", bad.reason, bad.file] for bad in current.quarantined],
        ),
        "",
        *_schedules(current.schedules),
    ]
    return "\n".join(lines)


def _queues(current: status.Status) -> list[str]:
    now = current.generated_at
    return _table(
        ["QUEUE", *status.COUNTED, "OLDEST READY"],
        [
            [
                name,
                *(queue.counts[key] for key in status.COUNTED),
                status.age_text(queue.oldest_ready_at, now),
            ]
            for name, queue in [*current.queues.items(), ("(all)", current.total())]
        ],
    )


def _supervisors(current: status.Status) -> list[str]:
    now = current.generated_at
    return [
        f"Supervisors: {len(current.live_supervisors())} live",
        *_table(
            ["WORKER ID", "PID", "HOST", "PROCESSES", "QUEUES", "STARTED", "HEARTBEAT", "LIVE"],
            [
                [
                    beat.worker_id,
                    beat.pid,
                    beat.host,
                    beat.processes,
                    "*" if beat.queues is None else ",".join(beat.queues),
                    _when(beat.started_at),
                    status.age_text(beat.beat_at, now),
                    "yes" if beat.is_live(now) else "NO",
                ]
                for beat in current.supervisors
            ],
        ),
    ]


def _running(current: status.Status) -> list[str]:
    now = current.generated_at
    return [
        f"Running: {len(current.running)}",
        *_table(
            ["ID", "TASK", "QUEUE", "WORKER ID", "ATTEMPT", "RUNNING FOR"],
            [
                [
                    task.id,
                    task.task_path,
                    task.queue_name,
                    task.worker_id + ("" if task.supervisor_live else " (supervisor gone)"),
                    task.attempt,
                    status.age_text(task.started_at, now),
                ]
                for task in current.running
            ],
        ),
    ]


def _failures(current: status.Status) -> list[str]:
    tz = current.generated_at.tzinfo
    return [
        f"Recent failures: {len(current.recent_failures)}",
        *_table(
            ["FINISHED", "ID", "TASK", "ERROR"],
            [
                [_when(datetime.fromtimestamp(f.finished_at, tz)), f.id, f.task_path, f.error]
                for f in current.recent_failures
            ],
        ),
    ]


def _schedules(schedules: list[scheduler.ScheduleStatus]) -> list[str]:
    """The schedules, their times on the clock of TIME_ZONE (which cron reads)."""
    if not schedules:
        return ["Schedules: 0"]
    tz = schedules[0].tz
    return [
        f"Schedules: {len(schedules)} (times in {tz})",
        *_table(
            ["NAME", "TASK", "QUEUE", "WHEN", "LAST TICK", "LAST TASK ID", "NEXT TICK"],
            [
                [
                    schedule.name,
                    schedule.task_path,
                    schedule.queue_name or "?",
                    schedule.when,
                    _when(last.tick.astimezone(tz)) if last else "-",
                    last.task_id if last else "-",
                    _when(schedule.next_tick.astimezone(tz)) if schedule.next_tick else "-",
                ]
                for schedule in schedules
                for last in [schedule.last_fire]
            ],
        ),
    ]


def _table(heads: list[str], rows: list[list[Any]]) -> list[str]:
    if not rows:
        return []
    cells = [heads, *[[str(cell) for cell in row] for row in rows]]
    widths = [max(len(row[column]) for row in cells) for column in range(len(heads))]
    return [
        "  "
        + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in cells
    ]


def _when(moment: datetime) -> str:
    return f"{moment:%Y-%m-%d %H:%M:%S %Z}"
