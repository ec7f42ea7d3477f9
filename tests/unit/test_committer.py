"""The committer: states written to the WAL, then to their result files, handed back in the
order they were submitted; a write that fails is kept, tried again, and logged once; what a
killed committing process left is committed all the same, by the supervisor itself until
another process runs.

A write is made to fail for real: the task's ``results/<segment>`` directory is replaced by
a plain file, so that its result file cannot be opened, until the file is removed again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import logging
import multiprocessing
import os
import signal
import threading
import time
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path

import pytest

from procpool_tasks import journal
from procpool_tasks.journal.format import _unframe
from procpool_tasks.worker import committer as committer_module
from procpool_tasks.worker import states
from procpool_tasks.worker.committer import Committer, Process
from tests.conftest import WAIT_S, wait_for
from tests.unit.conftest import INSTANCE, Pipeline, close_pipeline, enqueue, new_pipeline

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


def pump(committer: Committer) -> bool:
    """One turn of the supervisor's loop for the committer; whether it is failing."""
    committer.send()
    committer.receive()
    return committer.failing


def wait_until_failing(committer: Committer) -> None:
    wait_for(lambda: pump(committer), what="the committer to fail to write")


def submit_unwritable(
    store: journal.Journal, pipeline: Pipeline
) -> tuple[journal.Record, journal.State, Path]:
    """Submit a claim that cannot be written, once the committer says so; return the
    record, its state and what blocks its results directory (remove it to unblock)."""
    record = enqueue(store)
    running = claim(record)
    blocker = block_results(store, record)
    pipeline.committer.submit([running])
    wait_until_failing(pipeline.committer)
    return record, running, blocker


def tries(pipeline: Pipeline, state: journal.State) -> int:
    """How often the committer tried to write ``state``: every try writes the WAL first."""
    pump(pipeline.committer)
    return pipeline.wal_states().count(state)


def wait_until_written_again(committer: Committer) -> None:
    wait_for(lambda: not pump(committer), what="the committer to write again")
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
    pipeline.committer.send()

    woken = [key.data for key, _ in pipeline.selector.select(WAIT_S)]
    assert woken == ["commit"]
    pipeline.committer.receive()
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
    _, running, _ = submit_unwritable(store, pipeline)

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


def test_a_failed_write_is_tried_again_before_the_states_submitted_while_it_ran(
    store: journal.Journal, pipeline: Pipeline
) -> None:
    record, running, blocker = submit_unwritable(store, pipeline)
    done = succeed(running)

    pipeline.committer.submit([done])  # while the write of ``running`` is tried again
    pump(pipeline.committer)
    blocker.unlink()
    wait_until_written_again(pipeline.committer)

    assert pipeline.committer.committed() == [running, done]
    assert store.read_state(record.id) == done


def test_the_states_of_a_killed_committing_process_are_committed_in_order_by_the_supervisor(
    store: journal.Journal, pipeline: Pipeline, caplog: pytest.LogCaptureFixture
) -> None:
    record = enqueue(store)
    running = claim(record)
    done = succeed(running)
    blocker = block_results(store, record)
    pipeline.committer.submit([running, done])
    wait_until_failing(pipeline.committer)  # in its WAL, not in the result file
    [process] = multiprocessing.active_children()
    pid = process.pid
    assert pid is not None

    caplog.set_level(logging.WARNING, logger="procpool_tasks.worker.committer")

    def seen_ended() -> bool:
        pump(pipeline.committer)
        return "ended" in caplog.text

    os.kill(pid, signal.SIGKILL)
    wait_for(seen_ended, what="the supervisor to see the process end")
    blocker.unlink()
    wait_until_written_again(pipeline.committer)

    assert pipeline.committer.committed() == [running, done]
    assert store.read_state(record.id) == done
    assert f"The process that commits finished tasks (pid {pid}) ended (-9)" in caplog.text


def test_a_supervisor_that_cannot_start_the_committing_process_commits_itself(
    store: journal.Journal, caplog: pytest.LogCaptureFixture
) -> None:
    def cannot_fork() -> tuple[Process, Connection]:
        raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")

    pipeline = new_pipeline(store, cannot_fork)
    try:
        records = [enqueue(store) for _ in range(3)]
        running = [claim(record) for record in records]
        pipeline.committer.submit(running)
        pipeline.committer.flush()

        assert pipeline.committer.seconds_to_wait() == 0.0  # the loop takes them at once
        assert pipeline.committer.committed() == running
        assert pipeline.wal_states() == running
        assert [store.read_state(record.id) for record in records] == running
        assert "Cannot start the process that commits finished tasks" in caplog.text
    finally:
        close_pipeline(pipeline)


