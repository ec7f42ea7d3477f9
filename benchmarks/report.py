"""The results of a run as Markdown (stdout), JSON (raw figures) and a PNG chart.

Three tables with a row per system and a column per workload, each cell the median of
the repeats, its spread and its ratio to procpool_tasks (durable); then the physical
limits and the issue's targets, each met or not with the ratio that decides it.
"""

from __future__ import annotations

import importlib
import json
import string
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .limits import LIMITS
from .stats import Figure
from .systems import REFERENCE, System
from .workloads import SLEEP_TASK_MS, Sizes, Workload, ideal_sleep_drain_rate, workloads

TABLES = (
    ("Throughput and latency", ("enqueue", "drain", "drain_4", "drain_sleep10", "latency")),
    ("Memory, start-up and recovery", ("rss", "startup", "recovery")),
    ("Growth with a history of finished tasks", ("growth",)),
)


@dataclass
class Results:
    """Everything a run measured, and what it ran on."""

    sizes: Sizes
    systems: list[System]
    figures: dict[str, dict[str, Figure]]  # workload key -> system key -> figure
    limits: dict[str, Figure]
    machine: dict[str, Any]
    command: str
    quick: bool
    #: Systems measured at once (1 unless asked, or quick).
    jobs: int = 1
    duration_s: float = 0.0

    def figure(self, workload: str, system: str) -> Figure:
        return self.figures.get(workload, {}).get(system) or Figure.unavailable("not run")

    def value(self, workload: str, system: str) -> float | None:
        return self.figure(workload, system).value


# -- numbers ---------------------------------------------------------------------------------


def number(value: float) -> str:
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:,.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def ratio(value: float | None, reference: float | None) -> str:
    if value is None or not reference:
        return ""
    return f"×{value / reference:.2f}" if value / reference < 100 else f"×{value / reference:,.0f}"


def cell(figure: Figure, reference: Figure | None) -> str:
    if figure.value is None:
        return "n/a"
    text = number(figure.value)
    spread = figure.spread_pct()
    if spread is not None:
        text += f" ±{spread:.0f}%"
    if reference is not None and reference is not figure and reference.value:
        text += f" ({ratio(figure.value, reference.value)})"
    return text


# -- targets ---------------------------------------------------------------------------------


@dataclass
class Target:
    text: str
    #: The figure that decides it, as a ratio or an absolute value with unit; None if unknown.
    measured: str
    met: bool | None


