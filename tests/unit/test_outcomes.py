"""What a supervisor decides about a task that stopped running: its own outcome, a retry
after the backoff, a re-run after an interruption, FAILED after a death or the last
attempt, READY again when it never started; and that it acts only once a state is
committed."""

from __future__ import annotations

import logging
import re
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.utils import timezone

from procpool_tasks import compat, journal
from procpool_tasks.backend import ProcPoolBackend
from procpool_tasks.options import RetryPolicy, TaskOptions
from procpool_tasks.results import build_task_result, load_task
from procpool_tasks.worker import states
from procpool_tasks.worker.child import Outcome
from procpool_tasks.worker.outcomes import Outcomes
from procpool_tasks.worker.ready import ReadySet
from tests.unit.conftest import INSTANCE, Pipeline, enqueue

MAX_ATTEMPTS = 3
FINISHED_AT = datetime(2025, 6, 1, 12, tzinfo=UTC)
RAISED = journal.TaskError(
    exception_class_path="builtins.ValueError", traceback="Traceback ...\nValueError: boom\n"
)
DIED = states.death_error(4321, 3, timed_out=False, task_timeout=None)
INTERRUPTED = states.interruption_error({4321: 3}, timed_out=set())


@pytest.fixture
def ready() -> ReadySet:
    return ReadySet()


@pytest.fixture
def outcomes(store: journal.Journal, pipeline: Pipeline, ready: ReadySet) -> Outcomes:
    return Outcomes(
        store,
        pipeline.committer,
        ready,
        options_for=lambda record: TaskOptions(max_attempts=MAX_ATTEMPTS),
        sender=ProcPoolBackend,
    )


@pytest.fixture
def announced() -> Iterator[list[tuple[Any, Any]]]:
    """The ``task_finished`` signals sent: (sender, task result)."""
    sent: list[tuple[Any, Any]] = []

    def receive(sender: Any, task_result: Any, **kwargs: Any) -> None:
        sent.append((sender, task_result))

    compat.task_finished.connect(receive)
    yield sent
    compat.task_finished.disconnect(receive)


@pytest.fixture
def requeued() -> Iterator[list[tuple[Any, Any]]]:
    """The ``task_enqueued`` signals sent: (sender, task result)."""
    sent: list[tuple[Any, Any]] = []

    def receive(sender: Any, task_result: Any, **kwargs: Any) -> None:
        sent.append((sender, task_result))

    compat.task_enqueued.connect(receive)
    yield sent
    compat.task_enqueued.disconnect(receive)


def summary(result: Any) -> tuple[str, str, int, list[str], list[str]]:
    """What a monitoring app stores of a signal's result."""
    return (
        result.id,
        str(result.status),
        result.attempts,
        list(result.worker_ids),
        [error.exception_class_path for error in result.errors],
    )


def commit(pipeline: Pipeline, outcomes: Outcomes) -> None:
    """Wait for the committer, then act on what it committed, as the supervisor does."""
    pipeline.committer.flush()
    outcomes.on_committed()


def attempt(record: journal.Record, times: int = 1) -> journal.State:
    """The RUNNING state of the record's attempt number ``times``."""
    state: journal.State | None = None
    for number in range(1, times + 1):
        if state is not None:
            state = states.ready_again(state)
        state = states.running(record, state, f"worker-{number}", INSTANCE)
    assert state is not None
    return state


def logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    """What ``outcomes`` logged (the framework logs ``task_finished`` too)."""
    return [r.getMessage() for r in caplog.records if r.name == "procpool_tasks.worker.outcomes"]


def requeue_markers(store: journal.Journal) -> list[str]:
    """The ids of the re-queue markers in the journal's segments."""
    tail = journal.SegmentTail(store)
    return [item.id for item in tail.read_new() if isinstance(item, journal.Requeue)]


# The task's own outcome


