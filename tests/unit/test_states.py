"""Every change of a task's state a supervisor makes, and the errors it records."""

from __future__ import annotations

import dataclasses
import signal
from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from procpool_tasks import journal
from procpool_tasks.worker import states
from tests.unit.conftest import make_record

RECORD = make_record("0123456789abcdef-0")
TASK_ERROR = journal.TaskError(
    exception_class_path="builtins.ValueError", traceback="ValueError: boom\n"
)
FINISHED_AT = datetime(2025, 6, 1, 12, tzinfo=UTC)


def claimed(state: journal.State | None = None, worker_id: str = "worker-1") -> journal.State:
    return states.running(RECORD, state, worker_id, "00000000000000aa")


# READY -> RUNNING


def test_a_first_claim_is_running_version_1_owned_by_the_supervisor() -> None:
    before = timezone.now()
    running = states.running(RECORD, None, "worker-1", "00000000000000aa")

    assert running.id == RECORD.id
    assert running.status == journal.RUNNING
    assert running.version == 1
    assert running.worker_ids == ("worker-1",)
    assert running.owner == "00000000000000aa"
    assert running.started_at is not None
    assert before <= running.started_at <= timezone.now()
    assert running.last_attempted_at == running.started_at
    assert running.errors == ()


def test_a_claim_after_a_retry_adds_an_attempt_and_keeps_the_first_start_and_the_errors() -> None:
    first = claimed()
    retried = states.ready_again(first, errors=(TASK_ERROR,), run_after=FINISHED_AT)

    again = claimed(retried, worker_id="worker-2")

    assert again.status == journal.RUNNING
    assert again.version == retried.version + 1 == 3
    assert again.worker_ids == ("worker-1", "worker-2")
    assert again.started_at == first.started_at
    assert again.last_attempted_at is not None
    assert first.last_attempted_at is not None
    assert again.last_attempted_at >= first.last_attempted_at
    assert again.errors == (TASK_ERROR,)
    assert again.owner == "00000000000000aa"


def test_a_claim_of_a_state_that_never_started_starts_now() -> None:
    never_started = journal.State(id=RECORD.id, status=journal.READY, version=4)

    running = claimed(never_started)

    assert running.version == 5
    assert running.worker_ids == ("worker-1",)
    assert running.started_at is not None
    assert running.started_at == running.last_attempted_at


# RUNNING -> the task's own outcome


def test_a_task_that_returned_is_successful_with_its_return_value_and_no_owner() -> None:
    running = claimed()

    done = states.finished(running, journal.SUCCESSFUL, FINISHED_AT, None, {"sum": 3})

    assert done.status == journal.SUCCESSFUL
    assert done.version == running.version + 1
    assert done.owner is None
    assert done.finished_at == FINISHED_AT
    assert done.return_value == {"sum": 3}
    assert done.errors == ()
    assert done.worker_ids == running.worker_ids
    assert done.started_at == running.started_at
    assert done.is_finished


def test_a_task_that_raised_is_failed_with_its_error_after_the_earlier_ones() -> None:
    earlier = journal.TaskError(exception_class_path="builtins.KeyError", traceback="KeyError\n")
    running = claimed(states.ready_again(claimed(), errors=(earlier,)))

    done = states.finished(running, journal.FAILED, FINISHED_AT, TASK_ERROR, None)

    assert done.status == journal.FAILED
    assert done.version == running.version + 1
    assert done.owner is None
    assert done.errors == (earlier, TASK_ERROR)
    assert done.is_finished


# RUNNING -> READY: a retry, a re-run after an interruption, an unclaim


def test_ready_again_is_a_new_version_with_no_owner_and_the_changes_given() -> None:
    running = claimed()
    run_after = FINISHED_AT + timedelta(seconds=30)

    ready = states.ready_again(running, errors=(TASK_ERROR,), run_after=run_after)

    assert ready.status == journal.READY
    assert ready.version == running.version + 1
    assert ready.owner is None
    assert ready.errors == (TASK_ERROR,)
    assert ready.run_after == run_after
    assert ready.worker_ids == running.worker_ids
    assert ready.finished_at is None
    assert not ready.is_finished


