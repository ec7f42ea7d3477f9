"""A module of tasks that a test deploys, breaks and fixes, as a bad deploy would.

It lives in a directory of its own on the PYTHONPATH of every process the test starts
(never the test process's), so a record can name a task that imports at enqueue, no longer
imports when a worker runs it (the module was removed or renamed), and imports again once
the deploy is fixed.
"""

from __future__ import annotations

import os
from pathlib import Path

from tests.conftest import Env

#: The module's name; each test has a directory of its own, so one name serves them all.
MODULE = "deployed_tasks"

SOURCE = """
try:
    from django.tasks import task
except ImportError:  # Django < 6
    from django_tasks import task


@task()
def greet(name: str) -> str:
    return f"hello {name}"
"""

ENQUEUE = """
import sys
from deployed_tasks import greet
print(greet.using(queue_name=sys.argv[1]).enqueue(sys.argv[2]).id)
"""


class Deploy:
    """``deployed_tasks.greet``, importable while ``deploy()`` has put its module in place."""

    def __init__(self, env: Env) -> None:
        self.env = env
        self.directory = env.tmp_path / "deploy"
        self.directory.mkdir()
        path = env.variables["PYTHONPATH"]
        env.variables["PYTHONPATH"] = os.pathsep.join([str(self.directory), path])

    @property
    def module_file(self) -> Path:
        return self.directory / f"{MODULE}.py"

    task_path = f"{MODULE}.greet"

    def deploy(self) -> None:
        self.module_file.write_text(SOURCE)

    def break_it(self) -> None:
        """The bad deploy: the module is gone."""
        self.module_file.unlink()

    def enqueue_greet(self, name: str, *, queue_name: str = "default") -> str:
        """Enqueue ``greet(name)`` from a process that imports it (and exits); its id."""
        return self.env.run_python(ENQUEUE, queue_name, name).strip()