def test_a_task_that_returned_is_committed_successful_and_not_queued_again(
    store: journal.Journal,
    pipeline: Pipeline,
    outcomes: Outcomes,
    ready: ReadySet,
    announced: list[tuple[Any, Any]],
) -> None:
    record = enqueue(store)
    running = attempt(record)

    outcomes.task_ended(
        record,
        running,
        Outcome(status=journal.SUCCESSFUL, finished_at=FINISHED_AT, return_value=3),
        None,
    )
    commit(pipeline, outcomes)

    assert store.read_state(record.id) == states.finished(
        running, journal.SUCCESSFUL, FINISHED_AT, None, 3
    )
    assert ready.take(1) == []
    assert requeue_markers(store) == []
    assert announced == []  # the worker process announced it
    assert outcomes.retrying == set()


def test_a_task_that_raised_without_a_retry_is_committed_failed_with_its_error(
    store: journal.Journal,
    pipeline: Pipeline,
    outcomes: Outcomes,
    ready: ReadySet,
    announced: list[tuple[Any, Any]],
) -> None:
    record = enqueue(store)
    running = attempt(record)

    outcomes.task_ended(
        record, running, Outcome(status=journal.FAILED, finished_at=FINISHED_AT, error=RAISED), None
    )
    commit(pipeline, outcomes)

    state = store.read_state(record.id)
    assert state is not None
    assert state.status == journal.FAILED
    assert state.errors == (RAISED,)
    assert ready.take(1) == []
    assert announced == []


# Retries


def test_a_retry_is_ready_again_after_the_backoff_of_its_attempt_with_its_error(
    store: journal.Journal,
    pipeline: Pipeline,
    outcomes: Outcomes,
    ready: ReadySet,
    caplog: pytest.LogCaptureFixture,
) -> None:
    record = enqueue(store)
    running = attempt(record, times=2)
    policy = RetryPolicy(attempts=3, delay=10, backoff=2, jitter=False)
    failed = Outcome(status=journal.FAILED, finished_at=FINISHED_AT, error=RAISED, retry=True)
    caplog.set_level(logging.WARNING, logger="procpool_tasks.worker.outcomes")
    before = timezone.now()

    outcomes.task_ended(record, running, failed, policy)
    commit(pipeline, outcomes)

    state = store.read_state(record.id)
    assert state is not None
    assert state.status == journal.READY
    assert state.version == running.version + 1
    assert state.owner is None
    assert state.errors == (RAISED,)
    assert state.run_after is not None
    # The second attempt failed: 10 * 2**1 seconds.
    assert (
        before + timedelta(seconds=20) <= state.run_after <= timezone.now() + timedelta(seconds=20)
    )
    assert outcomes.retrying == {record.id}
    assert ready.waiting_ids() == {record.id}
    assert 19 < (ready.seconds_to_next_due() or 0) <= 20
    assert requeue_markers(store) == [record.id]
    assert logged(caplog) == [
        f"Task id={record.id} path=tests.tasks.add queue=default state=READY: attempt 2 of 3 "
        "raised ValueError: boom; retrying in 20.0s"
    ]


def test_nothing_is_acted_on_before_its_state_is_committed(
    store: journal.Journal, pipeline: Pipeline, outcomes: Outcomes, ready: ReadySet
) -> None:
    record = enqueue(store)
    failed = Outcome(status=journal.FAILED, finished_at=FINISHED_AT, error=RAISED, retry=True)

    outcomes.task_ended(record, attempt(record), failed, RetryPolicy(delay=0, jitter=False))
    pipeline.committer.flush()

    assert outcomes.is_pending(record.id)
    assert ready.take(1) == []
    assert requeue_markers(store) == []

    outcomes.on_committed()

    assert not outcomes.is_pending(record.id)
    assert ready.take(1) == [record]
    assert requeue_markers(store) == [record.id]


# Re-runs, FAILED by the supervisor, and max_attempts