# RUNNING -> FAILED by the supervisor


def test_failed_by_the_supervisor_adds_its_error_and_finishes_now() -> None:
    running = claimed(states.ready_again(claimed(), errors=(TASK_ERROR,)))
    died = states.death_error(4321, -signal.SIGSEGV, timed_out=False, task_timeout=None)
    before = timezone.now()

    failed = states.failed(running, died)

    assert failed.status == journal.FAILED
    assert failed.version == running.version + 1
    assert failed.owner is None
    assert failed.errors == (TASK_ERROR, died)
    assert failed.finished_at is not None
    assert before <= failed.finished_at <= timezone.now()
    assert failed.worker_ids == running.worker_ids


def test_every_change_makes_a_newer_version_so_a_replay_never_overwrites_it() -> None:
    first = claimed()
    retry = states.ready_again(first, errors=(TASK_ERROR,))
    second = claimed(retry, worker_id="worker-2")
    interrupted = states.ready_again(second, errors=(*second.errors, TASK_ERROR))
    third = claimed(interrupted, worker_id="worker-3")
    done = states.finished(third, journal.SUCCESSFUL, FINISHED_AT, None, 3)

    versions = [s.version for s in (first, retry, second, interrupted, third, done)]

    assert versions == [1, 2, 3, 4, 5, 6]
    assert done.worker_ids == ("worker-1", "worker-2", "worker-3")


# The errors the supervisor records


def test_an_error_is_a_one_line_traceback_naming_the_exception_class() -> None:
    assert states.error(KeyError, "no such key") == journal.TaskError(
        exception_class_path="builtins.KeyError", traceback="builtins.KeyError: no such key\n"
    )


def test_a_process_killed_by_sigkill_is_reported_as_perhaps_out_of_memory() -> None:
    error = states.death_error(1234, -signal.SIGKILL, timed_out=False, task_timeout=None)

    assert error == journal.TaskError(
        exception_class_path="procpool_tasks.exceptions.WorkerProcessDied",
        traceback="procpool_tasks.exceptions.WorkerProcessDied: The worker process (pid 1234) "
        "running the task was killed by SIGKILL (perhaps out of memory?)\n",
    )


def test_a_process_killed_by_another_signal_names_the_signal_only() -> None:
    error = states.death_error(1234, -signal.SIGSEGV, timed_out=False, task_timeout=None)

    assert error.traceback == (
        "procpool_tasks.exceptions.WorkerProcessDied: The worker process (pid 1234) "
        "running the task was killed by SIGSEGV\n"
    )


def test_a_process_that_exited_gives_its_exit_code() -> None:
    error = states.death_error(1234, 3, timed_out=False, task_timeout=None)

    assert error.traceback == (
        "procpool_tasks.exceptions.WorkerProcessDied: The worker process (pid 1234) "
        "running the task exited with code 3\n"
    )


def test_a_process_killed_for_its_timeout_is_a_timeout_error_naming_the_limit() -> None:
    error = states.death_error(1234, -signal.SIGKILL, timed_out=True, task_timeout=2.5)

    assert error == journal.TaskError(
        exception_class_path="procpool_tasks.exceptions.TaskTimeoutError",
        traceback="procpool_tasks.exceptions.TaskTimeoutError: The task exceeded its timeout "
        "of 2.5s and did not stop; its worker process (pid 1234) was killed\n",
    )


def test_a_process_killed_over_the_memory_limit_names_the_size_reached_and_the_limit() -> None:
    error = states.over_memory_error(412.4, 300.0)

    assert error == journal.TaskError(
        exception_class_path="procpool_tasks.exceptions.MemoryLimitExceeded",
        traceback="procpool_tasks.exceptions.MemoryLimitExceeded: The task's process used "
        "412 MiB, over --max-memory-per-child 300 MiB; it was stopped and replaced\n",
    )


