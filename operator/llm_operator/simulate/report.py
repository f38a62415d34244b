"""Output of `llmctl simulate`: a table or JSON with one row per policy, and an optional PNG."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from . import Simulation
    from .result import PolicyResult

PLOT_INSTALL_HINT = "pip install 'triton-llm-operator[bench]'"


class PlotError(RuntimeError):
    """--plot cannot be honoured (matplotlib missing, or the file cannot be written)."""


def _seconds(v: float) -> str:
    if not math.isfinite(v):
        return "-"
    return f"{v * 1000:.0f} ms" if v < 1 else f"{v:.2f} s"


def _vs(result: PolicyResult, oracle: PolicyResult | None) -> str:
    if oracle is None or oracle.gpu_hours <= 0:
        return "-"
    return f"{result.gpu_hours / oracle.gpu_hours:.2f}x"


def table(sim: Simulation) -> str:
    oracle = sim.oracle()
    head = ("policy", "SLO met", "TTFT p50", "TTFT p99", "GPU-hours", "vs oracle", "scale events", "max queue",
            "peak replicas")
    rows: list[tuple[str, ...]] = [head]
    for r in sim.results:
        rows.append((r.name, f"{r.attainment * 100:.2f}%", _seconds(r.ttft_p50), _seconds(r.ttft_p99),
                     f"{r.gpu_hours:.2f}", _vs(r, oracle), str(r.scale_events), f"{r.max_queue:.0f}",
                     str(r.peak_replicas)))
    if oracle is None:  # no column to compare with
        rows = [row[:5] + row[6:] for row in rows]
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
    lines = [
        f"{sim.llmd_name}: {sim.trace_name} ({sim.requests} requests over {_duration(sim.duration)}), "
        f"SLO: time to first token <= {sim.slo:g} s",
    ]
    for n, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(widths[c]) if c == 0 else cell.rjust(widths[c])
                               for c, cell in enumerate(row)).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    for r in sim.results:
        lines.append(f"  {r.name}: {r.description}")
    return "\n".join(lines) + "\n"


def _duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.3g} h"
    if seconds >= 60:
        return f"{seconds / 60:.3g} min"
    return f"{seconds:.3g} s"


def as_json(sim: Simulation, *, timeline: bool) -> dict[str, Any]:
    oracle = sim.oracle()
    policies = []
    for r in sim.results:
        entry = r.as_json(timeline=timeline)
        entry["gpuHoursVsOracle"] = (round(r.gpu_hours / oracle.gpu_hours, 4)
                                     if oracle is not None and oracle.gpu_hours > 0 else None)
        policies.append(entry)
    return {
        "llmDeployment": sim.llmd_name, "trace": sim.trace_name, "requests": sim.requests,
        "durationSeconds": sim.duration, "sloTtftSeconds": sim.slo, "profile": sim.profile_json(),
        "timing": sim.timing_json(), "policies": policies,
    }


def plot(sim: Simulation, path: str | Path) -> None:
    """Load, replicas and TTFT p95 over time, one line per policy. matplotlib is imported only here."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise PlotError(f"--plot needs matplotlib, which is not installed: {PLOT_INSTALL_HINT}") from None
    fig, axes = plt.subplots(3, 1, sharex=True, figsize=(11, 8), constrained_layout=True)
    load_ax, rep_ax, ttft_ax = axes
    first = sim.results[0].timeline
    assert first is not None
    hours = sim.duration >= 3 * 3600
    scale = 3600.0 if hours else 60.0
    x_label = "hours" if hours else "minutes"
    load_ax.plot([t / scale for t in first.times], first.rps, color="black", linewidth=1)
    load_ax.set_ylabel("requests/s")
    load_ax.set_title(f"{sim.llmd_name}: {sim.trace_name}, SLO TTFT <= {sim.slo:g} s")
    for r in sim.results:
        tl = r.timeline
        if tl is None:
            continue
        xs = [t / scale for t in tl.times]
        label = f"{r.name} ({r.attainment * 100:.1f}% in SLO, {r.gpu_hours:.1f} GPU-h)"
        (line,) = rep_ax.step(xs, tl.replicas, where="post", label=label, linewidth=1.2)
        ttft_ax.plot(xs, [v if math.isfinite(v) and v > 0 else float("nan") for v in tl.ttft_p95],
                     color=line.get_color(), linewidth=1)
    rep_ax.set_ylabel("replicas")
    rep_ax.legend(fontsize=8, loc="upper left")
    ttft_ax.axhline(sim.slo, color="red", linestyle="--", linewidth=0.8)
    ttft_ax.set_yscale("log")
    ttft_ax.set_ylabel("TTFT p95 (s)")
    ttft_ax.set_xlabel(x_label)
    try:
        fig.savefig(str(path), dpi=110)
    except OSError as exc:
        raise PlotError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        plt.close(fig)
