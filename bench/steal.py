"""CPU time the host took from this machine's cores (steal, /proc/stat): how noisy a phase's timings were."""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

# /proc/stat's first line: user nice system idle iowait irq softirq steal (guest time is inside user).
STEAL = 7


def cpu_ticks() -> tuple[int, int]:
    """The machine's stolen ticks and all its ticks so far, every core together."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1 : STEAL + 2]
    ticks = [int(field) for field in fields]
    return ticks[STEAL], sum(ticks)


@dataclass
class Stolen:
    """The share of the cores' time the host took while the block ran (0 to 1), once it has ended."""

    share: float = 0.0


@contextmanager
def stolen(read: Callable[[], tuple[int, int]] = cpu_ticks) -> Iterator[Stolen]:
    """The steal over the block: a phase with a high share was timed on a machine not all its own."""
    found = Stolen()
    steal, total = read()
    try:
        yield found
    finally:
        steal_end, total_end = read()
        found.share = (steal_end - steal) / max(1, total_end - total)
