"""The portable stand-ins for Linux-only calls (``procpool_tasks.portability``).

tox's ``py311-django52-portable`` environment sets ``PROCPOOL_TASKS_PORTABLE=1`` and runs
the worker, fault and reload tests on them; these tests check the switch itself, in a
subprocess of each kind so that the module is imported afresh.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

PROBE = """
import json, os, tempfile
from procpool_tasks import portability as p
with tempfile.TemporaryFile() as file:
    file.write(b"x")
    p.sync_data(file.fileno())
print(json.dumps({
    "portable": p.PORTABLE_ONLY,
    "inotify": p.HAS_INOTIFY,
    "parent_death_signal": p.HAS_PARENT_DEATH_SIGNAL,
    "pidfd": p.HAS_PIDFD,
    "proc": p.HAS_PROC,
    "own_memory": p.resident_memory_mib() > 0,
    "other_memory": p.resident_memory_mib(os.getppid()),
}))
"""


def probe(portable: bool) -> dict[str, object]:
    env = {**os.environ, "PROCPOOL_TASKS_PORTABLE": "1" if portable else "0"}
    done = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True
    )
    result: dict[str, object] = json.loads(done.stdout)
    return result


def test_the_switch_turns_every_linux_only_call_off_and_the_stand_ins_work() -> None:
    assert probe(portable=True) == {
        "portable": True,
        "inotify": False,
        "parent_death_signal": False,
        "pidfd": False,
        "proc": False,
        "own_memory": True,  # the peak, from getrusage
        "other_memory": 0.0,  # unknown without /proc
    }


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux's own calls")
def test_on_linux_without_the_switch_the_linux_calls_are_used() -> None:
    found = probe(portable=False)

    assert (found["portable"], found["inotify"], found["parent_death_signal"]) == (
        False,
        True,
        True,
    )
    assert (found["proc"], found["own_memory"]) == (True, True)
    assert isinstance(found["other_memory"], float)
    assert found["other_memory"] > 0
