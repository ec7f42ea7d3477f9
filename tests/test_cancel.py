"""``procpool_cancel`` and ``backend.cancel``: READY, deferred and RUNNING tasks cancelled.

Tasks run for real in ``procpool_worker`` subprocesses; ``log_pid_then_block`` says in a
file of its own each time it runs (with its process's pid) and runs until the test lets it
finish. The command runs as an operator runs it, and it and the supervisor are killed
half-way by ``tests.crash_at``: each task is then cancelled or untouched, never run twice.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone

from procpool_tasks import compat
from procpool_tasks.exceptions import CancelRefused
from tests import tasks
from tests.conftest import Env, wait_for
from tests.crash_at import CRASH_AT_CALL_VARIABLE, CRASH_AT_VARIABLE, CRASH_STATUS_VARIABLE
from tests.signal_log import SIGNAL_LOG_VARIABLE
from tests.support import journal_files, lines_of, refreshed, status_of, worker_log

CANCELLED = "procpool_tasks.exceptions.TaskCancelled"
BEFORE_IT_RAN = f"{CANCELLED}: The task was cancelled before it ran\n"
UNSUPERVISED = (
    f"{CANCELLED}: The task was cancelled while it ran; the worker w1 stopped before it "
    "finished (supervisor killed, or stopped at once), and it does not run again\n"
)


def cancel(env: Env, *args: str, expect_code: int = 0) -> subprocess.CompletedProcess[str]:
    return env.manage("procpool_cancel", *args, expect_code=expect_code)


def runs_of(path: Path) -> list[str]:
    """The lines a task appended, one per run."""
    return lines_of(path)


class Blocking:
    """``log_pid_then_block`` tasks, each with its own log; all run until ``release``."""

    def __init__(self, env: Env) -> None:
        self.tmp_path = env.tmp_path
        self.release = env.tmp_path / "release"
        self.logs: dict[str, Path] = {}

    def enqueue(self, name: str, *, ignore_sigterm: bool = False, **using: Any) -> Any:
        log = self.tmp_path / f"{name}.runs"
        task = tasks.log_pid_then_block.using(**using) if using else tasks.log_pid_then_block
        result = task.enqueue(str(log), str(self.release), ignore_sigterm)
        self.logs[result.id] = log
        return result

    def runs(self, result: Any) -> list[int]:
        """The pid of each run of the task, in order."""
        return [int(line) for line in lines_of(self.logs[result.id])]

    def wait_running(self, *results: Any) -> None:
        wait_for(
            lambda: all(self.runs(result) for result in results),
            what=f"{len(results)} task(s) to start",
        )


def errors_of(result: Any) -> list[tuple[str, str]]:
    return [(error.exception_class_path, error.traceback) for error in result.errors]


def is_alive(pid: int) -> bool:
    """Whether the process runs (a zombie waiting for its parent does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def spare_of(env: Env, result_id: str) -> Path:
    """The result file a supervisor makes, empty, for a task it has read in and queued."""
    segment, offset = result_id.split("-")
    return env.journal / "results" / segment / f"{offset}.json"


# -- READY and deferred --------------------------------------------------------------------


def test_a_cancelled_ready_task_never_runs_and_ends_failed_with_task_cancelled(
    env: Env,
) -> None:
    signal_log = env.tmp_path / "signals.log"
    env.variables[SIGNAL_LOG_VARIABLE] = str(signal_log)
    log = env.tmp_path / "ran.txt"
    kept = tasks.append_line.enqueue(str(log), "kept")
    cancelled = tasks.append_line.enqueue(str(log), "cancelled")

    done = cancel(env, cancelled.id)

    assert done.stdout.splitlines() == [
        f"Cancelled {cancelled.id} (tests.tasks.append_line): it is READY; it will never run",
        "1 task(s) cancelled; 0 refused",
    ]
    # The framework's own receiver of task_finished logs it, as a worker's would (the
    # backport adds a line "NoneType: None": it logs with exc_info outside an except).
    assert done.stderr.splitlines()[0] == (
        f"Task id={cancelled.id} path=tests.tasks.append_line state=FAILED"
    )
    assert status_of(cancelled) == "FAILED"
    assert errors_of(cancelled) == [(CANCELLED, BEFORE_IT_RAN)]
    assert (cancelled.worker_ids, cancelled.started_at) == ([], None)
    assert cancelled.finished_at is not None
    # The command wrote FAILED: it sent task_finished, once.
    assert lines_of(signal_log) == [f"finished {cancelled.id} FAILED"]

    env.run_batch()

    assert status_of(kept) == "SUCCESSFUL"
    assert status_of(cancelled) == "FAILED"
    assert runs_of(log) == ["kept"]
    assert lines_of(signal_log).count(f"finished {cancelled.id} FAILED") == 1


def test_a_cancelled_deferred_task_never_runs_once_its_time_has_come(env: Env) -> None:
    log = env.tmp_path / "ran.txt"
    run_after = timezone.now() + timedelta(seconds=1)
    deferred = tasks.append_line.using(run_after=run_after).enqueue(str(log), "deferred")
    also_deferred = tasks.append_line.using(run_after=run_after).enqueue(str(log), "kept")

    done = cancel(env, deferred.id)

    assert done.stdout.splitlines()[0] == (
        f"Cancelled {deferred.id} (tests.tasks.append_line): it is READY; it will never run"
    )
    wait_for(lambda: timezone.now() > run_after, what="the deferred tasks' time")
    env.run_batch()

    assert status_of(also_deferred) == "SUCCESSFUL"
    assert status_of(deferred) == "FAILED"
    assert errors_of(deferred) == [(CANCELLED, BEFORE_IT_RAN)]
    assert runs_of(log) == ["kept"]


def test_a_ready_task_cancelled_while_a_worker_holds_it_queued_never_runs(env: Env) -> None:
    blocking = Blocking(env)
    busy = blocking.enqueue("busy")
    worker = env.start_worker("--processes", "1")
    blocking.wait_running(busy)
    log = env.tmp_path / "ran.txt"
    # The only process is busy: the worker reads these in and holds them in its ready set.
    queued = [tasks.append_line.enqueue(str(log), name) for name in ("first", "second")]
    wait_for(
        lambda: all(spare_of(env, result.id).exists() for result in queued),
        what="the worker to queue them",
    )

    cancel(env, queued[0].id)
    blocking.release.touch()

    wait_for(lambda: status_of(queued[1]) == "SUCCESSFUL", what="the other task to run")
    assert status_of(queued[0]) == "FAILED"
    assert errors_of(queued[0]) == [(CANCELLED, BEFORE_IT_RAN)]
    assert runs_of(log) == ["second"]
    assert worker.stop() == 0


# -- RUNNING -------------------------------------------------------------------------------


def test_a_cancelled_running_task_is_stopped_and_the_other_process_goes_on(env: Env) -> None:
    signal_log = env.tmp_path / "signals.log"
    env.variables[SIGNAL_LOG_VARIABLE] = str(signal_log)
    blocking = Blocking(env)
    doomed, other = blocking.enqueue("doomed"), blocking.enqueue("other")
    worker = env.start_worker("--processes", "2", "--worker-id", "w1")
    blocking.wait_running(doomed, other)
    [doomed_pid], [other_pid] = blocking.runs(doomed), blocking.runs(other)

    done = cancel(env, doomed.id)

    assert done.stdout.splitlines() == [
        f"Cancelled {doomed.id} (tests.tasks.log_pid_then_block): it is RUNNING on worker "
        "w1; its worker process is being stopped",
        "1 task(s) cancelled; 0 refused",
    ]
    wait_for(lambda: status_of(doomed) == "FAILED", timeout=10, what="the cancelled task to end")
    assert worker_log(worker, "did not stop on SIGTERM") == []  # SIGTERM was enough
    assert errors_of(doomed) == [
        (
            CANCELLED,
            f"{CANCELLED}: The task was cancelled while it ran; its worker process (pid "
            f"{doomed_pid}) was stopped\n",
        )
    ]
    assert doomed.worker_ids == ["w1"]
    wait_for(lambda: not is_alive(doomed_pid), what="the stopped process to go")
    # The other task's process was left alone: it finishes its task.
    assert status_of(other) == "RUNNING"
    assert is_alive(other_pid)
    blocking.release.touch()
    wait_for(lambda: status_of(other) == "SUCCESSFUL", what="the other task to finish")
    assert other.return_value == other_pid
    assert blocking.runs(doomed) == [doomed_pid]
    assert worker_log(worker, "replacing the process pool") == []
    assert worker.stop() == 0
    assert lines_of(signal_log).count(f"finished {doomed.id} FAILED") == 1
    # Honoured, its request is gone.
    assert list((env.journal / "segments").glob("*.cancel")) == []


def test_a_running_task_that_ignores_sigterm_is_killed_after_the_grace_period(
    env: Env,
) -> None:
    blocking = Blocking(env)
    stubborn = blocking.enqueue("stubborn", ignore_sigterm=True)
    worker = env.start_worker("--processes", "1")
    blocking.wait_running(stubborn)
    [pid] = blocking.runs(stubborn)

    cancel(env, stubborn.id)

    wait_for(lambda: status_of(stubborn) == "FAILED", timeout=15, what="the task to be killed")
    assert errors_of(stubborn) == [
        (
            CANCELLED,
            f"{CANCELLED}: The task was cancelled while it ran; its worker process (pid "
            f"{pid}) was stopped\n",
        )
    ]
    assert len(worker_log(worker, f"did not stop on SIGTERM; killing pid={pid}")) == 1
    assert worker.stop() == 0


def test_a_running_task_whose_supervisor_died_is_failed_by_the_next_one_not_run_again(
    env: Env,
) -> None:
    blocking = Blocking(env)
    doomed = blocking.enqueue("doomed")
    worker = env.start_worker("--processes", "1", "--worker-id", "w1")
    blocking.wait_running(doomed)
    [pid] = blocking.runs(doomed)
    worker.send(signal.SIGKILL)
    worker.wait()
    wait_for(lambda: not is_alive(pid), what="the task's process to die with its supervisor")

    done = cancel(env, doomed.id)
    blocking.release.touch()  # a run now would finish
    env.run_batch("--worker-id", "w2")

    assert done.stdout.splitlines()[0] == (
        f"Cancelled {doomed.id} (tests.tasks.log_pid_then_block): it is RUNNING on worker "
        "w1; its worker process is being stopped"
    )
    assert status_of(doomed) == "FAILED"
    assert errors_of(doomed) == [(CANCELLED, UNSUPERVISED)]
    assert doomed.worker_ids == ["w1"]
    assert blocking.runs(doomed) == [pid]


# -- refusals, dry runs, selections ----------------------------------------------------------


def test_a_finished_task_is_refused_with_a_message_and_exit_code_1(env: Env) -> None:
    finished = tasks.add.enqueue(1, 2)
    env.run_batch()
    before = journal_files(env)

    done = cancel(env, finished.id, "0123456789abcdef-0", expect_code=1)

    assert done.stdout.splitlines() == ["0 task(s) cancelled; 2 refused"]
    assert done.stderr.splitlines() == [
        f"Refused {finished.id}: it is SUCCESSFUL; only READY and RUNNING tasks can be cancelled",
        "Refused 0123456789abcdef-0: there is no task of this id in the journal",
    ]
    assert journal_files(env) == before
    assert status_of(finished) == "SUCCESSFUL"


def test_dry_run_lists_what_would_be_cancelled_and_changes_nothing(env: Env) -> None:
    blocking = Blocking(env)
    running = blocking.enqueue("running")
    worker = env.start_worker("--processes", "1", "--worker-id", "w1")
    blocking.wait_running(running)
    ready = tasks.add.enqueue(1, 2)
    wait_for(lambda: spare_of(env, ready.id).exists(), what="the worker to queue it")
    before = {
        path: content for path, content in journal_files(env).items() if "workers/" not in path
    }

    done = cancel(env, "--dry-run", ready.id, running.id)

    assert done.stdout.splitlines() == [
        f"Would cancel {ready.id} (tests.tasks.add): it is READY; it would never run",
        f"Would cancel {running.id} (tests.tasks.log_pid_then_block): it is RUNNING on "
        "worker w1; its worker process would be stopped",
        "2 task(s) would be cancelled; 0 refused",
    ]
    after = {
        path: content for path, content in journal_files(env).items() if "workers/" not in path
    }
    assert after == before  # heartbeats aside: the worker beats meanwhile
    blocking.release.touch()
    wait_for(lambda: status_of(ready) == "SUCCESSFUL", what="the READY task to run")
    wait_for(lambda: status_of(running) == "SUCCESSFUL", what="the RUNNING task to finish")
    assert worker.stop() == 0


def test_queue_name_and_task_cancel_every_unfinished_task_they_select(env: Env) -> None:
    log = env.tmp_path / "ran.txt"
    finished = tasks.append_line.using(queue_name="high").enqueue(str(log), "finished")
    env.run_batch("--queue-name", "high")
    high = tasks.append_line.using(queue_name="high").enqueue(str(log), "high")
    high_add = tasks.add.using(queue_name="high").enqueue(1, 2)
    low = tasks.append_line.using(queue_name="low").enqueue(str(log), "low")
    default = tasks.append_line.enqueue(str(log), "default")

    done = cancel(env, "--queue-name", "high,low", "--task", "tests.tasks.append_line")

    assert sorted(done.stdout.splitlines()) == sorted(
        [
            f"Cancelled {result.id} (tests.tasks.append_line): it is READY; it will never run"
            for result in (high, low)
        ]
        + ["2 task(s) cancelled; 0 refused"]
    )
    statuses = [status_of(result) for result in (finished, high, high_add, low, default)]
    assert statuses == ["SUCCESSFUL", "FAILED", "READY", "FAILED", "READY"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "Give the ids of READY or RUNNING tasks, or --queue-name (not both)"),
        (
            ("0123456789abcdef-0", "--queue-name", "*"),
            "Give the ids of READY or RUNNING tasks, or --queue-name (not both)",
        ),
        (("0123456789abcdef-0", "--task", "x.y"), "--task goes with --queue-name"),
    ],
)
def test_wrong_arguments_are_refused_with_a_message(
    env: Env, args: tuple[str, ...], message: str
) -> None:
    done = cancel(env, *args, expect_code=1)

    assert done.stderr.strip() == f"CommandError: {message}"


