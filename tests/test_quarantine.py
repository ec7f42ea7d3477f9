"""``procpool_quarantine list | show | drop | readmit``: records a real worker could not run.

Two kinds land in quarantine/: a line damaged on disk (here: bytes of a real segment
overwritten after its writer exited), and a record whose task path no longer imports
(here: ``tests.deploy`` removes the task's module, as a bad deploy would, and puts it back).
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from procpool_tasks import journal
from tests import tasks
from tests.conftest import Env
from tests.deploy import Deploy
from tests.support import state_of

NOT_IMPORTABLE = (
    "procpool_tasks.exceptions.TaskNotLoadable: 'deployed_tasks.greet' cannot be imported: "
    "No module named 'deployed_tasks'"
)
NO_HEADER = "the line has no checksum header"
BAD_CHECKSUM = "the checksum does not match (torn or damaged line)"

ENQUEUE_ADDS = """
from tests import tasks
print(tasks.add.enqueue(1, 2).id)
print(tasks.add.enqueue(3, 4).id)
"""

RESULT_JSON = """
import json, sys
from procpool_tasks.compat import task_backends
result = task_backends["default"].get_result(sys.argv[1])
print(json.dumps({
    "status": str(result.status),
    "return_value": result.return_value if str(result.status) == "SUCCESSFUL" else None,
    "worker_ids": result.worker_ids,
    "errors": [error.exception_class_path for error in result.errors],
}))
"""


def quarantine(env: Env, *args: str, expect_code: int = 0) -> subprocess.CompletedProcess[str]:
    return env.manage("procpool_quarantine", *args, expect_code=expect_code)


def quarantine_file(env: Env, name: str) -> str:
    return str(env.journal / "quarantine" / f"{name}.json")


def result_as_the_framework_sees_it(env: Env, record_id: str) -> dict[str, Any]:
    """``get_result`` in a process that can import the deployed task."""
    result: dict[str, Any] = json.loads(env.run_python(RESULT_JSON, record_id))
    return result


def enqueue_two_adds(env: Env) -> list[str]:
    """Enqueue ``add(1, 2)`` and ``add(3, 4)`` from a process that exits: a sealed segment."""
    return env.run_python(ENQUEUE_ADDS).split()


def damage(env: Env, record_id: str, change: Callable[[bytes], bytes]) -> str:
    """Overwrite a record's line in its segment, in place and at the same length; the new
    line, as the quarantine copy holds it."""
    segment, offset = journal.parse_id(record_id)
    path = env.journal / "segments" / f"{segment}.log"
    data = path.read_bytes()
    end = data.index(b"\n", offset)
    line = change(data[offset:end])
    assert len(line) == end - offset
    path.write_bytes(data[:offset] + line + data[end:])
    return line.decode()


def overwrite_all(line: bytes) -> bytes:
    return b"#" * len(line)


def change_an_argument(line: bytes) -> bytes:
    """A flipped digit: the JSON still reads, but the checksum no longer matches."""
    assert b'"args":[1,2]' in line
    return line.replace(b'"args":[1,2]', b'"args":[1,3]')


def test_list_and_show_a_record_that_did_not_import_and_a_damaged_line(env: Env) -> None:
    deploy = Deploy(env)
    deploy.deploy()
    greet = deploy.enqueue_greet("world", queue_name="low")
    deploy.break_it()
    damaged, intact = enqueue_two_adds(env)
    damaged_line = damage(env, damaged, overwrite_all)

    env.run_batch("--queue-name", "*")

    listed = quarantine(env, "list").stdout.splitlines()
    assert sorted(listed[:-1]) == sorted(
        [
            f"{greet}  deployed_tasks.greet  {NOT_IMPORTABLE}  ({quarantine_file(env, greet)})",
            f"{damaged}  -  {NO_HEADER}  ({quarantine_file(env, damaged)})",
        ]
    )
    assert listed[-1] == "2 quarantined record(s)"

    segment, offset = journal.parse_id(greet)
    shown = json.loads(quarantine(env, "show", greet).stdout)
    record = json.loads(shown.pop("line"))
    assert shown == {
        "file": quarantine_file(env, greet),
        "segment": segment,
        "offset": offset,
        "reason": NOT_IMPORTABLE,
    }
    assert (record["id"], record["task"], record["args"], record["queue"]) == (
        greet,
        "deployed_tasks.greet",
        ["world"],
        "low",
    )
    segment, offset = journal.parse_id(damaged)
    assert json.loads(quarantine(env, "show", damaged).stdout) == {
        "file": quarantine_file(env, damaged),
        "segment": segment,
        "offset": offset,
        "reason": NO_HEADER,
        "line": damaged_line,
    }

    # The task that did not import ended FAILED; the damaged line never ran; the rest did.
    state = state_of(env, greet)
    assert state is not None
    assert (state.status, [e.exception_class_path for e in state.errors]) == (
        "FAILED",
        ["procpool_tasks.exceptions.TaskNotLoadable"],
    )
    assert tasks.add.get_result(intact).return_value == 7
    counts = json.loads(env.manage("procpool_status", "--json").stdout)["queues"]
    assert (counts["low"]["QUARANTINED"], counts["low"]["FAILED"]) == (1, 1)


def test_the_worker_log_says_a_records_task_does_not_import_and_a_damaged_line_is_unreadable(
    env: Env,
) -> None:
    deploy = Deploy(env)
    deploy.deploy()
    greet = deploy.enqueue_greet("world")
    deploy.break_it()
    damaged, _ = enqueue_two_adds(env)
    damage(env, damaged, overwrite_all)

    output = env.run_batch()

    logged = sorted(
        line.split(" WARNING ", 1)[1] for line in output.splitlines() if " Quarantined " in line
    )
    segment, offset = journal.parse_id(damaged)
    assert [re.sub(r"\d+ quarantined since", "N quarantined since", line) for line in logged] == [
        f"Quarantined an unreadable record segment={segment} offset={offset} "
        f"reason={NO_HEADER} (N quarantined since start)",
        f"Quarantined task id={greet} path=deployed_tasks.greet: its task does not import "
        f"({NOT_IMPORTABLE}; N quarantined since start)",
    ]


@pytest.mark.parametrize(
    ("change", "reason"),
    [(overwrite_all, NO_HEADER), (change_an_argument, BAD_CHECKSUM)],
    ids=["unreadable", "bad-checksum"],
)
def test_readmit_is_refused_for_a_damaged_line(
    env: Env, change: Callable[[bytes], bytes], reason: str
) -> None:
    damaged, intact = enqueue_two_adds(env)
    damage(env, damaged, change)
    env.run_batch()

    done = quarantine(env, "readmit", damaged, expect_code=1)

    assert done.stderr.splitlines() == [
        f"CommandError: {damaged} cannot be re-admitted: {reason} (the line holds no readable task)"
    ]
    assert Path(quarantine_file(env, damaged)).exists()
    assert state_of(env, damaged) is None  # never ran, and never will
    assert tasks.add.get_result(intact).return_value == 7


NOT_A_TASK = """
def greet(name: str) -> str:
    return f"hello {name}"
