"""Permissions and symlinks: the worker refuses a journal other users can write, keeps
everything it writes private, and follows no symlink planted in the journal.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
from pathlib import Path

import pytest

from procpool_tasks import compat, journal
from tests import more_tasks, tasks
from tests.conftest import Env, wait_for
from tests.support import (
    GOOD_TIME,
    PlantedSegment,
    framed,
    lines_of,
    record_json,
    refreshed,
    result_path,
    state_in,
    state_line,
    status_of,
)


def assert_private(root: Path) -> None:
    """Every directory under ``root`` is 0700 and every file 0600, and nothing is a link."""
    modes = {}
    for path in [root, *root.rglob("*")]:
        info = path.lstat()
        assert not stat.S_ISLNK(info.st_mode), path
        modes[str(path.relative_to(root.parent))] = (
            stat.S_IMODE(info.st_mode),
            0o700 if stat.S_ISDIR(info.st_mode) else 0o600,
        )
    assert {name: mode for name, (mode, _) in modes.items()} == {
        name: expected for name, (_, expected) in modes.items()
    }


@pytest.mark.parametrize("mode", [0o770, 0o707, 0o777, 0o720])
def test_worker_refuses_a_journal_directory_other_users_can_write(env: Env, mode: int) -> None:
    result = tasks.add.enqueue(1, 2)
    env.journal.chmod(mode)

    output = env.run_batch(expect_code=1)

    assert (
        f"(procpool_tasks.E002) The journal directory {env.journal} cannot be used safely: the "
        f"journal directory is writable by other users (mode {mode:o}); run chmod 700 on it"
    ) in output
    env.journal.chmod(0o700)
    assert status_of(result) == "READY"


def test_worker_refuses_a_journal_subdirectory_other_users_can_write(env: Env) -> None:
    tasks.add.enqueue(1, 2)
    (env.journal / "results").chmod(0o777)

    output = env.run_batch(expect_code=3)

    assert output.strip().endswith(
        f" ERROR Cannot use the journal {env.journal / 'results'}: the journal directory is "
        "writable by other users (mode 777); run chmod 700 on it"
    ), output


def test_everything_the_worker_writes_is_private_under_umask_000_even_after_a_crash(
    env: Env,
) -> None:
    starts = env.tmp_path / "starts.log"
    gate = env.tmp_path / "gate"
    previous = os.umask(0)
    try:
        running = more_tasks.log_start_then_wait.enqueue(str(starts), str(gate))
        done = tasks.add.enqueue(1, 2)
        bad = PlantedSegment(env)
        bad.add(b"garbage\n")
        bad.plant()
        worker = env.start_worker("--processes", "2")
        wait_for(lambda: lines_of(starts), what="the task to start")
        wait_for(lambda: status_of(done) == "SUCCESSFUL", what="a finished task")
        wait_for(lambda: "Quarantined" in worker.output, what="the quarantine")
        worker.send(signal.SIGKILL)  # leaves its lock file and result log behind
        worker.wait()
        assert_private(env.journal)
        gate.touch()
        env.run_batch("--processes", "1")  # recovery: a requeue line, new states
    finally:
        os.umask(previous)

    assert status_of(running) == "SUCCESSFUL"
    assert_private(env.journal)


def test_symlinked_results_directory_is_refused_by_worker_enqueue_and_get_result(
    env: Env,
) -> None:
    real = tasks.add.enqueue(1, 2)
    env.run_batch()
    # A forged SUCCESSFUL state outside the journal, and the results directory pointing at it.
    outside = env.tmp_path / "outside"
    (env.journal / "results").rename(outside)
    forged = outside / real.id.split("-")[0] / "0.json"
    forged.write_bytes(state_line({**state_in(forged), "return_value": 666}))
    (env.journal / "results").symlink_to(outside)

    output = env.run_batch(expect_code=3)

    assert output.strip().endswith(
        f" ERROR Cannot use the journal {env.journal / 'results'}: a symlink was planted in "
        "the journal"
    ), output
    # A process that starts now (a web server, say) refuses to enqueue there.
    refused = env.run_python(
        "from procpool_tasks.backend import JournalUnavailable\nfrom tests import tasks\n"
        "try:\n    tasks.add.enqueue(3, 4)\nexcept JournalUnavailable as error:\n"
        "    print(error)"
    )
    assert refused.strip() == (
        "[Errno 40] tests.tasks.add was not enqueued: the journal cannot be written (a "
        f"symlink was planted in the journal): '{env.journal}'"
    )
    # And no process reads a state through the link: never the forged return value.
    with pytest.raises(compat.TaskResultDoesNotExist) as refused_result:
        tasks.add.get_result(real.id)
    assert isinstance(refused_result.value, journal.JournalError)
    assert refused_result.value.strerror == "a symlink was planted in the journal"


def test_symlinked_result_file_is_not_followed_by_get_result_or_the_worker(env: Env) -> None:
    starts = env.tmp_path / "starts.log"
    gate = env.tmp_path / "gate"
    running = more_tasks.log_start_then_wait.enqueue(str(starts), str(gate))
    worker = env.start_worker("--processes", "1")
    wait_for(lambda: lines_of(starts), what="the task to start")
    target = env.tmp_path / "target.json"
    target.write_bytes(
        state_line({**state_in(result_path(env, running.id)), "status": "SUCCESSFUL"})
    )
    target_mtime = target.stat().st_mtime_ns
    os.utime(target, ns=(target_mtime - 10**12, target_mtime))
    result_path(env, running.id).unlink()
    result_path(env, running.id).symlink_to(target)

    with pytest.raises(compat.TaskResultDoesNotExist) as refused:
        tasks.add.get_result(running.id)
    assert isinstance(refused.value, journal.JournalError)
    assert refused.value.strerror == "a symlink was planted in the journal"
    gate.touch()

    # The worker replaces the link with its own file; the file it pointed at is untouched.
    wait_for(lambda: not result_path(env, running.id).is_symlink(), what="the result write")
    assert status_of(running) == "SUCCESSFUL"
    assert target.stat().st_atime_ns == target_mtime - 10**12
    assert target.stat().st_mtime_ns == target_mtime
    assert worker.stop() == 0


def test_symlink_planted_as_a_spare_result_file_is_not_followed(env: Env) -> None:
    results = [tasks.add.enqueue(n, 1) for n in range(3)]
    target = env.tmp_path / "target"
    target.write_text("precious\n")
    for result in results:
        path = result_path(env, result.id)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        path.with_name(f".{path.name}.spare").symlink_to(target)

    env.run_batch("--processes", "1")

    assert [refreshed(result).return_value for result in results] == [1, 2, 3]
    assert target.read_text() == "precious\n"
    assert not any(result_path(env, result.id).is_symlink() for result in results)


def test_symlinked_segment_is_neither_read_nor_run(env: Env) -> None:
    never = env.tmp_path / "never-created"
    outside = env.tmp_path / "outside.log"
    segment = os.urandom(8).hex()
    outside.write_bytes(
        framed(record_json(f"{segment}-0", "tests.tasks.append_line", [str(never), "x"]))
    )
    real = tasks.add.enqueue(1, 2)
    (env.journal / "segments" / f"{segment}.log").symlink_to(outside)

    output = env.run_batch()

    assert status_of(real) == "SUCCESSFUL"
    assert (
        f"Quarantined an unreadable record segment={segment} offset=0 reason=the segment " in output
    )
    assert not never.exists()
    with pytest.raises(compat.TaskResultDoesNotExist):
        tasks.append_line.get_result(f"{segment}-0")


@pytest.mark.parametrize("name", ["claim.lock", "workers"])
def test_worker_refuses_a_symlink_planted_for_its_locks_and_writes_nothing_through_it(
    env: Env, name: str
) -> None:
    result = tasks.add.enqueue(1, 2)
    target = env.tmp_path / "target"
    target.mkdir() if name == "workers" else target.write_text("precious\n")
    planted = env.journal / name
    if planted.is_dir():
        planted.rmdir()
    else:
        planted.unlink(missing_ok=True)
    planted.symlink_to(target)

    output = env.run_batch(expect_code=3)

    assert output.strip().endswith(
        f" ERROR Cannot use the journal {env.journal / name}: a symlink was planted in the journal"
    ), output
    if name == "workers":
        assert list(target.iterdir()) == []
    else:
        assert target.read_text() == "precious\n"
    assert status_of(result) == "READY"


def test_worker_never_turns_the_owner_named_in_a_result_file_into_a_path(env: Env) -> None:
    result = tasks.add.enqueue(1, 2)
    # Files where "workers/<owner>.lock" and "wal/<owner>.log" would lead for this owner.
    outside = {env.tmp_path / "escaped.lock": "a lock\n", env.tmp_path / "escaped.log": "a log\n"}
    for path, text in outside.items():
        path.write_text(text)
    state = {
        "id": result.id,
        "status": "RUNNING",
        "version": 1,
        "worker_ids": ["w"],
        "owner": "../../escaped",
        "started_at": GOOD_TIME,
        "last_attempted_at": GOOD_TIME,
        "finished_at": None,
        "errors": [],
        "return_value": None,
    }
    result_path(env, result.id).parent.mkdir(mode=0o700, parents=True)
    result_path(env, result.id).write_bytes(state_line(state))

    env.run_batch()

    assert status_of(result) == "SUCCESSFUL"  # an owner that cannot exist is not alive
    assert {path: path.read_text() for path in outside} == outside


def test_symlink_planted_as_a_supervisors_lock_file_is_not_followed(env: Env) -> None:
    result = tasks.add.enqueue(1, 2)
    target = env.tmp_path / "target"
    target.write_text("precious\n")
    (env.journal / "workers").mkdir(mode=0o700, exist_ok=True)
    (env.journal / "workers" / "0123456789abcdef.lock").symlink_to(target)

    output = env.run_batch()

    assert status_of(result) == "SUCCESSFUL"
    assert "Cannot tell whether supervisor instance=0123456789abcdef is alive" in output
    assert target.read_text() == "precious\n"


def test_a_new_journal_keeps_itself_out_of_git_privately_and_works_beside_its_gitignore(
    env: Env,
) -> None:
    subprocess.run(["git", "init", "-q", str(env.tmp_path)], check=True)
    result = tasks.add.enqueue(1, 2)
    output = env.run_batch()

    assert (env.journal / ".gitignore").read_text() == "*\n"
    assert_private(env.journal)
    assert status_of(result) == "SUCCESSFUL"
    assert "Quarantined" not in output
    untracked = subprocess.run(
        ["git", "-C", str(env.tmp_path), "status", "--porcelain", "--untracked-files=all"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.splitlines()
    assert [line for line in untracked if "journal" in line] == []
    assert untracked != []  # git sees the test's other files: the journal is ignored


def test_a_gitignore_of_the_project_in_the_journal_is_kept_and_one_deleted_stays_deleted(
    env: Env,
) -> None:
    env.journal.mkdir(mode=0o700)  # made by a deploy, with the project's own .gitignore
    (env.journal / ".gitignore").write_text("!keep-me\n")
    tasks.add.enqueue(1, 2)
    assert (env.journal / ".gitignore").read_text() == "!keep-me\n"

    (env.journal / ".gitignore").unlink()
    env.run_batch()
    assert not (env.journal / ".gitignore").exists()
