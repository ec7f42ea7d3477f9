"""``procpool_worker --reload``: a real reloader subprocess, real edits to a task module."""

from __future__ import annotations

import importlib
import os
import secrets
import signal
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.conftest import REPO_ROOT, Env, Worker, wait_for
from tests.support import INTERRUPTED, lines_of, set_options

TASK_MODULE = """\
import os
import time

try:
    from django.tasks import task
except ImportError:  # Django < 6
    from django_tasks import task

VERSION = {version}
{extra}

@task()
def version(log: str | None = None) -> int:
    if log:
        with open(log, "a") as file:
            file.write(f"{{VERSION}}\\n")
    return VERSION


@task()
def block_then_version(release: str, log: str) -> int:
    with open(log, "a") as file:
        file.write(f"start {{VERSION}}\\n")
    deadline = time.monotonic() + 60
    while not os.path.exists(release) and time.monotonic() < deadline:
        time.sleep(0.01)
    return VERSION
"""


class Project:
    """A directory of task code that the test edits while a reloading worker watches it."""

    def __init__(self, env: Env, monkeypatch: pytest.MonkeyPatch, *, as_app: bool = False) -> None:
        self.env = env
        self.directory = env.tmp_path / "project"
        # Unique, so this test process imports this test's module and not a cached one.
        self.name = f"editable_{secrets.token_hex(4)}"
        package = self.directory / self.name
        package.mkdir(parents=True)
        (package / "__init__.py").write_text("")
        self.path = package / "tasks.py"
        self.write(version=1)
        monkeypatch.syspath_prepend(str(self.directory))
        env.variables["PYTHONPATH"] = f"{self.directory}{os.pathsep}{env.variables['PYTHONPATH']}"
        if as_app:
            env.variables["PROCPOOL_TEST_EXTRA_APPS"] = self.name

    def write(self, *, version: int, extra: str = "") -> None:
        self.path.write_text(TASK_MODULE.format(version=version, extra=extra))

    def tasks(self) -> ModuleType:
        return importlib.import_module(f"{self.name}.tasks")

    def start_worker(self, *args: str) -> Worker:
        worker = self.env.start_worker("--reload", "--reload-dir", str(self.directory), *args)
        wait_for_starts(worker, 1)
        return worker


def starts(worker: Worker) -> int:
    return worker.output.count("Starting worker")


def wait_for_starts(worker: Worker, count: int) -> None:
    wait_for(lambda: starts(worker) >= count, what=f"supervisor start number {count}")
    assert worker.process.poll() is None, worker.output


def finished(result: Any) -> Any:
    def check() -> Any:
        result.refresh()
        return result if result.status in {"SUCCESSFUL", "FAILED"} else None

    return wait_for(check, what=f"task {result.id} to finish")


def reload_lines(worker: Worker) -> list[str]:
    return [line for line in worker.output.splitlines() if "Reloading: changed" in line]


def reload_error(project: Project) -> str:
    """The error a task stopped by a reload of the project's tasks module records."""
    return (
        f"{INTERRUPTED}: Stopped by a code reload (changed {project.path}) before it "
        "finished; it runs again under the new code\n"
    )


@pytest.fixture
def project(env: Env, monkeypatch: pytest.MonkeyPatch) -> Project:
    return Project(env, monkeypatch)


def test_an_edited_task_module_is_in_effect_for_the_next_task(project: Project) -> None:
    worker = project.start_worker()
    assert finished(project.tasks().version.enqueue()).return_value == 1

    project.write(version=2)
    wait_for_starts(worker, 2)

    assert finished(project.tasks().version.enqueue()).return_value == 2
    [line] = reload_lines(worker)
    assert str(project.path) in line


def test_a_syntax_error_keeps_the_worker_alive_until_the_next_good_save(
    project: Project,
) -> None:
    worker = project.start_worker()
    tasks = project.tasks()
    project.path.write_text("VERSION = (\n")
    wait_for(lambda: "SyntaxError" in worker.output, what="the syntax error to be logged")
    waiting = tasks.version.enqueue()

    project.write(version=3)
    wait_for_starts(worker, 2)

    result = finished(waiting)
    assert (result.status, result.return_value, result.attempts) == ("SUCCESSFUL", 3, 1)
    assert "does not compile; waiting for the next change" in worker.output


def test_a_syntax_error_is_shown_as_runserver_shows_it_without_the_reloaders_frames(
    project: Project,
) -> None:
    worker = project.start_worker()

    project.path.write_text("VERSION = (\n")

    wait_for(lambda: "SyntaxError" in worker.output, what="the syntax error to be logged")
    assert (
        f"ERROR {project.path} does not compile; waiting for the next change\n"
        f'  File "{project.path}", line 1\n'
        "    VERSION = (\n"
        "              ^\n"
        "SyntaxError: '(' was never closed\n"
    ) in worker.output
    assert "Traceback" not in worker.output


