"""Supervisors' files: ``workers/<instance>.lock`` and their heartbeats (``heartbeat``)."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping
from typing import Any

import filelock

from .directory import _Directory
from .files import _FILE_MODE, _directory, _read_file, _write_file_atomically
from .format import _dumps, is_instance_name


class _Workers(_Directory):
    """A lock file per live supervisor, and its heartbeat."""

    def worker_lock(self, instance: str) -> filelock.BaseFileLock:
        return filelock.FileLock(
            self.workers_dir / f"{instance}.lock", mode=_FILE_MODE, thread_local=False
        )

    def write_heartbeat(self, instance: str, data: Mapping[str, Any]) -> None:
        """Replace a supervisor's heartbeat file (``heartbeat``); not synced."""
        with _directory(self.path, "workers", create=False) as dir_fd:
            _write_file_atomically(dir_fd, f"{instance}.json", _dumps(data))

    def read_heartbeats(self) -> list[Any]:
        """The JSON of every supervisor heartbeat; unreadable ones are left out."""
        beats = []
        try:
            with _directory(self.path, "workers", create=False) as dir_fd:
                for name in os.listdir(dir_fd):
                    if name.endswith(".json") and is_instance_name(name[:-5]):
                        with contextlib.suppress(OSError, ValueError):
                            beats.append(json.loads(_read_file(name, dir_fd=dir_fd)))
        except FileNotFoundError:
            pass
        return beats

    def remove_heartbeat(self, instance: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.workers_dir / f"{instance}.json")
