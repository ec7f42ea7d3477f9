"""``python -m benchmarks --compare THEN.json``: how a run's ratios moved since an earlier run.

The machine's speed varies from hour to hour, so figures of two runs are not compared,
only ratios within each run: every system's figure over procpool_tasks (durable)'s, as
in the report's brackets. A ratio moved if it changed by more than ``MOVED`` either way;
whether that is better or worse for procpool_tasks follows from the workload's direction.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .report import number
from .systems import REFERENCE

#: A ratio that changed by more than this share (either way) moved.
MOVED = 0.10


@dataclass(frozen=True)
class Change:
    """One system's ratio to the reference on one workload, then and now."""

    workload: str
    system: str
    then: float
    now: float
    higher_is_better: bool

    @property
    def change(self) -> float:
        return self.now / self.then - 1

    @property
    def moved(self) -> bool:
        return abs(self.change) > MOVED

    @property
    def better_for_reference(self) -> bool:
        """A peer's ratio falling where higher is better means the reference gained."""
        return (self.now < self.then) == self.higher_is_better


def load(path: Path) -> dict[str, Any]:
    """The results JSON of a run (``report.write_json``)."""
    results: dict[str, Any] = json.loads(path.read_text())
    return results


def ratios(results: dict[str, Any]) -> dict[tuple[str, str], float]:
    """(workload key, system key) -> the system's figure over the reference's, where both
    were measured."""
    found = {}
    for workload, by_system in results["figures"].items():
        reference = by_system.get(REFERENCE, {}).get("value")
        if not reference:
            continue
        for system, figure in by_system.items():
            if system != REFERENCE and figure.get("value"):
                found[(workload, system)] = figure["value"] / reference
    return found


def changes(now: dict[str, Any], then: dict[str, Any]) -> list[Change]:
    """Every ratio present in both runs, in the order of ``now``'s report."""
    now_ratios, then_ratios = ratios(now), ratios(then)
    higher = {w["key"]: w["higher_is_better"] for w in now["workloads"]}
    order = [w["key"] for w in now["workloads"]]
    systems = [s["key"] for s in now["systems"]]
    return [
        Change(workload, system, then_ratios[workload, system], ratio, higher[workload])
        for (workload, system), ratio in sorted(
            now_ratios.items(),
            key=lambda item: (order.index(item[0][0]), systems.index(item[0][1])),
        )
        if (workload, system) in then_ratios
    ]


def markdown(now_path: Path, then_path: Path) -> str:
    """A table of every ratio present in both runs, then and now, and whether it moved."""
    now, then = load(now_path), load(then_path)
    titles = {w["key"]: w["title"] for w in now["workloads"]}
    labels = {s["key"]: s["label"] for s in now["systems"]}
    found = changes(now, then)
    out = [
        f"## Ratios to {labels.get(REFERENCE, REFERENCE)}: {now_path} against {then_path}",
        "",
        "Each ratio: the system's figure over the reference's in the same run, as in the "
        f"report's brackets. Moved: by more than {MOVED:.0%} either way; better or worse "
        f"for {labels.get(REFERENCE, REFERENCE)}.",
        "",
        "| workload | system | then | now | change | moved |",
        "|---|---|---|---|---|---|",
    ]
    for c in found:
        moved = "no"
        if c.moved:
            moved = "yes, better" if c.better_for_reference else "**yes, worse**"
        out.append(
            f"| {titles[c.workload]} | {labels[c.system]} | ×{number(c.then)} | "
            f"×{number(c.now)} | {100 * c.change:+.0f}% | {moved} |"
        )
    moved_count = sum(c.moved for c in found)
    out += ["", f"{moved_count} of {len(found)} ratios moved more than {MOVED:.0%}."]
    return "\n".join(out) + "\n"


__all__ = ["MOVED", "Change", "changes", "markdown", "ratios"]
