"""More tasks for the tests; each name says what it does."""

from __future__ import annotations

import time
from pathlib import Path

try:
    from django.tasks import task
except ImportError:  # Django < 6
    from django_tasks import task  # type: ignore[no-redef]


@task()
def wait_for_gate(gate: str, marker: str, timeout: float = 30.0) -> str:
    """Touch ``marker``, then wait until ``gate`` exists: the test decides when it finishes."""
    Path(marker).touch()
    deadline = time.monotonic() + timeout
    while not Path(gate).exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{gate} did not appear within {timeout}s")
        time.sleep(0.01)
    return gate
