"""The workloads of the report, run on one system at a time.

(a) enqueue from 1 and from 4 processes; (b) drain of queued no-op tasks by 2 worker
processes, and by 4 (more processes than the development machine's 2 cores), with the
CPU time the worker's main process (procpool_tasks: the supervisor) spends per task, and
of tasks that sleep 10 ms by 2 and by 4; (c) idle end-to-end latency; (d) worker memory,
RSS and PSS, idle and after many tasks; (e) growth: enqueue, claim and ``get_result`` with a history
of finished tasks, and start-up with many ready tasks; (f) recovery after SIGKILL of the
supervisor.

Each returns ``{workload key: Figure}``; a figure is the median of ``Sizes.repeats``
repeats, each on a fresh project unless the workload says otherwise.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import processes, projects
from .stats import Figure, percentile
from .systems import System

#: How long each task of the ``drain_sleep10`` workload sleeps.
SLEEP_TASK_MS = 10


@dataclass(frozen=True)
class Sizes:
    """How big each workload is: the issue's sizes, or tiny ones for ``--quick``."""

    repeats: int = 3
    processes: int = 2
    #: The second drain's worker processes (and bare pool's): more than 2 cores.
    many_processes: int = 4
    #: The physical limits: files created and appends, pool round trips, notifications.
    limit_files: int = 2_000
    limit_tasks: int = 5_000
    limit_notifications: int = 200
    enqueue_n: int = 2_000
    enqueue_clients: int = 4
    enqueue_per_client_n: int = 1_000
    drain_n: int = 2_000
    #: Tasks of the 10 ms drain: about 3 s of it at the ideal rate, processes / 10 ms.
    sleep_drain_n: int = 600
    #: Tasks of the 10 ms drain by ``many_processes``: about 3 s of it at the ideal rate.
    sleep_drain_4_n: int = 1_200
    latency_n: int = 200
    #: A round trip may take a poll interval (db_worker: 1 s, huey: up to 10 s); past
    #: this many seconds per system the latency figures use the round trips made so far.
    latency_budget_s: float = 20.0
    rss_warmup_n: int = 20
    rss_tasks_n: int = 10_000
    #: How long the workers idle before their memory is read, and how many reads.
    rss_settle_s: float = 1.0
    rss_samples: int = 3
    growth_levels: tuple[int, ...] = (0, 10_000, 100_000)
    growth_probe_n: int = 2_000
    #: How long the workers run on a freshly added history before it is measured.
    history_settle_s: float = 15.0
    startup_ready_n: int = 100_000
    #: Recovery slower than this is reported as "not recovered within ...". A quick run
    #: keeps it: on a loaded machine the restart alone (Python, Django) can take seconds.
    recovery_cap_s: float = 10.0
    #: Drains slower than this are cut short and reported as such.
    drain_cap_s: float = 300.0

    @classmethod
    def quick(cls) -> Sizes:
        return cls(
            repeats=1,
            limit_files=200,
            limit_tasks=200,
            limit_notifications=10,
            enqueue_n=100,
            enqueue_per_client_n=40,
            drain_n=50,
            sleep_drain_n=40,
            sleep_drain_4_n=80,
            latency_n=10,
            latency_budget_s=1.5,
            rss_warmup_n=5,
            rss_tasks_n=50,
            rss_settle_s=0.1,
            rss_samples=1,
            growth_levels=(0, 200),
            growth_probe_n=20,
            history_settle_s=0.5,
            startup_ready_n=500,
            drain_cap_s=30.0,
        )


@dataclass(frozen=True)
class Workload:
    key: str
    title: str
    unit: str
    higher_is_better: bool
    group: str


