"""Helpers that more than one test file uses; a helper one file uses stays in that file."""

from __future__ import annotations

import json
from typing import Any

from procpool_tasks import journal
from tests.conftest import Env

#: The variable tests/settings.py reads the default backend's extra OPTIONS from.
OPTIONS_VARIABLE = "PROCPOOL_TEST_OPTIONS"
TIMED_OUT = "procpool_tasks.execution.TaskTimeoutError"


def refreshed(result: Any) -> Any:
    """The result as its task's backend reads it now, from any process's writes."""
    result.refresh()
    return result


def status_of(result: Any) -> str:
    return str(refreshed(result).status)


def set_options(env: Env, **options: Any) -> None:
    """Give the default backend these OPTIONS in every process the test starts from now."""
    env.variables[OPTIONS_VARIABLE] = json.dumps(options)


def state_of(env: Env, result_id: str) -> journal.State | None:
    """A task's state as its result file holds it (also for tasks whose path does not
    import, which ``get_result`` cannot build a result for)."""
    return journal.Journal(env.journal).read_state(result_id)


def journal_files(env: Env) -> dict[str, tuple[bytes, int]]:
    """Every file in the journal, with its content and modification time."""
    return {
        str(path.relative_to(env.journal)): (path.read_bytes(), path.stat().st_mtime_ns)
        for path in sorted(env.journal.rglob("*"))
        if path.is_file()
    }
