"""Unit-test fixtures: a real journal under ``tmp_path`` and a committer writing to it.

No worker: the supervisor's parts are called as it calls them. The committer's process is
real (started afresh, not forked from the test's process, which runs threads).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import selectors
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import pytest

from procpool_tasks import journal
from procpool_tasks.worker.committer import Committer, Process, Spawn, commit_states

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
    selector: selectors.BaseSelector
    committer: Committer
    result_log: journal.ResultLog

    def wal_states(self) -> list[journal.State]:
        """The states this instance's WAL holds, in the order they were written."""
        lines = (self.store.wal_dir / f"{INSTANCE}.log").read_bytes().splitlines()
        # A line is "<crc32 in hex> <JSON>".
        return [journal.decode_state(json.loads(line.split(b" ", 1)[1])) for line in lines]


def committing_processes(store: journal.Journal) -> Spawn:
    """What starts the committer's process for ``store``, as the zygote does for a worker."""

    def spawn() -> tuple[Process, Connection]:
        ours, theirs = multiprocessing.Pipe()
        process = multiprocessing.get_context("spawn").Process(
            target=commit_states,
            args=(theirs,),
            kwargs={
                "path": str(store.path),
                "durable": store.durable,
                "instance": INSTANCE,
                "supervisor_pid": os.getpid(),
            },
            daemon=True,
        )
        process.start()
        theirs.close()
        return process, ours

    return spawn


def new_pipeline(store: journal.Journal, spawn: Spawn | None = None) -> Pipeline:
    result_log = journal.ResultLog(store, INSTANCE)
    selector = selectors.DefaultSelector()
    committer = Committer(result_log, spawn or committing_processes(store), selector)
    return Pipeline(store, selector, committer, result_log)


def close_pipeline(pipeline: Pipeline) -> None:
    pipeline.committer.stop(wait_for_disk=False)
    pipeline.result_log.close(remove=False)
    pipeline.selector.close()


@pytest.fixture
def pipeline(store: journal.Journal) -> Iterator[Pipeline]:
    """A committer on a result log in ``store``; stopped at the end, whatever happened."""
    pipeline = new_pipeline(store)
    yield pipeline
    close_pipeline(pipeline)
