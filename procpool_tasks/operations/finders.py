"""Finders: did the enqueue of a handoff that was killed reach its target backend?

A handoff (``handoff``) killed after the target's ``enqueue`` and before it marked the task
HANDED_OFF leaves the task HANDING_OFF, with the target's alias and the moment the handoff
of that task started. The next handoff asks the target's finder for a copy made since
then: the same task path, args, kwargs, queue and priority, enqueued at or after that
moment (one clock: the handoff's own process stamped both). Found, the task is marked
HANDED_OFF with the copy's id; not found, it is handed off again.

Known kinds of target: django-tasks-db (its ``DBTaskResult`` rows) and django-tasks-rq (its
RQ jobs, by their keys in Redis: a job is found wherever it is, queued, scheduled, running
or finished, until RQ deletes it ``result_ttl`` after it finished, 500 s by default). For
any other backend ``finder_for`` returns None: the handoff cannot tell, and hands the task
off again.

A copy that the application itself enqueued on the target in those same moments, with the
same task and arguments, would look the same: a finder takes the earliest one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

from .. import journal

__all__ = ["Finder", "finder_for"]

#: ``finder(target, record, since)``: the id of a copy of ``record`` that the target
#: backend got at or after ``since``, or None if it has none.
Finder = Callable[[Any, journal.Record, datetime], str | None]

#: How many RQ jobs to fetch from Redis at once.
_RQ_BATCH = 500


def finder_for(target: Any) -> Finder | None:
    """The finder of a target backend's kind, or None if there is none for it."""
    with contextlib.suppress(ImportError):
        from django_tasks_db.backend import DatabaseBackend

        if isinstance(target, DatabaseBackend):
            return find_in_database
    with contextlib.suppress(ImportError):
        from django_tasks_rq.backend import RQBackend

        if isinstance(target, RQBackend):
            return find_in_rq
    return None


def find_in_database(target: Any, record: journal.Record, since: datetime) -> str | None:
    """A django-tasks-db row for ``record`` enqueued at or after ``since``: its id."""
    from django_tasks_db.models import DBTaskResult

    rows = (
        DBTaskResult.objects.filter(
            backend_name=target.alias,
            task_path=record.task_path,
            queue_name=record.queue_name,
            priority=record.priority,
            enqueued_at__gte=since,
        )
        .order_by("enqueued_at")
        .only("id", "args_kwargs")
    )
    wanted = {"args": record.args, "kwargs": record.kwargs}
    # Compared here, not in SQL: JSON equality differs between databases (key order).
    for row in rows:
        if row.args_kwargs == wanted:
            return str(row.pk)
    return None


def find_in_rq(target: Any, record: journal.Record, since: datetime) -> str | None:
    """An RQ job of django-tasks-rq for ``record`` created at or after ``since``: its id.

    Looks at every job key in Redis rather than the queue and its registries: a worker
    takes a job off the queue before it enters the started registry, and a look at that
    moment would miss it.
    """
    import django_rq
    from rq.job import Job

    connection = django_rq.get_connection(record.queue_name)
    since_utc = since.astimezone(UTC)  # RQ's times are aware, in UTC
    found: list[tuple[datetime, str]] = []
    for batch in _batches(_rq_job_ids(connection, Job.redis_job_namespace_prefix)):
        for job in Job.fetch_many(batch, connection=connection):
            if job is not None and _is_copy(job, target.alias, record, since_utc):
                found.append((job.created_at, job.id))
    return min(found)[1] if found else None


def _rq_job_ids(connection: Any, prefix: str) -> Iterator[str]:
    for key in connection.scan_iter(match=f"{prefix}*", count=1000):
        name = key.decode() if isinstance(key, bytes) else str(key)
        job_id = name[len(prefix) :]
        if job_id and ":" not in job_id:  # not "<id>:dependents" and the like
            yield job_id


def _batches(ids: Iterator[str]) -> Iterator[list[str]]:
    batch: list[str] = []
    for job_id in ids:
        batch.append(job_id)
        if len(batch) == _RQ_BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def _is_copy(job: Any, alias: str, record: journal.Record, since_utc: datetime) -> bool:
    try:
        return bool(
            job.meta.get("backend_name") == alias
            and job.origin == record.queue_name
            and job.func_name == record.task_path
            and list(job.args) == record.args
            and dict(job.kwargs) == record.kwargs
            and job.created_at is not None
            and job.created_at >= since_utc
        )
    except Exception:  # a job of some other app whose data does not unpickle here
        return False
