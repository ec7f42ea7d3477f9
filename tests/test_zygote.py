"""The zygote: the fork of the supervisor that forks the worker processes, which inherit
Django and the project set up, and none of the supervisor's files."""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests import more_tasks, tasks
from tests.conftest import REPO_ROOT, Env, Worker, wait_for
from tests.support import hold_running, lines_of, refreshed, status_of, worker_log
from tests.test_stopping import is_gone, parent_of

MANAGE_PY = """\
import sys

from django.core.management import execute_from_command_line

if __name__ == "__main__":
    execute_from_command_line(sys.argv)
"""

# A settings module that only the directory of its manage.py makes importable, and that
# logs the process that imports it.
SETTINGS = """\
import os

from tests.settings import *  # noqa: F403

with open(os.environ["IMPORTED_BY"], "a") as log:
    log.write(f"{os.getpid()}\\n")
"""


def outside_project(env: Env) -> tuple[list[str], dict[str, str]]:
    """A project with its own manage.py and settings; the command and environment that run
    it as a process manager would: the script's path, from a directory of its own."""
    project = env.tmp_path / "project"
    project.mkdir()
    (project / "manage.py").write_text(MANAGE_PY)
    (project / "outside_settings.py").write_text(SETTINGS)
    variables = {
        **env.variables,
        "DJANGO_SETTINGS_MODULE": "outside_settings",
        "IMPORTED_BY": str(env.tmp_path / "imported-by.log"),
    }
    return [sys.executable, str(project / "manage.py"), "procpool_worker"], variables


