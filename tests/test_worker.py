"""The worker: real ``procpool_worker`` subprocesses running tasks from a private journal."""

from __future__ import annotations

import functools
import json
import re
import signal
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone

from tests import tasks
from tests.conftest import Env, wait_for
from tests.signal_log import SIGNAL_LOG_VARIABLE
from tests.support import refreshed


def lines_of(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def is_successful(result: Any) -> bool:
    return bool(refreshed(result).status == "SUCCESSFUL")


def usage_error(output: str) -> str:
    """The message of the command line's usage error, after ``procpool_worker: error:``."""
    last_line = output.strip().splitlines()[-1]
    _, found, message = last_line.partition(" procpool_worker: error: ")
    assert found, f"no usage error in the output:\n{output}"
    return message


def log_lines_about(output: str, result_id: str) -> list[str]:
    """The worker's log lines that name this task id."""
    return [line for line in output.splitlines() if f"id={result_id} " in line]


# -- order and time --------------------------------------------------------------------------


def test_one_process_runs_higher_priority_first_and_earlier_enqueue_first_within_one(
    env: Env,
) -> None:
    order = env.tmp_path / "order.txt"
    for line, priority in [
        ("low-1", -10),
        ("mid-1", 0),
        ("high-1", 10),
        ("mid-2", 0),
        ("low-2", -10),
        ("high-2", 10),
        ("top", 100),
        ("mid-3", 0),
    ]:
        tasks.append_line.using(priority=priority).enqueue(str(order), line)

    env.run_batch("--processes", "1")

    assert lines_of(order) == [
        *["top", "high-1", "high-2"],
        *["mid-1", "mid-2", "mid-3"],
        *["low-1", "low-2"],
    ]


def test_batch_worker_leaves_a_task_whose_run_after_is_in_the_future_ready(env: Env) -> None:
    later = tasks.add.using(run_after=timezone.now() + timedelta(hours=1)).enqueue(1, 2)
    now = tasks.add.enqueue(3, 4)

    env.run_batch("--processes", "1")

    assert refreshed(now).status == "SUCCESSFUL"
    assert refreshed(later).status == "READY"
    assert later.started_at is None
    assert later.worker_ids == []


def test_batch_worker_runs_a_task_whose_run_after_has_passed(env: Env) -> None:
    result = tasks.add.using(run_after=timezone.now() - timedelta(minutes=5)).enqueue(1, 2)

    env.run_batch("--processes", "1")

    assert refreshed(result).status == "SUCCESSFUL"
    assert result.return_value == 3


def test_long_running_worker_runs_a_deferred_task_once_it_is_due(env: Env) -> None:
    run_after = timezone.now() + timedelta(seconds=1)
    result = tasks.add.using(run_after=run_after).enqueue(1, 2)

    env.start_worker("--processes", "1")

    wait_for(functools.partial(is_successful, result), what="the deferred task to run")
    assert result.started_at is not None
    assert result.started_at >= run_after


# -- queues ----------------------------------------------------------------------------------


def _enqueue_one_per_queue(env: Env) -> dict[str, Any]:
    out = str(env.tmp_path / "queues.txt")
    return {
        "default": tasks.append_line.enqueue(out, "default"),
        "high": tasks.on_high_queue.enqueue(out, "high"),
        "low": tasks.append_line.using(queue_name="low").enqueue(out, "low"),
    }


@pytest.mark.parametrize(
    ("queue_names", "served"),
    [
        ("high", {"high"}),
        ("default,high", {"default", "high"}),
        (" low , default ", {"default", "low"}),
        ("*", {"default", "high", "low"}),
    ],
)
def test_worker_runs_only_the_tasks_of_the_queues_it_serves(
    env: Env, queue_names: str, served: set[str]
) -> None:
    results = _enqueue_one_per_queue(env)

    env.run_batch("--queue-name", queue_names)

    statuses = {name: refreshed(result).status for name, result in results.items()}
    assert statuses == {
        name: "SUCCESSFUL" if name in served else "READY" for name in ("default", "high", "low")
    }
    assert sorted(lines_of(env.tmp_path / "queues.txt")) == sorted(served)


def test_worker_serves_every_queue_of_queues_when_no_queue_name_is_given(env: Env) -> None:
    results = _enqueue_one_per_queue(env)

    output = env.run_batch()

    assert {name: refreshed(result).status for name, result in results.items()} == {
        "default": "SUCCESSFUL",
        "high": "SUCCESSFUL",
        "low": "SUCCESSFUL",
    }
    [started] = [line for line in output.splitlines() if " Starting worker " in line]
    assert re.fullmatch(
        r".* INFO Starting worker worker_id=\w+ queues=default,high,low processes=\d+ "
        f"journal={re.escape(str(env.journal))}",
        started,
    ), started


def test_worker_of_a_backend_with_empty_queues_serves_every_queue_by_default(env: Env) -> None:
    on_any = tasks.add.using(backend="second", queue_name="anything").enqueue(1, 2)

    output = env.run_batch("--backend", "second")

    assert refreshed(on_any).status == "SUCCESSFUL"
    [started] = [line for line in output.splitlines() if " Starting worker " in line]
    assert re.fullmatch(
        r".* INFO Starting worker worker_id=\w+ queues=\* processes=\d+ "
        f"journal={re.escape(str(env.journal))}-second",
        started,
    ), started


def test_unknown_queue_name_is_refused_naming_the_queue(env: Env) -> None:
    result = tasks.add.enqueue(1, 2)

    output = env.run_batch("--queue-name", "default,nosuch", expect_code=1)

    assert output.strip().splitlines()[-1] == (
        "CommandError: --queue-name: nosuch not in the QUEUES of backend 'default' "
        "(default, high, low)"
    )
    assert refreshed(result).status == "READY"


# -- results ---------------------------------------------------------------------------------


def test_successful_task_has_its_return_value_worker_id_and_times(env: Env) -> None:
    result = tasks.echo.enqueue(1, "two", three=[3.0, None, {"four": True}])

    env.run_batch("--worker-id", "worker-results-1")

    assert refreshed(result).status == "SUCCESSFUL"
    assert result.return_value == {
        "args": [1, "two"],
        "kwargs": {"three": [3.0, None, {"four": True}]},
    }
    assert result.worker_ids == ["worker-results-1"]
    assert result.errors == []
    assert result.enqueued_at is not None
    assert result.started_at is not None
    assert result.last_attempted_at is not None
    assert result.finished_at is not None
    assert result.enqueued_at <= result.started_at <= result.last_attempted_at
    assert result.last_attempted_at <= result.finished_at


def test_raising_task_ends_failed_with_the_exception_class_and_traceback(env: Env) -> None:
    result = tasks.fail_with.enqueue("the widget is broken")

    env.run_batch("--worker-id", "worker-errors-1")

    assert refreshed(result).status == "FAILED"
    assert [error.exception_class_path for error in result.errors] == ["builtins.ValueError"]
    traceback = result.errors[0].traceback
    assert traceback.startswith("Traceback (most recent call last):\n")
    assert "raise ValueError(message)" in traceback
    assert traceback.rstrip().splitlines()[-1] == "ValueError: the widget is broken"
    assert result.worker_ids == ["worker-errors-1"]
    assert result.started_at is not None
    assert result.last_attempted_at is not None
    assert result.finished_at is not None
    with pytest.raises(ValueError, match=r"^Task failed$"):
        _ = result.return_value


def test_task_returning_a_value_json_cannot_carry_ends_failed_saying_which_value(
    env: Env,
) -> None:
    result = tasks.return_unserialisable.enqueue()

    env.run_batch()

    assert refreshed(result).status == "FAILED"
    assert [error.exception_class_path for error in result.errors] == [
        "procpool_tasks.exceptions.ValueNotJSON"
    ]
    assert result.errors[0].traceback.rstrip().splitlines()[-1] == (
        "procpool_tasks.exceptions.ValueNotJSON: the return value is a set, which JSON cannot carry"
    )
    assert result.finished_at is not None


def test_context_task_sees_its_own_id_first_attempt_and_worker_id(env: Env) -> None:
    result = tasks.report_context.enqueue()

    env.run_batch("--worker-id", "worker-context-1")

    assert refreshed(result).status == "SUCCESSFUL"
    assert result.return_value == {
        "id": result.id,
        "attempt": 1,
        "worker_ids": ["worker-context-1"],
        "status": "RUNNING",
    }


def test_async_task_runs_to_its_return_value(env: Env) -> None:
    result = tasks.async_add.enqueue(20, 22)

    env.run_batch()

    finished = refreshed(result)
    assert finished.status == "SUCCESSFUL"
    assert finished.return_value == 42


# -- signals and logs ------------------------------------------------------------------------


def test_task_started_and_task_finished_are_sent_in_the_worker(env: Env) -> None:
    signal_log = env.tmp_path / "signals.log"
    env.variables[SIGNAL_LOG_VARIABLE] = str(signal_log)
    succeeds = tasks.add.enqueue(1, 2)
    fails = tasks.fail_with.enqueue("as planned")

    env.run_batch("--processes", "2")

    lines = lines_of(signal_log)
    assert sorted(lines) == sorted(
        [
            f"started {succeeds.id}",
            f"finished {succeeds.id} SUCCESSFUL",
            f"started {fails.id}",
            f"finished {fails.id} FAILED",
        ]
    )
    for result in (succeeds, fails):
        assert lines.index(f"started {result.id}") < lines.index(
            next(line for line in lines if line.startswith(f"finished {result.id} "))
        )


def test_task_finished_is_sent_by_the_supervisor_for_a_task_whose_process_died(
    env: Env,
) -> None:
    signal_log = env.tmp_path / "signals.log"
    env.variables[SIGNAL_LOG_VARIABLE] = str(signal_log)
    dies = tasks.exit_hard.enqueue(5)

    env.run_batch("--processes", "1")

    assert lines_of(signal_log) == [f"started {dies.id}", f"finished {dies.id} FAILED"]


def test_a_task_the_supervisor_fails_is_logged_with_its_error_on_both_frameworks(
    env: Env,
) -> None:
    dies = tasks.exit_hard.enqueue(5)

    # -v 2: the framework's own lines repeat the worker's, so they show at debug only.
    output = env.run_batch("--processes", "1", "-v", "2")

    [error] = refreshed(dies).errors
    # The framework's own line, followed by the error, as for a task that raised.
    assert (
        f"ERROR Task id={dies.id} path=tests.tasks.exit_hard state=FAILED\n{error.traceback}"
    ) in output
    assert "NoneType" not in output


def test_worker_logs_one_line_per_task_start_and_finish(env: Env) -> None:
    on_default = tasks.add.enqueue(1, 2)
    on_high = tasks.on_high_queue.enqueue(str(env.tmp_path / "high.txt"), "x")

    output = env.run_batch("--queue-name", "*", "--processes", "1")

    expected: list[tuple[Any, str, str]] = [
        (on_default, "tests.tasks.add", "default"),
        (on_high, "tests.tasks.on_high_queue", "high"),
    ]
    for result, path, queue in expected:
        started, finished = log_lines_about(output, result.id)
        prefix = rf".* INFO Task id={re.escape(result.id)} path={re.escape(path)} queue={queue}"
        assert re.fullmatch(prefix + r" state=RUNNING attempt=1", started), started
        assert re.fullmatch(prefix + r" state=SUCCESSFUL duration=\d+\.\d{3}s", finished), finished


def test_quiet_worker_logs_no_task_lines(env: Env) -> None:
    result = tasks.add.enqueue(1, 2)

    output = env.run_batch("-v", "0")

    assert refreshed(result).status == "SUCCESSFUL"
    assert "Task id=" not in output
    assert log_lines_about(output, result.id) == []


# -- stopping --------------------------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_stop_signal_lets_the_running_task_finish_claims_nothing_more_and_exits_0(
    env: Env, signum: signal.Signals
) -> None:
    marker = env.tmp_path / "started"
    release = env.tmp_path / "release"
    running = tasks.block_until.using(priority=10).enqueue(str(release), str(marker))
    queued = tasks.add.enqueue(1, 2)
    worker = env.start_worker("--processes", "1")
    wait_for(marker.exists, what="the blocking task to start")

    worker.send(signum)
    notice = (
        f"Received {signum.name} - shutting down gracefully, waiting for 1 running task(s)... "
        "(send it again to stop them now)"
    )
    wait_for(lambda: notice in worker.output, what="the worker to acknowledge the signal")
    assert worker.process.poll() is None, "the worker exited with its task still running"
    release.touch()

    assert worker.wait() == 0, worker.output
    assert refreshed(running).status == "SUCCESSFUL"
    assert running.return_value == "released"
    assert refreshed(queued).status == "READY"
    assert queued.worker_ids == []


