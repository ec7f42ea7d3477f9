"""The worker's log: one stream (stdout), one format, and a FAILED line that says why.

The workers here run with Django's default logging, as in a new project
(``PROCPOOL_TEST_LOGGING="{}"``; the other tests configure none), whose handlers would
print the framework's lines on stderr, unformatted, and only with ``DEBUG = True``. Only
stdout is read as the log: stderr must stay empty.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from typing import Any

import pytest

from procpool_tasks import compat
from tests import tasks
from tests.conftest import REPO_ROOT, Env, wait_for
from tests.signal_log import EXC_INFO_LOG_VARIABLE
from tests.support import lines_of, refreshed, set_options

TIME = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}"
LOG_LINE = re.compile(rf"{TIME} (DEBUG|INFO|WARNING|ERROR|CRITICAL) (.*)")
#: The worker's own line for a task that raised; ``{id}`` and the error are filled in.
FAILED_LINE = (
    r"Task id={id} path=tests\.tasks\.fail_with queue=default state=FAILED "
    r"duration=\d+\.\d{{3}}s: ValueError: boom"
)


def use_default_logging(env: Env, *, debug: bool = False) -> None:
    env.variables["PROCPOOL_TEST_LOGGING"] = "{}"
    env.variables["PROCPOOL_TEST_DEBUG"] = "1" if debug else "0"


def run_batch(env: Env, *args: str) -> tuple[str, str]:
    """Run ``procpool_worker --batch`` with one process; its stdout and its stderr."""
    done = subprocess.run(
        env.command("--batch", "--processes", "1", *args),
        env=env.variables,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    return done.stdout, done.stderr


def entries(output: str, line: re.Pattern[str] = LOG_LINE) -> list[tuple[str, str, list[str]]]:
    """Each log line as (level, message, the lines after it up to the next log line)."""
    found: list[tuple[str, str, list[str]]] = []
    for text in output.splitlines():
        if match := line.fullmatch(text):
            found.append((match[1], match[2], []))
        else:
            assert found, f"output starts with a line that is not a log line: {text!r}"
            found[-1][2].append(text)
    return found


def traceback_lines(result: Any) -> list[str]:
    """The traceback of the task's last attempt, as it was recorded, line by line."""
    return list(refreshed(result).errors[-1].traceback.rstrip("\n").splitlines())


@pytest.mark.parametrize("debug", [False, True], ids=["DEBUG-off", "DEBUG-on"])
def test_a_failed_tasks_line_names_its_exception_and_its_traceback_follows_on_stdout(
    env: Env, debug: bool
) -> None:
    use_default_logging(env, debug=debug)
    succeeds = tasks.add.enqueue(1, 2)
    fails = tasks.fail_with.enqueue("boom")

    stdout, stderr = run_batch(env)

    assert stderr == ""
    logged = entries(stdout)
    about_failed = [entry for entry in logged if f"id={fails.id} " in entry[1]]
    assert [level for level, _, _ in about_failed] == ["INFO", "WARNING"]
    assert about_failed[0][1] == (
        f"Task id={fails.id} path=tests.tasks.fail_with queue=default state=RUNNING attempt=1"
    )
    _, failed_line, after = about_failed[1]
    assert re.fullmatch(FAILED_LINE.format(id=fails.id), failed_line)
    assert after == traceback_lines(fails)
    assert after[0] == "Traceback (most recent call last):"
    assert after[-1] == "ValueError: boom"
    # Every other line is a line of its own: no traceback, nothing unformatted.
    assert [after for _, message, after in logged if message != failed_line] == [
        [] for _ in range(len(logged) - 1)
    ]
    assert re.fullmatch(
        rf"Task id={succeeds.id} path=tests\.tasks\.add queue=default state=SUCCESSFUL "
        r"duration=\d+\.\d{3}s",
        next(m for _, m, _ in logged if f"id={succeeds.id} " in m and "SUCCESSFUL" in m),
    )


def test_verbosity_0_logs_errors_only(env: Env) -> None:
    use_default_logging(env)
    set_options(env, max_attempts=1)
    tasks.fail_with.enqueue("boom")
    dies = tasks.exit_hard.enqueue()

    stdout, stderr = run_batch(env, "-v", "0")

    assert stderr == ""
    assert entries(stdout) == [
        (
            "ERROR",
            f"Task id={dies.id} path=tests.tasks.exit_hard queue=default state=FAILED: "
            + traceback_lines(dies)[0],
            [],
        ),
        ("ERROR", "A worker process died; replacing the process pool", []),
    ]


