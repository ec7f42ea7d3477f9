"""Hostile ids: paths, NULs and other backends' ids do not exist, and looking them up
touches no file outside the journal.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest

from procpool_tasks import compat
from tests import tasks
from tests.conftest import Env

HOSTILE_IDS = [
    "",
    "../../etc/passwd",
    "/etc/passwd",
    "..",
    "x" * 10_000,
    "a\x00b",
    "0123456789abcdef-0\x00",
    "0123456789abcdef/0",
    "0123456789abcdef-0/../../../etc/passwd",
    "..-0",
    "3f2504e0-4f89-11d3-9a0c-0305e82c3301",  # a UUID, as other backends issue
    "aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY",  # the ImmediateBackend's form
    "42",  # a database backend's primary key
]

PROBE_OPENS = """
import json, sys
from tests import tasks
from procpool_tasks import compat
opened = []
def audit(event, args):
    if event in ("open", "os.listdir", "os.scandir", "os.chmod", "os.remove", "os.rename"):
        opened.append(str(args[0]))
sys.addaudithook(audit)
for result_id in json.loads(sys.argv[1]):
    try:
        tasks.add.get_result(result_id)
    except compat.TaskResultDoesNotExist:
        continue
    raise SystemExit(f"{result_id!r} was found")
print(json.dumps(opened))
"""


def test_hostile_ids_do_not_exist_and_touch_no_file_outside_the_journal(env: Env) -> None:
    real = tasks.add.enqueue(1, 2)
    env.run_batch()
    # A sentinel where "../../etc/passwd" would lead from the journal's subdirectories,
    # its access time older than its change time so that any read would update it.
    sentinel = env.tmp_path / "etc" / "passwd"
    sentinel.parent.mkdir()
    sentinel.write_text("root:x:0:0::/root:/bin/sh\n")
    sentinel_mtime = sentinel.stat().st_mtime_ns
    os.utime(sentinel, ns=(sentinel_mtime - 10**12, sentinel_mtime))

    for result_id in HOSTILE_IDS:
        with pytest.raises(compat.TaskResultDoesNotExist):
            tasks.add.get_result(result_id)
        with pytest.raises(compat.TaskResultDoesNotExist):
            asyncio.run(tasks.add.aget_result(result_id))
    opened = json.loads(env.run_python(PROBE_OPENS, json.dumps(HOSTILE_IDS)))

    outside = [path for path in opened if not Path(path).resolve().is_relative_to(env.journal)]
    assert outside == []
    assert sentinel.stat().st_atime_ns == sentinel_mtime - 10**12
    assert sentinel.stat().st_mtime_ns == sentinel_mtime
    assert tasks.add.get_result(real.id).return_value == 3
