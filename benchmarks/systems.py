"""One adapter per system: its settings, its worker processes, its service, its history.

Every system is driven through the Tasks API with the same ``bench_tasks`` functions;
only what a user would configure differs. A system whose package (or server) is missing
says so, with the command that installs it, instead of being dropped from the report.
"""

from __future__ import annotations

import importlib.util
import platform
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import processes

BENCH_EXTRA = "pip install -e '.[bench]'"


def _django_major() -> int:
    import django  # only its version: the harness never sets Django up

    return int(django.VERSION[0])


def _is_installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _needs(package: str, module: str, *, django: int | None = None) -> str | None:
    """Why a 2026 peer cannot run under this Python and Django, or None: they require
    Python 3.12+ (some Django 6+), which the harness must then run under itself."""
    if sys.version_info < (3, 12):
        return (
            f"needs Python 3.12+ (this run: Python {platform.python_version()}): run "
            f"python -m benchmarks with Python 3.12+ and pip install {package}"
        )
    if django is not None and _django_major() < django:
        return f"needs Django {django}.0+: pip install {package} 'django>={django}'"
    if not _is_installed(module):
        return f"not installed: pip install {package} (or {BENCH_EXTRA})"
    return None


@dataclass
class System:
    """A task queue as a user would set it up; subclasses fill in the specifics."""

    key: str
    label: str
    #: What an acknowledged enqueue survives, in a few words.
    durability: str
    #: The name the client knows it by (``BENCH_SYSTEM_KIND``): how to synthesize history.
    kind: str
    has_worker: bool = True
    #: None if a history of finished tasks can be synthesized; else why not.
    history_unsupported: str | None = "n/a"
    #: None if its backend has get_result (every workload but enqueue waits with it);
    #: else why not.
    results_unsupported: str | None = None
    #: None if get_result shows a task RUNNING (the recovery workload waits for that);
    #: else why the recovery is not measured.
    running_unseen: str | None = None
    #: Built on the django-tasks backport even on Django 6.
    uses_backport: bool = False
    #: What it does with a task whose worker was killed, from its code; "" if it
    #: recovers (the recovery workload shows how soon).
    on_interrupt: str = ""
    #: Which processes the "supervisor CPU per task" figure measures: the ones the
    #: harness starts (``worker_commands``), not their children; and what they do.
    main_process: str = ""

    def missing(self) -> str | None:
        """Why this system cannot run here ("not installed: ..."), or None."""
        return None

    # -- the throwaway project ---------------------------------------------------------------

    def settings(self, directory: Path) -> dict[str, Any]:
        backport = _django_major() < 6 or self.uses_backport
        return {
            "SECRET_KEY": "benchmarks-only",
            "DEBUG": False,
            "USE_TZ": True,
            "TIME_ZONE": "UTC",
            "INSTALLED_APPS": [
                *(["django_tasks"] if backport else []),
                *self.apps(),
            ],
            "DATABASES": {
                "default": {
                    "ENGINE": "django.db.backends.sqlite3",
                    "NAME": str(directory / "db.sqlite3"),
                    # As this project's README asks of every SQLite user with workers.
                    "OPTIONS": {"timeout": 20, "transaction_mode": "IMMEDIATE"},
                }
            },
            "DEFAULT_AUTO_FIELD": "django.db.models.BigAutoField",
            "TASKS": {"default": self.backend_settings(directory)},
            "BENCH_SYSTEM_KIND": self.kind,
            "BENCH_USE_BACKPORT": self.uses_backport,
            **self.extra_settings(directory),
        }

    def apps(self) -> list[str]:
        return []

    def backend_settings(self, directory: Path) -> dict[str, Any]:
        raise NotImplementedError

    def extra_settings(self, directory: Path) -> dict[str, Any]:
        return {}

    def prepare(self, project: Any) -> None:
        """Make a fresh project ready to enqueue (migrations, an empty store)."""

    # -- workers -----------------------------------------------------------------------------

    def worker_commands(self, processes: int) -> list[list[str]]:
        """``django-admin`` arguments of each process to start for ``processes`` workers."""
        raise NotImplementedError

    # -- a service of its own (Redis) --------------------------------------------------------

    def start_service(self, directory: Path) -> None:
        """Start what the system needs besides the project (once per run)."""

    def stop_service(self) -> None:
        pass


