"""``procpool_requeue``: FAILED tasks run again as a new attempt of the same id.

Tasks fail for real in ``procpool_worker`` subprocesses (``append_line_and_fail_until``
fails until a file exists, and says in a file how often it ran); the command runs as an
operator runs it, beside running workers, and is killed half-way by ``tests.crash_at``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from procpool_tasks import compat, journal
from tests import tasks
from tests.conftest import REPO_ROOT, Env, wait_for
from tests.crash_at import CRASH_AT_VARIABLE
from tests.support import status_of


def runs_of(path: Path) -> Counter[str]:
    """How often each line was appended: how often each task ran."""
    return Counter(path.read_text().splitlines()) if path.exists() else Counter()


def requeue(env: Env, *args: str, expect_code: int = 0) -> subprocess.CompletedProcess[str]:
    return env.manage("procpool_requeue", *args, expect_code=expect_code)


class Flaky:
    """Tasks that fail until ``release`` exists, each appending its line to ``runs`` per run."""

    def __init__(self, env: Env) -> None:
        self.runs = env.tmp_path / "runs.txt"
        self.release = env.tmp_path / "release"

    def enqueue(self, line: str, **using: Any) -> Any:
        task = tasks.append_line_and_fail_until.using(**using)
        return task.enqueue(str(self.runs), line, str(self.release))

    def error_line(self) -> str:
        return f"FileNotFoundError: {self.release} does not exist yet"


def last_lines(result: Any) -> list[str]:
    """The last line of each error's traceback, oldest first."""
    return [error.traceback.strip().splitlines()[-1] for error in result.errors]


def journal_files(env: Env) -> dict[str, bytes]:
    """Every file in the journal, by path, with its bytes."""
    return {
        str(path.relative_to(env.journal)): path.read_bytes()
        for path in sorted(env.journal.rglob("*"))
        if path.is_file()
    }


# -- by id and by filter ---------------------------------------------------------------------


def test_requeued_task_runs_again_as_the_same_id_and_the_old_result_sees_its_new_outcome(
    env: Env,
) -> None:
    flaky = Flaky(env)
    result = flaky.enqueue("once")
    env.run_batch("--worker-id", "first")
    assert status_of(result) == "FAILED"
    flaky.release.touch()

    done = requeue(env, result.id)

    assert done.stdout.splitlines() == [
        f"Re-queued {result.id} (tests.tasks.append_line_and_fail_until) as attempt 2",
        "1 task(s) will run again; 0 refused",
    ]
    assert done.stderr == ""
    # READY again, as attempt 2 will be: the first attempt's error and worker stay.
    assert status_of(result) == "READY"
    assert (result.worker_ids, last_lines(result)) == (["first"], [flaky.error_line()])
    assert result.finished_at is None

    env.run_batch("--worker-id", "second")

    assert status_of(result) == "SUCCESSFUL"
    assert result.return_value == "once"
    assert result.worker_ids == ["first", "second"]
    assert last_lines(result) == [flaky.error_line()]
    assert result.errors[0].exception_class_path == "builtins.FileNotFoundError"
    assert result.finished_at is not None
    assert runs_of(flaky.runs) == {"once": 2}


def test_a_task_that_fails_again_keeps_every_attempts_error(env: Env) -> None:
    result = tasks.fail_with.enqueue("still broken")
    worker = env.start_worker("--worker-id", "serving")

    for attempts in (1, 2, 3):
        wait_for(
            lambda: status_of(result) == "FAILED" and len(result.worker_ids) == attempts,  # noqa: B023
            what=f"attempt {attempts} to fail",
        )
        if attempts < 3:
            requeue(env, result.id)

    assert result.worker_ids == ["serving"] * 3
    assert last_lines(result) == ["ValueError: still broken"] * 3
    assert worker.stop() == 0


def test_requeue_failed_with_queue_name_requeues_only_the_failures_of_those_queues(
    env: Env,
) -> None:
    flaky = Flaky(env)
    default = flaky.enqueue("default")
    high = flaky.enqueue("high", queue_name="high")
    low = flaky.enqueue("low", queue_name="low")
    succeeded = tasks.add.using(queue_name="low").enqueue(1, 2)
    worker = env.start_worker("--queue-name", "*")
    wait_for(
        lambda: (
            [status_of(result) for result in (default, high, low, succeeded)]
            == ["FAILED", "FAILED", "FAILED", "SUCCESSFUL"]
        ),
        what="the tasks to end",
    )
    flaky.release.touch()

    done = requeue(env, "--failed", "--queue-name", "high,low")

    assert sorted(done.stdout.splitlines()) == sorted(
        [
            f"Re-queued {high.id} (tests.tasks.append_line_and_fail_until) as attempt 2",
            f"Re-queued {low.id} (tests.tasks.append_line_and_fail_until) as attempt 2",
            "2 task(s) will run again; 0 refused",
        ]
    )
    wait_for(
        lambda: [status_of(result) for result in (high, low)] == ["SUCCESSFUL", "SUCCESSFUL"],
        what="the re-queued tasks to run",
    )
    assert worker.stop() == 0
    assert [status_of(default), status_of(succeeded)] == ["FAILED", "SUCCESSFUL"]
    assert runs_of(flaky.runs) == {"default": 1, "high": 2, "low": 2}


