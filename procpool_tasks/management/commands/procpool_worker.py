"""``manage.py procpool_worker``: run the tasks of a ProcPoolBackend in a process pool."""

from __future__ import annotations

import contextlib
import os
import sys
from argparse import ArgumentParser, BooleanOptionalAction
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import CommandError
from django.utils.crypto import get_random_string

from procpool_tasks import compat
from procpool_tasks.backend import ProcPoolBackend
from procpool_tasks.management.arguments import (
    ProcPoolCommand,
    add_backend_argument,
    backend_of,
    configure_logging,
    parse_queue_names,
    positive_float,
    positive_int,
    positive_seconds,
    served_by_default,
    valid_worker_id,
)
from procpool_tasks.worker import reload
from procpool_tasks.worker.supervisor import EXIT_OK, SupervisorConfig, run_supervisor


class Command(ProcPoolCommand):
    help = (
        "Run the tasks of a ProcPoolBackend: a supervisor reads the journal and runs ready "
        "tasks, highest priority first, in a pool of worker processes."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        self._add_what_to_run(parser)
        self._add_limits(parser)
        self._add_reload(parser)

    @staticmethod
    def _add_what_to_run(parser: ArgumentParser) -> None:
        parser.add_argument(
            "--processes",
            type=positive_int,
            default=os.cpu_count() or 1,
            help="How many worker processes run tasks at once (default: CPU count, %(default)s)",
        )
        parser.add_argument(
            "--queue-name",
            default=None,
            help="The queues to process, separated by commas; '*' for every queue, those not "
            "in QUEUES too (default: every queue of the backend's QUEUES; all when QUEUES "
            "is empty)",
        )
        add_backend_argument(parser, " to run")
        parser.add_argument(
            "--batch",
            action="store_true",
            help="Run the tasks that are ready now, then exit 0",
        )
        parser.add_argument(
            "--worker-id",
            type=valid_worker_id,
            default=get_random_string(32),
            help="The id recorded in each task's worker_ids; unique per worker (default: random)",
        )

    @staticmethod
    def _add_limits(parser: ArgumentParser) -> None:
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
            "--max-memory-per-child",
            type=positive_float,
            default=None,
            metavar="MIB",
            help="Replace a worker process whose resident memory (RSS) is over this many "
            "MiB (mebibytes, 1 MiB = 1,048,576 bytes) after a task, when the task keeps its "
            "outcome, or while a task runs, when the process is killed at once and the task "
            "ends FAILED with MemoryLimitExceeded (default: no limit)",
        )
        parser.add_argument(
            "--task-timeout",
            type=positive_seconds,
            default=None,
            help="Seconds a task may run before it is stopped and marked FAILED; a "
            "'timeout' in OPTIONS['task_options'] for the task wins (default: "
            "OPTIONS['task_timeout'], else no limit)",
        )

    @staticmethod
    def _add_reload(parser: ArgumentParser) -> None:
        parser.add_argument(
            "--reload",
            action=BooleanOptionalAction,
            default=None,
            help="Restart the worker when a Python file of the project changes; for "
            f"development only (default: DEBUG, now {settings.DEBUG}, but never with --batch)",
        )
        parser.add_argument(
            "--reload-dir",
            action="append",
            type=Path,
            default=None,
            dest="reload_dirs",
            metavar="DIRECTORY",
            help="With --reload: a directory to watch, repeatable (default: BASE_DIR, else "
            "the current directory, and the settings module's directory)",
        )
        parser.add_argument(
            "--reload-ignore",
            action="append",
            default=[],
            dest="reload_ignore",
            metavar="PATTERN",
            help="With --reload: a glob of files not to watch, repeatable; matched against "
            "the file name, or the whole path if it has a '/'. Virtualenvs, journals, "
            "__pycache__, VCS directories and editor scratch files are always ignored",
        )
        parser.add_argument(
            "--reload-grace-period",
            type=positive_seconds,
            default=reload.DEFAULT_GRACE_PERIOD_S,
            metavar="SECONDS",
            help="With --reload: how long running tasks may take to finish before a reload "
            "stops them; stopped tasks run again under the new code, and a reload does not "
            "count as an attempt (default: %(default)g)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        # The stream itself (``call_command``'s, or the process's), not Django's wrapper of
        # it: the wrapper's checks and styling cost the supervisor on each task's two lines.
        configure_logging(options["verbosity"], options.get("stdout") or sys.stdout)
        backend = backend_of(options)
        queue_names = (
            served_by_default(backend)
            if options["queue_name"] is None
            else parse_queue_names(options["queue_name"], backend)
        )
        reloading = options["reload"]
        if reloading is None:
            reloading = settings.DEBUG and not options["batch"]
        elif reloading and options["batch"]:
            raise CommandError("--reload cannot be used with --batch; pass --no-reload")
        if reloading:
            _exit(reload.run_with_reload(_reload_config(options)))
            return
        if not reload.prepare_reloaded_supervisor():
            raise SystemExit(reload.EXIT_BROKEN_CODE)
        config = SupervisorConfig(
            backend=backend,
            processes=options["processes"],
            queue_names=queue_names,
            worker_id=options["worker_id"],
            batch=options["batch"],
            max_tasks=options["max_tasks"],
            max_tasks_per_child=options["max_tasks_per_child"],
            max_memory_per_child=options["max_memory_per_child"],
            task_timeout=options["task_timeout"],
            verbosity=options["verbosity"],
            reload_requests=reload.ReloadRequests.from_environment(),
        )
        _exit(run_supervisor(config))


def _exit(code: int) -> None:
    """Exit with a failing code; return on success, so ``call_command`` returns too."""
    if code != EXIT_OK:
        raise SystemExit(code)


def _reload_config(options: dict[str, Any]) -> reload.ReloadConfig:
    directories = options["reload_dirs"] or _project_directories()
    for directory in directories:
        if not directory.is_dir():
            raise CommandError(f"--reload-dir: {directory} is not a directory")
    return reload.ReloadConfig(
        directories=tuple(directory.resolve() for directory in directories),
        ignore_paths=tuple(_never_watched()),
        ignore_patterns=tuple(options["reload_ignore"]),
        grace_period_s=options["reload_grace_period"],
        supervisor_command=reload.supervisor_command(options["worker_id"]),
    )


def _project_directories() -> list[Path]:
    """BASE_DIR (else the current directory) and the settings module's directory."""
    base_dir = Path(getattr(settings, "BASE_DIR", None) or Path.cwd()).resolve()
    settings_file = getattr(sys.modules.get(settings.SETTINGS_MODULE), "__file__", None)
    settings_dir = Path(settings_file).resolve().parent if settings_file else base_dir
    if settings_dir.is_relative_to(base_dir):
        return [base_dir]
    return [base_dir, settings_dir]


def _never_watched() -> list[Path]:
    """The journals of every ProcPoolBackend, and the running virtualenv."""
    paths = [Path(sys.prefix)] if sys.prefix != sys.base_prefix else []
    for alias in settings.TASKS:
        backend = compat.task_backends[alias]
        if isinstance(backend, ProcPoolBackend):
            with contextlib.suppress(ImproperlyConfigured):
                paths.append(backend.backend_options.path.resolve())
    return paths
