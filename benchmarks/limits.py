"""The physical limits of procpool_tasks' design on this machine and disk.

What one durable record costs (a file per record, or an append to an open file), what
creating a file costs at all (a result file per task), what a bare process pool costs per
task, and how soon watchfiles reports a new file. They bound what the library can reach:
enqueue by the durable append, drain by the pool round trip plus one file creation and
the group-committed result writes per task, wake-up by the notification latency.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from .stats import Figure, percentile
from .workloads import Sizes

RECORD = b"x" * 200 + b"\n"  # about the size of a task record


@dataclass(frozen=True)
class Limit:
    key: str
    title: str
    unit: str
    higher_is_better: bool


LIMITS = [
    Limit("durable_create", "durable file create (write+fsync+rename+dir fsync)", "files/s", True),
    Limit("durable_append", "durable append (write+fdatasync to an open file)", "appends/s", True),
    Limit("file_create", "file create, no fsync (a new inode: one per task)", "files/s", True),
    Limit(
        "pool_round_trip", "bare ProcessPoolExecutor no-op round trip, 2 processes", "tasks/s", True
    ),
    Limit(
        "pool_round_trip_4",
        "bare ProcessPoolExecutor no-op round trip, 4 processes",
        "tasks/s",
        True,
    ),
    Limit("watch_p50", "watchfiles notification latency p50 (debounce=1, step=1)", "ms", False),
    Limit("watch_p99", "watchfiles notification latency p99 (debounce=1, step=1)", "ms", False),
]


def durable_creates_per_s(directory: Path, n: int) -> float:
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        start = time.perf_counter()
        for index in range(n):
            tmp, final = directory / f".{index}.tmp", directory / f"{index}.json"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.write(fd, RECORD)
            os.fsync(fd)
            os.close(fd)
            os.rename(tmp, final)
            os.fsync(dir_fd)
        return n / (time.perf_counter() - start)
    finally:
        os.close(dir_fd)


def durable_appends_per_s(directory: Path, n: int) -> float:
    fd = os.open(directory / "segment.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        start = time.perf_counter()
        for _ in range(n):
            os.write(fd, RECORD)
            os.fdatasync(fd)
        return n / (time.perf_counter() - start)
    finally:
        os.close(fd)


def file_creates_per_s(directory: Path, n: int) -> float:
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        start = time.perf_counter()
        for index in range(n):
            fd = os.open(
                f"{index}.json", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600, dir_fd=dir_fd
            )
            os.write(fd, RECORD)
            os.close(fd)
        return n / (time.perf_counter() - start)
    finally:
        os.close(dir_fd)


def _noop() -> None:
    return None


def pool_round_trips_per_s(n: int, processes: int = 2) -> float:
    """No-op tasks through a forkserver pool, one in flight per process (no prefetch)."""
    context = multiprocessing.get_context("forkserver")
    with ProcessPoolExecutor(max_workers=processes, mp_context=context) as pool:
        for future in [pool.submit(_noop) for _ in range(processes * 4)]:
            future.result()  # the processes are up
        in_flight: set[Future[None]] = set()
        start = time.perf_counter()
        submitted = 0
        while submitted < n or in_flight:
            while submitted < n and len(in_flight) < processes:
                in_flight.add(pool.submit(_noop))
                submitted += 1
            _done, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
        return n / (time.perf_counter() - start)


def watch_latencies_ms(directory: Path, n: int) -> list[float]:
    """Create ``n`` files one at a time; how long until watchfiles reports each."""
    import watchfiles

    events: queue.SimpleQueue[float] = queue.SimpleQueue()
    stop = threading.Event()

    def watch() -> None:
        for _changes in watchfiles.watch(
            directory, debounce=1, step=1, stop_event=stop, watch_filter=None
        ):
            events.put(time.perf_counter())

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    time.sleep(0.3)  # the watcher is set up
    latencies = []
    try:
        for index in range(n):
            while not events.empty():
                events.get_nowait()
            start = time.perf_counter()
            (directory / f"{index}.json").write_bytes(RECORD)
            seen = events.get(timeout=5)
            latencies.append(1000 * (seen - start))
            time.sleep(0.01)
    finally:
        stop.set()
        thread.join(5)
    return latencies


def measure_limits(base: Path, *, sizes: Sizes, say: Callable[[str], None]) -> dict[str, Figure]:
    """Each limit ``sizes.repeats`` times, in a fresh directory under ``base`` (the run's
    disk).

    The directories stay until the run ends and ``base`` goes: deleting thousands of
    files here would slow the next inodes made on that disk for a minute or more (ext4
    skips recently freed inodes, one by one), which is the systems' drains that follow.
    """
    samples: dict[str, list[float]] = {limit.key: [] for limit in LIMITS}
    for _ in range(sizes.repeats):
        directory = Path(tempfile.mkdtemp(prefix="limits-", dir=base))
        (directory / "create").mkdir()
        (directory / "watch").mkdir()
        (directory / "plain").mkdir()
        files = sizes.limit_files
        samples["durable_create"].append(durable_creates_per_s(directory / "create", files))
        samples["durable_append"].append(durable_appends_per_s(directory, files))
        samples["file_create"].append(file_creates_per_s(directory / "plain", files))
        samples["pool_round_trip"].append(
            pool_round_trips_per_s(sizes.limit_tasks, sizes.processes)
        )
        samples["pool_round_trip_4"].append(
            pool_round_trips_per_s(sizes.limit_tasks, sizes.many_processes)
        )
        latencies = watch_latencies_ms(directory / "watch", sizes.limit_notifications)
        samples["watch_p50"].append(percentile(latencies, 50))
        samples["watch_p99"].append(percentile(latencies, 99))
    say("limits: " + ", ".join(f"{k} {v[-1]:,.1f}" for k, v in samples.items()))
    return {key: Figure.of(values) for key, values in samples.items()}
