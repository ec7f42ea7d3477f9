"""Full and read-only disks: the journal on a small tmpfs of its own, and simulated
ENOSPC for torn writes. Enqueue refuses clearly and acknowledges nothing it could not
write; results wait for space; nothing acknowledged is lost.
"""

from __future__ import annotations

import errno
import os
import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from procpool_tasks import compat, journal
from procpool_tasks.backend import JournalUnavailable
from tests import more_tasks, tasks
from tests.conftest import Env, wait_for
from tests.disk_full import FLAG_VARIABLE
from tests.support import (
    hold_running,
    journal_on_tmpfs,
    lines_of,
    result_path,
    state_in,
    state_line,
    status_of,
)


@pytest.fixture
def small_tmpfs(env: Env) -> Iterator[Path]:
    """The journal on a 256 kB tmpfs of its own; skipped where this machine cannot mount one."""
    note = "; the simulated-ENOSPC tests below still cover a full disk"
    with journal_on_tmpfs(env, size="256k", skip_note=note) as mount_point:
        yield mount_point


def fill_disk(directory: Path) -> Path:
    """Write a file until its filesystem is full; delete it to give the space back."""
    filler = directory / "filler"
    with open(filler, "xb", buffering=0, opener=_private) as file:
        with pytest.raises(OSError, match="No space left on device") as full:
            _write_forever(file)
    assert full.value.errno == errno.ENOSPC
    return filler


def _private(path: str, flags: int) -> int:
    return os.open(path, flags, 0o600)


def _write_forever(file: Any) -> None:
    while True:
        file.write(b"\0" * 4096)


def segment_contents(env: Env) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in (env.journal / "segments").iterdir()}


def assert_nothing_at_the_end_of_any_segment(env: Env) -> None:
    """No torn line anywhere, and no id readable where a refused enqueue would have written."""
    for name, data in segment_contents(env).items():
        assert data == b"" or data.endswith(b"\n"), name
        with pytest.raises(compat.TaskResultDoesNotExist):
            tasks.append_line.get_result(f"{name.removesuffix('.log')}-{len(data):x}")


def enospc_message(env: Env) -> str:
    return (
        "[Errno 28] tests.tasks.append_line was not enqueued: the journal cannot be written "
        f"(No space left on device): '{env.journal}'"
    )


def test_enqueue_on_a_full_disk_raises_acknowledges_nothing_and_loses_nothing(
    env: Env, small_tmpfs: Path
) -> None:
    out = env.tmp_path / "out.txt"
    acknowledged = [tasks.append_line.enqueue(str(out), f"before-{n}") for n in range(5)]
    filler = fill_disk(small_tmpfs)
    # The segment's last page may still take a few lines; then the disk is full.
    with pytest.raises(JournalUnavailable) as refused:  # noqa: PT012 (bounded by range)
        for n in range(100):
            acknowledged.append(tasks.append_line.enqueue(str(out), f"slack-{n}"))
    assert str(refused.value) == enospc_message(env)
    assert refused.value.errno == errno.ENOSPC
    after_refusal = segment_contents(env)

    for _ in range(3):
        with pytest.raises(JournalUnavailable):
            tasks.append_line.enqueue(str(out), "refused")

    assert segment_contents(env) == after_refusal  # nothing written, nothing left behind
    assert_nothing_at_the_end_of_any_segment(env)
    filler.unlink()
    output = env.run_batch("--processes", "2")
    assert [status_of(result) for result in acknowledged] == ["SUCCESSFUL"] * len(acknowledged)
    assert sorted(lines_of(out)) == sorted(result.return_value for result in acknowledged)
    assert "Quarantined" not in output


def test_worker_keeps_a_result_it_cannot_write_on_a_full_disk_and_writes_it_once_space_returns(
    env: Env, small_tmpfs: Path
) -> None:
    starts = env.tmp_path / "starts.log"
    gate = env.tmp_path / "gate"
    running = more_tasks.log_start_then_wait.enqueue(str(starts), str(gate))
    worker = env.start_worker("--processes", "1")
    wait_for(lambda: lines_of(starts), what="the task to start")
    filler = fill_disk(small_tmpfs)

    gate.touch()

    retrying = (
        "ERROR Cannot write 1 result(s) to the journal ([Errno 28] No space left on device); "
        "retrying in 0.5s"
    )
    wait_for(lambda: retrying in worker.output, what="the failed result write")
    assert status_of(running) == "RUNNING"
    assert worker.process.poll() is None
    filler.unlink()
    wait_for(lambda: status_of(running) == "SUCCESSFUL", what="the result to be written")
    assert running.return_value == int(lines_of(starts)[0])
    later = tasks.add.enqueue(2, 3)
    wait_for(lambda: status_of(later) == "SUCCESSFUL", what="the worker to serve on")
    assert len(lines_of(starts)) == 1
    assert worker.stop() == 0


def test_read_only_journal_refuses_enqueue_and_worker_clearly_and_keeps_acknowledged_tasks(
    env: Env, small_tmpfs: Path
) -> None:
    out = env.tmp_path / "out.txt"
    # Enqueued by another process, so that this one holds no file open for writing there.
    ids = env.run_python(
        "import sys\nfrom tests import tasks\n"
        "print(*(tasks.append_line.enqueue(sys.argv[1], f'before-{n}').id for n in range(3)))",
        str(out),
    ).split()
    subprocess.run(["mount", "-o", "remount,ro", str(small_tmpfs)], check=True)
    try:
        with pytest.raises(JournalUnavailable) as refused:
            tasks.append_line.enqueue(str(out), "refused")
        assert str(refused.value) == (
            "[Errno 30] tests.tasks.append_line was not enqueued: the journal cannot be written "
            f"(Read-only file system): '{env.journal}'"
        )
        statuses = [status_of(tasks.append_line.get_result(i)) for i in ids]
        assert statuses == ["READY"] * 3

        output = env.run_batch(expect_code=3)

        assert re.search(
            rf" ERROR Cannot use the journal {re.escape(str(env.journal))}/\S+: Read-only "
            "file system$",
            output.strip(),
        ), output
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(small_tmpfs)], check=True)
    env.run_batch()
    statuses = [status_of(tasks.append_line.get_result(i)) for i in ids]
    assert statuses == ["SUCCESSFUL"] * 3
    assert sorted(lines_of(out)) == ["before-0", "before-1", "before-2"]