def workloads(sizes: Sizes) -> list[Workload]:
    """Every row of the report, in order; titles carry this run's sizes."""
    n, p = sizes.processes, f"{sizes.processes} processes"
    rows = [
        Workload("enqueue_1", "enqueue, 1 process", "tasks/s", True, "enqueue"),
        Workload(
            "enqueue_4",
            f"enqueue, {sizes.enqueue_clients} processes at once (total)",
            "tasks/s",
            True,
            "enqueue",
        ),
        Workload("drain", f"drain {sizes.drain_n:,} no-op tasks, {p}", "tasks/s", True, "drain"),
        Workload(
            "supervisor_cpu_us",
            f"supervisor CPU per task (worker's main process), that drain, {p}",
            "µs",
            False,
            "drain",
        ),
        Workload(
            "drain_4",
            f"drain {sizes.drain_n:,} no-op tasks, {sizes.many_processes} processes",
            "tasks/s",
            True,
            "drain_4",
        ),
        Workload(
            "supervisor_cpu_us_4",
            f"supervisor CPU per task (worker's main process), that drain, "
            f"{sizes.many_processes} processes",
            "µs",
            False,
            "drain_4",
        ),
        Workload(
            "drain_sleep10",
            f"drain {sizes.sleep_drain_n:,} tasks of {SLEEP_TASK_MS} ms, {p} "
            f"(ideal: {ideal_sleep_drain_rate(sizes):,.0f})",
            "tasks/s",
            True,
            "drain_sleep10",
        ),
        Workload(
            "drain_sleep10_4",
            f"drain {sizes.sleep_drain_4_n:,} tasks of {SLEEP_TASK_MS} ms, "
            f"{sizes.many_processes} processes "
            f"(ideal: {ideal_sleep_drain_rate(sizes, sizes.many_processes):,.0f})",
            "tasks/s",
            True,
            "drain_sleep10_4",
        ),
        Workload("latency_p50", "idle end-to-end latency p50", "ms", False, "latency"),
        Workload("latency_p99", "idle end-to-end latency p99", "ms", False, "latency"),
        Workload("rss_idle", f"worker RSS, {n} processes, idle", "MiB", False, "rss"),
        Workload("pss_idle", f"worker PSS, {n} processes, idle", "MiB", False, "rss"),
        Workload(
            "rss_after",
            f"worker RSS, {n} processes, after {sizes.rss_tasks_n:,} tasks",
            "MiB",
            False,
            "rss",
        ),
        Workload(
            "pss_after",
            f"worker PSS, {n} processes, after {sizes.rss_tasks_n:,} tasks",
            "MiB",
            False,
            "rss",
        ),
    ]
    for index, level in enumerate(sizes.growth_levels):
        history = f"with {level:,} finished"
        rows += [
            Workload(f"growth_enqueue_{index}", f"enqueue {history}", "µs", False, "growth"),
            Workload(
                f"growth_claim_{index}",
                f"claim+run per task {history} (drain of {sizes.growth_probe_n})",
                "ms",
                False,
                "growth",
            ),
            Workload(f"growth_get_result_{index}", f"get_result {history}", "µs", False, "growth"),
            Workload(
                f"growth_startup_{index}",
                f"worker start-up {history}",
                "s",
                False,
                "growth",
            ),
            Workload(
                f"growth_status_{index}",
                f"manage.py procpool_status --json {history}",
                "s",
                False,
                "growth",
            ),
            Workload(
                f"growth_status_page_{index}",
                f"status page GET {history}",
                "s",
                False,
                "growth",
            ),
        ]
    rows += [
        Workload("startup_1", "worker start-up with 1 ready task", "s", False, "startup"),
        Workload(
            "startup_ready",
            f"worker start-up with {sizes.startup_ready_n:,} ready tasks",
            "s",
            False,
            "startup",
        ),
        Workload("recovery", "recovery after SIGKILL of the supervisor", "s", False, "recovery"),
    ]
    return rows


GROUPS = (
    "enqueue",
    "drain",
    "drain_4",
    "drain_sleep10",
    "drain_sleep10_4",
    "latency",
    "rss",
    "growth",
    "startup",
    "recovery",
)


@dataclass
class Run:
    """What every workload needs: sizes, a place for projects, and progress reporting."""

    sizes: Sizes
    directory: Path
    say: Callable[[str], None] = print
    _count: int = field(default=0)

    @contextlib.contextmanager
    def project(self, system: System, name: str) -> Iterator[projects.Project]:
        """A fresh project of ``system``; its processes are stopped when the block ends."""
        self._count += 1
        directory = self.directory / system.key / f"{self._count:03d}-{name}"
        project = projects.Project.create(directory, system.settings(directory))
        try:
            system.prepare(project)
            yield project
        finally:
            project.close()

    def keys(self, group: str) -> list[str]:
        return [w.key for w in workloads(self.sizes) if w.group == group]


