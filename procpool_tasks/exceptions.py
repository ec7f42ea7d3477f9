"""Every exception procpool_tasks raises or records, in one place.

Import them from here: ``procpool_tasks.exceptions.TaskInterrupted`` is the canonical path,
and the one a task's ``TaskResult.errors`` names. The paths of earlier releases
(``procpool_tasks.supervisor.TaskInterrupted``, ``procpool_tasks.journal.ValueNotJSON``,
...) still import the same classes (see ``FORMER_PATHS``), so a retry policy or a result
file that names one keeps working.

The framework's own errors (``InvalidTask``, ``TaskResultDoesNotExist``) come from
``procpool_tasks.compat``; the ones here subclass them where they mean the same.
"""

from __future__ import annotations

import errno

from . import compat

__all__ = [
    "FORMER_PATHS",
    "CancelRefused",
    "CronError",
    "HandedOffResultDoesNotExist",
    "HandoffRefused",
    "HandoffStopped",
    "InvalidTaskArguments",
    "JournalError",
    "JournalUnavailable",
    "MemoryLimitExceeded",
    "QuarantineError",
    "RecordNotFound",
    "ReservationLost",
    "TaskCancelled",
    "TaskInterrupted",
    "TaskNotLoadable",
    "TaskTimeoutError",
    "UnsafeResult",
    "ValueNotJSON",
    "WorkerProcessDied",
]


# -- the journal -------------------------------------------------------------------------


class JournalError(OSError):
    """The journal directory cannot be used (permissions, a planted symlink, ...)."""

    @classmethod
    def from_os_error(cls, error: OSError) -> JournalError:
        """The same failure, saying so when it is a symlink planted in the journal."""
        if error.errno == errno.ELOOP:
            return cls(error.errno, "a symlink was planted in the journal", error.filename)
        return cls(error.errno, error.strerror or str(error), error.filename)


class JournalUnavailable(OSError):
    """The journal cannot take the task (disk full, read-only, unsafe permissions)."""


class RecordNotFound(LookupError):
    """No task of this id is in the journal; carries the id."""


class ReservationLost(OSError):
    """A reserved record can no longer be written at its id (its segment was abandoned)."""


# -- enqueue and results -----------------------------------------------------------------


class ValueNotJSON(TypeError):
    """A value that does not survive a JSON round trip; says where it is and what."""


class InvalidTaskArguments(compat.InvalidTask, ValueNotJSON):
    """Arguments that JSON cannot carry; raised by ``enqueue`` before anything is written."""


class HandedOffResultDoesNotExist(compat.TaskResultDoesNotExist):
    """A task was handed off to another backend, which has no result for it (any more).

    Carries where it went: ``backend`` (the alias) and ``target_id`` (its id there).
    """

    def __init__(self, result_id: str, backend: str, target_id: str, why: str) -> None:
        super().__init__(
            f"{result_id} was handed off to backend {backend!r} as {target_id}, and {why}"
        )
        self.result_id = result_id
        self.backend = backend
        self.target_id = target_id


class UnsafeResult(compat.TaskResultDoesNotExist, JournalError):
    """A task's result cannot be read safely: a symlink was planted in the journal.

    The framework's does-not-exist error, for code that asks only for that, and a
    ``JournalError`` (an ``OSError``) that says what was found and where.
    """


# -- how a task ended (recorded in its result) -------------------------------------------


class TaskNotLoadable(ImportError):
    """A record names something that is not an importable, registered ``Task``."""


class TaskInterrupted(RuntimeError):
    """The supervisor running a task stopped before the task finished."""


class WorkerProcessDied(RuntimeError):
    """The worker process running a task died (killed, crashed, out of memory)."""


class MemoryLimitExceeded(MemoryError):
    """The task's worker process grew past ``--max-memory-per-child`` while it ran.

    Recorded as the error of a task that ends FAILED because the supervisor killed its
    process (SIGKILL, so that it could allocate no more); the message names the limit and
    the size the process reached.
    """


class TaskCancelled(RuntimeError):
    """The task was cancelled (``procpool_cancel``, the status page, ``backend.cancel``).

    Recorded as the error of a task that ends FAILED because it was cancelled: before it
    ran, or while it ran (its worker process was stopped). It never runs again.
    """


class TaskTimeoutError(BaseException):
    """The task ran past its timeout (``task_timeout``).

    A BaseException, not the builtin ``TimeoutError`` (an ``OSError``), so that a task's
    own ``except Exception`` cannot swallow it.
    """


# -- operator commands and settings ------------------------------------------------------


class QuarantineError(LookupError):
    """The quarantined record cannot be found, or cannot be re-admitted; says why."""


class CancelRefused(RuntimeError):
    """The task cannot be cancelled (it finished already); carries ``id`` and ``status``."""

    def __init__(self, result_id: str, status: str, why: str) -> None:
        super().__init__(f"Task {result_id} was not cancelled: {why}")
        self.id = result_id
        self.status = status


class HandoffRefused(RuntimeError):
    """The handoff cannot start at all (another one runs, a wrong target); says why."""


class HandoffStopped(RuntimeError):
    """The target's ``enqueue`` failed (its server is down, say): the handoff stops there.

    That task stays HANDING_OFF, and the next handoff finishes its move; ``id`` names it.
    """

    def __init__(self, record_id: str, alias: str, error: BaseException) -> None:
        super().__init__(
            f"Cannot hand off {record_id} to backend {alias!r}: {type(error).__name__}: "
            f"{error}. It stays HANDING_OFF (no worker here runs it); run procpool_handoff "
            "again to finish its move, which first looks for it there"
        )
        self.id = record_id


class CronError(ValueError):
    """A cron expression that cannot be parsed or can never fire; the message says which."""


#: Where each exception lived before 0.2.0: these paths still import it (results written
#: by earlier releases name them, and so may retry policies).
FORMER_PATHS = {
    "procpool_tasks.supervisor.TaskInterrupted": TaskInterrupted,
    "procpool_tasks.supervisor.WorkerProcessDied": WorkerProcessDied,
    "procpool_tasks.execution.TaskTimeoutError": TaskTimeoutError,
    "procpool_tasks.results.TaskNotLoadable": TaskNotLoadable,
    "procpool_tasks.journal.JournalError": JournalError,
    "procpool_tasks.journal.RecordNotFound": RecordNotFound,
    "procpool_tasks.journal.ValueNotJSON": ValueNotJSON,
    "procpool_tasks.journal.ReservationLost": ReservationLost,
    "procpool_tasks.backend.InvalidTaskArguments": InvalidTaskArguments,
    "procpool_tasks.backend.JournalUnavailable": JournalUnavailable,
    "procpool_tasks.backend.HandedOffResultDoesNotExist": HandedOffResultDoesNotExist,
    "procpool_tasks.backend.UnsafeResult": UnsafeResult,
    "procpool_tasks.quarantine.QuarantineError": QuarantineError,
    "procpool_tasks.handoff.HandoffRefused": HandoffRefused,
    "procpool_tasks.handoff.HandoffStopped": HandoffStopped,
    "procpool_tasks.schedule.CronError": CronError,
}
