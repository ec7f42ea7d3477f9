"""The forkserver: Django and the project set up once, for every worker process forked from it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests import tasks
from tests.conftest import Env, wait_for
from tests.support import lines_of

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

# An app that sets up everywhere but in the forkserver, which CPython starts with -c.
BROKEN_APP = """\
import sys

from django.apps import AppConfig


class BrokenConfig(AppConfig):
    name = "brokenapp"

    def ready(self):
        if sys.argv[0] == "-c":
            raise RuntimeError("brokenapp does not set up in the forkserver")
"""


def outside_project(env: Env, *extra_apps: str) -> tuple[list[str], dict[str, str]]:
    """A project with its own manage.py and settings; the command and environment that run
    it as a process manager would: the script's path, from a directory of its own."""
    project = env.tmp_path / "project"
    project.mkdir()
    (project / "manage.py").write_text(MANAGE_PY)
    (project / "outside_settings.py").write_text(
        SETTINGS + f"INSTALLED_APPS = [*INSTALLED_APPS, *{list(extra_apps)!r}]\n"
    )
    (project / "brokenapp").mkdir()
    (project / "brokenapp" / "__init__.py").write_text("")
    (project / "brokenapp" / "apps.py").write_text(BROKEN_APP)
    variables = {
        **env.variables,
        "DJANGO_SETTINGS_MODULE": "outside_settings",
        "IMPORTED_BY": str(env.tmp_path / "imported-by.log"),
    }
    return [sys.executable, str(project / "manage.py"), "procpool_worker"], variables


def test_a_project_run_from_another_directory_is_set_up_once_in_the_forkserver(
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
    # The supervisor and the forkserver import the project; the worker processes inherit it.
    assert len(importers) == 2, (importers, worker_pids)
    assert not importers & worker_pids


def test_a_project_that_does_not_set_up_in_the_forkserver_reports_its_own_error(
    env: Env,
) -> None:
    command, variables = outside_project(env, "brokenapp.apps.BrokenConfig")
    tasks.add.enqueue(1, 2)
    output_path = env.tmp_path / "worker.log"

    with output_path.open("wb") as output:
        worker = subprocess.Popen(
            [*command, "--processes", "1"],
            env=variables,
            cwd=Path("/"),
            stdout=output,
            stderr=subprocess.STDOUT,
            text=True,
        )
    env.processes.append(worker)
    # Each worker process raises the forkserver's error, not Django's "populate() isn't
    # reentrant"; the supervisor keeps replacing it, slowly.
    wait_for(
        lambda: output_path.read_text().count("brokenapp does not set up in the forkserver") >= 2,
        what="the project's own error, from two worker processes",
    )
    assert "reentrant" not in output_path.read_text()
    assert worker.poll() is None
