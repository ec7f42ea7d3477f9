"""``manage.py procpool_cancel``: cancel READY (deferred or not) and RUNNING tasks."""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import CommandError

from procpool_tasks.management.arguments import (
    ProcPoolCommand,
    add_backend_argument,
    backend_of,
    parse_queue_names,
    report_refusals,
)
from procpool_tasks.operations import cancel


class Command(ProcPoolCommand):
    help = (
        "Cancel tasks of a ProcPoolBackend that have not finished: a READY task (deferred "
        "or not) never runs; a RUNNING task's worker process is stopped (SIGTERM, then "
        "SIGKILL after a grace period) and replaced, the other processes go on. A "
        "cancelled task ends FAILED with procpool_tasks.exceptions.TaskCancelled and never "
        "runs again. Give task ids, or --queue-name for every such task of some queues (of "
        "one task with --task). Finished tasks are refused (exit 1). Each cancel is durable "
        "when the command returns; a RUNNING task ends FAILED moments later."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("ids", nargs="*", metavar="ID", help="Ids of READY or RUNNING tasks")
        parser.add_argument(
            "--queue-name",
            default=None,
            help="Cancel every READY and RUNNING task of these queues, comma-separated "
            "('*': of every queue)",
        )
        parser.add_argument(
            "--task",
            default=None,
            metavar="DOTTED.PATH",
            help="With --queue-name: only this task, by its module path (e.g. "
            "myapp.tasks.send_mail)",
        )
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="List what would be cancelled, and change nothing",
        )
        add_backend_argument(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        backend = backend_of(options)
        ids = list(options["ids"])
        if (options["queue_name"] is None) == (not ids):
            raise CommandError("Give the ids of READY or RUNNING tasks, or --queue-name (not both)")
        if options["task"] and options["queue_name"] is None:
            raise CommandError("--task goes with --queue-name")
        try:
            if options["queue_name"] is not None:
                queues = parse_queue_names(options["queue_name"], backend)
                found = cancel.unfinished_tasks(
                    backend.journal,
                    queues=queues,
                    task_path=options["task"],
                    dry_run=options["dry_run"],
                )
                ids = [record.id for record in found if backend.owns(record)]
            outcomes = cancel.cancel(backend, ids, dry_run=options["dry_run"])
        except OSError as error:
            raise CommandError(
                f"Cannot cancel in the journal {backend.journal.path}: {error}"
            ) from error
        self._report(outcomes, dry_run=options["dry_run"])

    def _report(self, outcomes: list[cancel.Cancelled], *, dry_run: bool) -> None:
        done = [outcome for outcome in outcomes if outcome.refused is None]
        for outcome in done:
            if outcome.is_running:
                what = f"it is RUNNING on worker {outcome.worker_id}; its worker process " + (
                    "would be stopped" if dry_run else "is being stopped"
                )
            else:
                what = "it is READY; it " + ("would never run" if dry_run else "will never run")
            verb = "Would cancel" if dry_run else "Cancelled"
            self.stdout.write(f"{verb} {outcome.id} ({outcome.task_path}): {what}")
        report_refusals(self, outcomes, done="would be cancelled" if dry_run else "cancelled")
