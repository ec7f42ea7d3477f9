"""SQLite settings for every process, so that concurrent writers wait instead of failing.

SQLite answers "database is locked" at once, without waiting for its busy timeout, when a
transaction that began by reading (Django's default, a deferred ``BEGIN``) tries to write
while another connection writes: waiting could deadlock, so SQLite refuses. Two tasks
doing a read-modify-write in ``transaction.atomic()`` in two worker processes hit it
within seconds, and so does a web process that writes while tasks do. A transaction that
takes the write lock at its start (``BEGIN IMMEDIATE``) waits for the busy timeout
instead, and then runs.

So when the app loads (``configure_process``, from ``AppConfig.ready``, before the
process opens a connection: web processes, management commands, the supervisor and its
worker processes alike), every SQLite database whose settings do not choose them gets
``"transaction_mode": "IMMEDIATE"`` and ``"timeout": 20``, unless a ProcPoolBackend's
``OPTIONS["sqlite_defaults"]`` is False. A value the project set is never replaced. What
this process did is kept (``process_defaults``) for the worker's log line and for the
system check ``procpool_tasks.W001``, which warns where nothing was applied.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.db import connections
from django.db.backends.sqlite3.base import DatabaseWrapper as SqliteWrapper
from django.db.utils import load_backend

__all__ = [
    "BUSY_TIMEOUT_S",
    "ProcessDefaults",
    "SqliteDefaults",
    "apply_sqlite_defaults",
    "configure_process",
    "is_other_sqlite",
    "missing_sqlite_settings",
    "process_defaults",
    "suggested_sqlite_settings",
]

#: How long a transaction waits for another's write lock. Tasks hold it for milliseconds;
#: 20 s rides out a burst of hundreds of them (200 contending tasks drained in ~1 s here).
BUSY_TIMEOUT_S = 20


@dataclass(frozen=True, slots=True)
class SqliteDefaults:
    """What the app added to one SQLite database's settings."""

    alias: str
    added: Mapping[str, Any]

    def describe(self) -> str:
        return ", ".join(f"{key}={value!r}" for key, value in self.added.items())


@dataclass(frozen=True, slots=True)
class ProcessDefaults:
    """What ``configure_process`` did in this process, as the app loaded."""

    applied: tuple[SqliteDefaults, ...] = ()
    #: The ProcPoolBackends whose ``OPTIONS["sqlite_defaults"]`` is False: nothing applied.
    opted_out: tuple[str, ...] = ()


def suggested_sqlite_settings() -> dict[str, Any]:
    """The ``OPTIONS`` that make SQLite wait for locks: what the app applies."""
    return {"timeout": BUSY_TIMEOUT_S, "transaction_mode": "IMMEDIATE"}


def is_sqlite(database: Mapping[str, Any]) -> bool:
    """Whether Django's SQLite backend (or one built on it, e.g. SpatiaLite) serves it.

    Those read ``timeout`` and ``transaction_mode`` from ``OPTIONS``; a SQLite backend
    of another lineage may not, so nothing is added to its settings (``is_other_sqlite``).
    """
    wrapper = _wrapper_class(database)
    return wrapper is not None and issubclass(wrapper, SqliteWrapper)


def is_other_sqlite(database: Mapping[str, Any]) -> bool:
    """Whether a SQLite backend not built on Django's serves it: its OPTIONS are its own."""
    wrapper = _wrapper_class(database)
    return wrapper is not None and wrapper.vendor == "sqlite" and not is_sqlite(database)


def _wrapper_class(database: Mapping[str, Any]) -> type[Any] | None:
    engine = database.get("ENGINE")
    if not engine:
        return None
    try:
        wrapper: type[Any] = load_backend(str(engine)).DatabaseWrapper
    except ImproperlyConfigured:
        return None  # not installed, or no such backend: connecting will say so
    return wrapper


def missing_sqlite_settings(database: Mapping[str, Any]) -> dict[str, Any]:
    """The suggested settings a database lacks; empty when it is not SQLite or has them.

    A ``timeout`` or ``transaction_mode`` the project chose counts as set, whatever its
    value: it was a decision, not an omission.
    """
    if not is_sqlite(database):
        return {}
    options = database.get("OPTIONS") or {}
    return {key: value for key, value in suggested_sqlite_settings().items() if key not in options}


#: What this process did as the app loaded; None until then, or where the app is not installed.
_process_defaults: ProcessDefaults | None = None


def configure_process(opted_out: Iterable[str]) -> ProcessDefaults:
    """Apply the defaults unless a backend opted out (its alias in ``opted_out``); remember.

    The app calls it from ``ready()``; a connection opened before that (by an app listed
    earlier, in its own ``ready()``) is closed, outside a transaction, so that it opens
    again with the settings.
    """
    global _process_defaults
    opted_out = tuple(opted_out)
    if opted_out:
        _process_defaults = ProcessDefaults(opted_out=opted_out)
    else:
        applied = tuple(apply_sqlite_defaults())
        _reopen_with_settings({each.alias for each in applied})
        _process_defaults = ProcessDefaults(applied=applied)
    return _process_defaults


def process_defaults() -> ProcessDefaults | None:
    """What ``configure_process`` did in this process; None: it did not run."""
    return _process_defaults


def _reopen_with_settings(aliases: set[str]) -> None:
    """Close the open connections of ``aliases``: a connection reads its settings as it opens.

    A connection wrapper holds the very dict of ``connections.settings``, so the wrappers
    already created see the new OPTIONS; only a connection already open needs a new one.
    """
    for wrapper in connections.all(initialized_only=True):
        if wrapper.alias in aliases and wrapper.connection is not None:
            if not wrapper.in_atomic_block:  # closing would end the transaction under it
                wrapper.close()


def apply_sqlite_defaults() -> list[SqliteDefaults]:
    """Add the missing settings to every SQLite database of this process; say what was added.

    Call it before the process opens a connection (``configure_process`` does, as the app
    loads): the settings are read when a connection opens.
    """
    applied = []
    for alias in connections:
        database = connections.settings[alias]
        missing = missing_sqlite_settings(database)
        if not missing:
            continue
        # A new dict: OPTIONS may be one object shared by several aliases.
        database["OPTIONS"] = {**(database.get("OPTIONS") or {}), **missing}
        applied.append(SqliteDefaults(alias, missing))
    return applied
