"""The worker processes: a small pool of our own, one pipe per process.

CPython's ``ProcessPoolExecutor`` puts two threads (a feeder and a manager), a shared
queue lock and a wake-up pipe between the supervisor and its processes; that round trip
cost more than a no-op task and took a core's worth of the supervisor's time. Here each
worker process has its own duplex pipe: the supervisor sends a job to a process it knows
is idle (or, for short tasks, queues one behind a busy one's task: ``dispatch``), and a
single selector in its main thread (``supervisor``) tells it when an outcome arrives and
when a process exits (its sentinel). So it always knows which process runs which task: a
death, a timeout or a memory limit concerns one process.

Processes are forked by the zygote, itself forked from the supervisor once Django was set
up (``zygote``): they start fast, share the supervisor's pages copy-on-write, and inherit
none of its threads, locks, signal handlers or connections. A process leaves after its
outcome when it ran ``max_tasks_per_child`` tasks or grew past ``max_memory_mib``
(``child.serve`` decides), and the pool starts another in its place.
"""

from __future__ import annotations

import contextlib
import logging
import pickle
import selectors
import signal
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from multiprocessing.connection import Connection

from . import child
from .zygote import ForkedProcess

logger = logging.getLogger(__name__)

__all__ = ["Pool", "WorkerProcess"]

#: A job bigger than this is not queued in a busy process's pipe: the pipe's buffer may not
#: hold it, and the supervisor would wait for the process to read it. It waits in the
#: supervisor instead (``WorkerProcess.held``) and goes down the pipe when the task ends.
AHEAD_MAX_BYTES = 64 * 1024

#: A process that dies before it takes a task (a project that does not set up) is
#: started again no sooner than this, so that a broken project does not spin.
RESPAWN_BACKOFF_S = 1.0


@dataclass(eq=False, slots=True)
class WorkerProcess:
    """One worker process and the pipe to it; ``task_id`` is what it runs (None: idle),
    ``ahead`` the job sent to wait behind it (``dispatch``)."""

    process: ForkedProcess
    conn: Connection
    task_id: str | None = None
    ahead: str | None = None
    held: bytes | None = None  # the job ``ahead``, kept here while the process runs its task
    ran: int = 0  # tasks it finished
    leaving: bool = False  # said it exits after this outcome

    @property
    def pid(self) -> int:
        return int(self.process.pid)