def test_a_line_torn_by_a_killed_committing_process_does_not_take_the_next_with_it(
    store: journal.Journal,
) -> None:
    wal = store.wal_dir / f"{INSTANCE}.log"
    wal.write_bytes(b'0badf00d {"id": "torn')  # half a line, never synced
    running = claim(enqueue(store))
    pipeline = new_pipeline(store)
    try:
        pipeline.committer.submit([running])
        pipeline.committer.flush()
    finally:
        close_pipeline(pipeline)

    torn, line = wal.read_bytes().splitlines()
    assert torn.startswith(b"0badf00d")
    assert journal.decode_state(_unframe(line)) == running


def test_a_failing_write_is_logged_once_however_often_it_is_tried_and_its_end_once(
    store: journal.Journal, pipeline: Pipeline, caplog: pytest.LogCaptureFixture
) -> None:
    record = enqueue(store)
    running = claim(record)
    blocker = block_results(store, record)
    caplog.set_level(logging.WARNING, logger="procpool_tasks.worker.committer")

    pipeline.committer.submit([running])
    # Every try writes the WAL first: a second copy there is a second try.
    wait_for(lambda: tries(pipeline, running) >= 2, what="a second try")
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
    _, running, _ = submit_unwritable(store, pipeline)
    done = succeed(running)
    pipeline.committer.submit([done])

    assert pipeline.committer.stop(wait_for_disk=False) == [running, done]
    assert pipeline.committer.committed() == []


def test_a_stop_that_waits_for_the_disk_returns_once_every_state_is_written(
    store: journal.Journal, pipeline: Pipeline
) -> None:
    record, running, blocker = submit_unwritable(store, pipeline)
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


def test_answers_sent_before_the_process_died_count_and_their_states_are_not_written_again(
    store: journal.Journal, pipeline: Pipeline
) -> None:
    record = enqueue(store)
    running = claim(record)
    pipeline.committer.submit([running])
    pipeline.committer.send()
    wait_for(lambda: store.read_state(record.id) == running, what="the state to be published")
    [process] = multiprocessing.active_children()
    pid = process.pid
    assert pid is not None
    pipeline.selector.select(WAIT_S)  # its answer is in the pipe, not read yet

    os.kill(pid, signal.SIGKILL)
    process.join(WAIT_S)
    pump(pipeline.committer)

    assert pipeline.committer.committed() == [running]
    assert pipeline.wal_states() == [running]
    segment, offset = journal.parse_id(record.id)
    result_file = store.results_dir / segment / f"{offset:x}.json"
    assert result_file.read_bytes().count(b'"status"') == 1  # published once


def test_a_forced_stop_does_not_wait_for_a_stuck_process(
    store: journal.Journal, pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(committer_module, "STOP_WAIT_S", 1.0)
    [process] = multiprocessing.active_children()
    pid = process.pid
    assert pid is not None
    running = claim(enqueue(store))
    os.kill(pid, signal.SIGSTOP)  # as a hung disk would hold it
    try:
        pipeline.committer.submit([running])
        started = time.monotonic()

        assert pipeline.committer.stop(wait_for_disk=False) == [running]
        assert time.monotonic() - started < WAIT_S
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)


def test_a_large_state_is_committed_whole(store: journal.Journal, pipeline: Pipeline) -> None:
    record = enqueue(store)
    large = succeed(claim(record))
    large = dataclasses.replace(large, return_value="x" * (8 << 20))

    pipeline.committer.submit([large])
    pipeline.committer.flush()

    assert pipeline.committer.committed() == [large]
    assert store.read_state(record.id) == large


def test_a_forced_stop_still_commits_what_a_working_process_takes(
    store: journal.Journal, pipeline: Pipeline
) -> None:
    record = enqueue(store)
    done = succeed(claim(record))
    pipeline.committer.submit([done])

    # As the supervisor stops after a second signal: it has come already.
    assert pipeline.committer.stop(wait_for_disk=False, give_up=lambda: True) == []
    assert store.read_state(record.id) == done


def test_a_second_signal_ends_a_stop_that_waits_for_a_failing_disk(
    store: journal.Journal, pipeline: Pipeline
) -> None:
    _, running, _ = submit_unwritable(store, pipeline)
    signals = iter([False, False, True])  # the second signal comes while it waits

    assert pipeline.committer.stop(wait_for_disk=True, give_up=lambda: next(signals, True)) == [
        running
    ]