def test_a_project_run_from_another_directory_is_set_up_once_for_all_processes(
    env: Env,
) -> None:
    command, variables = outside_project(env)
    results = [tasks.process_id.enqueue() for _ in range(4)]

    worker = subprocess.run(
        [*command, "--batch", "--processes", "2"],
        env=variables,
        cwd=Path("/"),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert worker.returncode == 0, worker.stdout + worker.stderr
    for result in results:
        result.refresh()
    worker_pids = {result.return_value for result in results}
    importers = {int(pid) for pid in lines_of(Path(variables["IMPORTED_BY"]))}
    # The supervisor imports the project; the zygote and the worker processes inherit it.
    assert len(importers) == 1, (importers, worker_pids)
    assert len(worker_pids) == 2
    assert not importers & worker_pids


def open_files(pid: int) -> list[str]:
    """What each of the process's descriptors points to."""
    found = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            found.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except FileNotFoundError:
            pass  # closed meanwhile
    return found


def test_neither_the_zygote_nor_a_worker_process_holds_the_supervisors_files(env: Env) -> None:
    held = hold_running(env, 2)
    zygote = parent_of(held.pids[0])
    supervisor = held.worker.process.pid
    assert zygote != supervisor
    assert parent_of(zygote) == supervisor

    # The supervisor holds its lock, its result log and the claim lock, which a process
    # forked after it opened them would hold as long as it lives.
    journal = str(env.journal.resolve())
    assert any(path.startswith(journal) for path in open_files(supervisor))
    for pid in [zygote, *held.pids]:
        assert not [path for path in open_files(pid) if path.startswith(journal)], pid
    held.gate.touch()
    assert held.worker.stop() == 0


def children_of(pid: int) -> set[int]:
    return {int(p) for p in os.listdir("/proc") if p.isdigit() and _parent_or_none(int(p)) == pid}


def _parent_or_none(pid: int) -> int | None:
    try:
        return parent_of(pid)
    except OSError:
        return None  # gone meanwhile


def test_a_killed_zygote_is_replaced_and_the_running_tasks_go_on(env: Env) -> None:
    starts, gate = env.tmp_path / "starts.log", env.tmp_path / "gate"
    held = more_tasks.log_start_then_wait.enqueue(str(starts), str(gate))
    doomed = more_tasks.log_start_then_wait.enqueue(str(starts), str(env.tmp_path / "never"))
    worker = env.start_worker("--processes", "2")
    wait_for(lambda: len(lines_of(starts)) == 2, what="both tasks to start")
    zygote = parent_of(int(lines_of(starts)[0]))

    os.kill(zygote, signal.SIGKILL)
    wait_for(functools.partial(is_gone, zygote), what="the zygote to exit")
    # A cancelled task's process is stopped, and only that one is replaced: by a process
    # that a new zygote forks.
    env.manage("procpool_cancel", doomed.id)
    later = tasks.process_id.enqueue()
    wait_for(lambda: status_of(later) == "SUCCESSFUL", what="a task in the new process")

    new_zygote = parent_of(refreshed(later).return_value)
    assert new_zygote not in (zygote, worker.process.pid)
    assert parent_of(new_zygote) == worker.process.pid
    assert worker_log(worker, r"forks the worker processes .* is gone .*starting another")
    # Started afresh, not forked from the supervisor: none of its files.
    journal = str(env.journal.resolve())
    for pid in [new_zygote, *children_of(new_zygote)]:
        assert not [path for path in open_files(pid) if path.startswith(journal)], pid

    # The held task ran once: its process was not taken for dead with the zygote.
    gate.touch()
    wait_for(lambda: status_of(held) == "SUCCESSFUL", what="the held task")
    assert len(lines_of(starts)) == 2
    assert status_of(doomed) == "FAILED"
    # Its process, forked by the first zygote, still exits when the supervisor stops: no
    # other process holds its pipe.
    assert worker.stop() == 0


def test_the_worker_processes_of_a_reloading_worker_block_no_signal(env: Env) -> None:
    # The reloader starts each supervisor with SIGTERM and SIGINT blocked until it can
    # handle them; a worker process that kept them blocked could not be stopped by them.
    result = more_tasks.blocked_signals.enqueue()
    worker = env.start_worker("--reload", "--reload-dir", str(env.tmp_path))
    wait_for(lambda: status_of(result) == "SUCCESSFUL", what="the task")

    assert refreshed(result).return_value == []
    assert worker.stop() == 0


def test_a_task_reads_nothing_on_the_workers_standard_input(env: Env) -> None:
    # Read from a terminal, a worker process (a background process group) would be stopped.
    result = more_tasks.read_standard_input.enqueue()
    worker = subprocess.run(
        env.command("--batch", "--processes", "1"),
        env=env.variables,
        cwd=REPO_ROOT,
        input="typed at the worker's terminal\n",
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert worker.returncode == 0, worker.stdout + worker.stderr
    assert refreshed(result).return_value == ""


def test_a_zygote_started_afresh_imports_a_project_run_from_another_directory(
    env: Env,
) -> None:
    command, variables = outside_project(env)
    output_path = env.tmp_path / "worker.log"
    with output_path.open("wb") as output:
        supervisor = subprocess.Popen(
            [*command, "--processes", "1", "--max-tasks-per-child", "1"],
            env=variables,
            cwd=Path("/"),
            stdout=output,
            stderr=subprocess.STDOUT,
            text=True,
        )
    env.processes.append(supervisor)
    first = tasks.process_id.enqueue()
    wait_for(lambda: status_of(first) == "SUCCESSFUL", what="the first task")
    [zygote] = children_of(supervisor.pid)

    os.kill(zygote, signal.SIGKILL)
    wait_for(functools.partial(is_gone, zygote), what="the zygote to exit")
    # The process that ran the first task left; the next one, forked before the kill, runs
    # the second task and leaves too; the third task's process needs a new zygote.
    later = [tasks.process_id.enqueue() for _ in range(2)]
    wait_for(
        lambda: all(status_of(result) == "SUCCESSFUL" for result in later),
        what=f"the later tasks; worker's output:\n{output_path.read_text()}",
    )

    assert "starting another" in output_path.read_text()
    # Only the supervisor and the new zygote imported the project's settings.
    assert len(lines_of(Path(variables["IMPORTED_BY"]))) == 2
    supervisor.terminate()
    assert supervisor.wait(timeout=30) == 0


def test_a_program_that_a_task_runs_can_be_interrupted(env: Env) -> None:
    # The worker process does nothing on SIGINT, but must not pass that on as SIG_IGN,
    # which a program keeps across exec.
    result = more_tasks.program_interrupted_by_sigint.enqueue()
    env.run_batch("--processes", "1")

    assert refreshed(result).return_value == -signal.SIGINT


@dataclass
class HeldWorker:
    """A worker whose one process runs a task held until ``gate`` is made."""

    worker: Worker
    held: Any  # the held task's TaskResult
    gate: Path
    running: int  # the pid of the process that runs it
    zygote: int

    def helper(self, env: Env, kind: Callable[[Env, int], bool], what: str) -> int:
        """The pid of the zygote's other process that ``kind`` recognizes."""
        pid: int
        [pid] = wait_for(
            lambda: [p for p in children_of(self.zygote) - {self.running} if kind(env, p)],
            what=what,
        )
        return pid

    def wait_for_another(
        self, env: Env, kind: Callable[[Env, int], bool], gone: int, enqueue: Callable[[], Any]
    ) -> None:
        """Wait until a process ``kind`` recognizes replaces ``gone``: one is started only
        for work (after 5 s), so ``enqueue`` gives it some, every 0.2 s."""
        next_enqueue = time.monotonic()

        def replaced() -> list[int]:
            nonlocal next_enqueue
            if time.monotonic() >= next_enqueue:
                enqueue()
                next_enqueue += 0.2
            others = children_of(self.zygote) - {self.running, gone}
            return [pid for pid in others if kind(env, pid)]

        wait_for(replaced, what="another process in its place", timeout=20)


def hold_one_task(env: Env) -> HeldWorker:
    starts, gate = env.tmp_path / "starts.log", env.tmp_path / "gate"
    held = more_tasks.log_start_then_wait.enqueue(str(starts), str(gate))
    worker = env.start_worker("--processes", "1")
    wait_for(lambda: len(lines_of(starts)) == 1, what="the held task to start")
    running = int(lines_of(starts)[0])
    return HeldWorker(worker, held, gate, running, parent_of(running))


def test_a_killed_preparing_process_is_replaced_and_the_claims_make_the_files_meanwhile(
    env: Env,
) -> None:
    held_worker = hold_one_task(env)
    worker, held, gate = held_worker.worker, held_worker.held, held_worker.gate
    # It holds result directories, and none of the supervisor's files.
    preparer = held_worker.helper(env, preparing, "it to make the held task's file")

    os.kill(preparer, signal.SIGKILL)
    # Noticed with nothing more to send it: the end of a process that took the last ids.
    wait_for(
        lambda: worker_log(worker, r"makes result files ahead of claims \(pid \d+\) ended"),
        what="the worker to notice",
    )
    queued = [tasks.add.enqueue(n, 1) for n in range(3)]  # none is started for 5 s
    gate.touch()
    wait_for(lambda: all(status_of(r) == "SUCCESSFUL" for r in queued), what="the queued tasks")
    assert [refreshed(r).return_value for r in queued] == [1, 2, 3]
    assert status_of(held) == "SUCCESSFUL"

    # New tasks are what have files made.
    held_worker.wait_for_another(env, preparing, preparer, lambda: tasks.add.enqueue(0, 0))
    assert worker.stop() == 0


def test_a_killed_committing_process_loses_no_state_and_is_replaced(env: Env) -> None:
    held_worker = hold_one_task(env)
    worker, held, gate = held_worker.worker, held_worker.held, held_worker.gate
    committer = held_worker.helper(env, committing, "the committing process")

    os.kill(committer, signal.SIGKILL)
    wait_for(functools.partial(is_gone, committer), what="the committing process to exit")
    wait_for(
        lambda: worker_log(worker, r"commits finished tasks \(pid \d+\) ended"),
        what="the worker to notice",
    )
    gate.touch()
    queued = [tasks.add.enqueue(n, 1) for n in range(3)]  # committed by the supervisor
    wait_for(lambda: all(status_of(r) == "SUCCESSFUL" for r in queued), what="the queued tasks")
    assert [refreshed(r).return_value for r in queued] == [1, 2, 3]
    assert status_of(held) == "SUCCESSFUL"

    later: list[Any] = []  # the framework's TaskResult
    # Finished tasks are what it commits.
    held_worker.wait_for_another(
        env, committing, committer, lambda: later.append(tasks.add.enqueue(len(later), 0))
    )
    wait_for(lambda: all(status_of(r) == "SUCCESSFUL" for r in later), what="the later tasks")
    assert [refreshed(r).return_value for r in later] == list(range(len(later)))
    assert worker.stop() == 0
    assert worker.output.count("state=SUCCESSFUL") == 4 + len(later)  # each ran once


def committing(env: Env, pid: int) -> bool:
    """Whether the process holds a supervisor's WAL, and results directories besides: the
    process that commits finished states (the supervisor holds much more)."""
    journal = env.journal.resolve()
    held = [path for path in open_files(pid) if path.startswith(str(journal))]
    places = {journal / "wal", journal / "results"}
    return any(path.startswith(str(journal / "wal")) for path in held) and all(
        any(path.startswith(str(place)) for place in places) for path in held
    )


def preparing(env: Env, pid: int) -> bool:
    """Whether the process holds journal files, and result directories only: the process
    that makes result files ahead of claims (a worker process holds none)."""
    journal = env.journal.resolve()
    held = [path for path in open_files(pid) if path.startswith(str(journal))]
    return bool(held) and all(path.startswith(str(journal / "results")) for path in held)
