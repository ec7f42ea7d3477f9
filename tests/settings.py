"""Settings for the test suite; the journal directory comes from PROCPOOL_TASKS_PATH.

Each test points PROCPOOL_TASKS_PATH at its own directory, in the test process and in
the worker subprocesses it starts, so tests never share a journal. PROCPOOL_TEST_OPTIONS
(JSON) adds OPTIONS to the default backend, e.g. ``{"max_attempts": 1}`` for one worker,
PROCPOOL_TEST_DB_OPTIONS (JSON) replaces the SQLite database's OPTIONS,
PROCPOOL_TEST_TIME_ZONE replaces TIME_ZONE (UTC) and PROCPOOL_TEST_USE_TZ=0 turns USE_TZ off.
PROCPOOL_TEST_DEBUG=1 turns DEBUG on; PROCPOOL_TEST_LOGGING (JSON) is LOGGING, over Django's
default logging, which the tests otherwise leave off.

The backends ``procpool_handoff`` moves tasks to (tests/test_handoff.py) are here where
they are installed: "db" (django-tasks-db, which needs Django 5.2+) and "rq"
(django-tasks-rq). The tests start their servers (tests/services.py) and pass them in:
PROCPOOL_TEST_REDIS_URL for RQ, and PROCPOOL_TEST_DATABASE, a DATABASES entry as JSON (a
PostgreSQL one), for the default database, where django-tasks-db keeps its tasks.
"""

import json
import os
from importlib.util import find_spec
from pathlib import Path

import django

BASE_DIR = Path(__file__).resolve().parent
SECRET_KEY = "procpool-tasks-tests"  # noqa: S105 (a test-only key)
DEBUG = os.environ.get("PROCPOOL_TEST_DEBUG") == "1"
# The periodic tests fire cron schedules in another zone, and without USE_TZ.
USE_TZ = os.environ.get("PROCPOOL_TEST_USE_TZ", "1") == "1"
TIME_ZONE = os.environ.get("PROCPOOL_TEST_TIME_ZONE", "UTC")

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.sessions",
    "django.contrib.messages",
    "procpool_tasks",
    "tests",
]
if django.VERSION < (6,):
    INSTALLED_APPS.insert(0, "django_tasks")
# The reload tests install an app of their own, written into a temporary directory.
INSTALLED_APPS += filter(None, os.environ.get("PROCPOOL_TEST_EXTRA_APPS", "").split(","))

# The status page (tests/urls.py mounts it), as a project would set it up.
ROOT_URLCONF = "tests.urls"
ALLOWED_HOSTS = ["testserver", "127.0.0.1", "localhost"]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("PROCPOOL_TEST_DB", str(BASE_DIR / "test.sqlite3")),
        # Several worker processes write to one SQLite file in the tests; the SQLite tests
        # set PROCPOOL_TEST_DB_OPTIONS (JSON) to try a project's stock settings instead.
        "OPTIONS": json.loads(
            os.environ.get(
                "PROCPOOL_TEST_DB_OPTIONS", '{"timeout": 30, "transaction_mode": "IMMEDIATE"}'
            )
        ),
    }
}
if "PROCPOOL_TEST_DATABASE" in os.environ:
    DATABASES["default"] = json.loads(os.environ["PROCPOOL_TEST_DATABASE"])
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

_JOURNAL = os.environ.get("PROCPOOL_TASKS_PATH", str(BASE_DIR / ".journal"))

TASKS = {
    "default": {
        "BACKEND": "procpool_tasks.backend.ProcPoolBackend",
        "QUEUES": ["default", "high", "low"],
        "OPTIONS": {
            "path": _JOURNAL,
            "durable": True,
            **json.loads(os.environ.get("PROCPOOL_TEST_OPTIONS", "{}")),
        },
    },
    "second": {
        "BACKEND": "procpool_tasks.backend.ProcPoolBackend",
        "QUEUES": [],
        "OPTIONS": {
            "path": _JOURNAL + "-second",
            "durable": False,
            # PROCPOOL_TEST_SECOND_OPTIONS (JSON): e.g. the default journal, under a new alias.
            **json.loads(os.environ.get("PROCPOOL_TEST_SECOND_OPTIONS", "{}")),
        },
    },
    "immediate": {
        "BACKEND": (
            "django.tasks.backends.immediate.ImmediateBackend"
            if django.VERSION >= (6,)
            else "django_tasks.backends.immediate.ImmediateBackend"
        ),
    },
}

# Queues of the handoff targets: "low" is left out, for a task they must refuse.
HANDOFF_QUEUES = ["default", "high"]
TASKS["list"] = {
    "BACKEND": "tests.backends.FileListBackend",
    "QUEUES": HANDOFF_QUEUES,
    "OPTIONS": {"path": _JOURNAL + "-list.jsonl"},
}
if find_spec("django_tasks_db"):
    INSTALLED_APPS.append("django_tasks_db")
    TASKS["db"] = {"BACKEND": "django_tasks_db.DatabaseBackend", "QUEUES": HANDOFF_QUEUES}
if find_spec("django_tasks_rq"):
    INSTALLED_APPS.append("django_rq")
    # Nothing listens on port 1: a test that forgot its Redis fails at once.
    _REDIS_URL = os.environ.get("PROCPOOL_TEST_REDIS_URL", "redis://127.0.0.1:1/0")
    RQ_QUEUES = {name: {"URL": _REDIS_URL} for name in HANDOFF_QUEUES}
    TASKS["rq"] = {"BACKEND": "django_tasks_rq.RQBackend", "QUEUES": HANDOFF_QUEUES}
    # RQ's worker can take a minute to exit after its last job (tests/rq_worker.py).
    RQ = {"WORKER_CLASS": "tests.rq_worker.PromptWorker"}

# PROCPOOL_TEST_LOGGING (JSON) is a project's LOGGING, on top of Django's defaults ("{}":
# a new project's); without it Django configures no logging at all.
if "PROCPOOL_TEST_LOGGING" in os.environ:
    LOGGING = json.loads(os.environ["PROCPOOL_TEST_LOGGING"])
else:
    LOGGING_CONFIG = None
