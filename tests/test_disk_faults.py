"""Fault injection: real worker processes, real signals, real (small) filesystems.

Each test breaks one thing the way production breaks it - a supervisor SIGKILLed at a
random moment, a child that segfaults, a task that will not stop, a damaged journal, a
full or read-only disk, hostile ids, planted symlinks, two supervisors on one journal -
and checks the promises of the README's "Guarantees" over every task it acknowledged.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import json
import os
import random
import re
import signal
import stat
import subprocess
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from procpool_tasks import compat, journal
from procpool_tasks.backend import JournalUnavailable
from procpool_tasks.supervisor import KILL_GRACE_S
from tests import more_tasks, tasks
from tests.conftest import WAIT_S, Env, Worker, wait_for
from tests.disk_full import FLAG_VARIABLE
from tests.support import TIMED_OUT, refreshed, set_options, status_of

INTERRUPTED = "procpool_tasks.supervisor.TaskInterrupted"
DIED = "procpool_tasks.supervisor.WorkerProcessDied"


# -- helpers ---------------------------------------------------------------------------------


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


def result_path(env: Env, result_id: str) -> Path:
    segment, offset = result_id.split("-")
    return env.journal / "results" / segment / f"{offset}.json"


def worker_log(worker: Worker, pattern: str) -> list[str]:
    return [line for line in worker.output.splitlines() if re.search(pattern, line)]


def proc_stat(pid: int) -> list[str]:
    """The fields of /proc/PID/stat after the command name: state, parent pid, ..."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def is_gone(pid: int) -> bool:
    """Has this process exited (a zombie waiting for its reaper counts as exited)?"""
    try:
        state = proc_stat(pid)[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")


def parent_of(pid: int) -> int:
    return int(proc_stat(pid)[1])


def assert_private(root: Path) -> None:
    """Every directory under ``root`` is 0700 and every file 0600, and nothing is a link."""
    modes = {}
    for path in [root, *root.rglob("*")]:
        info = path.lstat()
        assert not stat.S_ISLNK(info.st_mode), path
        modes[str(path.relative_to(root.parent))] = (
            stat.S_IMODE(info.st_mode),
            0o700 if stat.S_ISDIR(info.st_mode) else 0o600,
        )
    assert {name: mode for name, (mode, _) in modes.items()} == {
        name: expected for name, (_, expected) in modes.items()
    }


# -- 1. supervisor killed at random moments ---------------------------------------------------

ENQUEUE_PACED = """
import random, sys, time
from tests import more_tasks
ids, runs, count, seed = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
rng = random.Random(seed)
with open(ids, "a") as acknowledged:
    for _ in range(count):
        result = more_tasks.log_each_run.enqueue(runs, rng.choice([0.0, 0.01, 0.05, 0.2]))
        acknowledged.write(result.id + "\\n")  # only once enqueue has returned
        acknowledged.flush()
        time.sleep(rng.uniform(0, 0.02))  # a client's pace, not a wait
"""

ENQUEUERS = 3
TASKS_PER_ENQUEUER = 60


def _kill_at_a_random_moment(env: Env, worker: Worker, runs: Path, rng: random.Random) -> None:
    """SIGKILL the supervisor during start-up, recovery or while its tasks run."""
    moment = rng.choice(["at once", "started", "running", "running", "running"])
    if moment == "started":
        wait_for(lambda: "Starting worker" in worker.output, what="the supervisor to start")
    elif moment == "running":
        target = len(lines_of(runs)) + rng.randint(1, 8)
        wait_for(lambda: len(lines_of(runs)) >= target, what=f"{target} task runs in all")
    worker.send(signal.SIGKILL)
    worker.wait()


@pytest.mark.slow
@pytest.mark.parametrize("max_attempts", [3, 1])
def test_supervisor_killed_at_random_moments_under_concurrent_enqueue_loses_no_task(
    env: Env, max_attempts: int
) -> None:
    seed = int.from_bytes(os.urandom(4), "big")
    rng = random.Random(seed)  # noqa: S311 (kill moments, not secrets)
    context = f"(seed {seed}; rerun with it to reproduce the kill moments)"
    set_options(env, max_attempts=max_attempts)
    runs = env.tmp_path / "runs.log"
    id_files = [env.tmp_path / f"ids-{n}.txt" for n in range(ENQUEUERS)]
    enqueuers = [
        env.start_python(ENQUEUE_PACED, str(ids), str(runs), str(TASKS_PER_ENQUEUER), str(seed + n))
        for n, ids in enumerate(id_files)
    ]

    def acknowledged() -> list[str]:
        return [line for ids in id_files for line in lines_of(ids)]

    # After each kill: the tasks that reached SUCCESSFUL, and how often each had run.
    runs_when_successful: dict[str, int] = {}
    for round_number in range(7):
        worker = env.start_worker("--processes", "2", "--worker-id", f"killed-{round_number}")
        _kill_at_a_random_moment(env, worker, runs, rng)
        run_counts = Counter(line.split()[0] for line in lines_of(runs))
        for result_id in acknowledged():
            if status_of(more_tasks.log_each_run.get_result(result_id)) == "SUCCESSFUL":
                runs_when_successful.setdefault(result_id, run_counts[result_id])
    for enqueuer in enqueuers:
        output, _ = enqueuer.communicate(timeout=WAIT_S)
        assert enqueuer.returncode == 0, output

    env.run_batch("--processes", "2", "--worker-id", "final")

    ids = acknowledged()
    assert len(set(ids)) == ENQUEUERS * TASKS_PER_ENQUEUER, context
    runs_seen = Counter(tuple(line.split()) for line in lines_of(runs))
    assert [run for run, count in runs_seen.items() if count > 1] == [], (
        f"an attempt ran twice {context}"
    )
    run_counts = Counter(result_id for result_id, _ in runs_seen)
    statuses: Counter[str] = Counter()
    interrupted = 0
    for result_id in ids:
        result = more_tasks.log_each_run.get_result(result_id)  # none is lost
        statuses[str(result.status)] += 1
        attempts = len(result.worker_ids)
        where = f"task {result_id}: {result.status}, worker_ids={result.worker_ids} {context}"
        assert 1 <= attempts <= max_attempts, where
        assert run_counts[result_id] <= attempts, where  # one run per claim at most
        expected_errors = [
            f"{INTERRUPTED}: The worker {worker_id} stopped before the task finished "
            "(supervisor killed, or stopped at once)\n"
            for worker_id in result.worker_ids
        ]
        if result.status == "SUCCESSFUL":
            assert result.return_value == attempts, where  # the last attempt is the one that ran
            expected_errors.pop()
        else:
            assert result.status == "FAILED", where  # never left RUNNING or READY
            assert attempts == max_attempts, where
        assert [error.traceback for error in result.errors] == expected_errors, where
        interrupted += len(result.errors)
    assert interrupted > 0, f"no kill interrupted a task {context}"
    if max_attempts == 1:
        assert max(run_counts.values()) == 1, f"'fail instead of re-run' re-ran a task {context}"
    # A task recorded SUCCESSFUL never ran again, whatever was killed after it.
    assert {
        result_id: run_counts[result_id] for result_id in runs_when_successful
    } == runs_when_successful, context
    # Recovery leaves nothing of the dead supervisors behind.
    assert list((env.journal / "workers").iterdir()) == []
    assert list((env.journal / "wal").iterdir()) == []


# -- 2. a child dies ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("task", "args", "how"),
    [
        pytest.param(tasks.exit_hard, (3,), "exited with code 3", id="os._exit"),
        pytest.param(
            more_tasks.kill_own_process,
            (signal.SIGKILL,),
            "was killed by SIGKILL (perhaps out of memory?)",
            id="SIGKILL",
        ),
        pytest.param(more_tasks.dereference_null, (), "was killed by SIGSEGV", id="segfault"),
    ],
)
def test_dying_child_fails_its_task_alone_reruns_the_others_and_the_worker_serves_on(
    env: Env, task: Any, args: tuple[Any, ...], how: str
) -> None:
    starts = env.tmp_path / "starts.log"
    gate = env.tmp_path / "gate"
    bystanders = [more_tasks.log_start_then_wait.enqueue(str(starts), str(gate)) for _ in "ab"]
    worker = env.start_worker("--processes", "3")
    wait_for(lambda: len(lines_of(starts)) == 2, what="both bystanders to start")
    first_pids = set(lines_of(starts))

    dying = task.enqueue(*args)

    wait_for(lambda: status_of(dying) == "FAILED", what="the dying task to be marked FAILED")
    [error] = dying.errors
    assert error.exception_class_path == DIED
    match = re.fullmatch(
        rf"{DIED}: The worker process \(pid (\d+)\) running the task {re.escape(how)}\n",
        error.traceback,
    )
    assert match, error.traceback
    dead_pid = match[1]
    assert dead_pid not in first_pids
    assert worker_log(worker, "ERROR A worker process died; replacing the process pool")
    # The bystanders ran in other children of the broken pool: run again, not failed.
    wait_for(lambda: len(lines_of(starts)) == 4, what="both bystanders to run again")
    assert set(lines_of(starts)[2:]).isdisjoint(first_pids)
    gate.touch()
    for bystander in bystanders:
        wait_for(functools.partial(lambda r: status_of(r) == "SUCCESSFUL", bystander), what="rerun")
        assert len(bystander.worker_ids) == 2
        [interruption] = bystander.errors
        assert interruption.traceback == (
            f"{INTERRUPTED}: Another worker process (pid {dead_pid}) {how}; the process pool "
            "was replaced and this task was stopped before it finished\n"
        )
    later = tasks.add.enqueue(2, 3)
    wait_for(lambda: status_of(later) == "SUCCESSFUL", what="the worker to serve on")
    assert later.return_value == 5
    assert worker.process.poll() is None


