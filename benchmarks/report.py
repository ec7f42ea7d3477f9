"""The results of a run as Markdown (stdout), JSON (raw figures) and a PNG chart.

Three tables with a row per system and a column per workload, each cell the median of
the repeats, its spread and its ratio to procpool_tasks (durable); then the physical
limits; the CPU the workers' main processes spend per task and the ceiling it implies;
and the targets of issue 21, each met or not with the figure that decides it (the earlier
issues' "everything else within 10% of today's ratios" is ``--compare``'s to say).
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
from .processes import CPU_SAMPLE_S
from .stats import Figure
from .systems import REFERENCE, System
from .workloads import SLEEP_TASK_MS, Sizes, Workload, ideal_sleep_drain_rate, workloads

TABLES = (
    (
        "Throughput and latency",
        ("enqueue", "drain", "drain_4", "drain_sleep10", "drain_sleep10_4", "latency"),
    ),
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
    """The targets of issue 21, each decided by figures of this run. What the earlier
    issues asked of everything else (within 10% of today's ratios) is ``--compare``'s."""
    v, lim, sizes = results.value, results.limits, results.sizes
    pp = REFERENCE
    found: list[Target] = []

    def at_least(text: str, a: float | None, b: float | None, minimum: float) -> None:
        if a is None or not b:
            found.append(Target(text, "not measured", None))
        else:
            found.append(Target(text, f"{100 * a / b:.0f}%", a / b >= minimum))

    def at_most_ratio(text: str, a: float | None, b: float | None, maximum: float) -> None:
        if a is None or not b:
            found.append(Target(text, "not measured", None))
        else:
            found.append(Target(text, f"×{a / b:.2f}", a / b <= maximum))

    for key, count in (
        ("drain_sleep10", sizes.processes),
        ("drain_sleep10_4", sizes.many_processes),
    ):
        ideal = ideal_sleep_drain_rate(sizes, count)
        at_least(
            f"tasks of {SLEEP_TASK_MS} ms, {count} processes: >= 95% of the ideal {count} "
            f"processes / {SLEEP_TASK_MS} ms ({ideal:,.0f} tasks/s)",
            v(key, pp),
            ideal,
            0.95,
        )
    for key, limit, count in (
        ("drain", "pool_round_trip", sizes.processes),
        ("drain_4", "pool_round_trip_4", sizes.many_processes),
    ):
        at_least(
            f"no-op drain, {count} processes: >= 40% of the bare {count}-process pool round trip",
            v(key, pp),
            lim[limit].value if limit in lim else None,
            0.4,
        )
    for key, count in (
        ("supervisor_cpu_us", sizes.processes),
        ("supervisor_cpu_us_4", sizes.many_processes),
    ):
        text = (
            f"supervisor CPU per task (all its threads), no-op drain, {count} processes: "
            "<= 250 µs (ceiling 1 s / CPU per task >= 4,000 tasks/s)"
        )
        cpu = v(key, pp)
        if cpu is None or cpu <= 0:
            found.append(Target(text, "not measured", None))
        else:
            found.append(
                Target(text, f"{number(cpu)} µs (ceiling {1e6 / cpu:,.0f} tasks/s)", cpu <= 250)
            )
    for key, when in (("pss_idle", "idle"), ("pss_after", f"after {sizes.rss_tasks_n:,} tasks")):
        at_most_ratio(
            f"worker PSS, {when}, {sizes.processes} processes: <= 1.2x django-tasks-db's",
            v(key, pp),
            v(key, "db"),
            1.2,
        )
    return found


def cpu_ceilings(data: dict[str, Any]) -> list[str]:
    """The Markdown section of the workers' main processes' CPU per task (from a results
    JSON): per system, each drain's figure, the ceiling ``1 s / CPU per task`` and what
    was measured. Nothing for a run that measured none."""
    sizes = data["sizes"]
    drains = (
        ("supervisor_cpu_us", sizes["processes"]),
        ("supervisor_cpu_us_4", sizes["many_processes"]),
    )
    rows = []
    for system in data["systems"]:
        figures = [
            _figure(found) if (found := data["figures"].get(key, {}).get(system["key"])) else None
            for key, _ in drains
        ]
        if all(f is None or f.value is None for f in figures):
            continue
        cells = [system["label"]]
        for figure in figures:
            if figure is None or figure.value is None:
                cells += ["n/a", ""]
                continue
            spread = figure.spread_pct()
            cells += [
                number(figure.value) + (f" ±{spread:.0f}%" if spread is not None else ""),
                f"{1e6 / figure.value:,.0f}" if figure.value > 0 else "none: no CPU in the window",
            ]
        cells.append(system.get("main_process", ""))
        rows.append("| " + " | ".join(cells) + " |")
    if not rows:
        return []
    head = ["system"]
    for _, count in drains:
        head += [
            f"CPU per task, {count} processes (µs, ↓)",
            f"ceiling, {count} processes (tasks/s)",
        ]
    return [
        "",
        "### Supervisor CPU per task and the ceiling it implies",
        "",
        "CPU time (user+system, all threads) of the processes the harness starts for a "
        "system's workers, not of their children, over the window the no-op drains' rates "
        "count (the first task seen finished to the last), per task; read every "
        f"{1000 * CPU_SAMPLE_S:.0f} ms and interpolated at the window's ends. The ceiling, "
        "1 s / CPU per task, is the most tasks a second those processes could see through "
        "if nothing else limited them, however many cores.",
        "",
        "| " + " | ".join([*head, "what is measured"]) + " |",
        "|" + "---|" * (len(head) + 1),
        *rows,
    ]


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
    out += cpu_ceilings(data)
    if with_targets:
        out += ["", "### Targets of issue 21", "", "| target | measured | met |", "|---|---|---|"]
        for target in data["targets"]:
            met = "n/a" if target["met"] is None else ("yes" if target["met"] else "**no**")
            out.append(f"| {target['text']} | {target['measured']} | {met} |")
        out += [
            "",
            "Everything else within 10% of today's ratios (enqueue, latency, growth, start-up, "
            "recovery): `python -m benchmarks --compare docs/benchmarks.json` against this run.",
        ]
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
            {
                "key": s.key,
                "label": s.label,
                "durability": s.durability,
                "main_process": s.main_process,
            }
            for s in results.systems
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
