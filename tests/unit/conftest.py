"""Unit-test fixtures: a real journal under ``tmp_path`` and a committer writing to it.

No worker, no subprocess: the supervisor's parts are called as it calls them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from procpool_tasks import journal
from procpool_tasks.worker.committer import Committer
from procpool_tasks.worker.wakeups import WakePipe

#: The supervisor instance that writes in these tests (16 hex digits, as it names them).
INSTANCE = "00000000000000aa"
#: A moment long past, so that a record enqueued then is due.
LONG_AGO = datetime(2025, 1, 1, tzinfo=UTC)


def make_record(
    record_id: str = "",
    *,
    priority: int = 0,
    queue_name: str = "default",
    enqueued_at: datetime = LONG_AGO,
    run_after: datetime | None = None,
    task_path: str = "tests.tasks.add",
) -> journal.Record:
    """A record of ``tests.tasks.add(1, 2)``; ``journal.append`` gives it its real id."""
    return journal.Record(
        id=record_id,
        task_path=task_path,
        args=[1, 2],
        kwargs={},
        priority=priority,
        queue_name=queue_name,
        backend="default",
        enqueued_at=enqueued_at,
        run_after=run_after,
    )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[journal.Journal]:
    """A journal directory of this test's own."""
    journal_ = journal.Journal(tmp_path / "journal")
    journal_.ensure()
    yield journal_
    journal_.close()


def enqueue(store: journal.Journal, **fields: Any) -> journal.Record:
    """Append a record (``make_record``'s fields) and return it with the id it was given."""
    record = make_record(**fields)
    return replace(record, id=store.append(record))


@dataclass
class Pipeline:
    """What a supervisor commits through: its result log, wake pipe and committer."""

    store: journal.Journal
    wake: WakePipe
    committer: Committer

    def wal_states(self) -> list[journal.State]:
        """The states this instance's WAL holds, in the order they were written."""
        lines = (self.store.wal_dir / f"{INSTANCE}.log").read_bytes().splitlines()
        # A line is "<crc32 in hex> <JSON>".
        return [journal.decode_state(json.loads(line.split(b" ", 1)[1])) for line in lines]


@pytest.fixture
def pipeline(store: journal.Journal) -> Iterator[Pipeline]:
    """A committer on a result log in ``store``; stopped at the end, whatever happened."""
    result_log = journal.ResultLog(store, INSTANCE)
    wake = WakePipe()
    committer = Committer(result_log, wake)
    yield Pipeline(store, wake, committer)
    committer.stop(wait_for_disk=False)
    result_log.close(remove=False)
    wake.close()
