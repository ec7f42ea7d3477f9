"""``manage.py procpool_prune``: delete finished tasks from a ProcPoolBackend's journal."""

from __future__ import annotations

import re
from argparse import ArgumentParser, ArgumentTypeError
from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from procpool_tasks import compat, journal
from procpool_tasks.backend import ProcPoolBackend

from .procpool_worker import valid_backend_alias

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def duration(value: str) -> timedelta:
    """``90``, ``90s``, ``15m``, ``12h`` or ``7d``: a length of time > 0."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", value)
    if match is None or float(match[1]) <= 0:
        raise ArgumentTypeError(
            f"{value!r} is not a duration > 0 such as 3600, 90s, 15m, 12h or 7d"
        )
    return timedelta(seconds=float(match[1]) * _UNITS[match[2] or "s"])


class Command(BaseCommand):
    help = (
        "Delete the tasks of a ProcPoolBackend that finished before a given age, with "
        "their results. Works a segment (up to 8 MiB of records) at a time: a segment is "
        "deleted once every task in it has finished before the cut-off; get_result of a "
        "deleted task raises TaskResultDoesNotExist."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument(
            "--older-than",
            type=duration,
            default=None,
            help="Delete tasks finished longer ago than this: seconds, or 15m, 12h, 7d "
            "(default: the backend's OPTIONS['retention'])",
        )
        parser.add_argument(
            "--backend",
            default=compat.DEFAULT_TASK_BACKEND_ALIAS,
            type=valid_backend_alias,
            dest="backend_alias",
            help="The alias of the ProcPoolBackend in TASKS to prune (default: %(default)r)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        backend = compat.task_backends[options["backend_alias"]]
        assert isinstance(backend, ProcPoolBackend)  # noqa: S101 (checked by valid_backend_alias)
        age = options["older_than"]
        if age is None:
            retention = backend.backend_options.retention
            if retention is None:
                raise CommandError(
                    "Give --older-than (e.g. 7d), or set OPTIONS['retention'] in seconds"
                )
            age = timedelta(seconds=retention)
        cutoff = timezone.now() - age
        try:
            backend.journal.ensure()
            report = journal.prune(backend.journal, finished_before=cutoff)
            backend.journal.remove_orphan_results()
        except OSError as error:
            path = backend.journal.path
            raise CommandError(f"Cannot prune the journal {path}: {error}") from error
        self.stdout.write(
            f"Deleted {report.pruned_tasks} task(s) finished before {cutoff:%Y-%m-%d %H:%M:%S %Z} "
            f"({report.pruned_segments} segment(s)); {report.done_segments} more segment(s) "
            "of finished tasks marked done"
        )
