"""Helpers that more than one test file uses; a helper one file uses stays in that file."""

from __future__ import annotations

import json
import os
import re
import subprocess
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from procpool_tasks import journal
from tests import more_tasks
from tests.conftest import Env, Worker, wait_for

#: The variable tests/settings.py reads the default backend's extra OPTIONS from.
OPTIONS_VARIABLE = "PROCPOOL_TEST_OPTIONS"
INTERRUPTED = "procpool_tasks.exceptions.TaskInterrupted"
TIMED_OUT = "procpool_tasks.exceptions.TaskTimeoutError"


# -- results and options ---------------------------------------------------------------------


def refreshed(result: Any) -> Any:
    """The result as its task's backend reads it now, from any process's writes."""
    result.refresh()
    return result


def status_of(result: Any) -> str:
    return str(refreshed(result).status)


def set_options(env: Env, **options: Any) -> None:
    """Give the default backend these OPTIONS in every process the test starts from now."""
    env.variables[OPTIONS_VARIABLE] = json.dumps(options)


def state_of(env: Env, result_id: str) -> journal.State | None:
    """A task's state as its result file holds it (also for tasks whose path does not
    import, which ``get_result`` cannot build a result for)."""
    return journal.Journal(env.journal).read_state(result_id)


# -- workers and the files they append to ----------------------------------------------------


def lines_of(path: Path) -> list[str]:
    """The complete lines of a file that other processes append to (never a torn last one)."""
    if not path.exists():
        return []
    text = path.read_text()
    return text[: text.rfind("\n") + 1].splitlines()


@dataclass
class Held:
    """Tasks held RUNNING in a worker until ``gate`` exists; ``starts`` logs their pids."""

    results: list[Any]
    starts: Path
    gate: Path
    worker: Worker

    @property
    def pids(self) -> list[int]:
        return [int(pid) for pid in lines_of(self.starts)]


def hold_running(env: Env, count: int, *worker_args: str, **start_options: Any) -> Held:
    """Start a worker of ``count`` processes, each running a task that waits for a gate."""
    starts, gate = env.tmp_path / "starts.log", env.tmp_path / "gate"
    results = [more_tasks.log_start_then_wait.enqueue(str(starts), str(gate)) for _ in range(count)]
    worker = env.start_worker("--processes", str(count), *worker_args, **start_options)
    wait_for(lambda: len(lines_of(starts)) == count, what=f"{count} task(s) to start")
    return Held(results, starts, gate, worker)


def worker_log(worker: Worker, pattern: str) -> list[str]:
    return [line for line in worker.output.splitlines() if re.search(pattern, line)]


# -- the journal on disk ---------------------------------------------------------------------


def journal_files(env: Env) -> dict[str, tuple[bytes, int]]:
    """Every file in the journal, with its content and modification time."""
    return {
        str(path.relative_to(env.journal)): (path.read_bytes(), path.stat().st_mtime_ns)
        for path in sorted(env.journal.rglob("*"))
        if path.is_file()
    }


@contextmanager
def journal_on_tmpfs(env: Env, *, size: str = "4m", skip_note: str = "") -> Iterator[Path]:
    """The journal on a tmpfs of its own (``size``) for the block (a read-only mount can be
    made of it, see ``read_only``); skips the test where this machine cannot mount one,
    saying why (and ``skip_note``)."""
    env.journal.mkdir(mode=0o700)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(env.journal)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(
            f"cannot mount a tmpfs here ({mounted.stderr.strip() or 'not root?'}){skip_note}"
        )
    try:
        yield env.journal
    finally:
        for worker in env.workers:
            worker.reap()
        # Lazily: this process may still hold a file open on it.
        subprocess.run(["umount", "-l", str(env.journal)], check=True)


@contextmanager
def read_only(mount_point: Path) -> Iterator[None]:
    """Remount ``journal_on_tmpfs``'s mount read-only for the block, as a read-only volume
    or a backup is mounted; writable again afterwards."""
    subprocess.run(["mount", "-o", "remount,ro", str(mount_point)], check=True)
    try:
        yield
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(mount_point)], check=True)


def result_path(env: Env, result_id: str) -> Path:
    segment, offset = result_id.split("-")
    return env.journal / "results" / segment / f"{offset}.json"


GOOD_TIME = "2025-01-01T00:00:00+00:00"


def framed(payload: bytes) -> bytes:
    """A segment line as the journal's docstring specifies it."""
    return b"%08x %s\n" % (zlib.crc32(payload), payload)


def record_json(record_id: str, task_path: str, args: list[Any], **changes: Any) -> bytes:
    fields = {
        "id": record_id,
        "task": task_path,
        "args": args,
        "kwargs": {},
        "priority": 0,
        "queue": "default",
        "backend": "default",
        "enqueued_at": GOOD_TIME,
        "run_after": None,
    }
    return json.dumps({**fields, **changes}).encode()


class PlantedSegment:
    """A segment written by hand, as damage or hand edits would leave one; ids by offset."""

    def __init__(self, env: Env, name: str | None = None) -> None:
        self.name = name or os.urandom(8).hex()
        self.path = env.journal / "segments" / f"{self.name}.log"
        self.data = b""
        self.reasons: dict[int, str] = {}  # offset -> the quarantine reason expected

    @property
    def next_id(self) -> str:
        return f"{self.name}-{len(self.data):x}"

    def add(self, line: bytes, reason: str | None = None) -> str:
        record_id = self.next_id
        if reason is not None:
            self.reasons[len(self.data)] = reason
        self.data += line
        return record_id

    def add_record(self, task_path: str, args: list[Any], reason: str | None = None) -> str:
        return self.add(framed(record_json(self.next_id, task_path, args)), reason)

    def plant(self) -> None:
        # Renamed into place whole, so no worker ever reads a half-planted file.
        tmp = self.path.with_name(f".{self.name}.planting")
        tmp.write_bytes(self.data)
        tmp.chmod(0o600)
        tmp.rename(self.path)


def state_in(path: Path) -> dict[str, Any]:
    """The state a result file holds, as the journal's docstring specifies it: its last
    line with a matching checksum ({} for none)."""
    for line in reversed(path.read_bytes().split(b"\n")):
        crc, _, payload = line.partition(b" ")
        if line and int(crc, 16) == zlib.crc32(payload):
            state: dict[str, Any] = json.loads(payload)
            return state
    return {}


def state_line(state: dict[str, Any]) -> bytes:
    """A line to append to a result file."""
    return b"\n" + framed(json.dumps(state).encode())
