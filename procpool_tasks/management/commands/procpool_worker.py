"""``manage.py procpool_worker``: run the tasks of a ProcPoolBackend in a process pool."""

from __future__ import annotations

import logging
import os
from argparse import ArgumentParser, ArgumentTypeError, BooleanOptionalAction
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.utils.crypto import get_random_string

from procpool_tasks import compat
from procpool_tasks.backend import ProcPoolBackend, is_positive_seconds
from procpool_tasks.supervisor import SupervisorConfig, run_supervisor

MAX_WORKER_ID_LENGTH = 64


def valid_backend_alias(value: str) -> str:
    try:
        backend = compat.task_backends[value]
    except compat.InvalidTaskBackend as error:
        raise ArgumentTypeError(error.args[0]) from error
    if not isinstance(backend, ProcPoolBackend):
        raise ArgumentTypeError(f"Backend {value!r} is not a ProcPoolBackend")
    return value


def positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise ArgumentTypeError(f"{value!r} is not a whole number") from None
    if number <= 0:
        raise ArgumentTypeError(f"must be greater than zero, not {number}")
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
    level = {0: logging.ERROR, 1: logging.INFO}.get(verbosity, logging.DEBUG)
    for logger in (logging.getLogger("procpool_tasks"), compat.FRAMEWORK_LOGGER):
        logger.setLevel(level if logger.name == "procpool_tasks" else max(level, logging.WARNING))
        if not logger.hasHandlers():
            handler = logging.StreamHandler(stream)
            handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
            logger.addHandler(handler)


class Command(BaseCommand):
    help = (
        "Run the tasks of a ProcPoolBackend: a supervisor reads the journal and runs ready "
        "tasks, highest priority first, in a pool of worker processes."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument(
            "--processes",
            type=positive_int,
            default=os.cpu_count() or 1,
            help="How many worker processes run tasks at once (default: CPU count, %(default)s)",
        )
        parser.add_argument(
            "--queue-name",
            default=compat.DEFAULT_TASK_QUEUE_NAME,
            help="The queues to process, separated by commas; '*' for all (default: %(default)r)",
        )
        parser.add_argument(
            "--backend",
            default=compat.DEFAULT_TASK_BACKEND_ALIAS,
            type=valid_backend_alias,
            dest="backend_alias",
            help="The alias of the ProcPoolBackend in TASKS to run (default: %(default)r)",
        )
        parser.add_argument(
            "--batch",
            action="store_true",
            help="Run the tasks that are ready now, then exit 0",
        )
        parser.add_argument(
            "--max-tasks",
            type=positive_int,
            default=None,
            help="Exit after running this many tasks",
        )
        parser.add_argument(
            "--max-tasks-per-child",
            type=positive_int,
            default=None,
            help="Replace a worker process after it ran this many tasks, to bound "
            "memory leaks (default: never)",
        )
        parser.add_argument(
            "--task-timeout",
            type=positive_seconds,
            default=None,
            help="Seconds a task may run before it is stopped and marked FAILED "
            "(default: the backend's OPTIONS['task_timeout'], else no limit)",
        )
        parser.add_argument(
            "--worker-id",
            type=valid_worker_id,
            default=get_random_string(32),
            help="The id recorded in each task's worker_ids; unique per worker (default: random)",
        )
        parser.add_argument(
            "--reload",
            action=BooleanOptionalAction,
            default=settings.DEBUG,
            help="Restart the worker when the project's code changes; for development "
            "(default: DEBUG). Not available yet: the worker runs without reloading.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        configure_logging(options["verbosity"], self.stdout)
        backend = compat.task_backends[options["backend_alias"]]
        assert isinstance(backend, ProcPoolBackend)  # noqa: S101 (checked by valid_backend_alias)
        queue_names = _parse_queue_names(options["queue_name"], backend)
        if options["reload"] and options["batch"]:
            raise CommandError("--reload cannot be used with --batch; pass --no-reload")
        if options["reload"]:
            logging.getLogger("procpool_tasks").warning(
                "--reload is not available yet; running without reloading"
            )
        config = SupervisorConfig(
            backend=backend,
            processes=options["processes"],
            queue_names=queue_names,
            worker_id=options["worker_id"],
            batch=options["batch"],
            max_tasks=options["max_tasks"],
            max_tasks_per_child=options["max_tasks_per_child"],
            task_timeout=options["task_timeout"] or backend.backend_options.task_timeout,
            verbosity=options["verbosity"],
        )
        raise SystemExit(run_supervisor(config))


def _parse_queue_names(value: str, backend: ProcPoolBackend) -> frozenset[str] | None:
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
