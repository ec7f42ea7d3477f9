"""Quarantine: ``quarantine/``, copies of records that cannot be run (unreadable, or their
task does not import) with the reason."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from . import files
from .directory import _Directory
from .files import _FILE_MODE, _OPEN_FLAGS, _directory, _read_file
from .format import Quarantined


def _quarantine_entry(dir_fd: int, name: str) -> tuple[float, dict[str, Any]]:
    """A quarantine file's time and JSON; a damaged file's JSON says what is wrong."""
    try:
        modified = os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mtime
        data = json.loads(_read_file(name, dir_fd=dir_fd))
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as error:
        return 0.0, {"reason": f"unreadable quarantine file: {error}"}
    return modified, data


class _Quarantine(_Directory):
    """Keeps, lists and deletes the copies of lines that cannot be run."""

    def quarantined(self) -> list[tuple[str, dict[str, Any]]]:
        """The files in quarantine/ with their JSON, oldest first; damaged ones say so."""
        try:
            with _directory(self.path, "quarantine", create=False) as dir_fd:
                names = [
                    name
                    for name in os.listdir(dir_fd)
                    if name.endswith(".json") and not name.startswith(".")
                ]
                entries = [(*_quarantine_entry(dir_fd, name), name) for name in names]
        except FileNotFoundError:
            return []
        return [(name, data) for _, data, name in sorted(entries, key=lambda e: (e[0], e[2]))]

    def quarantine_path(self, name: str) -> Path:
        """Where the quarantine file ``name`` (as ``quarantined`` names it) is, to show it."""
        return self.quarantine_dir / name

    def quarantined_file(self, name: str) -> dict[str, Any]:
        """The JSON of one quarantine file (as ``quarantined`` names it)."""
        with _directory(self.path, "quarantine", create=False) as dir_fd:
            return _quarantine_entry(dir_fd, name)[1]

    def remove_quarantined(self, name: str) -> bool:
        """Delete the quarantine file ``name`` (as ``quarantined`` lists it); False if absent."""
        if "/" in name or not name.endswith(".json") or name.startswith("."):
            return False
        try:
            os.unlink(self.quarantine_dir / name)
        except FileNotFoundError:
            return False
        return True

    def quarantine(self, bad: Quarantined) -> bool:
        """Keep a copy of a line that cannot be run with its reason; False if kept before."""
        path = self.quarantine_dir / f"{bad.segment}-{bad.offset:x}.json"
        body = json.dumps(
            {
                "segment": bad.segment,
                "offset": bad.offset,
                "reason": bad.reason,
                "line": bad.line.decode("utf-8", "backslashreplace"),
            }
        ).encode()
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _OPEN_FLAGS, _FILE_MODE)
        except FileExistsError:
            return False
        try:
            files._write_all(fd, body)
        finally:
            os.close(fd)
        return True
