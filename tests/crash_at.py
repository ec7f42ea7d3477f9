"""Run ``django-admin`` killed at a chosen point: ``python -m tests.crash_at procpool_requeue ID``.

The process sends itself SIGKILL as it enters the ``journal.Journal`` method that
``PROCPOOL_CRASH_AT`` names (e.g. ``write_state``): what it wrote before is on disk as the
code left it, nothing after is, and no ``finally`` or ``atexit`` runs; a power cut or the
OOM killer at that line. Locks held by the process are released by the kernel, as then.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

from procpool_tasks import journal

CRASH_AT_VARIABLE = "PROCPOOL_CRASH_AT"


def _crash(*args: Any, **kwargs: Any) -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def main() -> None:
    name = os.environ[CRASH_AT_VARIABLE]
    if not callable(getattr(journal.Journal, name, None)):
        raise SystemExit(f"{CRASH_AT_VARIABLE}: journal.Journal has no method {name!r}")
    setattr(journal.Journal, name, _crash)
    from django.core.management import execute_from_command_line

    execute_from_command_line(["django-admin", *sys.argv[1:]])


if __name__ == "__main__":
    main()
