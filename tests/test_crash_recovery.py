"""Crash recovery: supervisors SIGKILLed at random moments while clients enqueue.

Real worker processes, real signals: after every kill the next supervisor recovers what
the dead one held, and the README's "Guarantees" hold over every task a client saw
acknowledged - none lost, no attempt run twice, a finished task never run again.
"""

from __future__ import annotations

import os
import random
import signal
from collections import Counter
from pathlib import Path

import pytest

from tests import more_tasks
from tests.conftest import WAIT_S, Env, Worker, wait_for
from tests.support import INTERRUPTED, lines_of, set_options, status_of

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


MOMENTS = ["at once", "started", "running", "running", "running"]
ROUNDS = 7


def _kill_moments(rng: random.Random) -> list[str]:
    """When to kill each round's supervisor; at least one round while its tasks run, so
    that some kill interrupts a task whatever the draw (7 draws without one: 1 in 600)."""
    moments = [rng.choice(MOMENTS) for _ in range(ROUNDS)]
    if "running" not in moments:
        moments[rng.randrange(ROUNDS)] = "running"
    return moments


def _kill_at(moment: str, worker: Worker, runs: Path, rng: random.Random) -> None:
    """SIGKILL the supervisor during start-up, recovery or while its tasks run."""
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
    for round_number, moment in enumerate(_kill_moments(rng)):
        worker = env.start_worker("--processes", "2", "--worker-id", f"killed-{round_number}")
        _kill_at(moment, worker, runs, rng)
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