class Pool:
    """``size`` worker processes, their pipes and sentinels registered with ``selector``.

    The selector's ``data`` for a pipe is ``("outcome", worker)``, for a sentinel
    ``("exit", worker)``: the supervisor's loop hands them back to ``receive`` and
    ``reap``.
    """

    def __init__(
        self,
        size: int,
        spawn: Callable[[], tuple[ForkedProcess, Connection]],
        selector: selectors.BaseSelector,
    ) -> None:
        self.size = size
        self._spawn = spawn  # ``Zygote.spawn``
        self._selector = selector
        self.workers: list[WorkerProcess] = []
        self._next_start = 0.0

    # -- processes ---------------------------------------------------------------------------

    def fill(self) -> None:
        """Start processes until there are ``size``, unless a recent one died at start."""
        now = time.monotonic()
        while len(self.workers) < self.size and now >= self._next_start:
            self._start()

    def _start(self) -> None:
        process, parent = self._spawn()
        worker = WorkerProcess(process, parent)
        self.workers.append(worker)
        self._selector.register(parent, selectors.EVENT_READ, ("outcome", worker))
        self._selector.register(process.sentinel, selectors.EVENT_READ, ("exit", worker))

    def idle(self) -> list[WorkerProcess]:
        return [worker for worker in self.workers if worker.task_id is None and not worker.leaving]

    def busy(self) -> list[WorkerProcess]:
        """The processes running a task with none queued behind it, that stay after it."""
        return [
            worker
            for worker in self.workers
            if worker.task_id is not None and worker.ahead is None and not worker.leaving
        ]

    def seconds_to_next_start(self) -> float | None:
        """When ``fill`` may start a process again after one died at start; None: now."""
        if len(self.workers) >= self.size:
            return None
        return max(0.0, self._next_start - time.monotonic())

    # -- jobs --------------------------------------------------------------------------------

    def send(self, worker: WorkerProcess, job: child.Job) -> bool:
        """Hand ``job`` to an idle process, or queue it behind a busy one's task; False if
        the process is gone (its exit says so next)."""
        data = pickle.dumps(job, protocol=pickle.HIGHEST_PROTOCOL)
        if worker.task_id is None:
            worker.task_id = job.record.id
        else:
            worker.ahead = job.record.id
            if len(data) > AHEAD_MAX_BYTES:
                worker.held = data  # sent when the task ends (``send_held``)
                return True
        return self._send(worker, data)

    def send_held(self, worker: WorkerProcess) -> bool:
        """Send the job held for the process, now that it runs it; False if it is gone."""
        data, worker.held = worker.held, None
        return data is None or self._send(worker, data)

    def drop_held(self, worker: WorkerProcess) -> bool:
        """Forget the job held for the process (it never got it); False if none is held."""
        if worker.held is None:
            return False
        worker.held = worker.ahead = None
        return True

    def recall(self, worker: WorkerProcess) -> None:
        """Ask for the job queued behind the process's task back; its outcome says."""
        if worker.ahead is not None:
            self._send(worker, pickle.dumps(child.Recall(worker.ahead)))

    def _send(self, worker: WorkerProcess, data: bytes) -> bool:
        try:
            worker.conn.send_bytes(data)
        except OSError:
            return False
        return True

    def receive(
        self, worker: WorkerProcess
    ) -> tuple[child.Outcome, tuple[str, ...]] | child.HandedBack | child.OverMemory | None:
        """The outcome the process sent and the ids of the queued jobs it handed back
        unrun, or None if its pipe closed (it exited).

        The job queued behind it, unless handed back, is what it runs now (``task_id``).
        ``HandedBack``: its task runs long, and it handed back the job queued behind it.
        ``OverMemory``: the process passed the memory limit and is killing itself.
        """
        try:
            # Our own worker process, over a private pipe: trusted as much as the code.
            message = pickle.loads(worker.conn.recv_bytes())  # noqa: S301
        except (EOFError, OSError):
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(worker.conn)  # its exit follows
            return None
        if isinstance(message, child.OverMemory):
            return message  # its exit follows
        if isinstance(message, child.HandedBack):
            if worker.ahead in message.task_ids:
                worker.ahead = None
            return message
        outcome, leaving, returned = message
        worker.task_id = None
        worker.ran += 1
        worker.leaving = leaving
        if worker.ahead in returned:
            worker.ahead = None
        elif not leaving:
            worker.task_id, worker.ahead = worker.ahead, None
        assert isinstance(outcome, child.Outcome)  # noqa: S101 (our own child sent it)
        return outcome, returned

    def reap(self, worker: WorkerProcess) -> int:
        """Forget a process that exited; return its exit code (negative: a signal)."""
        worker.process.join()
        exit_code = worker.process.exitcode
        self._forget(worker)
        worker.process.close()
        return int(exit_code if exit_code is not None else -signal.SIGKILL)

    def delay_starts(self) -> None:
        """Start no process for a while: one died before it took a task."""
        self._next_start = time.monotonic() + RESPAWN_BACKOFF_S

    def _forget(self, worker: WorkerProcess) -> None:
        for fileobj in (worker.conn, worker.process.sentinel):
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(fileobj)
        worker.conn.close()
        with contextlib.suppress(ValueError):
            self.workers.remove(worker)

    # -- stopping ----------------------------------------------------------------------------

    def stop(self, workers: Iterable[WorkerProcess], grace_s: float) -> None:
        """SIGTERM, then SIGKILL after ``grace_s``; their pipes stay open until ``reap``,
        so that an outcome a process sent before it stopped can still be read."""
        workers = list(workers)
        for worker in workers:
            with contextlib.suppress(OSError):
                worker.process.terminate()
        deadline = time.monotonic() + grace_s
        for worker in workers:
            worker.process.join(max(0.0, deadline - time.monotonic()))
            if worker.process.is_alive():
                worker.process.kill()

    def close(self) -> None:
        """Let every process go: each exits when its pipe closes (idle ones at once)."""
        workers = list(self.workers)
        for worker in workers:
            self._forget(worker)
        for worker in workers:
            worker.process.join()
            worker.process.close()