def test_an_interruption_names_every_death_by_pid_in_order() -> None:
    error = states.interruption_error({20: -signal.SIGKILL, 10: 1}, timed_out={20})

    assert error == journal.TaskError(
        exception_class_path="procpool_tasks.exceptions.TaskInterrupted",
        traceback="procpool_tasks.exceptions.TaskInterrupted: Another worker process "
        "(pid 10) exited with code 1 and (pid 20) was killed for running past its timeout; "
        "the process pool was replaced and this task was stopped before it finished\n",
    )


def test_an_interruption_with_no_death_known_says_another_process_died() -> None:
    error = states.interruption_error({}, timed_out=set())

    assert error.traceback == (
        "procpool_tasks.exceptions.TaskInterrupted: Another worker process died; the process "
        "pool was replaced and this task was stopped before it finished\n"
    )


def test_a_finished_state_carries_every_field_of_the_running_one_it_does_not_change() -> None:
    # Built field by field (``replace`` cost more): a field added to State must be too.
    handoff = journal.Handoff(backend="other", started_at=FINISHED_AT, id="elsewhere-1")
    running = dataclasses.replace(claimed(), run_after=FINISHED_AT, handoff=handoff)

    finished = states.finished(running, journal.SUCCESSFUL, FINISHED_AT, None, [1])

    assert finished == dataclasses.replace(
        running,
        status=journal.SUCCESSFUL,
        version=running.version + 1,
        owner=None,
        finished_at=FINISHED_AT,
        return_value=[1],
    )
    # A tripwire: a new field of State must be carried by ``states.finished`` too.
    assert [field.name for field in dataclasses.fields(journal.State)] == [
        "id", "status", "version", "worker_ids", "owner", "started_at", "last_attempted_at",
        "finished_at", "errors", "return_value", "run_after", "handoff",
    ]  # fmt: skip


# RUNNING -> SUCCESSFUL, as a worker process encodes it ahead (SuccessLine)

ODD_OFFSET = timezone.get_fixed_timezone(timedelta(hours=5, minutes=45))


def test_a_success_line_is_the_line_of_the_finished_state_byte_for_byte() -> None:
    retried = states.ready_again(claimed(), errors=(TASK_ERROR,), run_after=FINISHED_AT)
    handed = dataclasses.replace(
        claimed(), handoff=journal.Handoff(backend="rq", started_at=FINISHED_AT, id="x\u00e9")
    )
    return_values = [None, 3, 2.5, 'caf\u00e9 "quoted"\n', [1, {"a": None}], {"\u00fc": True}]
    finish_times = [
        FINISHED_AT,
        datetime(2025, 6, 1, 12, 0, 0, 5, tzinfo=ODD_OFFSET),
        datetime(2025, 6, 1, 12),  # naive, as with USE_TZ = False
    ]
    for running in (claimed(), claimed(retried, "worker-2"), handed):
        for finished_at in finish_times:
            for value in return_values:
                made = states.finished(running, journal.SUCCESSFUL, finished_at, None, value)
                line = states.SuccessLine(running).line(finished_at, value)
                assert line == journal.state_line(made), (running, finished_at, value)


def test_a_claim_is_the_running_state_and_its_line_byte_for_byte() -> None:
    retried = states.ready_again(claimed(), errors=(TASK_ERROR,), run_after=FINISHED_AT)
    never_started = journal.State(id=RECORD.id, status=journal.READY, version=3)
    odd_id = make_record('0123456789abcdef-\u00e9"\\')
    claims = states.Claims("worker-\u00fc", "00000000000000aa")

    claimed_before = [(RECORD, None), (odd_id, None), (RECORD, retried), (RECORD, never_started)]
    for record, before in claimed_before:
        running, line = claims.claim(record, before)

        expected = states.running(record, before, "worker-\u00fc", "00000000000000aa")
        assert running == dataclasses.replace(
            expected, started_at=running.started_at, last_attempted_at=running.last_attempted_at
        )
        assert line == journal.state_line(running), (record.id, before)


def test_a_line_template_takes_only_fields_of_a_state_in_their_order() -> None:
    running = claimed()

    for blanks in (("return_value", "finished_at"), ("no_such_field",)):
        with pytest.raises(ValueError, match="not fields of a state, in its order"):
            journal.StateLineTemplate(running, blanks)
