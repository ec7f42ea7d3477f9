"""``--max-memory-per-child``: a worker process whose resident memory is over the limit
after a task is replaced; the task that took it over keeps its own outcome.

The limit is set relative to the resident size of a fresh worker process, measured first
in the same test, so that it holds whatever Python, Django and allocator the run uses.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests import more_tasks, tasks
from tests.conftest import Env
from tests.support import refreshed

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


def run_leak_between_two_tasks(env: Env, *flags: str) -> tuple[int, Any, int, str]:
    """One process runs: a task, a task that leaks LEAK_MIB, a task; their pids and log."""
    before = tasks.process_id.using(priority=10).enqueue()
    leak = more_tasks.leak_memory.enqueue(LEAK_MIB)
    after = tasks.process_id.using(priority=-10).enqueue()

    output = env.run_batch("--processes", "1", *flags)

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

    output = env.run_batch("--processes", "1", "--max-memory-per-child", str(limit))

    assert refreshed(leak).status == "FAILED"
    [error] = leak.errors
    last_line = error.traceback.rstrip().splitlines()[-1]
    match = re.fullmatch(rf"ValueError: leaked {LEAK_MIB} MiB in pid (\d+)", last_line)
    assert match, last_line
    assert refreshed(after).status == "SUCCESSFUL"
    assert after.return_value != int(match[1])
    assert [pid for pid, _, _ in replacements(output)] == [int(match[1])]


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
