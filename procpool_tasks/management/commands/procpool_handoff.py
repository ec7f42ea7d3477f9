"""``manage.py procpool_handoff``: move waiting tasks to another Tasks backend."""

from __future__ import annotations

import sys
from argparse import ArgumentParser
from typing import Any

from django.core.management.base import CommandError

from procpool_tasks.management.arguments import (
    EXIT_SOME_REFUSED,
    ProcPoolCommand,
    add_backend_argument,
    backend_of,
    configure_logging,
    parse_queue_names,
)
from procpool_tasks.operations import handoff


class Command(ProcPoolCommand):
    help = (
        "Move the READY and deferred tasks of a ProcPoolBackend to another backend in "
        "TASKS (django-tasks-rq, django-tasks-db, ...), each with its task path, args, "
        "kwargs, priority, queue and run_after; get_result of an old id then reads the "
        "task's result there. What the other backend cannot hold (run_after, a priority, "
        "a queue, an async task) is refused task by task and stays here (exit 1); the "
        "other tasks move. RUNNING tasks finish here. Safe beside running workers, and "
        "safe to run again after it was killed: it finishes the move it was making."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument(
            "--to",
            required=True,
            dest="target_alias",
            metavar="ALIAS",
            help="The alias in TASKS of the backend to move the tasks to",
        )
        parser.add_argument(
            "--queue-name",
            default="*",
            help="Only tasks of these queues, comma-separated (default: '*', all)",
        )
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="List what would move and what would be refused, and change nothing",
        )
        add_backend_argument(parser, " to move tasks from")

    def handle(self, *args: Any, **options: Any) -> None:
        configure_logging(options["verbosity"], sys.stderr)
        backend = backend_of(options)
        queues = parse_queue_names(options["queue_name"], backend)
        target, dry_run = options["target_alias"], options["dry_run"]
        moved = refused = taken = 0
        try:
            for outcome in handoff.hand_off(backend, target, queues=queues, dry_run=dry_run):
                if outcome.taken is not None:
                    taken += 1
                    self.stdout.write(f"Left {outcome.id} ({outcome.task_path}): {outcome.taken}")
                elif outcome.refused is None:
                    moved += 1
                    self.stdout.write(_line(outcome, dry_run=dry_run))
                else:
                    refused += 1
                    sys.stderr.write(
                        f"Refused {outcome.id} ({outcome.task_path}): {outcome.refused}\n"
                    )
        except (handoff.HandoffRefused, handoff.HandoffStopped) as error:
            raise CommandError(str(error)) from error
        except OSError as error:
            raise CommandError(
                f"Cannot hand off from the journal {backend.journal.path}: {error}"
            ) from error
        verb = "would be handed off" if dry_run else "handed off"
        meanwhile = f"; {taken} started here meanwhile" if taken else ""
        self.stdout.write(f"{moved} task(s) {verb} to {target!r}; {refused} refused{meanwhile}")
        if refused:
            raise SystemExit(EXIT_SOME_REFUSED)


def _line(outcome: handoff.HandedOff, *, dry_run: bool) -> str:
    what = f"{outcome.id} ({outcome.task_path}, queue {outcome.queue_name!r})"
    target = outcome.backend
    if outcome.found:
        verb = "Would mark" if dry_run else "Marked"
        return (
            f"{verb} {what} handed off: the handoff that stopped had given it to "
            f"{target!r} as {outcome.target_id}"
        )
    if dry_run:
        again = " again" if outcome.resumed else ""
        return f"Would hand off {what}{again} to {target!r}"
    again = " again (the handoff that stopped had not)" if outcome.resumed else ""
    return f"Handed off {what}{again} to {target!r} as {outcome.target_id}"
