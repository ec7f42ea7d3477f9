"""A journal this process may only read: a read-only mount (a tmpfs remounted read-only,
as a read-only volume or a mounted backup is) and a tree made 0500 for a command bound by
permission bits (``tests.permission_bits``: root without its override). ``procpool_status``,
``get_result`` and ``procpool_quarantine list`` and ``show`` read it as they read it
writable, and create nothing there, not even a lock file; the worker still refuses it
(enqueue's refusal of a read-only mount is in ``test_disk_faults.py``, the status page's
reading in ``test_status_page.py``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from procpool_tasks import journal
from tests.conftest import Env
from tests.deploy import Deploy
from tests.support import journal_files, journal_on_tmpfs, read_only

NOT_IMPORTABLE = (
    "procpool_tasks.exceptions.TaskNotLoadable: 'deployed_tasks.greet' cannot be imported: "
    "No module named 'deployed_tasks'"
)

# get_result, and procpool_quarantine list and show, in one process (each a Django start).
READ = """
import io, json
from django.core.management import call_command
from procpool_tasks.compat import task_backends
backend = task_backends["default"]
results = {
    id_: [str(result.status), result.return_value if str(result.status) == "SUCCESSFUL" else None]
    for id_ in IDS
    for result in [backend.get_result(id_)]
}
listed, shown = io.StringIO(), io.StringIO()
call_command("procpool_quarantine", "list", stdout=listed)
call_command("procpool_quarantine", "show", NAME, stdout=shown)
print(json.dumps({"results": results, "listed": listed.getvalue(), "shown": shown.getvalue()}))
"""


@dataclass
class Finished:
    """A journal a worker left: a task of each status, one record quarantined."""

    successful: str
    failed: str
    not_importable: str  # FAILED, and its record quarantined
    ready: str


def run_and_leave(env: Env) -> Finished:
    """Run tasks to their end with a real worker, enqueue one more, and take away what a
    reader would write: the segments' summaries and the history lock."""
    deploy = Deploy(env)
    deploy.deploy()
    not_importable = deploy.enqueue_greet("world")
    deploy.break_it()
    successful, failed = env.run_python(
        "from tests import tasks\n"
        "print(tasks.add.enqueue(1, 2).id, tasks.fail_with.enqueue('x').id)"
    ).split()
    env.run_batch()
    ready = env.run_python("from tests import tasks\nprint(tasks.add.enqueue(3, 4).id)").strip()
    for summary in (env.journal / "segments").glob("*.summary"):
        summary.unlink()
    (env.journal / "history.lock").unlink(missing_ok=True)
    return Finished(
        successful=successful, failed=failed, not_importable=not_importable, ready=ready
    )


@dataclass
class Seen:
    """What the read-only commands say of a journal."""

    counts: dict[str, int]
    journal_problem: str | None
    failures: list[str]
    quarantined: list[str]
    results: dict[str, list[Any]]
    listed: list[str]
    shown: dict[str, Any]


def what_readers_see(env: Env, run: Finished, *, module: str = "django") -> Seen:
    document = json.loads(env.manage("procpool_status", "--json", module=module).stdout)
    ids = [run.successful, run.failed, run.ready]
    code = READ.replace("IDS", repr(ids)).replace("NAME", repr(run.not_importable))
    read = json.loads(env.manage("shell", "-v", "0", "-c", code, module=module).stdout)
    shown = json.loads(read["shown"])
    return Seen(
        counts={
            name: count
            for name, count in document["queues"]["default"].items()
            if name != "oldest_ready_age_s"
        },
        journal_problem=document["journal_problem"],
        failures=sorted(failure["id"] for failure in document["recent_failures"]),
        quarantined=[bad["name"] for bad in document["quarantined"]],
        results=read["results"],
        listed=read["listed"].splitlines(),
        shown={key: shown[key] for key in ("file", "reason")},
    )


def expected(env: Env, run: Finished) -> Seen:
    quarantine_file = str(env.journal / "quarantine" / f"{run.not_importable}.json")
    return Seen(
        counts={
            "READY": 1,
            "DEFERRED": 0,
            "RUNNING": 0,
            "SUCCESSFUL": 1,
            "FAILED": 2,
            "HANDING_OFF": 0,
            "HANDED_OFF": 0,
            "QUARANTINED": 1,
        },
        journal_problem=None,
        failures=sorted([run.failed, run.not_importable]),
        quarantined=[run.not_importable],
        results={
            run.successful: ["SUCCESSFUL", 3],
            run.failed: ["FAILED", None],
            run.ready: ["READY", None],
        },
        listed=[
            f"{run.not_importable}  deployed_tasks.greet  {NOT_IMPORTABLE}  ({quarantine_file})",
            "1 quarantined record(s)",
        ],
        shown={"file": quarantine_file, "reason": NOT_IMPORTABLE},
    )


@pytest.fixture
def tmpfs(env: Env) -> Iterator[Path]:
    with journal_on_tmpfs(env) as mount_point:
        yield mount_point


def test_readers_read_a_read_only_mount_as_they_read_it_writable(env: Env, tmpfs: Path) -> None:
    run = run_and_leave(env)
    left = journal_files(env)

    with read_only(tmpfs):
        seen = what_readers_see(env, run)

    assert seen == expected(env, run)
    assert journal_files(env) == left
    # Writable, a look keeps the summaries it made (and takes the history lock to): the
    # reader of the read-only mount had the same work and did without.
    env.manage("procpool_status")
    assert (env.journal / "history.lock").exists()
    assert sorted((env.journal / "segments").glob("*.summary")) != []


def test_readers_read_a_tree_made_0500_and_create_nothing_in_it(env: Env) -> None:
    run = run_and_leave(env)
    for directory, _, files in os.walk(env.journal):
        for name in files:
            os.chmod(os.path.join(directory, name), 0o400)
        os.chmod(directory, 0o500)
    left = journal_files(env)

    seen = what_readers_see(env, run, module="tests.permission_bits")

    assert seen == expected(env, run)
    assert journal_files(env) == left
    assert not (env.journal / "history.lock").exists()
    done = env.manage(
        "procpool_worker", "--no-reload", "--batch", module="tests.permission_bits", expect_code=3
    )
    assert f"Cannot use the journal {env.journal}" in done.stdout + done.stderr
    assert journal_files(env) == left


def test_a_read_only_mount_is_refused_by_the_journals_writers_but_not_its_readers(
    env: Env, tmpfs: Path
) -> None:
    run = run_and_leave(env)

    with read_only(tmpfs):
        refused = env.manage("procpool_quarantine", "drop", run.not_importable, expect_code=1)
        seen = what_readers_see(env, run)

    assert refused.stderr.strip() == (
        f"CommandError: Cannot use the journal {env.journal}: [Errno 30] Read-only file "
        f"system: '{env.journal / 'quarantine' / (run.not_importable + '.json')}'"
    )
    assert seen == expected(env, run)
    assert journal.Journal(env.journal).quarantined() != []