class ProcPool(System):
    def __init__(self, *, durable: bool) -> None:
        super().__init__(
            key="procpool" if durable else "procpool-nondurable",
            label="procpool_tasks" + (" (durable)" if durable else ' ("durable": False)'),
            durability=(
                "power loss: fdatasync per enqueue; results group-committed (one WAL sync)"
                if durable
                else "process crashes, not power loss: no fsync"
            ),
            kind="procpool",
            history_unsupported=None if durable else "n/a: measured for the durable default",
            main_process="the supervisor: procpool_worker's own process, all its threads; "
            "its zygote, worker processes, the process that makes result files ahead of "
            "claims and the one that commits finished states not included",
        )
        self.durable = durable

    def apps(self) -> list[str]:
        return ["procpool_tasks"]

    def backend_settings(self, directory: Path) -> dict[str, Any]:
        return {
            "BACKEND": "procpool_tasks.backend.ProcPoolBackend",
            "OPTIONS": {"path": str(directory / "journal"), "durable": self.durable},
        }

    def extra_settings(self, directory: Path) -> dict[str, Any]:
        # The status page, as a project mounts it; rendered in the client (a web process).
        return {
            "ROOT_URLCONF": "benchmarks.urls",
            "ALLOWED_HOSTS": ["testserver"],
            "TEMPLATES": [
                {"BACKEND": "django.template.backends.django.DjangoTemplates", "APP_DIRS": True}
            ],
        }

    def worker_commands(self, processes: int) -> list[list[str]]:
        return [["procpool_worker", "--processes", str(processes)]]


class DjangoTasksDB(System):
    def __init__(self) -> None:
        super().__init__(
            key="db",
            label="django-tasks-db (SQLite)",
            durability="power loss: a SQLite commit (fsync) per enqueue and state change",
            kind="db",
            history_unsupported=None,
            on_interrupt="it has no lease: an interrupted task stays RUNNING for good",
            main_process="no supervisor: the db_worker processes (one per process), summed; "
            "each claims and runs its own tasks, so the tasks' own CPU is in it",
        )
        self._template: Path | None = None

    def missing(self) -> str | None:
        if not _is_installed("django_tasks_db"):
            return f"not installed: pip install django-tasks-db (or {BENCH_EXTRA})"
        return None

    def apps(self) -> list[str]:
        return ["django_tasks_db"]

    def backend_settings(self, directory: Path) -> dict[str, Any]:
        return {"BACKEND": "django_tasks_db.DatabaseBackend"}

    def prepare(self, project: Any) -> None:
        # Migrate once per run; every later project starts from a copy of that database.
        database = project.path("db.sqlite3")
        if self._template is None or not self._template.exists():
            project.manage("migrate", "-v", "0")
            self._template = database.with_name("migrated.sqlite3")
            shutil.copyfile(database, self._template)
        else:
            shutil.copyfile(self._template, database)

    def worker_commands(self, processes: int) -> list[list[str]]:
        # One db_worker per process, as its README scales it; the default 1 s poll.
        return [["db_worker", "--no-startup-delay"] for _ in range(processes)]


class _MigratedOnce(System):
    """A peer whose store is the project's SQLite database: migrated once per run, every
    later project starting from a copy of that database."""

    _template: Path | None = None

    def prepare(self, project: Any) -> None:
        database = project.path("db.sqlite3")
        if self._template is None or not self._template.exists():
            project.manage("migrate", "-v", "0")
            self._template = database.with_name("migrated.sqlite3")
            shutil.copyfile(database, self._template)
        else:
            shutil.copyfile(self._template, database)


class DjangoOx(_MigratedOnce):
    """django-ox: a table in the project's database; workers lease the rows they claim."""

    def __init__(self) -> None:
        super().__init__(
            key="ox",
            label="django-ox (SQLite)",
            # Its backend's docstring: enqueue is a plain INSERT in the caller's
            # transaction, "the durability guarantee".
            durability="power loss: one INSERT committed (a SQLite fsync) per enqueue",
            kind="ox",
            history_unsupported="n/a: the harness synthesizes no django-ox history yet",
            on_interrupt="the killed worker's lease expires after LOCK_TIMEOUT (300 s by "
            "default), then the task goes back on the queue",
            main_process="ox_worker's supervisor process: it starts and watches its child "
            "workers, each of which claims and runs its own tasks, so it is no dispatcher; "
            "the children not included",
        )

    def missing(self) -> str | None:
        return _needs("django-ox", "django_ox")

    def apps(self) -> list[str]:
        return ["django_ox"]

    def backend_settings(self, directory: Path) -> dict[str, Any]:
        return {"BACKEND": "django_ox.backend.OxBackend"}

    def worker_commands(self, processes: int) -> list[list[str]]:
        # Its supervisor with one worker process each (a thread pool of --concurrency 1,
        # the default) and the default 1 s poll when idle.
        return [["ox_worker", "--processes", str(processes)]]