def measure(group: str, system: System, run: Run) -> dict[str, Figure]:
    """Run one group of workloads on one system; n/a figures where it does not apply."""
    if not system.has_worker and group != "enqueue":
        reason = "n/a: no queue and no worker; the task runs inside enqueue"
        return {key: Figure.unavailable(reason) for key in run.keys(group)}
    if system.results_unsupported and group != "enqueue":
        # Every other workload waits for the tasks' results through get_result.
        return {key: Figure.unavailable(system.results_unsupported) for key in run.keys(group)}
    if group == "recovery" and system.running_unseen:
        return {key: Figure.unavailable(system.running_unseen) for key in run.keys(group)}
    if group == "growth" and system.history_unsupported:
        return {key: Figure.unavailable(system.history_unsupported) for key in run.keys(group)}
    return MEASURES[group](system, run)


def ideal_sleep_drain_rate(sizes: Sizes, processes: int | None = None) -> float:
    """Tasks/s of the 10 ms drain if each process did nothing but sleep: processes / 10 ms
    (``processes``: ``Sizes.processes`` unless given)."""
    return (processes or sizes.processes) * 1000 / SLEEP_TASK_MS


def _workers(
    project: projects.Project, system: System, run: Run, *, count: int | None = None
) -> list[processes.Started]:
    """Start the system's workers for ``count`` processes (default: ``Sizes.processes``)."""
    return [
        project.start_django(*command, name="worker")
        for command in system.worker_commands(count or run.sizes.processes)
    ]


def _enqueue(project: projects.Project, n: int, ids_file: Path, **arguments: Any) -> Any:
    """Enqueue ``n`` tasks (no-op ones unless ``sleep_ms=``) from the project's client;
    their ids go to ``ids_file``."""
    return project.client().call("enqueue", n=n, ids_file=str(ids_file), **arguments)


def _wait(
    project: projects.Project, ids_file: Path, *, timeout: float, **arguments: Any
) -> dict[str, Any]:
    """Wait (in the client) for tasks; ClientError at once if a worker died meanwhile."""
    outcome: dict[str, Any] = project.client().call(
        "wait",
        ids_file=str(ids_file),
        timeout=timeout,
        check=project.check_alive,
        **arguments,
    )
    return outcome


# -- (a) enqueue ---------------------------------------------------------------------------


def measure_enqueue(system: System, run: Run) -> dict[str, Figure]:
    sizes = run.sizes
    single, parallel = [], []
    for repeat in range(sizes.repeats):
        with run.project(system, f"enqueue-{repeat}") as project:
            outcome = project.client().call("enqueue", n=sizes.enqueue_n)
        single.append(outcome["n"] / (outcome["end"] - outcome["start"]))
        with run.project(system, f"enqueue{sizes.enqueue_clients}-{repeat}") as project:
            clients = [project.new_client() for _ in range(sizes.enqueue_clients)]
            for client in clients:
                client.call("enqueue", n=0)  # set up and warmed up, idle on stdin
            for client in clients:  # all start within microseconds
                client.send("enqueue", n=sizes.enqueue_per_client_n, warmup=0)
            outcomes = [client.receive() for client in clients]
        total = sum(o["n"] for o in outcomes)
        span = max(o["end"] for o in outcomes) - min(o["start"] for o in outcomes)
        parallel.append(total / span)
    return {"enqueue_1": Figure.of(single), "enqueue_4": Figure.of(parallel)}


# -- (b) drain -----------------------------------------------------------------------------


def _drain(
    project: projects.Project,
    system: System,
    run: Run,
    ids_file: Path,
    *,
    cap_s: float,
    count: int | None = None,
    sample_cpu: bool = False,
) -> dict[str, Any]:
    """Start the workers (for ``count`` processes) on queued tasks and wait for them all.

    The rate counts from the first task seen finished to the last, so that no system's
    start-up is in it, whether or not its results say when a task started. With
    ``sample_cpu``, ``cpu_s`` is the CPU time the started processes themselves (not their
    children) spent over that same window, from readings every ``CPU_SAMPLE_S``.
    """
    launched = time.time()
    workers = _workers(project, system, run, count=count)
    try:
        with processes.CpuSampler([w.pid for w in workers] if sample_cpu else []) as sampler:
            outcome = _wait(project, ids_file, timeout=cap_s)
    finally:
        project.stop_workers()
    outcome["rate"] = (outcome["seen"] - 1) / max(outcome["end"] - outcome["first_end"], 1e-9)
    if sample_cpu:
        outcome["cpu_s"] = sampler.between(outcome["first_end"], outcome["end"])
        outcome["cpu_clock"] = sampler.source
        outcome["cpu_readings"] = sum(
            outcome["first_end"] <= when <= outcome["end"] for when, _ in sampler.samples
        )
    outcome["startup_s"] = (outcome["first_started"] or outcome["first_end"]) - launched
    return outcome


