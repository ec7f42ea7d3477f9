from django.db import models


class Note(models.Model):
    """Written by tasks, so tests see several worker processes share one SQLite file."""

    text = models.CharField(max_length=200)

    def __str__(self) -> str:
        return self.text
