"""The zygote: the fork of the supervisor that forks the worker processes, which inherit
Django and the project set up, and none of the supervisor's files."""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
from pathlib import Path

from tests import tasks
from tests.conftest import Env, wait_for
from tests.support import hold_running, lines_of, status_of, worker_log
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


def test_a_killed_zygote_is_replaced_and_the_running_tasks_go_on(env: Env) -> None:
    held = hold_running(env, 2, "--max-tasks-per-child", "1")
    zygote = parent_of(held.pids[0])

    os.kill(zygote, signal.SIGKILL)
    wait_for(functools.partial(is_gone, zygote), what="the zygote to exit")
    held.gate.touch()
    # Each process leaves after its task: the next ones come from a new zygote.
    later = [tasks.process_id.enqueue() for _ in range(4)]
    results = [*held.results, *later]
    wait_for(
        lambda: all(status_of(result) == "SUCCESSFUL" for result in results), what="every task"
    )

    # The held tasks ran once: their processes were not taken for dead with the zygote.
    assert len(lines_of(held.starts)) == 2
    assert worker_log(held.worker, r"forks the worker processes .* is gone")
    assert held.worker.stop() == 0
