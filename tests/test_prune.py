"""Bounded growth: finished segments are marked done and pruned, by command or retention.

Segments are written by real enqueuing subprocesses (which seal them by exiting) and
run by real workers. A segment may only be pruned once it has been quiet for
``journal.QUIET_S``; the tests set its modification time back rather than wait a minute.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from procpool_tasks import compat, journal
from tests import tasks
from tests.conftest import REPO_ROOT, Env, wait_for
from tests.support import journal_files, set_options

ENQUEUE = """
import sys
from tests import tasks
for n in range(int(sys.argv[1])):
    print(tasks.add.enqueue(n, 1).id)
"""


def enqueue_in_a_process(env: Env, count: int) -> list[str]:
    """Enqueue from a process that then exits, sealing its segment."""
    return env.run_python(ENQUEUE, str(count)).split()


def segment_of(result_id: str) -> str:
    return result_id.split("-")[0]


def age(env: Env, *result_ids: str) -> None:
    """Make the segments of these tasks look untouched for longer than QUIET_S."""
    past = time.time() - journal.QUIET_S - 60
    for segment in {segment_of(result_id) for result_id in result_ids}:
        os.utime(env.journal / "segments" / f"{segment}.log", (past, past))


def prune(env: Env, *args: str, expect_code: int = 0) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "django", "procpool_prune", *args],
        env=env.variables,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == expect_code, done.stdout + done.stderr
    return done


def exists(result_id: str) -> bool:
    try:
        tasks.add.get_backend().get_result(result_id)
    except compat.TaskResultDoesNotExist:
        return False
    return True


def test_prune_deletes_segments_whose_tasks_all_finished_and_keeps_the_rest(env: Env) -> None:
    finished = enqueue_in_a_process(env, 3)
    env.run_batch("--processes", "1")
    waiting = enqueue_in_a_process(env, 2)  # READY: never pruned, however old
    age(env, *finished, *waiting)

    done = prune(env, "--older-than", "0.01s")

    assert "Deleted 3 task(s)" in done.stdout
    assert [exists(result_id) for result_id in finished] == [False] * 3
    assert not (env.journal / "segments" / f"{segment_of(finished[0])}.log").exists()
    assert not (env.journal / "results" / segment_of(finished[0])).exists()
    assert [str(tasks.add.get_result(result_id).status) for result_id in waiting] == [
        "READY",
        "READY",
    ]
    env.run_batch("--processes", "1")  # what was kept still runs
    assert [tasks.add.get_result(result_id).return_value for result_id in waiting] == [1, 2]


def test_prune_keeps_recent_tasks_marks_their_segment_done_and_supervisors_skip_it(
    env: Env,
) -> None:
    finished = enqueue_in_a_process(env, 2)
    env.run_batch("--processes", "1", "--worker-id", "first")
    age(env, *finished)

    done = prune(env, "--older-than", "1d")

    assert "Deleted 0 task(s)" in done.stdout
    segment = env.journal / "segments" / f"{segment_of(finished[0])}.log"
    assert segment.with_suffix(".done").exists()
    with segment.open("ab") as damaged:  # a supervisor that read it would quarantine this
        damaged.write(b"garbage\n")
    output = env.run_batch("--processes", "1", "--worker-id", "second")
    assert "Quarantined" not in output
    assert list((env.journal / "quarantine").iterdir()) == []
    results = [tasks.add.get_result(result_id) for result_id in finished]
    assert [(r.return_value, r.worker_ids) for r in results] == [(1, ["first"]), (2, ["first"])]


def test_a_done_segment_is_pruned_once_its_last_task_is_older_than_the_cutoff(
    env: Env,
) -> None:
    finished = enqueue_in_a_process(env, 2)
    env.run_batch("--processes", "1")
    age(env, *finished)
    assert "Deleted 0 task(s)" in prune(env, "--older-than", "1d").stdout
    results = [tasks.add.get_result(result_id) for result_id in finished]
    last_finished = max(r.finished_at.timestamp() for r in results if r.finished_at)
    wait_for(lambda: time.time() - last_finished > 0.5, what="half a second")

    assert "Deleted 0 task(s)" in prune(env, "--older-than", "1h").stdout
    assert all(exists(result_id) for result_id in finished)
    assert "Deleted 2 task(s)" in prune(env, "--older-than", "0.5s").stdout
    assert not any(exists(result_id) for result_id in finished)


def test_prune_leaves_segments_that_are_not_quiet_or_not_sealed(env: Env) -> None:
    recent = enqueue_in_a_process(env, 1)  # sealed, but written a moment ago
    open_segment = tasks.add.enqueue(5, 5)  # this process still holds its segment
    env.run_batch("--processes", "1")
    age(env, open_segment.id)

    done = prune(env, "--older-than", "0.01s")

    assert "Deleted 0 task(s)" in done.stdout
    assert exists(recent[0])
    assert exists(open_segment.id)


def test_worker_prunes_by_the_retention_option(env: Env) -> None:
    finished = enqueue_in_a_process(env, 2)
    env.run_batch("--processes", "1")
    age(env, *finished)
    env.variables["PROCPOOL_TEST_OPTIONS"] = json.dumps({"retention": 0.01})

    worker = env.start_worker("--processes", "1")
    # The log line comes once the prune is done (the files go before it).
    wait_for(lambda: "Pruned 2 task(s)" in worker.output, what="the retention to prune")
    assert worker.stop() == 0

    assert not exists(finished[0])
    assert not exists(finished[1])


def test_prune_cleans_up_after_a_prune_that_crashed_half_way(env: Env) -> None:
    finished = enqueue_in_a_process(env, 1)
    env.run_batch("--processes", "1")
    segment = segment_of(finished[0])
    # A prune killed between deleting the segment and its results leaves this behind.
    (env.journal / "segments" / f"{segment}.log").unlink()

    prune(env, "--older-than", "1d")

    assert not (env.journal / "results" / segment).exists()
    assert not exists(finished[0])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "Give --older-than (e.g. 7d), or set OPTIONS['retention'] in seconds"),
        (("--older-than", "soon"), "'soon' is not a duration > 0"),
        (("--older-than", "0"), "'0' is not a duration > 0"),
    ],
)
def test_prune_without_a_valid_age_is_refused_clearly(
    env: Env, args: tuple[str, ...], message: str
) -> None:
    done = prune(env, *args, expect_code=1 if not args else 2)
    assert message in done.stderr


def test_retention_option_must_be_seconds(env: Env) -> None:
    env.variables["PROCPOOL_TEST_OPTIONS"] = json.dumps({"retention": "7 days"})
    done = prune(env, "--older-than", "1d", expect_code=1)
    assert (
        "['retention'] must be a number of seconds > 0, a dict such as "
        "{'SUCCESSFUL': 86400, 'FAILED': 2592000}, or None; not '7 days'"
    ) in (done.stdout + done.stderr)


# -- per status, dry runs and re-queues (#11) ----------------------------------------------------

ENQUEUE_MIXED = """
import sys
from tests import tasks
print(tasks.add.enqueue(1, 1).id, tasks.add.enqueue(2, 1).id)
print(tasks.fail_times.enqueue(sys.argv[1], 1, "ValueError").id)
"""


def enqueue_mixed(env: Env) -> tuple[list[str], str]:
    """In one sealed segment: two tasks that succeed, one whose first attempt fails."""
    successes, failure = env.run_python(ENQUEUE_MIXED, str(env.tmp_path / "attempts.log"))[
        :-1
    ].split("\n")
    return successes.split(), failure


def run_mixed(env: Env) -> tuple[list[str], str]:
    """The mixed segment, run to its outcomes and aged: ready to prune."""
    successes, failure = enqueue_mixed(env)
    env.run_batch("--processes", "1")
    assert [str(tasks.add.get_result(i).status) for i in successes] == ["SUCCESSFUL"] * 2
    assert str(tasks.fail_times.get_result(failure).status) == "FAILED"
    age(env, *successes, failure)
    return successes, failure


def why_missing(result_id: str) -> str:
    """What get_result says of a task it does not find; fails if it finds it."""
    with pytest.raises(compat.TaskResultDoesNotExist) as missing:
        tasks.add.get_backend().get_result(result_id)
    return str(missing.value)


def status_json(env: Env) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "django", "procpool_status", "--json"],
        env=env.variables,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout


def test_prune_status_successful_deletes_the_successes_and_keeps_the_failures_beside_them(
    env: Env,
) -> None:
    successes, failure = run_mixed(env)

    done = prune(env, "--older-than", "0.01s", "--status", "SUCCESSFUL")

    assert done.stdout.strip() == (
        "Deleted 2 task(s) (2 SUCCESSFUL; SUCCESSFUL older than 0.01s); 0 segment(s) removed "
        "whole, 1 more segment(s) of finished tasks marked done"
    )
    assert [why_missing(i) for i in successes] == [f"{i}: pruned" for i in successes]
    kept = tasks.fail_times.get_result(failure)
    assert str(kept.status) == "FAILED"
    assert [error.exception_class_path for error in kept.errors] == ["builtins.ValueError"]
    assert (env.journal / "segments" / f"{segment_of(failure)}.log").exists()
    totals = json.loads(status_json(env))["totals"]
    assert (totals["SUCCESSFUL"], totals["FAILED"]) == (0, 1)

    done = prune(env, "--older-than", "0.01s", "--status", "FAILED")

    assert done.stdout.strip() == (
        "Deleted 1 task(s) (1 FAILED; FAILED older than 0.01s); 1 segment(s) removed whole, "
        "0 more segment(s) of finished tasks marked done"
    )
    assert not exists(failure)
    assert not (env.journal / "segments" / f"{segment_of(failure)}.log").exists()
    assert not (env.journal / "results" / segment_of(failure)).exists()


def test_prune_status_failed_deletes_the_failures_and_keeps_the_successes_beside_them(
    env: Env,
) -> None:
    successes, failure = run_mixed(env)

    done = prune(env, "--older-than", "0.01s", "--status", "failed")

    assert done.stdout.strip() == (
        "Deleted 1 task(s) (1 FAILED; FAILED older than 0.01s); 0 segment(s) removed whole, "
        "1 more segment(s) of finished tasks marked done"
    )
    assert why_missing(failure) == f"{failure}: pruned"
    assert [tasks.add.get_result(i).return_value for i in successes] == [2, 3]


@pytest.mark.parametrize(
    ("status", "report"),
    [
        (
            "SUCCESSFUL,FAILED",
            "Would delete 3 task(s) (1 FAILED, 2 SUCCESSFUL; FAILED older than 0.01s, "
            "SUCCESSFUL older than 0.01s); 1 segment(s) would go whole, 1 more segment(s) of "
            "finished tasks would be marked done",
        ),
        (
            "SUCCESSFUL",
            "Would delete 2 task(s) (2 SUCCESSFUL; SUCCESSFUL older than 0.01s); 0 segment(s) "
            "would go whole, 1 more segment(s) of finished tasks would be marked done",
        ),
    ],
)
def test_prune_dry_run_reports_what_would_go_and_changes_no_file(
    env: Env, status: str, report: str
) -> None:
    successes, failure = run_mixed(env)
    before = journal_files(env)

    done = prune(env, "--older-than", "0.01s", "--status", status, "--dry-run")

    assert done.stdout.strip() == report
    assert journal_files(env) == before
    assert all(exists(i) for i in [*successes, failure])


def test_worker_applies_a_per_status_retention_and_keeps_the_status_it_does_not_name(
    env: Env,
) -> None:
    successes, failure = run_mixed(env)
    env.variables["PROCPOOL_TEST_OPTIONS"] = json.dumps({"retention": {"SUCCESSFUL": 0.01}})

    worker = env.start_worker("--processes", "1")
    wait_for(lambda: "Pruned 2 task(s)" in worker.output, what="the retention to prune")
    assert worker.stop() == 0

    assert (
        "Pruned 2 task(s) past their retention (2 SUCCESSFUL); 0 segment(s) removed"
        in worker.output
    )
    assert [why_missing(i) for i in successes] == [f"{i}: pruned" for i in successes]
    assert str(tasks.fail_times.get_result(failure).status) == "FAILED"


@pytest.mark.parametrize("pruned", ["the successes", "the whole segment"])
def test_a_task_pruned_after_a_running_supervisor_queued_it_never_runs_again(
    env: Env, pruned: str
) -> None:
    """A supervisor that read tasks as READY, while another ran them and a prune deleted
    their results, takes a missing result file for a prune, not for a task never run
    (the race of a supervisor's start-up read against its own pruner, made wide)."""
    release, started = env.tmp_path / "release", env.tmp_path / "started"
    blocking = tasks.block_until.using(priority=10).enqueue(str(release), str(started))
    successes, failure = enqueue_mixed(env)
    holder = env.start_worker("--processes", "1", "--worker-id", "holder")
    wait_for(started.exists, what="the holder to run its blocking task")  # it read them all

    env.run_batch("--processes", "1", "--worker-id", "other")  # runs the mixed segment
    age(env, *successes, failure)
    if pruned == "the successes":
        prune(env, "--older-than", "0.01s", "--status", "SUCCESSFUL")
    else:
        prune(env, "--older-than", "0.01s")
    last = tasks.add.using(priority=-10).enqueue(3, 1)  # runs after what the holder queued
    release.touch()
    wait_for(lambda: str(tasks.add.get_result(last.id).status) == "SUCCESSFUL", what="last")
    assert holder.stop() == 0

    assert [exists(i) for i in successes] == [False, False]
    assert [f"id={i}" in holder.output for i in [*successes, failure]] == [False] * 3
    assert str(tasks.block_until.get_result(blocking.id).status) == "SUCCESSFUL"


def test_an_empty_result_file_made_after_a_prune_neither_runs_the_task_nor_brings_it_back(
    env: Env,
) -> None:
    """A supervisor makes the result files of the tasks it queued ahead of their claims,
    empty (``prepare_result_file``); one it makes late, after another supervisor ran the
    task and a prune deleted it, reads as pruned: its segment is done."""
    release, started = env.tmp_path / "release", env.tmp_path / "started"
    tasks.block_until.using(priority=10).enqueue(str(release), str(started))
    successes, failure = enqueue_mixed(env)
    holder = env.start_worker("--processes", "1", "--worker-id", "holder")
    wait_for(started.exists, what="the holder to run its blocking task")  # it read them all

    env.run_batch("--processes", "1", "--worker-id", "other")
    age(env, *successes, failure)
    prune(env, "--older-than", "0.01s", "--status", "SUCCESSFUL")
    for result_id in successes:  # as the holder's thread would make them, late
        segment, offset = journal.parse_id(result_id)
        (env.journal / "results" / segment / f"{offset:x}.json").touch(mode=0o600)
    last = tasks.add.using(priority=-10).enqueue(3, 1)  # runs after what the holder queued
    release.touch()
    wait_for(lambda: str(tasks.add.get_result(last.id).status) == "SUCCESSFUL", what="last")
    assert holder.stop() == 0

    assert [f"id={i}" in holder.output for i in successes] == [False, False]
    assert [why_missing(i) for i in successes] == [f"{i}: pruned" for i in successes]
    assert str(tasks.fail_times.get_result(failure).status) == "FAILED"


ENQUEUE_FLAKY_AND_FAILING = """
import sys
from tests import tasks
print(tasks.fail_times.enqueue(sys.argv[1], 1, "ValueError").id)
print(tasks.fail_with.enqueue("kept").id)
"""


def enqueue_flaky_and_failing(env: Env) -> tuple[str, str]:
    """In one sealed segment: a task whose first attempt fails, one that always fails."""
    flaky, kept = env.run_python(ENQUEUE_FLAKY_AND_FAILING, str(env.tmp_path / "runs")).split()
    return flaky, kept


def test_a_requeue_marker_read_after_its_task_was_pruned_does_not_run_it_again(
    env: Env,
) -> None:
    """The marker stays in the re-queuing process's segment, which is not done yet; the
    task's own segment is done and kept for its other, FAILED, task."""
    flaky, kept = enqueue_flaky_and_failing(env)
    env.run_batch("--processes", "1")
    requeue(env, flaky)
    env.run_batch("--processes", "1")
    assert tasks.fail_times.get_result(flaky).return_value == 2
    age(env, flaky)
    prune(env, "--older-than", "0.01s", "--status", "SUCCESSFUL")
    assert why_missing(flaky) == f"{flaky}: pruned"

    output = env.run_batch("--processes", "1", "--worker-id", "after-prune")

    assert f"id={flaky}" not in output
    assert why_missing(flaky) == f"{flaky}: pruned"
    assert str(tasks.fail_with.get_result(kept).status) == "FAILED"


def test_a_dead_supervisors_result_log_does_not_bring_back_a_task_pruned_since(
    env: Env,
) -> None:
    """Supervisor a logs a retry (READY) and is killed; b, running since before, runs the
    retry; the task is pruned; c, starting, replays a's log.

    Each supervisor holds its one process with a blocking task while it must not run the
    retry (a) or until it has surely seen a alive (b).
    """
    retry = {"attempts": 2, "delay": 3, "jitter": False}
    env.variables["PROCPOOL_TEST_OPTIONS"] = json.dumps(
        {"task_options": {"tests.tasks.fail_times": {"retry": retry}}}
    )
    flaky, kept = enqueue_flaky_and_failing(env)
    release = env.tmp_path / "release"
    holds_a, holds_b = env.tmp_path / "a-holds", env.tmp_path / "b-holds"
    tasks.block_until.using(priority=-10).enqueue(str(release), str(holds_a))
    first = env.start_worker("--processes", "1", "--worker-id", "a")
    wait_for(
        lambda: holds_a.exists() and len(tasks.fail_times.get_result(flaky).errors) == 1,
        what="a to log the retry, then hold its process",
    )
    tasks.block_until.using(queue_name="high", priority=10).enqueue(str(release), str(holds_b))
    second = env.start_worker(
        "--processes", "1", "--queue-name", "default,high", "--worker-id", "b"
    )
    wait_for(holds_b.exists, what="b to start (seeing a alive) and hold its process")
    first.send(signal.SIGKILL)
    first.wait()
    release.touch()
    wait_for(
        lambda: str(tasks.fail_times.get_result(flaky).status) == "SUCCESSFUL",
        what="b to run the retry",
    )
    assert second.stop() == 0
    assert tasks.fail_times.get_result(flaky).worker_ids == ["a", "b"]
    assert str(tasks.fail_with.get_result(kept).status) == "FAILED"
    age(env, flaky)
    prune(env, "--older-than", "0.01s", "--status", "SUCCESSFUL")
    assert list((env.journal / "wal").glob("*.log")), "a's result log is left to replay"

    output = env.run_batch("--processes", "1", "--worker-id", "c")

    assert "died; recovering its tasks" in output
    assert f"id={flaky}" not in output
    assert why_missing(flaky) == f"{flaky}: pruned"
    assert not list((env.journal / "wal").glob("*.log"))


def requeue(env: Env, result_id: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "django", "procpool_requeue", result_id],
        env=env.variables,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.mark.parametrize("worker", ["running", "started-after"])
def test_requeued_failure_in_a_pruned_done_segment_runs_again(env: Env, worker: str) -> None:
    successes, failure = run_mixed(env)
    prune(env, "--older-than", "0.01s", "--status", "SUCCESSFUL")
    assert (env.journal / "segments" / f"{segment_of(failure)}.done").exists()
    if worker == "running":  # it skips the done segment at start
        running = env.start_worker("--processes", "1", "--worker-id", "after-prune")

    assert requeue(env, failure) == (
        f"Re-queued {failure} (tests.tasks.fail_times) as attempt 2\n"
        "1 task(s) will run again; 0 refused\n"
    )

    if worker == "running":
        wait_for(
            lambda: str(tasks.fail_times.get_result(failure).status) == "SUCCESSFUL",
            what="the re-queued task to run",
        )
        assert running.stop() == 0
    else:
        env.run_batch("--processes", "1", "--worker-id", "after-prune")
    result = tasks.fail_times.get_result(failure)
    assert (str(result.status), result.return_value) == ("SUCCESSFUL", 2)
    assert result.worker_ids[1:] == ["after-prune"]
    assert [why_missing(i) for i in successes] == [f"{i}: pruned" for i in successes]


def test_prune_dry_run_without_a_retention_says_which_tasks_are_kept_and_why(env: Env) -> None:
    run_mixed(env)
    before = journal_files(env)

    done = prune(env, "--dry-run")

    assert done.stdout.strip() == (
        "Nothing to prune. 3 finished tasks are kept: 2 SUCCESSFUL kept (no retention for "
        "SUCCESSFUL), 1 FAILED kept (no retention for FAILED)"
    )
    assert journal_files(env) == before
    # A prune, unlike a look, needs to know what to delete.
    assert "Give --older-than (e.g. 7d)" in prune(env, expect_code=1).stderr


def test_prune_dry_run_that_finds_nothing_says_what_the_retention_keeps(env: Env) -> None:
    set_options(env, retention={"SUCCESSFUL": 86400})
    run_mixed(env)

    done = prune(env, "--dry-run")

    kept = re.fullmatch(
        r"Nothing to prune\. 3 finished tasks are kept: 2 SUCCESSFUL newer than the retention "
        r"of 1d \(the oldest finished (\d+)s ago\), 1 FAILED kept \(no retention for FAILED\)",
        done.stdout.strip(),
    )
    assert kept is not None, done.stdout
    assert done.stdout.strip() == (
        "Nothing to prune. 3 finished tasks are kept: 2 SUCCESSFUL newer than the retention "
        f"of 1d (the oldest finished {kept[1]}s ago), 1 FAILED kept (no retention for FAILED)"
    )
    only_failed = prune(env, "--dry-run", "--older-than", "1d", "--status", "FAILED")
    assert re.fullmatch(
        r"Nothing to prune\. 3 finished tasks are kept: 2 SUCCESSFUL kept \(not in --status\), "
        r"1 FAILED newer than the retention of 1d \(the oldest finished \d+s ago\)",
        only_failed.stdout.strip(),
    ), only_failed.stdout


def test_prune_dry_run_says_tasks_of_a_segment_still_in_use_are_kept(env: Env) -> None:
    enqueue_mixed(env)
    env.run_batch("--processes", "1")  # not aged: written to less than a minute ago

    done = prune(env, "--dry-run", "--older-than", "0.01s")

    assert done.stdout.strip() == (
        "Nothing to prune. 3 finished tasks are kept: 2 SUCCESSFUL in segments not done "
        "yet (written to in the last 1m, or beside unfinished tasks), 1 FAILED in segments "
        "not done yet (written to in the last 1m, or beside unfinished tasks)"
    )


@pytest.mark.parametrize("args", [["--dry-run"], ["--older-than", "1d"]])
def test_prune_of_a_journal_that_does_not_exist_says_so_and_makes_none(
    env: Env, args: list[str]
) -> None:
    missing = env.tmp_path / "mistyped"
    set_options(env, path=str(missing))

    done = prune(env, *args)

    assert done.stdout.strip() == (
        f"Nothing to prune. The journal directory {missing} does not exist: no task was "
        "ever enqueued with this path, or OPTIONS['path'] points elsewhere."
    )
    assert not missing.exists()
