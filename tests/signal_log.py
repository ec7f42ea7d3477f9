"""Receivers of the framework's task signals that log each one to a file.

They write only where ``PROCPOOL_SIGNAL_LOG`` (or ``PROCPOOL_SIGNAL_EXC_INFO_LOG``) names
a file, read when the signal arrives, so a test sets it for the worker processes it starts
and nowhere else.
"""

from __future__ import annotations

import os
import sys
from traceback import format_exception_only
from typing import Any

from django.dispatch import receiver

from procpool_tasks.compat import task_enqueued, task_finished, task_started

#: The environment variable that names the log file.
SIGNAL_LOG_VARIABLE = "PROCPOOL_SIGNAL_LOG"
#: The one that names a file for what a ``task_finished`` receiver finds in
#: ``sys.exc_info()``: ``<id> <status> <exception>``, or ``-`` when none is being handled.
EXC_INFO_LOG_VARIABLE = "PROCPOOL_SIGNAL_EXC_INFO_LOG"


def _log(line: str, variable: str = SIGNAL_LOG_VARIABLE) -> None:
    path = os.environ.get(variable)
    if not path:
        return
    # One write to an O_APPEND file: lines from several worker processes never interleave.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


@receiver(task_enqueued)
def log_task_enqueued(sender: Any, task_result: Any, **kwargs: Any) -> None:
    _log(f"enqueued {task_result.id} {task_result.status}")


@receiver(task_started)
def log_task_started(sender: Any, task_result: Any, **kwargs: Any) -> None:
    _log(f"started {task_result.id}")


@receiver(task_finished)
def log_task_finished(sender: Any, task_result: Any, **kwargs: Any) -> None:
    _log(f"finished {task_result.id} {task_result.status}")


@receiver(task_finished)
def log_exception_being_handled(sender: Any, task_result: Any, **kwargs: Any) -> None:
    error = sys.exc_info()[1]
    handled = "".join(format_exception_only(error)).strip() if error is not None else "-"
    _log(f"{task_result.id} {task_result.status} {handled}", EXC_INFO_LOG_VARIABLE)
