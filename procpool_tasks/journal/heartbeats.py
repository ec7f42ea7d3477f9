"""Supervisors' heartbeats: who serves a journal, and whether it still does.

Each supervisor writes ``workers/<instance>.json`` when it starts and every
``HEARTBEAT_INTERVAL_S`` from its main loop (so a loop that hangs stops beating), and
removes it when it stops. ``procpool_status`` reads them: a supervisor is live when its
last beat is recent and, on this host, its process still exists.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

__all__ = ["HEARTBEAT_INTERVAL_S", "STALE_AFTER_S", "Heartbeat", "is_running", "serve_flags"]

#: How often a supervisor writes its heartbeat.
HEARTBEAT_INTERVAL_S = 5.0
#: A heartbeat older than this belongs to a supervisor that died or hangs.
STALE_AFTER_S = 30.0

HOST = socket.gethostname()


@dataclass(frozen=True, slots=True, kw_only=True)
class Heartbeat:
    """One supervisor, as its last heartbeat describes it."""

    instance: str
    worker_id: str
    pid: int
    host: str
    backend: str
    processes: int
    queues: list[str] | None  # None: every queue
    started_at: datetime
    beat_at: datetime

    def serves(self, queue_name: str) -> bool:
        return self.queues is None or queue_name in self.queues

    def age_s(self, now: datetime) -> float:
        return (now - self.beat_at).total_seconds()

    def is_live(self, now: datetime) -> bool:
        """A recent beat and, on this host, a process that still exists."""
        if self.age_s(now) > STALE_AFTER_S:
            return False
        return self.host != HOST or is_running(self.pid)

    def to_json(self) -> dict[str, Any]:
        return {
            "instance": self.instance,
            "worker_id": self.worker_id,
            "pid": self.pid,
            "host": self.host,
            "backend": self.backend,
            "processes": self.processes,
            "queues": self.queues,
            "started_at": self.started_at.isoformat(),
            "beat_at": self.beat_at.isoformat(),
        }

    @classmethod
    def from_json(cls, data: Any) -> Heartbeat | None:
        """The heartbeat, or None for a damaged one."""
        try:
            return cls(
                instance=str(data["instance"]),
                worker_id=str(data["worker_id"]),
                pid=int(data["pid"]),
                host=str(data["host"]),
                backend=str(data["backend"]),
                processes=int(data["processes"]),
                queues=None if data["queues"] is None else [str(q) for q in data["queues"]],
                started_at=datetime.fromisoformat(data["started_at"]),
                beat_at=datetime.fromisoformat(data["beat_at"]),
            )
        except (KeyError, TypeError, ValueError):
            return None


def serve_flags(queue_name: str, served: Iterable[str], known: Collection[str]) -> str:
    """The ``--queue-name`` that lets a worker serve ``queue_name`` too, as warnings say it:
    ``served`` and it; or only ``'*'`` for a queue not in the backend's QUEUES (``known``),
    which ``--queue-name`` refuses by name."""
    if known and queue_name not in known:
        return f"--queue-name '*' (queue {queue_name!r} is not in QUEUES)"
    return f"--queue-name {','.join(sorted({*served, queue_name}))} or --queue-name '*'"


def is_running(pid: int) -> bool:
    """Whether a process of this pid exists (on this host)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # running, as another user
    return True