def _half_then_enospc(fd: int, data: bytes) -> None:
    os.write(fd, data[: len(data) // 2])
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_enqueue_torn_by_a_simulated_full_disk_raises_and_leaves_no_partial_record(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = env.tmp_path / "out.txt"
    acknowledged = [tasks.append_line.enqueue(str(out), f"before-{n}") for n in range(3)]
    monkeypatch.setattr(journal.files, "_write_all", _half_then_enospc)

    with pytest.raises(JournalUnavailable) as refused:
        tasks.append_line.enqueue(str(out), "refused")

    assert str(refused.value) == enospc_message(env)
    monkeypatch.undo()
    assert_nothing_at_the_end_of_any_segment(env)
    acknowledged.append(tasks.append_line.enqueue(str(out), "after"))
    output = env.run_batch()
    assert [status_of(result) for result in acknowledged] == ["SUCCESSFUL"] * 4
    assert sorted(lines_of(out)) == ["after", "before-0", "before-1", "before-2"]
    assert "Quarantined" not in output


def test_a_torn_line_in_a_result_file_is_skipped_and_the_next_state_still_counts(
    env: Env,
) -> None:
    held = hold_running(env, 1)
    [running] = held.results
    path = result_path(env, running.id)
    whole = state_line({**state_in(path), "status": "SUCCESSFUL", "return_value": 666})
    with path.open("ab") as result_file:  # half a line, as a crash mid-append leaves it
        result_file.write(whole[: len(whole) // 2])

    assert status_of(running) == "RUNNING"  # the state before the torn line
    held.gate.touch()
    wait_for(lambda: status_of(running) == "SUCCESSFUL", what="the task to finish")
    assert running.return_value == held.pids[0]
    assert held.worker.stop() == 0


def test_result_write_torn_by_a_simulated_full_disk_is_retried_and_survives_power_loss(
    env: Env,
) -> None:
    disk_full = env.tmp_path / "disk-full"
    env.variables[FLAG_VARIABLE] = str(disk_full)
    starts = env.tmp_path / "starts.log"
    gate = env.tmp_path / "gate"
    running = more_tasks.log_start_then_wait.enqueue(str(starts), str(gate))
    worker = env.start_worker("--processes", "1", module="tests.disk_full")
    wait_for(lambda: lines_of(starts), what="the task to start")
    running_state = result_path(env, running.id).read_bytes()
    disk_full.touch()

    gate.touch()

    retrying = "Cannot write 1 result(s) to the journal ([Errno 28] No space left on device)"
    wait_for(lambda: retrying in worker.output, what="the torn result write")
    assert status_of(running) == "RUNNING"
    disk_full.unlink()
    wait_for(lambda: status_of(running) == "SUCCESSFUL", what="the retried result write")
    # Power loss now may take back the result file, which is renamed into place without a
    # sync of its own: the supervisor's synced result log is what must bring it back.
    worker.send(signal.SIGKILL)
    worker.wait()
    result_path(env, running.id).write_bytes(running_state)
    assert status_of(running) == "RUNNING"

    env.run_batch("--processes", "1")

    assert status_of(running) == "SUCCESSFUL"
    assert running.return_value == int(lines_of(starts)[0])
    assert len(lines_of(starts)) == 1  # not run again


def test_a_dead_supervisors_lock_is_kept_until_its_recovered_tasks_are_on_disk(
    env: Env,
) -> None:
    # Its lock says its tasks are being recovered: let go while their new states cannot
    # be written, another supervisor would recover and run them too, and the late state
    # would then make a task that ran READY again.
    held = hold_running(env, 1)
    [task] = held.results
    held.worker.send(signal.SIGKILL)
    held.worker.wait()
    [dead_lock] = (env.journal / "workers").glob("*.lock")
    disk_full = env.tmp_path / "disk-full"
    env.variables[FLAG_VARIABLE] = str(disk_full)
    disk_full.touch()
    held.gate.touch()  # a run from now on finishes at once
    recovering = env.start_worker("--processes", "1", module="tests.disk_full")
    wait_for(lambda: "Cannot write 1 result(s)" in recovering.output, what="the failed write")

    other = env.start_worker("--processes", "1")
    later = tasks.add.enqueue(1, 1)  # run by the other: its first read of the journal is done
    wait_for(lambda: status_of(later) == "SUCCESSFUL", what="the other supervisor to run a task")

    assert dead_lock.exists()
    state = state_in(result_path(env, task.id))
    assert (state["status"], state["owner"]) == ("RUNNING", dead_lock.stem)  # left alone
    disk_full.unlink()
    wait_for(lambda: status_of(task) == "SUCCESSFUL", what="the task to run again")
    wait_for(lambda: not dead_lock.exists(), what="the dead supervisor's lock to go")
    assert recovering.stop() == 0
    assert other.stop() == 0
    assert len(lines_of(held.starts)) == 2  # the killed run and one more