def targets(results: Results) -> list[Target]:
    """The issue's targets, each decided by figures of this run."""
    v, lim = results.value, results.limits
    pp, fast = REFERENCE, "procpool-nondurable"
    found: list[Target] = []

    def at_least(text: str, a: float | None, b: float | None, minimum: float) -> None:
        if a is None or not b:
            found.append(Target(text, "not measured", None))
        else:
            found.append(Target(text, f"×{a / b:.2f}", a / b >= minimum))

    def at_most_ratio(text: str, a: float | None, b: float | None, maximum: float) -> None:
        if a is None or not b:
            found.append(Target(text, "not measured", None))
        else:
            found.append(Target(text, f"×{a / b:.2f}", a / b <= maximum))

    def at_most(text: str, value: float | None, maximum: float, unit: str) -> None:
        if value is None:
            found.append(Target(text, "not measured", None))
        else:
            found.append(Target(text, f"{number(value)} {unit}", value <= maximum))

    at_least(
        "durable enqueue, 1 process >= 2x django-tasks-db",
        v("enqueue_1", pp),
        v("enqueue_1", "db"),
        2,
    )
    at_least(
        "durable enqueue, 1 process >= 50% of the durable append",
        v("enqueue_1", pp),
        lim["durable_append"].value if "durable_append" in lim else None,
        0.5,
    )
    at_least(
        "enqueue from 4 processes grows over 1 process (total)",
        v("enqueue_4", pp),
        v("enqueue_1", pp),
        1,
    )
    at_least('"durable": False enqueue >= RQ', v("enqueue_1", fast), v("enqueue_1", "rq"), 1)
    at_least("drain >= 10x django-tasks-db", v("drain", pp), v("drain", "db"), 10)
    for peer, name in (
        ("huey-sqlite", "huey (SqliteHuey)"),
        ("huey-file", "huey (FileHuey)"),
        ("rq", "RQ"),
    ):
        at_least(f"drain >= {name}", v("drain", pp), v("drain", peer), 1)
    at_least(
        "drain >= 40% of the bare pool round trip",
        v("drain", pp),
        lim["pool_round_trip"].value if "pool_round_trip" in lim else None,
        0.4,
    )
    at_least(
        f"drain with {results.sizes.many_processes} processes >= 40% of the bare "
        f"{results.sizes.many_processes}-process pool round trip",
        v("drain_4", pp),
        lim["pool_round_trip_4"].value if "pool_round_trip_4" in lim else None,
        0.4,
    )
    ideal = ideal_sleep_drain_rate(results.sizes)
    at_least(
        f"drain of {SLEEP_TASK_MS} ms tasks >= 90% of the ideal {results.sizes.processes} "
        f"processes / {SLEEP_TASK_MS} ms ({ideal:,.0f} tasks/s)",
        v("drain_sleep10", pp),
        ideal,
        0.9,
    )
    at_most("idle latency p50 <= 5 ms", v("latency_p50", pp), 5, "ms")
    at_most("idle latency p99 <= 50 ms", v("latency_p99", pp), 50, "ms")
    rss = v("rss_idle", pp)
    at_most_ratio("worker RSS <= 1.5x huey's consumer", rss, v("rss_idle", "huey-sqlite"), 1.5)
    for key, when in (("pss_idle", "idle"), ("pss_after", "after many tasks")):
        at_most_ratio(
            f"worker PSS, {when}, <= 1.2x django-tasks-db's, both with "
            f"{results.sizes.processes} processes",
            v(key, pp),
            v(key, "db"),
            1.2,
        )
    after = v("rss_after", pp)
    if rss is None or after is None:
        found.append(Target("worker RSS flat (within 10%) after many tasks", "not measured", None))
    else:
        found.append(
            Target(
                "worker RSS flat (within 10%) after many tasks",
                f"{100 * (after / rss - 1):+.1f}%",
                abs(after / rss - 1) <= 0.10,
            )
        )
    last = len(results.sizes.growth_levels) - 1
    for what in ("enqueue", "claim", "get_result"):
        base, grown = v(f"growth_{what}_0", pp), v(f"growth_{what}_{last}", pp)
        text = f"{what} with {results.sizes.growth_levels[-1]:,} finished within 1.25x of empty"
        if base is None or grown is None:
            found.append(Target(text, "not measured", None))
        else:
            found.append(Target(text, f"×{grown / base:.2f}", grown / base <= 1.25))
    at_most(
        f"procpool_status --json with {results.sizes.growth_levels[-1]:,} finished < 1 s",
        v(f"growth_status_{last}", pp),
        1,
        "s",
    )
    at_most(
        f"status page with {results.sizes.growth_levels[-1]:,} finished < 1 s",
        v(f"growth_status_page_{last}", pp),
        1,
        "s",
    )
    at_most(
        f"start-up with {results.sizes.startup_ready_n:,} ready tasks < 5 s",
        v("startup_ready", pp),
        5,
        "s",
    )
    at_most("recovery after SIGKILL <= 2 s", v("recovery", pp), 2, "s")
    return found


# -- Markdown --------------------------------------------------------------------------------


def markdown(results: Results) -> str:
    """The report of a run, the targets of the issue included."""
    return markdown_of_json(to_json(results))