def test_max_tasks_runs_exactly_that_many_then_exits_0(env: Env) -> None:
    results = [tasks.add.enqueue(n, n) for n in range(5)]

    worker = env.start_worker("--processes", "3", "--max-tasks", "2")

    assert worker.wait() == 0, worker.output
    statuses = sorted(refreshed(result).status for result in results)
    assert statuses == ["READY", "READY", "READY", "SUCCESSFUL", "SUCCESSFUL"]


def test_batch_worker_exits_0_when_nothing_is_ready(env: Env) -> None:
    output = env.run_batch()

    assert "No more tasks to run" in output


CALL_BATCH = """
from django.core.management import call_command
from tests import tasks
result = tasks.add.enqueue(2, 3)
call_command("procpool_worker", "--batch", "--no-reload", "--processes", "1", verbosity=0)
result.refresh()
print("returned", result.status, result.return_value)
"""


def test_call_command_returns_after_a_successful_batch(env: Env) -> None:
    assert env.run_python(CALL_BATCH).split() == ["returned", "SUCCESSFUL", "5"]


def test_idle_worker_picks_up_tasks_enqueued_after_it_started(env: Env) -> None:
    worker = env.start_worker("--processes", "1")
    wait_for(lambda: "Starting worker" in worker.output, what="the worker to start")

    for n in range(3):
        result = tasks.add.enqueue(n, 1)
        wait_for(
            functools.partial(is_successful, result),
            what=f"task {n}, enqueued to an idle worker, to run",
        )
        assert result.return_value == n + 1


