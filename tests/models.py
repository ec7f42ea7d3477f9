from django.db import models


class Note(models.Model):
    """Written by tasks, so tests see several worker processes share one SQLite file."""

    text = models.CharField(max_length=200)

    def __str__(self) -> str:
        return self.text


class Counter(models.Model):
    """Read, then written, by tasks at once: the race SQLite's default transactions lose."""

    name = models.CharField(max_length=50, unique=True)
    value = models.IntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.name}={self.value}"


class SignalRow(models.Model):
    """A framework task signal as a monitoring app stores it (tests/signal_rows.py)."""

    task_id = models.CharField(max_length=200)
    signal = models.CharField(max_length=20)
    status = models.CharField(max_length=20)
    attempts = models.IntegerField()
    worker_ids = models.JSONField()
    errors = models.JSONField()  # the exception class path of each error
    pid = models.IntegerField()

    def __str__(self) -> str:
        return f"{self.signal} {self.task_id} {self.status}"
