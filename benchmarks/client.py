"""What runs inside a benchmark project: ``python -m benchmarks.client``.

Sets Django up once with the project's settings (``DJANGO_SETTINGS_MODULE``), then serves
operations through the Tasks API (``enqueue``, ``get_result``, waiting for results): one
JSON line ``{"op": ..., **arguments}`` on stdin, one JSON line ``{"outcome": ...}`` (or
``{"error": traceback}``) on stdout, until stdin closes.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
import traceback
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import django

FINISHED = frozenset({"SUCCESSFUL", "FAILED"})
#: How long a waiting client sleeps between two looks at a result that has not changed.
POLL_S = 0.005
#: How long a latency round trip sleeps between two looks at its result: 0.5 ms at
#: first, then 1/20 of the time waited so far (an error of at most 5%), up to 5 ms, so
#: that waiting on a slow system does not take a core from its workers.
LATENCY_POLL_MIN_S = 0.0005
LATENCY_POLL_MAX_S = 0.005
#: How long ago the synthesized history of finished (or ready) tasks was enqueued.
HISTORY_AGE = timedelta(hours=1)


def _status(result: Any) -> str:
    return str(getattr(result.status, "value", result.status))


def _backend() -> Any:
    from benchmarks.bench_tasks import noop

    return noop.get_backend()


#: Systems whose get_result knows a task only once it finished (threadmill keeps a
#: result only when a worker acknowledges the task): before that, it is "not finished".
RESULT_ONLY_WHEN_FINISHED = frozenset({"threadmill"})
UNFINISHED = "NOT FINISHED"


def _get_status(backend: Any, result_id: str) -> tuple[str, Any]:
    """The status of a task and its result (None where there is none yet)."""
    from django.conf import settings

    try:
        result = backend.get_result(result_id)
    except Exception as error:
        kind = settings.BENCH_SYSTEM_KIND  # type: ignore[misc]  # the project's own setting
        if kind in RESULT_ONLY_WHEN_FINISHED and type(error).__name__ == "TaskResultDoesNotExist":
            return UNFINISHED, None
        raise
    return _status(result), result


def _write_ids(path: str | None, ids: list[str]) -> None:
    if path:
        Path(path).write_text("\n".join(ids))


def _read_ids(path: str) -> list[str]:
    return [line for line in Path(path).read_text().splitlines() if line]


def op_enqueue(arguments: dict[str, Any]) -> dict[str, Any]:
    """Enqueue ``n`` tasks as fast as one process can; time them. No-op tasks, or with
    ``sleep_ms``, tasks that sleep that many milliseconds."""
    from benchmarks.bench_tasks import noop, sleep_ms

    task: Any = noop
    args: tuple[Any, ...] = ()
    if arguments.get("sleep_ms") is not None:
        task, args = sleep_ms, (arguments["sleep_ms"],)
    if arguments.get("priority") is not None:
        task = task.using(priority=arguments["priority"])
    for _ in range(arguments.get("warmup", 3)):
        task.enqueue(*args)  # opens connections, files, imports: not what is measured
    n = arguments["n"]
    start = time.monotonic()
    ids = [task.enqueue(*args).id for _ in range(n)]
    end = time.monotonic()
    _write_ids(arguments.get("ids_file"), ids)
    return {"n": n, "start": start, "end": end}


def op_enqueue_interruptible(arguments: dict[str, Any]) -> dict[str, Any]:
    from benchmarks.bench_tasks import interruptible

    ids = [interruptible.enqueue().id for _ in range(arguments["n"])]
    _write_ids(arguments["ids_file"], ids)
    return {"n": len(ids)}


def op_wait(arguments: dict[str, Any]) -> dict[str, Any]:
    """Wait until every task of ``ids_file`` is finished (or running, or started).

    Looks at the tasks in the order they were enqueued, each until it is done, so that
    waiting costs the workers little CPU. Returns the wall-clock times it saw the first
    and the last one done, the earliest ``started_at`` (None where a backend does not
    report it) and the statuses; ``timed_out`` after ``timeout``.
    """
    backend = _backend()
    ids = _read_ids(arguments["ids_file"])[: arguments.get("limit")]
    until = arguments.get("until", "finished")
    done: Callable[[str], bool] = {
        "finished": lambda status: status in FINISHED,
        "running": lambda status: status == "RUNNING",
        "started": lambda status: status not in {"READY", UNFINISHED},
    }[until]
    deadline = time.monotonic() + arguments.get("timeout", 600)
    statuses: Counter[str] = Counter()
    started: list[float] = []
    end = first_end = time.time()
    timed_out = False
    for index, result_id in enumerate(ids):
        while True:
            status, result = _get_status(backend, result_id)
            if done(status):
                end = time.time()
                first_end = end if index == 0 else first_end
                break
            if time.monotonic() > deadline:
                timed_out = True
                break
            time.sleep(arguments.get("poll_s", POLL_S))
        statuses[status] += 1
        if result is not None and result.started_at is not None:
            started.append(result.started_at.timestamp())
        if timed_out:
            break
    return {
        "end": end,
        "first_end": first_end,
        "first_started": min(started) if started else None,
        "statuses": dict(statuses),
        "seen": sum(statuses.values()),
        "timed_out": timed_out,
    }


def op_statuses(arguments: dict[str, Any]) -> dict[str, Any]:
    backend = _backend()
    statuses = Counter(_get_status(backend, i)[0] for i in _read_ids(arguments["ids_file"]))
    return {"statuses": dict(statuses)}


def op_latency(arguments: dict[str, Any]) -> dict[str, Any]:
    """Sequential round trips on an idle worker: enqueue, then look until it finished."""
    from benchmarks.bench_tasks import echo

    backend = _backend()

    def round_trip(value: int) -> float:
        start = time.perf_counter()
        result_id = echo.enqueue(value).id
        while _get_status(backend, result_id)[0] not in FINISHED:
            waited = time.perf_counter() - start
            time.sleep(min(LATENCY_POLL_MAX_S, max(LATENCY_POLL_MIN_S, waited / 20)))
        return time.perf_counter() - start

    for value in range(arguments.get("warmup", 2)):
        round_trip(value)
    latencies = []
    budget_end = time.monotonic() + arguments["budget_s"]
    for value in range(arguments["n"]):
        latencies.append(round_trip(value))
        if time.monotonic() > budget_end:
            break
    return {"latencies_s": latencies, "capped": len(latencies) < arguments["n"]}


def op_get_result(arguments: dict[str, Any]) -> dict[str, Any]:
    """Time ``get_result`` of the given (finished) tasks, each read once, after a warm-up."""
    backend = _backend()
    ids = _read_ids(arguments["ids_file"])[: arguments["n"]]
    for result_id in ids[:10]:
        backend.get_result(result_id)
    start = time.perf_counter()
    for result_id in ids:
        backend.get_result(result_id)
    return {"n": len(ids), "seconds": time.perf_counter() - start}


def op_synthesize(arguments: dict[str, Any]) -> dict[str, Any]:
    """Add ``count`` tasks to the system's store, finished or ready, without running them.

    As the system's own worker would leave them, written with the system's own storage
    code, so that a history of 100,000 tasks takes seconds instead of a long drain. They
    are dated ``HISTORY_AGE`` ago, as a history is.
    """
    from django.conf import settings

    synthesize = {"procpool": _synthesize_procpool, "db": _synthesize_db}[
        settings.BENCH_SYSTEM_KIND  # type: ignore[misc]  # the project's own setting
    ]
    start = time.monotonic()
    ids = synthesize(arguments["count"], finished=arguments["finished"])
    _write_ids(arguments.get("ids_file"), ids)
    return {"count": len(ids), "seconds": time.monotonic() - start}


def _synthesize_procpool(count: int, *, finished: bool) -> list[str]:
    from django.utils import timezone

    from benchmarks.bench_tasks import noop
    from procpool_tasks import journal

    # Not durable: only how much history there is matters here, not how it got there.
    store = journal.Journal(_backend().journal.path, durable=False)
    start = timezone.now() - HISTORY_AGE
    ids = []
    for index in range(count):
        now = start + timedelta(microseconds=index)
        record_id = store.append(
            journal.Record(
                id="",
                task_path=noop.module_path,
                args=[],
                kwargs={},
                priority=noop.priority,
                queue_name=noop.queue_name,
                backend=_backend().alias,
                enqueued_at=now,
            )
        )
        if finished:
            store.write_state(
                journal.State(
                    id=record_id,
                    status=journal.SUCCESSFUL,
                    version=2,
                    worker_ids=("bench-history",),
                    started_at=now,
                    last_attempted_at=now,
                    finished_at=now,
                )
            )
        ids.append(record_id)
    # History is old: its segments have been quiet for as long as their tasks are done.
    for segment in {journal.parse_id(record_id)[0] for record_id in ids}:
        os.utime(store.segment_path(segment), (start.timestamp(), start.timestamp()))
    return ids


def _synthesize_db(count: int, *, finished: bool) -> list[str]:
    from django.db import transaction
    from django.utils import timezone

    from benchmarks.bench_tasks import noop

    # An optional peer, absent where the harness is type-checked: typed as Any.
    models = importlib.import_module("django_tasks_db.models")
    DBTaskResult, get_date_max = models.DBTaskResult, models.get_date_max  # noqa: N806

    then = timezone.now() - HISTORY_AGE
    fields = {
        "args_kwargs": {"args": [], "kwargs": {}},
        "priority": noop.priority,
        "task_path": noop.module_path,
        "queue_name": noop.queue_name,
        "backend_name": _backend().alias,
        "run_after": get_date_max(),
    }
    if finished:
        fields |= {
            "status": "SUCCESSFUL",
            "started_at": then,
            "finished_at": then,
            "worker_ids": ["bench-history"],
        }
    ids: list[str] = []
    batch = 5000
    with transaction.atomic():
        for first in range(0, count, batch):
            rows = [DBTaskResult(**fields) for _ in range(min(batch, count - first))]
            DBTaskResult.objects.bulk_create(rows)
            ids += [str(row.id) for row in rows]
    return ids


class _StaffUser:
    """Who the status page is rendered for: a staff user, without auth's database."""

    is_authenticated = True
    is_active = True
    is_staff = True

    def get_username(self) -> str:
        return "bench"


