"""Run ``django-admin`` with ``--max-memory-per-child`` checked only after each task.

For the tests of that check: their leaking tasks are over the limit while they end, and
whether a sample of the supervisor falls in that moment (and kills the task) is up to
how busy the machine is. Linux only: where each process checks its own memory (no
/proc), the check runs in the worker processes, out of this module's reach.
"""

from __future__ import annotations

import sys

from procpool_tasks.worker.dispatch import Dispatcher


def _sample_nothing(self: Dispatcher, now: float) -> None:
    """No sample while a task runs."""


def main() -> None:
    Dispatcher._kill_over_memory = _sample_nothing  # type: ignore[method-assign]
    from django.core.management import execute_from_command_line

    execute_from_command_line(["django-admin", *sys.argv[1:]])


if __name__ == "__main__":
    main()
