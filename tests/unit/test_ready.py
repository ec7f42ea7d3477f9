"""The ready set's order (priority, then run_after or enqueue time, then push order), its
deferred tasks, and which queues' tasks a supervisor reads into it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from procpool_tasks import journal
from procpool_tasks.backend import ProcPoolBackend
from procpool_tasks.options import TaskOptions
from procpool_tasks.worker.committer import Committer
from procpool_tasks.worker.intake import Intake
from procpool_tasks.worker.outcomes import Outcomes
from procpool_tasks.worker.ready import ReadySet
from procpool_tasks.worker.recovery import Recovery
from tests.conftest import wait_for
from tests.unit.conftest import INSTANCE, LONG_AGO, Pipeline, enqueue, make_record


def ids(records: list[journal.Record]) -> list[str]:
    return [record.id for record in records]


def after(seconds: float) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)


# Order


def test_higher_priority_comes_first_whatever_the_enqueue_order() -> None:
    ready = ReadySet()
    ready.push(make_record("low", priority=-10, enqueued_at=LONG_AGO))
    ready.push(make_record("middle", priority=0, enqueued_at=LONG_AGO + timedelta(seconds=1)))
    ready.push(make_record("high", priority=10, enqueued_at=LONG_AGO + timedelta(seconds=2)))

    assert ids(ready.take(3)) == ["high", "middle", "low"]


def test_within_a_priority_the_earliest_run_after_or_enqueue_time_comes_first() -> None:
    ready = ReadySet()
    ready.push(make_record("second", enqueued_at=LONG_AGO + timedelta(seconds=2)))
    ready.push(make_record("third", enqueued_at=LONG_AGO + timedelta(seconds=3)))
    ready.push(
        make_record(
            "first", enqueued_at=LONG_AGO + timedelta(seconds=9), run_after=LONG_AGO
        )  # enqueued last, but its run_after is the earliest time of all
    )

    assert ids(ready.take(3)) == ["first", "second", "third"]


def test_tasks_of_the_same_priority_and_time_come_out_in_the_order_they_were_pushed() -> None:
    ready = ReadySet()
    for name in ["c", "a", "e", "b", "d"]:
        ready.push(make_record(name))

    assert ids(ready.take(5)) == ["c", "a", "e", "b", "d"]


def test_a_retrys_run_after_stands_for_the_records_own_time() -> None:
    ready = ReadySet()
    ready.push(make_record("enqueued-first", enqueued_at=LONG_AGO))
    ready.push(
        make_record("retried", enqueued_at=LONG_AGO + timedelta(seconds=5)),
        run_after=LONG_AGO - timedelta(seconds=1),
    )

    assert ids(ready.take(2)) == ["retried", "enqueued-first"]


def test_take_hands_out_at_most_count_tasks_and_keeps_the_rest_in_order() -> None:
    ready = ReadySet()
    for priority in range(5):
        ready.push(make_record(f"p{priority}", priority=priority))

    assert ids(ready.take(2)) == ["p4", "p3"]
    assert ids(ready.take(10)) == ["p2", "p1", "p0"]
    assert ready.take(1) == []
    assert not ready.has_due()


def test_a_task_pushed_twice_is_queued_once() -> None:
    ready = ReadySet()
    record = make_record("once")
    ready.push(record)
    ready.push(record, run_after=LONG_AGO)

    assert ids(ready.take(5)) == ["once"]


def test_a_task_taken_can_be_queued_again() -> None:
    ready = ReadySet()
    record = make_record("again")
    ready.push(record)
    ready.take(1)

    ready.push(record)

    assert ids(ready.take(1)) == ["again"]


# Deferred tasks


def test_a_task_whose_run_after_is_in_the_future_waits_until_it_is_due() -> None:
    ready = ReadySet()
    record = make_record("later", run_after=after(0.1))
    ready.push(record)

    assert not ready.has_due()
    assert ready.take(1) == []
    assert ready.waiting_ids() == {"later"}
    assert 0 < (ready.seconds_to_next_due() or 0) <= 0.1

    wait_for(ready.has_due, what="the deferred task to be due")

    assert ready.take(1) == [record]
    assert ready.waiting_ids() == set()
    assert ready.seconds_to_next_due() is None


def test_a_retrys_backoff_defers_a_task_whose_record_is_due() -> None:
    ready = ReadySet()
    ready.push(make_record("retried", run_after=LONG_AGO), run_after=after(60))

    assert ready.take(1) == []
    assert ready.waiting_ids() == {"retried"}


def test_a_waiting_task_pushed_again_still_waits_only_once() -> None:
    ready = ReadySet()
    record = make_record("later", run_after=after(60))
    ready.push(record)

    ready.push(record, run_after=LONG_AGO)

    assert ready.take(1) == []
    assert ready.waiting_ids() == {"later"}


def test_the_wait_is_until_the_earliest_waiting_task() -> None:
    ready = ReadySet()
    ready.push(make_record("in-an-hour", run_after=after(3600)))
    ready.push(make_record("in-a-minute", run_after=after(60)))

    assert 59 < (ready.seconds_to_next_due() or 0) <= 60


def test_a_deferred_task_once_due_takes_its_place_by_priority_then_time() -> None:
    ready = ReadySet()
    soon = after(0.05)
    ready.push(make_record("deferred-urgent", priority=5, run_after=soon))
    ready.push(make_record("deferred-plain", run_after=soon))
    ready.push(make_record("old-plain", enqueued_at=LONG_AGO))

    wait_for(lambda: ready.seconds_to_next_due() == 0, what="the deferred tasks to be due")

    assert ids(ready.take(3)) == ["deferred-urgent", "old-plain", "deferred-plain"]


# Which queues a supervisor reads into its ready set


@pytest.fixture
def ready() -> ReadySet:
    return ReadySet()


def intake(
    store: journal.Journal,
    committer: Committer,
    ready: ReadySet,
    queues: set[str],
    unserved: list[journal.Record] | None = None,
) -> tuple[Intake, list[str]]:
    """An ``Intake`` serving ``queues``, as a supervisor makes one; and the ids it prepared
    a result file for. The records of other queues go to ``unserved``."""
    outcomes = Outcomes(
        store, committer, ready, options_for=lambda record: TaskOptions(), sender=ProcPoolBackend
    )
    prepared: list[str] = []
    others: list[journal.Record] = [] if unserved is None else unserved
    reader = Intake(
        store,
        serves=queues.__contains__,
        ready=ready,
        recovery=Recovery(store, INSTANCE, outcomes),
        committer=committer,
        prepare=prepared.extend,
        unserved=others.append,
    )
    return reader, prepared


def test_a_supervisor_reads_in_only_the_tasks_of_the_queues_it_serves(
    store: journal.Journal, pipeline: Pipeline, ready: ReadySet
) -> None:
    default = enqueue(store, queue_name="default")
    low = enqueue(store, queue_name="low")
    high = enqueue(store, queue_name="high", priority=1)
    unserved: list[journal.Record] = []
    reader, prepared = intake(store, pipeline.committer, ready, {"default", "high"}, unserved)

    reader.read(initial=True)

    assert ready.take(10) == [high, default]
    assert prepared == [default.id, high.id]
    assert unserved == [low]  # told, in case no live supervisor serves it


def test_a_requeue_marker_of_a_task_on_a_queue_not_served_is_ignored(
    store: journal.Journal, pipeline: Pipeline, ready: ReadySet
) -> None:
    low = enqueue(store, queue_name="low")
    reader, _ = intake(store, pipeline.committer, ready, {"default"})
    reader.read(initial=True)

    store.append_requeue(low.id)
    reader.read()

    assert ready.take(10) == []
    assert ready.waiting_ids() == set()


def test_a_requeue_marker_queues_a_served_task_again_deferred_by_its_states_run_after(
    store: journal.Journal, pipeline: Pipeline, ready: ReadySet
) -> None:
    record = enqueue(store)
    reader, _ = intake(store, pipeline.committer, ready, {"default"})
    reader.read(initial=True)
    ready.take(1)
    store.write_state(
        journal.State(id=record.id, status=journal.READY, version=3, run_after=after(3600))
    )

    store.append_requeue(record.id)
    reader.read()

    assert ready.take(1) == []
    assert ready.waiting_ids() == {record.id}
    assert 3590 < (ready.seconds_to_next_due() or 0) <= 3600


def test_best_key_is_the_order_of_the_task_take_gives_next_and_none_when_none_is_due() -> None:
    ready = ReadySet()
    assert ready.best_key() is None
    ready.push(make_record("later", enqueued_at=LONG_AGO + timedelta(seconds=5)))
    best = make_record("best", priority=3, enqueued_at=LONG_AGO + timedelta(seconds=9))
    ready.push(best)
    ready.push(make_record("deferred", priority=9, run_after=after(3600)))

    assert ready.best_key() == ReadySet.order_of(best)
    assert ids(ready.take(1)) == ["best"]
    assert ReadySet.order_of(best) < ReadySet.order_of(make_record("x", priority=2))