def markdown_of_json(data: dict[str, Any], *, with_targets: bool = True) -> str:
    """The report of a run's results JSON (``to_json``, a file ``write_json`` wrote).

    The documentation renders ``docs/benchmarks.json`` with this, ``with_targets=False``:
    the figures and the method, not the targets an issue once set.
    """
    sizes = data["sizes"]
    m = data["machine"]
    labels = {system["key"]: system["label"] for system in data["systems"]}
    out = [
        "## Benchmarks: procpool_tasks beside its peers",
        "",
        f"Machine: {m.get('cpu', '?')}, {m.get('cores', '?')} cores, "
        f"{m.get('memory_gib', '?')} GiB, disk {m.get('disk', '?')}; "
        f"Python {m.get('python', '?')}, Django {m.get('django', '?')}. "
        f"Command: `{data['command']}`"
        + (" (**quick**: tiny sizes, not for comparing)" if data["quick"] else "")
        + (f"; {data['jobs']} systems measured at once" if data["jobs"] > 1 else "")
        + f"; {data['duration_s'] / 60:.1f} min.",
        "",
        f"Each cell: the median of {sizes['repeats']} repeat(s) (RSS and PSS: of "
        f"{sizes['rss_samples']} sample(s)), ± half "
        "the range of the repeats as a percentage of the median, and in brackets the ratio "
        f"to {labels.get(REFERENCE, REFERENCE)}. Units are in the column heads.",
        "",
        "| system | version | an acknowledged enqueue survives |",
        "|---|---|---|",
    ]
    for system in data["systems"]:
        status = m.get("versions", {}).get(system["key"], "")
        out.append(f"| {system['label']} | {status} | {system['durability']} |")
    notes = _Footnotes()
    for title, groups in TABLES:
        columns = [w for w in data["workloads"] if w["group"] in groups]
        out += ["", f"### {title}", ""]
        out += _table(data, columns, notes)
    if notes:
        out += ["", *notes.lines()]
    out += [
        "",
        "### Physical limits on this machine",
        "",
        "| limit | median | spread | n |",
        "|---|---|---|---|",
    ]
    for limit in LIMITS:
        found = data["limits"].get(limit.key)
        figure = _figure(found) if found else Figure.unavailable("not run")
        spread = figure.spread
        value = number(figure.value) if figure.value is not None else "n/a"
        low_high = f"{number(spread[0])}–{number(spread[1])}" if spread else ""
        out.append(
            f"| {limit.title} ({limit.unit}) | {value} | {low_high} | {len(figure.samples)} |"
        )
    if with_targets:
        out += ["", "### Targets of the issue", "", "| target | measured | met |", "|---|---|---|"]
        for target in data["targets"]:
            met = "n/a" if target["met"] is None else ("yes" if target["met"] else "**no**")
            out.append(f"| {target['text']} | {target['measured']} | {met} |")
    return "\n".join(out) + "\n"


def _figure(data: dict[str, Any]) -> Figure:
    """A figure as ``Figure.to_json`` wrote it."""
    return Figure(
        samples=list(data["samples"]),
        missing=data["missing"],
        note=data["note"],
        extra=dict(data.get("extra") or {}),
    )