def _drain_rate(
    system: System,
    run: Run,
    key: str,
    *,
    n: int,
    count: int,
    sleep_ms: float | None = None,
    outcomes: list[dict[str, Any]] | None = None,
) -> Figure:
    """Tasks/s of a drain of ``n`` queued tasks (no-op, or sleeping ``sleep_ms``) by
    workers for ``count`` processes, each repeat on a fresh project. Given ``outcomes``,
    each repeat's outcome goes there, with the CPU time of the workers' main processes."""
    rates, notes = [], []
    for repeat in range(run.sizes.repeats):
        with run.project(system, f"{key}-{repeat}") as project:
            ids_file = project.path("drain.ids")
            _enqueue(project, n, ids_file, warmup=0, sleep_ms=sleep_ms)
            outcome = _drain(
                project,
                system,
                run,
                ids_file,
                cap_s=run.sizes.drain_cap_s,
                count=count,
                sample_cpu=outcomes is not None,
            )
        rates.append(outcome["rate"])
        if outcomes is not None:
            outcomes.append(outcome)
        if outcome["timed_out"]:
            notes.append(f"cut at {run.sizes.drain_cap_s:g} s: {_describe(outcome['statuses'])}")
            break
    return Figure.of(rates, note="; ".join(notes) or None)


def _cpu_per_task(system: System, outcomes: list[dict[str, Any]]) -> Figure:
    """µs of CPU the workers' main processes spent per task over the drains' windows
    (first task seen finished to the last, as the rate); the ceiling it implies,
    ``1 s / CPU per task``, in ``extra``. The note says which processes were measured."""
    if any(o["seen"] < 2 for o in outcomes):
        return Figure.unavailable("n/a: fewer than 2 tasks finished in the drain")
    cpu_us = [1e6 * o["cpu_s"] / (o["seen"] - 1) for o in outcomes]
    note = system.main_process
    if any(o["cpu_clock"] != "clock" for o in outcomes):
        note += " (read in clock ticks of /proc/PID/stat: 10 ms steps)"
    if any(o["timed_out"] for o in outcomes):
        note += "; the drain was cut short: over the tasks finished"
    figure = Figure.of(
        cpu_us,
        note=note,
        cpu_s=[o["cpu_s"] for o in outcomes],
        tasks=[o["seen"] - 1 for o in outcomes],
        window_s=[o["end"] - o["first_end"] for o in outcomes],
        cpu_readings=[o["cpu_readings"] for o in outcomes],
        cpu_clock=sorted({o["cpu_clock"] for o in outcomes}),
        sample_interval_s=processes.CPU_SAMPLE_S,
    )
    if figure.value:
        figure.extra["ceiling_tasks_s"] = 1e6 / figure.value
    return figure


def measure_drain(system: System, run: Run) -> dict[str, Figure]:
    sizes = run.sizes
    outcomes: list[dict[str, Any]] = []
    rate = _drain_rate(
        system, run, "drain", n=sizes.drain_n, count=sizes.processes, outcomes=outcomes
    )
    return {"drain": rate, "supervisor_cpu_us": _cpu_per_task(system, outcomes)}


def measure_drain_4(system: System, run: Run) -> dict[str, Figure]:
    """The same drain by workers for more processes than cores."""
    sizes = run.sizes
    outcomes: list[dict[str, Any]] = []
    rate = _drain_rate(
        system, run, "drain4", n=sizes.drain_n, count=sizes.many_processes, outcomes=outcomes
    )
    return {"drain_4": rate, "supervisor_cpu_us_4": _cpu_per_task(system, outcomes)}