def test_with_max_attempts_1_a_task_stopped_by_another_childs_death_still_runs_again(
    env: Env,
) -> None:
    set_options(env, max_attempts=1)
    starts = env.tmp_path / "starts.log"
    gate = env.tmp_path / "gate"
    bystander = more_tasks.log_start_then_wait.enqueue(str(starts), str(gate))
    worker = env.start_worker("--processes", "2")
    wait_for(lambda: len(lines_of(starts)) == 1, what="the bystander to start")

    dying = tasks.exit_hard.enqueue(7)

    wait_for(lambda: status_of(dying) == "FAILED", what="the dying task to fail")
    wait_for(lambda: len(lines_of(starts)) == 2, what="the bystander to run again")
    gate.touch()
    wait_for(lambda: status_of(bystander) == "SUCCESSFUL", what="the bystander to finish")
    [error] = bystander.errors
    assert re.fullmatch(
        rf"{INTERRUPTED}: Another worker process \(pid \d+\) exited with code 7; the process "
        r"pool was replaced and this task was stopped before it finished\n",
        error.traceback,
    ), error.traceback
    assert len(bystander.worker_ids) == 2
    assert worker.process.poll() is None


def test_many_dying_children_fail_only_themselves_and_every_other_task_succeeds(
    env: Env,
) -> None:
    starts = env.tmp_path / "starts.log"
    gate = env.tmp_path / "gate"
    gate.touch()
    others: list[Any] = [
        more_tasks.log_start_then_wait.enqueue(str(starts), str(gate)) for _ in range(6)
    ]
    dying = [tasks.exit_hard.enqueue(code) for code in range(1, 6)]
    others += [tasks.add.enqueue(n, n) for n in range(6)]

    env.run_batch("--processes", "2")

    assert [status_of(result) for result in dying] == ["FAILED"] * 5
    assert [status_of(result) for result in others] == ["SUCCESSFUL"] * 12
    for result in others:  # claimed but never started is no attempt
        assert len(result.worker_ids) == 1 + len(result.errors), result.errors


def test_task_over_its_address_space_limit_fails_with_memory_error_and_its_process_serves_on(
    env: Env,
) -> None:
    before = tasks.process_id.using(priority=10).enqueue()
    greedy = more_tasks.allocate_beyond_limit.enqueue(64)
    after = tasks.process_id.using(priority=-10).enqueue()

    env.run_batch("--processes", "1")

    assert status_of(greedy) == "FAILED"
    assert [error.exception_class_path for error in greedy.errors] == ["builtins.MemoryError"]
    assert status_of(before) == status_of(after) == "SUCCESSFUL"
    assert before.return_value == after.return_value  # the same process went on serving


