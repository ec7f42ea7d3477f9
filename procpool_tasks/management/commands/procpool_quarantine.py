"""``manage.py procpool_quarantine``: inspect, delete or re-admit quarantined records."""

from __future__ import annotations

import json
from argparse import ArgumentParser
from typing import Any

from django.core.management.base import CommandError

from procpool_tasks.management.arguments import ProcPoolCommand, add_backend_argument, backend_of
from procpool_tasks.operations import quarantine
from procpool_tasks.operations.status import quarantined_records


class Command(ProcPoolCommand):
    help = (
        "Quarantined records of a ProcPoolBackend: records that could not be run (a damaged "
        "or torn line, a wrong schema, a task path that did not import). 'list' shows them, "
        "'show NAME' prints one, 'drop NAME' deletes the copy, 'readmit NAME' runs the task "
        "again (a new attempt of the same id) once its task path imports, e.g. after a "
        "fixed deploy."
    )

    #: Actions that only read: like procpool_status, they run no system checks (W001 would
    #: be noise on their stderr); drop and readmit change the journal and run them.
    READ_ONLY_ACTIONS = ("list", "show")

    def execute(self, *args: Any, **options: Any) -> Any:
        if options.get("action") in self.READ_ONLY_ACTIONS:
            options["skip_checks"] = True
        return super().execute(*args, **options)

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("action", choices=["list", "show", "drop", "readmit"])
        parser.add_argument(
            "name", nargs="?", help="The record's name, as 'list' shows it (for a task: its id)"
        )
        add_backend_argument(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        backend = backend_of(options)
        action, name = options["action"], options["name"]
        if (action == "list") != (name is None):
            raise CommandError("'list' takes no name; 'show', 'drop' and 'readmit' take one")
        journal = backend.journal
        try:
            if action == "list":
                self._list(journal)
            elif action == "show":
                record, data = quarantine.find(journal, name)
                self.stdout.write(json.dumps({"file": record.file, **data}, indent=2))
            elif action == "drop":
                quarantine.drop(journal, name)
                self.stdout.write(f"Deleted the quarantined record {name}")
            else:
                done = quarantine.readmit(journal, name, backend_alias=backend.alias)
                self.stdout.write(
                    f"Re-admitted {done.name} ({done.task_path}): it runs again as attempt "
                    f"{done.attempt}"
                )
        except quarantine.QuarantineError as error:
            raise CommandError(str(error)) from None
        except OSError as error:
            raise CommandError(f"Cannot use the journal {journal.path}: {error}") from error

    def _list(self, journal: Any) -> None:
        records = quarantined_records(journal)
        for record in records:
            self.stdout.write(
                f"{record.name}  {record.task_path or '-'}  {record.reason}  ({record.file})"
            )
        self.stdout.write(f"{len(records)} quarantined record(s)")
