"""The module paths of procpool_tasks 0.1, importable for one more release.

0.2.0 gave the package one folder per concern (``worker/``, ``operations/``, ``periodic/``,
``web/``) and put every exception in ``procpool_tasks.exceptions``. Code, settings and
result files written for 0.1 may still name an old module (``procpool_tasks.status``) or
an exception by its old path (``procpool_tasks.supervisor.TaskInterrupted``, which a retry
policy may list): importing one gives the module's names at its new home, with a
``DeprecationWarning`` that names it.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import warnings
from types import ModuleType

__all__ = ["MOVED_MODULES", "install"]

#: Each module of 0.1 that moved, and where it is now.
MOVED_MODULES = {
    "procpool_tasks.background": "procpool_tasks.worker.background",
    "procpool_tasks.chart": "procpool_tasks.web.chart",
    "procpool_tasks.committer": "procpool_tasks.worker.committer",
    "procpool_tasks.dispatch": "procpool_tasks.worker.dispatch",
    "procpool_tasks.execution": "procpool_tasks.worker.child",
    "procpool_tasks.finders": "procpool_tasks.operations.finders",
    "procpool_tasks.handoff": "procpool_tasks.operations.handoff",
    "procpool_tasks.heartbeat": "procpool_tasks.journal.heartbeats",
    "procpool_tasks.history": "procpool_tasks.journal.history",
    "procpool_tasks.intake": "procpool_tasks.worker.intake",
    "procpool_tasks.lifeline": "procpool_tasks.worker.lifeline",
    "procpool_tasks.outcomes": "procpool_tasks.worker.outcomes",
    "procpool_tasks.pool": "procpool_tasks.worker.pool",
    "procpool_tasks.quarantine": "procpool_tasks.operations.quarantine",
    "procpool_tasks.ready": "procpool_tasks.worker.ready",
    "procpool_tasks.recovery": "procpool_tasks.worker.recovery",
    "procpool_tasks.reload": "procpool_tasks.worker.reload",
    "procpool_tasks.requeue": "procpool_tasks.operations.requeue",
    "procpool_tasks.schedule": "procpool_tasks.periodic.cron",
    "procpool_tasks.states": "procpool_tasks.worker.states",
    "procpool_tasks.status": "procpool_tasks.operations.status",
    "procpool_tasks.status_page": "procpool_tasks.web.access",
    "procpool_tasks.supervisor": "procpool_tasks.worker.supervisor",
    "procpool_tasks.views": "procpool_tasks.web.views",
    "procpool_tasks.wakeups": "procpool_tasks.worker.wakeups",
}


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds the old paths only; every other import goes on as usual."""

    def find_spec(
        self, fullname: str, path: object = None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in MOVED_MODULES:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return None  # the default: an empty module, filled in by exec_module

    def exec_module(self, module: ModuleType) -> None:
        old, new = module.__name__, MOVED_MODULES[module.__name__]
        warnings.warn(
            f"{old} moved to {new} in procpool_tasks 0.2.0; import it from there (the old "
            "path goes in 0.3.0)",
            DeprecationWarning,
            stacklevel=2,
        )
        public = {k: v for k, v in vars(importlib.import_module(new)).items() if k[:2] != "__"}
        module.__dict__.update(public)
        # The exceptions it held, now in procpool_tasks.exceptions.
        from .exceptions import FORMER_PATHS

        for path, exception_class in FORMER_PATHS.items():
            if path.rpartition(".")[0] == old:
                setattr(module, exception_class.__name__, exception_class)


def install() -> None:
    """Let the old paths import (once per process; ``procpool_tasks`` calls it)."""
    if not any(isinstance(finder, _MovedModules) for finder in sys.meta_path):
        sys.meta_path.append(_MovedModules())
