"""Start, measure and stop the processes of a run; never leave one behind.

Every process the harness starts gets a session of its own, so that it and whatever it
forks (a pool's children, a forkserver, an RQ work horse) can be found by walking
``/proc`` and stopped together.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

#: How long a process gets between SIGTERM and SIGKILL when a run stops it.
STOP_GRACE_S = 10.0


@dataclass
class Started:
    """A process the harness started, and the file its output goes to."""

    process: subprocess.Popen[bytes]
    log_path: Path
    command: list[str]
    #: Killed on purpose by the harness: its exit is no failure.
    killed: bool = False

    @property
    def pid(self) -> int:
        return self.process.pid

    def output_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def spawn(command: Sequence[str], *, env: dict[str, str], cwd: Path, log_path: Path) -> Started:
    """Start ``command`` in a session of its own, its output going to ``log_path``."""
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            list(command),
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Started(process, log_path, list(command))


def _process_table() -> dict[int, tuple[int, int]]:
    """Every process: pid -> (parent pid, session id)."""
    table: dict[int, tuple[int, int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue  # gone meanwhile
        # The command name (field 2) may hold spaces and parentheses: split after it.
        fields = stat[stat.rfind(")") + 2 :].split()
        table[int(entry.name)] = (int(fields[1]), int(fields[3]))
    return table


def tree(pids: Iterable[int]) -> list[int]:
    """The given processes, their descendants and the rest of their sessions, if alive.

    The session catches what left the tree: an orphan re-parented to init.
    """
    roots = set(pids)
    table = _process_table()
    children: dict[int, list[int]] = {}
    for pid, (parent, _session) in table.items():
        children.setdefault(parent, []).append(pid)
    pending = [pid for pid, (_parent, session) in table.items() if session in roots]
    pending += [pid for pid in roots if pid in table]
    found: set[int] = set()
    while pending:
        pid = pending.pop()
        if pid not in found:
            found.add(pid)
            pending.extend(children.get(pid, ()))
    return sorted(found)


def _field_kib(text: str, field: str) -> int:
    for line in text.splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _status_kib(pid: int, field: str) -> int:
    try:
        return _field_kib(Path(f"/proc/{pid}/status").read_text(), field)
    except OSError:
        return 0  # gone meanwhile


@dataclass(frozen=True)
class TreeMemory:
    """Memory of a process tree in MiB: RSS counts shared pages once per process, PSS
    splits them between the processes that share them (so forked children that share
    their parent's pages add only what they changed)."""

    processes: int
    rss_mib: float
    #: None if a live process's PSS could not be read; ``pss_unreadable`` says why.
    pss_mib: float | None
    pss_unreadable: str | None = None


def tree_memory(pids: Iterable[int]) -> TreeMemory:
    members = tree(pids)
    rss = sum(_status_kib(pid, "VmRSS") for pid in members)
    pss, unreadable = 0, None
    for pid in members:
        path = Path(f"/proc/{pid}/smaps_rollup")
        try:
            pss += _field_kib(path.read_text(), "Pss")
        except OSError as error:
            # A process gone meanwhile has no memory left to count; one still there that
            # cannot be read would make the sum a silent undercount.
            if Path(f"/proc/{pid}").exists():
                unreadable = (
                    f"n/a: cannot read {path} ({error.strerror}); PSS needs Linux 4.14 or "
                    "later and the benchmark running as the workers' user or root"
                )
    return TreeMemory(len(members), rss / 1024, None if unreadable else pss / 1024, unreadable)


# -- CPU time of a process --------------------------------------------------------------------

#: How often a CpuSampler reads the CPU time of the processes it watches.
CPU_SAMPLE_S = 0.02
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> tuple[float, str] | None:
    """CPU time (user+system) of process ``pid``, all its threads, those that ended too;
    its children not included. None if it is gone.

    First the kernel's CPU-time clock of that process (``clock_gettime`` of the clock id
    Linux derives from a pid: nanoseconds); else ``utime+stime`` of ``/proc/PID/stat``, in
    clock ticks (10 ms). Not ``/proc/PID/schedstat``: that counts its main thread only.
    Returns the time and which of the two it came from.
    """
    try:
        # MAKE_PROCESS_CPUCLOCK(pid, CPUCLOCK_SCHED) of the kernel's posix-timers.h.
        return time.clock_gettime_ns((~pid << 3) | 2) / 1e9, "clock"
    except OSError:
        pass
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()  # from field 3 (state) on
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS, "ticks"


@dataclass
class CpuSampler:
    """Reads the CPU time of ``pids`` (summed) every ``interval_s`` in a thread of the
    harness, each reading with the wall-clock time (``time.time()``) it was taken at, so
    that the CPU spent between two instants the clients report can be interpolated."""

    pids: list[int]
    interval_s: float = CPU_SAMPLE_S
    #: (wall-clock time, CPU seconds of every process summed)
    samples: list[tuple[float, float]] = field(default_factory=list)
    #: How the CPU time was read: "clock" (ns) where every reading could, else "ticks".
    source: str = "clock"
    _last: dict[int, float] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> CpuSampler:
        if not self.pids:
            return self  # nothing to watch: no thread
        self.sample()
        self._thread = threading.Thread(target=self._run, name="cpu-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        self.sample()  # one after the end of what is measured

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def sample(self) -> None:
        before = time.time()
        for pid in self.pids:
            found = cpu_seconds(pid)
            if found is not None:  # a process gone keeps its last reading
                self._last[pid], source = found
                if source != "clock":
                    self.source = source
        after = time.time()
        self.samples.append(((before + after) / 2, sum(self._last.values())))

    def at(self, when: float) -> float:
        """CPU seconds at wall-clock time ``when``, interpolated between the readings
        around it (the first or last reading outside them)."""
        samples = self.samples
        if not samples:
            raise ValueError("no CPU time read")
        if when <= samples[0][0]:
            return samples[0][1]
        for (t0, c0), (t1, c1) in itertools.pairwise(samples):
            if when <= t1:
                return c0 + (c1 - c0) * (when - t0) / max(t1 - t0, 1e-9)
        return samples[-1][1]

    def between(self, start: float, end: float) -> float:
        """CPU seconds spent from wall-clock time ``start`` to ``end``."""
        return self.at(end) - self.at(start)


def kill_tree(pids: Iterable[int], signum: int = signal.SIGKILL) -> None:
    for pid in tree(pids):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signum)


def stop(started: Iterable[Started], *, grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM each process, SIGKILL it after ``grace_s``; then kill what it left behind."""
    started = list(started)
    members = tree(s.pid for s in started)
    for s in started:
        if s.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                s.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for s in started:
        try:
            s.process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            s.process.kill()
            s.process.wait()
    # What outlived its parent (a forkserver and its pool, a work horse): whatever is
    # left in the sessions, and the members seen before that are still alive.
    sessions = {s.pid for s in started}
    table = _process_table()
    leftovers = {pid for pid, (_parent, session) in table.items() if session in sessions}
    leftovers |= {pid for pid in members if pid in table and pid not in sessions}
    for pid in leftovers:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
