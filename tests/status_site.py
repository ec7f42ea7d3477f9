"""The status page served for a real browser: a journal worked by a real ``procpool_worker``,
``manage.py runserver`` on a free port, and a staff user Chromium logs in as.

Used by ``test_status_page_browser.py`` and by ``python -m tests.make_screenshot``.
Chromium cannot type into a login form, so the server runs with a random token that
``tests.views.login_by_token`` (a test-only URL) exchanges for a session of the staff user:
``site.url("/tasks/")`` logs in and goes there.
"""

from __future__ import annotations

import secrets
import socket
import subprocess
import sys
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

from django.utils import timezone

from procpool_tasks import compat, journal
from procpool_tasks.backend import ProcPoolBackend
from tests import tasks
from tests.conftest import REPO_ROOT, Env, Worker, wait_for
from tests.support import status_of
from tests.views import LOGIN_TOKEN_VARIABLE, LOGIN_USER_VARIABLE

__all__ = ["SCRIPT", "Site", "WorkedJournal", "start_site", "work_a_journal"]

HOST = "127.0.0.1"
STAFF_USERNAME = "ops"
#: Another process can take the port between our probe and the server's bind.
PORT_ATTEMPTS = 3
PORT_IN_USE = "That port is already in use"
#: An argument that would run in the page if it were not escaped.
SCRIPT = "<script>alert(1)</script>"
SCRIPT_THAT_WRITES = '<script>document.title = "escaped? no"</script>'
#: A task path no module has: the worker fails it and quarantines its record.
BAD_TASK_PATH = "reports.tasks.nightly_export"

CREATE_STAFF = """
import sys
from django.contrib.auth.models import User
User.objects.create_user(sys.argv[1], is_staff=True)
"""


@dataclass(frozen=True, slots=True)
class Site:
    """A running ``runserver`` of the test project, and how to log in to it."""

    base_url: str
    token: str
    process: subprocess.Popen[str]
    log_path: Path

    def url(self, path: str) -> str:
        """A URL that logs the staff user in, then shows ``path``."""
        return f"{self.base_url}/test-login/{self.token}/?next={quote(path, safe='')}"


def _port_is_open(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=1):
            return True
    except OSError:
        return False


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def start_site(env: Env) -> Site:
    """Migrate the test database, add the staff user and start ``runserver`` for ``env``.

    The server is one of ``env.processes``: it is killed when the environment ends.
    """
    env.migrate()
    env.run_python(CREATE_STAFF, STAFF_USERNAME)
    token = secrets.token_urlsafe(24)
    variables = {**env.variables, LOGIN_TOKEN_VARIABLE: token, LOGIN_USER_VARIABLE: STAFF_USERNAME}
    for attempt in range(PORT_ATTEMPTS):
        port = _free_port()
        log_path = env.tmp_path / f"runserver-{attempt}.log"
        with log_path.open("w") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "django", "runserver", "--noreload", f"{HOST}:{port}"],
                env=variables,
                cwd=REPO_ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                text=True,
            )
        env.processes.append(process)
        wait_for(
            # B023: the lambda runs before the loop moves on to the next port.
            lambda: process.poll() is not None or _port_is_open(port),  # noqa: B023
            what=f"runserver on port {port} (log: {log_path})",
        )
        if process.poll() is None:
            return Site(f"http://{HOST}:{port}", token, process, log_path)
        output = log_path.read_text(errors="replace")
        if PORT_IN_USE not in output:
            raise AssertionError(f"runserver exited with {process.returncode}:\n{output}")
    raise AssertionError(f"runserver found no free port in {PORT_ATTEMPTS} attempts")


@dataclass
class WorkedJournal:
    """What ``work_a_journal`` left: a task of each kind, and the worker still running."""

    worker: Worker
    successful: list[Any]
    echoed: Any  # echo(SCRIPT, SCRIPT_THAT_WRITES): SUCCESSFUL, its arguments as text
    failed: Any  # fail_with(SCRIPT): FAILED
    running: Any  # block_until: RUNNING until ``release`` exists
    not_importable: str  # an id: FAILED, and its record quarantined
    release: Path

    def finish(self) -> None:
        """Let the running task end and stop the worker."""
        self.release.touch()
        wait_for(lambda: status_of(self.running) == "SUCCESSFUL", what="block_until to finish")
        assert self.worker.stop() == 0


def _append_bad_record() -> str:
    backend = compat.task_backends["default"]
    assert isinstance(backend, ProcPoolBackend)
    return backend.journal.append(
        journal.Record(
            id="",
            task_path=BAD_TASK_PATH,
            args=[],
            kwargs={},
            priority=0,
            queue_name="default",
            backend="default",
            enqueued_at=timezone.now(),
        )
    )


def work_a_journal(env: Env, *, successful: int = 5) -> WorkedJournal:
    """Tasks of every status in ``env``'s journal, worked by a live ``procpool_worker``
    ("web-1", serving 'default' and 'high') that is still running one of them."""
    release, marker = env.tmp_path / "release", env.tmp_path / "started"
    worked = WorkedJournal(
        worker=env.start_worker(
            "--queue-name", "default,high", "--processes", "2", "--worker-id", "web-1"
        ),
        successful=[tasks.add.enqueue(n, n) for n in range(successful)]
        + [tasks.on_high_queue.enqueue(str(env.tmp_path / "high.txt"), "high")],
        echoed=tasks.echo.enqueue(SCRIPT, SCRIPT_THAT_WRITES),
        failed=tasks.fail_with.enqueue(SCRIPT),
        running=tasks.block_until.enqueue(str(release), str(marker)),
        not_importable=_append_bad_record(),
        release=release,
    )
    # Waiting: due now, but on a queue no worker serves; and one deferred an hour.
    tasks.add.using(queue_name="low").enqueue(1, 1)
    tasks.add.using(queue_name="low").enqueue(2, 2)
    tasks.add.using(run_after=timezone.now() + timedelta(hours=1)).enqueue(3, 3)
    wait_for(marker.exists, what="block_until to start")
    env_journal = journal.Journal(env.journal)
    finished = [*worked.successful, worked.echoed]
    wait_for(
        lambda: all(status_of(result) == "SUCCESSFUL" for result in finished),
        what="the add and echo tasks to succeed",
    )
    wait_for(lambda: status_of(worked.failed) == "FAILED", what="fail_with to fail")
    wait_for(
        lambda: (
            (state := env_journal.read_state(worked.not_importable)) is not None
            and state.is_finished
            and (env_journal.quarantine_dir / f"{worked.not_importable}.json").exists()
        ),
        what="the task that does not import to fail and its record to be quarantined",
    )
    return worked
