"""A figure of the report: the median of several repeats, with their spread.

A figure that could not be measured keeps the reason instead (a peer not installed, a
workload that does not apply to a system, an error), so that no row silently drops.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Figure:
    """One cell of the report: ``value`` is the median of ``samples``."""

    samples: list[float] = field(default_factory=list)
    #: Why there is no value ("not installed: pip install ..."), or None.
    missing: str | None = None
    #: A remark shown beside the value (a cap that was reached, a status seen).
    note: str | None = None
    #: Anything else worth keeping in the JSON (per-repeat details).
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, samples: Sequence[float], note: str | None = None, **extra: Any) -> Figure:
        return cls(samples=[float(s) for s in samples], note=note, extra=dict(extra))

    @classmethod
    def unavailable(cls, reason: str) -> Figure:
        return cls(missing=reason)

    @property
    def value(self) -> float | None:
        return statistics.median(self.samples) if self.samples and not self.missing else None

    @property
    def spread(self) -> tuple[float, float] | None:
        """(min, max) of the repeats, or None with fewer than two."""
        if self.missing or len(self.samples) < 2:
            return None
        return min(self.samples), max(self.samples)

    def spread_pct(self) -> float | None:
        """Half the range of the repeats as a percentage of the median: ±x%."""
        spread, value = self.spread, self.value
        if spread is None or not value:
            return None
        return 100 * (spread[1] - spread[0]) / 2 / abs(value)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["value"] = self.value
        data["n"] = len(self.samples)
        return data


def percentile(values: Sequence[float], pct: float) -> float:
    """The ``pct`` percentile (nearest rank) of ``values``; needs at least one value."""
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]
