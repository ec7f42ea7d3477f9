"""The journal: procpool_tasks' on-disk format, and the only package that touches it.

Layout of a journal directory (0700; every file 0600)::

    segments/<segment>.log           append-only task records; one writer process each,
                                     which holds an flock on the file while it appends
    segments/<segment>.summary       what its tasks came to, for status and pruning
                                     (``history``); can always be computed again
    segments/<segment>.done          marker: sealed, quiet, and every task in it finished
                                     (supervisors skip it; a missing result is pruned)
    segments/<task id>.cancel        a RUNNING task's cancel, for its supervisor to honour
                                     (``cancels``)
    results/<segment>/<offset>.json  a task's states, appended: the last intact line counts;
                                     empty (no state yet) if made ahead of the claim
    wal/<instance>.log               a supervisor's log of finished states (group commit)
    workers/<instance>.lock          held by a live supervisor; free once it has died
    workers/<instance>.json          its heartbeat (``heartbeat``)
    claim.lock                       taken briefly for every claim and recovery
    history.lock                     taken to change summaries, prune, and re-queue
    handoff.lock                     held by the one running ``procpool_handoff``
    quarantine/                      copies of records that cannot be run (unreadable, or
                                     their task does not import), with the reason
    schedules/<name>.json            the last tick a periodic task's schedule fired, and
                                     the task id it was enqueued as (``periodic``)
    schedules/<name>.firing          the same, written durably just before that record:
                                     the tick counts as fired if the record is there
    schedules.lock                   taken to fire periodic tasks (one supervisor at a time)
    .gitignore                       ``*``, written when the tree is made: keeps it out of git

A task id is ``<segment>-<offset in hex>``: where its record starts. So ``get_result``
reads one result file, or the record itself while no supervisor has touched the task.

Every segment line is ``<crc32 as 8 hex digits> <JSON>\\n``. JSON never contains a raw
newline, so a torn or damaged line is detected (bad checksum, or no newline yet) and the
next line is still found. Besides records, a segment holds re-queue markers (a task is
READY again; an operator's carries the READY state and is the re-queue's commit point)
and void lines (the place reserved for a task enqueued on commit whose transaction rolled
back, as long as the record would have been). Result files hold lines of the same form,
each written after a newline of its own, so that a line torn by a crash never joins the
next one; a reader takes the last intact line, and so sees the old state or the new one,
never half of one. Appending costs one file per task: creating a file (a new inode) was
the most expensive step of a state change, and replacing the file whole took a second
one. Supervisors make that file ahead of time, empty, so that the claim only opens it:
an empty result file reads as no state at all.

Durability: an enqueue is acknowledged after its line is ``fdatasync``-ed (with the
``durable`` option). Finished states are appended to the supervisor's WAL and synced in
groups before they are appended to their result files without a sync of their own; a
supervisor that starts replays the WAL of every dead one, so no finished state is lost.
The states of a handoff to another backend (HANDING_OFF, HANDED_OFF; see ``handoff``) are
synced in the result file itself (``write_state_durably``).

Modules, one concern each (``Journal`` is made of the parts marked so)::

    format        records, states and the other data; their JSON; lines; ids; errors
    files         low-level file access: no symlink followed, appends, atomic replaces
    directory     the directory tree and its lock files (Journal's base)
    segments      segment writers, SegmentTail, and listing and reading segments (Journal)
    reservations  enqueue on commit: ids given ahead of the write
    enqueue       appending records and re-queue markers (Journal)
    cancels       cancelling READY tasks, cancel requests for RUNNING ones (Journal)
    resultfiles   reading and appending a task's states (Journal)
    prune         deleting segments and results (Journal)
    quarantine    copies of lines that cannot be run (Journal)
    schedules     the periodic tasks' files (Journal)
    workers       supervisors' lock files and heartbeats (Journal)
    wal           a supervisor's result log: ResultLog, replay_result_log
"""

from __future__ import annotations

from ..exceptions import JournalError, RecordNotFound, ReservationLost, ValueNotJSON
from . import files
from .cancels import Cancelling, _Cancels, cancelled_error
from .directory import ClaimLock
from .enqueue import _Enqueue
from .format import (
    FAILED,
    FINISHED_STATUSES,
    HANDED_OFF,
    HANDING_OFF,
    MAX_ID_LENGTH,
    READY,
    RUNNING,
    SUCCESSFUL,
    CancelRequest,
    Fire,
    Handoff,
    Quarantined,
    Record,
    Requeue,
    State,
    StateLineTemplate,
    TaskError,
    a_type_name,
    decode_fire,
    decode_record,
    decode_state,
    encode_fire,
    encode_record,
    encode_state,
    from_pickled_fields,
    is_instance_name,
    parse_id,
    parse_id_checked,
    pickled_by_fields,
    state_data,
    state_line,
    to_json_value,
)
from .prune import _Pruning
from .quarantine import _Quarantine
from .reservations import Reservation
from .resultfiles import ResultFile
from .schedules import _Schedules
from .segments import QUIET_S, SEGMENT_MAX_AGE_S, SEGMENT_MAX_BYTES, SegmentTail
from .wal import WAL_MAX_BYTES, ResultLog, remove_result_log, replay_result_log
from .workers import _Workers

__all__ = [
    "FAILED",
    "FINISHED_STATUSES",
    "HANDED_OFF",
    "HANDING_OFF",
    "MAX_ID_LENGTH",
    "QUIET_S",
    "READY",
    "RUNNING",
    "SEGMENT_MAX_AGE_S",
    "SEGMENT_MAX_BYTES",
    "SUCCESSFUL",
    "WAL_MAX_BYTES",
    "CancelRequest",
    "Cancelling",
    "ClaimLock",
    "Fire",
    "Handoff",
    "Journal",
    "JournalError",
    "Quarantined",
    "Record",
    "RecordNotFound",
    "Requeue",
    "Reservation",
    "ReservationLost",
    "ResultFile",
    "ResultLog",
    "SegmentTail",
    "State",
    "StateLineTemplate",
    "TaskError",
    "ValueNotJSON",
    "a_type_name",
    "cancelled_error",
    "decode_fire",
    "decode_record",
    "decode_state",
    "encode_fire",
    "encode_record",
    "encode_state",
    "files",
    "from_pickled_fields",
    "is_instance_name",
    "parse_id",
    "parse_id_checked",
    "pickled_by_fields",
    "remove_result_log",
    "replay_result_log",
    "state_data",
    "state_line",
    "to_json_value",
]


class Journal(_Enqueue, _Cancels, _Pruning, _Quarantine, _Schedules, _Workers):
    """One journal directory: enqueue, read, claim and finish tasks there.

    Its methods live with their concern, one base class per module (see above); all of
    them are found on this class, where ``tests.crash_at`` replaces one by name.
    """