# -- backend.cancel --------------------------------------------------------------------------


def test_backend_cancel_returns_the_result_after_the_cancel_and_refuses_finished_tasks(
    env: Env,
) -> None:
    backend = compat.task_backends["default"]
    finished = tasks.add.enqueue(2, 3)
    env.run_batch()
    ready = tasks.add.enqueue(5, 6)

    cancelled = backend.cancel(ready.id)  # type: ignore[attr-defined]

    assert (cancelled.id, str(cancelled.status)) == (ready.id, "FAILED")
    assert errors_of(cancelled) == [(CANCELLED, BEFORE_IT_RAN)]
    with pytest.raises(CancelRefused) as refused:
        backend.cancel(finished.id)  # type: ignore[attr-defined]
    assert str(refused.value) == (
        f"Task {finished.id} was not cancelled: it is SUCCESSFUL; only READY and RUNNING "
        "tasks can be cancelled"
    )
    assert (refused.value.id, refused.value.status) == (finished.id, "SUCCESSFUL")
    with pytest.raises(compat.TaskResultDoesNotExist):
        backend.cancel("0123456789abcdef-0")  # type: ignore[attr-defined]
    with pytest.raises(compat.TaskResultDoesNotExist):
        backend.cancel("../../etc/passwd")  # type: ignore[attr-defined]


