"""The committer: states written to the WAL, then to their result files, handed back in the
order they were submitted; a write that fails is kept, tried again, and logged once.

A write is made to fail for real: the task's ``results/<segment>`` directory is replaced by
a plain file, so that its result file cannot be opened, until the file is removed again.
"""

from __future__ import annotations

import logging
import select
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest

from procpool_tasks import journal
from procpool_tasks.worker import states
from procpool_tasks.worker.committer import Committer
from procpool_tasks.worker.wakeups import WakePipe
from tests.conftest import WAIT_S, wait_for
from tests.unit.conftest import INSTANCE, Pipeline, enqueue

FINISHED_AT = datetime(2025, 6, 1, 12, tzinfo=UTC)


def claim(record: journal.Record) -> journal.State:
    return states.running(record, None, "worker-1", INSTANCE)


def succeed(running: journal.State) -> journal.State:
    return states.finished(running, journal.SUCCESSFUL, FINISHED_AT, None, 3)


def block_results(store: journal.Journal, record: journal.Record) -> Path:
    """Put a plain file where the record's results directory goes; return its path."""
    blocker = store.results_dir / record.id.partition("-")[0]
    blocker.write_bytes(b"")
    return blocker


def wait_until_failing(committer: Committer) -> None:
    wait_for(lambda: committer.failing, what="the committer to fail to write")


def wait_until_written_again(committer: Committer) -> None:
    wait_for(lambda: not committer.failing, what="the committer to write again")
    committer.flush()


def test_states_are_written_and_handed_back_in_the_order_they_were_submitted(
    store: journal.Journal, pipeline: Pipeline
) -> None:
    first, second = enqueue(store), enqueue(store)
    first_running, second_running = claim(first), claim(second)
    first_done = succeed(first_running)

    pipeline.committer.submit([first_running, second_running])
    pipeline.committer.submit([first_done])
    pipeline.committer.flush()

    assert pipeline.committer.committed() == [first_running, second_running, first_done]
    assert pipeline.wal_states() == [first_running, second_running, first_done]
    assert store.read_state(first.id) == first_done
    assert store.read_state(second.id) == second_running


def test_a_state_handed_back_is_handed_back_once_and_wakes_the_supervisor(
    store: journal.Journal, pipeline: Pipeline
) -> None:
    running = claim(enqueue(store))

    pipeline.committer.submit([running])
    pipeline.committer.flush()

    assert select.select([pipeline.wake], [], [], WAIT_S)[0] == [pipeline.wake]
    assert pipeline.committer.is_busy()  # until the supervisor took it back
    assert pipeline.committer.committed() == [running]
    assert pipeline.committer.committed() == []
    assert not pipeline.committer.is_busy()


def test_submitting_nothing_leaves_the_committer_idle(pipeline: Pipeline) -> None:
    pipeline.committer.submit([])

    assert not pipeline.committer.is_busy()
    assert pipeline.committer.committed() == []


def test_a_state_is_in_the_wal_before_its_result_file_is_written(
    store: journal.Journal, pipeline: Pipeline
) -> None:
    record = enqueue(store)
    running = claim(record)
    block_results(store, record)

    pipeline.committer.submit([running])
    wait_until_failing(pipeline.committer)

    assert pipeline.wal_states()[0] == running
    assert pipeline.committer.committed() == []


def test_a_state_that_cannot_be_written_is_not_handed_back_and_flush_does_not_wait_for_it(
    store: journal.Journal, pipeline: Pipeline
) -> None:
    record = enqueue(store)
    block_results(store, record)

    pipeline.committer.submit([claim(record)])
    wait_until_failing(pipeline.committer)
    pipeline.committer.flush()  # returns: the disk may never come back

    assert pipeline.committer.committed() == []
    assert pipeline.committer.is_busy()


