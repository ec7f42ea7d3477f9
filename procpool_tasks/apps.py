from collections.abc import Iterator

from django.apps import AppConfig
from django.conf import settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string


class ProcPoolTasksConfig(AppConfig):
    """The ``procpool_tasks`` app: the commands, the status page and system checks."""

    name = "procpool_tasks"
    label = "procpool_tasks"
    verbose_name = "Process-pool tasks"

    def ready(self) -> None:
        # The framework's check (registered on import) runs each backend's check().
        from . import checks as procpool_checks
        from . import compat, sqlite  # noqa: F401 (compat: for its registration)

        checks.register(procpool_checks.check_status_page)
        # Before this process opens a connection: web processes and commands write to
        # SQLite while tasks do, and need the busy timeout and IMMEDIATE as much as the
        # worker's processes (see ``sqlite``).
        sqlite.configure_process(_aliases_opting_out())


def _aliases_opting_out() -> Iterator[str]:
    """The aliases of TASKS whose ProcPoolBackend sets ``OPTIONS["sqlite_defaults"] = False``."""
    from .backend import ProcPoolBackend

    for alias, config in (getattr(settings, "TASKS", None) or {}).items():
        try:
            backend_class = import_string(config.get("BACKEND", ""))
        except (ImportError, ImproperlyConfigured):
            continue  # the framework's own check reports it
        if not (isinstance(backend_class, type) and issubclass(backend_class, ProcPoolBackend)):
            continue
        if (config.get("OPTIONS") or {}).get("sqlite_defaults", True) is False:
            yield alias
