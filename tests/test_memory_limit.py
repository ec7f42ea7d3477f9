"""``--max-memory-per-child``: a worker process whose resident memory is over the limit
after a task is replaced; the task that took it over keeps its own outcome. A task that
passes the limit while it runs is killed at once, FAILED, and only its process replaced.

The limit is set relative to the resident size of a fresh worker process, measured first
in the same test, so that it holds whatever Python, Django and allocator the run uses.
The tests of the check after a task run the worker without the samples while tasks run
(``tests.memory_checked_after_tasks``): their tasks end over the limit, and a sample in
that moment would kill them, or not, by chance.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from procpool_tasks.worker.child import MEMORY_SAMPLE_INTERVAL_S
from tests import more_tasks, tasks
from tests.conftest import Env, wait_for
from tests.signal_log import EXC_INFO_LOG_VARIABLE
from tests.support import lines_of, refreshed, status_of

#: What the leaking task keeps for good, and how far above a fresh process the limit is.
LEAK_MIB = 50
HEADROOM_MIB = 25


def fresh_process_mib(env: Env) -> float:
    """The resident size of a worker process after a task that keeps nothing."""
    probe = more_tasks.leak_memory.enqueue(0)
    env.run_batch("--processes", "1")
    return int(refreshed(probe).return_value["rss_kb"]) / 1024


def replacements(output: str) -> list[tuple[int, int, str]]:
    """(pid, MiB used, limit) of each 'replacing it' line in the worker's output."""
    return [
        (int(pid), int(used), limit)
        for pid, used, limit in re.findall(
            r"Worker process pid=(\d+) uses (\d+) MiB, over --max-memory-per-child (\S+) MiB; "
            r"replacing it",
            output,
        )
    ]


def run_checked_after_tasks(env: Env, *args: str) -> str:
    """``procpool_worker --batch`` checking the memory limit only after each task."""
    worker = env.start_worker("--batch", *args, module="tests.memory_checked_after_tasks")
    code = worker.wait(timeout=120)
    assert code == 0, f"exit code {code}; output:\n{worker.output}"
    return worker.output


def run_leak_between_two_tasks(env: Env, *flags: str) -> tuple[int, Any, int, str]:
    """One process runs: a task, a task that leaks LEAK_MIB, a task; their pids and log."""
    before = tasks.process_id.using(priority=10).enqueue()
    leak = more_tasks.leak_memory.enqueue(LEAK_MIB)
    after = tasks.process_id.using(priority=-10).enqueue()

    output = run_checked_after_tasks(env, "--processes", "1", *flags)

    assert [str(refreshed(r).status) for r in (before, leak, after)] == ["SUCCESSFUL"] * 3
    return before.return_value, leak.return_value, after.return_value, output


def test_process_over_max_memory_per_child_after_a_task_is_replaced_and_the_task_succeeds(
    env: Env,
) -> None:
    limit = round(fresh_process_mib(env) + HEADROOM_MIB)

    before_pid, leak, after_pid, output = run_leak_between_two_tasks(
        env, "--max-memory-per-child", str(limit)
    )

    assert before_pid == leak["pid"]  # under the limit: the process served on
    assert after_pid != leak["pid"]
    assert leak["rss_kb"] / 1024 > limit
    [(pid, used_mib, said_limit)] = replacements(output)
    assert (pid, said_limit) == (leak["pid"], str(limit))
    assert used_mib > limit


def test_without_max_memory_per_child_the_leaking_process_serves_on(env: Env) -> None:
    before_pid, leak, after_pid, output = run_leak_between_two_tasks(env)

    assert before_pid == leak["pid"] == after_pid
    assert replacements(output) == []


def test_task_that_fails_over_the_limit_keeps_its_failure_and_its_process_is_replaced(
    env: Env,
) -> None:
    limit = round(fresh_process_mib(env) + HEADROOM_MIB)
    leak = more_tasks.leak_memory_then_fail.enqueue(LEAK_MIB)
    after = tasks.process_id.using(priority=-10).enqueue()

    output = run_checked_after_tasks(env, "--processes", "1", "--max-memory-per-child", str(limit))

    assert refreshed(leak).status == "FAILED"
    [error] = leak.errors
    last_line = error.traceback.rstrip().splitlines()[-1]
    match = re.fullmatch(rf"ValueError: leaked {LEAK_MIB} MiB in pid (\d+)", last_line)
    assert match, last_line
    assert refreshed(after).status == "SUCCESSFUL"
    assert after.return_value != int(match[1])
    assert [pid for pid, _, _ in replacements(output)] == [int(match[1])]