def test_an_interrupted_task_runs_again_at_once_with_what_interrupted_it(
    store: journal.Journal,
    pipeline: Pipeline,
    outcomes: Outcomes,
    ready: ReadySet,
    caplog: pytest.LogCaptureFixture,
) -> None:
    record = enqueue(store)
    running = attempt(record)
    caplog.set_level(logging.WARNING, logger="procpool_tasks.worker.outcomes")

    outcomes.rerun(record, running, INTERRUPTED)
    commit(pipeline, outcomes)

    assert store.read_state(record.id) == states.ready_again(running, errors=(INTERRUPTED,))
    assert ready.take(1) == [record]
    assert requeue_markers(store) == [record.id]
    assert outcomes.retrying == set()
    assert logged(caplog) == [
        f"Task id={record.id} path=tests.tasks.add queue=default re-queued as attempt 2: "
        "procpool_tasks.exceptions.TaskInterrupted: Another worker process (pid 4321) "
        "exited with code 3; the process pool was replaced and this task was stopped "
        "before it finished"
    ]


@pytest.mark.parametrize("attempts_made", [1, MAX_ATTEMPTS - 1])
def test_a_task_whose_supervisor_stopped_runs_again_while_attempts_remain(
    store: journal.Journal,
    pipeline: Pipeline,
    outcomes: Outcomes,
    ready: ReadySet,
    announced: list[tuple[Any, Any]],
    attempts_made: int,
) -> None:
    record = enqueue(store)
    running = attempt(record, times=attempts_made)

    outcomes.rerun_or_fail(record, running, INTERRUPTED)
    commit(pipeline, outcomes)

    state = store.read_state(record.id)
    assert state is not None
    assert state.status == journal.READY
    assert state.errors == (INTERRUPTED,)
    assert ready.take(1) == [record]
    assert announced == []


@pytest.mark.parametrize("attempts_made", [MAX_ATTEMPTS, MAX_ATTEMPTS + 1])
def test_a_task_whose_supervisor_stopped_fails_after_max_attempts_and_is_announced(
    store: journal.Journal,
    pipeline: Pipeline,
    outcomes: Outcomes,
    ready: ReadySet,
    announced: list[tuple[Any, Any]],
    caplog: pytest.LogCaptureFixture,
    attempts_made: int,
) -> None:
    record = enqueue(store)
    running = attempt(record, times=attempts_made)
    caplog.set_level(logging.ERROR, logger="procpool_tasks.worker.outcomes")

    outcomes.rerun_or_fail(record, running, INTERRUPTED)
    commit(pipeline, outcomes)

    state = store.read_state(record.id)
    assert state is not None
    assert state.status == journal.FAILED
    assert state.errors == (INTERRUPTED,)
    assert ready.take(1) == []
    assert requeue_markers(store) == []
    assert [result.id for _, result in announced] == [record.id]
    assert logged(caplog) == [
        f"Task id={record.id} path=tests.tasks.add queue=default state=FAILED after "
        f"{attempts_made} attempt(s): {INTERRUPTED.traceback.strip()}"
    ]


def test_a_task_whose_process_died_is_announced_failed_once_committed(
    store: journal.Journal,
    pipeline: Pipeline,
    outcomes: Outcomes,
    announced: list[tuple[Any, Any]],
) -> None:
    record = enqueue(store)
    running = attempt(record)

    outcomes.fail(record, running, DIED)
    pipeline.committer.flush()

    assert announced == []

    outcomes.on_committed()
    outcomes.on_committed()

    assert len(announced) == 1
    sender, result = announced[0]
    assert sender is ProcPoolBackend
    assert result.id == record.id
    assert result.status == compat.TaskResultStatus.FAILED
    assert [error.traceback for error in result.errors] == [DIED.traceback]
    assert result.worker_ids == ["worker-1"]


