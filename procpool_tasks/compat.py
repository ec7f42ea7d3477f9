"""The one place that imports from ``django.tasks`` (Django 6+) or ``django_tasks``.

Framework names drift between releases (``InvalidTask`` was ``InvalidTaskError`` in the
backport), so every other module imports them from here.
"""

from __future__ import annotations

import logging
from typing import Any

try:
    from django.tasks import (  # type: ignore[attr-defined,unused-ignore]
        DEFAULT_TASK_BACKEND_ALIAS,
        DEFAULT_TASK_QUEUE_NAME,
        Task,
        TaskContext,
        TaskResult,
        TaskResultStatus,
        task_backends,
    )
    from django.tasks import (  # type: ignore[attr-defined,unused-ignore]
        checks as _framework_checks,  # noqa: F401  (registers the framework's check)
    )
    from django.tasks import (  # type: ignore[attr-defined,unused-ignore]
        exceptions as _framework,
    )
    from django.tasks.backends.base import (  # type: ignore[import-not-found,unused-ignore]
        BaseTaskBackend,
    )
    from django.tasks.base import TaskError  # type: ignore[import-not-found,unused-ignore]
    from django.tasks.signals import (  # type: ignore[import-not-found,unused-ignore]
        task_enqueued,
        task_finished,
        task_started,
    )
    from django.utils.json import normalize_json  # type: ignore[import-not-found,unused-ignore]

    FRAMEWORK = "django.tasks"
except ImportError:  # Django < 6: the backport
    from django_tasks import (  # type: ignore[no-redef,unused-ignore]
        DEFAULT_TASK_BACKEND_ALIAS,
        DEFAULT_TASK_QUEUE_NAME,
        TaskContext,
        TaskResult,
        TaskResultStatus,
        task_backends,
    )
    from django_tasks import (  # type: ignore[no-redef,unused-ignore]
        checks as _framework_checks,  # noqa: F401  (registers the framework's check)
    )
    from django_tasks import (  # type: ignore[no-redef,unused-ignore]
        exceptions as _framework,
    )
    from django_tasks.backends.base import (  # type: ignore[no-redef,unused-ignore]
        BaseTaskBackend,
    )
    from django_tasks.base import Task, TaskError  # type: ignore[no-redef,unused-ignore]
    from django_tasks.signals import (  # type: ignore[no-redef,unused-ignore]
        task_enqueued,
        task_finished,
        task_started,
    )
    from django_tasks.utils import normalize_json  # type: ignore[no-redef,unused-ignore]

    FRAMEWORK = "django_tasks"

InvalidTask: type[Exception] = getattr(_framework, "InvalidTask", None) or (
    _framework.InvalidTaskError
)
InvalidTaskBackend: type[Exception] = getattr(_framework, "InvalidTaskBackend", None) or (
    _framework.InvalidTaskBackendError
)
TaskResultDoesNotExist: type[Exception] = _framework.TaskResultDoesNotExist

#: The logger the framework's own signal receivers log to.
FRAMEWORK_LOGGER = logging.getLogger(FRAMEWORK)


def set_result_field(result: Any, name: str, value: Any) -> None:
    """Set a field of the framework's frozen ``TaskResult`` (as its backends do)."""
    object.__setattr__(result, name, value)


__all__ = [
    "DEFAULT_TASK_BACKEND_ALIAS",
    "DEFAULT_TASK_QUEUE_NAME",
    "FRAMEWORK",
    "FRAMEWORK_LOGGER",
    "BaseTaskBackend",
    "InvalidTask",
    "InvalidTaskBackend",
    "Task",
    "TaskContext",
    "TaskError",
    "TaskResult",
    "TaskResultDoesNotExist",
    "TaskResultStatus",
    "normalize_json",
    "set_result_field",
    "task_backends",
    "task_enqueued",
    "task_finished",
    "task_started",
]