def _sleep_drain(system: System, run: Run, key: str, *, n: int, count: int) -> Figure:
    """A drain of tasks that sleep 10 ms; the JSON keeps its share of the ideal rate."""
    figure = _drain_rate(system, run, key, n=n, count=count, sleep_ms=SLEEP_TASK_MS)
    if figure.value is not None:
        figure.extra["of_ideal"] = figure.value / ideal_sleep_drain_rate(run.sizes, count)
    return figure


def measure_drain_sleep10(system: System, run: Run) -> dict[str, Figure]:
    """Tasks of 10 ms drained by workers for ``Sizes.processes``."""
    sizes = run.sizes
    return {
        "drain_sleep10": _sleep_drain(
            system, run, "sleep10", n=sizes.sleep_drain_n, count=sizes.processes
        )
    }


def measure_drain_sleep10_4(system: System, run: Run) -> dict[str, Figure]:
    """Tasks of 10 ms drained by workers for ``Sizes.many_processes``."""
    sizes = run.sizes
    return {
        "drain_sleep10_4": _sleep_drain(
            system, run, "sleep10-4", n=sizes.sleep_drain_4_n, count=sizes.many_processes
        )
    }


# -- (c) latency ---------------------------------------------------------------------------


def measure_latency(system: System, run: Run) -> dict[str, Figure]:
    """Round trips one at a time on idle workers; one project, a client per repeat."""
    p50, p99, counts = [], [], []
    budget = run.sizes.latency_budget_s / run.sizes.repeats
    with run.project(system, "latency") as project:
        _workers(project, system, run)
        for _ in range(run.sizes.repeats):
            outcome = project.client().call(
                "latency", n=run.sizes.latency_n, budget_s=budget, check=project.check_alive
            )
            latencies = [1000 * s for s in outcome["latencies_s"]]
            p50.append(percentile(latencies, 50))
            p99.append(percentile(latencies, 99))
            counts.append(len(latencies))
    note = None
    if min(counts) < run.sizes.latency_n:
        note = f"{min(counts)} round trips per repeat (time budget {budget:.1f} s)"
    return {
        "latency_p50": Figure.of(p50, note=note, round_trips=counts),
        "latency_p99": Figure.of(p99, note=note, round_trips=counts),
    }


# -- (d) RSS and PSS -----------------------------------------------------------------------


def _sample_memory(started: list[processes.Started], sizes: Sizes) -> list[processes.TreeMemory]:
    time.sleep(sizes.rss_settle_s)  # let the workers settle into idle
    found = []
    for _ in range(sizes.rss_samples):
        found.append(processes.tree_memory(s.pid for s in started))
        time.sleep(sizes.rss_settle_s / 3)
    return found


def measure_rss(system: System, run: Run) -> dict[str, Figure]:
    """The workers' process tree, idle after a warm-up and again after many tasks: RSS,
    and PSS from the same samples."""
    sizes = run.sizes
    with run.project(system, "rss") as project:
        workers = _workers(project, system, run)
        warmup = project.path("warmup.ids")
        _enqueue(project, sizes.rss_warmup_n, warmup, warmup=0)
        _wait(project, warmup, timeout=120)
        idle = _sample_memory(workers, sizes)
        many = project.path("many.ids")
        _enqueue(project, sizes.rss_tasks_n, many, warmup=0)
        outcome = _wait(project, many, timeout=max(600, sizes.rss_tasks_n / 5))
        after = _sample_memory(workers, sizes)

    figures: dict[str, Figure] = {}
    for kind in ("rss", "pss"):
        then, now = _mib(idle, kind), _mib(after, kind)
        if then is None or now is None:
            unreadable = next(m.pss_unreadable for m in [*idle, *after] if m.pss_unreadable)
            figures[f"{kind}_idle"] = figures[f"{kind}_after"] = Figure.unavailable(unreadable)
            continue
        note = f"{100 * (now[-1] / then[-1] - 1):+.0f}% vs idle; {after[-1].processes} processes"
        if outcome["timed_out"]:
            note += f"; not all finished: {_describe(outcome['statuses'])}"
        figures[f"{kind}_idle"] = Figure.of(
            then, note=f"{idle[-1].processes} processes", processes=[m.processes for m in idle]
        )
        figures[f"{kind}_after"] = Figure.of(now, note=note, processes=[m.processes for m in after])
    return figures


