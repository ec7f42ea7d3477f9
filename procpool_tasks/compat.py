"""The one place that imports from ``django.tasks`` (Django 6+) or ``django_tasks``.

Framework names drift between releases (``InvalidTask`` was ``InvalidTaskError`` in the
backport), so every other module imports them from here. The type checker sees Django 6's
names; at run time the backport stands in for them where Django is older.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from django.tasks import (
        DEFAULT_TASK_BACKEND_ALIAS,
        DEFAULT_TASK_QUEUE_NAME,
        Task,
        TaskContext,
        TaskResult,
        TaskResultStatus,
        task_backends,
    )
    from django.tasks.backends.base import BaseTaskBackend
    from django.tasks.base import (
        DEFAULT_TASK_PRIORITY,
        TASK_MAX_PRIORITY,
        TASK_MIN_PRIORITY,
        TaskError,
    )
    from django.tasks.exceptions import (
        InvalidTask,
        InvalidTaskBackend,
        TaskResultDoesNotExist,
        TaskResultMismatch,
    )
    from django.tasks.signals import task_enqueued, task_finished, task_started

    FRAMEWORK = "django.tasks"
else:
    try:
        from django.tasks import (
            DEFAULT_TASK_BACKEND_ALIAS,
            DEFAULT_TASK_QUEUE_NAME,
            Task,
            TaskContext,
            TaskResult,
            TaskResultStatus,
            task_backends,
        )
        from django.tasks import exceptions as _framework
        from django.tasks.backends.base import BaseTaskBackend
        from django.tasks.base import (
            DEFAULT_TASK_PRIORITY,
            TASK_MAX_PRIORITY,
            TASK_MIN_PRIORITY,
            TaskError,
        )
        from django.tasks.signals import task_enqueued, task_finished, task_started

        FRAMEWORK = "django.tasks"
    except ImportError:  # Django < 6: the backport
        try:
            import django_tasks  # noqa: F401 (only to say what is missing)
        except ModuleNotFoundError as missing:
            raise ImportError(
                "procpool_tasks needs django.tasks (Django 6+) or, on an older Django, the "
                "django-tasks backport: pip install 'procpool-tasks[backport]'"
            ) from missing
        from django_tasks import (
            DEFAULT_TASK_BACKEND_ALIAS,
            DEFAULT_TASK_QUEUE_NAME,
            TaskContext,
            TaskResult,
            TaskResultStatus,
            task_backends,
        )
        from django_tasks import checks as _framework_checks  # noqa: F401 (registers it)
        from django_tasks import exceptions as _framework
        from django_tasks.backends.base import BaseTaskBackend
        from django_tasks.base import (
            DEFAULT_TASK_PRIORITY,
            TASK_MAX_PRIORITY,
            TASK_MIN_PRIORITY,
            Task,
            TaskError,
        )
        from django_tasks.signals import task_enqueued, task_finished, task_started

        FRAMEWORK = "django_tasks"

    InvalidTask = getattr(_framework, "InvalidTask", None) or _framework.InvalidTaskError
    InvalidTaskBackend = (
        getattr(_framework, "InvalidTaskBackend", None) or _framework.InvalidTaskBackendError
    )
    TaskResultDoesNotExist = _framework.TaskResultDoesNotExist
    TaskResultMismatch = _framework.TaskResultMismatch


def _errors_of_both_frameworks(name: str, old_name: str) -> tuple[type[Exception], ...]:
    """An exception of ours and, where the backport is installed too, the backport's.

    On Django 6 a backend built on the backport (django-tasks-rq is) raises the backport's
    exceptions, which are no subclasses of Django's.
    """
    ours: type[Exception] = globals()[name]
    try:
        from django_tasks import exceptions as backport
    except ImportError:
        return (ours,)
    theirs = getattr(backport, name, None) or getattr(backport, old_name)
    return (ours,) if theirs is ours else (ours, theirs)


#: What a backend of either framework raises for a task it cannot take (``handoff``).
INVALID_TASK_ERRORS = _errors_of_both_frameworks("InvalidTask", "InvalidTaskError")
#: What a backend of either framework raises for a result it does not have.
RESULT_DOES_NOT_EXIST_ERRORS = _errors_of_both_frameworks(
    "TaskResultDoesNotExist", "TaskResultDoesNotExist"
)

#: The logger the framework's own signal receivers log to.
FRAMEWORK_LOGGER = logging.getLogger(FRAMEWORK)


def set_result_field(result: Any, name: str, value: Any) -> None:
    """Set a field of the framework's frozen ``TaskResult``, as its own backends do."""
    object.__setattr__(result, name, value)


__all__ = [
    "DEFAULT_TASK_BACKEND_ALIAS",
    "DEFAULT_TASK_PRIORITY",
    "DEFAULT_TASK_QUEUE_NAME",
    "FRAMEWORK",
    "FRAMEWORK_LOGGER",
    "INVALID_TASK_ERRORS",
    "RESULT_DOES_NOT_EXIST_ERRORS",
    "TASK_MAX_PRIORITY",
    "TASK_MIN_PRIORITY",
    "BaseTaskBackend",
    "InvalidTask",
    "InvalidTaskBackend",
    "Task",
    "TaskContext",
    "TaskError",
    "TaskResult",
    "TaskResultDoesNotExist",
    "TaskResultMismatch",
    "TaskResultStatus",
    "set_result_field",
    "task_backends",
    "task_enqueued",
    "task_finished",
    "task_started",
]