def test_acancel_is_the_async_twin_of_cancel(env: Env) -> None:
    backend = compat.task_backends["default"]
    ready = tasks.add.enqueue(1, 2)

    cancelled = asyncio.run(backend.acancel(ready.id))  # type: ignore[attr-defined]

    assert str(cancelled.status) == "FAILED"
    assert str(refreshed(ready).status) == "FAILED"


# -- crashes half-way ------------------------------------------------------------------------


def set_crash(env: Env, point: str, *, call: int = 1, status: str | None = None) -> None:
    env.variables[CRASH_AT_VARIABLE] = point
    env.variables[CRASH_AT_CALL_VARIABLE] = str(call)
    if status is not None:
        env.variables[CRASH_STATUS_VARIABLE] = status


def clear_crash(env: Env) -> None:
    for name in (CRASH_AT_VARIABLE, CRASH_AT_CALL_VARIABLE, CRASH_STATUS_VARIABLE):
        env.variables.pop(name, None)


def cancel_killed_at(env: Env, point: str, record_id: str) -> None:
    """Run ``procpool_cancel ID``, killed (SIGKILL) at ``Journal.<point>``."""
    set_crash(env, point)
    try:
        done = env.manage("procpool_cancel", record_id, module="tests.crash_at", expect_code=-9)
    finally:
        clear_crash(env)
    assert done.stdout == "", done.stderr


