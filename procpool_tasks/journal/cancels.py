"""Cancels: the part of ``Journal`` that cancels a task, or asks its supervisor to.

Under the claim lock, so that no supervisor claims the task meanwhile:

- a READY task (deferred or not; never claimed, or waiting for another attempt) gets its
  FAILED state, with a ``TaskCancelled`` error, synced to its result file: a claim
  re-reads the state under the same lock, so no supervisor runs it, even one that holds
  it in its ready set;
- a RUNNING task gets a cancel request, ``segments/<task id>.cancel``, made durably: the
  commit point of its cancel. It sits beside the segments, so that the supervisors'
  watch wakes them and the listing each of their reads makes finds it
  (``SegmentTail.read_new`` yields it once). The supervisor running the task stops its
  process and records FAILED; a claim of the task (READY again after a retry or an
  interruption) and the recovery of a dead supervisor's task honour the request
  instead of running it again. It goes once the task's end is committed.

A crash before the state or the request is on disk leaves the task untouched; after,
cancelled.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from ..exceptions import TaskCancelled
from .files import _FILE_MODE, _OPEN_FLAGS, _directory
from .format import FAILED, READY, RUNNING, State, TaskError, parse_id
from .resultfiles import _ResultFiles
from .segments import CANCEL_SUFFIX, _Segments

__all__ = ["Cancelling", "cancelled_error"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Cancelling:
    """What ``Journal.cancel`` did to one task (or, in a dry run, would do)."""

    id: str
    before: State | None  # None: never claimed
    after: State | None = None  # FAILED: cancelled there and then (it was READY)
    requested: bool = False  # RUNNING: its supervisor was asked to stop it
    pruned: bool = False  # it finished and was pruned: nothing done

    @property
    def status(self) -> str:
        """The task's status before the cancel."""
        return self.before.status if self.before is not None else READY

    @property
    def refused(self) -> bool:
        """Whether nothing was (or would be) done: the task finished, or is not READY or
        RUNNING (handed off)."""
        return self.after is None and not self.requested


def cancelled_error(message: str) -> TaskError:
    """A ``TaskCancelled`` error as a supervisor records errors: a one-line traceback."""
    path = f"{TaskCancelled.__module__}.{TaskCancelled.__qualname__}"
    return TaskError(exception_class_path=path, traceback=f"{path}: {message}\n")


def cancelled_before_it_ran(record_id: str, state: State | None) -> State:
    """The FAILED state of a READY task cancelled before (another attempt of) it ran."""
    attempts = len(state.worker_ids) if state is not None else 0
    error = cancelled_error(
        "The task was cancelled before it ran"
        if not attempts
        else f"The task was cancelled before attempt {attempts + 1} ran"
    )
    now = datetime.now(UTC)  # aware, as django.utils.timezone.now() with USE_TZ
    if state is None:
        return State(id=record_id, status=FAILED, version=1, finished_at=now, errors=(error,))
    return replace(
        state,
        status=FAILED,
        version=state.version + 1,
        owner=None,
        finished_at=now,
        errors=(*state.errors, error),
    )


class _Cancels(_Segments, _ResultFiles):
    """Cancels READY tasks at once, and keeps the cancel requests of RUNNING ones."""

    def cancel(self, record_id: str, *, dry_run: bool = False) -> Cancelling:
        """Cancel the task ``record_id`` whose record the caller has read; see the module.

        Raises JournalError when its result file cannot be read safely, OSError when the
        state or the request cannot be written (nothing is cancelled then).
        """
        with self.claim_lock():
            state = self.read_state(record_id)
            if state is None and self.was_pruned(record_id):
                return Cancelling(id=record_id, before=None, pruned=True)
            status = state.status if state is not None else READY
            if status == READY:
                if dry_run:
                    after = cancelled_before_it_ran(record_id, state)
                else:
                    after = self.write_cancelled(record_id, state)
                return Cancelling(id=record_id, before=state, after=after)
            if status == RUNNING and not dry_run:
                self.request_cancel(record_id)
            return Cancelling(id=record_id, before=state, requested=status == RUNNING)

    def write_cancelled(self, record_id: str, state: State | None) -> State:
        """Write (synced) the FAILED state of a READY task cancelled before it ran; return it.

        The caller holds the claim lock and read ``state`` under it. A cancel request
        left for the task is honoured by this and goes.
        """
        cancelled = cancelled_before_it_ran(record_id, state)
        self.write_state_durably(cancelled)
        self.remove_cancel_request(record_id)
        return cancelled

    def request_cancel(self, record_id: str) -> None:
        """Ask the supervisor of a RUNNING task to stop it; durable when this returns."""
        parse_id(record_id)  # never a path of another form
        with _directory(self.path, "segments", create=False) as dir_fd:
            fd = os.open(
                f"{record_id}{CANCEL_SUFFIX}",
                os.O_WRONLY | os.O_CREAT | _OPEN_FLAGS,
                _FILE_MODE,
                dir_fd=dir_fd,
            )
            os.close(fd)
            if self.durable:
                # An empty file: only its name must survive power loss.
                os.fsync(dir_fd)

    def has_cancel_request(self, record_id: str) -> bool:
        """Whether a cancel of the task is waiting to be honoured."""
        parse_id(record_id)
        return os.path.lexists(self.segments_dir / f"{record_id}{CANCEL_SUFFIX}")

    def remove_cancel_request(self, record_id: str) -> None:
        """Forget a cancel request: honoured (the task's end is durable), or re-queued."""
        parse_id(record_id)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.segments_dir / f"{record_id}{CANCEL_SUFFIX}")
