"""Finished tasks: segment summaries, segments marked done, and pruning.

A segment's summary (``segments/<segment>.summary``, JSON) says what its tasks came to
without reading their result files again::

    scanned     bytes of the segment it covers; later lines are read afresh
    unfinished  offsets of its tasks that had not finished; looked at afresh each time
    markers     ids this segment re-queued whose tasks have not finished since
    counts      per queue, the kept tasks that ended SUCCESSFUL and FAILED
    finished    per status, when the first and the last kept task ended so
    failures    the newest failures, each with its exception line
    minutes     per minute of the last hour, the tasks that ended SUCCESSFUL and FAILED
    pruned      tasks whose results were deleted

A finished task stays finished, except when an operator re-queues it, which deletes the
summary of its segment; every summary writer holds the journal's history lock, so a
summary computed before a re-queue is never written after it. A summary can only be
behind in one way, then: tasks it lists as unfinished may have finished since, and those
are looked at again. So a survey of the whole history costs O(segments + unfinished tasks
+ new lines), whatever the number of finished tasks.

A segment is *done* (``<segment>.done``; supervisors skip it at start) once its writer
sealed it, nothing was written to it for ``QUIET_S``, every task in it finished and no
task it re-queued is waiting. In a done segment, a task without a result file was
pruned. Pruning deletes finished tasks' results per status (``retention``) and a whole
segment, records and all, once none of its tasks is left.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import itertools
import logging
import math
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from .. import journal as j

logger = logging.getLogger(__name__)

__all__ = ["Failure", "SegmentSummary", "Survey", "survey", "survey_and_keep"]

#: How many of the newest failures a summary (and ``procpool_status``) keeps.
RECENT_FAILURES = 10
#: What opening a file for writing fails with where this process may only read.
_CANNOT_WRITE = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})
#: How many states of a segment a survey reads one by one before it lists the segment's
#: result files instead (``_SegmentStates``).
LIST_AFTER = 32
#: How many records a survey reads between two offers of the GIL to another thread: a
#: supervisor surveys in a thread of its own, which must not hold its claims up (a first
#: survey of 100,000 ready tasks, all decoding, made a start-up 0.5 s slower).
YIELD_EVERY = 64
#: How far back a summary counts finished tasks per minute (the status page's chart).
MINUTES_KEPT = 60


@dataclass(slots=True, kw_only=True)
class Failure:
    """A task that ended FAILED, as the status shows it."""

    id: str
    task_path: str
    queue_name: str
    finished_at: float  # POSIX time
    exception_class_path: str
    error: str  # the traceback's last line: "ValueError: boom"
    attempts: int

    @classmethod
    def of(cls, record: j.Record, state: j.State) -> Failure:
        last = state.errors[-1] if state.errors else None
        lines = last.traceback.strip().splitlines() if last else []
        return cls(
            id=record.id,
            task_path=record.task_path,
            queue_name=record.queue_name,
            finished_at=state.finished_at.timestamp() if state.finished_at else 0.0,
            exception_class_path=last.exception_class_path if last else "",
            error=lines[-1] if lines else "",
            attempts=len(state.worker_ids),
        )


@dataclass(slots=True, kw_only=True)
class SegmentSummary:
    """What a segment's tasks came to; see the module's docstring."""

    scanned: int = 0
    unfinished: list[int] = field(default_factory=list)
    markers: list[str] = field(default_factory=list)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    finished: dict[str, list[float]] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)
    #: Minute (POSIX time // 60, as text for JSON) -> status -> tasks that ended then.
    minutes: dict[str, dict[str, int]] = field(default_factory=dict)
    pruned: int = 0

    @property
    def kept(self) -> int:
        """Finished tasks whose results are still there."""
        return sum(sum(by_status.values()) for by_status in self.counts.values())

    @property
    def is_settled(self) -> bool:
        """Every task finished and every re-queue it announced is over."""
        return not self.unfinished and not self.markers

    def add_finished(self, record: j.Record, state: j.State) -> None:
        by_status = self.counts.setdefault(record.queue_name, {})
        by_status[state.status] = by_status.get(state.status, 0) + 1
        at = state.finished_at.timestamp() if state.finished_at else 0.0
        first_last = self.finished.setdefault(state.status, [at, at])
        first_last[0], first_last[1] = min(first_last[0], at), max(first_last[1], at)
        if state.status == j.FAILED:
            self.failures.append(Failure.of(record, state))
            self.failures.sort(key=lambda failure: failure.finished_at, reverse=True)
            del self.failures[RECENT_FAILURES:]
        minute = int(at // 60)
        if minute > time.time() // 60 - MINUTES_KEPT:
            by_status = self.minutes.setdefault(str(minute), {})
            by_status[state.status] = by_status.get(state.status, 0) + 1

    def forget_old_minutes(self, now: float) -> None:
        oldest = int(now // 60) - MINUTES_KEPT
        self.minutes = {key: value for key, value in self.minutes.items() if int(key) > oldest}

    def to_json(self) -> dict[str, Any]:
        return {
            "version": 1,
            **dataclasses.asdict(self),
        }

    @classmethod
    def from_json(cls, data: Any) -> SegmentSummary | None:
        """The summary, or None for a damaged or unknown one (it is computed again)."""
        try:
            if data.get("version") != 1:
                return None
            fields = {key: value for key, value in data.items() if key != "version"}
            fields["failures"] = [Failure(**failure) for failure in fields.get("failures", [])]
            summary = cls(**fields)
            if not isinstance(summary.scanned, int) or not isinstance(summary.unfinished, list):
                return None
            return summary
        except (AttributeError, TypeError, ValueError):
            return None


@dataclass(slots=True, kw_only=True)
class Survey:
    """One look at every segment: summaries, the unfinished tasks, and what was pruned."""

    summaries: dict[str, SegmentSummary] = field(default_factory=dict)
    unfinished: list[tuple[j.Record, j.State | None]] = field(default_factory=list)
    #: Segments that are done (or, in a read-only survey, would be marked so).
    done: set[str] = field(default_factory=set)
    marked_done: int = 0
    pruned_segments: int = 0
    #: Finished tasks deleted (or, in a dry run, that would be), per status.
    pruned: Counter[str] = field(default_factory=Counter)
    #: Segments of tasks whose re-queue this survey published (see ``_note_marker``).
    republished: set[str] = field(default_factory=set)


def survey(
    journal: j.Journal,
    *,
    write: bool,
    retention: Mapping[str, float] | None = None,
    dry_run: bool = False,
) -> Survey:
    """Look at every segment: summarize it, and with ``write`` keep the summary, mark it
    done and prune it by ``retention`` (seconds per status).

    The caller holds the history lock when ``write`` is set (see ``history_writer``).
    With ``dry_run``, nothing is deleted but what would be is counted.
    """
    result = Survey()
    tail = j.SegmentTail(journal)
    now = time.time()
    cutoffs = {status: now - seconds for status, seconds in (retention or {}).items()}
    segments = journal.all_segment_names()
    for segment in segments:
        _survey_and_prune(journal, tail, segment, result, write, now, cutoffs, dry_run)
    # A re-queue published in this pass made a finished task READY again: its segment,
    # perhaps summarized already, is looked at afresh (its summary was deleted).
    for segment in sorted(result.republished & set(segments)):
        result.summaries.pop(segment, None)
        result.unfinished = [
            (record, state)
            for record, state in result.unfinished
            if not record.id.startswith(segment)
        ]
        _survey_and_prune(journal, tail, segment, result, write, now, cutoffs, dry_run)
    if write and not dry_run:
        journal.remove_orphan_results()
    return result


def survey_and_keep(journal: j.Journal, *, dry_run: bool) -> Survey:
    """A survey for an operator's command (requeue, cancel, handoff): it keeps the summaries
    it brings up to date when the history lock is free, and writes nothing in a dry run."""
    if dry_run:
        return survey(journal, write=False)
    with history_writer(journal, blocking=False) as held:
        return survey(journal, write=held)


def _survey_and_prune(
    journal: j.Journal,
    tail: j.SegmentTail,
    segment: str,
    result: Survey,
    write: bool,
    now: float,
    cutoffs: Mapping[str, float],
    dry_run: bool,
) -> None:
    try:
        _survey_segment(journal, tail, segment, result, write=write, now=now)
        if cutoffs and segment in result.done and (write or dry_run):
            _prune_segment(journal, segment, result, cutoffs, dry_run=dry_run)
    except FileNotFoundError:
        result.summaries.pop(segment, None)  # pruned meanwhile by another process


@contextlib.contextmanager
def history_writer(
    journal: j.Journal, *, blocking: bool, read_only_ok: bool = False
) -> Iterator[bool]:
    """Hold the history lock for the block if it can be had; yields whether it is held.

    With ``read_only_ok`` (a reader: status, the status page), a journal this process
    cannot write (a read-only mount, a copy it may only read) yields False and is left
    as it is: no lock file is made or opened for writing there.
    """
    if read_only_ok and not journal.is_writable():
        yield False
        return
    lock = journal.history_lock()
    try:
        held = lock.acquire(blocking=blocking)
    except OSError as error:
        if not (read_only_ok and error.errno in _CANNOT_WRITE):
            raise
        held = False  # a lock file this process may not open for writing
    try:
        yield held
    finally:
        if held:
            lock.release()


def _survey_segment(
    journal: j.Journal,
    tail: j.SegmentTail,
    segment: str,
    result: Survey,
    *,
    write: bool,
    now: float,
) -> None:
    stored = SegmentSummary.from_json(journal.read_summary(segment))
    done = journal.is_done(segment)
    if done and stored is not None and stored.is_settled:
        result.summaries[segment] = stored  # nothing in it can change: no reading at all
        result.done.add(segment)
        return
    summary, unfinished = _summarize(
        journal, tail, segment, stored, done=done, write=write, republished=result.republished
    )
    result.summaries[segment] = summary
    result.unfinished.extend(unfinished)
    if write and summary != stored:
        journal.write_summary(segment, summary.to_json())
    if not done and summary.is_settled and _is_quiet(journal, segment, now):
        if write:
            journal.mark_done(segment)
        result.marked_done += 1
        done = True
    if done:
        result.done.add(segment)


def _summarize(
    journal: j.Journal,
    tail: j.SegmentTail,
    segment: str,
    stored: SegmentSummary | None,
    *,
    done: bool,
    write: bool,
    republished: set[str],
) -> tuple[SegmentSummary, list[tuple[j.Record, j.State | None]]]:
    """Bring a summary up to date: new lines, and the tasks it left unfinished."""
    summary = SegmentSummary.from_json(stored.to_json()) if stored else SegmentSummary()
    assert summary is not None  # noqa: S101 (a round trip of a valid summary)
    left_unfinished = tail.read_at(segment, summary.unfinished).values()
    tail.seek(segment, summary.scanned)
    new = (item for item in tail.read_segment(segment) if not isinstance(item, j.Quarantined))
    summary.unfinished = []
    unfinished = []
    states = _SegmentStates(journal, segment)
    # One record at a time: a segment holds tens of thousands, and a list of them all was
    # the supervisor's largest allocation, which its memory kept long after.
    for index, item in enumerate(itertools.chain(left_unfinished, new)):
        if not index % YIELD_EVERY:
            time.sleep(0)  # let another thread have the GIL (see YIELD_EVERY)
        if isinstance(item, j.Requeue):
            if _note_marker(journal, item, summary, write=write):
                republished.add(j.parse_id(item.id)[0])
            continue
        state = states.read(item.id)
        if state is not None and state.is_finished:
            summary.add_finished(item, state)
        elif state is None and done:
            summary.pruned += 1
        else:
            summary.unfinished.append(j.parse_id(item.id)[1])
            unfinished.append((item, state))
    summary.scanned = tail.offsets().get(segment, summary.scanned)
    summary.markers = [id_ for id_ in summary.markers if not _is_over(journal, id_)]
    summary.forget_old_minutes(time.time())
    return summary, unfinished


def _note_marker(
    journal: j.Journal, marker: j.Requeue, summary: SegmentSummary, *, write: bool
) -> bool:
    """Keep a re-queue marker until its task finished; publish its state if behind (a
    re-queue cut short). Whether it published."""
    if marker.id not in summary.markers:
        summary.markers.append(marker.id)
    if write and marker.state is not None:
        with contextlib.suppress(j.JournalError, FileNotFoundError):
            return journal.publish_requeue(marker)[1]
    return False


def _is_over(journal: j.Journal, record_id: str) -> bool:
    """Whether a re-queued task finished, was pruned or is gone."""
    state = _read_state(journal, record_id)
    if state is not None:
        return state.is_finished
    return journal.was_pruned(record_id)


class _SegmentStates:
    """Reads the states of one segment's tasks: the first ``LIST_AFTER`` one by one, then
    only those of the tasks that one listing of its results shows may hold one.

    A backlog that no supervisor touched (or whose files were made ahead, empty) then
    costs no open per task; a segment with a few unfinished tasks left, no listing. A
    task that gets its state after the listing is taken for unfinished, and looked at
    again by the next survey, as a task that finished after its state was read is.
    """

    def __init__(self, journal: j.Journal, segment: str) -> None:
        self._journal = journal
        self._segment = segment
        self._reads_before_listing = LIST_AFTER
        self._listing_tried = False
        self._listed: frozenset[str] | None = None

    def read(self, record_id: str) -> j.State | None:
        if self._reads_before_listing:
            self._reads_before_listing -= 1
        elif not self._listing_tried:
            self._listing_tried = True
            with contextlib.suppress(OSError):  # a symlink for the directory: read_state says
                self._listed = self._journal.ids_with_state(self._segment)
        if self._listed is not None and record_id not in self._listed:
            return None
        return _read_state(self._journal, record_id)


def _read_state(journal: j.Journal, record_id: str) -> j.State | None:
    try:
        return journal.read_state(record_id)
    except j.JournalError as error:
        logger.warning("Task id=%s: %s (%s)", record_id, error.strerror, error.filename)
        return j.State(id=record_id, status="UNUSABLE", version=0)


def _is_quiet(journal: j.Journal, segment: str, now: float) -> bool:
    """Sealed, and untouched for QUIET_S: every supervisor has read it to its end."""
    modified = journal.segment_path(segment).stat().st_mtime
    return modified <= now - j.QUIET_S and journal.is_sealed(segment)


# --- pruning ------------------------------------------------------------------------------


def _prune_segment(
    journal: j.Journal,
    segment: str,
    result: Survey,
    cutoffs: Mapping[str, float],
    *,
    dry_run: bool,
) -> None:
    """Delete what ``cutoffs`` (POSIX time per status) expire in a settled, done segment."""
    summary = result.summaries[segment]
    if not summary.is_settled:
        return
    if segment in journal.firing_segments():
        # A periodic task's tick counts as fired if its record is in this segment; a
        # supervisor stopped before it recorded which. The segment stays until one looks
        # (see ``periodic``): asked after the segment was found done, so a fire noted
        # before its writer sealed it is seen.
        return
    kept = {
        status
        for by_status in summary.counts.values()
        for status, count in by_status.items()
        if count
    }

    def expired(status: str, which: int) -> bool:  # which: 0 the first to end so, 1 the last
        first_last = summary.finished.get(status, [math.inf, math.inf])
        return status in cutoffs and first_last[which] < cutoffs[status]

    if all(expired(status, 1) for status in kept):
        for by_status in summary.counts.values():
            result.pruned.update(by_status)
        if not dry_run:
            journal.remove_segment(segment)
            del result.summaries[segment]
        result.pruned_segments += 1
    elif any(expired(status, 0) for status in kept):
        _prune_tasks(journal, segment, result, cutoffs, dry_run=dry_run)


def _prune_tasks(
    journal: j.Journal,
    segment: str,
    result: Survey,
    cutoffs: Mapping[str, float],
    *,
    dry_run: bool,
) -> None:
    """Delete the expired results of a segment that keeps others; summarize it again."""
    for item in j.SegmentTail(journal).read_segment(segment):
        if not isinstance(item, j.Record):
            continue
        state = _read_state(journal, item.id)
        if state is None or not state.is_finished or state.finished_at is None:
            continue
        cutoff = cutoffs.get(state.status)
        if cutoff is not None and state.finished_at.timestamp() < cutoff:
            result.pruned[state.status] += 1
            if not dry_run:
                journal.remove_result(item.id)
    if dry_run:
        return
    summary, _ = _summarize(
        journal, j.SegmentTail(journal), segment, None, done=True, write=True, republished=set()
    )
    if summary.kept:
        journal.write_summary(segment, summary.to_json())
        result.summaries[segment] = summary
    else:
        journal.remove_segment(segment)
        del result.summaries[segment]
        result.pruned_segments += 1