class _Footnotes:
    """Long texts (why n/a, a cap reached) as lettered notes under the tables."""

    def __init__(self) -> None:
        self._texts: dict[str, str] = {}

    def mark(self, text: str) -> str:
        if text not in self._texts:
            index = len(self._texts)
            letters = string.ascii_lowercase
            self._texts[text] = letters[index % 26] * (index // 26 + 1)
        return f"<sup>{self._texts[text]}</sup>"

    def __bool__(self) -> bool:
        return bool(self._texts)

    def lines(self) -> list[str]:
        return [f"<sup>{mark}</sup> {text}  " for text, mark in self._texts.items()]


def _table(data: dict[str, Any], columns: Sequence[dict[str, Any]], notes: _Footnotes) -> list[str]:
    head = [
        "system",
        *(f"{w['title']} ({w['unit']}, {'↑' if w['higher_is_better'] else '↓'})" for w in columns),
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    not_run: dict[str, Any] = {"samples": [], "missing": "not run", "note": None}
    for system in data["systems"]:
        cells = [system["label"]]
        for workload in columns:
            by_system = data["figures"].get(workload["key"], {})
            figure = _figure(by_system.get(system["key"]) or not_run)
            reference = _figure(by_system.get(REFERENCE) or not_run)
            # The reference's own row has no ratio.
            measured = reference.value is not None and system["key"] != REFERENCE
            text = cell(figure, reference if measured else None)
            if figure.missing:
                text += notes.mark(figure.missing)
            elif figure.note:
                text += notes.mark(figure.note)
            cells.append(text)
        lines.append("| " + " | ".join(cells) + " |")
    return lines


# -- JSON ------------------------------------------------------------------------------------


def to_json(results: Results) -> dict[str, Any]:
    return {
        "command": results.command,
        "quick": results.quick,
        "jobs": results.jobs,
        "duration_s": results.duration_s,
        "machine": results.machine,
        "sizes": asdict(results.sizes),
        "systems": [
            {"key": s.key, "label": s.label, "durability": s.durability} for s in results.systems
        ],
        "workloads": [asdict(w) for w in workloads(results.sizes)],
        "figures": {
            workload: {system: figure.to_json() for system, figure in by_system.items()}
            for workload, by_system in results.figures.items()
        },
        "limits": {
            limit.key: {
                **asdict(limit),
                **(results.limits.get(limit.key) or Figure.unavailable("not run")).to_json(),
            }
            for limit in LIMITS
        },
        "targets": [asdict(t) for t in targets(results)],
    }


def write_json(results: Results, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(to_json(results), indent=2, ensure_ascii=False) + "\n")


# -- PNG -------------------------------------------------------------------------------------


def write_png(results: Results, path: Path) -> str | None:
    """Bars per workload, one per system (log scale); the reason if there is no chart."""
    try:
        # Optional (the bench extra), absent where the harness is type-checked: Any.
        matplotlib = importlib.import_module("matplotlib")
        matplotlib.use("Agg")
        plt = importlib.import_module("matplotlib.pyplot")
    except ImportError:
        return "no chart: matplotlib is not installed (pip install -e '.[bench]')"
    rows = workloads(results.sizes)
    columns = 4
    lines = (len(rows) + columns - 1) // columns
    figure, axes = plt.subplots(lines, columns, figsize=(4.2 * columns, 2.9 * lines))
    colours = plt.get_cmap("tab10").colors
    for ax, workload in zip(axes.flat, rows, strict=False):
        _bars(ax, results, workload, colours)
    for ax in list(axes.flat)[len(rows) :]:
        ax.axis("off")
    handles = [
        plt.Rectangle((0, 0), 1, 1, color=colours[i % len(colours)])
        for i in range(len(results.systems))
    ]
    figure.legend(
        handles, [s.label for s in results.systems], loc="lower center", ncol=4, fontsize=9
    )
    m = results.machine
    figure.suptitle(
        f"procpool_tasks and its peers: {m.get('cores', '?')} cores, {m.get('disk', '?')}"
        + (" (quick run)" if results.quick else ""),
        fontsize=11,
    )
    figure.tight_layout(rect=(0, 0.05, 1, 0.97))
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return None


def _bars(ax: Any, results: Results, workload: Workload, colours: Sequence[Any]) -> None:
    """One panel: a bar per system in a fixed slot (a gap where it has no figure).

    A log scale only where the values span more than 30x, and from well below the
    smallest, so that a bar's height never hides how close two values are.
    """
    slots = [
        (index, value)
        for index, system in enumerate(results.systems)
        if (value := results.value(workload.key, system.key)) is not None and value > 0
    ]
    values = [value for _, value in slots]
    ax.bar(
        [index for index, _ in slots],
        values,
        color=[colours[index % len(colours)] for index, _ in slots],
    )
    if values and max(values) / min(values) > 30:
        ax.set_yscale("log")
        ax.set_ylim(bottom=min(values) / 5, top=max(values) * 3)
    elif values:
        ax.set_ylim(bottom=0, top=max(values) * 1.15)
    ax.set_xlim(-0.6, len(results.systems) - 0.4)
    ax.set_xticks([])
    arrow = "↑" if workload.higher_is_better else "↓"
    ax.set_title(_wrap(f"{workload.title} ({workload.unit}, {arrow})"), fontsize=8)
    ax.tick_params(labelsize=7)
    for index, value in slots:
        ax.annotate(number(value), (index, value), ha="center", va="bottom", fontsize=6)


def _wrap(text: str, width: int = 44) -> str:
    words, lines, line = text.split(), [], ""
    for word in words:
        if line and len(line) + len(word) + 1 > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return "\n".join([*lines, line])