def op_status_page(arguments: dict[str, Any]) -> dict[str, Any]:
    """Time GETs of the status page (``procpool_tasks.urls``) in this process, as a web
    process serves them: the view, its survey of the journal and its template; the
    first, which imports and compiles them, is left out."""
    from django.test import RequestFactory

    from procpool_tasks.web import views

    factory = RequestFactory()

    def get() -> Any:
        request = factory.get("/tasks/", {"refresh": "0"})
        request.user = _StaffUser()  # type: ignore[assignment]  # what the view reads of it
        response = views.status_page(request)
        if response.status_code != 200:
            raise RuntimeError(f"the status page answered {response.status_code}")
        return response

    get()
    seconds = []
    for _ in range(arguments["repeats"]):
        start = time.perf_counter()
        response = get()
        seconds.append(time.perf_counter() - start)
    return {"seconds": seconds, "bytes": len(response.content)}


OPERATIONS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "enqueue": op_enqueue,
    "enqueue_interruptible": op_enqueue_interruptible,
    "wait": op_wait,
    "statuses": op_statuses,
    "latency": op_latency,
    "get_result": op_get_result,
    "synthesize": op_synthesize,
    "status_page": op_status_page,
}


def main() -> None:
    django.setup()
    replies = sys.stdout
    sys.stdout = sys.stderr  # whatever else prints must not garble the replies
    for line in sys.stdin:
        request = json.loads(line)
        reply: dict[str, Any]
        try:
            reply = {"outcome": OPERATIONS[request.pop("op")](request)}
        except Exception:  # the harness reports it; this process serves on
            reply = {"error": traceback.format_exc()}
        replies.write(json.dumps(reply) + "\n")
        replies.flush()


if __name__ == "__main__":
    main()