# -- 3. memory: recycling a leaking child -----------------------------------------------------

LEAK_MB = 48


def _run_leaking_tasks(env: Env, *flags: str) -> list[dict[str, int]]:
    leaks = [more_tasks.leak_memory.enqueue(LEAK_MB) for _ in range(6)]
    env.run_batch("--processes", "1", *flags)
    assert [status_of(result) for result in leaks] == ["SUCCESSFUL"] * 6
    return [result.return_value for result in leaks]


def test_max_tasks_per_child_recycles_a_leaking_child_and_gives_its_memory_back(env: Env) -> None:
    leak_kb = LEAK_MB * 1024

    reports = _run_leaking_tasks(env, "--max-tasks-per-child", "2")

    pids = [report["pid"] for report in reports]
    rss = [report["rss_kb"] for report in reports]
    assert pids[0] == pids[1] != pids[2] == pids[3] != pids[4] == pids[5] != pids[0]
    for first in (0, 2, 4):
        assert rss[first + 1] - rss[first] > 0.9 * leak_kb, rss  # the leak stays resident
    for last in (1, 3):
        assert rss[last] - rss[last + 1] > 0.9 * leak_kb, rss  # a fresh child starts without it


def test_without_max_tasks_per_child_one_child_keeps_every_leak(env: Env) -> None:
    reports = _run_leaking_tasks(env)

    assert len({report["pid"] for report in reports}) == 1
    assert reports[-1]["rss_kb"] - reports[0]["rss_kb"] > 0.9 * 5 * LEAK_MB * 1024


# -- 4. time limits ---------------------------------------------------------------------------


def _timeout_message(limit: str) -> str:
    return f"{TIMED_OUT}: The task exceeded its timeout of {limit}"


def test_task_over_the_options_time_limit_fails_and_its_process_serves_on(env: Env) -> None:
    set_options(env, task_timeout=1)
    before = tasks.process_id.using(priority=10).enqueue()
    slow = tasks.sleep_for.enqueue(60)
    after = tasks.process_id.using(priority=-10).enqueue()

    env.run_batch("--processes", "1")

    assert status_of(slow) == "FAILED"
    [error] = slow.errors
    assert error.exception_class_path == TIMED_OUT
    assert error.traceback.rstrip().splitlines()[-1] == _timeout_message("1s")
    assert "time.sleep(seconds)" in error.traceback  # where the task was stopped
    assert status_of(before) == status_of(after) == "SUCCESSFUL"
    assert before.return_value == after.return_value  # stopped softly: no process killed


def test_task_timeout_flag_overrides_the_options_time_limit(env: Env) -> None:
    set_options(env, task_timeout=600)
    slow = tasks.sleep_for.enqueue(60)

    env.run_batch("--processes", "1", "--task-timeout", "0.5")

    assert status_of(slow) == "FAILED"
    [error] = slow.errors
    assert error.traceback.rstrip().splitlines()[-1] == _timeout_message("0.5s")


@pytest.mark.slow
@pytest.mark.parametrize(
    "stubborn", [more_tasks.sleep_with_alarm_blocked, more_tasks.swallow_time_limit]
)
def test_task_that_ignores_its_time_limit_is_killed_and_fails_and_the_worker_serves_on(
    env: Env, stubborn: Any
) -> None:
    marker = env.tmp_path / "stubborn-started"
    worker = env.start_worker("--processes", "2", "--task-timeout", "1")

    ignoring = stubborn.enqueue(60, str(marker))

    wait_for(lambda: status_of(ignoring) == "FAILED", what="the stubborn task to be killed")
    assert marker.exists()
    [error] = ignoring.errors
    assert error.exception_class_path == TIMED_OUT
    assert re.fullmatch(
        rf"{TIMED_OUT}: The task exceeded its timeout of 1s and did not stop; its "
        r"worker process \(pid \d+\) was killed\n",
        error.traceback,
    ), error.traceback
    assert worker_log(worker, rf"WARNING Task id={ignoring.id} ignored its timeout; killing")
    later = tasks.add.enqueue(2, 3)
    wait_for(lambda: status_of(later) == "SUCCESSFUL", what="the worker to serve on")
    assert worker.stop() == 0


# -- 5. unreadable records --------------------------------------------------------------------

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


def _finished_state(env: Env, result_id: str) -> dict[str, Any] | None:
    path = result_path(env, result_id)
    state = state_in(path) if path.exists() else {}
    return state if state.get("status") in ("SUCCESSFUL", "FAILED") else None


