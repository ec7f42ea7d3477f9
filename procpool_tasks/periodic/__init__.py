"""Periodic tasks: ``cron`` (the arithmetic of schedules) and ``scheduler`` (firing them)."""

from __future__ import annotations

import importlib
import warnings
from typing import Any

_SUBMODULES = frozenset({"cron", "scheduler"})


def __getattr__(name: str) -> Any:
    """The names ``procpool_tasks.periodic`` had in 0.1, when it was one module."""
    if name.startswith("_") or name in _SUBMODULES:  # let the import system find them
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    scheduler = importlib.import_module(f"{__name__}.scheduler")
    if not hasattr(scheduler, name):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    warnings.warn(
        f"procpool_tasks.periodic.{name} moved to procpool_tasks.periodic.scheduler.{name} "
        "in procpool_tasks 0.2.0; import it from there (the old path goes in 0.3.0)",
        DeprecationWarning,
        stacklevel=2,
    )
    return getattr(scheduler, name)
