"""What one policy did over a trace: SLO attainment, latency, cost, scaling, and a timeline to plot."""

from __future__ import annotations

import math
from array import array
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, kw_only=True)
class Timeline:
    """One point per window: offered load, replicas asked for, replicas serving, TTFT p95, queue."""

    window: float
    times: list[float]
    rps: list[float]
    replicas: list[int]
    serving: list[float]
    ttft_p95: list[float]
    queue: list[float]

    def as_json(self) -> dict[str, Any]:
        return {"windowSeconds": self.window, "t": self.times, "rps": [round(v, 3) for v in self.rps],
                "replicas": self.replicas, "serving": [round(v, 2) for v in self.serving],
                "ttftP95": [None if not math.isfinite(v) else round(v, 4) for v in self.ttft_p95],
                "queue": [round(v, 2) for v in self.queue]}


@dataclass(frozen=True, kw_only=True)
class PolicyResult:
    name: str
    kind: str
    description: str
    requests: int
    met: int
    failed: int  # refused by a full queue, or arrived while no replica served
    ttft_p50: float
    ttft_p99: float
    gpu_hours: float
    scale_events: int
    max_queue: float
    peak_replicas: int
    final_replicas: int
    changes: list[tuple[float, int, int]] = field(default_factory=list)
    timeline: Timeline | None = None
    wall_seconds: float = 0.0

    @property
    def attainment(self) -> float:
        return self.met / self.requests if self.requests else 1.0

    def as_json(self, *, timeline: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name, "kind": self.kind, "description": self.description, "requests": self.requests,
            "sloAttainment": round(self.attainment, 6), "failed": self.failed,
            "ttftP50Seconds": _num(self.ttft_p50), "ttftP99Seconds": _num(self.ttft_p99),
            "gpuHours": round(self.gpu_hours, 4), "scaleEvents": self.scale_events,
            "maxQueue": round(self.max_queue, 2), "peakReplicas": self.peak_replicas,
            "finalReplicas": self.final_replicas,
            "replicaChanges": [{"t": round(t, 3), "from": a, "to": b} for t, a, b in self.changes],
            "wallSeconds": round(self.wall_seconds, 3),
        }
        if timeline and self.timeline is not None:
            out["timeline"] = self.timeline.as_json()
        return out


def _num(v: float) -> float | None:
    return round(v, 4) if math.isfinite(v) else None


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values (inf marks a request that got no first token)."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[rank - 1]


def window_for(duration: float, *, step: float, points: int = 720) -> float:
    """A plot window giving at most about `points` points, a whole number of steps."""
    return max(step, math.ceil(duration / points / step) * step)


def window_p95(ttft: array[float], times: array[float], *, window: float, n: int) -> list[float]:
    """TTFT p95 of the requests arriving in each of `n` windows (nan for an empty window)."""
    out: list[float] = []
    lo = 0
    for k in range(n):
        hi = bisect_left(times, (k + 1) * window, lo=lo)
        if hi > lo:
            out.append(percentile(sorted(ttft[lo:hi]), 0.95))
        else:
            out.append(math.nan)
        lo = hi
    return out
