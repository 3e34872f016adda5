"""Per-stage statistics of a data pipeline (DP-13): items, own time, wait time, rate.

For every stage, ``busy`` is the time spent in the stage's own work and ``wait`` the time it spent
blocked on its upstream (or, for a loader's main process, on the workers). ``rate`` is
``items / busy``: what the stage could sustain on its own. The slowest stage (lowest rate) bounds
the pipeline; a large ``wait`` at the consumer with busy workers means the pipeline is CPU-bound in
the workers, a large wait at a source-reading stage means it is I/O-bound.
"""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["StageStats", "StatsTable"]


@dataclass
class StageStats:
    name: str
    items: int = 0
    busy: float = 0.0
    wait: float = 0.0

    @property
    def rate(self) -> float:
        """Items per second of the stage's own time."""
        return self.items / self.busy if self.busy > 0 else float("inf")

    def as_dict(self) -> dict:
        return {"stage": self.name, "items": self.items, "busy_s": self.busy, "wait_s": self.wait,
                "items_per_s": self.rate}


class StatsTable(list):
    """A list of `StageStats` that prints as a table; ``bottleneck()`` names the slowest stage."""

    def __init__(self, rows, wall: float | None = None):
        super().__init__(rows)
        self.wall = wall

    def bottleneck(self) -> StageStats | None:
        work = [r for r in self if r.items and r.busy > 0]
        return min(work, key=lambda r: r.rate) if work else None

    def __str__(self) -> str:
        head = f"{'stage':<28} {'items':>9} {'items/s':>12} {'busy s':>9} {'wait s':>9}"
        lines = [head, "-" * len(head)]
        for r in self:
            rate = "inf" if r.rate == float("inf") else f"{r.rate:,.0f}"
            lines.append(f"{r.name[:28]:<28} {r.items:>9} {rate:>12} {r.busy:>9.3f} {r.wait:>9.3f}")
        if self.wall is not None:
            lines.append(f"wall time {self.wall:.3f} s")
        return "\n".join(lines)

    __repr__ = __str__