def test_the_frameworks_failed_lines_show_at_verbosity_2_with_the_error_never_none(
    env: Env,
) -> None:
    use_default_logging(env)
    set_options(env, max_attempts=1)
    fails = tasks.fail_with.enqueue("boom")
    dies = tasks.exit_hard.enqueue()

    stdout, stderr = run_batch(env, "-v", "2")

    assert stderr == ""
    assert "NoneType: None" not in stdout
    logged = entries(stdout)
    # A task's own failure, logged by the framework in the worker process that ran it.
    assert (
        "ERROR",
        f"Task id={fails.id} path=tests.tasks.fail_with state=FAILED",
        traceback_lines(fails),
    ) in logged
    # A task whose process died, which the supervisor marked FAILED.
    assert (
        "ERROR",
        f"Task id={dies.id} path=tests.tasks.exit_hard state=FAILED",
        traceback_lines(dies),
    ) in logged
    [died] = traceback_lines(dies)
    assert re.fullmatch(
        r"procpool_tasks\.exceptions\.WorkerProcessDied: The worker process \(pid \d+\) "
        r"running the task exited with code 3",
        died,
    )


def test_a_task_finished_receiver_finds_the_error_of_a_failed_task_in_sys_exc_info(
    env: Env,
) -> None:
    set_options(env, max_attempts=1)
    exc_info_log = env.tmp_path / "exc_info.log"
    env.variables[EXC_INFO_LOG_VARIABLE] = str(exc_info_log)
    succeeds = tasks.add.enqueue(1, 2)
    fails = tasks.fail_with.enqueue("boom")
    dies = tasks.exit_hard.enqueue()

    run_batch(env)

    # Once per task: from the worker process for its own outcome, from the supervisor for
    # a process that died.
    assert lines_of(exc_info_log) == [
        f"{succeeds.id} SUCCESSFUL -",
        f"{fails.id} FAILED ValueError: boom",
        f"{dies.id} FAILED {traceback_lines(dies)[0]}",
    ]


def test_a_projects_logging_for_these_loggers_takes_precedence(env: Env) -> None:
    project_format = "project %(levelname)s %(name)s: %(message)s"
    env.variables["PROCPOOL_TEST_LOGGING"] = json.dumps(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "formatters": {"project": {"format": project_format}},
            "handlers": {
                "project": {
                    "class": "logging.StreamHandler",
                    "stream": "ext://sys.stdout",
                    "formatter": "project",
                }
            },
            "loggers": {
                "procpool_tasks": {"handlers": ["project"], "level": "WARNING"},
                compat.FRAMEWORK: {"handlers": ["project"], "level": "ERROR"},
            },
        }
    )
    fails = tasks.fail_with.enqueue("boom")
    tasks.add.enqueue(1, 2)

    # -v 2 would log everything; the project's levels keep only the failure.
    stdout, stderr = run_batch(env, "-v", "2")

    assert stderr == ""
    logged = entries(stdout, re.compile(r"project (\w+) (.*)"))
    assert [(level, message) for level, message, _ in logged] == [
        (
            "ERROR",
            f"{compat.FRAMEWORK}: Task id={fails.id} path=tests.tasks.fail_with state=FAILED",
        ),
        ("WARNING", logged[1][1]),
    ]
    assert re.fullmatch(
        "procpool_tasks.worker.dispatch: " + FAILED_LINE.format(id=fails.id), logged[1][1]
    )
    assert [after for _, _, after in logged] == [traceback_lines(fails)] * 2


def test_the_reloader_its_supervisor_and_their_processes_log_alike_with_debug_on(
    env: Env,
) -> None:
    use_default_logging(env, debug=True)
    watched = env.tmp_path / "watched"
    watched.mkdir()
    stdout_path, stderr_path = env.tmp_path / "stdout.log", env.tmp_path / "stderr.log"
    # DEBUG turns --reload on (``env.command`` would pass --no-reload).
    command = [sys.executable, "-m", "django", "procpool_worker", "--reload-dir", str(watched)]
    with stdout_path.open("wb") as stdout, stderr_path.open("wb") as stderr:
        reloader = subprocess.Popen(
            command,
            env=env.variables,
            cwd=REPO_ROOT,
            stdout=stdout,
            stderr=stderr,
        )
    try:
        fails = tasks.fail_with.enqueue("boom")
        wait_for(
            lambda: (
                f"id={fails.id} path=tests.tasks.fail_with queue=default state=FAILED"
                in stdout_path.read_text()
            ),
            what="the task to fail",
        )
        reloader.send_signal(signal.SIGTERM)
        assert reloader.wait(30) == 0
    finally:
        if reloader.poll() is None:
            reloader.kill()
            reloader.wait()

    assert stderr_path.read_text() == ""
    logged = entries(stdout_path.read_text())
    assert ("INFO", f"Reloading on changes to Python files in {watched}", []) == logged[0]
    [failed] = [entry for entry in logged if "state=FAILED" in entry[1]]
    assert failed[0] == "WARNING"
    assert re.fullmatch(FAILED_LINE.format(id=fails.id), failed[1])
    assert failed[2] == traceback_lines(fails)
