"""Fixtures: a private journal per test, and real ``procpool_worker`` subprocesses."""

from __future__ import annotations

import copy
import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
# Every Python program the tests start prints its threads' stacks when a hung one is stopped
# with SIGABRT (tests/processes.py).
os.environ["PYTHONFAULTHANDLER"] = "1"

import django

django.setup()

from django.conf import settings  # noqa: E402
from django.test.utils import override_settings  # noqa: E402

from tests.processes import run, stop_with_stacks  # noqa: E402

# Real Redis, PostgreSQL and Chromium, for the tests that need them.
from tests.services import chromium, postgres_server, redis_server  # noqa: E402, F401

# A program stopped so leaves no core file behind, nor does a test's deliberate segfault.
resource.setrlimit(resource.RLIMIT_CORE, (0, resource.getrlimit(resource.RLIMIT_CORE)[1]))

REPO_ROOT = Path(__file__).resolve().parent.parent
#: The longest any test waits for a condition; the tests' own work takes far less.
WAIT_S = 30.0


def wait_for(check: Callable[[], Any], *, timeout: float = WAIT_S, what: str) -> Any:
    """Poll ``check`` until it returns something truthy; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not (value := check()):
        if time.monotonic() > deadline:
            pytest.fail(f"gave up after {timeout}s waiting for {what}")
        time.sleep(0.02)
    return value


@dataclass
class Worker:
    """A running ``manage.py procpool_worker`` subprocess and its output file."""

    process: subprocess.Popen[bytes]
    output_path: Path
    args: list[str] = field(default_factory=list)

    @property
    def output(self) -> str:
        return self.output_path.read_text(errors="replace")

    def send(self, signum: int) -> None:
        self.process.send_signal(signum)

    def wait(self, timeout: float = WAIT_S) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            stop_with_stacks(self.process)
            pytest.fail(
                f"worker did not exit within {timeout}s; stopped with SIGABRT, its stacks and "
                f"output:\n{self.output}"
            )

    def stop(self) -> int:
        """Graceful stop (SIGTERM), as a process manager would do it."""
        self.send(signal.SIGTERM)
        return self.wait()

    def reap(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


@dataclass
class Env:
    """One test's journal and the environment its subprocesses share with it."""

    journal: Path
    tmp_path: Path
    variables: dict[str, str]
    workers: list[Worker] = field(default_factory=list)
    processes: list[subprocess.Popen[str]] = field(default_factory=list)

    def command(self, *args: str, module: str = "django") -> list[str]:
        return [sys.executable, "-m", module, "procpool_worker", "--no-reload", *args]

    def start_worker(
        self, *args: str, module: str = "django", own_process_group: bool = False
    ) -> Worker:
        """Start ``procpool_worker``; ``module`` runs it (``tests.disk_full`` injects faults).

        ``own_process_group``: as a shell or a process manager starts it, so that a test
        can signal its whole process group.
        """
        output_path = self.tmp_path / f"worker-{len(self.workers)}.log"
        with output_path.open("wb") as output:
            process = subprocess.Popen(
                self.command(*args, module=module),
                env=self.variables,
                stdout=output,
                stderr=subprocess.STDOUT,
                cwd=REPO_ROOT,
                process_group=0 if own_process_group else None,
            )
        worker = Worker(process, output_path, list(args))
        self.workers.append(worker)
        return worker

    def run_batch(self, *args: str, expect_code: int = 0) -> str:
        """Run ``procpool_worker --batch`` to completion; return its output."""
        worker = self.start_worker("--batch", *args)
        code = worker.wait(timeout=120)
        assert code == expect_code, f"exit code {code}; output:\n{worker.output}"
        return worker.output

    def run_python(self, code: str, *args: str, timeout: float = 60) -> str:
        """Run Python code in a fresh process with Django set up on this journal."""
        prelude = "import django; django.setup()\n"
        done = run(
            [sys.executable, "-c", prelude + code, *args],
            timeout=timeout,
            what=f"python -c {code.strip().splitlines()[0]!r}... {' '.join(args)}",
            env=self.variables,
            cwd=REPO_ROOT,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    def manage(
        self, *args: str, expect_code: int = 0, module: str = "django"
    ) -> subprocess.CompletedProcess[str]:
        """Run a management command (``procpool_status ...``) to completion, as an operator
        would; ``module`` runs it (``tests.crash_at`` kills it at a chosen point)."""
        done = run(
            [sys.executable, "-m", module, *args],
            timeout=60,
            what=f"python -m {module} {' '.join(args)}",
            env=self.variables,
            cwd=REPO_ROOT,
        )
        assert done.returncode == expect_code, (
            f"exit code {done.returncode}; stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
        )
        return done

    def start_python(self, code: str, *args: str) -> subprocess.Popen[str]:
        """Start Python code like ``run_python``, without waiting; it is killed at the end."""
        process = subprocess.Popen(
            [sys.executable, "-c", "import django; django.setup()\n" + code, *args],
            env=self.variables,
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.processes.append(process)
        return process

    def migrate(self) -> None:
        done = run(
            [sys.executable, "-m", "django", "migrate", "--run-syncdb", "-v", "0"],
            timeout=120,
            what="migrate",
            env=self.variables,
            cwd=REPO_ROOT,
        )
        assert done.returncode == 0, f"exit code {done.returncode}:\n{done.stdout}{done.stderr}"


def _tasks_setting(journal: Path) -> dict[str, Any]:
    tasks: dict[str, Any] = copy.deepcopy(settings.TASKS)
    tasks["default"]["OPTIONS"]["path"] = str(journal)
    tasks["second"]["OPTIONS"]["path"] = f"{journal}-second"
    tasks["list"]["OPTIONS"]["path"] = f"{journal}-list.jsonl"
    return tasks


@contextmanager
def private_env(tmp_path: Path) -> Iterator[Env]:
    """A private journal under ``tmp_path``, used by this process and every worker it starts;
    what it started is reaped at the end (``env``, and ``python -m tests.make_screenshot``)."""
    journal = tmp_path / "journal"
    variables = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "PROCPOOL_TASKS_PATH": str(journal),
        "PROCPOOL_TEST_DB": str(tmp_path / "db.sqlite3"),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
        "PYTHONUNBUFFERED": "1",
    }
    test_env = Env(journal=journal, tmp_path=tmp_path, variables=variables)
    with override_settings(TASKS=_tasks_setting(journal)):
        try:
            yield test_env
        finally:
            for process in test_env.processes:
                if process.poll() is None:
                    process.kill()
                process.communicate()
            for worker in test_env.workers:
                worker.reap()
                # pytest shows this only when the test failed.
                print(f"--- worker {worker.args} output ---\n{worker.output}")  # noqa: T201


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    """A private journal, used by this test process and every worker it starts."""
    with private_env(tmp_path) as test_env:
        yield test_env
