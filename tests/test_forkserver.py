"""The forkserver: Django and the project set up once, for every worker process forked from it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests import tasks
from tests.conftest import Env
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


def test_a_project_run_from_another_directory_is_set_up_once_in_the_forkserver(
    env: Env,
) -> None:
    project = env.tmp_path / "project"
    project.mkdir()
    (project / "manage.py").write_text(MANAGE_PY)
    (project / "outside_settings.py").write_text(SETTINGS)
    imported_by = env.tmp_path / "imported-by.log"
    results = [tasks.process_id.enqueue() for _ in range(4)]

    # As a process manager runs it: the script's path, from a directory of its own.
    command = [sys.executable, str(project / "manage.py"), "procpool_worker", "--batch"]
    worker = subprocess.run(
        [*command, "--processes", "2"],
        env={
            **env.variables,
            "DJANGO_SETTINGS_MODULE": "outside_settings",
            "IMPORTED_BY": str(imported_by),
        },
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
    importers = {int(pid) for pid in lines_of(imported_by)}
    # The supervisor and the forkserver import the project; the worker processes inherit it.
    assert len(importers) == 2, (importers, worker_pids)
    assert not importers & worker_pids