def test_unreadable_records_are_quarantined_counted_and_never_run_while_the_rest_runs(
    env: Env,
) -> None:
    out = env.tmp_path / "out.txt"
    never = env.tmp_path / "never-created"
    before = tasks.append_line.enqueue(str(out), "enqueued-before")
    first = PlantedSegment(env)
    first.add(b"this is not a record\n", "the line has no checksum header")
    damaged = bytearray(framed(record_json(first.next_id, "tests.tasks.add", [1, 2])))
    damaged[20] ^= 1
    first.add(bytes(damaged), "the checksum does not match (torn or damaged line)")
    first.add(framed(b'{"id": 1}'), "wrong schema: KeyError('task')")
    first.add(framed(b"[" * 100_000 + b"]" * 100_000), "the JSON is nested too deeply")
    first.add(framed(b"[1, 2]"), "wrong schema: TypeError('list indices must be integers")
    first.add(framed(b'{"requeue": "../../etc/passwd"}'), "wrong schema: RecordNotFound(")
    first.add_record("tests.tasks.add", {"a": 1}, "wrong schema: TypeError('a field has")  # type: ignore[arg-type]
    first.add(
        framed(
            record_json(first.next_id, "tests.tasks.add", [1, 2], enqueued_at="0001-01-01T00:00")
        ),
        "wrong schema: ValueError(",
    )
    unknown = first.add_record(
        "tests.more_tasks.no_such_task",
        [],
        "procpool_tasks.results.TaskNotLoadable: 'tests.more_tasks.no_such_task' cannot be "
        'imported: Module "tests.more_tasks" does not define a "no_such_task" attribute/class',
    )
    plain = first.add_record(
        "tests.more_tasks.touch_file",
        [str(never)],
        "procpool_tasks.results.TaskNotLoadable: 'tests.more_tasks.touch_file' is a function, "
        "not a Task; only functions decorated with @task can be enqueued and run",
    )
    shell = first.add_record(
        "os.system",
        [f"touch {never}"],
        "procpool_tasks.results.TaskNotLoadable: 'os.system' is a builtin_function_or_method, "
        "not a Task; only functions decorated with @task can be enqueued and run",
    )
    good = first.add_record("tests.tasks.append_line", [str(out), "planted-good"])
    first.add(framed(record_json(first.next_id, "tests.tasks.add", [1, 2]))[:30], "torn line")
    first.plant()
    stray = PlantedSegment(env, name="not-a-segment")
    stray.add_record("tests.tasks.append_line", [str(out), "stray"], "not a segment")
    stray.plant()

    worker = env.start_worker("--processes", "2")
    wait_for(lambda: status_of(tasks.append_line.get_result(good)) == "SUCCESSFUL", what="good")
    # Damage that appears while the worker runs is handled the same way.
    second = PlantedSegment(env)
    second.add(b"\x00\xff garbage \xfe\n", "the line has no checksum header")
    late_good = second.add_record("tests.tasks.append_line", [str(out), "planted-late"])
    second.plant()
    after = tasks.append_line.enqueue(str(out), "enqueued-after")
    wait_for(lambda: status_of(after) == "SUCCESSFUL", what="the task enqueued after")
    wait_for(
        lambda: status_of(tasks.append_line.get_result(late_good)) == "SUCCESSFUL",
        what="the good record planted while the worker ran",
    )

    expected = {
        f"{segment.name}-{offset:x}": reason
        for segment in (first, second, stray)
        for offset, reason in segment.reasons.items()
    }
    wait_for(
        lambda: f"({len(expected)} quarantined since start)" in worker.output,
        what="every bad record to be quarantined",
    )
    quarantined = {
        path.stem: json.loads(path.read_text())["reason"]
        for path in (env.journal / "quarantine").iterdir()
    }
    assert quarantined.keys() == expected.keys()
    for place, reason in expected.items():
        assert quarantined[place].startswith(reason), (place, quarantined[place])
        assert worker_log(worker, r"WARNING Quarantined an unreadable record segment=.* reason=")
    assert not never.exists(), "a record naming something that is not a Task was run"
    for result_id in (unknown, plain, shell):
        # get_result cannot build a result for them: read the state the worker wrote.
        state = wait_for(
            functools.partial(_finished_state, env, result_id), what=f"{result_id} to fail"
        )
        assert state["status"] == "FAILED"
        assert [error["exception_class_path"] for error in state["errors"]] == [
            "procpool_tasks.results.TaskNotLoadable"
        ]
    assert status_of(before) == "SUCCESSFUL"
    assert sorted(lines_of(out)) == sorted(
        ["enqueued-before", "planted-good", "planted-late", "enqueued-after"]
    )
    assert worker.process.poll() is None
    assert worker.stop() == 0


# -- 6. full and read-only disks --------------------------------------------------------------


@pytest.fixture
def small_tmpfs(env: Env) -> Iterator[Path]:
    """The journal on a 256 kB tmpfs of its own; skipped where this machine cannot mount one."""
    env.journal.mkdir(mode=0o700)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k,mode=0700", "tmpfs", str(env.journal)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(
            f"cannot mount a tmpfs here ({mounted.stderr.strip() or 'not root?'}); the "
            "simulated-ENOSPC tests below still cover a full disk"
        )
    try:
        yield env.journal
    finally:
        for worker in env.workers:
            worker.reap()
        # Lazily: this process may still hold a segment open on it.
        subprocess.run(["umount", "-l", str(env.journal)], check=True)


def fill_disk(directory: Path) -> Path:
    """Write a file until its filesystem is full; delete it to give the space back."""
    filler = directory / "filler"
    with open(filler, "xb", buffering=0, opener=_private) as file:
        with pytest.raises(OSError, match="No space left on device") as full:
            _write_forever(file)
    assert full.value.errno == errno.ENOSPC
    return filler


def _private(path: str, flags: int) -> int:
    return os.open(path, flags, 0o600)


def _write_forever(file: Any) -> None:
    while True:
        file.write(b"\0" * 4096)


def segment_contents(env: Env) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in (env.journal / "segments").iterdir()}


def assert_nothing_at_the_end_of_any_segment(env: Env) -> None:
    """No torn line anywhere, and no id readable where a refused enqueue would have written."""
    for name, data in segment_contents(env).items():
        assert data == b"" or data.endswith(b"\n"), name
        with pytest.raises(compat.TaskResultDoesNotExist):
            tasks.append_line.get_result(f"{name.removesuffix('.log')}-{len(data):x}")


def enospc_message(env: Env) -> str:
    return (
        "[Errno 28] tests.tasks.append_line was not enqueued: the journal cannot be written "
        f"(No space left on device): '{env.journal}'"
    )


def test_enqueue_on_a_full_disk_raises_acknowledges_nothing_and_loses_nothing(
    env: Env, small_tmpfs: Path
) -> None:
    out = env.tmp_path / "out.txt"
    acknowledged = [tasks.append_line.enqueue(str(out), f"before-{n}") for n in range(5)]
    filler = fill_disk(small_tmpfs)
    # The segment's last page may still take a few lines; then the disk is full.
    with pytest.raises(JournalUnavailable) as refused:  # noqa: PT012 (bounded by range)
        for n in range(100):
            acknowledged.append(tasks.append_line.enqueue(str(out), f"slack-{n}"))
    assert str(refused.value) == enospc_message(env)
    assert refused.value.errno == errno.ENOSPC
    after_refusal = segment_contents(env)

    for _ in range(3):
        with pytest.raises(JournalUnavailable):
            tasks.append_line.enqueue(str(out), "refused")

    assert segment_contents(env) == after_refusal  # nothing written, nothing left behind
    assert_nothing_at_the_end_of_any_segment(env)
    filler.unlink()
    output = env.run_batch("--processes", "2")
    assert [status_of(result) for result in acknowledged] == ["SUCCESSFUL"] * len(acknowledged)
    assert sorted(lines_of(out)) == sorted(result.return_value for result in acknowledged)
    assert "Quarantined" not in output