# -- flags -----------------------------------------------------------------------------------


def test_backend_flag_runs_the_tasks_of_that_backend_alias_only(env: Env) -> None:
    on_second = tasks.add.using(backend="second").enqueue(1, 2)
    on_any_queue = tasks.add.using(backend="second", queue_name="anything").enqueue(3, 4)
    on_default = tasks.add.enqueue(5, 6)

    env.run_batch("--backend", "second", "--queue-name", "*")

    assert refreshed(on_second).status == "SUCCESSFUL"
    assert on_second.return_value == 3
    assert refreshed(on_any_queue).status == "SUCCESSFUL"
    assert refreshed(on_default).status == "READY"
    assert Path(f"{env.journal}-second").is_dir()


def test_backend_flag_refuses_a_backend_that_is_not_a_procpool_backend(env: Env) -> None:
    output = env.run_batch("--backend", "immediate", expect_code=2)

    assert usage_error(output) == (
        "argument --backend: Backend 'immediate' is not a ProcPoolBackend"
    )


def test_backend_flag_refuses_an_unknown_alias(env: Env) -> None:
    output = env.run_batch("--backend", "nosuch", expect_code=2)

    # The framework's own message for an alias that TASKS does not define.
    assert usage_error(output) == "argument --backend: The connection 'nosuch' doesn't exist."


