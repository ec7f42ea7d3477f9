"""A worker process's inbox: which queued jobs it hands back unrun, over a real pipe."""

from __future__ import annotations

import contextlib
import copy
import datetime as dt
import importlib
import multiprocessing
import os
import pickle
import sys
import time
import types
from collections.abc import Iterator
from datetime import datetime
from multiprocessing.connection import Connection

import pytest
from django.utils import timezone

from procpool_tasks.journal.format import _frame, encode_state
from procpool_tasks.worker import child, states
from procpool_tasks.worker.child import Job, Recall, _Inbox
from tests.conftest import WAIT_S, wait_for
from tests.unit.conftest import INSTANCE, make_record

Pipe = tuple[_Inbox, Connection]


def job(task_id: str) -> Job:
    record = make_record(task_id)
    return Job(record, states.running(record, None, "w1", INSTANCE))


@pytest.fixture
def pipe() -> Iterator[Pipe]:
    supervisor_end, process_end = multiprocessing.Pipe(duplex=True)
    yield _Inbox(process_end), supervisor_end
    supervisor_end.close()
    process_end.close()


def send(conn: Connection, *messages: Job | Recall) -> None:
    for message in messages:
        conn.send_bytes(pickle.dumps(message))


def reply_of(conn: Connection) -> tuple[bool, tuple[str, ...]]:
    _, leaving, returned = pickle.loads(conn.recv_bytes())  # noqa: S301 (our own pipe)
    return leaving, returned


def outcome() -> child.Outcome:
    return child.Outcome(status="SUCCESSFUL", finished_at=timezone.now())


def next_id(inbox: _Inbox) -> str:
    next_job, _ = inbox.next_job()
    return next_job.record.id


def running_with(pipe: Pipe, *queued: Job | Recall) -> tuple[_Inbox, Connection]:
    """The inbox with a job running and ``queued`` sent behind it meanwhile."""
    inbox, supervisor = pipe
    send(supervisor, job("running"))
    assert next_id(inbox) == "running"
    send(supervisor, *queued)
    return inbox, supervisor


def test_a_recalled_job_is_handed_back_with_the_outcome_and_the_next_one_runs(pipe: Pipe) -> None:
    inbox, supervisor = running_with(pipe, job("queued"), Recall("queued"))

    inbox.reply(outcome(), leaving=False)

    assert reply_of(supervisor) == (False, ("queued",))
    send(supervisor, job("next"))
    assert next_id(inbox) == "next"


def test_a_job_not_recalled_stays_queued_and_runs_next(pipe: Pipe) -> None:
    inbox, supervisor = running_with(pipe, job("queued"))

    inbox.reply(outcome(), leaving=False)

    assert reply_of(supervisor) == (False, ())
    assert next_id(inbox) == "queued"


def test_a_recall_that_comes_after_its_job_started_is_dropped(pipe: Pipe) -> None:
    inbox, supervisor = running_with(pipe, job("second"))
    inbox.reply(outcome(), leaving=False)
    reply_of(supervisor)
    assert next_id(inbox) == "second"
    send(supervisor, Recall("second"), job("third"))  # too late for "second"

    inbox.reply(outcome(), leaving=False)

    assert reply_of(supervisor) == (False, ())
    assert next_id(inbox) == "third"


def test_a_process_that_leaves_hands_back_every_queued_job(pipe: Pipe) -> None:
    inbox, supervisor = running_with(pipe, job("queued"))

    inbox.reply(outcome(), leaving=True)

    assert reply_of(supervisor) == (True, ("queued",))


