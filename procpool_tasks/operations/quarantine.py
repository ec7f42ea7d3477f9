"""Quarantined records: inspect them, delete them, or let one run again.

A record lands in ``quarantine/`` when it cannot be run: a damaged or torn line, a wrong
schema, a foreign file, or a task path that did not import (the task then ended FAILED).
The last kind is the one that can come back: once a deploy made its task importable
again, ``readmit`` re-queues the task (a new attempt of the same id) and deletes the copy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.utils.module_loading import import_string

from .. import compat
from .. import journal as j
from ..exceptions import QuarantineError
from . import requeue
from .status import QuarantinedRecord, quarantined_records

__all__ = ["QuarantineError", "drop", "find", "readmit"]


@dataclass(frozen=True, slots=True)
class Readmitted:
    name: str
    task_path: str
    attempt: int


def find(journal: j.Journal, name: str) -> tuple[QuarantinedRecord, dict[str, Any]]:
    """The quarantined record ``name`` (as ``list`` shows it) and its file's JSON."""
    for record in quarantined_records(journal):
        if record.name == name:
            data = dict(journal.quarantined_file(f"{name}.json"))
            return record, data
    raise QuarantineError(f"no quarantined record is named {name!r}")


def drop(journal: j.Journal, name: str) -> None:
    """Delete a quarantined copy; the task (if it had one) stays as it ended."""
    find(journal, name)
    journal.remove_quarantined(f"{name}.json")


def readmit(journal: j.Journal, name: str, *, backend_alias: str) -> Readmitted:
    """Re-queue the task of a record quarantined because its task did not import."""
    record, _ = find(journal, name)
    if record.task_path is None or not _holds_a_task(journal, name):
        raise QuarantineError(
            f"{name} cannot be re-admitted: {record.reason} (the line holds no readable task)"
        )
    try:
        task = import_string(record.task_path)
    except ImportError as error:
        raise QuarantineError(f"{record.task_path} still does not import: {error}") from None
    if not isinstance(task, compat.Task):
        raise QuarantineError(f"{record.task_path} is still not a task (@task)")
    outcome = requeue.requeue(journal, [name], backend_alias=backend_alias)[0]
    if outcome.refused is not None:
        raise QuarantineError(f"{name} cannot be re-admitted: {outcome.refused}")
    journal.remove_quarantined(f"{name}.json")
    return Readmitted(name=name, task_path=record.task_path, attempt=outcome.attempt)


def _holds_a_task(journal: j.Journal, name: str) -> bool:
    """Whether the journal reads a task at the place ``name`` stands for.

    A damaged line may still hold JSON that names a task (a flipped digit leaves it
    readable, only the checksum tells): that line can never run, whatever it names.
    """
    try:
        journal.read_record(name)
    except j.RecordNotFound:
        return False
    return True
