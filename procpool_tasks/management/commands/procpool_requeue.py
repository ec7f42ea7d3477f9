"""``manage.py procpool_requeue``: run FAILED tasks again, as a new attempt of the same id."""

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
from procpool_tasks.operations import requeue


class Command(ProcPoolCommand):
    help = (
        "Run FAILED tasks of a ProcPoolBackend again, each as a new attempt of the same "
        "task id: a caller holding the old result sees the new outcome with refresh(), "
        "earlier errors stay in errors and worker_ids grows. Give task ids, or --failed "
        "for every FAILED task (of some queues, or of one task). READY, RUNNING and "
        "SUCCESSFUL tasks are refused (exit 1). Safe beside running workers: no task runs "
        "twice at once, and each id is re-queued wholly or not at all."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("ids", nargs="*", metavar="ID", help="Ids of FAILED tasks")
        parser.add_argument(
            "--failed",
            action="store_true",
            help="Re-queue every FAILED task (narrowed by --queue-name and --task)",
        )
        parser.add_argument(
            "--queue-name",
            default="*",
            help="With --failed: only tasks of these queues, comma-separated (default: '*', all)",
        )
        parser.add_argument(
            "--task",
            default=None,
            metavar="DOTTED.PATH",
            help="With --failed: only this task, by its module path (e.g. myapp.tasks.send_mail)",
        )
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="List what would run again, and change nothing",
        )
        add_backend_argument(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        backend = backend_of(options)
        ids = list(options["ids"])
        if options["failed"] == bool(ids):
            raise CommandError("Give the ids of FAILED tasks, or --failed (not both)")
        if not options["failed"] and (options["task"] or options["queue_name"] != "*"):
            raise CommandError("--queue-name and --task go with --failed")
        try:
            if options["failed"]:
                queues = parse_queue_names(options["queue_name"], backend)
                found = requeue.failed_tasks(
                    backend.journal,
                    queues=queues,
                    task_path=options["task"],
                    dry_run=options["dry_run"],
                )
                ids = [record.id for record in found]
            outcomes = requeue.requeue(
                backend.journal, ids, backend_alias=backend.alias, dry_run=options["dry_run"]
            )
        except OSError as error:
            raise CommandError(
                f"Cannot re-queue in the journal {backend.journal.path}: {error}"
            ) from error
        self._report(outcomes, dry_run=options["dry_run"])

    def _report(self, outcomes: list[requeue.Requeued], *, dry_run: bool) -> None:
        done = [outcome for outcome in outcomes if outcome.refused is None]
        for outcome in done:
            verb = "Would re-queue" if dry_run else "Re-queued"
            self.stdout.write(
                f"{verb} {outcome.id} ({outcome.task_path}) as attempt {outcome.attempt}"
            )
        report_refusals(self, outcomes, done="would run again" if dry_run else "will run again")
