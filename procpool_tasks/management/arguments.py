"""What the commands share: ``--backend``, the argparse types of their flags, logging.

Each command module imports from here, never from another command, so that a read-only
command such as ``procpool_status`` does not load the worker.
"""

from __future__ import annotations

import sys
from argparse import ArgumentParser, ArgumentTypeError
from collections.abc import Sequence
from typing import Any, Protocol

from django.core.management.base import BaseCommand, CommandError

from procpool_tasks import __version__, compat, logs
from procpool_tasks.backend import ProcPoolBackend, is_positive_seconds

MAX_WORKER_ID_LENGTH = 64
#: The exit code of a command that did what it could and refused some of the tasks given.
EXIT_SOME_REFUSED = 1


class ProcPoolCommand(BaseCommand):
    """The base of every ``procpool_*`` command: ``--version`` is procpool_tasks' own."""

    def get_version(self) -> str:
        return __version__


def valid_backend_alias(value: str) -> str:
    try:
        backend = compat.task_backends[value]
    except compat.InvalidTaskBackend as error:
        raise ArgumentTypeError(error.args[0]) from error
    if not isinstance(backend, ProcPoolBackend):
        raise ArgumentTypeError(f"Backend {value!r} is not a ProcPoolBackend")
    return value


def add_backend_argument(parser: ArgumentParser, what_for: str = "") -> None:
    """``--backend ALIAS``, as every command of this app takes it (``backend_of`` reads it)."""
    parser.add_argument(
        "--backend",
        default=compat.DEFAULT_TASK_BACKEND_ALIAS,
        type=valid_backend_alias,
        dest="backend_alias",
        help=f"The alias of the ProcPoolBackend in TASKS{what_for} (default: %(default)r)",
    )


def backend_of(options: dict[str, Any]) -> ProcPoolBackend:
    """The backend ``--backend`` named (``valid_backend_alias`` checked its class)."""
    backend = compat.task_backends[options["backend_alias"]]
    assert isinstance(backend, ProcPoolBackend)  # noqa: S101 (checked by valid_backend_alias)
    return backend


def positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise ArgumentTypeError(f"{value!r} is not a whole number") from None
    if number <= 0:
        raise ArgumentTypeError(f"must be greater than zero, not {number}")
    return number


def positive_float(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise ArgumentTypeError(f"{value!r} is not a number") from None
    if not is_positive_seconds(number):
        raise ArgumentTypeError(f"must be a number greater than zero, not {value}")
    return number


def positive_seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise ArgumentTypeError(f"{value!r} is not a number of seconds") from None
    if not is_positive_seconds(seconds):
        raise ArgumentTypeError(f"must be a number of seconds > 0, not {value}")
    return seconds


def valid_worker_id(value: str) -> str:
    if not value:
        raise ArgumentTypeError("Worker id must not be empty")
    if len(value) > MAX_WORKER_ID_LENGTH:
        raise ArgumentTypeError(
            f"Worker ids must be at most {MAX_WORKER_ID_LENGTH} characters long"
        )
    return value


def configure_logging(verbosity: int, stream: Any) -> None:
    """-v 0: errors only; -v 1: one line per task start and finish; -v 2: debug."""
    logs.configure(verbosity, stream)


def served_by_default(backend: ProcPoolBackend) -> frozenset[str] | None:
    """The queues a worker serves without --queue-name: its backend's QUEUES; None (every
    queue) when QUEUES is empty, as the backend then accepts any queue name."""
    return frozenset(backend.queues) or None


def parse_queue_names(value: str, backend: ProcPoolBackend) -> frozenset[str] | None:
    """Comma-separated queue names of the backend's QUEUES; None for '*' (every queue)."""
    names = frozenset(name.strip() for name in value.split(",") if name.strip())
    if not names:
        raise CommandError("--queue-name needs at least one queue name, or '*'")
    if "*" in names:
        return None
    unknown = names - backend.queues if backend.queues else set()
    if unknown:
        raise CommandError(
            f"--queue-name: {', '.join(sorted(unknown))} not in the QUEUES of backend "
            f"{backend.alias!r} ({', '.join(sorted(backend.queues))})"
        )
    return names


class _Outcome(Protocol):
    """What ``report_refusals`` reads of an operation's outcome for one task."""

    @property
    def id(self) -> str: ...

    @property
    def refused(self) -> str | None: ...


def report_refusals(command: BaseCommand, outcomes: Sequence[_Outcome], *, done: str) -> None:
    """After the lines of the tasks done: why each refused one was refused (on stderr),
    then the count of each (``done``: what became of those done, e.g. "cancelled").

    Exits with ``EXIT_SOME_REFUSED`` if any task was refused.
    """
    refused = [outcome for outcome in outcomes if outcome.refused is not None]
    for outcome in refused:
        sys.stderr.write(f"Refused {outcome.id}: {outcome.refused}\n")
    command.stdout.write(f"{len(outcomes) - len(refused)} task(s) {done}; {len(refused)} refused")
    if refused:
        raise SystemExit(EXIT_SOME_REFUSED)
