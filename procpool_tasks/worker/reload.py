"""Development auto-reload: restart the supervisor when the project's Python code changes.

Python cannot unload modules, so, like ``runserver``, the reloader never imports the
project's code itself: it runs the supervisor as a child process (the same command line
with ``--no-reload``) and watches the source with watchfiles. On a change::

    stop     SIGTERM: the supervisor claims nothing more and lets running tasks finish;
             after the grace period a second SIGTERM stops them, and the next supervisor
             recovers them as after a crash (re-run as a new attempt)
    check    every changed file must compile; if one does not, log the error, run
             nothing and wait for the next change
    start    a new supervisor, which imports the installed apps' ``tasks`` modules before
             it claims anything and exits with EXIT_BROKEN_CODE if one fails

Only one supervisor runs at a time, so no task runs twice, and the ready tasks wait in the
journal in priority order while the code is swapped. Not for production: a process
manager restarting the worker on deploy is simpler and loses no throughput.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import signal
import subprocess
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import watchfiles
from django.utils.autoreload import get_child_arguments
from django.utils.module_loading import autodiscover_modules

from ..checks import SQLITE_WARNED_ENV
from .lifeline import die_with_parent

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_GRACE_PERIOD_S",
    "EXIT_BROKEN_CODE",
    "ReloadConfig",
    "SourceFilter",
    "prepare_reloaded_supervisor",
    "run_with_reload",
]

DEFAULT_GRACE_PERIOD_S = 10.0
#: The supervisor's exit code when the project's task modules fail to import.
EXIT_BROKEN_CODE = 4
#: Set in the supervisor's environment to the reloader's pid.
RELOADER_PID_ENV = "PROCPOOL_TASKS_RELOADER_PID"
#: Editors write a file in several steps; wait this long for the last one.
DEBOUNCE_MS = 150
#: How often the reloader looks whether the supervisor exited on its own.
POLL_MS = 250
#: How long a supervisor gets to exit once told to stop at once.
FORCED_STOP_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True, kw_only=True)
class ReloadConfig:
    """What to watch and how to restart."""

    directories: tuple[Path, ...]
    ignore_paths: tuple[Path, ...]
    ignore_patterns: tuple[str, ...]
    grace_period_s: float
    supervisor_command: tuple[str, ...]


class SourceFilter(watchfiles.PythonFilter):
    """Python files only; never virtualenvs, journals, caches, VCS or editor scratch files."""

    ignore_dirs: Sequence[str] = (
        *watchfiles.DefaultFilter.ignore_dirs,
        "venv",
        "site-packages",
        ".nox",
        ".ruff_cache",
    )

    def __init__(self, *, ignore_paths: Iterable[Path], ignore_patterns: Iterable[str]) -> None:
        super().__init__(ignore_paths=[os.fspath(path) for path in ignore_paths])
        self._patterns = tuple(ignore_patterns)

    def __call__(self, change: watchfiles.Change, path: str) -> bool:
        if not super().__call__(change, path):
            return False
        return not any(_matches(path, pattern) for pattern in self._patterns)


def _matches(path: str, pattern: str) -> bool:
    """A glob against the whole path, or against its file name when it has no slash."""
    target = path if "/" in pattern else os.path.basename(path)
    return fnmatch.fnmatch(target, pattern)


def supervisor_command(worker_id: str) -> tuple[str, ...]:
    """This process's own command line, without reloading and with a fixed worker id.

    The worker id stays the same across restarts, so ``worker_ids`` of a task that a
    reload interrupted shows one worker, not one per reload.
    """
    return (*get_child_arguments(), "--no-reload", "--worker-id", worker_id)


def prepare_reloaded_supervisor() -> bool:
    """In a supervisor started by the reloader: tie it to the reloader, import the tasks.

    Returns False, after logging the traceback, when a ``tasks`` module fails to import,
    so that the reloader waits for a fix instead of failing every task.
    """
    reloader_pid = os.environ.get(RELOADER_PID_ENV)
    if not reloader_pid:
        return True
    # A reloader that is killed must not leave a supervisor running unwatched.
    die_with_parent(signal.SIGTERM, parent=int(reloader_pid))
    try:
        autodiscover_modules("tasks")
    except Exception:
        logger.exception("The project's code does not import; waiting for the next change")
        return False
    return True


def run_with_reload(config: ReloadConfig) -> int:
    """Run supervisors until stopped, a new one after each code change; return the exit code."""
    return _Reloader(config).run()


class _Reloader:
    def __init__(self, config: ReloadConfig) -> None:
        self.config = config
        self.supervisor: subprocess.Popen[bytes] | None = None
        self.stops_sent = 0
        self.stop_event = threading.Event()
        self.signals = 0

    def run(self) -> int:
        previous = {
            signum: signal.signal(signum, self._on_signal)
            for signum in (signal.SIGTERM, signal.SIGINT)
        }
        try:
            logger.info(
                "Reloading on changes to Python files in %s",
                ", ".join(map(str, self.config.directories)),
            )
            self._start()
            self._watch()
            return self._wait_for_supervisor()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        # The supervisor runs in its own process group, so a Ctrl-C in the terminal reaches
        # it only through here: first signal graceful, second at once, as for the worker.
        self.signals += 1
        self.stop_event.set()
        self._stop_supervisor(level=min(self.signals, 2))

    def _stop_supervisor(self, *, level: int) -> None:
        """Bring the supervisor's stop up to ``level``: 1 graceful, 2 at once."""
        supervisor = self.supervisor
        while supervisor is not None and supervisor.poll() is None and self.stops_sent < level:
            supervisor.send_signal(signal.SIGTERM)
            self.stops_sent += 1

    def _watch(self) -> None:
        """Reload on each change until a signal comes or the supervisor exits with 0."""
        changes_seen = watchfiles.watch(
            *self.config.directories,
            watch_filter=SourceFilter(
                ignore_paths=self.config.ignore_paths,
                ignore_patterns=self.config.ignore_patterns,
            ),
            debounce=DEBOUNCE_MS,
            step=50,
            rust_timeout=POLL_MS,
            yield_on_timeout=True,
            stop_event=self.stop_event,
            raise_interrupt=False,
        )
        for changes in changes_seen:
            if self.signals or self._exited_with_success():
                return
            if changes:
                self._reload(sorted({path for _, path in changes}))

    def _exited_with_success(self) -> bool:
        """Whether the supervisor finished its work (``--max-tasks``); log a failure."""
        if self.supervisor is None or (code := self.supervisor.poll()) is None:
            return False
        self.supervisor = None
        if code not in (0, EXIT_BROKEN_CODE):  # a broken import logged its own traceback
            logger.error("The worker exited with code %d; waiting for the next change", code)
        return code == 0

    def _reload(self, changed: list[str]) -> None:
        logger.info("Reloading: changed %s", ", ".join(map(_relative, changed)))
        self._stop_supervisor(level=1)
        try:
            self._wait_for_supervisor(timeout=self.config.grace_period_s)
        except subprocess.TimeoutExpired:
            logger.warning(
                "Tasks still running after the %gs grace period; stopping them, they will "
                "run again under the new code",
                self.config.grace_period_s,
            )
            self._stop_supervisor(level=2)
            self._wait_for_supervisor(timeout=FORCED_STOP_TIMEOUT_S, kill=True)
        if not self.signals and _compiles(changed):
            self._start()

    def _start(self) -> None:
        # This process ran the system checks at start; W001 needs saying once, not per reload.
        env = {**os.environ, RELOADER_PID_ENV: str(os.getpid()), SQLITE_WARNED_ENV: "1"}
        command = self.config.supervisor_command
        self.stops_sent = 0
        self.supervisor = subprocess.Popen(command, env=env, process_group=0)  # noqa: S603
        # A signal that came while Popen ran found no supervisor to forward it to.
        self._stop_supervisor(level=min(self.signals, 2))

    def _wait_for_supervisor(self, timeout: float | None = None, *, kill: bool = False) -> int:
        """Wait for the supervisor to exit; its exit code (0 if none runs)."""
        if self.supervisor is None:
            return 0
        try:
            code = self.supervisor.wait(timeout)
        except subprocess.TimeoutExpired:
            if not kill:
                raise
            self.supervisor.kill()
            code = self.supervisor.wait()
        self.supervisor = None
        if code == -signal.SIGTERM and self.stops_sent:
            return 0  # stopped while starting up, before it could claim anything
        return code


def _compiles(paths: Iterable[str]) -> bool:
    """Whether every changed file that still exists is valid Python; log the first error."""
    for path in paths:
        try:
            source = Path(path).read_bytes()
        except FileNotFoundError:
            continue
        try:
            compile(source, path, "exec", dont_inherit=True)
        except (SyntaxError, ValueError):
            # The traceback ends with the file, line and caret of the error.
            logger.exception("%s does not compile; waiting for the next change", path)
            return False
    return True


def _relative(path: str) -> str:
    """Paths under the current directory relative to it, others as they are."""
    relative = os.path.relpath(path)
    return path if relative.startswith("..") else relative