class HeldResultLog(journal.ResultLog):
    """A real result log whose first commit waits for ``release`` before it writes.

    No real fault holds a write half-way for as long as a test needs to submit more
    states meanwhile; this stand-in holds it, and the write then fails or not for real.
    """

    def __init__(self, journal_: journal.Journal, instance: str) -> None:
        super().__init__(journal_, instance)
        self.writing = threading.Event()
        self.release = threading.Event()

    def commit(self, states: Sequence[journal.State]) -> None:
        if not self.writing.is_set():
            self.writing.set()
            self.release.wait(WAIT_S)
        super().commit(states)


def test_a_failed_write_is_tried_again_before_the_states_submitted_while_it_ran(
    store: journal.Journal,
) -> None:
    record = enqueue(store)
    running = claim(record)
    done = succeed(running)
    blocker = block_results(store, record)
    result_log = HeldResultLog(store, INSTANCE)
    wake = WakePipe()
    committer = Committer(result_log, wake)
    try:
        committer.submit([running])
        wait_for(result_log.writing.is_set, what="the write to begin")
        committer.submit([done])  # while the write of ``running`` is under way
        result_log.release.set()
        wait_until_failing(committer)

        blocker.unlink()
        wait_until_written_again(committer)

        assert committer.committed() == [running, done]
        assert store.read_state(record.id) == done
    finally:
        result_log.release.set()
        committer.stop(wait_for_disk=False)
        result_log.close(remove=False)
        wake.close()


def test_a_failing_write_is_logged_once_however_often_it_is_tried_and_its_end_once(
    store: journal.Journal, pipeline: Pipeline, caplog: pytest.LogCaptureFixture
) -> None:
    record = enqueue(store)
    running = claim(record)
    blocker = block_results(store, record)
    caplog.set_level(logging.WARNING, logger="procpool_tasks.worker.committer")

    pipeline.committer.submit([running])
    # Every try writes the WAL first: a second copy there is a second try.
    wait_for(lambda: pipeline.wal_states().count(running) >= 2, what="a second try")
    blocker.unlink()
    wait_until_written_again(pipeline.committer)

    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        (
            "ERROR",
            "Cannot write 1 result(s) to the journal ([Errno 20] a symlink was planted in the "
            f"journal: '{blocker}'); retrying in 0.5s",
        ),
        ("WARNING", "Results are written to the journal again"),
    ]


def test_a_forced_stop_gives_back_the_states_it_could_not_write_in_order(
    store: journal.Journal, pipeline: Pipeline
) -> None:
    record = enqueue(store)
    running = claim(record)
    done = succeed(running)
    block_results(store, record)
    pipeline.committer.submit([running])
    wait_until_failing(pipeline.committer)
    pipeline.committer.submit([done])

    assert pipeline.committer.stop(wait_for_disk=False) == [running, done]
    assert pipeline.committer.committed() == []


def test_a_stop_that_waits_for_the_disk_returns_once_every_state_is_written(
    store: journal.Journal, pipeline: Pipeline
) -> None:
    record = enqueue(store)
    running = claim(record)
    blocker = block_results(store, record)
    pipeline.committer.submit([running])
    wait_until_failing(pipeline.committer)
    left: list[list[journal.State]] = []
    stopping = threading.Thread(
        target=lambda: left.append(pipeline.committer.stop(wait_for_disk=True))
    )
    stopping.start()

    wait_for(lambda: pipeline.wal_states().count(running) >= 2, what="a try after the stop")
    assert stopping.is_alive()
    blocker.unlink()
    stopping.join(WAIT_S)

    assert left == [[]]
    assert store.read_state(record.id) == running


def test_a_stop_writes_what_was_submitted_before_it(
    store: journal.Journal, pipeline: Pipeline
) -> None:
    records = [enqueue(store) for _ in range(3)]
    running = [claim(record) for record in records]

    pipeline.committer.submit(running)

    assert pipeline.committer.stop(wait_for_disk=True) == []
    assert [store.read_state(record.id) for record in records] == running
