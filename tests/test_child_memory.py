"""Memory in worker processes: a task over its address-space limit fails with
MemoryError, and ``--max-tasks-per-child`` recycles a child that leaks
(``--max-memory-per-child``: test_memory_limit.py).
"""

from __future__ import annotations

from tests import more_tasks, tasks
from tests.conftest import Env
from tests.support import status_of


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
