"""Receivers of the framework's task signals that store each one as a row, as a monitoring
app does: in the project's database (``tests.models.SignalRow``), from whichever process
sends it (web, command, supervisor, worker process).

They write only where ``PROCPOOL_SIGNAL_ROWS`` is ``1``, read when the signal arrives, so a
test turns them on for the processes it starts and nowhere else. A write that fails
raises: the web process's ``enqueue`` fails, and the worker and the commands log "A ...
receiver failed".
"""

from __future__ import annotations

import os
from typing import Any

from django.dispatch import receiver

from procpool_tasks.compat import task_enqueued, task_finished, task_started

#: The environment variable that turns the receivers on.
SIGNAL_ROWS_VARIABLE = "PROCPOOL_SIGNAL_ROWS"


def _store(signal: str, task_result: Any) -> None:
    if os.environ.get(SIGNAL_ROWS_VARIABLE) != "1":
        return
    from tests.models import SignalRow

    SignalRow.objects.create(
        task_id=task_result.id,
        signal=signal,
        status=str(task_result.status),
        attempts=task_result.attempts,
        worker_ids=list(task_result.worker_ids),
        errors=[error.exception_class_path for error in task_result.errors],
        pid=os.getpid(),
    )


@receiver(task_enqueued)
def store_task_enqueued(sender: Any, task_result: Any, **kwargs: Any) -> None:
    _store("enqueued", task_result)


@receiver(task_started)
def store_task_started(sender: Any, task_result: Any, **kwargs: Any) -> None:
    _store("started", task_result)


@receiver(task_finished)
def store_task_finished(sender: Any, task_result: Any, **kwargs: Any) -> None:
    _store("finished", task_result)