def _mib(samples: list[processes.TreeMemory], kind: str) -> list[float] | None:
    """The RSS or PSS (``kind``) of each sample in MiB; None if a PSS could not be read."""
    found = [m.rss_mib if kind == "rss" else m.pss_mib for m in samples]
    return None if None in found else [value or 0.0 for value in found]


# -- (e) growth and start-up ---------------------------------------------------------------


def measure_growth(system: System, run: Run) -> dict[str, Figure]:
    """At each level of history: enqueue, drain (claim) and read back a probe of tasks.

    Once a level's history is added, the workers run for ``history_settle_s`` first, as
    they would have while it accumulated (procpool_tasks marks finished segments done
    then, and skips them at later starts); how long that first start took is a note.
    """
    sizes = run.sizes
    figures: dict[str, Figure] = {}
    with run.project(system, "growth") as project:
        history = 0
        for index, level in enumerate(sizes.growth_levels):
            first_start = None
            if level > history:
                project.call_once("synthesize", count=level - history, finished=True)
                history = level
                settle = project.path(f"settle-{index}.ids")
                _enqueue(project, 1, settle, warmup=0)
                first_start = _startup(project, system, run, settle, run_s=sizes.history_settle_s)
                history += 1
            enqueue, claim, get_result, startup = [], [], [], []
            for repeat in range(sizes.repeats):
                ids_file = project.path(f"probe-{index}-{repeat}.ids")
                outcome = _enqueue(project, sizes.growth_probe_n, ids_file)
                enqueue.append(1e6 * (outcome["end"] - outcome["start"]) / outcome["n"])
                drained = _drain(project, system, run, ids_file, cap_s=sizes.drain_cap_s)
                claim.append(1000 / drained["rate"])
                startup.append(drained["startup_s"])
                outcome = project.client().call(
                    "get_result", ids_file=str(ids_file), n=sizes.growth_probe_n
                )
                get_result.append(1e6 * outcome["seconds"] / outcome["n"])
                history += sizes.growth_probe_n + 3  # and the warm-up enqueues
            figures[f"growth_status_{index}"] = _status_time(project, system, sizes.repeats)
            figures[f"growth_status_page_{index}"] = _status_page_time(
                project, system, sizes.repeats
            )
            figures[f"growth_enqueue_{index}"] = Figure.of(enqueue)
            figures[f"growth_claim_{index}"] = Figure.of(claim)
            figures[f"growth_get_result_{index}"] = Figure.of(get_result)
            first = f"the first start after the history was added: {first_start or 0:.2f} s"
            figures[f"growth_startup_{index}"] = Figure.of(
                startup, note=first if first_start else None, first_start_s=first_start
            )
    return figures


def _status_time(project: projects.Project, system: System, repeats: int) -> Figure:
    """Wall-clock seconds of ``manage.py procpool_status --json``, as an operator runs it:
    the interpreter and Django's start-up included, after a first call."""
    if system.kind != "procpool":
        return Figure.unavailable("n/a: no status command")
    project.manage("procpool_status", "--json")  # a summary the workers left may be behind
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        project.manage("procpool_status", "--json")
        seconds.append(time.perf_counter() - start)
    return Figure.of(seconds)


def _status_page_time(project: projects.Project, system: System, repeats: int) -> Figure:
    """Seconds to render the status page in a web process (the client, Django set up):
    what each of its refreshes costs, after a first GET."""
    if system.kind != "procpool":
        return Figure.unavailable("n/a: no status page")
    outcome = project.client().call("status_page", repeats=repeats)
    return Figure.of(outcome["seconds"], page_bytes=outcome["bytes"])


def _startup(
    project: projects.Project, system: System, run: Run, ids_file: Path, *, run_s: float = 0
) -> float:
    """Seconds from launching the workers to the task of ``ids_file`` starting; they are
    stopped ``run_s`` after that."""
    launched = time.time()
    _workers(project, system, run)
    try:
        outcome = _wait(project, ids_file, until="started", timeout=300, poll_s=0.002)
        time.sleep(run_s)
    finally:
        project.stop_workers()
    # RQ's results carry no started_at: then when the client saw it start (2 ms polls).
    return float(outcome["first_started"] or outcome["end"]) - launched


