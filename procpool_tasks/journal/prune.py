"""Pruning: the part of ``Journal`` that deletes segments and result files (``history``
decides which)."""

from __future__ import annotations

import contextlib
import errno
import os

from .files import _directory
from .format import is_instance_name
from .resultfiles import _ResultFiles, result_file_name
from .segments import _Segments


class _Pruning(_Segments, _ResultFiles):
    """Deletes finished tasks, their segments, and what a crashed prune left behind."""

    def remove_result(self, record_id: str) -> None:
        """Delete one task's result file (pruning a finished task of a done segment)."""
        segment, name = result_file_name(record_id)
        with contextlib.suppress(FileNotFoundError):
            with self._results_directory(segment, create=False) as dir_fd:
                os.unlink(name, dir_fd=dir_fd)

    def remove_segment(self, segment: str) -> None:
        """Delete a segment and its results: its ids no longer exist afterwards.

        The record goes first: without it an id cannot be mistaken for a READY task whose
        result file is missing. Result files left by a crash half-way are orphans that
        ``prune`` removes next time.
        """
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.segment_path(segment))
        self._remove_results(segment)
        for suffix in (".summary", ".done"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.segments_dir / f"{segment}{suffix}")

    def remove_orphan_results(self) -> None:
        """Remove results, summaries, done markers and cancel requests whose segment is gone
        (a prune that crashed half-way).

        A segment is looked for again just before its leftovers go: one created after the
        listing already has a results directory once a task of it is claimed. Segment
        names are never used twice, so a segment missing then is gone for good.
        """
        segments = set(self.all_segment_names())
        for name in os.listdir(self.results_dir):
            if is_instance_name(name) and name not in segments and self._is_gone(name):
                self._remove_results(name)
        for name in os.listdir(self.segments_dir):
            stem, _, suffix = name.partition(".")
            if suffix == "cancel":  # <task id>.cancel: a request left for a pruned task
                stem = stem.partition("-")[0]
            if (
                suffix in ("summary", "done", "cancel")
                and is_instance_name(stem)
                and stem not in segments
            ):
                if self._is_gone(stem):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(self.segments_dir / name)

    def _is_gone(self, segment: str) -> bool:
        return not os.path.lexists(self.segment_path(segment))

    def _remove_results(self, segment: str) -> None:
        try:
            with _directory(self.path, "results", create=False) as results_fd:
                with _directory(self.path, "results", segment, create=False) as dir_fd:
                    for name in os.listdir(dir_fd):
                        os.unlink(name, dir_fd=dir_fd)
                os.rmdir(segment, dir_fd=results_fd)
        except FileNotFoundError:
            pass
        except OSError as error:
            if error.errno != errno.ENOTEMPTY:
                raise
            # A supervisor made an empty result file there meanwhile (it had queued a task
            # of the segment before the prune): an orphan that the next prune removes.
