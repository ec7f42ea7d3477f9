"""How a task's state changes: the values a supervisor writes, and the errors it records.

Pure functions of the old state and what happened; the supervisor's modules decide when.
Every change makes a new ``version``, so that a replayed or re-published state never
overwrites a newer one.
"""

from __future__ import annotations

import signal
from dataclasses import replace
from datetime import datetime
from typing import Any

from django.utils import timezone

from .. import journal
from ..exceptions import (
    MemoryLimitExceeded,
    TaskCancelled,
    TaskInterrupted,
    TaskTimeoutError,
    WorkerProcessDied,
)

__all__ = [
    "Claims",
    "MemoryLimitExceeded",
    "SuccessLine",
    "TaskCancelled",
    "TaskInterrupted",
    "WorkerProcessDied",
    "cancelled_unsupervised",
    "cancelled_while_running",
    "death_error",
    "error",
    "failed",
    "finished",
    "interruption_error",
    "over_memory_error",
    "ready_again",
    "reload_error",
    "running",
]


def running(
    record: journal.Record, state: journal.State | None, worker_id: str, instance: str
) -> journal.State:
    """A new attempt, claimed by supervisor ``instance`` for worker ``worker_id``."""
    return _running(record.id, state, worker_id, instance)


def _running(
    task_id: str, state: journal.State | None, worker_id: str, instance: str
) -> journal.State:
    now = timezone.now()
    return journal.State(
        id=task_id,
        status=journal.RUNNING,
        version=(state.version if state else 0) + 1,
        worker_ids=(*(state.worker_ids if state else ()), worker_id),
        owner=instance,
        started_at=(state.started_at if state else None) or now,
        last_attempted_at=now,
        errors=state.errors if state else (),
    )


class Claims:
    """The RUNNING states ``running`` makes of the tasks one supervisor claims for one
    worker, each with its line as its result file holds it.

    A task's first claim (it has no state yet: nearly every claim) is encoded from a
    template made once, but for its id and its claim time: a supervisor claims every task,
    and encoding the whole state was most of a claim's write.
    """

    __slots__ = ("_first_claim", "_instance", "_worker_id")

    def __init__(self, worker_id: str, instance: str) -> None:
        self._worker_id = worker_id
        self._instance = instance
        # The blanks' values here are placeholders: ``claim`` fills in the real ones.
        placeholder = _running("", None, worker_id, instance)
        self._first_claim = journal.StateLineTemplate(
            placeholder, ("id", "started_at", "last_attempted_at")
        )

    def claim(
        self, record: journal.Record, state: journal.State | None
    ) -> tuple[journal.State, bytes]:
        """The task's RUNNING state after ``state`` (None: its first claim), and its line."""
        running_state = _running(record.id, state, self._worker_id, self._instance)
        if state is not None:  # a later attempt: its workers and errors vary
            return running_state, journal.state_line(running_state)
        line = self._first_claim.fill(
            record.id, running_state.started_at, running_state.last_attempted_at
        )
        return running_state, line


def finished(
    running_state: journal.State,
    status: str,
    finished_at: datetime,
    task_error: journal.TaskError | None,
    return_value: Any,
) -> journal.State:
    """The attempt ended with the task's own outcome (made whole, not by ``replace``,
    which cost a supervisor more than the rest of this per task)."""
    errors = running_state.errors if task_error is None else (*running_state.errors, task_error)
    return journal.State(
        id=running_state.id,
        status=status,
        version=running_state.version + 1,
        worker_ids=running_state.worker_ids,
        owner=None,
        started_at=running_state.started_at,
        last_attempted_at=running_state.last_attempted_at,
        finished_at=finished_at,
        errors=errors,
        return_value=return_value,
        run_after=running_state.run_after,
        handoff=running_state.handoff,
    )


