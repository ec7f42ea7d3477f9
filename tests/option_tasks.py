"""Tasks that give their own options in ``@task(...)`` (Django 6.1, the backport 0.11+).

Django 6.0's decorator takes no such arguments: only the tests that skip on 6.0 import
this module (``tests/test_task_options.py``).
"""

from __future__ import annotations

import time

from tests.tasks import fail_times

try:
    from django.tasks import task
except ImportError:  # Django < 6
    from django_tasks import task  # type: ignore[no-redef]


# The framework's stubs do not know the arguments it passes on to the backend's task_class.
@task(max_attempts=3, timeout=1)  # type: ignore[call-overload, untyped-decorator]
def hang_logging_starts(log: str) -> None:
    """Log when this attempt started, then never finish (its timeout stops it)."""
    with open(log, "a") as file:
        file.write(f"{time.time()!r}\n")
    time.sleep(600)


def tenth_of_a_second_more_each_time(attempt: int) -> float:
    """A backoff function: 0.1 s after the first failure, 0.2 s after the second, ..."""
    return 0.1 * attempt


@task(max_attempts=3, backoff=tenth_of_a_second_more_each_time)  # type: ignore[call-overload, untyped-decorator]
def fail_twice_then_succeed(log: str) -> int:
    """Raise ValueError on the first two attempts, then return the attempt number."""
    return int(fail_times.call(log, 2, "ValueError"))