@pytest.mark.parametrize(
    ("point", "cancelled"),
    [("request_cancel", False), ("after:request_cancel", True)],
)
def test_a_cancel_of_a_running_task_killed_half_way_leaves_it_cancelled_or_untouched(
    env: Env, point: str, cancelled: bool
) -> None:
    blocking = Blocking(env)
    task = blocking.enqueue("task")
    worker = env.start_worker("--processes", "1")
    blocking.wait_running(task)

    cancel_killed_at(env, point, task.id)

    if cancelled:
        wait_for(lambda: status_of(task) == "FAILED", timeout=10, what="the cancel to stop it")
        assert errors_of(task)[-1][0] == CANCELLED
    else:
        assert status_of(task) == "RUNNING"
        blocking.release.touch()
        wait_for(lambda: status_of(task) == "SUCCESSFUL", what="the task to finish")
    assert worker.stop() == 0
    assert len(blocking.runs(task)) == 1


@pytest.mark.parametrize(
    ("point", "cancelled"),
    [("write_state_durably", False), ("after:write_state_durably", True)],
)
def test_a_cancel_of_a_ready_task_killed_half_way_leaves_it_cancelled_or_untouched(
    env: Env, point: str, cancelled: bool
) -> None:
    log = env.tmp_path / "ran.txt"
    task = tasks.append_line.enqueue(str(log), "task")

    cancel_killed_at(env, point, task.id)
    env.run_batch()

    if cancelled:
        assert status_of(task) == "FAILED"
        assert errors_of(task) == [(CANCELLED, BEFORE_IT_RAN)]
        assert runs_of(log) == []
    else:
        assert status_of(task) == "SUCCESSFUL"
        assert runs_of(log) == ["task"]


