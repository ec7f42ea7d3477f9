from tests import tasks
from tests.conftest import Env


def test_enqueued_task_runs_in_a_batch_worker(env: Env) -> None:
    result = tasks.add.enqueue(2, 3)

    env.run_batch("--processes", "1")

    result.refresh()
    assert result.status == "SUCCESSFUL"
    assert result.return_value == 5
