"""The process that forks the worker processes: a fork of the supervisor, made before
its threads start.

Why not multiprocessing's forkserver: that is a fresh interpreter, which set Django and
the project up a second time (about 35 MiB that the supervisor already holds), and it
brought a resource tracker process along (8 MiB). Forked from the supervisor once Django
is set up, the zygote shares the supervisor's pages copy-on-write, and so does every
worker process it forks; objects made before the fork are frozen out of the garbage
collector, which would otherwise write to each of them and copy its page.

The protocol, over a socket pair: for each process the supervisor sends one byte, the kind
of process (``WORKER``, or ``PREPARER``: the process that makes result files ahead of their
claims, see ``background``), with two descriptors, the process's end of its pipe and the
write end of a status pipe.
The zygote forks, writes the child's pid to the status pipe and, when the child exits, its
exit code (negative: the signal that killed it), then closes it. The status pipe's read
end is the supervisor's sentinel: readable once the process has exited. The child keeps
its own copy of the write end, so that if the zygote dies first, the sentinel is still
readable only once the child has exited too (its exit code is then unknown: 255, as
multiprocessing says); the running tasks go on, and the supervisor starts a new zygote for
the next process it needs, in a new interpreter (``Zygote._start_afresh`` says why).
The zygote exits when the supervisor closes its socket, or dies; it ignores the signals
that stop a service, so that it can still say how its worker processes ended.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import json
import logging
import os
import pickle
import selectors
import signal
import socket
import struct
import sys
import time
import traceback
from collections.abc import Callable, Mapping
from multiprocessing.connection import Connection, wait
from typing import NoReturn

import django
from django.db import connections

from .wakeups import WakePipe

__all__ = ["COMMITTER", "PREPARER", "WORKER", "ForkedProcess", "Zygote"]

logger = logging.getLogger(__name__)

_CODE = struct.Struct("q")
#: The kinds of process the zygote forks: what each runs is given to ``Zygote``.
WORKER = b"f"
PREPARER = b"p"
COMMITTER = b"c"
#: The exit code of a process whose zygote died before it could say (multiprocessing's).
UNKNOWN_EXIT_CODE = 255
#: How long the zygote may take to exit once its socket closed, before it is killed.
ZYGOTE_EXIT_S = 5.0
#: How long the zygote may take to fork a process (one started afresh sets Django up first).
SPAWN_TIMEOUT_S = 60.0
#: The supervisor's ``sys.path``, as JSON, for a zygote started afresh: ``python -c`` would
#: not import a project run as ``python path/to/manage.py`` from another directory.
SYS_PATH_VARIABLE = "PROCPOOL_TASKS_ZYGOTE_PATH"
# The path first: procpool_tasks itself may be importable only from the supervisor's path.
_MAIN = (
    f"import json, os, sys; sys.path[:] = json.loads(os.environ.pop({SYS_PATH_VARIABLE!r})); "
    "from procpool_tasks.worker.zygote import main; main()"
)


#: What a forked process runs, given its ``Connection`` to the supervisor.
Serve = Callable[[Connection], None]


class CannotFork(OSError):
    """The zygote runs, but the system refused it a new process (its errno)."""


class ForkedProcess:
    """A worker process the zygote forked: what the pool needs of multiprocessing's
    ``Process`` (``pid``, ``sentinel``, ``join``, ``exitcode``, ``terminate``, ``kill``)."""

    def __init__(self, pid: int, sentinel: int) -> None:
        self.pid = pid
        self.sentinel = sentinel
        self._exitcode: int | None = None

    @property
    def exitcode(self) -> int | None:
        """Its exit code (negative: the signal that killed it); None while it runs."""
        self.join(0)
        return self._exitcode

    def join(self, timeout: float | None = None) -> None:
        """Wait up to ``timeout`` (None: for ever) for the process to exit."""
        if self._exitcode is None and wait([self.sentinel], timeout):
            data = os.read(self.sentinel, _CODE.size)
            self._exitcode = _CODE.unpack(data)[0] if len(data) == _CODE.size else UNKNOWN_EXIT_CODE

    def is_alive(self) -> bool:
        return self.exitcode is None

    def terminate(self) -> None:
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        self._signal(signal.SIGKILL)

    def _signal(self, signum: int) -> None:
        # Only while its exit is not known: once it is, its pid may be another process's.
        if self.is_alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signum)

    def close(self) -> None:
        """Let the sentinel go, once the exit code was read (``join``)."""
        os.close(self.sentinel)


class Zygote:
    """The supervisor's side: start the zygote, and ask it for processes.

    ``serves`` is what each kind of process (``WORKER``, ``PREPARER``) runs with the
    ``Connection`` to the supervisor; ``close_in_zygote`` the supervisor's descriptors that
    none of them may hold.
    """

    def __init__(self, serves: Mapping[bytes, Serve], *, close_in_zygote: list[int]) -> None:
        self._serves = dict(serves)
        self.pid = 0
        self._socket: socket.socket | None = None
        self._fork(close_in_zygote)

    def _fork(self, close_in_zygote: list[int]) -> None:
        # No database socket may be shared with a process; and what exists now is kept for
        # good, so that no collection in any of the three kinds of process copies its pages.
        connections.close_all()
        gc.collect()
        gc.freeze()
        ours, theirs = socket.socketpair()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the zygote (coverage does not follow forks)
            ours.close()
            _run_zygote(theirs, self._serves, close_in_zygote)
        theirs.close()
        self.pid, self._socket = pid, ours

    def _start_afresh(self) -> None:
        """Start a zygote in a new interpreter (``main``), which sets Django up itself.

        For a zygote that died: the supervisor has threads and files by then, and a fork
        would copy the locks its threads held at that instant, its pipes to the worker
        processes (whose end of file would never come) and its locks on the journal.
        """
        ours, theirs = socket.socketpair()
        os.set_inheritable(theirs.fileno(), True)  # Python's own are not inherited
        environment = {**os.environ, SYS_PATH_VARIABLE: json.dumps(sys.path)}
        arguments = [str(theirs.fileno()), pickle.dumps(self._serves).hex()]
        try:
            command = [sys.executable, "-c", _MAIN, *arguments]
            # In its own process group from the start: a Ctrl+C while it sets Django up
            # is the supervisor's to handle.
            self.pid = os.posix_spawn(sys.executable, command, environment, setpgroup=0)
        finally:
            theirs.close()
        self._socket = ours

    def spawn(self, kind: bytes = WORKER) -> tuple[ForkedProcess, Connection]:
        """A new process of ``kind`` and the supervisor's end of its pipe.

        If the zygote died (killed by an operator, or by the kernel for memory), another is
        started afresh (``_start_afresh``) and asked again; the running tasks go on.
        """
        if self._socket is not None:
            try:
                return self._spawn(kind)
            except CannotFork:
                raise  # it runs, but the system refused it a process (a limit, memory)
            except OSError:
                ended = self._ended(within_s=1.0)
                if ended is None:
                    raise  # it runs: the error is this process's (no descriptor left, say)
                logger.warning(
                    "The process that forks the worker processes (pid %d) is gone (%s): "
                    "starting another",
                    self.pid,
                    ended,
                )
                self._close_socket()
        self._start_afresh()  # if it fails, the next call tries again
        return self._spawn(kind)

    def _spawn(self, kind: bytes) -> tuple[ForkedProcess, Connection]:
        assert self._socket is not None  # noqa: S101 (started in the constructor)
        ours, theirs = socket.socketpair()
        status_read, status_write = os.pipe()  # not inheritable (PEP 446)
        try:
            socket.send_fds(self._socket, [kind], [theirs.fileno(), status_write])
            os.close(status_write)
            status_write = -1
            # Its pid; nothing: the zygote is gone. A zygote killed between its fork and this
            # answer leaves the pipe open in the child it forked: its socket's end of file
            # says it is gone (it never writes there), not the timeout a minute later.
            ready = wait([status_read, self._socket], SPAWN_TIMEOUT_S)
            if not ready:
                raise TimeoutError(f"the zygote did not fork within {SPAWN_TIMEOUT_S:g} s")
            if status_read not in ready:
                raise ConnectionResetError("the zygote closed its socket")
            data = os.read(status_read, _CODE.size)
            if len(data) != _CODE.size:
                raise ConnectionResetError("the zygote closed the status pipe")
            if (pid := _CODE.unpack(data)[0]) <= 0:
                raise CannotFork(-pid, f"the zygote cannot fork: {os.strerror(-pid)}")
        except BaseException:
            os.close(status_read)
            ours.close()
            raise
        finally:
            theirs.close()
            if status_write >= 0:
                os.close(status_write)
        return ForkedProcess(pid, status_read), Connection(ours.detach())

    def close(self) -> None:
        """Let the zygote go (it exits when its socket closes) and reap it."""
        if self._socket is None:
            return
        self._close_socket()
        if self._ended(within_s=ZYGOTE_EXIT_S) is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            self._reap(block=True)

    def _close_socket(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def _ended(self, *, within_s: float) -> str | None:
        """How the zygote ended, if it does within ``within_s``; None if it still runs."""
        deadline = time.monotonic() + within_s
        while (ended := self._reap(block=False)) is None and time.monotonic() < deadline:
            time.sleep(0.01)
        return ended

    def _reap(self, *, block: bool) -> str | None:
        """How the zygote ended, once it has; None while it runs."""
        try:
            pid, status = os.waitpid(self.pid, 0 if block else os.WNOHANG)
        except ChildProcessError:
            return "already reaped"
        if pid == 0:
            return None
        code = os.waitstatus_to_exitcode(status)
        return f"killed by signal {-code}" if code < 0 else f"exit code {code}"


# -- in the zygote ---------------------------------------------------------------------------


def main() -> None:  # pragma: no cover - runs in a zygote started afresh
    """A zygote started afresh (``Zygote._start_afresh``): argv holds its socket's
    descriptor and what its processes run, pickled, in hex."""
    socket_fd, serves = int(sys.argv[1]), pickle.loads(bytes.fromhex(sys.argv[2]))  # noqa: S301
    django.setup()
    gc.collect()
    gc.freeze()  # as in the supervisor before the first zygote's fork (``Zygote._fork``)
    _run_zygote(socket.socket(fileno=socket_fd), serves, [])


def _run_zygote(  # pragma: no cover - runs in the zygote
    sock: socket.socket, serves: Mapping[bytes, Serve], close_fds: list[int]
) -> NoReturn:
    """Fork a process for each request on ``sock``; say when each exits."""
    _run_then_exit(functools.partial(_serve_as_zygote, sock, serves, close_fds))


def _serve_as_zygote(
    sock: socket.socket, serves: Mapping[bytes, Serve], close_fds: list[int]
) -> None:
    for fd in close_fds:
        with contextlib.suppress(OSError):
            os.close(fd)
    # Its own process group, which the worker processes share: a signal to the
    # supervisor's group (``kill -TERM -PGID``, a terminal's Ctrl+C) reaches the
    # supervisor alone, which decides whether running tasks finish or stop.
    with contextlib.suppress(OSError):
        os.setpgid(0, 0)
    # It exits when the supervisor does, not on a signal sent to every process (as
    # systemd stops a service): it must still say how its worker processes ended.
    for signum in _STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
    # A reloaded supervisor blocks these until it can handle them; not inherited.
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    # A task, or a program it runs, that reads its standard input gets end of file, not
    # the terminal (where a background process group would be stopped).
    _read_nothing_on_standard_input()
    _Forker(sock, serves).run()


_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT)


def _read_nothing_on_standard_input() -> None:
    with contextlib.suppress(OSError):
        devnull = os.open(os.devnull, os.O_RDONLY)
        if devnull != 0:  # 0 if it was closed: /dev/null is in place already
            os.dup2(devnull, 0)
            os.close(devnull)


class _Forker:
    def __init__(self, sock: socket.socket, serves: Mapping[bytes, Serve]) -> None:
        self._socket = sock
        self._socket.setblocking(False)  # read only when the selector says; see ``run``
        self._serves = serves
        self._statuses: dict[int, int] = {}  # pid -> the write end of its status pipe
        self._wake = WakePipe()
        self._selector = selectors.DefaultSelector()
        signal.set_wakeup_fd(self._wake.write_fd)
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)  # wakes the selector

    def run(self) -> None:
        self._selector.register(self._socket, selectors.EVENT_READ)
        self._selector.register(self._wake, selectors.EVENT_READ)
        while True:
            self._selector.select()
            self._reap()  # first, so that a pid is never reused while it is still noted
            try:
                message, fds, _flags, _address = socket.recv_fds(self._socket, 1, 2)
            except BlockingIOError:
                continue
            if not message:
                return  # the supervisor closed its socket, or died
            self._fork(self._serves[message], *fds)

    def _fork(self, serve: Serve, conn_fd: int, status_fd: int) -> None:
        # Blocked until the child has its default handlers back: a stop sent to it at
        # once must not meet the zygote's SIG_IGN.
        signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
        try:
            pid = os.fork()
        except OSError as error:  # a limit on processes, or memory: it says so, and goes on
            pid = -(error.errno or 1)
        if pid == 0:
            self._run_child(serve, conn_fd, status_fd)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
        os.close(conn_fd)
        with contextlib.suppress(OSError):  # the supervisor stopped waiting for it
            os.write(status_fd, _CODE.pack(pid))
        if pid > 0:
            self._statuses[pid] = status_fd
        else:
            os.close(status_fd)

    def _run_child(self, serve: Serve, conn_fd: int, status_fd: int) -> NoReturn:
        _run_then_exit(functools.partial(self._serve_as_child, serve, conn_fd, status_fd))

    def _serve_as_child(self, serve: Serve, conn_fd: int, status_fd: int) -> None:
        signal.set_wakeup_fd(-1)
        for signum in (signal.SIGCHLD, *_STOP_SIGNALS):
            signal.signal(signum, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
        self._wake.close()
        for fd in self._statuses.values():
            os.close(fd)
        self._selector.close()
        self._socket.close()
        # Its own status pipe stays open here until it exits: if the zygote dies first,
        # the supervisor's sentinel still says when this process exits, not before.
        for fd in (conn_fd, status_fd):
            os.set_inheritable(fd, False)  # not for the programs that tasks run
        serve(Connection(conn_fd))

    def _reap(self) -> None:
        self._wake.drain()
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            status_fd = self._statuses.pop(pid, None)
            if status_fd is not None:
                with contextlib.suppress(OSError):
                    os.write(status_fd, _CODE.pack(os.waitstatus_to_exitcode(status)))
                os.close(status_fd)


def _run_then_exit(run: Callable[[], None]) -> NoReturn:  # pragma: no cover - in a child
    """Run a forked process's work, then leave with its exit code (as multiprocessing's
    children do): the parent's atexit handlers and buffers are not this process's."""
    code = 0
    try:
        run()
    except SystemExit as error:
        code = error.code if isinstance(error.code, int) else int(error.code is not None)
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)