class DjangoDBTasks(_MigratedOnce):
    """django-dbtasks: a table in the project's database; one runner process of threads."""

    def __init__(self) -> None:
        super().__init__(
            key="dbtasks",
            label="django-dbtasks (SQLite)",
            # Its enqueue is ScheduledTask.objects.create(): a commit of its own in
            # autocommit.
            durability="power loss: one INSERT committed (a SQLite fsync) per enqueue",
            kind="dbtasks",
            history_unsupported="n/a: the harness synthesizes no django-dbtasks history yet",
            on_interrupt="a runner restarted under the same worker id refuses to start "
            "(DuplicateWorker) until worker_timeout (60 s by default) has passed since the "
            "killed one's last heartbeat; then it puts that runner's RUNNING tasks back",
            main_process="no supervisor: taskrunner is the only process; its threads claim "
            "and run the tasks, so the tasks' own CPU is in it",
        )

    def missing(self) -> str | None:
        return _needs("django-dbtasks", "dbtasks", django=6)

    def apps(self) -> list[str]:
        return ["dbtasks"]

    def backend_settings(self, directory: Path) -> dict[str, Any]:
        return {"BACKEND": "dbtasks.backend.DatabaseBackend"}

    def worker_commands(self, processes: int) -> list[list[str]]:
        # One runner per machine, as its README scales it: a thread per worker (two
        # runners would share the default worker id, the host name), the default 1 s
        # loop delay.
        return [["taskrunner", "--workers", str(processes)]]


class Huey(System):
    def __init__(self, *, storage: str) -> None:
        super().__init__(
            key=f"huey-{storage}",
            label="huey (SqliteHuey)" if storage == "sqlite" else "huey (FileHuey)",
            durability=(
                "power loss: SQLite WAL, synchronous=FULL (the default)"
                if storage == "sqlite"
                else "process crashes, not power loss: files written without fsync"
            ),
            kind="huey",
            history_unsupported=(
                "n/a: results are a key-value store read by key; no public way to add "
                "100,000 finished tasks short of running them"
            ),
            on_interrupt="a task taken by a killed consumer is gone from the queue and "
            "stays RUNNING",
            main_process="run_huey's main process: it starts and watches the worker "
            "processes and the scheduler's, and each worker dequeues and runs its own tasks, "
            "so it is no dispatcher; the children not included",
        )
        self.storage = storage

    def missing(self) -> str | None:
        spec = importlib.util.find_spec("huey")
        if spec is None or spec.origin is None:
            return f"not installed: pip install huey (or {BENCH_EXTRA})"
        # Not imported: huey.contrib.djhuey reads Django's settings when imported.
        if not (Path(spec.origin).parent / "contrib" / "djhuey" / "tasks_backend.py").exists():
            return "not installed: this huey has no Django Tasks backend; pip install -U huey"
        return None

    def apps(self) -> list[str]:
        return ["huey.contrib.djhuey"]

    def backend_settings(self, directory: Path) -> dict[str, Any]:
        return {"BACKEND": "huey.contrib.djhuey.tasks_backend.HueyBackend"}

    def extra_settings(self, directory: Path) -> dict[str, Any]:
        store: dict[str, Any] = (
            {"huey_class": "huey.SqliteHuey", "filename": str(directory / "huey.sqlite3")}
            if self.storage == "sqlite"
            else {"huey_class": "huey.FileHuey", "path": str(directory / "huey-files")}
        )
        return {"HUEY": {"name": "bench", "immediate": False, **store}}

    def prepare(self, project: Any) -> None:
        # FileHuey creates its directory if it does not exist (a check, then makedirs):
        # a consumer and a client starting together race, and one fails to start.
        project.path("huey-files").mkdir(exist_ok=True)

    def worker_commands(self, processes: int) -> list[list[str]]:
        # The process consumer, its default polling (0.1 s, backing off to 10 s).
        return [["run_huey", "-w", str(processes), "-k", "process"]]


