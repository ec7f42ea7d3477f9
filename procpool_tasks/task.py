"""``ProcPoolTask``: the ``Task`` of this backend, which takes per-task options in ``@task``.

On Django 6.1 (and the ``django-tasks`` backport since 0.11) the framework's ``@task``
decorator passes the keyword arguments it does not know to the backend's ``task_class``::

    @task(max_attempts=5, backoff=2, timeout=30)
    def send_invoice(order_id: int) -> None: ...

The options are checked when the function is decorated (a wrong value raises the
framework's ``InvalidTask``, naming the argument), survive ``.using()``, and travel in each
task's record, so the worker honours what the enqueuing code asked even if its own code
is older. They win over ``OPTIONS["task_options"]``, which win over ``OPTIONS`` (see
``options.BackendOptions.for_task``). On Django 6.0, whose decorator takes no extra
arguments, ``task_options`` is the way.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from django.utils.module_loading import import_string

from . import compat
from .options import parse_task_level

__all__ = ["ProcPoolTask"]


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ProcPoolTask(compat.Task):  # type: ignore[type-arg]  # generic on the backport only
    """A framework ``Task`` with this backend's per-task options (None: not given)."""

    #: Attempts in all, the first included, whatever ended each one: a task that raised
    #: runs again (after its backoff) and one whose attempt was interrupted runs again,
    #: until this many attempts were made. Turns retries on.
    max_attempts: int | None = None
    #: The wait between attempts: a factor (the wait grows by it each attempt, from the
    #: retry policy's ``delay``), or a module-level function ``f(attempt) -> seconds``.
    backoff: float | Callable[[int], float] | None = None
    #: Seconds the task may run before it is stopped and ends FAILED.
    timeout: float | None = None
    #: The whole retry policy, as ``OPTIONS["retry"]`` takes it; ``False``: no retries.
    retry: Mapping[str, Any] | bool | None = None

    def __post_init__(self) -> None:
        self.record_options()  # raises InvalidTask for a wrong value
        compat.Task.__post_init__(self)  # not super(): slots=True makes a new class

    def record_options(self) -> dict[str, Any]:
        """The options this task gives, as its records carry them (JSON)."""
        given: dict[str, Any] = {}
        if self.max_attempts is not None:
            given["max_attempts"] = self.max_attempts
        if self.backoff is not None:
            given["backoff"] = self._backoff_value()
        if self.timeout is not None:
            given["timeout"] = self.timeout
        if self.retry is not None:
            given["retry"] = self._retry_value()
        if given:
            try:
                parse_task_level(f"@task(...) of {self.module_path}", given, None, decorator=True)
            except ValueError as error:
                raise compat.InvalidTask(str(error)) from None
        return given

    def _backoff_value(self) -> float | str:
        if not callable(self.backoff):
            return self.backoff  # type: ignore[return-value]  # checked by parse_task_level
        path = f"{self.backoff.__module__}.{self.backoff.__qualname__}"
        try:
            found = import_string(path)
        except ImportError:
            found = None
        if found is not self.backoff:
            raise compat.InvalidTask(
                f"@task(backoff=...) of {self.module_path}: {path} cannot be imported by that "
                "path; give a number, or a function defined at the top level of a module"
            )
        return path

    def _retry_value(self) -> Mapping[str, Any] | None:
        if self.retry is False:
            return None
        if self.retry is True:
            return {}
        if not isinstance(self.retry, Mapping):
            raise compat.InvalidTask(
                f"@task(retry=...) of {self.module_path} must be a dict such as "
                f"{{'attempts': 3}}, or False for no retries; not {self.retry!r}"
            )
        return dict(self.retry)
