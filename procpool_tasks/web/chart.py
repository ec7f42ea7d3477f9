"""The status page's chart of tasks finished per minute, laid out for an inline SVG.

The server draws it: the template turns these numbers into ``<rect>`` elements, so the
browser needs no script and no chart library. One bar a minute, oldest on the left,
SUCCESSFUL at the bottom and FAILED stacked on top, scaled to the busiest minute.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from .. import journal as j

__all__ = ["Bar", "Chart", "finished_chart"]

#: Pixels, in the SVG's own coordinates (it scales to the page's width).
BAR_STEP = 12
BAR_WIDTH = 10
TOP = 16  # room for the scale's label above the plot
PLOT_HEIGHT = 120
BOTTOM = 20  # room for the time labels below it


@dataclass(frozen=True, slots=True, kw_only=True)
class Bar:
    """One minute: its counts, and where its two stacked rectangles go."""

    minute: datetime
    successful: int
    failed: int
    x: int
    successful_y: float
    successful_height: float
    failed_y: float
    failed_height: float

    @property
    def total(self) -> int:
        return self.successful + self.failed


@dataclass(frozen=True, slots=True, kw_only=True)
class Chart:
    bars: list[Bar]
    peak: int  # the busiest minute's tasks: the top of the scale
    successful: int
    failed: int
    width: int
    height: int
    top: int = TOP
    plot_height: int = PLOT_HEIGHT
    baseline: int = TOP + PLOT_HEIGHT
    bar_width: int = BAR_WIDTH

    @property
    def total(self) -> int:
        return self.successful + self.failed

    @property
    def scale_label_y(self) -> int:
        return self.top - 4

    @property
    def time_label_y(self) -> int:
        return self.height - 5

    @property
    def right_edge(self) -> int:
        return self.width - 2

    @property
    def first(self) -> datetime | None:
        return self.bars[0].minute if self.bars else None

    @property
    def last(self) -> datetime | None:
        return self.bars[-1].minute if self.bars else None


def finished_chart(per_minute: Sequence[tuple[datetime, Counter[str]]]) -> Chart:
    """The chart of ``Status.finished_per_minute`` (oldest minute first)."""
    peak = max((count[j.SUCCESSFUL] + count[j.FAILED] for _, count in per_minute), default=0)
    baseline = TOP + PLOT_HEIGHT
    bars = []
    for index, (minute, count) in enumerate(per_minute):
        successful, failed = count[j.SUCCESSFUL], count[j.FAILED]
        successful_height = _height(successful, peak)
        failed_height = _height(failed, peak)
        bars.append(
            Bar(
                minute=minute,
                successful=successful,
                failed=failed,
                x=index * BAR_STEP + (BAR_STEP - BAR_WIDTH) // 2,
                successful_y=baseline - successful_height,
                successful_height=successful_height,
                failed_y=baseline - successful_height - failed_height,
                failed_height=failed_height,
            )
        )
    return Chart(
        bars=bars,
        peak=peak,
        successful=sum(bar.successful for bar in bars),
        failed=sum(bar.failed for bar in bars),
        width=max(1, len(bars)) * BAR_STEP,
        height=baseline + BOTTOM,
    )


def _height(count: int, peak: int) -> float:
    if not count:
        return 0.0
    # A minute with one task among thousands still shows: a pixel at least.
    return max(1.0, round(PLOT_HEIGHT * count / peak, 2))