#: What a system on Redis says where the harness cannot start a redis-server.
REDIS_SERVER_MISSING = (
    "redis-server not found: apt-get install redis-server (the harness starts its own on a "
    "free loopback port)"
)


class _OnRedisServer(System):
    """A system whose backend talks to a redis-server the harness starts, once per run,
    on a free loopback port, and flushes before each project."""

    port: int | None = None
    _server: processes.Started | None = None

    def start_service(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.port = processes.free_loopback_port()
        self._server = processes.spawn(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", "."],
            env={"PATH": "/usr/local/bin:/usr/bin:/bin"},
            cwd=directory,
            log_path=directory / "redis-server.log",
        )
        deadline = time.monotonic() + 10
        while self._redis("PING") != "+PONG":
            if time.monotonic() > deadline or self._server.process.poll() is not None:
                raise RuntimeError(f"redis-server did not start:\n{self._server.output_tail()}")
            time.sleep(0.05)

    def prepare(self, project: Any) -> None:
        if self._redis("FLUSHALL") != "+OK":
            raise RuntimeError("redis-server did not flush")

    def stop_service(self) -> None:
        if self._server is not None:
            processes.stop([self._server])
            self._server = None

    def _redis(self, command: str) -> str:
        """One inline command to the harness's redis-server; its reply, or "" if none."""
        assert self.port is not None  # noqa: S101 (started)
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=5) as connection:
                connection.sendall(command.encode() + b"\r\n")
                return connection.recv(256).decode().strip()
        except OSError:
            return ""


class RQ(_OnRedisServer):
    def __init__(self) -> None:
        super().__init__(
            key="rq",
            label="RQ (django-tasks-rq, Redis)",
            durability="neither: Redis in memory with its default RDB snapshots",
            kind="rq",
            history_unsupported=(
                "n/a: finished jobs are Redis hashes read by key and expire after "
                "result_ttl (500 s by default)"
            ),
            uses_backport=True,
            on_interrupt="the killed worker's work horse runs on as an orphan; RQ fails "
            "abandoned jobs in a maintenance pass (every 10 min) once their timeout expired",
            main_process="no supervisor: the rqworker processes (one per process), summed; "
            "each dequeues a job and forks a work horse per job, which runs it and saves its "
            "result: the forks are in it, the horses are not",
        )

    def missing(self) -> str | None:
        if not _is_installed("django_tasks_rq"):
            return f"not installed: pip install django-tasks-rq redis (or {BENCH_EXTRA})"
        if shutil.which("redis-server") is None:
            return REDIS_SERVER_MISSING
        return None

    def apps(self) -> list[str]:
        return ["django_rq", "django_tasks_rq"]

    def backend_settings(self, directory: Path) -> dict[str, Any]:
        return {"BACKEND": "django_tasks_rq.RQBackend", "QUEUES": ["default"]}

    def extra_settings(self, directory: Path) -> dict[str, Any]:
        return {"RQ_QUEUES": {"default": {"HOST": "127.0.0.1", "PORT": self.port, "DB": 0}}}

    def worker_commands(self, processes: int) -> list[list[str]]:
        # One rqworker per process (each forks a work horse per job, RQ's default).
        return [
            ["rqworker", "default", "--job-class", "django_tasks_rq.Job"] for _ in range(processes)
        ]


class VTasks(_OnRedisServer):
    """django-vtasks on its Valkey backend, against the harness's redis-server (Redis 7+
    is what its README asks for; Valkey itself is not packaged for this Debian)."""

    def __init__(self) -> None:
        super().__init__(
            key="vtasks",
            label="django-vtasks (Valkey backend, Redis)",
            durability="neither: Redis in memory with its default RDB snapshots",
            kind="vtasks",
            history_unsupported=(
                "n/a: finished tasks are Redis keys read by key; the harness synthesizes none"
            ),
            on_interrupt="a task of a killed worker is not rescued by default "
            "(VTASKS_MAX_RESCUES = 0): it goes to the dead-letter queue",
            results_unsupported="n/a: its backends have no get_result (supports_get_result "
            "is False), with which the harness waits for tasks; only enqueue is measured",
            main_process="no supervisor: runworker is the only process (asyncio, sync tasks "
            "in threads), so the tasks' own CPU is in it",
        )

    def missing(self) -> str | None:
        why = _needs("django-vtasks[valkey]", "django_vtasks", django=6)
        if why is None and not _is_installed("django_vcache"):
            why = f"not installed: pip install 'django-vtasks[valkey]' (or {BENCH_EXTRA})"
        if why is None and shutil.which("redis-server") is None:
            why = (
                "redis-server not found: apt-get install redis-server (valkey-server is not "
                "packaged for Debian 12; Redis 7+ serves its Valkey backend)"
            )
        return why

    def apps(self) -> list[str]:
        return ["django_vtasks"]

    def backend_settings(self, directory: Path) -> dict[str, Any]:
        return {
            "BACKEND": "django_vtasks.backends.valkey.ValkeyTaskBackend",
            "OPTIONS": {"BROKER_URL": f"redis://127.0.0.1:{self.port}/0"},
        }

    def worker_commands(self, processes: int) -> list[list[str]]:
        # One asyncio worker process; sync tasks run in threads, --concurrency at once
        # (VTASKS_CONCURRENCY, 20 by default: here the processes asked for).
        return [["runworker", "--concurrency", str(processes)]]