def test_worker_keeps_a_result_it_cannot_write_on_a_full_disk_and_writes_it_once_space_returns(
    env: Env, small_tmpfs: Path
) -> None:
    starts = env.tmp_path / "starts.log"
    gate = env.tmp_path / "gate"
    running = more_tasks.log_start_then_wait.enqueue(str(starts), str(gate))
    worker = env.start_worker("--processes", "1")
    wait_for(lambda: lines_of(starts), what="the task to start")
    filler = fill_disk(small_tmpfs)

    gate.touch()

    retrying = (
        "ERROR Cannot write 1 result(s) to the journal ([Errno 28] No space left on device); "
        "retrying in 0.5s"
    )
    wait_for(lambda: retrying in worker.output, what="the failed result write")
    assert status_of(running) == "RUNNING"
    assert worker.process.poll() is None
    filler.unlink()
    wait_for(lambda: status_of(running) == "SUCCESSFUL", what="the result to be written")
    assert running.return_value == int(lines_of(starts)[0])
    later = tasks.add.enqueue(2, 3)
    wait_for(lambda: status_of(later) == "SUCCESSFUL", what="the worker to serve on")
    assert len(lines_of(starts)) == 1
    assert worker.stop() == 0


def test_read_only_journal_refuses_enqueue_and_worker_clearly_and_keeps_acknowledged_tasks(
    env: Env, small_tmpfs: Path
) -> None:
    out = env.tmp_path / "out.txt"
    # Enqueued by another process, so that this one holds no file open for writing there.
    ids = env.run_python(
        "import sys\nfrom tests import tasks\n"
        "print(*(tasks.append_line.enqueue(sys.argv[1], f'before-{n}').id for n in range(3)))",
        str(out),
    ).split()
    subprocess.run(["mount", "-o", "remount,ro", str(small_tmpfs)], check=True)
    try:
        with pytest.raises(JournalUnavailable) as refused:
            tasks.append_line.enqueue(str(out), "refused")
        assert str(refused.value) == (
            "[Errno 30] tests.tasks.append_line was not enqueued: the journal cannot be written "
            f"(Read-only file system): '{env.journal}'"
        )
        statuses = [status_of(tasks.append_line.get_result(i)) for i in ids]
        assert statuses == ["READY"] * 3

        output = env.run_batch(expect_code=3)

        assert re.search(
            rf" ERROR Cannot use the journal {re.escape(str(env.journal))}/\S+: Read-only "
            "file system$",
            output.strip(),
        ), output
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(small_tmpfs)], check=True)
    env.run_batch()
    statuses = [status_of(tasks.append_line.get_result(i)) for i in ids]
    assert statuses == ["SUCCESSFUL"] * 3
    assert sorted(lines_of(out)) == ["before-0", "before-1", "before-2"]