def measure_startup(system: System, run: Run) -> dict[str, Figure]:
    """Start-up with one ready task (every system), and with many (where they can be
    made without running them); both to the first task starting."""
    sizes = run.sizes
    single, ready = [], []
    for repeat in range(sizes.repeats):
        with run.project(system, f"startup1-{repeat}") as project:
            ids_file = project.path("one.ids")
            _enqueue(project, 1, ids_file, warmup=0)
            single.append(_startup(project, system, run, ids_file))
    figures = {"startup_1": Figure.of(single)}
    if system.history_unsupported:
        figures["startup_ready"] = Figure.unavailable(system.history_unsupported)
        return figures
    # One store of ready tasks for every repeat: each start runs only a few of them. The
    # task waited for is enqueued last with a higher priority: it runs first once the
    # worker has taken in every ready task.
    with run.project(system, "startup-ready") as project:
        project.call_once("synthesize", count=sizes.startup_ready_n, finished=False)
        for repeat in range(sizes.repeats):
            ids_file = project.path(f"marker-{repeat}.ids")
            _enqueue(project, 1, ids_file, warmup=0, priority=10)
            ready.append(_startup(project, system, run, ids_file))
    figures["startup_ready"] = Figure.of(ready)
    return figures


# -- (f) recovery --------------------------------------------------------------------------


def measure_recovery(system: System, run: Run) -> dict[str, Figure]:
    """SIGKILL the supervisor(s) while every process runs a task; restart at once.

    The figure counts from the restart (the issue's target: "within 2 s of a restart");
    the time from the kill is kept in the JSON.
    """
    sizes = run.sizes
    from_restart: list[float] = []
    from_kill: list[float] = []
    for repeat in range(sizes.repeats):
        with run.project(system, f"recovery-{repeat}") as project:
            ids_file = project.path("interrupted.ids")
            killed = _kill_while_running(project, system, run, ids_file)
            restarted = time.time()
            _workers(project, system, run)
            outcome = _wait(project, ids_file, timeout=sizes.recovery_cap_s)
            if outcome["timed_out"] or set(outcome["statuses"]) - {"SUCCESSFUL"}:
                project.stop_workers()
                statuses = project.client().call("statuses", ids_file=str(ids_file))
                return {
                    "recovery": Figure.unavailable(
                        f"not recovered within {sizes.recovery_cap_s:g} s of the restart "
                        f"(interrupted tasks: {_describe(statuses['statuses'])})"
                        + (f"; {system.on_interrupt}" if system.on_interrupt else "")
                    )
                }
        from_restart.append(outcome["end"] - restarted)
        from_kill.append(outcome["end"] - killed)
    return {"recovery": Figure.of(from_restart, from_kill_s=from_kill)}


def _kill_while_running(
    project: projects.Project, system: System, run: Run, ids_file: Path
) -> float:
    """Start the workers, give each process a long task, SIGKILL the supervisor(s) once
    they run; return when they were killed."""
    workers = _workers(project, system, run)
    project.client().call("enqueue_interruptible", n=run.sizes.processes, ids_file=str(ids_file))
    running = _wait(project, ids_file, until="running", timeout=120)
    if running["timed_out"]:
        raise RuntimeError(f"the interruptible tasks never ran: {running['statuses']}")
    for worker in workers:
        worker.killed = True
        os.kill(worker.pid, signal.SIGKILL)
    killed = time.time()
    for worker in workers:
        # Still in project.started: what it left behind (a forkserver and its pool, a
        # consumer's children) is stopped with its session by stop_workers().
        worker.process.wait()
    return killed


def _describe(statuses: dict[str, int]) -> str:
    return ", ".join(f"{count} {status}" for status, count in sorted(statuses.items()))


MEASURES: dict[str, Callable[[System, Run], dict[str, Figure]]] = {
    "enqueue": measure_enqueue,
    "drain": measure_drain,
    "drain_4": measure_drain_4,
    "drain_sleep10": measure_drain_sleep10,
    "drain_sleep10_4": measure_drain_sleep10_4,
    "latency": measure_latency,
    "rss": measure_rss,
    "growth": measure_growth,
    "startup": measure_startup,
    "recovery": measure_recovery,
}

__all__ = [
    "GROUPS",
    "SLEEP_TASK_MS",
    "Run",
    "Sizes",
    "Workload",
    "ideal_sleep_drain_rate",
    "measure",
    "workloads",
]