def test_a_job_sent_while_a_task_runs_is_read_before_the_task_ends(
    pipe: Pipe, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(child, "HAND_BACK_AFTER_S", 60.0)  # short, however slow the machine
    inbox, supervisor = running_with(pipe)

    assert_read_while_the_task_runs(inbox, supervisor)


def assert_read_while_the_task_runs(inbox: _Inbox, supervisor: Connection) -> None:
    """A job sent while the task runs is read by the thread before the task ends, and it
    runs next."""
    with inbox.running():
        send(supervisor, job("queued"))
        # The thread reads it while the task runs: the task's end does not wait for it.
        wait_for(lambda: inbox._queued, what="the thread to read the job")
    inbox.reply(outcome(), leaving=False)

    assert reply_of(supervisor) == (False, ())
    assert next_id(inbox) == "queued"


def run_task(inbox: _Inbox, supervisor: Connection, next_task: str, seconds: float = 0) -> None:
    """Run the task started, for ``seconds``, and take ``next_task`` as the next job."""
    with inbox.running():
        time.sleep(seconds)
    inbox.reply(outcome(), leaving=False)
    reply_of(supervisor)
    send(supervisor, job(next_task))
    assert next_id(inbox) == next_task


def test_after_a_short_task_the_next_job_is_left_in_the_pipe_for_the_main_thread(
    pipe: Pipe, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Waking the thread for it cost a no-op task more than reading it after the task does.
    monkeypatch.setattr(child, "HAND_BACK_AFTER_S", 60.0)
    monkeypatch.setattr(child, "HAND_BACK_CHECK_S", 60.0)
    monkeypatch.setattr(child, "READ_AHEAD_MIN_S", 60.0)  # every task is short
    inbox, supervisor = running_with(pipe)
    run_task(inbox, supervisor, "second")

    with inbox.running():
        send(supervisor, job("queued"))
        time.sleep(0.2)  # where a woken thread reads it (the test above)
        assert inbox._queued == []
    inbox.reply(outcome(), leaving=False)

    assert reply_of(supervisor) == (False, ())
    assert next_id(inbox) == "queued"


def test_after_a_task_that_ran_long_enough_the_thread_reads_the_next_ones_job_at_once(
    pipe: Pipe, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(child, "HAND_BACK_AFTER_S", 60.0)
    monkeypatch.setattr(child, "HAND_BACK_CHECK_S", 60.0)
    monkeypatch.setattr(child, "READ_AHEAD_MIN_S", 0.01)
    inbox, supervisor = running_with(pipe)
    run_task(inbox, supervisor, "second")
    run_task(inbox, supervisor, "third", seconds=0.02)  # READ_AHEAD_MIN_S

    assert_read_while_the_task_runs(inbox, supervisor)


@pytest.mark.parametrize("idle_first", [False, True], ids=["right-after", "after-idling"])
def test_a_task_that_runs_long_after_short_ones_still_hands_back_its_queued_job(
    pipe: Pipe, monkeypatch: pytest.MonkeyPatch, idle_first: bool
) -> None:
    # The thread is not woken when such a task starts: it waits HAND_BACK_CHECK_S, or
    # sleeps, once the process has idled that long, until a start wakes it.
    monkeypatch.setattr(child, "HAND_BACK_AFTER_S", 0.2)
    monkeypatch.setattr(child, "HAND_BACK_CHECK_S", 0.05)
    monkeypatch.setattr(child, "READ_AHEAD_MIN_S", 60.0)
    inbox, supervisor = running_with(pipe)
    if idle_first:
        with inbox.running():
            pass
        inbox.reply(outcome(), leaving=False)
        reply_of(supervisor)
        wait_for(lambda: inbox._asleep, what="the thread to sleep")
        send(supervisor, job("long"))
        assert next_id(inbox) == "long"
    else:
        run_task(inbox, supervisor, "long")

    with inbox.running():
        send(supervisor, job("queued"))
        assert supervisor.poll(WAIT_S)
        assert pickle.loads(supervisor.recv_bytes()) == child.HandedBack(("queued",))  # noqa: S301
    inbox.reply(outcome(), leaving=False)

    assert reply_of(supervisor) == (False, ())


def test_a_task_that_runs_long_hands_back_what_is_queued_and_what_comes_later(
    pipe: Pipe, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(child, "HAND_BACK_AFTER_S", 0.2)
    monkeypatch.setattr(child, "HAND_BACK_CHECK_S", 0.05)
    inbox, supervisor = running_with(pipe)

    with inbox.running():
        send(supervisor, job("queued"))
        assert supervisor.poll(WAIT_S)
        assert pickle.loads(supervisor.recv_bytes()) == child.HandedBack(("queued",))  # noqa: S301
        send(supervisor, job("later"), Recall("queued"))
        assert supervisor.poll(WAIT_S)
        assert pickle.loads(supervisor.recv_bytes()) == child.HandedBack(("later",))  # noqa: S301
    inbox.reply(outcome(), leaving=False)

    assert reply_of(supervisor) == (False, ())
    send(supervisor, job("next"))
    assert next_id(inbox) == "next"


def test_a_recall_the_thread_read_while_the_task_ran_is_honoured_with_the_outcome(
    pipe: Pipe, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(child, "HAND_BACK_AFTER_S", 60.0)
    inbox, supervisor = running_with(pipe)

    with inbox.running():
        send(supervisor, job("queued"), Recall("queued"))
        wait_for(lambda: len(inbox._queued) == 2, what="the thread to read both")
    inbox.reply(outcome(), leaving=False)

    assert reply_of(supervisor) == (False, ("queued",))
    send(supervisor, job("next"))
    assert next_id(inbox) == "next"


@contextlib.contextmanager
def prepared_while_running(
    pipe: Pipe, monkeypatch: pytest.MonkeyPatch, queued: Job
) -> Iterator[Pipe]:
    """A task running, with ``queued`` sent behind it and prepared by the thread."""
    monkeypatch.setattr(child, "HAND_BACK_AFTER_S", 60.0)
    importlib.import_module("tests.tasks")  # as by an earlier task of the process
    inbox, supervisor = running_with(pipe)
    with inbox.running():
        send(supervisor, queued)
        wait_for(lambda: inbox._prepared, what="the thread to prepare the job")
        yield inbox, supervisor


def test_a_job_read_while_a_task_runs_is_prepared_and_runs_as_prepared(
    pipe: Pipe, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent = pickle.loads(pickle.dumps(job("queued")))  # noqa: S301 (as the process gets it)

    with prepared_while_running(pipe, monkeypatch, sent) as (inbox, supervisor):
        pass
    inbox.reply(outcome(), leaving=False)
    reply_of(supervisor)
    queued, prepared = inbox.next_job()

    assert prepared is not None
    assert prepared.job is queued
    assert (prepared.result.id, prepared.result.args) == ("queued", [1, 2])
    monkeypatch.setattr(child, "_prepare", None)  # what runs is what the thread prepared
    finished = child.run_job(queued, prepared=prepared)
    assert finished.return_value == 3
    assert finished.line == _frame(
        encode_state(states.finished(queued.state, finished.status, finished.finished_at, None, 3))
    )


def test_a_job_whose_module_is_not_imported_yet_is_left_to_the_main_thread(
    pipe: Pipe, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Importing runs the module's code, which may need the main thread (signal.signal).
    monkeypatch.setattr(child, "HAND_BACK_AFTER_S", 60.0)
    inbox, supervisor = running_with(pipe)
    record = make_record("unimported", task_path="tests.unit.main_thread_tasks.noop")
    monkeypatch.delitem(sys.modules, "tests.unit.main_thread_tasks", raising=False)
    monkeypatch.setenv("MAIN_THREAD_TASKS_IMPORTED_BY", "")

    with inbox.running():
        send(supervisor, Job(record, states.running(record, None, "w1", INSTANCE)))
        wait_for(lambda: inbox._queued, what="the thread to read the job")
    inbox.reply(outcome(), leaving=False)
    reply_of(supervisor)

    unimported, prepared = inbox.next_job()
    assert prepared is None
    assert child.run_job(unimported).status == "SUCCESSFUL"
    assert os.environ["MAIN_THREAD_TASKS_IMPORTED_BY"] == "MainThread;"


def test_a_job_whose_module_is_being_imported_is_left_to_the_main_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The running task's own import, say: the thread must neither wait for it nor redo it.
    tasks = importlib.import_module("tests.tasks")
    importing = types.ModuleType("tests.tasks")
    importing.__spec__ = copy.copy(tasks.__spec__)
    importing.__spec__._initializing = True  # type: ignore[union-attr]
    importing.add = tasks.add  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "tests.tasks", importing)

    assert child._prepare_ahead(job("queued")) is None


def test_a_recalled_job_leaves_nothing_prepared_behind(
    pipe: Pipe, monkeypatch: pytest.MonkeyPatch
) -> None:
    with prepared_while_running(pipe, monkeypatch, job("queued")) as (inbox, supervisor):
        send(supervisor, Recall("queued"))
        wait_for(lambda: len(inbox._queued) == 2, what="the thread to read the recall")
    inbox.reply(outcome(), leaving=False)

    assert reply_of(supervisor) == (False, ("queued",))
    assert inbox._prepared == {}


def test_what_the_thread_cannot_read_is_raised_before_the_next_job(pipe: Pipe) -> None:
    inbox, supervisor = running_with(pipe)

    with inbox.running():
        supervisor.send_bytes(b"not a pickle")
        wait_for(lambda: inbox._failure, what="the thread to fail")
    inbox.reply(outcome(), leaving=False)  # the task that ran keeps its outcome

    assert reply_of(supervisor) == (False, ())
    with pytest.raises(pickle.UnpicklingError):
        inbox.next_job()  # the process dies: the supervisor takes back what it sent


def test_a_job_and_an_outcome_come_out_of_the_pipe_as_they_went_in() -> None:
    # Times travel as text: each comes back with its offset, not only the same instant.
    in_paris = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    record = make_record("0123456789abcdef-1f", run_after=in_paris)
    running = states.running(record, None, "w1", INSTANCE)
    sent_job = Job(record, running, timeout=2.5)
    error = states.error(ValueError, "boom")
    outcome = child.Outcome(
        status="FAILED", finished_at=timezone.now(), error=error, retry=True, memory_mib=1.5
    )

    for message in (sent_job, outcome):
        received = pickle.loads(pickle.dumps(message, pickle.HIGHEST_PROTOCOL))  # noqa: S301
        assert received == message
        assert repr(received) == repr(message)
    assert received.finished_at.tzinfo is dt.UTC


def test_the_finished_state_a_process_encodes_is_the_one_the_supervisor_makes() -> None:
    # The supervisor commits the process's line as the state it makes of the outcome.
    record = make_record("0123456789abcdef-20", run_after=timezone.now())
    running = states.running(record, None, "w1", INSTANCE)
    job = pickle.loads(pickle.dumps(Job(record, running), pickle.HIGHEST_PROTOCOL))  # noqa: S301

    outcome = child.run_job(job)
    received = pickle.loads(pickle.dumps(outcome, pickle.HIGHEST_PROTOCOL))  # noqa: S301

    made = states.finished(
        running, received.status, received.finished_at, received.error, received.return_value
    )
    assert (received.status, received.return_value) == ("SUCCESSFUL", 3)
    assert received.line == _frame(encode_state(made))
