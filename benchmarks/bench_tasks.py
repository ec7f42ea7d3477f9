"""The @task functions every system runs: the same module path, body and return value.

Imported by the throwaway projects of ``projects.py``; the decorator is the framework's
(``django.tasks`` on Django 6+, the ``django_tasks`` backport before, or where a peer is
built on the backport: the project's ``BENCH_USE_BACKPORT`` setting).
"""

from __future__ import annotations

import time
from typing import Any

import django
from django.conf import settings

if django.VERSION >= (6,) and not getattr(settings, "BENCH_USE_BACKPORT", False):
    from django.tasks import task
else:
    from django_tasks import task  # type: ignore[no-redef]

#: How long the first attempt of ``interruptible`` blocks: until the worker is killed.
INTERRUPTIBLE_FIRST_ATTEMPT_S = 60.0


@task()
def noop() -> None:
    """Do nothing: what is measured is the queue around the task."""


@task()
def sleep_ms(ms: float) -> None:
    """Sleep ``ms`` milliseconds: a task long enough that the pool, not the queue, limits."""
    time.sleep(ms / 1000)


@task()
def echo(value: Any) -> Any:
    """Return the argument: a round trip of data through the queue."""
    return value


@task(takes_context=True)
def interruptible(context: Any) -> int:
    """Block on the first attempt (the worker is killed meanwhile); return at once after."""
    if context.attempt <= 1:
        time.sleep(INTERRUPTIBLE_FIRST_ATTEMPT_S)
    return int(context.attempt)