class Threadmill(_OnRedisServer):
    """threadmill on its Redis backend, against the harness's redis-server.

    Its releases from 0.4.0 on require Python 3.14 (0.8 Django 6.1 too); 0.3.1 is the last
    for Python 3.12 and 3.13. Its worker command and settings are the same in both.
    """

    def __init__(self) -> None:
        super().__init__(
            key="threadmill",
            label="threadmill (Redis)",
            # Its README: "We never lose data, even if someone unplugs the power"; that
            # takes a Redis with appendfsync always, which is not its default.
            durability="neither: Redis in memory with its default RDB snapshots (no "
            "appendfsync, which power loss would need)",
            kind="threadmill",
            history_unsupported=(
                "n/a: finished tasks are Redis keys read by key; the harness synthesizes none"
            ),
            on_interrupt="a task of a killed worker stays RUNNING until its lease_ttl (1 h "
            "by default) expires; then its broker marks it FAILED (AcknowledgementTimeout)",
            running_unseen="n/a: its get_result knows a task only once a worker "
            "acknowledged it (TaskResultDoesNotExist before), so the harness cannot see "
            "the interrupted tasks running",
            main_process="threadmill worker's main process: it starts and watches the "
            "worker processes and runs the broker's maintenance pass (every 1 s); each "
            "worker acquires and runs its own tasks, so it is no dispatcher; the children "
            "not included",
        )

    def missing(self) -> str | None:
        why = _needs("'threadmill[redis]'", "threadmill", django=6)
        if why is None and not _is_installed("redis"):
            why = f"not installed: pip install 'threadmill[redis]' (or {BENCH_EXTRA})"
        if why is None and shutil.which("redis-server") is None:
            why = REDIS_SERVER_MISSING
        return why

    def apps(self) -> list[str]:
        return ["threadmill"]

    def backend_settings(self, directory: Path) -> dict[str, Any]:
        return {
            "BACKEND": "threadmill.backends.redis.RedisTaskBackend",
            "REDIS_URL": f"redis://127.0.0.1:{self.port}/0",
        }

    def worker_commands(self, processes: int) -> list[list[str]]:
        # Its pool of worker processes, one thread each (the default --threads 1).
        return [["threadmill", "worker", "--workers", str(processes)]]


class Immediate(System):
    def __init__(self) -> None:
        super().__init__(
            key="immediate",
            label="ImmediateBackend",
            durability="nothing is stored: the task runs inside enqueue",
            kind="immediate",
            has_worker=False,
            history_unsupported="n/a: stores nothing",
        )

    def backend_settings(self, directory: Path) -> dict[str, Any]:
        package = "django.tasks" if _django_major() >= 6 else "django_tasks"
        return {"BACKEND": f"{package}.backends.immediate.ImmediateBackend"}


def all_systems() -> list[System]:
    """Every system of the report, procpool_tasks (durable) first: the reference."""
    return [
        ProcPool(durable=True),
        ProcPool(durable=False),
        DjangoTasksDB(),
        Huey(storage="sqlite"),
        Huey(storage="file"),
        RQ(),
        Immediate(),
        DjangoOx(),
        DjangoDBTasks(),
        VTasks(),
        Threadmill(),
    ]


REFERENCE = "procpool"


def redis_version() -> str | None:
    if shutil.which("redis-server") is None:
        return None
    done = subprocess.run(
        ["redis-server", "--version"], capture_output=True, text=True, check=False
    )
    return done.stdout.strip() or None
