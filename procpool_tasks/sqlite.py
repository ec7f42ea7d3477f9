"""SQLite settings for the worker's processes, so that concurrent tasks wait instead of failing.

SQLite answers "database is locked" at once, without waiting for its busy timeout, when a
transaction that began by reading (Django's default, a deferred ``BEGIN``) tries to write
while another connection writes: waiting could deadlock, so SQLite refuses. Two tasks
doing a read-modify-write in ``transaction.atomic()`` in two worker processes hit it
within seconds. A transaction that takes the write lock at its start (``BEGIN
IMMEDIATE``) waits for the busy timeout instead, and then runs.

So in the supervisor and its worker processes, every SQLite database whose settings do
not choose them gets ``"transaction_mode": "IMMEDIATE"`` and ``"timeout": 20``, unless
the backend's ``OPTIONS["sqlite_defaults"]`` is False. A value the project set is never
replaced. Web processes are the project's own: the system check ``procpool_tasks.W001``
names the lines to add there.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import django
from django.db import connections
from django.db.backends.signals import connection_created

__all__ = [
    "BUSY_TIMEOUT_S",
    "SqliteDefaults",
    "apply_sqlite_defaults",
    "missing_sqlite_settings",
    "suggested_sqlite_settings",
]

#: How long a transaction waits for another's write lock. Tasks hold it for milliseconds;
#: 20 s rides out a burst of hundreds of them (200 contending tasks drained in ~1 s here).
BUSY_TIMEOUT_S = 20
#: Django 5.1 added the ``transaction_mode`` option; older versions begin with plain BEGIN.
HAS_TRANSACTION_MODE = django.VERSION >= (5, 1)


@dataclass(frozen=True, slots=True)
class SqliteDefaults:
    """What the worker added to one SQLite database's settings."""

    alias: str
    added: Mapping[str, Any]
    #: Django < 5.1: transactions begin IMMEDIATE by a receiver, there is no option for it.
    begins_immediate: bool = False

    def describe(self) -> str:
        described = [f"{key}={value!r}" for key, value in self.added.items()]
        if self.begins_immediate:
            described.append("transactions that begin IMMEDIATE")
        return ", ".join(described)


def suggested_sqlite_settings() -> dict[str, Any]:
    """The ``OPTIONS`` that make SQLite wait for locks: what the worker applies."""
    suggested: dict[str, Any] = {"timeout": BUSY_TIMEOUT_S}
    if HAS_TRANSACTION_MODE:
        suggested["transaction_mode"] = "IMMEDIATE"
    return suggested


def is_sqlite(database: Mapping[str, Any]) -> bool:
    return str(database.get("ENGINE", "")).endswith("sqlite3")


def missing_sqlite_settings(database: Mapping[str, Any]) -> dict[str, Any]:
    """The suggested settings a database lacks; empty when it is not SQLite or has them.

    A ``timeout`` or ``transaction_mode`` the project chose counts as set, whatever its
    value: it was a decision, not an omission. On Django < 5.1, which has no
    ``transaction_mode``, only the timeout can be missing.
    """
    if not is_sqlite(database):
        return {}
    options = database.get("OPTIONS") or {}
    return {key: value for key, value in suggested_sqlite_settings().items() if key not in options}


def apply_sqlite_defaults() -> list[SqliteDefaults]:
    """Add the missing settings to every SQLite database of this process; say what was added.

    Call it before the process opens a connection (a worker process at start): the
    settings are read when a connection opens. On Django < 5.1, where a project cannot
    choose the transaction mode, transactions on every SQLite database begin with
    ``BEGIN IMMEDIATE`` through a ``connection_created`` receiver.
    """
    applied = []
    for alias in connections:
        database = connections.settings[alias]
        missing = missing_sqlite_settings(database)
        begins_immediate = is_sqlite(database) and not HAS_TRANSACTION_MODE
        if not missing and not begins_immediate:
            continue
        # A new dict: OPTIONS may be one object shared by several aliases.
        database["OPTIONS"] = {**(database.get("OPTIONS") or {}), **missing}
        applied.append(SqliteDefaults(alias, missing, begins_immediate))
    immediate_aliases = frozenset(each.alias for each in applied if each.begins_immediate)
    if immediate_aliases:
        connection_created.connect(_begin_immediately(immediate_aliases), weak=False)
    return applied


def _begin_immediately(aliases: frozenset[str]) -> Any:
    """A ``connection_created`` receiver: transactions on these aliases begin IMMEDIATE.

    Django < 5.1 starts every atomic block with a plain (deferred) ``BEGIN`` from
    ``_start_transaction_under_autocommit``; this replaces it on each new connection.
    """

    def receiver(sender: Any, connection: Any, **kwargs: Any) -> None:
        if connection.vendor != "sqlite" or connection.alias not in aliases:
            return

        def begin_immediate() -> None:
            connection.cursor().execute("BEGIN IMMEDIATE")

        connection._start_transaction_under_autocommit = begin_immediate

    return receiver
