"""``manage.py procpool_prune``: delete finished tasks from a ProcPoolBackend's journal."""

from __future__ import annotations

import re
from argparse import ArgumentParser, ArgumentTypeError
from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from procpool_tasks.backend import ProcPoolBackend
from procpool_tasks.journal import history
from procpool_tasks.management.arguments import add_backend_argument, backend_of
from procpool_tasks.options import RETAINED_STATUSES

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def duration(value: str) -> timedelta:
    """``90``, ``90s``, ``15m``, ``12h`` or ``7d``: a length of time > 0."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", value)
    if match is None or float(match[1]) <= 0:
        raise ArgumentTypeError(
            f"{value!r} is not a duration > 0 such as 3600, 90s, 15m, 12h or 7d"
        )
    return timedelta(seconds=float(match[1]) * _UNITS[match[2] or "s"])


def statuses(value: str) -> tuple[str, ...]:
    """Finished statuses (``SUCCESSFUL``, ``FAILED``, ``HANDED_OFF``), separated by commas."""
    given = tuple(name.strip().upper() for name in value.split(",") if name.strip())
    unknown = [name for name in given if name not in RETAINED_STATUSES]
    if not given or unknown:
        raise ArgumentTypeError(
            f"{value!r}: give SUCCESSFUL, FAILED, HANDED_OFF or several, separated by commas"
        )
    return given


class Command(BaseCommand):
    help = (
        "Delete the tasks of a ProcPoolBackend that finished before a given age, with "
        "their results. A task's result goes once it is past the age of its status; its "
        "segment (the records one process enqueued, up to 8 MiB) goes once none of its "
        "tasks is left. Unfinished tasks are never deleted. get_result of a deleted task "
        "raises TaskResultDoesNotExist."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument(
            "--older-than",
            type=duration,
            default=None,
            help="Delete tasks finished longer ago than this: seconds, or 15m, 12h, 7d "
            "(default: the backend's OPTIONS['retention'], per status)",
        )
        parser.add_argument(
            "--status",
            type=statuses,
            default=RETAINED_STATUSES,
            help="Which finished tasks to delete: SUCCESSFUL, FAILED, HANDED_OFF (moved to "
            "another backend by procpool_handoff) or several, separated by commas (default: all)",
        )
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="Say how many tasks would be deleted, per status, and delete nothing",
        )
        add_backend_argument(parser, " to prune")

    def handle(self, *args: Any, **options: Any) -> None:
        backend = backend_of(options)
        retention = _retention(backend, options["older_than"], options["status"])
        dry_run = options["dry_run"]
        try:
            backend.journal.ensure()
            with history.history_writer(backend.journal, blocking=True):
                survey = history.survey(
                    backend.journal, write=not dry_run, retention=retention, dry_run=dry_run
                )
        except OSError as error:
            path = backend.journal.path
            raise CommandError(f"Cannot prune the journal {path}: {error}") from error
        self.stdout.write(_report(survey, retention, dry_run=dry_run))


def _retention(
    backend: ProcPoolBackend, older_than: timedelta | None, chosen: tuple[str, ...]
) -> dict[str, float]:
    """Seconds to keep, per chosen status: the flag's, else the backend's retention."""
    if older_than is not None:
        return dict.fromkeys(chosen, older_than.total_seconds())
    retention = {
        status: seconds
        for status, seconds in backend.backend_options.retention.items()
        if status in chosen
    }
    if not retention:
        raise CommandError(
            "Give --older-than (e.g. 7d), or set OPTIONS['retention'] in seconds "
            f"(for {' and '.join(chosen)})"
        )
    return retention


def _report(survey: history.Survey, retention: dict[str, float], *, dry_run: bool) -> str:
    kept_for = ", ".join(
        f"{status} older than {_human(seconds)}" for status, seconds in sorted(retention.items())
    )
    per_status = ", ".join(f"{survey.pruned[status]} {status}" for status in sorted(retention))
    verb = "Would delete" if dry_run else "Deleted"
    return (
        f"{verb} {sum(survey.pruned.values())} task(s) ({per_status}; {kept_for}); "
        f"{survey.pruned_segments} segment(s) {'would go' if dry_run else 'removed'} whole, "
        f"{survey.marked_done} more segment(s) of finished tasks "
        f"{'would be ' if dry_run else ''}marked done"
    )


def _human(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size:g}{unit}"
    return f"{seconds:g}s"