def test_a_task_failed_by_the_supervisor_that_runs_again_is_announced_by_it_only_once(
    store: journal.Journal,
    pipeline: Pipeline,
    outcomes: Outcomes,
    announced: list[tuple[Any, Any]],
) -> None:
    record = enqueue(store)
    outcomes.fail(record, attempt(record), DIED)
    commit(pipeline, outcomes)
    # Re-queued by hand, it runs again; its worker process announces how it ended.
    failed = store.read_state(record.id)
    assert failed is not None
    running = states.running(record, states.ready_again(failed), "worker-2", INSTANCE)

    outcomes.task_ended(
        record, running, Outcome(status=journal.FAILED, finished_at=FINISHED_AT, error=RAISED), None
    )
    commit(pipeline, outcomes)

    assert [result.id for _, result in announced] == [record.id]


def test_a_task_that_no_longer_imports_is_failed_without_an_announcement(
    store: journal.Journal,
    pipeline: Pipeline,
    outcomes: Outcomes,
    announced: list[tuple[Any, Any]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    record = enqueue(store, task_path="tests.tasks.not_a_task")

    outcomes.fail(record, attempt(record), DIED)
    commit(pipeline, outcomes)

    state = store.read_state(record.id)
    assert state is not None
    assert state.status == journal.FAILED
    assert announced == []
    assert logged(caplog) == []  # its record is quarantined, and that is logged


def test_a_task_finished_receiver_that_raises_is_logged_and_the_supervisor_goes_on(
    store: journal.Journal,
    pipeline: Pipeline,
    outcomes: Outcomes,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def raise_error(**kwargs: Any) -> None:
        raise RuntimeError("receiver broke")

    first, second = enqueue(store), enqueue(store)
    compat.task_finished.connect(raise_error)
    try:
        outcomes.fail(first, attempt(first), DIED)
        outcomes.fail(second, attempt(second), DIED)
        commit(pipeline, outcomes)
    finally:
        compat.task_finished.disconnect(raise_error)

    failures = [r for r in caplog.records if r.name == "procpool_tasks.signals"]
    assert [(r.levelname, r.getMessage()) for r in failures] == [
        ("ERROR", f"A task_finished receiver failed for task id={first.id}"),
        ("ERROR", f"A task_finished receiver failed for task id={second.id}"),
    ]
    assert all(r.exc_info and r.exc_info[0] is RuntimeError for r in failures)


# A claim that never started


def test_a_task_that_never_started_is_ready_again_with_no_attempt_counted(
    store: journal.Journal, pipeline: Pipeline, outcomes: Outcomes, ready: ReadySet
) -> None:
    record = enqueue(store)
    running = attempt(record)

    outcomes.unclaim(record, running)
    commit(pipeline, outcomes)

    state = store.read_state(record.id)
    assert state is not None
    assert state.status == journal.READY
    assert state.version == running.version + 1
    assert state.worker_ids == ()
    assert state.started_at is None
    assert state.last_attempted_at is None
    assert ready.take(1) == [record]


def test_a_retry_that_never_started_keeps_its_earlier_attempts(
    store: journal.Journal, pipeline: Pipeline, outcomes: Outcomes
) -> None:
    record = enqueue(store)
    running = attempt(record, times=2)

    outcomes.unclaim(record, running)
    commit(pipeline, outcomes)

    state = store.read_state(record.id)
    assert state is not None
    assert state.worker_ids == ("worker-1",)
    assert state.started_at == running.started_at
    assert state.last_attempted_at == running.last_attempted_at


# Decisions made twice, and re-queues that cannot be announced


def test_a_second_decision_before_the_first_is_committed_is_refused_and_logged(
    store: journal.Journal,
    pipeline: Pipeline,
    outcomes: Outcomes,
    caplog: pytest.LogCaptureFixture,
) -> None:
    record = enqueue(store)
    running = attempt(record)
    caplog.set_level(logging.ERROR, logger="procpool_tasks.worker.outcomes")

    outcomes.fail(record, running, DIED)
    outcomes.rerun(record, running, INTERRUPTED)
    commit(pipeline, outcomes)

    state = store.read_state(record.id)
    assert state is not None
    assert state.status == journal.FAILED
    assert logged(caplog)[0] == (
        f"Task id={record.id}: a second state before the first was committed"
    )


def test_a_requeue_that_cannot_be_announced_to_other_supervisors_is_still_queued_here(
    store: journal.Journal,
    pipeline: Pipeline,
    outcomes: Outcomes,
    ready: ReadySet,
    caplog: pytest.LogCaptureFixture,
) -> None:
    record = enqueue(store)
    running = attempt(record)
    # Where the re-queue marker goes is no longer a directory.
    shutil.rmtree(store.segments_dir)
    store.segments_dir.write_bytes(b"")
    caplog.set_level(logging.WARNING, logger="procpool_tasks.worker.outcomes")

    outcomes.rerun(record, running, INTERRUPTED)
    commit(pipeline, outcomes)

    assert ready.take(1) == [record]
    announce_failure = re.escape(f"Cannot announce re-queued task id={record.id}: ")
    assert re.fullmatch(f"{announce_failure}\\[Errno 20\\] Not a directory: .*", logged(caplog)[-1])


# Announcing a task that runs again: task_enqueued, same id, once its READY is committed


@pytest.mark.parametrize("decide", ["retry", "rerun", "rerun_or_fail", "reload"])
def test_a_task_that_runs_again_is_announced_enqueued_once_as_get_result_reads_it(
    store: journal.Journal,
    pipeline: Pipeline,
    outcomes: Outcomes,
    announced: list[tuple[Any, Any]],
    requeued: list[tuple[Any, Any]],
    decide: str,
) -> None:
    record = enqueue(store)
    running = attempt(record)
    if decide == "retry":
        failed = Outcome(status=journal.FAILED, finished_at=FINISHED_AT, error=RAISED, retry=True)
        outcomes.task_ended(record, running, failed, RetryPolicy(delay=0, jitter=False))
    elif decide == "rerun":
        outcomes.rerun(record, running, INTERRUPTED)
    elif decide == "rerun_or_fail":
        outcomes.rerun_or_fail(record, running, INTERRUPTED)
    else:
        outcomes.stopped_by_reload(record, running, states.reload_error("tests/tasks.py"))
    pipeline.committer.flush()

    assert requeued == []

    outcomes.on_committed()
    outcomes.on_committed()

    assert announced == []
    assert [sender for sender, _ in requeued] == [ProcPoolBackend]
    [(_, result)] = requeued
    # What get_result builds from the committed state.
    committed = build_task_result(record, store.read_state(record.id), load_task(record))
    assert summary(result) == summary(committed)
    assert str(result.status) == "READY"


def test_a_task_that_never_started_is_ready_again_without_an_announcement(
    store: journal.Journal,
    pipeline: Pipeline,
    outcomes: Outcomes,
    announced: list[tuple[Any, Any]],
    requeued: list[tuple[Any, Any]],
) -> None:
    record = enqueue(store)

    outcomes.unclaim(record, attempt(record))
    commit(pipeline, outcomes)

    assert (announced, requeued) == ([], [])


def test_a_second_decision_refused_is_not_announced_either(
    store: journal.Journal,
    pipeline: Pipeline,
    outcomes: Outcomes,
    announced: list[tuple[Any, Any]],
    requeued: list[tuple[Any, Any]],
) -> None:
    record = enqueue(store)
    running = attempt(record)
    # The task's own outcome (its worker process announced it), then a refused re-run.
    outcomes.task_ended(
        record, running, Outcome(status=journal.SUCCESSFUL, finished_at=FINISHED_AT), None
    )
    outcomes.rerun(record, running, INTERRUPTED)
    commit(pipeline, outcomes)

    assert (announced, requeued) == ([], [])