@pytest.mark.parametrize("value", ["0", "-1"])
def test_processes_flag_refuses_a_count_below_one(env: Env, value: str) -> None:
    output = env.run_batch("--processes", value, expect_code=2)

    assert usage_error(output) == (f"argument --processes: must be greater than zero, not {value}")


# -- the database ----------------------------------------------------------------------------


def test_several_worker_processes_write_one_sqlite_database_at_once(env: Env) -> None:
    env.migrate()
    texts = [f"note {n}" for n in range(30)]
    results = [tasks.create_note.enqueue(text) for text in texts]

    env.run_batch("--processes", "3")

    failed = [(r.id, r.errors) for r in results if refreshed(r).status != "SUCCESSFUL"]
    assert failed == []
    assert len({result.return_value for result in results}) == 30
    stored = env.run_python(
        "import json\n"
        "from tests.models import Note\n"
        "print(json.dumps(sorted(Note.objects.values_list('text', flat=True))))"
    )
    assert json.loads(stored) == sorted(texts)


def test_a_worker_killed_while_it_replaced_its_heartbeat_leaves_nothing_once_recovered(
    env: Env,
) -> None:
    workers = env.journal / "workers"
    worker = env.start_worker()
    [beat] = wait_for(lambda: list(workers.glob("*.json")), what="the worker's first heartbeat")
    worker.send(signal.SIGKILL)
    worker.wait()
    # What a kill between writing the new heartbeat and renaming it into place leaves.
    (workers / f".{beat.name}.{worker.process.pid}-7.tmp").write_text("{}")

    env.run_batch()

    assert list(workers.iterdir()) == []