#: A task that grows without bound (GROW_TO_MIB) in steps of STEP_MIB against LIMIT_MIB.
LIMIT_MIB = 300
GROW_TO_MIB = 1536
STEP_MIB = 10
STEP_PAUSE_S = 0.02  # so that it passes the limit after its first sampling interval
#: What a sample may miss besides an interval's growth: the step under way when it is read.
SLACK_MIB = 2 * STEP_MIB
OVER_LIMIT = (
    r"procpool_tasks\.exceptions\.MemoryLimitExceeded: The task's process used (\d+) MiB, "
    rf"over --max-memory-per-child {LIMIT_MIB} MiB; it was stopped and replaced"
)


def growth_of(log: Path) -> tuple[int, list[tuple[float, float]]]:
    """The pid and the (seconds, resident MiB) lines ``grow_memory`` logged."""
    first, *steps = lines_of(log)
    pid = int(first.removeprefix("pid "))
    return pid, [(float(s), float(rss)) for s, _, rss in (line.split() for line in steps)]


@pytest.mark.parametrize("portable", [False, True], ids=["proc", "without-proc"])
def test_task_growing_past_max_memory_per_child_is_killed_at_once_and_fails_and_only_its_process_is_replaced(  # noqa: E501
    env: Env, portable: bool
) -> None:
    if portable:  # no /proc: each process checks its own peak (``child``)
        env.variables["PROCPOOL_TASKS_PORTABLE"] = "1"
    starts, gate = env.tmp_path / "starts.log", env.tmp_path / "gate"
    growth_log, finished_log = env.tmp_path / "growth.log", env.tmp_path / "finished.log"
    env.variables[EXC_INFO_LOG_VARIABLE] = str(finished_log)
    other = more_tasks.log_start_then_wait.using(priority=10).enqueue(str(starts), str(gate))
    greedy = more_tasks.grow_memory.enqueue(GROW_TO_MIB, STEP_MIB, STEP_PAUSE_S, str(growth_log))
    worker = env.start_worker("--processes", "2", "--max-memory-per-child", str(LIMIT_MIB))

    wait_for(lambda: status_of(greedy) == "FAILED", what="the growing task to fail")
    # The other process still runs its task: the next one goes to the replacement.
    after = tasks.process_id.enqueue()
    wait_for(lambda: status_of(after) == "SUCCESSFUL", what="a task after it to run")
    gate.touch()
    wait_for(lambda: status_of(other) == "SUCCESSFUL", what="the other process's task")
    assert worker.stop() == 0

    greedy_pid, growth = growth_of(growth_log)
    [error] = greedy.errors
    assert error.exception_class_path == "procpool_tasks.exceptions.MemoryLimitExceeded"
    match = re.fullmatch(OVER_LIMIT + "\n", error.traceback)
    assert match, error.traceback
    used_mib = int(match[1])
    # Stopped within one sample of passing the limit, at the growth rate it really had.
    seconds, last_mib = growth[-1]
    growth_per_sample_mib = last_mib / seconds * MEMORY_SAMPLE_INTERVAL_S
    assert LIMIT_MIB < used_mib < LIMIT_MIB + growth_per_sample_mib + SLACK_MIB, growth
    assert last_mib < LIMIT_MIB + growth_per_sample_mib + SLACK_MIB, growth
    assert lines_of(starts) == [str(other.return_value)]  # ran once, in its own process
    assert after.return_value not in (greedy_pid, other.return_value)
    assert f"{greedy.id} FAILED " + error.traceback.strip() in lines_of(finished_log)
    assert re.search(
        rf"Task id={greedy.id} path=tests\.more_tasks\.grow_memory queue=default: worker "
        rf"process pid={greedy_pid} uses {used_mib} MiB, over --max-memory-per-child "
        rf"{LIMIT_MIB} MiB; killing it\n",
        worker.output,
    ), worker.output
    assert "replacing the process pool" not in worker.output


@pytest.mark.parametrize("value", ["0", "-5", "lots"])
def test_max_memory_per_child_must_be_a_number_of_mib_above_zero(env: Env, value: str) -> None:
    output = env.run_batch("--max-memory-per-child", value, expect_code=2)

    message = (
        f"must be a number greater than zero, not {value}"
        if value != "lots"
        else "'lots' is not a number"
    )
    assert (
        output.strip()
        .splitlines()[-1]
        .endswith(f"procpool_worker: error: argument --max-memory-per-child: {message}")
    )
