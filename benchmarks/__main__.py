"""``python -m benchmarks``: run every workload on every system and report side by side.

Progress goes to stderr, the Markdown report to stdout, the raw figures to a JSON file
and a chart to a PNG next to it (with matplotlib, from the ``bench`` extra).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import dataclasses
import shlex
import shutil
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Iterator
from pathlib import Path

from . import compare, limits, machine, report, systems, workloads
from .stats import Figure

RESULTS = Path(__file__).resolve().parent / "results"
#: A full run's results are the ones docs/benchmarks.json keeps; a quick run's go beside them.
DEFAULT_JSON = RESULTS / "latest.json"
QUICK_JSON = RESULTS / "quick.json"
#: Systems measured at once in a quick run: its figures are not for comparing anyway.
QUICK_JOBS = 3
#: Which systems take longest (db_worker polls once a second, RQ forks per task).
SLOWNESS = {"db": 3, "rq": 2, "huey-sqlite": 1, "huey-file": 1}


class Progress:
    """One line per step on stderr: how far the run is, how long it has taken."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.done = 0
        self.started = time.monotonic()
        self._lock = threading.Lock()  # systems may run in threads (--jobs)

    def elapsed(self) -> str:
        seconds = int(time.monotonic() - self.started)
        return f"{seconds // 60}:{seconds % 60:02d}"

    def say(self, text: str) -> None:
        print(f"  [{self.elapsed()}] {text}", file=sys.stderr, flush=True)

    @contextlib.contextmanager
    def step(self, text: str) -> Iterator[None]:
        with self._lock:
            self.done += 1
            done = self.done
        print(f"[{done}/{self.total} {self.elapsed()}] {text} ...", file=sys.stderr, flush=True)
        started = time.monotonic()
        yield
        self.say(f"{text}: {time.monotonic() - started:.1f} s")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Benchmark procpool_tasks against django-tasks-db, huey, RQ and the "
        "ImmediateBackend on this machine; print a Markdown report.",
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one repeat: seconds")
    parser.add_argument(
        "--json",
        type=Path,
        help=f"where to write the raw results, the report (.md) and the chart (.png) going "
        f"beside it (default: {DEFAULT_JSON}; --quick: {QUICK_JSON.name} beside it)",
    )
    parser.add_argument(
        "--png", type=Path, help="where to write the chart (default: beside --json)"
    )
    parser.add_argument("--repeats", type=int, help="repeats per figure (default: 3; --quick: 1)")
    parser.add_argument(
        "--jobs",
        type=int,
        help="systems measured at once (default: 1, so that they do not disturb each "
        f"other's figures; --quick: {QUICK_JOBS})",
    )
    parser.add_argument(
        "--systems",
        help="comma-separated system keys to run (default: all): "
        + ", ".join(s.key for s in systems.all_systems()),
    )
    parser.add_argument(
        "--workloads",
        help="comma-separated workload groups to run (default: all): "
        + ", ".join(workloads.GROUPS),
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        help="where the throwaway projects go, on the disk to measure (default: a temp dir)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the projects and their logs")
    parser.add_argument(
        "--compare",
        type=Path,
        metavar="THEN.json",
        help="measure nothing: compare the results at --json (default as above) with those "
        "of an earlier run, e.g. docs/benchmarks.json; print each system's ratio to "
        "procpool_tasks (durable) then and now, and whether it moved more than "
        f"{compare.MOVED * 100:.0f}%%",  # argparse formats help with %
    )
    options = parser.parse_args(argv)
    if options.compare:
        for path in (options.compare, _json_path(options)):
            if not path.is_file():
                parser.error(
                    f"--compare: {path} is no results file; run python -m benchmarks first "
                    "or give --json the run to compare"
                )
    return options


