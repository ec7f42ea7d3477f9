"""Sending the framework's ``task_finished``: once per end of a task, from the process
that decided it, and never so that a receiver's failure changes what was decided.

A FAILED result is sent while its error is being handled, as the framework's own
backends do: receivers that read ``sys.exc_info()`` (the framework's log line does) get the
error. The worker process sends a task's own exception that way; the supervisor and the
commands send the error they recorded (``states.error``), raised again here.
"""

from __future__ import annotations

import logging
from typing import Any

from . import compat, journal
from .exceptions import (
    MemoryLimitExceeded,
    TaskCancelled,
    TaskInterrupted,
    TaskTimeoutError,
    WorkerProcessDied,
)

__all__ = ["send_finished", "send_finished_with"]

logger = logging.getLogger(__name__)

#: The errors the supervisor and the commands record themselves (``states.error``).
_RECORDED = (
    MemoryLimitExceeded,
    TaskCancelled,
    TaskInterrupted,
    TaskTimeoutError,
    WorkerProcessDied,
)


def send_finished(sender: Any, result: Any) -> None:
    """Send ``task_finished``; a receiver that raises is logged and changes nothing.

    Call it inside the ``except`` block of a task's own exception for a FAILED result.
    """
    try:
        compat.task_finished.send(sender=sender, task_result=result)
    except Exception:
        logger.exception("A task_finished receiver failed for task id=%s", result.id)


def send_finished_with(sender: Any, result: Any, error: journal.TaskError | None) -> None:
    """Send ``task_finished`` for a result whose last error was recorded, not raised here.

    The recorded error is raised again and sent while it is handled (without a traceback
    of this frame, which would show where it was raised again, not what happened).
    """
    if error is None:
        send_finished(sender, result)
        return
    try:
        raise _exception_of(error)
    except BaseException as raised:
        raised.__traceback__ = None
        send_finished(sender, result)


def _exception_of(error: journal.TaskError) -> BaseException:
    """The exception a recorded TaskError stands for (RuntimeError for any other)."""
    for exception_class in _RECORDED:
        path = f"{exception_class.__module__}.{exception_class.__qualname__}"
        if error.exception_class_path == path:
            return exception_class(error.traceback.strip().removeprefix(f"{path}: "))
    return RuntimeError(error.traceback.strip())
