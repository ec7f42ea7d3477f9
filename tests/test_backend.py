"""The backend's side: enqueue, get_result and checks, with real files and processes."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import json
import os
import shutil
import stat
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import pytest
from django.conf import settings
from django.test.utils import override_settings
from django.utils import timezone

from procpool_tasks import compat
from procpool_tasks.backend import JournalUnavailable, ProcPoolBackend
from tests import more_tasks, tasks
from tests.conftest import REPO_ROOT, WAIT_S, Env, wait_for

BACKEND_PATH = "procpool_tasks.backend.ProcPoolBackend"

#: Run in another process: print a result's fields as JSON (argv: id, backend alias).
PRINT_RESULT = """
import json, sys
from procpool_tasks.compat import task_backends
result = task_backends[sys.argv[2]].get_result(sys.argv[1])
finished = result.status == "SUCCESSFUL"
print(json.dumps({
    "id": result.id,
    "status": str(result.status),
    "task": result.task.module_path,
    "args": result.args,
    "kwargs": result.kwargs,
    "backend": result.backend,
    "enqueued_at": result.enqueued_at.isoformat(),
    "started_at": result.started_at and result.started_at.isoformat(),
    "finished_at": result.finished_at and result.finished_at.isoformat(),
    "worker_ids": result.worker_ids,
    "return_value": result.return_value if finished else None,
}))
"""


def result_elsewhere(env: Env, result_id: str, alias: str = "default") -> dict[str, Any]:
    """The fields of a result as another process reads them."""
    fields: dict[str, Any] = json.loads(env.run_python(PRINT_RESULT, result_id, alias))
    return fields


def journal_files(journal: Path) -> dict[str, bytes]:
    """Every file in the journal and its content."""
    return {
        str(path.relative_to(journal)): path.read_bytes()
        for path in sorted(journal.rglob("*"))
        if path.is_file()
    }


def tasks_setting() -> dict[str, Any]:
    """A copy of this test's TASKS setting, to change and override with."""
    return cast(dict[str, Any], copy.deepcopy(settings.TASKS))


def backend(alias: str = "default") -> Any:
    return compat.task_backends[alias]


def procpool_messages(messages: list[Any]) -> list[tuple[str, str, str | None]]:
    return [(m.id, m.msg, m.hint) for m in messages if (m.id or "").startswith("procpool_tasks.")]


# --- The backend's features ---------------------------------------------------------------


def test_backend_supports_defer_async_tasks_get_result_and_priority(env: Env) -> None:
    for supported in (ProcPoolBackend, backend()):
        assert supported.supports_defer is True
        assert supported.supports_async_task is True
        assert supported.supports_get_result is True
        assert supported.supports_priority is True


# --- enqueue ------------------------------------------------------------------------------


def test_enqueue_returns_a_ready_result_and_sends_task_enqueued(env: Env) -> None:
    sent: list[tuple[Any, Any]] = []

    def receiver(sender: Any, task_result: Any, **kwargs: Any) -> None:
        sent.append((sender, task_result))

    compat.task_enqueued.connect(receiver)
    try:
        before = timezone.now()
        result = tasks.echo.enqueue(1, (2, 3), "four", b"five", k=(6, {"seven": (7,)}))
        after = timezone.now()
    finally:
        compat.task_enqueued.disconnect(receiver)

    assert sent == [(ProcPoolBackend, result)]
    assert sent[0][1] is result
    assert result.status == compat.TaskResultStatus.READY
    assert result.task.func is tasks.echo.func
    assert isinstance(result.id, str)
    assert 0 < len(result.id) <= 64
    assert timezone.is_aware(result.enqueued_at)
    assert before <= result.enqueued_at <= after
    assert result.started_at is None
    assert result.last_attempted_at is None
    assert result.finished_at is None
    assert result.args == [1, [2, 3], "four", "five"]
    assert result.kwargs == {"k": [6, {"seven": [7]}]}
    assert result.backend == "default"
    assert result.errors == []
    assert result.worker_ids == []