def stopped_message(pid: int) -> str:
    return (
        f"{CANCELLED}: The task was cancelled while it ran; its worker process (pid {pid}) "
        "was stopped\n"
    )


@pytest.mark.parametrize(
    ("point", "status", "stopped_by_first"),
    [
        ("has_cancel_request", None, False),  # before it stops the process
        ("write_state_line", "FAILED", True),  # FAILED in its WAL, not in the result file
        ("after:write_state_line", "FAILED", True),  # FAILED in both; the request is left
        ("after:remove_cancel_request", None, True),  # all done
    ],
)
def test_a_supervisor_killed_while_it_cancels_a_task_leaves_it_cancelled_never_run_twice(
    env: Env, point: str, status: str | None, stopped_by_first: bool
) -> None:
    blocking = Blocking(env)
    task = blocking.enqueue("task")
    set_crash(env, point, status=status)
    try:
        worker = env.start_worker("--processes", "1", "--worker-id", "w1", module="tests.crash_at")
    finally:
        clear_crash(env)
    blocking.wait_running(task)
    [pid] = blocking.runs(task)

    cancel(env, task.id)
    assert worker.wait() == -signal.SIGKILL
    wait_for(lambda: not is_alive(pid), what="the task's process to die with its supervisor")
    blocking.release.touch()  # a run now would finish
    env.run_batch("--worker-id", "w2")

    assert status_of(task) == "FAILED"
    message = stopped_message(pid) if stopped_by_first else UNSUPERVISED
    assert errors_of(task) == [(CANCELLED, message)]
    assert task.worker_ids == ["w1"]
    assert blocking.runs(task) == [pid]
