"""Periodic tasks' files: ``schedules/<name>.json`` and ``.firing`` (see ``periodic``)."""

from __future__ import annotations

import contextlib
import os

from .directory import ClaimLock, _Directory
from .files import _directory, _read_file, _write_file_atomically
from .format import Fire, decode_fire, encode_fire, parse_id


class _Schedules(_Directory):
    """The ticks each schedule fired, and the one it was firing."""

    def schedule_lock(self) -> ClaimLock:
        """The lock under which a supervisor reads and fires the schedules' ticks."""
        return self._schedule_lock

    def read_fired(self, name: str) -> Fire | None:
        """The last tick the schedule ``name`` fired (``<name>.json``), or None.

        Raises ValueError if the file is damaged.
        """
        return self._read_fire(f"{name}.json")

    def read_firing(self, name: str) -> Fire | None:
        """The tick the schedule ``name`` was firing when its supervisor stopped, or None.

        Raises ValueError if the file is damaged.
        """
        fire = self._read_fire(f"{name}.firing")
        if fire is not None and fire.task_id is None:
            raise ValueError("not a schedule's fire: it names no task id")
        return fire

    def write_firing(self, name: str, fire: Fire) -> None:
        """Note, durably, the tick about to be enqueued as ``fire.task_id``."""
        self._write_fire(f"{name}.firing", fire)

    def write_fired(self, name: str, fire: Fire) -> None:
        """Record, durably, the tick last enqueued, once its task record is written."""
        self._write_fire(f"{name}.json", fire)

    def remove_firing(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            with _directory(self.path, "schedules", create=False) as dir_fd:
                os.unlink(f"{name}.firing", dir_fd=dir_fd)

    def firing_segments(self) -> set[str]:
        """The segments that a ``<name>.firing`` file names (their records decide whether
        a tick fired, so they are not pruned while it is there)."""
        segments = set()
        try:
            with _directory(self.path, "schedules", create=False) as dir_fd:
                for name in os.listdir(dir_fd):
                    if name.endswith(".firing") and not name.startswith("."):
                        with contextlib.suppress(OSError, ValueError):
                            fire = decode_fire(_read_file(name, dir_fd=dir_fd))
                            if fire.task_id is not None:
                                segments.add(parse_id(fire.task_id)[0])
        except FileNotFoundError:
            pass
        return segments

    def _read_fire(self, file_name: str) -> Fire | None:
        try:
            with _directory(self.path, "schedules", create=False) as dir_fd:
                return decode_fire(_read_file(file_name, dir_fd=dir_fd))
        except FileNotFoundError:
            return None

    def _write_fire(self, file_name: str, fire: Fire) -> None:
        with _directory(self.path, "schedules", create=True) as dir_fd:
            _write_file_atomically(dir_fd, file_name, encode_fire(fire), sync=self.durable)
