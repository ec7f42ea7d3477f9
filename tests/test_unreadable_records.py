"""Unreadable records: damaged, hand-edited and planted segment lines are quarantined
and counted and never run, while the rest of the journal runs.
"""

from __future__ import annotations

import functools
import json
from typing import Any

from tests import tasks
from tests.conftest import Env, wait_for
from tests.support import (
    PlantedSegment,
    framed,
    lines_of,
    record_json,
    result_path,
    state_in,
    status_of,
    worker_log,
)


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
        "procpool_tasks.exceptions.TaskNotLoadable: 'tests.more_tasks.no_such_task' cannot be "
        'imported: Module "tests.more_tasks" does not define a "no_such_task" attribute/class',
    )
    plain = first.add_record(
        "tests.more_tasks.touch_file",
        [str(never)],
        "procpool_tasks.exceptions.TaskNotLoadable: 'tests.more_tasks.touch_file' is a function, "
        "not a Task; only functions decorated with @task can be enqueued and run",
    )
    shell = first.add_record(
        "os.system",
        [f"touch {never}"],
        "procpool_tasks.exceptions.TaskNotLoadable: 'os.system' is a builtin_function_or_method, "
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
    # The count ends both kinds of line: "(N quarantined ...)" for a record that does not
    # read, "...; N quarantined ...)" for a task that does not import, which may come last.
    wait_for(
        lambda: worker_log(worker, rf"[(; ]{len(expected)} quarantined since start\)$"),
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
            "procpool_tasks.exceptions.TaskNotLoadable"
        ]
    assert status_of(before) == "SUCCESSFUL"
    assert sorted(lines_of(out)) == sorted(
        ["enqueued-before", "planted-good", "planted-late", "enqueued-after"]
    )
    assert worker.process.poll() is None
    assert worker.stop() == 0