def _half_then_enospc(fd: int, data: bytes) -> None:
    os.write(fd, data[: len(data) // 2])
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_enqueue_torn_by_a_simulated_full_disk_raises_and_leaves_no_partial_record(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = env.tmp_path / "out.txt"
    acknowledged = [tasks.append_line.enqueue(str(out), f"before-{n}") for n in range(3)]
    monkeypatch.setattr(journal.files, "_write_all", _half_then_enospc)

    with pytest.raises(JournalUnavailable) as refused:
        tasks.append_line.enqueue(str(out), "refused")

    assert str(refused.value) == enospc_message(env)
    monkeypatch.undo()
    assert_nothing_at_the_end_of_any_segment(env)
    acknowledged.append(tasks.append_line.enqueue(str(out), "after"))
    output = env.run_batch()
    assert [status_of(result) for result in acknowledged] == ["SUCCESSFUL"] * 4
    assert sorted(lines_of(out)) == ["after", "before-0", "before-1", "before-2"]
    assert "Quarantined" not in output


def test_a_torn_line_in_a_result_file_is_skipped_and_the_next_state_still_counts(
    env: Env,
) -> None:
    held = hold_running(env, 1)
    [running] = held.results
    path = result_path(env, running.id)
    whole = state_line({**state_in(path), "status": "SUCCESSFUL", "return_value": 666})
    with path.open("ab") as result_file:  # half a line, as a crash mid-append leaves it
        result_file.write(whole[: len(whole) // 2])

    assert status_of(running) == "RUNNING"  # the state before the torn line
    held.gate.touch()
    wait_for(lambda: status_of(running) == "SUCCESSFUL", what="the task to finish")
    assert running.return_value == held.pids[0]
    assert held.worker.stop() == 0


def test_result_write_torn_by_a_simulated_full_disk_is_retried_and_survives_power_loss(
    env: Env,
) -> None:
    disk_full = env.tmp_path / "disk-full"
    env.variables[FLAG_VARIABLE] = str(disk_full)
    starts = env.tmp_path / "starts.log"
    gate = env.tmp_path / "gate"
    running = more_tasks.log_start_then_wait.enqueue(str(starts), str(gate))
    worker = env.start_worker("--processes", "1", module="tests.disk_full")
    wait_for(lambda: lines_of(starts), what="the task to start")
    running_state = result_path(env, running.id).read_bytes()
    disk_full.touch()

    gate.touch()

    retrying = "Cannot write 1 result(s) to the journal ([Errno 28] No space left on device)"
    wait_for(lambda: retrying in worker.output, what="the torn result write")
    assert status_of(running) == "RUNNING"
    disk_full.unlink()
    wait_for(lambda: status_of(running) == "SUCCESSFUL", what="the retried result write")
    # Power loss now may take back the result file, which is renamed into place without a
    # sync of its own: the supervisor's synced result log is what must bring it back.
    worker.send(signal.SIGKILL)
    worker.wait()
    result_path(env, running.id).write_bytes(running_state)
    assert status_of(running) == "RUNNING"

    env.run_batch("--processes", "1")

    assert status_of(running) == "SUCCESSFUL"
    assert running.return_value == int(lines_of(starts)[0])
    assert len(lines_of(starts)) == 1  # not run again


# -- 7. hostile ids ---------------------------------------------------------------------------

HOSTILE_IDS = [
    "",
    "../../etc/passwd",
    "/etc/passwd",
    "..",
    "x" * 10_000,
    "a\x00b",
    "0123456789abcdef-0\x00",
    "0123456789abcdef/0",
    "0123456789abcdef-0/../../../etc/passwd",
    "..-0",
    "3f2504e0-4f89-11d3-9a0c-0305e82c3301",  # a UUID, as other backends issue
    "aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY",  # the ImmediateBackend's form
    "42",  # a database backend's primary key
]

PROBE_OPENS = """
import json, sys
from tests import tasks
from procpool_tasks import compat
opened = []
def audit(event, args):
    if event in ("open", "os.listdir", "os.scandir", "os.chmod", "os.remove", "os.rename"):
        opened.append(str(args[0]))
sys.addaudithook(audit)
for result_id in json.loads(sys.argv[1]):
    try:
        tasks.add.get_result(result_id)
    except compat.TaskResultDoesNotExist:
        continue
    raise SystemExit(f"{result_id!r} was found")
print(json.dumps(opened))
"""


def test_hostile_ids_do_not_exist_and_touch_no_file_outside_the_journal(env: Env) -> None:
    real = tasks.add.enqueue(1, 2)
    env.run_batch()
    # A sentinel where "../../etc/passwd" would lead from the journal's subdirectories,
    # its access time older than its change time so that any read would update it.
    sentinel = env.tmp_path / "etc" / "passwd"
    sentinel.parent.mkdir()
    sentinel.write_text("root:x:0:0::/root:/bin/sh\n")
    sentinel_mtime = sentinel.stat().st_mtime_ns
    os.utime(sentinel, ns=(sentinel_mtime - 10**12, sentinel_mtime))

    for result_id in HOSTILE_IDS:
        with pytest.raises(compat.TaskResultDoesNotExist):
            tasks.add.get_result(result_id)
        with pytest.raises(compat.TaskResultDoesNotExist):
            asyncio.run(tasks.add.aget_result(result_id))
    opened = json.loads(env.run_python(PROBE_OPENS, json.dumps(HOSTILE_IDS)))

    outside = [path for path in opened if not Path(path).resolve().is_relative_to(env.journal)]
    assert outside == []
    assert sentinel.stat().st_atime_ns == sentinel_mtime - 10**12
    assert sentinel.stat().st_mtime_ns == sentinel_mtime
    assert tasks.add.get_result(real.id).return_value == 3


# -- 8. permissions and symlinks --------------------------------------------------------------


@pytest.mark.parametrize("mode", [0o770, 0o707, 0o777, 0o720])
def test_worker_refuses_a_journal_directory_other_users_can_write(env: Env, mode: int) -> None:
    result = tasks.add.enqueue(1, 2)
    env.journal.chmod(mode)

    output = env.run_batch(expect_code=1)

    assert (
        f"(procpool_tasks.E002) The journal directory {env.journal} cannot be used safely: the "
        f"journal directory is writable by other users (mode {mode:o}); run chmod 700 on it"
    ) in output
    env.journal.chmod(0o700)
    assert status_of(result) == "READY"


def test_worker_refuses_a_journal_subdirectory_other_users_can_write(env: Env) -> None:
    tasks.add.enqueue(1, 2)
    (env.journal / "results").chmod(0o777)

    output = env.run_batch(expect_code=3)

    assert output.strip().endswith(
        f" ERROR Cannot use the journal {env.journal / 'results'}: the journal directory is "
        "writable by other users (mode 777); run chmod 700 on it"
    ), output


def test_everything_the_worker_writes_is_private_under_umask_000_even_after_a_crash(
    env: Env,
) -> None:
    starts = env.tmp_path / "starts.log"
    gate = env.tmp_path / "gate"
    previous = os.umask(0)
    try:
        running = more_tasks.log_start_then_wait.enqueue(str(starts), str(gate))
        done = tasks.add.enqueue(1, 2)
        bad = PlantedSegment(env)
        bad.add(b"garbage\n")
        bad.plant()
        worker = env.start_worker("--processes", "2")
        wait_for(lambda: lines_of(starts), what="the task to start")
        wait_for(lambda: status_of(done) == "SUCCESSFUL", what="a finished task")
        wait_for(lambda: "Quarantined" in worker.output, what="the quarantine")
        worker.send(signal.SIGKILL)  # leaves its lock file and result log behind
        worker.wait()
        assert_private(env.journal)
        gate.touch()
        env.run_batch("--processes", "1")  # recovery: a requeue line, new states
    finally:
        os.umask(previous)

    assert status_of(running) == "SUCCESSFUL"
    assert_private(env.journal)


def test_symlinked_results_directory_is_refused_by_worker_enqueue_and_get_result(
    env: Env,
) -> None:
    real = tasks.add.enqueue(1, 2)
    env.run_batch()
    # A forged SUCCESSFUL state outside the journal, and the results directory pointing at it.
    outside = env.tmp_path / "outside"
    (env.journal / "results").rename(outside)
    forged = outside / real.id.split("-")[0] / "0.json"
    forged.write_bytes(state_line({**state_in(forged), "return_value": 666}))
    (env.journal / "results").symlink_to(outside)

    output = env.run_batch(expect_code=3)

    assert output.strip().endswith(
        f" ERROR Cannot use the journal {env.journal / 'results'}: a symlink was planted in "
        "the journal"
    ), output
    # A process that starts now (a web server, say) refuses to enqueue there.
    refused = env.run_python(
        "from procpool_tasks.backend import JournalUnavailable\nfrom tests import tasks\n"
        "try:\n    tasks.add.enqueue(3, 4)\nexcept JournalUnavailable as error:\n"
        "    print(error)"
    )
    assert refused.strip() == (
        "[Errno 40] tests.tasks.add was not enqueued: the journal cannot be written (a "
        f"symlink was planted in the journal): '{env.journal}'"
    )
    # And no process reads a state through the link: never the forged return value.
    with pytest.raises(compat.TaskResultDoesNotExist) as refused_result:
        tasks.add.get_result(real.id)
    assert isinstance(refused_result.value, journal.JournalError)
    assert refused_result.value.strerror == "a symlink was planted in the journal"


def test_symlinked_result_file_is_not_followed_by_get_result_or_the_worker(env: Env) -> None:
    starts = env.tmp_path / "starts.log"
    gate = env.tmp_path / "gate"
    running = more_tasks.log_start_then_wait.enqueue(str(starts), str(gate))
    worker = env.start_worker("--processes", "1")
    wait_for(lambda: lines_of(starts), what="the task to start")
    target = env.tmp_path / "target.json"
    target.write_bytes(
        state_line({**state_in(result_path(env, running.id)), "status": "SUCCESSFUL"})
    )
    target_mtime = target.stat().st_mtime_ns
    os.utime(target, ns=(target_mtime - 10**12, target_mtime))
    result_path(env, running.id).unlink()
    result_path(env, running.id).symlink_to(target)

    with pytest.raises(compat.TaskResultDoesNotExist) as refused:
        tasks.add.get_result(running.id)
    assert isinstance(refused.value, journal.JournalError)
    assert refused.value.strerror == "a symlink was planted in the journal"
    gate.touch()

    # The worker replaces the link with its own file; the file it pointed at is untouched.
    wait_for(lambda: not result_path(env, running.id).is_symlink(), what="the result write")
    assert status_of(running) == "SUCCESSFUL"
    assert target.stat().st_atime_ns == target_mtime - 10**12
    assert target.stat().st_mtime_ns == target_mtime
    assert worker.stop() == 0


def test_symlink_planted_as_a_spare_result_file_is_not_followed(env: Env) -> None:
    results = [tasks.add.enqueue(n, 1) for n in range(3)]
    target = env.tmp_path / "target"
    target.write_text("precious\n")
    for result in results:
        path = result_path(env, result.id)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        path.with_name(f".{path.name}.spare").symlink_to(target)

    env.run_batch("--processes", "1")

    assert [refreshed(result).return_value for result in results] == [1, 2, 3]
    assert target.read_text() == "precious\n"
    assert not any(result_path(env, result.id).is_symlink() for result in results)


def test_symlinked_segment_is_neither_read_nor_run(env: Env) -> None:
    never = env.tmp_path / "never-created"
    outside = env.tmp_path / "outside.log"
    segment = os.urandom(8).hex()
    outside.write_bytes(
        framed(record_json(f"{segment}-0", "tests.tasks.append_line", [str(never), "x"]))
    )
    real = tasks.add.enqueue(1, 2)
    (env.journal / "segments" / f"{segment}.log").symlink_to(outside)

    output = env.run_batch()

    assert status_of(real) == "SUCCESSFUL"
    assert (
        f"Quarantined an unreadable record segment={segment} offset=0 reason=the segment " in output
    )
    assert not never.exists()
    with pytest.raises(compat.TaskResultDoesNotExist):
        tasks.append_line.get_result(f"{segment}-0")


@pytest.mark.parametrize("name", ["claim.lock", "workers"])
def test_worker_refuses_a_symlink_planted_for_its_locks_and_writes_nothing_through_it(
    env: Env, name: str
) -> None:
    result = tasks.add.enqueue(1, 2)
    target = env.tmp_path / "target"
    target.mkdir() if name == "workers" else target.write_text("precious\n")
    planted = env.journal / name
    if planted.is_dir():
        planted.rmdir()
    else:
        planted.unlink(missing_ok=True)
    planted.symlink_to(target)

    output = env.run_batch(expect_code=3)

    assert output.strip().endswith(
        f" ERROR Cannot use the journal {env.journal / name}: a symlink was planted in the journal"
    ), output
    if name == "workers":
        assert list(target.iterdir()) == []
    else:
        assert target.read_text() == "precious\n"
    assert status_of(result) == "READY"


def test_worker_never_turns_the_owner_named_in_a_result_file_into_a_path(env: Env) -> None:
    result = tasks.add.enqueue(1, 2)
    # Files where "workers/<owner>.lock" and "wal/<owner>.log" would lead for this owner.
    outside = {env.tmp_path / "escaped.lock": "a lock\n", env.tmp_path / "escaped.log": "a log\n"}
    for path, text in outside.items():
        path.write_text(text)
    state = {
        "id": result.id,
        "status": "RUNNING",
        "version": 1,
        "worker_ids": ["w"],
        "owner": "../../escaped",
        "started_at": GOOD_TIME,
        "last_attempted_at": GOOD_TIME,
        "finished_at": None,
        "errors": [],
        "return_value": None,
    }
    result_path(env, result.id).parent.mkdir(mode=0o700, parents=True)
    result_path(env, result.id).write_bytes(state_line(state))

    env.run_batch()

    assert status_of(result) == "SUCCESSFUL"  # an owner that cannot exist is not alive
    assert {path: path.read_text() for path in outside} == outside


def test_symlink_planted_as_a_supervisors_lock_file_is_not_followed(env: Env) -> None:
    result = tasks.add.enqueue(1, 2)
    target = env.tmp_path / "target"
    target.write_text("precious\n")
    (env.journal / "workers").mkdir(mode=0o700, exist_ok=True)
    (env.journal / "workers" / "0123456789abcdef.lock").symlink_to(target)

    output = env.run_batch()

    assert status_of(result) == "SUCCESSFUL"
    assert "Cannot tell whether supervisor instance=0123456789abcdef is alive" in output
    assert target.read_text() == "precious\n"


# -- 9. several supervisors on one journal ----------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    ("first", "second"),
    [("*", "*"), ("default,high", "high,low"), ("default", "high,low")],
    ids=["same-queues", "overlapping-queues", "different-queues"],
)
def test_two_supervisors_on_one_journal_run_every_task_exactly_once(
    env: Env, first: str, second: str
) -> None:
    runs = env.tmp_path / "runs.log"
    queues = ["default", "high", "low"]

    def enqueue(count: int) -> list[Any]:
        return [
            more_tasks.log_each_run.using(queue_name=queues[n % 3]).enqueue(str(runs), 0.0)
            for n in range(count)
        ]

    results = enqueue(90)
    workers = {
        "one": env.start_worker("--processes", "2", "--queue-name", first, "--worker-id", "one"),
        "two": env.start_worker("--processes", "2", "--queue-name", second, "--worker-id", "two"),
    }
    results += enqueue(90)  # while both run

    wait_for(
        lambda: all(status_of(result) == "SUCCESSFUL" for result in results),
        timeout=60,
        what="every task to finish",
    )
    assert Counter(line.split()[0] for line in lines_of(runs)) == {r.id: 1 for r in results}
    served = {"one": first.split(","), "two": second.split(",")}
    for result in results:
        [worker_id] = result.worker_ids
        assert served[worker_id] == ["*"] or result.task.queue_name in served[worker_id]
    assert {worker_id: worker.stop() for worker_id, worker in workers.items()} == {
        "one": 0,
        "two": 0,
    }


# -- 10. stopping -----------------------------------------------------------------------------


def test_supervisor_killed_mid_task_leaves_no_process_behind_and_the_task_runs_once_more(
    env: Env,
) -> None:
    held = hold_running(env, 2, "--worker-id", "killed")
    forkserver = parent_of(held.pids[0])
    assert forkserver != held.worker.process.pid

    held.worker.send(signal.SIGKILL)
    held.worker.wait()

    # Left alone, the children would finish their tasks while the next supervisor re-runs
    # them, or idle forever holding their forkserver (and their memory) alive.
    for pid in [*held.pids, forkserver]:
        wait_for(functools.partial(is_gone, pid), timeout=5, what=f"process {pid} to exit")
    held.gate.touch()
    env.run_batch("--processes", "2", "--worker-id", "recovering")
    for result in held.results:
        assert status_of(result) == "SUCCESSFUL"
        assert result.worker_ids == ["killed", "recovering"]
    assert len(lines_of(held.starts)) == 4


def test_sigterm_to_the_workers_process_group_lets_running_tasks_finish(env: Env) -> None:
    held = hold_running(env, 2, own_process_group=True)

    os.killpg(held.worker.process.pid, signal.SIGTERM)  # kill -TERM -PGID, as a shell would

    wait_for(lambda: "shutting down gracefully" in held.worker.output, what="the graceful stop")
    held.gate.touch()
    assert held.worker.wait() == 0, held.worker.output
    assert [status_of(result) for result in held.results] == ["SUCCESSFUL", "SUCCESSFUL"]


def test_sigterm_to_the_worker_and_its_processes_at_once_interrupts_tasks_for_a_rerun(
    env: Env,
) -> None:
    held = hold_running(env, 1, "--worker-id", "stopped")
    [running], [child] = held.results, held.pids

    # As systemd's default KillMode=control-group stops a service: every process at once.
    for pid in (held.worker.process.pid, child):
        os.kill(pid, signal.SIGTERM)

    assert held.worker.wait() == 0, held.worker.output
    assert status_of(running) == "READY"
    [error] = running.errors
    assert error.traceback == (
        f"{INTERRUPTED}: The worker process (pid {child}) running the task was stopped by "
        "SIGTERM from outside the worker (a process manager stopping every process?)\n"
    )
    held.gate.touch()
    env.run_batch("--worker-id", "next")
    assert status_of(running) == "SUCCESSFUL"
    assert running.worker_ids == ["stopped", "next"]


@pytest.mark.parametrize("second_signal", [signal.SIGTERM, signal.SIGINT])
def test_second_signal_stops_running_tasks_at_once_exits_1_and_the_next_start_recovers_them(
    env: Env, second_signal: signal.Signals
) -> None:
    starts = env.tmp_path / "starts.log"
    gate = env.tmp_path / "gate"
    running = [more_tasks.log_start_then_wait.enqueue(str(starts), str(gate)) for _ in "ab"]
    worker = env.start_worker("--processes", "2", "--worker-id", "stopped-at-once")
    wait_for(lambda: len(lines_of(starts)) == 2, what="both tasks to start")
    worker.send(signal.SIGTERM)
    wait_for(lambda: "shutting down gracefully" in worker.output, what="the graceful stop")

    worker.send(second_signal)

    assert worker.wait(timeout=KILL_GRACE_S) == 1, worker.output
    assert (
        "WARNING Stopped worker_id=stopped-at-once at once; 2 running task(s) will be "
        "recovered on the next start"
    ) in worker.output
    for pid in lines_of(starts):
        wait_for(functools.partial(is_gone, int(pid)), what=f"child {pid} to be stopped")
    assert [status_of(result) for result in running] == ["RUNNING", "RUNNING"]
    gate.touch()
    env.run_batch("--processes", "2", "--worker-id", "recovering")
    for result in running:
        assert status_of(result) == "SUCCESSFUL"
        assert result.worker_ids == ["stopped-at-once", "recovering"]
        assert [error.traceback for error in result.errors] == [
            f"{INTERRUPTED}: The worker stopped-at-once stopped before the task finished "
            "(supervisor killed, or stopped at once)\n"
        ]
    assert len(lines_of(starts)) == 4


def test_with_max_attempts_1_a_task_stopped_at_once_fails_on_the_next_start(env: Env) -> None:
    set_options(env, max_attempts=1)
    starts = env.tmp_path / "starts.log"
    gate = env.tmp_path / "gate"
    running = more_tasks.log_start_then_wait.enqueue(str(starts), str(gate))
    worker = env.start_worker("--processes", "1", "--worker-id", "stopped-at-once")
    wait_for(lambda: lines_of(starts), what="the task to start")
    worker.send(signal.SIGTERM)
    wait_for(lambda: "shutting down gracefully" in worker.output, what="the graceful stop")
    worker.send(signal.SIGTERM)
    assert worker.wait(timeout=KILL_GRACE_S) == 1, worker.output
    gate.touch()

    output = env.run_batch("--worker-id", "recovering")

    assert status_of(running) == "FAILED"
    assert running.worker_ids == ["stopped-at-once"]
    message = (
        f"{INTERRUPTED}: The worker stopped-at-once stopped before the task finished "
        "(supervisor killed, or stopped at once)"
    )
    assert [error.traceback for error in running.errors] == [message + "\n"]
    assert f"state=FAILED after 1 attempt(s): {message}" in output
    assert len(lines_of(starts)) == 1
