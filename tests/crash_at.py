"""Run ``django-admin`` killed at a chosen point: ``python -m tests.crash_at procpool_requeue ID``.

The process sends itself SIGKILL as it enters the ``journal.Journal`` method that
``PROCPOOL_CRASH_AT`` names (e.g. ``write_state``): what it wrote before is on disk as the
code left it, nothing after is, and no ``finally`` or ``atexit`` runs; a power cut or the
OOM killer at that line. Locks held by the process are released by the kernel, as then.

Optional narrowing, for methods that take a state (``write_state_durably``):
``PROCPOOL_CRASH_STATUS`` kills only at a call whose state has this status,
``PROCPOOL_CRASH_CALL`` at the N-th such call (default 1), and ``PROCPOOL_CRASH_WHEN=after``
once that call has returned instead of as it begins.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

from procpool_tasks import journal

CRASH_AT_VARIABLE = "PROCPOOL_CRASH_AT"
STATUS_VARIABLE = "PROCPOOL_CRASH_STATUS"
CALL_VARIABLE = "PROCPOOL_CRASH_CALL"
WHEN_VARIABLE = "PROCPOOL_CRASH_WHEN"


def _crash(*args: Any, **kwargs: Any) -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _crash_at_call(method: Any, status: str | None, call: int, after: bool) -> Any:
    calls = 0

    def wrapper(self: journal.Journal, *args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        state = args[0] if args else None
        if status is None or getattr(state, "status", None) == status:
            calls += 1
            if calls == call:
                if after:
                    method(self, *args, **kwargs)
                _crash()
        return method(self, *args, **kwargs)

    return wrapper


def main() -> None:
    name = os.environ[CRASH_AT_VARIABLE]
    method = getattr(journal.Journal, name, None)
    if not callable(method):
        raise SystemExit(f"{CRASH_AT_VARIABLE}: journal.Journal has no method {name!r}")
    status = os.environ.get(STATUS_VARIABLE)
    call = int(os.environ.get(CALL_VARIABLE, "1"))
    after = os.environ.get(WHEN_VARIABLE) == "after"
    if status is None and call == 1 and not after:
        setattr(journal.Journal, name, _crash)
    else:
        setattr(journal.Journal, name, _crash_at_call(method, status, call, after))
    from django.core.management import execute_from_command_line

    execute_from_command_line(["django-admin", *sys.argv[1:]])


if __name__ == "__main__":
    main()
