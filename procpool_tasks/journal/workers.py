"""Supervisors' files: ``workers/<instance>.lock`` and their heartbeats (``heartbeat``)."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping
from typing import Any

import filelock

from .directory import _Directory
from .files import _FILE_MODE, _directory, _is_tmp_of, _read_file, _write_file_atomically
from .format import _dumps, is_instance_name


class _Workers(_Directory):
    """A lock file per live supervisor, and its heartbeat."""

    def worker_lock(self, instance: str) -> filelock.BaseFileLock:
        return filelock.FileLock(
            self.workers_dir / f"{instance}.lock", mode=_FILE_MODE, thread_local=False
        )

    def supervisor_instances(self) -> list[str]:
        """Every supervisor instance with a lock file: live ones, and dead ones to recover."""
        try:
            names = os.listdir(self.workers_dir)
        except FileNotFoundError:
            return []
        return [
            name.removesuffix(".lock")
            for name in names
            if name.endswith(".lock") and is_instance_name(name.removesuffix(".lock"))
        ]

    def has_worker_lock(self, instance: str) -> bool:
        """Whether a supervisor of this instance name ever started here and was not cleaned up."""
        return (self.workers_dir / f"{instance}.lock").exists()

    def remove_worker_lock(self, instance: str) -> None:
        """Remove a supervisor's lock file once it stopped cleanly or was recovered."""
        (self.workers_dir / f"{instance}.lock").unlink(missing_ok=True)

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
        """Remove a supervisor's heartbeat, and the temporary files of its replacements.

        A supervisor killed while it replaced its heartbeat leaves one behind (the new
        heartbeat before the rename, or the old one after the exchange). Only the
        supervisor itself, as it stops, or the one that recovered it once it died knows
        that nobody writes them any more.
        """
        name = f"{instance}.json"
        try:
            with _directory(self.path, "workers", create=False) as dir_fd:
                for leftover in os.listdir(dir_fd):
                    if leftover == name or _is_tmp_of(leftover, name):
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(leftover, dir_fd=dir_fd)
        except FileNotFoundError:
            pass