class SuccessLine:
    """The line of the SUCCESSFUL state ``finished`` makes of a running one, encoded ahead
    but for its finish time and return value: what a worker process sends with its outcome
    (``child.Outcome.line``), for the supervisor to commit as it is."""

    __slots__ = ("_template",)

    def __init__(self, running_state: journal.State) -> None:
        # The blanks' values here are placeholders: ``line`` fills in the real ones.
        placeholder = finished(running_state, journal.SUCCESSFUL, timezone.now(), None, None)
        self._template = journal.StateLineTemplate(placeholder, ("finished_at", "return_value"))

    def line(self, finished_at: datetime, return_value: Any) -> bytes:
        """``return_value``: JSON data already (``journal.to_json_value``)."""
        return self._template.fill(finished_at, return_value)


def ready_again(state: journal.State, **changes: Any) -> journal.State:
    """READY once more: a retry, a re-run after an interruption, or an unclaim."""
    return replace(state, status=journal.READY, version=state.version + 1, owner=None, **changes)


def failed(state: journal.State, task_error: journal.TaskError) -> journal.State:
    """FAILED by the supervisor's decision: its process died, or its attempts ran out."""
    return replace(
        state,
        status=journal.FAILED,
        version=state.version + 1,
        owner=None,
        finished_at=timezone.now(),
        errors=(*state.errors, task_error),
    )


def death_error(
    pid: int, exit_code: int, timed_out: bool, task_timeout: float | None
) -> journal.TaskError:
    """Why a task whose own process died ended FAILED."""
    if timed_out:
        return error(
            TaskTimeoutError,
            f"The task exceeded its timeout of {task_timeout or 0:g}s and did not stop; "
            f"its worker process (pid {pid}) was killed",
        )
    how = how_it_died(exit_code, timed_out=False)
    return error(WorkerProcessDied, f"The worker process (pid {pid}) running the task {how}")


def over_memory_error(used_mib: float, limit_mib: float) -> journal.TaskError:
    """For a task whose process its supervisor killed for growing past the memory limit."""
    return error(
        MemoryLimitExceeded,
        f"The task's process used {used_mib:.0f} MiB, over --max-memory-per-child "
        f"{limit_mib:g} MiB; it was stopped and replaced",
    )


def cancelled_while_running(pid: int) -> journal.TaskError:
    """For a task whose process its supervisor stopped because it was cancelled."""
    return error(
        TaskCancelled,
        f"The task was cancelled while it ran; its worker process (pid {pid}) was stopped",
    )


def cancelled_unsupervised(worker_id: str) -> journal.TaskError:
    """For a cancelled task whose supervisor died before it stopped the task."""
    return error(
        TaskCancelled,
        f"The task was cancelled while it ran; the worker {worker_id} stopped before it "
        "finished (supervisor killed, or stopped at once), and it does not run again",
    )


def interruption_error(exit_codes: dict[int, int], timed_out: set[int]) -> journal.TaskError:
    """For a task stopped only because another process of its pool died."""
    deaths = " and ".join(
        f"(pid {pid}) {how_it_died(code, timed_out=pid in timed_out)}"
        for pid, code in sorted(exit_codes.items())
    )
    return error(
        TaskInterrupted,
        f"Another worker process {deaths or 'died'}; the process pool was replaced and this "
        "task was stopped before it finished",
    )


def reload_error(changed: str) -> journal.TaskError:
    """For a task stopped by a code reload (``reload``): not an attempt, it runs again."""
    return error(
        TaskInterrupted,
        f"Stopped by a code reload (changed {changed}) before it finished; it runs again "
        "under the new code",
    )


def how_it_died(exit_code: int, *, timed_out: bool) -> str:
    if timed_out:
        return "was killed for running past its timeout"
    if exit_code < 0:
        name = signal.Signals(-exit_code).name
        hint = " (perhaps out of memory?)" if -exit_code == signal.SIGKILL else ""
        return f"was killed by {name}{hint}"
    return f"exited with code {exit_code}"


def error(exception_class: type[BaseException], message: str) -> journal.TaskError:
    """A TaskError the supervisor records, shaped like a one-line traceback."""
    path = f"{exception_class.__module__}.{exception_class.__qualname__}"
    return journal.TaskError(exception_class_path=path, traceback=f"{path}: {message}\n")
