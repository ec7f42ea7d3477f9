"""A minimal project that uses procpool_tasks; the demo points it at a fresh journal."""

import os
from pathlib import Path

import django

BASE_DIR = Path(__file__).resolve().parent.parent
SECRET_KEY = "example-only"  # noqa: S105 (not a real secret)
DEBUG = False
USE_TZ = True

INSTALLED_APPS = ["procpool_tasks", "example_project"]
if django.VERSION < (6,):
    INSTALLED_APPS.insert(0, "django_tasks")  # the backport, for Django < 6

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": BASE_DIR / "example.sqlite3",
        # Worker processes and web processes share this file: wait for locks.
        "OPTIONS": {"timeout": 20, "transaction_mode": "IMMEDIATE"},
    }
}

TASKS = {
    "default": {
        "BACKEND": "procpool_tasks.backend.ProcPoolBackend",
        "QUEUES": ["default", "reports"],
        "OPTIONS": {
            # Default: BASE_DIR / ".procpool_tasks". The demo uses a fresh one per run.
            "path": os.environ.get("EXAMPLE_JOURNAL", BASE_DIR / ".procpool_tasks"),
        },
    }
}