"""


def test_readmit_runs_the_task_again_once_its_module_imports_and_not_before(env: Env) -> None:
    deploy = Deploy(env)
    deploy.deploy()
    greet = deploy.enqueue_greet("world")
    deploy.break_it()
    env.run_batch("--worker-id", "bad-deploy")

    refused = quarantine(env, "readmit", greet, expect_code=1)
    assert refused.stderr.splitlines() == [
        "CommandError: deployed_tasks.greet still does not import: No module named 'deployed_tasks'"
    ]
    deploy.module_file.write_text(NOT_A_TASK)  # a fix that forgot the @task
    refused = quarantine(env, "readmit", greet, expect_code=1)
    assert refused.stderr.splitlines() == [
        "CommandError: deployed_tasks.greet is still not a task (@task)"
    ]
    state = state_of(env, greet)
    assert state is not None
    assert state.status == "FAILED"

    deploy.deploy()
    done = quarantine(env, "readmit", greet)

    assert done.stdout.splitlines() == [
        f"Re-admitted {greet} (deployed_tasks.greet): it runs again as attempt 2"
    ]
    assert not Path(quarantine_file(env, greet)).exists()
    state = state_of(env, greet)
    assert state is not None
    assert (state.status, state.worker_ids) == ("READY", ("bad-deploy",))
    env.run_batch("--worker-id", "fixed-deploy")
    assert result_as_the_framework_sees_it(env, greet) == {
        "status": "SUCCESSFUL",
        "return_value": "hello world",
        "worker_ids": ["bad-deploy", "fixed-deploy"],
        "errors": ["procpool_tasks.exceptions.TaskNotLoadable"],
    }


def test_drop_deletes_the_copy_and_leaves_the_task_as_it_ended(env: Env) -> None:
    deploy = Deploy(env)
    deploy.deploy()
    greet = deploy.enqueue_greet("world")
    deploy.break_it()
    env.run_batch()

    done = quarantine(env, "drop", greet)

    assert done.stdout.splitlines() == [f"Deleted the quarantined record {greet}"]
    assert list((env.journal / "quarantine").iterdir()) == []
    state = state_of(env, greet)
    assert state is not None
    assert state.status == "FAILED"
    document = json.loads(env.manage("procpool_status", "--json").stdout)
    assert (document["totals"]["QUARANTINED"], document["totals"]["FAILED"]) == (0, 1)
    assert document["quarantined"] == []
    refused = quarantine(env, "readmit", greet, expect_code=1)
    assert refused.stderr.splitlines() == [
        f"CommandError: no quarantined record is named '{greet}'"
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("show", "nosuch"), "CommandError: no quarantined record is named 'nosuch'"),
        (
            ("drop", "../../etc/passwd"),
            "CommandError: no quarantined record is named '../../etc/passwd'",
        ),
        (("readmit", "nosuch"), "CommandError: no quarantined record is named 'nosuch'"),
        (("show",), "CommandError: 'list' takes no name; 'show', 'drop' and 'readmit' take one"),
        (
            ("list", "x"),
            "CommandError: 'list' takes no name; 'show', 'drop' and 'readmit' take one",
        ),
    ],
)
def test_quarantine_commands_without_a_known_name_are_refused_clearly(
    env: Env, args: tuple[str, ...], message: str
) -> None:
    tasks.add.enqueue(1, 2)

    done = quarantine(env, *args, expect_code=1)

    assert done.stderr.splitlines() == [message]
