"""Run ``django-admin`` with the supervisor paused at a point of its stop, for signal races.

``PROCPOOL_PAUSE_AT`` names the point: ``close`` (the loop ended and logged "Worker ...
stopped"; nothing is let go yet) or ``exit`` (everything is let go; the process is about
to exit). There the supervisor creates the file ``PROCPOOL_PAUSE_FILE`` names and waits
until the test deletes it (30 s at most), so that a signal the test sends meanwhile
arrives at exactly that moment.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

from procpool_tasks.worker.supervisor import Supervisor

PAUSE_AT_VARIABLE = "PROCPOOL_PAUSE_AT"
PAUSE_FILE_VARIABLE = "PROCPOOL_PAUSE_FILE"
PAUSE_LIMIT_S = 30.0


def _pause() -> None:
    marker = Path(os.environ[PAUSE_FILE_VARIABLE])
    marker.touch()
    deadline = time.monotonic() + PAUSE_LIMIT_S
    while marker.exists() and time.monotonic() < deadline:
        time.sleep(0.01)


def main() -> None:
    point = os.environ[PAUSE_AT_VARIABLE]
    close, run = Supervisor._close, Supervisor.run

    def pause_then_close(self: Supervisor) -> None:
        _pause()
        close(self)

    def run_then_pause(self: Supervisor) -> Any:
        code = run(self)
        _pause()
        return code

    if point == "close":
        Supervisor._close = pause_then_close  # type: ignore[method-assign]
    elif point == "exit":
        Supervisor.run = run_then_pause  # type: ignore[method-assign]
    else:
        raise SystemExit(f"{PAUSE_AT_VARIABLE}: {point!r} is neither 'close' nor 'exit'")
    from django.core.management import execute_from_command_line

    execute_from_command_line(["django-admin", *sys.argv[1:]])


if __name__ == "__main__":
    main()
