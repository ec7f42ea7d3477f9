"""Several supervisors on one journal: every task runs exactly once, whichever queues
each serves.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from tests import more_tasks
from tests.conftest import Env, wait_for
from tests.support import lines_of, status_of


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
    # Both started: a stop that came before a supervisor's signal handlers would kill it.
    wait_for(
        lambda: all("Starting worker" in worker.output for worker in workers.values()),
        what="both supervisors to start",
    )
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