def test_requeue_failed_with_task_requeues_only_the_failures_of_that_task(env: Env) -> None:
    flaky = Flaky(env)
    first, second = flaky.enqueue("first"), flaky.enqueue("second", queue_name="low")
    other = tasks.fail_with.enqueue("not this one")
    worker = env.start_worker("--queue-name", "*")
    wait_for(
        lambda: all(status_of(result) == "FAILED" for result in (first, second, other)),
        what="the tasks to fail",
    )
    flaky.release.touch()

    done = requeue(env, "--failed", "--task", "tests.tasks.append_line_and_fail_until")

    assert done.stdout.splitlines()[-1] == "2 task(s) will run again; 0 refused"
    assert sorted(done.stdout.splitlines()[:-1]) == sorted(
        f"Re-queued {result.id} (tests.tasks.append_line_and_fail_until) as attempt 2"
        for result in (first, second)
    )
    wait_for(
        lambda: [status_of(result) for result in (first, second)] == ["SUCCESSFUL"] * 2,
        what="the re-queued tasks to run",
    )
    assert worker.stop() == 0
    assert (status_of(other), len(other.worker_ids)) == ("FAILED", 1)


def test_requeue_failed_with_nothing_failed_says_so(env: Env) -> None:
    tasks.add.enqueue(1, 2)

    done = requeue(env, "--failed")

    assert done.stdout == "0 task(s) will run again; 0 refused\n"


# -- dry runs --------------------------------------------------------------------------------


@pytest.mark.parametrize("by_filter", [False, True], ids=["by-id", "by-filter"])
def test_dry_run_lists_what_would_run_again_and_changes_no_file(env: Env, by_filter: bool) -> None:
    flaky = Flaky(env)
    results = [flaky.enqueue("a"), flaky.enqueue("b")]
    env.run_batch()
    before = journal_files(env)

    args = ["--failed"] if by_filter else [result.id for result in results]
    done = requeue(env, *args, "--dry-run")

    assert sorted(done.stdout.splitlines()) == sorted(
        [
            *(
                f"Would re-queue {result.id} (tests.tasks.append_line_and_fail_until) as attempt 2"
                for result in results
            ),
            "2 task(s) would run again; 0 refused",
        ]
    )
    assert journal_files(env) == before


# -- refusals --------------------------------------------------------------------------------


def test_requeue_refuses_ready_running_and_successful_tasks_and_requeues_the_failed_ones(
    env: Env,
) -> None:
    flaky = Flaky(env)
    failed = flaky.enqueue("failed")
    successful = tasks.add.enqueue(1, 2)
    release, marker = env.tmp_path / "let-go", env.tmp_path / "started"
    running = tasks.block_until.enqueue(str(release), str(marker))
    worker = env.start_worker("--worker-id", "holding", "--queue-name", "default")
    wait_for(marker.exists, what="block_until to start")  # RUNNING until `release` exists
    wait_for(
        lambda: [status_of(failed), status_of(successful)] == ["FAILED", "SUCCESSFUL"],
        what="the other tasks to end",
    )
    flaky.release.touch()
    ready = tasks.add.using(queue_name="low").enqueue(3, 4)  # no worker serves 'low'

    done = requeue(env, ready.id, running.id, successful.id, failed.id, "nosuch", expect_code=1)

    assert done.stdout.splitlines() == [
        f"Re-queued {failed.id} (tests.tasks.append_line_and_fail_until) as attempt 2",
        "1 task(s) will run again; 4 refused",
    ]
    assert done.stderr.splitlines() == [
        f"Refused {ready.id}: it is READY; only FAILED tasks can be re-queued",
        f"Refused {running.id}: it is RUNNING; only FAILED tasks can be re-queued",
        f"Refused {successful.id}: it is SUCCESSFUL; only FAILED tasks can be re-queued",
        "Refused nosuch: there is no task of this id in the journal",
    ]
    wait_for(lambda: status_of(failed) == "SUCCESSFUL", what="the re-queued task to run")
    release.touch()
    wait_for(lambda: status_of(running) == "SUCCESSFUL", what="block_until to finish")
    assert worker.stop() == 0
    assert [status_of(ready), status_of(successful)] == ["READY", "SUCCESSFUL"]
    assert (running.worker_ids, successful.worker_ids) == (["holding"], ["holding"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "CommandError: Give the ids of FAILED tasks, or --failed (not both)"),
        (
            ("--failed", "abc-1"),
            "CommandError: Give the ids of FAILED tasks, or --failed (not both)",
        ),
        (
            ("abc-1", "--task", "tests.tasks.add"),
            "CommandError: --queue-name and --task go with --failed",
        ),
        (
            ("--failed", "--queue-name", "nosuch"),
            "CommandError: --queue-name: nosuch not in the QUEUES of backend 'default' "
            "(default, high, low)",
        ),
    ],
    ids=["nothing", "ids-and-failed", "ids-and-task", "unknown-queue"],
)
def test_requeue_without_a_valid_selection_is_refused_clearly(
    env: Env, args: tuple[str, ...], message: str
) -> None:
    tasks.add.enqueue(1, 2)

    done = requeue(env, *args, expect_code=1)

    assert done.stderr.splitlines() == [message]