def test_enqueue_gives_every_task_its_own_id(env: Env) -> None:
    ids = [tasks.add.enqueue(i, i).id for i in range(50)]
    ids.append(tasks.add.using(backend="second").enqueue(1, 1).id)

    assert len(set(ids)) == len(ids)
    assert all(len(result_id) <= 64 for result_id in ids)


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        pytest.param(
            (),
            {"when": datetime(2030, 1, 1, tzinfo=UTC)},
            "tests.tasks.echo: kwargs['when'] is a datetime, which JSON cannot carry; "
            "pass an id or plain data instead",
            id="datetime",
        ),
        pytest.param(
            ({1, 2},),
            {},
            "tests.tasks.echo: args[0] is a set, which JSON cannot carry; "
            "pass an id or plain data instead",
            id="set",
        ),
        pytest.param(
            ("fine", object()),
            {},
            "tests.tasks.echo: args[1] is an object, which JSON cannot carry; "
            "pass an id or plain data instead",
            id="object",
        ),
        pytest.param(
            (float("nan"),),
            {},
            "tests.tasks.echo: args[0] is nan, which JSON cannot carry; "
            "pass an id or plain data instead",
            id="nan",
        ),
        pytest.param(
            (),
            {"limit": float("inf")},
            "tests.tasks.echo: kwargs['limit'] is inf, which JSON cannot carry; "
            "pass an id or plain data instead",
            id="inf",
        ),
        pytest.param(
            ({1: "one"},),
            {},
            "tests.tasks.echo: args[0] has the key 1 (int); JSON object keys must be "
            "strings; pass an id or plain data instead",
            id="int-key",
        ),
        pytest.param(
            (b"\xff\xfe",),
            {},
            "tests.tasks.echo: args[0] is bytes that are not UTF-8 text; "
            "pass an id or plain data instead",
            id="bytes-not-utf8",
        ),
        pytest.param(
            (),
            {"rows": [{"ok": 1}, {"tags": ("a", {"b"})}]},
            "tests.tasks.echo: kwargs['rows'][1]['tags'][1] is a set, which JSON cannot "
            "carry; pass an id or plain data instead",
            id="nested",
        ),
    ],
)
def test_arguments_json_cannot_carry_are_refused_at_enqueue_and_write_nothing(
    env: Env, args: tuple[Any, ...], kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(compat.InvalidTask) as refused:
        tasks.echo.enqueue(*args, **kwargs)
    assert isinstance(refused.value, TypeError)
    assert str(refused.value) == message
    # Refused before the journal was even created.
    assert not env.journal.exists()

    tasks.echo.enqueue("accepted")
    before = journal_files(env.journal)
    with pytest.raises(compat.InvalidTask):
        tasks.echo.enqueue(*args, **kwargs)
    assert journal_files(env.journal) == before


def test_unknown_queue_is_refused(env: Env) -> None:
    with pytest.raises(compat.InvalidTask) as refused:
        tasks.add.using(queue_name="nope").enqueue(1, 2)
    assert str(refused.value) == "Queue 'nope' is not valid for backend."


def test_enqueue_refuses_a_queue_the_backend_no_longer_serves(env: Env) -> None:
    changed = tasks_setting()
    changed["default"]["QUEUES"] = ["default", "low"]
    with override_settings(TASKS=changed):
        with pytest.raises(compat.InvalidTask) as refused:
            tasks.on_high_queue.enqueue(str(env.tmp_path / "out.txt"), "line")
    assert str(refused.value) == "Queue 'high' is not valid for backend."
    assert not env.journal.exists()


@pytest.mark.parametrize("priority", [101, -101])
def test_priority_out_of_range_is_refused(env: Env, priority: int) -> None:
    with pytest.raises(compat.InvalidTask) as refused:
        tasks.add.using(priority=priority).enqueue(1, 2)
    assert str(refused.value) == "priority must be a whole number between -100 and 100."


def test_naive_run_after_is_refused_with_use_tz(env: Env) -> None:
    assert settings.USE_TZ
    with pytest.raises(compat.InvalidTask) as refused:
        tasks.add.using(run_after=datetime(2030, 1, 1)).enqueue(1, 2)
    assert str(refused.value) == "run_after must be an aware datetime."


# --- get_result ---------------------------------------------------------------------------


def test_another_process_sees_ready_then_successful_with_the_return_value(env: Env) -> None:
    result = tasks.add.enqueue(2, 3)
    assert result.enqueued_at is not None

    ready = result_elsewhere(env, result.id)
    assert ready == {
        "id": result.id,
        "status": "READY",
        "task": "tests.tasks.add",
        "args": [2, 3],
        "kwargs": {},
        "backend": "default",
        "enqueued_at": result.enqueued_at.isoformat(),
        "started_at": None,
        "finished_at": None,
        "worker_ids": [],
        "return_value": None,
    }

    env.run_batch("--processes", "1", "--worker-id", "batch-1")

    done = result_elsewhere(env, result.id)
    assert done["status"] == "SUCCESSFUL"
    assert done["return_value"] == 5
    assert done["worker_ids"] == ["batch-1"]
    assert done["started_at"] is not None
    assert done["finished_at"] is not None
    assert done["enqueued_at"] == result.enqueued_at.isoformat()


def test_refresh_and_arefresh_pick_up_running_and_then_successful(env: Env) -> None:
    gate = env.tmp_path / "gate"
    marker = env.tmp_path / "started"
    worker = env.start_worker("--processes", "1", "--worker-id", "refresher")
    result = more_tasks.wait_for_gate.enqueue(str(gate), str(marker))
    other = backend().get_result(result.id)
    assert other.status == compat.TaskResultStatus.READY

    wait_for(marker.exists, what="the task to start")
    result.refresh()
    assert result.status == compat.TaskResultStatus.RUNNING
    assert result.started_at is not None
    assert result.finished_at is None
    assert result.worker_ids == ["refresher"]

    gate.touch()

    def finished() -> bool:
        result.refresh()
        return bool(result.status == compat.TaskResultStatus.SUCCESSFUL)

    wait_for(finished, what="the task to finish")
    assert result.return_value == str(gate)
    assert result.finished_at is not None

    assert other.status == compat.TaskResultStatus.READY
    asyncio.run(other.arefresh())
    assert other.status == compat.TaskResultStatus.SUCCESSFUL
    assert other.return_value == str(gate)
    assert other.worker_ids == ["refresher"]
    assert worker.stop() == 0


def test_aenqueue_and_aget_result_work(env: Env) -> None:
    result = asyncio.run(tasks.add.aenqueue(4, 5))
    assert result.status == compat.TaskResultStatus.READY
    assert result.args == [4, 5]

    again = asyncio.run(tasks.add.aget_result(result.id))
    assert again.id == result.id
    assert again.status == compat.TaskResultStatus.READY
    assert again.enqueued_at == result.enqueued_at

    env.run_batch("--processes", "1")

    done = asyncio.run(backend().aget_result(result.id))
    assert done.status == compat.TaskResultStatus.SUCCESSFUL
    assert done.return_value == 9


@pytest.mark.parametrize(
    "result_id",
    [
        pytest.param("", id="empty"),
        pytest.param("../../etc/passwd", id="path-traversal"),
        pytest.param("x" * 10_000, id="overlong"),
        pytest.param("a\x00b", id="nul"),
        pytest.param("aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY", id="immediate-backend-form"),
        pytest.param("0123456789abcdef-0", id="segment-does-not-exist"),
    ],
)
def test_get_result_of_a_malformed_or_unknown_id_does_not_exist(env: Env, result_id: str) -> None:
    tasks.add.enqueue(1, 2)  # the journal exists and holds a task

    with pytest.raises(compat.TaskResultDoesNotExist):
        backend().get_result(result_id)
    with pytest.raises(compat.TaskResultDoesNotExist):
        tasks.add.get_result(result_id)


def test_get_result_of_an_id_that_does_not_point_at_a_record_does_not_exist(env: Env) -> None:
    first = tasks.add.enqueue(1, 2)
    tasks.add.enqueue(3, 4)
    segment, offset = first.id.split("-")
    assert offset == "0"
    segment_file = env.journal / "segments" / f"{segment}.log"
    size = segment_file.stat().st_size

    for wrong in [
        f"{segment}-1",  # inside the first record
        f"{segment}-{size - 1:x}",  # the last newline
        f"{segment}-{size:x}",  # the end of the segment
        f"{segment}-ffffffff",  # far past the end
        f"{segment}-00",  # the first record, spelt another way
        f"{segment.upper()}-0",
    ]:
        with pytest.raises(compat.TaskResultDoesNotExist):
            backend().get_result(wrong)


def test_get_result_without_any_journal_does_not_exist(env: Env) -> None:
    with pytest.raises(compat.TaskResultDoesNotExist):
        backend().get_result("0123456789abcdef-0")
    assert not env.journal.exists()


def test_an_id_of_the_second_backend_does_not_exist_for_the_default_backend(env: Env) -> None:
    second = tasks.add.using(backend="second").enqueue(1, 2)

    assert backend("second").get_result(second.id).backend == "second"
    with pytest.raises(compat.TaskResultDoesNotExist):
        backend("default").get_result(second.id)


def test_an_id_of_another_alias_sharing_the_journal_does_not_exist(env: Env) -> None:
    shared = tasks_setting()
    shared["second"]["OPTIONS"]["path"] = str(env.journal)
    with override_settings(TASKS=shared):
        second = tasks.add.using(backend="second").enqueue(1, 2)
        first = tasks.add.enqueue(3, 4)

        assert backend("second").get_result(second.id).backend == "second"
        assert backend("default").get_result(first.id).backend == "default"
        with pytest.raises(compat.TaskResultDoesNotExist):
            backend("default").get_result(second.id)
        with pytest.raises(compat.TaskResultDoesNotExist):
            backend("second").get_result(first.id)


def test_task_get_result_with_an_id_of_another_task_is_a_mismatch(env: Env) -> None:
    echoed = tasks.echo.enqueue("hello")

    assert tasks.echo.get_result(echoed.id).id == echoed.id
    with pytest.raises(compat.TaskResultMismatch) as mismatch:
        tasks.add.get_result(echoed.id)
    assert str(mismatch.value) == "Task does not match (received 'tests.tasks.echo')"


# --- Files on disk ------------------------------------------------------------------------


def test_journal_and_every_file_in_it_are_private_even_with_a_permissive_umask(
    env: Env,
) -> None:
    previous = os.umask(0)
    try:
        result = tasks.add.enqueue(1, 2)
        env.run_batch("--processes", "1")
    finally:
        os.umask(previous)
    assert backend().get_result(result.id).status == compat.TaskResultStatus.SUCCESSFUL

    modes = {
        str(path.relative_to(env.tmp_path)): stat.S_IMODE(path.lstat().st_mode)
        for path in [env.journal, *env.journal.rglob("*")]
    }
    assert any(name.startswith("journal/segments/") for name in modes)
    assert any(name.startswith("journal/results/") for name in modes)
    expected = {name: 0o700 if (env.tmp_path / name).is_dir() else 0o600 for name in modes}
    assert modes == expected


def test_an_existing_journal_directory_others_can_read_is_made_private(env: Env) -> None:
    env.journal.mkdir()
    os.chmod(env.journal, 0o755)  # noqa: S103 (readable by others: to be tightened)

    result = tasks.add.enqueue(1, 2)
    env.run_batch("--processes", "1")

    assert backend().get_result(result.id).return_value == 3
    assert stat.S_IMODE(env.journal.stat().st_mode) == 0o700


def test_a_journal_removed_and_made_again_keeps_every_later_enqueue(env: Env) -> None:
    first = tasks.add.enqueue(1, 1)
    env.run_batch("--processes", "1")
    assert backend().get_result(first.id).return_value == 2

    shutil.rmtree(env.journal)  # as a test suite or an operator resetting it would
    again = [tasks.add.enqueue(n, 2) for n in range(3)]
    env.run_batch("--processes", "1")

    assert [backend().get_result(r.id).return_value for r in again] == [2, 3, 4]


def test_enqueue_refuses_a_journal_other_users_can_write(env: Env) -> None:
    env.journal.mkdir(mode=0o700)
    os.chmod(env.journal, 0o777)  # noqa: S103 (the unsafe journal under test)

    with pytest.raises(JournalUnavailable) as refused:
        tasks.add.enqueue(1, 2)
    assert str(refused.value) == (
        "[Errno 1] tests.tasks.add was not enqueued: the journal cannot be written "
        "(the journal directory is writable by other users (mode 777); run chmod 700 on "
        f"it): '{env.journal}'"
    )
    assert list(env.journal.iterdir()) == []


# --- Settings and checks ------------------------------------------------------------------


def test_journal_defaults_to_a_directory_under_base_dir(env: Env) -> None:
    without_path = {"default": {"BACKEND": BACKEND_PATH, "OPTIONS": {}}}
    with override_settings(TASKS=without_path):
        default = backend()
        assert default.journal.path == Path(settings.BASE_DIR) / ".procpool_tasks"
        assert procpool_messages(default.check()) == []


def test_without_path_or_base_dir_check_says_what_to_set_and_enqueue_fails(env: Env) -> None:
    message = (
        "TASKS['default']['OPTIONS']['path'] is not set and there is no BASE_DIR setting; "
        "set TASKS['default']['OPTIONS']['path'] to the journal directory"
    )
    without_path = {"default": {"BACKEND": BACKEND_PATH, "OPTIONS": {}}}
    with override_settings(TASKS=without_path):
        del settings.BASE_DIR
        assert procpool_messages(backend().check()) == [
            ("procpool_tasks.E001", message, "Fix the backend's OPTIONS in the TASKS setting.")
        ]
        with pytest.raises(compat.InvalidTaskBackend) as refused:
            tasks.add.enqueue(1, 2)
        assert str(refused.value) == message


@pytest.mark.parametrize(
    ("options", "message"),
    [
        pytest.param(
            {"colour": "blue"},
            "TASKS['x']['OPTIONS'] has unknown keys ['colour']; the keys are 'path', "
            "'durable', 'max_attempts', 'task_timeout', 'retention', 'sqlite_defaults', "
            "'retry', 'enqueue_on_commit', 'task_options', 'admin_actions', 'schedule' and "
            "'former_alias'",
            id="unknown-key",
        ),
        pytest.param(
            {"durable": "yes"},
            "TASKS['x']['OPTIONS']['durable'] must be True or False, not 'yes'",
            id="durable-not-bool",
        ),
        pytest.param(
            {"durable": 1},
            "TASKS['x']['OPTIONS']['durable'] must be True or False, not 1",
            id="durable-int",
        ),
        pytest.param(
            {"sqlite_defaults": "no"},
            "TASKS['x']['OPTIONS']['sqlite_defaults'] must be True or False, not 'no'",
            id="sqlite-defaults-not-bool",
        ),
        pytest.param(
            {"admin_actions": "on"},
            "TASKS['x']['OPTIONS']['admin_actions'] must be True or False, not 'on'",
            id="admin-actions-not-bool",
        ),
    ],
)
def test_wrong_options_are_a_check_error(env: Env, options: dict[str, Any], message: str) -> None:
    checked = ProcPoolBackend(alias="x", params={"OPTIONS": {"path": str(env.journal), **options}})
    assert procpool_messages(checked.check()) == [
        ("procpool_tasks.E001", message, "Fix the backend's OPTIONS in the TASKS setting.")
    ]


def test_a_journal_directory_others_can_write_is_a_check_error(env: Env) -> None:
    env.journal.mkdir(mode=0o700)
    os.chmod(env.journal, 0o777)  # noqa: S103 (the unsafe journal under test)

    assert procpool_messages(backend().check()) == [
        (
            "procpool_tasks.E002",
            f"The journal directory {env.journal} cannot be used safely: the journal "
            "directory is writable by other users (mode 777); run chmod 700 on it",
            "Run chmod 700 on it, or point OPTIONS['path'] at a private directory.",
        )
    ]


def test_a_journal_path_that_is_a_file_is_a_check_error_that_says_to_name_a_directory(
    env: Env,
) -> None:
    env.journal.write_text("")

    assert procpool_messages(backend().check()) == [
        (
            "procpool_tasks.E002",
            f"The journal directory {env.journal} cannot be used safely: the journal path "
            "is not a directory",
            "OPTIONS['path'] names a file, not a directory: point it at a directory (one "
            "that does not exist yet is made).",
        )
    ]


def test_the_test_settings_pass_every_check(env: Env) -> None:
    assert procpool_messages(backend("default").check()) == []
    assert procpool_messages(backend("second").check()) == []


def plain_sqlite_project(env: Env, sqlite_options: dict[str, Any], extra: str = "") -> Env:
    """``env`` with settings of its own: one SQLite database with these OPTIONS, and ``extra``.

    Django reads the database settings once per process, so a process with these settings
    runs the check, as `manage.py check` would.
    """
    settings_dir = env.tmp_path / "other_settings"
    settings_dir.mkdir()
    database = {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": str(env.tmp_path / "plain.sqlite3"),
        "OPTIONS": sqlite_options,
    }
    (settings_dir / "plain_sqlite_settings.py").write_text(
        "from tests.settings import *  # noqa: F403\n"
        f"DATABASES = {{'default': {database!r}}}\n{extra}"
    )
    return dataclasses.replace(
        env,
        variables={
            **env.variables,
            "DJANGO_SETTINGS_MODULE": "plain_sqlite_settings",
            "PYTHONPATH": os.pathsep.join([str(settings_dir), env.variables["PYTHONPATH"]]),
        },
    )


#: Run in a process: every backend's check messages, and the OPTIONS it connects with.
CHECK_AND_CONNECT = """
import json
from django.db import connection
from procpool_tasks.compat import task_backends
messages = [
    [m.id, str(m.obj), m.msg, m.hint]
    for alias in ["default", "second"]
    for m in task_backends[alias].check()
]
connection.ensure_connection()
print(json.dumps([messages, connection.settings_dict["OPTIONS"], connection.transaction_mode]))
"""


@pytest.mark.parametrize(
    ("sqlite_options", "missing"),
    [
        pytest.param({}, "'timeout': 20, 'transaction_mode': 'IMMEDIATE'", id="defaults"),
        pytest.param({"timeout": 20}, "'transaction_mode': 'IMMEDIATE'", id="timeout-only"),
        pytest.param({"transaction_mode": "IMMEDIATE"}, "'timeout': 20", id="immediate-only"),
    ],
)
def test_sqlite_without_busy_timeout_and_immediate_with_the_opt_out_is_one_check_warning(
    env: Env, sqlite_options: dict[str, Any], missing: str
) -> None:
    plain = plain_sqlite_project(
        env, sqlite_options, "TASKS['second']['OPTIONS']['sqlite_defaults'] = False\n"
    )

    messages, options, transaction_mode = json.loads(plain.run_python(CHECK_AND_CONNECT))

    # Said once, by the backend that opted out, though both backends ran their checks.
    assert messages == [
        [
            "procpool_tasks.W001",
            "TASKS['second']",
            "Database 'default' is SQLite without a busy timeout and IMMEDIATE transactions, "
            "and OPTIONS['sqlite_defaults'] is False in TASKS['second'], so procpool_tasks "
            "adds them in no process: processes that write to it while tasks do will fail "
            "with 'database is locked'.",
            f"Add {missing} to DATABASES['default']['OPTIONS'], or remove "
            "'sqlite_defaults': False.",
        ]
    ]
    assert (options, transaction_mode) == (
        sqlite_options,
        sqlite_options.get("transaction_mode"),
    )


def test_any_process_with_the_app_connects_to_stock_sqlite_with_the_defaults_and_no_warning(
    env: Env,
) -> None:
    plain = plain_sqlite_project(env, {})

    messages, options, transaction_mode = json.loads(plain.run_python(CHECK_AND_CONNECT))

    assert messages == []
    assert options == {"timeout": 20, "transaction_mode": "IMMEDIATE"}
    assert transaction_mode == "IMMEDIATE"


def test_a_setting_the_project_chose_is_kept_even_when_it_is_not_the_suggested_one(
    env: Env,
) -> None:
    plain = plain_sqlite_project(env, {"transaction_mode": "DEFERRED"})

    messages, options, transaction_mode = json.loads(plain.run_python(CHECK_AND_CONNECT))

    assert messages == []
    assert options == {"transaction_mode": "DEFERRED", "timeout": 20}
    assert transaction_mode == "DEFERRED"


def test_without_the_app_installed_the_backend_warns_that_nothing_adds_the_settings(
    env: Env,
) -> None:
    plain = plain_sqlite_project(
        env, {}, "INSTALLED_APPS = [app for app in INSTALLED_APPS if app != 'procpool_tasks']\n"
    )

    messages, options, transaction_mode = json.loads(plain.run_python(CHECK_AND_CONNECT))

    assert messages == [
        [
            "procpool_tasks.W001",
            "TASKS['default']",
            "Database 'default' is SQLite without a busy timeout and IMMEDIATE transactions, "
            "and 'procpool_tasks' is not in INSTALLED_APPS, so this process does not add "
            "them: processes that write to it while tasks do will fail with 'database is "
            "locked'.",
            "Add 'timeout': 20, 'transaction_mode': 'IMMEDIATE' to "
            "DATABASES['default']['OPTIONS'], or add 'procpool_tasks' to INSTALLED_APPS.",
        ]
    ]
    assert (options, transaction_mode) == ({}, None)


# --- Several processes --------------------------------------------------------------------

#: Run in another process: wait for the go file, then enqueue 50 tasks and print their ids.
ENQUEUE_FIFTY = """
import sys, time
from pathlib import Path
from tests import tasks
ready, go, output, name = sys.argv[1:5]
Path(ready).touch()
while not Path(go).exists():
    time.sleep(0.001)
for number in range(50):
    print(tasks.append_line.enqueue(output, f"{name}-{number}").id)
"""


def test_eight_processes_enqueueing_at_once_lose_and_duplicate_nothing(env: Env) -> None:
    output = env.tmp_path / "lines.txt"
    go = env.tmp_path / "go"
    names = [f"p{number}" for number in range(8)]
    enqueuers = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import django; django.setup()\n" + ENQUEUE_FIFTY,
                str(env.tmp_path / f"{name}.ready"),
                str(go),
                str(output),
                name,
            ],
            env=env.variables,
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in names
    ]
    try:
        wait_for(
            lambda: all((env.tmp_path / f"{name}.ready").exists() for name in names),
            what="every enqueueing process to be ready",
        )
        go.touch()
        expected: dict[str, str] = {}
        for name, enqueuer in zip(names, enqueuers, strict=True):
            stdout, stderr = enqueuer.communicate(timeout=WAIT_S)
            assert enqueuer.returncode == 0, stderr
            ids = stdout.split()
            assert len(ids) == 50, stdout + stderr
            expected.update({result_id: f"{name}-{n}" for n, result_id in enumerate(ids)})
    finally:
        for enqueuer in enqueuers:
            if enqueuer.poll() is None:
                enqueuer.kill()
                enqueuer.communicate()

    assert len(expected) == 400  # every id distinct

    env.run_batch("--processes", "2")

    for result_id, token in expected.items():
        result = tasks.append_line.get_result(result_id)
        assert result.status == compat.TaskResultStatus.SUCCESSFUL, result_id
        assert result.return_value == token
    lines = Counter(output.read_text().splitlines())
    assert lines == Counter(expected.values())


# --- durable: False -----------------------------------------------------------------------


def test_a_backend_that_is_not_durable_still_enqueues_and_runs(env: Env) -> None:
    assert backend("second").journal.durable is False
    result = tasks.add.using(backend="second").enqueue(20, 22)
    assert result.backend == "second"

    env.run_batch("--backend", "second", "--processes", "1")

    result.refresh()
    assert result.status == compat.TaskResultStatus.SUCCESSFUL
    assert result.return_value == 42
    assert result_elsewhere(env, result.id, "second")["return_value"] == 42
