from django.apps import AppConfig


class TestsConfig(AppConfig):
    """The test suite's app: its models, and signal receivers that log to a file or store
    rows in the database."""

    name = "tests"
    label = "tests"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import signal_log, signal_rows  # noqa: F401 (connects the receivers)