# -- beside a running worker -----------------------------------------------------------------


def test_a_running_worker_runs_a_requeued_task_without_a_restart(env: Env) -> None:
    flaky = Flaky(env)
    result = flaky.enqueue("again")
    worker = env.start_worker("--worker-id", "serving")
    wait_for(lambda: status_of(result) == "FAILED", what="the task to fail")
    flaky.release.touch()

    requeue(env, result.id)

    wait_for(lambda: status_of(result) == "SUCCESSFUL", what="the worker to run it again")
    assert result.worker_ids == ["serving", "serving"]
    assert runs_of(flaky.runs) == {"again": 2}
    assert worker.stop() == 0


def test_concurrent_requeues_beside_a_running_worker_run_each_task_exactly_once_more(
    env: Env,
) -> None:
    flaky = Flaky(env)
    results = [flaky.enqueue(f"task-{n}") for n in range(40)]
    worker = env.start_worker("--processes", "4")
    wait_for(
        lambda: all(status_of(result) == "FAILED" for result in results),
        what="every task to fail once",
    )
    flaky.release.touch()

    # Two operators re-queue the same 40 ids at once, while the worker runs what they free.
    commands = [
        subprocess.Popen(
            [sys.executable, "-m", "django", "procpool_requeue", *(r.id for r in results)],
            env=env.variables,
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [command.communicate(timeout=60) for command in commands]

    requeued = Counter(
        line.split()[1]
        for stdout, _ in outputs
        for line in stdout.splitlines()
        if "Re-queued" in line
    )
    refused = Counter(
        line.split()[1].rstrip(":") for _, stderr in outputs for line in stderr.splitlines()
    )
    # Each id was re-queued by one of them, and refused by the other.
    assert requeued == {result.id: 1 for result in results}, outputs
    assert refused == {result.id: 1 for result in results}, outputs
    wait_for(
        lambda: all(status_of(result) == "SUCCESSFUL" for result in results),
        what="every re-queued task to run",
    )
    assert runs_of(flaky.runs) == {f"task-{n}": 2 for n in range(40)}
    assert all(len(result.worker_ids) == 2 for result in results)
    assert worker.stop() == 0


# -- a crash half-way ------------------------------------------------------------------------


def requeue_killed_at(env: Env, method: str, record_id: str) -> None:
    """Run ``procpool_requeue ID``, killed (SIGKILL) as it calls ``Journal.<method>``."""
    env.variables[CRASH_AT_VARIABLE] = method
    try:
        done = env.manage("procpool_requeue", record_id, module="tests.crash_at", expect_code=-9)
    finally:
        del env.variables[CRASH_AT_VARIABLE]
    assert done.stdout == "", done.stderr


def marker_segments(env: Env, record_id: str) -> list[Path]:
    """The segments that hold a re-queue marker for this task."""
    return [
        path
        for path in sorted((env.journal / "segments").glob("*.log"))
        if f'"requeue":"{record_id}"'.encode() in path.read_bytes()
    ]


def test_a_requeue_killed_after_its_marker_is_done_wholly_by_the_next_worker(env: Env) -> None:
    flaky = Flaky(env)
    result = flaky.enqueue("crash")
    env.run_batch("--worker-id", "first")
    flaky.release.touch()

    # The marker is on disk; the task's result file still says FAILED.
    requeue_killed_at(env, "write_state", result.id)
    assert len(marker_segments(env, result.id)) == 1
    state = journal.Journal(env.journal).read_state(result.id)
    assert state is not None
    assert state.status == "FAILED"

    env.run_batch("--worker-id", "second")

    assert status_of(result) == "SUCCESSFUL"
    assert result.worker_ids == ["first", "second"]
    assert last_lines(result) == [flaky.error_line()]
    assert runs_of(flaky.runs) == {"crash": 2}


def test_a_requeue_killed_before_its_marker_leaves_the_task_failed_and_requeueable(
    env: Env,
) -> None:
    flaky = Flaky(env)
    result = flaky.enqueue("crash")
    env.run_batch("--worker-id", "first")
    flaky.release.touch()

    requeue_killed_at(env, "append_requeue", result.id)
    assert marker_segments(env, result.id) == []
    env.run_batch("--worker-id", "second")

    assert status_of(result) == "FAILED"
    assert result.worker_ids == ["first"]
    assert runs_of(flaky.runs) == {"crash": 1}
    done = requeue(env, result.id)
    assert done.stdout.splitlines()[0] == (
        f"Re-queued {result.id} (tests.tasks.append_line_and_fail_until) as attempt 2"
    )
    env.run_batch("--worker-id", "third")
    assert status_of(result) == "SUCCESSFUL"
    assert result.worker_ids == ["first", "third"]
    assert runs_of(flaky.runs) == {"crash": 2}


ENQUEUE_FLAKY = """
import sys
from tests import tasks
print(tasks.append_line_and_fail_until.enqueue(*sys.argv[1:]).id)
"""

MARKERS_LAST = "f" * 16


def move_marker_after_every_segment(env: Env, record_id: str) -> None:
    """Give the segment holding the re-queue marker (the killed command's own) a name that
    sorts after every other: readers go through segments by name, so they now read the
    task's segment before the marker, as they do after half of all such crashes."""
    [marker_segment] = marker_segments(env, record_id)
    marker_segment.rename(marker_segment.with_name(f"{MARKERS_LAST}.log"))


def status_or_gone(record_id: str) -> str:
    try:
        return str(tasks.append_line_and_fail_until.get_result(record_id).status)
    except compat.TaskResultDoesNotExist:
        return "gone"


def counts_of(env: Env) -> dict[str, int]:
    totals: dict[str, int] = json.loads(env.manage("procpool_status", "--json").stdout)["totals"]
    return {status: totals[status] for status in ("READY", "SUCCESSFUL", "FAILED")}


# After a crash between a re-queue's marker and its result file, whoever reads the marker
# publishes its READY state (journal.publish_requeue) and drops the summary of the task's
# segment. A survey goes through segments by name: when the task's segment comes before the
# marker's, as it does after about half of all such crashes, it has summarized the task as
# FAILED before it publishes the marker, and must look at that segment again.


def test_status_counts_a_task_requeued_by_a_killed_requeue_as_it_is(env: Env) -> None:
    flaky = Flaky(env)
    record_id = flaky.enqueue("x").id
    env.run_batch()
    flaky.release.touch()
    requeue_killed_at(env, "write_state", record_id)
    move_marker_after_every_segment(env, record_id)

    assert counts_of(env) == {"READY": 1, "SUCCESSFUL": 0, "FAILED": 0}  # FAILED: 1
    env.run_batch()
    assert status_or_gone(record_id) == "SUCCESSFUL"
    assert counts_of(env) == {"READY": 0, "SUCCESSFUL": 1, "FAILED": 0}  # FAILED: 1, for good


def test_prune_never_deletes_a_task_requeued_by_a_killed_requeue(env: Env) -> None:
    flaky = Flaky(env)
    # Enqueued by a process that exits: its segment is sealed, as prune needs.
    record_id = env.run_python(ENQUEUE_FLAKY, str(flaky.runs), "x", str(flaky.release)).strip()
    env.run_batch()
    flaky.release.touch()
    requeue_killed_at(env, "write_state", record_id)
    move_marker_after_every_segment(env, record_id)
    env.manage("procpool_status")  # a look: keeps the summaries it brings up to date
    assert status_or_gone(record_id) == "READY"
    # Its segment quiet for longer than QUIET_S, as an hour later (see test_prune).
    segment = journal.parse_id(record_id)[0]
    past = time.time() - 3600
    os.utime(env.journal / "segments" / f"{segment}.log", (past, past))

    # Its failure ended seconds ago; a READY task is never pruned, however old.
    env.manage("procpool_prune", "--older-than", "0.01s")

    assert status_or_gone(record_id) == "READY"  # "gone": its segment was deleted
    env.run_batch()
    assert runs_of(flaky.runs) == {"x": 2}
