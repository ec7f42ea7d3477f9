from django.apps import AppConfig
from django.core import checks


class ProcPoolTasksConfig(AppConfig):
    """The ``procpool_tasks`` app: the commands, the status page and system checks."""

    name = "procpool_tasks"
    label = "procpool_tasks"
    verbose_name = "Process-pool tasks"

    def ready(self) -> None:
        # The framework's check (registered on import) runs each backend's check().
        from . import checks as procpool_checks
        from . import compat  # noqa: F401

        checks.register(procpool_checks.check_status_page)
