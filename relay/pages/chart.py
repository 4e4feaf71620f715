"""The overview's activity chart as SVG geometry, computed on the server (the CSP allows no script)."""

from collections.abc import Sequence
from dataclasses import dataclass

from relay.store.activity import MinuteActivity

WIDTH, HEIGHT = 720, 200
# Room for the axis labels: left for the scale, below for the times.
LEFT, RIGHT, TOP, BOTTOM = 40, 8, 10, 22


@dataclass(frozen=True)
class Chart:
    """What the template draws: a line for each series, its scale and time labels, and totals in words."""

    webhooks: str  # SVG polyline points, "x,y x,y ..."
    delivered: str
    peak: int  # the scale's top: the busiest minute of either series (at least 1)
    first: str  # the first and last minute's HH:MM, UTC
    last: str
    total_webhooks: int
    total_delivered: int
    width: int = WIDTH
    height: int = HEIGHT
    left: int = LEFT
    top: int = TOP
    bottom: int = HEIGHT - BOTTOM
    right: int = WIDTH - RIGHT


def activity_chart(minutes: Sequence[MinuteActivity]) -> Chart:
    """The chart of these minutes, oldest first (at least one)."""
    peak = max(1, *(max(m.webhooks, m.delivered) for m in minutes))
    span = max(len(minutes) - 1, 1)
    plot_width, plot_height = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def line(counts: Sequence[int]) -> str:
        return " ".join(
            f"{LEFT + plot_width * index / span:.1f},{TOP + plot_height * (1 - count / peak):.1f}"
            for index, count in enumerate(counts)
        )

    return Chart(
        webhooks=line([m.webhooks for m in minutes]),
        delivered=line([m.delivered for m in minutes]),
        peak=peak,
        first=f"{minutes[0].minute:%H:%M}",
        last=f"{minutes[-1].minute:%H:%M}",
        total_webhooks=sum(m.webhooks for m in minutes),
        total_delivered=sum(m.delivered for m in minutes),
    )
