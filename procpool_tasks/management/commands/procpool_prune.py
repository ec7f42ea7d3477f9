"""``manage.py procpool_prune``: delete finished tasks from a ProcPoolBackend's journal."""

from __future__ import annotations

import re
import time
from argparse import ArgumentParser, ArgumentTypeError
from collections import Counter
from datetime import timedelta
from typing import Any

from django.core.management.base import CommandError

from procpool_tasks import journal
from procpool_tasks.backend import ProcPoolBackend
from procpool_tasks.journal import history
from procpool_tasks.management.arguments import ProcPoolCommand, add_backend_argument, backend_of
from procpool_tasks.operations.status import journal_problem
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


class Command(ProcPoolCommand):
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
            help="Say how many tasks would be deleted, per status, and delete nothing; "
            "when none would, say which are kept and why (without --older-than or "
            "OPTIONS['retention'] too)",
        )
        add_backend_argument(parser, " to prune")

    def handle(self, *args: Any, **options: Any) -> None:
        backend = backend_of(options)
        dry_run = options["dry_run"]
        retention = _retention(backend, options["older_than"], options["status"], dry_run=dry_run)
        try:
            # A mistyped path must not get an empty journal made for it, nor look pruned.
            problem = journal_problem(backend.journal)
            if problem is not None:
                self.stdout.write(f"Nothing to prune. {problem}.")
                return
            backend.journal.ensure()
            with history.history_writer(backend.journal, blocking=True):
                survey = history.survey(
                    backend.journal, write=not dry_run, retention=retention, dry_run=dry_run
                )
        except OSError as error:
            path = backend.journal.path
            raise CommandError(f"Cannot prune the journal {path}: {error}") from error
        if dry_run and not survey.pruned:
            self.stdout.write(_nothing_to_prune(survey, retention, options["status"]))
        else:
            self.stdout.write(_report(survey, retention, dry_run=dry_run))


def _retention(
    backend: ProcPoolBackend,
    older_than: timedelta | None,
    chosen: tuple[str, ...],
    *,
    dry_run: bool,
) -> dict[str, float]:
    """Seconds to keep, per chosen status: the flag's, else the backend's retention.

    A dry run without either says what is kept and why; a prune refuses to guess.
    """
    if older_than is not None:
        return dict.fromkeys(chosen, older_than.total_seconds())
    retention = {
        status: seconds
        for status, seconds in backend.backend_options.retention.items()
        if status in chosen
    }
    if not retention and not dry_run:
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


def _nothing_to_prune(
    survey: history.Survey, retention: dict[str, float], chosen: tuple[str, ...]
) -> str:
    """Which finished tasks a dry run that deletes nothing keeps, per status, and why."""
    now = time.time()
    kept: Counter[str] = Counter()
    in_use: Counter[str] = Counter()  # in segments not done: written to, or not all finished
    oldest: dict[str, float] = {}  # per status, of the tasks of done segments
    for segment, summary in survey.summaries.items():
        for by_status in summary.counts.values():
            kept.update(by_status)
            if segment not in survey.done:
                in_use.update(by_status)
        if segment in survey.done:
            for status, (first, _) in summary.finished.items():
                oldest[status] = min(first, oldest.get(status, first))
    if not kept:
        return "Nothing to prune: no finished task is kept."
    reasons = []
    for status in sorted(kept, key=_status_order):
        if status not in chosen:
            reasons.append(f"{kept[status]} {status} kept (not in --status)")
            continue
        if status not in retention:
            reasons.append(f"{kept[status]} {status} kept (no retention for {status})")
            continue
        newer = kept[status] - in_use[status]
        if newer:
            reasons.append(
                f"{newer} {status} newer than the retention of {_human(retention[status])} "
                f"(the oldest finished {_ago(now - oldest[status])} ago)"
            )
        if in_use[status]:
            reasons.append(
                f"{in_use[status]} {status} in segments not done yet (written to in the "
                f"last {_human(journal.QUIET_S)}, or beside unfinished tasks)"
            )
    total = sum(kept.values())
    return (
        f"Nothing to prune. {total} finished task{'s are' if total != 1 else ' is'} kept: "
        + ", ".join(reasons)
    )


def _status_order(status: str) -> int:
    known = RETAINED_STATUSES
    return known.index(status) if status in known else len(known)


def _ago(seconds: float) -> str:
    """An age, roughly: ``40s``, ``12m``, ``3h``, ``2d``."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size:.0f}{unit}"
    return f"{max(seconds, 0):.0f}s"


def _human(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size:g}{unit}"
    return f"{seconds:g}s"
