"""Run ``django-admin`` killed at a chosen point: ``python -m tests.crash_at procpool_requeue ID``.

The process sends itself SIGKILL as it enters the ``journal.Journal`` method that
``PROCPOOL_CRASH_AT`` names (e.g. ``write_state``), or as it returns from it with an
``after:`` prefix (``after:append``): what it wrote before is on disk as the code left it,
nothing after is, and no ``finally`` or ``atexit`` runs; a power cut or the OOM killer at
that line. ``PROCPOOL_CRASH_AT_CALL`` (default 1) picks which call of the method, so that
a supervisor can do its work a few times first; for a method that takes a state
(``write_state_durably``), or a task id and a state's framed line (``write_state_line``),
``PROCPOOL_CRASH_STATUS`` counts only the calls whose state has this status. Locks held by
the process are released by the kernel, as then.

A process the command forked (the worker's committing process) kills the command's own
process first, then itself: the whole worker stops at that line, as at a power cut.
"""

from __future__ import annotations

import itertools
import os
import signal
import sys
from typing import Any

from procpool_tasks import journal
from procpool_tasks.journal.format import _unframe

CRASH_AT_VARIABLE = "PROCPOOL_CRASH_AT"
CRASH_AT_CALL_VARIABLE = "PROCPOOL_CRASH_AT_CALL"
CRASH_STATUS_VARIABLE = "PROCPOOL_CRASH_STATUS"


#: The command's own process: the one to kill, from whichever of its forks gets there.
_COMMAND_PID = os.getpid()


def _crash() -> None:
    if os.getpid() != _COMMAND_PID:
        os.kill(_COMMAND_PID, signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)


def _status_of(args: tuple[Any, ...]) -> str | None:
    """The status of the state a call writes: given whole, or as its framed line."""
    if args and hasattr(args[0], "status"):
        return str(args[0].status)
    if len(args) >= 2 and isinstance(args[1], bytes):
        return journal.decode_state(_unframe(args[1].rstrip(b"\n"))).status
    return None


def main() -> None:
    when, _, name = os.environ[CRASH_AT_VARIABLE].rpartition(":")
    method = getattr(journal.Journal, name, None)
    if not callable(method) or when not in ("", "after"):
        raise SystemExit(
            f"{CRASH_AT_VARIABLE}: journal.Journal has no method {name!r}, or {when!r} is "
            "not 'after'"
        )
    crash_call = int(os.environ.get(CRASH_AT_CALL_VARIABLE, "1"))
    status = os.environ.get(CRASH_STATUS_VARIABLE)
    calls = itertools.count(1)

    def crash_there(self: journal.Journal, *args: Any, **kwargs: Any) -> Any:
        if status is not None and _status_of(args) != status:
            return method(self, *args, **kwargs)
        call = next(calls)
        if call == crash_call and not when:
            _crash()
        result = method(self, *args, **kwargs)
        if call == crash_call:
            _crash()
        return result

    setattr(journal.Journal, name, crash_there)
    from django.core.management import execute_from_command_line

    execute_from_command_line(["django-admin", *sys.argv[1:]])


if __name__ == "__main__":
    main()
