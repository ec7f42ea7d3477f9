"""Development auto-reload: restart the supervisor when the project's Python code changes.

Python cannot unload modules, so, like ``runserver``, the reloader never imports the
project's code itself: it runs the supervisor as a child process (the same command line
with ``--no-reload``) and watches the source with watchfiles. On a change::

    stop     a reload request on the supervisor's pipe (``ReloadRequests``), not a signal:
             the supervisor claims nothing more and lets running tasks finish; after the
             grace period it stops them itself and records them READY again with an
             error that names the reload, not as an attempt (``max_attempts``), then
             exits 0 like after a graceful stop, leaving nothing to recover
    check    every changed file must compile; if one does not, log the error the way
             ``runserver`` does, run nothing and wait for the next change
    start    a new supervisor, which imports the installed apps' ``tasks`` modules before
             it claims anything and exits with EXIT_BROKEN_CODE if one fails

A signal to the reloader (Ctrl-C, a process manager's SIGTERM) is passed on to the
supervisor as it came, first a graceful stop, then a stop at once. The supervisor starts
with SIGTERM and SIGINT blocked, so that one which comes while it sets Django up waits
until its own handlers take it, instead of killing it half-started.

Only one supervisor runs at a time, so no task runs twice, and the ready tasks wait in the
journal in priority order while the code is swapped. Not for production: a process
manager restarting the worker on deploy is simpler and loses no throughput.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import os
import signal
import subprocess
import threading
import traceback
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
    "ReloadRequest",
    "ReloadRequests",
    "SourceFilter",
    "prepare_reloaded_supervisor",
    "run_with_reload",
]

DEFAULT_GRACE_PERIOD_S = 10.0
#: The supervisor's exit code when the project's task modules fail to import.
EXIT_BROKEN_CODE = 4
#: Set in the supervisor's environment to the reloader's pid.
RELOADER_PID_ENV = "PROCPOOL_TASKS_RELOADER_PID"
#: Set in the supervisor's environment to the pipe it reads reload requests from.
RELOAD_REQUESTS_FD_ENV = "PROCPOOL_TASKS_RELOAD_REQUESTS_FD"
#: Set in the environment of a supervisor started for a reload: the files that changed.
RELOADED_FOR_ENV = "PROCPOOL_TASKS_RELOADED_FOR"
#: The signals that stop a supervisor, passed on as they came.
STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT})
#: Editors write a file in several steps; wait this long for the last one.
DEBOUNCE_MS = 150
#: How often the reloader looks whether the supervisor exited on its own.
POLL_MS = 250
#: How long past its grace period a reloading supervisor gets to exit before it is killed.
FORCED_STOP_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True, kw_only=True)
class ReloadConfig:
    """What to watch and how to restart."""

    directories: tuple[Path, ...]
    ignore_paths: tuple[Path, ...]
    ignore_patterns: tuple[str, ...]
    grace_period_s: float
    supervisor_command: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class ReloadRequest:
    """The reloader asks its supervisor to stop for new code."""

    changed: str  # the files that changed, as the log names them
    grace_period_s: float

    def encode(self) -> bytes:
        return json.dumps({"changed": self.changed, "grace_period_s": self.grace_period_s}).encode()


class ReloadRequests:
    """The supervisor's end of the pipe through which its reloader asks it to reload.

    A pipe and not a signal, so that the supervisor knows what changed, and that it stops
    for a reload: it then records its running tasks READY again itself.
    """

    def __init__(self, fd: int, *, reloaded_for: str | None = None) -> None:
        self._fd = fd
        self._buffer = b""
        #: The files whose change started this supervisor; None for the first one.
        self.reloaded_for = reloaded_for
        #: The reloader closed its end: it exited (and its exit stops us, ``lifeline``).
        self.closed = False
        os.set_blocking(fd, False)
        os.set_inheritable(fd, False)  # not for the tasks' processes (the zygote closes it)

    @classmethod
    def from_environment(cls) -> ReloadRequests | None:
        """In a supervisor that a reloader started, its requests; None in any other."""
        fd = os.environ.pop(RELOAD_REQUESTS_FD_ENV, None)
        reloaded_for = os.environ.pop(RELOADED_FOR_ENV, None)
        return None if fd is None else cls(int(fd), reloaded_for=reloaded_for)

    def fileno(self) -> int:
        return self._fd

    def read(self) -> list[ReloadRequest]:
        """The requests that came since the last call; never blocks."""
        try:
            data = os.read(self._fd, 65536)
        except BlockingIOError:
            return []
        if not data:
            self.closed = True
            return []
        *lines, self._buffer = (self._buffer + data).split(b"\n")
        return [ReloadRequest(**json.loads(line)) for line in lines if line]

    def close(self) -> None:
        os.close(self._fd)


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
        self.requests_fd: int | None = None  # our end of the supervisor's ReloadRequests
        self.stops_sent = 0
        self.stop_event = threading.Event()
        self.signals: list[int] = []
        self.exit_code = 0  # of a supervisor that a signal stopped while it reloaded

    def run(self) -> int:
        previous = {signum: signal.signal(signum, self._on_signal) for signum in STOP_SIGNALS}
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
        self.signals.append(signum)
        self.stop_event.set()
        self._pass_signals_on()

    def _pass_signals_on(self) -> None:
        """Send the supervisor the signals it has not had yet (at most two), as they came."""
        supervisor = self.supervisor
        while (
            supervisor is not None
            and supervisor.poll() is None
            and self.stops_sent < min(len(self.signals), 2)
        ):
            supervisor.send_signal(self.signals[self.stops_sent])
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
        self._forget_supervisor()
        if code not in (0, EXIT_BROKEN_CODE):  # a broken import logged its own traceback
            logger.error("The worker exited with code %d; waiting for the next change", code)
        return code == 0

    def _reload(self, changed: list[str]) -> None:
        described = ", ".join(map(_relative, changed))
        request = ReloadRequest(changed=described, grace_period_s=self.config.grace_period_s)
        if not self._ask_to_reload(request):  # none runs: nothing to stop, we say it
            logger.info("Reloading: changed %s", described)
        try:
            code = self._wait_for_supervisor(
                timeout=self.config.grace_period_s + FORCED_STOP_TIMEOUT_S
            )
        except subprocess.TimeoutExpired:
            if self.signals:  # stopping on a signal now: the next signal decides
                code = self._wait_for_supervisor()
            else:
                logger.error(
                    "The worker did not stop within %gs of the reload; killing it, its "
                    "running tasks run again on the next start as a new attempt",
                    self.config.grace_period_s + FORCED_STOP_TIMEOUT_S,
                )
                code = self._wait_for_supervisor(timeout=0, kill=True)
        if self.signals:
            self.exit_code = code  # ours, as if it had stopped outside a reload
        elif _compiles(changed):
            self._start(reloaded_for=described)

    def _ask_to_reload(self, request: ReloadRequest) -> bool:
        """Send the running supervisor ``request``; False if none runs to take it."""
        if self.supervisor is None or self.supervisor.poll() is not None:
            return False
        assert self.requests_fd is not None  # noqa: S101 (made with the supervisor)
        try:
            os.write(self.requests_fd, request.encode() + b"\n")
        except OSError:  # it exited meanwhile (EPIPE)
            return False
        return True

    def _start(self, *, reloaded_for: str | None = None) -> None:
        requests_fd, self.requests_fd = os.pipe()
        # This process ran the system checks at start; W001 needs saying once, not per reload.
        env = {
            **os.environ,
            RELOADER_PID_ENV: str(os.getpid()),
            RELOAD_REQUESTS_FD_ENV: str(requests_fd),
            SQLITE_WARNED_ENV: "1",
        }
        if reloaded_for is not None:
            env[RELOADED_FOR_ENV] = reloaded_for
        self.stops_sent = 0
        # Blocked here, they are blocked in the supervisor until its handlers take them
        # (``Supervisor.open``), and a signal that comes while Popen runs is passed on
        # once the supervisor is there to get it.
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            self.supervisor = subprocess.Popen(  # noqa: S603
                self.config.supervisor_command, env=env, process_group=0, pass_fds=[requests_fd]
            )
        finally:
            os.close(requests_fd)
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        self._pass_signals_on()

    def _wait_for_supervisor(self, timeout: float | None = None, *, kill: bool = False) -> int:
        """Wait for the supervisor to exit; its exit code (if none runs, the last one's that
        a signal stopped, else 0)."""
        if self.supervisor is None:
            return self.exit_code
        try:
            code = self.supervisor.wait(timeout)
        except subprocess.TimeoutExpired:
            if not kill:
                raise
            self.supervisor.kill()
            code = self.supervisor.wait()
        self._forget_supervisor()
        return code

    def _forget_supervisor(self) -> None:
        """Once it exited: drop it and our end of its requests pipe."""
        self.supervisor = None
        if self.requests_fd is not None:
            os.close(self.requests_fd)
            self.requests_fd = None


def _compiles(paths: Iterable[str]) -> bool:
    """Whether every changed file that still exists is valid Python; log the first error."""
    for path in paths:
        try:
            source = Path(path).read_bytes()
        except FileNotFoundError:
            continue
        try:
            compile(source, path, "exec", dont_inherit=True)
        except (SyntaxError, ValueError) as error:
            # As ``runserver`` shows it: the file, the line and the caret, without the
            # frames of the reloader that compiled it.
            logger.error(
                "%s does not compile; waiting for the next change\n%s",
                path,
                "".join(traceback.format_exception_only(error)).rstrip("\n"),
            )
            return False
    return True


def _relative(path: str) -> str:
    """Paths under the current directory relative to it, others as they are."""
    relative = os.path.relpath(path)
    return path if relative.startswith("..") else relative