def _json_path(options: argparse.Namespace) -> Path:
    path: Path = options.json or (QUICK_JSON if options.quick else DEFAULT_JSON)
    return path


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    if options.compare:
        print(compare.markdown(_json_path(options), options.compare), end="")
        return 0
    sizes = workloads.Sizes.quick() if options.quick else workloads.Sizes()
    if options.repeats:
        sizes = dataclasses.replace(sizes, repeats=options.repeats)
    jobs = options.jobs or (QUICK_JOBS if options.quick else 1)
    chosen = systems.all_systems()
    if options.systems:
        keys = {key.strip() for key in options.systems.split(",")}
        chosen = [s for s in chosen if s.key in keys or s.key == systems.REFERENCE]
    groups: tuple[str, ...] = workloads.GROUPS
    if options.workloads:
        wanted = {group.strip() for group in options.workloads.split(",")}
        groups = tuple(g for g in workloads.GROUPS if g in wanted)
    json_path = _json_path(options)
    workdir = Path(tempfile.mkdtemp(prefix="procpool-bench-", dir=options.workdir))
    progress = Progress(total=1 + len(chosen) * len(groups))
    run = workloads.Run(sizes=sizes, directory=workdir, say=progress.say)
    started = time.monotonic()
    print(
        f"Benchmarking in {workdir} ({'quick' if options.quick else 'full'} run, "
        f"{sizes.repeats} repeat(s), {jobs} system(s) at a time)",
        file=sys.stderr,
    )
    try:
        with progress.step("physical limits"):
            found_limits = limits.measure_limits(workdir, sizes=sizes, say=progress.say)
        figures = _run_systems(chosen, groups, run, progress, jobs=jobs)
    finally:
        if options.keep:
            print(f"Kept the projects in {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    results = report.Results(
        sizes=sizes,
        systems=chosen,
        figures=figures,
        limits=found_limits,
        machine=machine.describe(workdir, chosen),
        command=" ".join(["python -m benchmarks", *map(shlex.quote, argv or sys.argv[1:])]),
        quick=options.quick,
        jobs=jobs,
        duration_s=time.monotonic() - started,
    )
    text = report.markdown(results)
    report.write_json(results, json_path)
    json_path.with_suffix(".md").write_text(text)
    png = options.png or json_path.with_suffix(".png")
    why_not = report.write_png(results, png)
    print(text)
    print(f"JSON: {json_path}, Markdown: {json_path.with_suffix('.md')}", file=sys.stderr)
    print(why_not or f"PNG: {png}", file=sys.stderr)
    return 0


def _run_systems(
    chosen: list[systems.System],
    groups: tuple[str, ...],
    run: workloads.Run,
    progress: Progress,
    *,
    jobs: int,
) -> dict[str, dict[str, Figure]]:
    """Every system, one after the other, or ``jobs`` at a time (each in a thread that
    mostly waits on its subprocesses): workload key -> system key -> figure."""
    figures: dict[str, dict[str, Figure]] = {}
    if jobs <= 1:
        for system in chosen:
            _run_system(system, groups, run, progress, figures)
        return figures
    with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
        # The slowest go first, or they would end the run last.
        slowest_first = sorted(chosen, key=lambda s: -SLOWNESS.get(s.key, 0))
        futures = [
            pool.submit(_run_system, system, groups, run, progress, figures)
            for system in slowest_first
        ]
        for future in futures:
            future.result()
    return figures


def _run_system(
    system: systems.System,
    groups: tuple[str, ...],
    run: workloads.Run,
    progress: Progress,
    figures: dict[str, dict[str, Figure]],
) -> None:
    """Every workload group on one system; a missing or failing one gets its reason."""
    missing = system.missing()
    if missing is None:
        try:
            system.start_service(run.directory / system.key)
        except (OSError, RuntimeError) as error:
            missing = f"error: cannot start its service: {error}"
    try:
        for group in groups:
            with progress.step(f"{group} · {system.label}"):
                if missing:
                    found = {key: Figure.unavailable(missing) for key in run.keys(group)}
                else:
                    found = _measure_group(group, system, run, progress)
                for key, figure in found.items():
                    figures.setdefault(key, {})[system.key] = figure
                progress.say(_summary(found))
    finally:
        system.stop_service()


def _measure_group(
    group: str, system: systems.System, run: workloads.Run, progress: Progress
) -> dict[str, Figure]:
    """One group of workloads; an error becomes the reason of its figures."""
    try:
        return workloads.measure(group, system, run)
    except Exception as error:  # one system's failure must not end the run
        progress.say("FAILED:\n" + "".join(traceback.format_exception(error)).rstrip())
        lines = str(error).strip().splitlines()
        reason = f"error: {type(error).__name__}: {lines[-1] if lines else ''}"
        return {key: Figure.unavailable(reason) for key in run.keys(group)}


def _summary(found: dict[str, Figure]) -> str:
    values = [f"{key}={report.number(f.value)}" for key, f in found.items() if f.value is not None]
    reasons = sorted({(f.missing or "no value")[:90] for f in found.values() if f.value is None})
    return ", ".join([*values, *reasons])


if __name__ == "__main__":
    raise SystemExit(main())
