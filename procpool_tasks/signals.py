"""Sending the framework's signals from a worker, a supervisor or a command: once per end
of an attempt, from the process that decided it, and never so that a receiver's failure
changes what was decided.

A task ends an attempt with ``task_finished`` (SUCCESSFUL or FAILED), or with
``task_enqueued`` again, same id and READY, when it is queued once more: a retry, a re-run
after an interruption, a re-queue by hand. Either carries the ``TaskResult`` that
``get_result`` returns once that end is committed. (``enqueue`` in a web process sends
``task_enqueued`` itself and lets a receiver's error propagate, as the framework's own
backends do.)

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

__all__ = ["send_enqueued", "send_finished", "send_finished_with", "send_started"]

logger = logging.getLogger(__name__)

#: The errors the supervisor and the commands record themselves (``states.error``).
_RECORDED = (
    MemoryLimitExceeded,
    TaskCancelled,
    TaskInterrupted,
    TaskTimeoutError,
    WorkerProcessDied,
)


def send_enqueued(sender: Any, result: Any) -> None:
    """Send ``task_enqueued``; a receiver that raises is logged and changes nothing."""
    _send(compat.task_enqueued, "task_enqueued", sender, result)


def send_started(sender: Any, result: Any) -> None:
    """Send ``task_started``; a receiver that raises is logged and changes nothing."""
    _send(compat.task_started, "task_started", sender, result)


def send_finished(sender: Any, result: Any) -> None:
    """Send ``task_finished``; a receiver that raises is logged and changes nothing.

    Call it inside the ``except`` block of a task's own exception for a FAILED result.
    """
    _send(compat.task_finished, "task_finished", sender, result)


def _send(signal: Any, name: str, sender: Any, result: Any) -> None:
    try:
        signal.send(sender=sender, task_result=result)
    except Exception:
        logger.exception("A %s receiver failed for task id=%s", name, result.id)


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