def test_a_tasks_module_that_fails_to_import_waits_for_a_fix_and_fails_no_task(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = Project(env, monkeypatch, as_app=True)
    worker = project.start_worker()
    tasks = project.tasks()
    project.write(version=2, extra='raise RuntimeError("broken at import")')
    wait_for(lambda: "broken at import" in worker.output, what="the import error to be logged")
    waiting = tasks.version.enqueue()

    project.write(version=4)
    wait_for_starts(worker, 2)  # the broken one never got as far as starting

    result = finished(waiting)
    assert (result.status, result.return_value, result.attempts) == ("SUCCESSFUL", 4, 1)
    assert "The project's code does not import; waiting for the next change" in worker.output
    assert worker.process.poll() is None


def test_a_task_in_flight_finishes_with_the_old_code_once_and_the_queue_keeps_its_order(
    project: Project,
) -> None:
    release = project.env.tmp_path / "release"
    log = project.env.tmp_path / "log.txt"
    worker = project.start_worker("--processes", "1", "--reload-grace-period", "60")
    tasks = project.tasks()
    in_flight = tasks.block_then_version.enqueue(str(release), str(log))
    wait_for(lambda: log.exists(), what="the long task to start")
    queued = [
        tasks.version.using(priority=priority).enqueue(str(log)) for priority in (-5, 0, 5, 0, 10)
    ]

    project.write(version=2)
    wait_for(lambda: reload_lines(worker), what="the reload to begin")
    release.touch()

    assert finished(in_flight).return_value == 1
    assert len(in_flight.worker_ids) == 1
    done = [finished(result) for result in queued]
    assert [result.return_value for result in done] == [2] * 5
    by_start = sorted(done, key=lambda result: result.started_at)
    assert [result.id for result in by_start] == [queued[i].id for i in (4, 2, 1, 3, 0)]
    assert log.read_text().splitlines() == ["start 1", *["2"] * 5]


def test_a_task_over_the_grace_period_is_stopped_and_run_again_under_the_new_code(
    project: Project,
) -> None:
    release = project.env.tmp_path / "release"
    log = project.env.tmp_path / "log.txt"
    worker = project.start_worker("--reload-grace-period", "0.5")
    in_flight = project.tasks().block_then_version.enqueue(str(release), str(log))
    wait_for(lambda: log.exists(), what="the long task to start")

    project.write(version=2)
    wait_for(
        lambda: "Tasks still running after the 0.5s grace period" in worker.output,
        what="the grace period to run out",
    )
    wait_for(lambda: log.read_text().count("start") == 2, what="the task to start again")
    release.touch()

    result = finished(in_flight)
    # A reload is not an attempt of the task.
    assert (result.status, result.return_value, result.attempts) == ("SUCCESSFUL", 2, 1)
    assert [error.traceback for error in result.errors] == [reload_error(project)]
    assert log.read_text().splitlines() == ["start 1", "start 2"]
    output = worker.output
    for line in (
        f"INFO Reloading: changed {project.path}; stopping 1 running task within 0.5 s\n",
        "WARNING Tasks still running after the 0.5s grace period; stopping 1 task(s), they "
        "run again under the new code (not counted as an attempt)\n",
        f"INFO Reloaded: running the new code (changed {project.path})\n",
    ):
        assert line in output
    # Stopped on purpose: nothing for the new supervisor to recover, and no signal.
    assert "died" not in output
    assert "Received" not in output


def test_saves_during_a_long_task_do_not_use_up_its_attempts(project: Project) -> None:
    set_options(project.env, max_attempts=2)
    release = project.env.tmp_path / "release"
    log = project.env.tmp_path / "log.txt"
    worker = project.start_worker("--reload-grace-period", "0.2")
    in_flight = project.tasks().block_then_version.enqueue(str(release), str(log))
    wait_for(lambda: log.exists(), what="the long task to start")

    for version in range(2, 7):
        project.write(version=version)
        started = f"start {version}"
        wait_for(lambda: started in lines_of(log), what=f"the task to start as {started}")  # noqa: B023
    release.touch()

    result = finished(in_flight)
    assert (result.status, result.return_value, result.attempts) == ("SUCCESSFUL", 6, 1)
    assert [error.traceback for error in result.errors] == [reload_error(project)] * 5
    assert lines_of(log) == [f"start {version}" for version in range(1, 7)]
    assert len(reload_lines(worker)) == 5


def test_a_signal_during_a_reload_stops_the_worker_and_a_second_one_costs_an_attempt(
    project: Project,
) -> None:
    release = project.env.tmp_path / "release"
    log = project.env.tmp_path / "log.txt"
    worker = project.start_worker("--reload-grace-period", "60", "--worker-id", "reloading")
    in_flight = project.tasks().block_then_version.enqueue(str(release), str(log))
    wait_for(lambda: log.exists(), what="the long task to start")
    project.write(version=2)
    wait_for(lambda: reload_lines(worker), what="the reload to begin")

    worker.send(signal.SIGINT)
    wait_for(lambda: "Received SIGINT" in worker.output, what="the graceful stop")
    worker.send(signal.SIGINT)

    assert worker.wait() == 1, worker.output
    assert (
        "WARNING Received SIGINT - shutting down gracefully, waiting for 1 running task(s)... "
        "(send it again to stop them now)\n"
    ) in worker.output
    assert starts(worker) == 1
    release.touch()
    project.env.run_batch("--worker-id", "next")
    result = finished(in_flight)
    # Stopped at once, not by the reload: that was an attempt.
    assert (result.status, result.return_value, result.worker_ids) == (
        "SUCCESSFUL",
        2,
        ["reloading", "next"],
    )
    assert [error.traceback for error in result.errors] == [
        f"{INTERRUPTED}: The worker reloading stopped before the task finished (supervisor "
        "killed, or stopped at once)\n"
    ]


def test_ctrl_c_is_passed_on_as_sigint_and_the_next_start_finds_nothing_to_recover(
    project: Project,
) -> None:
    release = project.env.tmp_path / "release"
    log = project.env.tmp_path / "log.txt"
    worker = project.start_worker()
    in_flight = project.tasks().block_then_version.enqueue(str(release), str(log))
    wait_for(lambda: log.exists(), what="the long task to start")

    worker.send(signal.SIGINT)  # as the terminal sends Ctrl-C to the reloader alone

    wait_for(lambda: "Received" in worker.output, what="the supervisor to get the signal")
    release.touch()
    assert worker.wait() == 0, worker.output
    assert (
        "WARNING Received SIGINT - shutting down gracefully, waiting for 1 running task(s)... "
        "(send it again to stop them now)\n"
    ) in worker.output
    assert finished(in_flight).status == "SUCCESSFUL"
    output = project.env.run_batch()
    assert "died" not in output
    assert "recover" not in output


def test_changes_to_ignored_files_do_not_reload(project: Project, env: Env) -> None:
    # Watch the test's whole directory: the journal lies inside it too.
    worker = env.start_worker(
        "--reload", "--reload-dir", str(env.tmp_path), "--reload-ignore", "local_*.py"
    )
    wait_for_starts(worker, 1)
    finished(project.tasks().version.enqueue())  # writes into the journal
    ignored = [
        env.journal / "planted.py",
        project.directory / "__pycache__" / "tasks.py",
        project.directory / ".git" / "hook.py",
        project.directory / ".venv" / "lib" / "site.py",
        project.directory / "venv" / "lib" / "site.py",
        project.directory / "notes.txt",
        project.directory / "tasks.py~",
        project.directory / ".tasks.py.swp",
        project.directory / "local_settings.py",
    ]
    for path in ignored:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("X = 1\n")

    project.write(version=2)
    wait_for_starts(worker, 2)

    [line] = reload_lines(worker)
    assert line.endswith(f"Reloading: changed {project.path}")


def test_sigterm_stops_the_reloader_and_its_supervisor_gracefully(project: Project) -> None:
    worker = project.start_worker()
    supervisor_pid = _supervisor_pid(worker)

    assert worker.stop() == 0
    assert not _is_running(supervisor_pid)


def test_a_killed_reloader_takes_its_supervisor_with_it(project: Project) -> None:
    worker = project.start_worker()
    supervisor_pid = _supervisor_pid(worker)

    worker.send(signal.SIGKILL)
    worker.wait()

    wait_for(lambda: not _is_running(supervisor_pid), what="the orphaned supervisor to exit")


def test_reload_is_refused_with_batch(env: Env) -> None:
    worker = env.start_worker("--reload", "--batch")
    assert worker.wait() == 1
    assert "--reload cannot be used with --batch; pass --no-reload" in worker.output


def test_debug_turns_reload_on_by_default_but_not_for_batch(project: Project, env: Env) -> None:
    env.variables["PROCPOOL_TEST_DEBUG"] = "1"
    command = [sys.executable, "-m", "django", "procpool_worker"]
    reloading = _start(env, [*command, "--reload-dir", str(project.directory)])
    wait_for(lambda: "Reloading on changes" in reloading.output, what="the reloader to start")
    assert reloading.stop() == 0

    batch = _start(env, [*command, "--batch"])
    assert batch.wait() == 0
    assert "Reloading" not in batch.output


def _start(env: Env, command: list[str]) -> Worker:
    """A worker without the --no-reload that ``env.start_worker`` always passes."""
    output_path = env.tmp_path / f"worker-{len(env.workers)}.log"
    with output_path.open("wb") as output:
        process = subprocess.Popen(
            command, env=env.variables, stdout=output, stderr=subprocess.STDOUT, cwd=REPO_ROOT
        )
    worker = Worker(process, output_path, command)
    env.workers.append(worker)
    return worker


def _supervisor_pid(worker: Worker) -> int:
    """The reloader's one child process (Linux: read from /proc)."""
    [pid] = [pid for pid, (_, ppid) in _process_table().items() if ppid == worker.process.pid]
    return pid


def _is_running(pid: int) -> bool:
    state = _process_table().get(pid)
    return state is not None and state[0] != "Z"  # a zombie has exited


def _process_table() -> dict[int, tuple[str, int]]:
    """pid -> (state, parent pid) of every process."""
    table = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(") ", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        table[int(stat.parent.name)] = (fields[0], int(fields[1]))
    return table
