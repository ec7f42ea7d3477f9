"""Tasks for the tests; each name says what it does."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Any

from procpool_tasks.compat import TaskContext

try:
    from django.tasks import task
except ImportError:  # Django < 6
    from django_tasks import task  # type: ignore[no-redef]


@task()
def add(a: int, b: int) -> int:
    return a + b


@task()
def echo(*args: Any, **kwargs: Any) -> dict[str, Any]:
    return {"args": list(args), "kwargs": kwargs}


@task()
def append_line(path: str, line: str) -> str:
    """Append ``line`` to a file: the order of lines is the order tasks ran in."""
    with open(path, "a") as file:
        file.write(line + "\n")
    return line


@task(queue_name="high")
def on_high_queue(path: str, line: str) -> str:
    return append_line.call(path, line)


@task()
def sleep_for(seconds: float, marker: str | None = None) -> float:
    """Sleep; touch ``marker`` first so a test knows the task has started."""
    if marker:
        Path(marker).touch()
    time.sleep(seconds)
    return seconds


@task()
def fail_with(message: str) -> None:
    raise ValueError(message)


@task()
def append_line_and_fail_until(path: str, line: str, release: str) -> str:
    """Append ``line`` to ``path`` (one line per run), then fail until ``release`` exists.

    A transient failure that a test ends when it wants: run again after that, it succeeds.
    """
    with open(path, "a") as file:
        file.write(line + "\n")
    if not Path(release).exists():
        raise FileNotFoundError(f"{release} does not exist yet")
    return line


@task()
def return_unserialisable() -> object:
    return {1, 2, 3}


@task(takes_context=True)
def report_context(context: TaskContext[Any, Any]) -> dict[str, Any]:
    return {
        "id": context.task_result.id,
        "attempt": context.attempt,
        "worker_ids": list(context.task_result.worker_ids),
        "status": str(context.task_result.status),
    }


@task()
async def async_add(a: int, b: int) -> int:
    await asyncio.sleep(0)
    return a + b


@task()
def process_id() -> int:
    return os.getpid()


@task()
def exit_hard(code: int = 3) -> None:
    os._exit(code)


def not_a_task() -> str:
    return "plain function"


@task()
def block_until(release: str, marker: str, timeout: float = 60.0) -> str:
    """Touch ``marker``, then run until the file ``release`` exists (or fail at ``timeout``).

    A test holds the task RUNNING for exactly as long as it needs, with no guessed sleep.
    """
    Path(marker).touch()
    deadline = time.monotonic() + timeout
    while not Path(release).exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{release} did not appear within {timeout}s")
        time.sleep(0.01)
    return "released"


@task()
def log_pid_then_block(log: str, release: str, ignore_sigterm: bool = False) -> int:
    """Append this process's pid to ``log`` (a line per run), then run until ``release``
    exists; with ``ignore_sigterm``, a task that does not stop on SIGTERM."""
    if ignore_sigterm:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, f"{os.getpid()}\n".encode())
    finally:
        os.close(fd)
    deadline = time.monotonic() + 60.0
    while not Path(release).exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{release} did not appear within 60s")
        time.sleep(0.01)
    return os.getpid()


@task()
def create_note(text: str) -> int:
    """Write a ``Note`` row to the database and return its pk."""
    from tests.models import Note

    return Note.objects.create(text=text).pk


@task()
def increment_counter(name: str, pause: float = 0.005) -> int:
    """Read a ``Counter``, pause, write it back: a read-modify-write in one transaction.

    Two of these in two processes at once make SQLite's deferred BEGIN fail with
    "database is locked"; the pause makes their transactions overlap every time.
    """
    from django.db import transaction

    from tests.models import Counter

    with transaction.atomic():
        counter = Counter.objects.get(name=name)
        time.sleep(pause)
        counter.value += 1
        counter.save(update_fields=["value"])
    return counter.value


@task()
def hold_write_lock(seconds: float) -> int:
    """Write a ``Note`` and keep the transaction open ``seconds``: SQLite's write lock, held."""
    from django.db import transaction

    from tests.models import Note

    with transaction.atomic():
        note = Note.objects.create(text="held")
        time.sleep(seconds)
    return note.pk


@task()
def database_options() -> dict[str, Any]:
    """The default database's OPTIONS as the worker process connects with them."""
    from django.db import connection

    return dict(connection.settings_dict["OPTIONS"])


# -- retries (tests/test_retries.py) ----------------------------------------------------------


class TransientError(Exception):
    """The error the tests' retry policies list: worth another attempt."""


class ConnectionDropped(TransientError):
    """A subclass of a listed error: retried too."""


_ERRORS: dict[str, type[Exception]] = {
    "TransientError": TransientError,
    "ConnectionDropped": ConnectionDropped,
    "ValueError": ValueError,
}


@task()
def fail_times(log: str, failures: int, error: str = "TransientError") -> int:
    """Log when this attempt started, then raise ``error`` on the first ``failures`` attempts.

    The attempt is the number of lines in ``log``; the successful one returns it.
    """
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, f"{time.time()!r}\n".encode())
    finally:
        os.close(fd)
    attempt = len(Path(log).read_text().splitlines())
    if attempt <= failures:
        raise _ERRORS[error](f"attempt {attempt} of {failures} planned failures")
    return attempt
