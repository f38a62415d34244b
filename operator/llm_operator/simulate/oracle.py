"""The oracle: knows the whole trace and has every replica it needs exactly when it needs it.

Each step it serves with the fewest replicas that give every request of the step a first token within the SLO
(requests that no replica count can serve in time, because their prompt alone takes longer to prefill, are left
out). Its replicas share one queue (a perfect balancer), which no real Service does. It pays for the GPUs
of every replica it runs, *start-up included*: a replica needed from time T was started `startup` seconds before
(or has run since the start, if that is cheaper), and a replica idle for less than a start-up is kept warm
rather than stopped and started again. So its GPU-hours are a lower bound on what any policy that meets the SLO
as often pays, under the same queueing model.
"""

from __future__ import annotations

import math
import time
from array import array
from bisect import bisect_left
from dataclasses import dataclass
from typing import Final

from llm_operator.dev.traffic._model import Capacity, flow, inter_token_latency

from .engine import TOKEN_MEAN_SECONDS
from .profile import ServerProfile, Timing
from .result import PolicyResult, Timeline, percentile, window_for, window_p95
from .trace import Trace

_EPS: Final = 1e-9
MAX_REPLICAS: Final = 100_000


def run(*, trace: Trace, profile: ServerProfile, timing: Timing, slo: float, floor: int = 1, name: str = "oracle",
        description: str = "perfect foresight, no start-up wait, one shared queue") -> PolicyResult:
    wall = time.perf_counter()
    cap = profile.capacity()
    slots, capacity_tps, prefill = cap.batch_slots, cap.tokens_per_second, cap.prefill_tokens_per_second
    dt = timing.step
    times, prompts, outputs = trace.times, trace.prompt_tokens, trace.output_tokens
    n_requests = len(times)
    ttft = array("d", [0.0]) * n_requests
    steps = max(1, math.ceil(trace.duration / dt - _EPS))
    alpha = 1.0 - math.exp(-dt / TOKEN_MEAN_SECONDS)
    o_mean = trace.mean_output
    worst_itl = slots / capacity_tps  # inter-token latency at a full batch

    queue = running = 0.0  # totals over all replicas (one shared queue)
    n = max(1, floor)
    needed = array("i", [0]) * steps
    met = failed = 0
    max_total_queue = 0.0
    window = window_for(trace.duration, step=dt)
    n_windows = max(1, math.ceil(trace.duration / window - _EPS))
    tl_arrivals = [0] * n_windows
    tl_serving = [0.0] * n_windows
    tl_queue = [0.0] * n_windows
    tl_steps = [0] * n_windows
    tl_replicas = [0] * n_windows
    i = 0
    for k in range(steps):
        t = k * dt
        j = bisect_left(times, t + dt, i)
        m = j - i
        if m:
            o_mean += alpha * (sum(outputs[i:j]) / m - o_mean)
        # The longest prompt of the step that some replica count could still serve in time binds.
        longest = -1.0
        for idx in range(i, j):
            p = prompts[idx]
            if p > longest and p / prefill + worst_itl <= slo:
                longest = p
        step = _Step(cap=cap, dt=dt, rps=m / dt, queue=queue, running=running, o_mean=o_mean, longest=longest,
                     slo=slo)
        attempt = step.attempt

        ok, q_new, r_new, base = attempt(n)
        if ok:
            while n - 1 >= floor:
                ok2, q2, r2, b2 = attempt(n - 1)
                if not ok2:
                    break
                n, q_new, r_new, base = n - 1, q2, r2, b2
        else:
            while not ok and n < MAX_REPLICAS:
                n = min(MAX_REPLICAS, n * 2 if n < 64 else n + max(1, n // 8))
                ok, q_new, r_new, base = attempt(n)
            # the doubling overshoots: come back down to the fewest that work
            lo = max(floor, 1)
            hi = n
            while lo < hi:
                mid = (lo + hi) // 2
                if attempt(mid)[0]:
                    hi = mid
                else:
                    lo = mid + 1
            n = hi
            ok, q_new, r_new, base = attempt(n)
        queue, running = q_new, r_new
        needed[k] = n
        if queue > max_total_queue:
            max_total_queue = queue
        for idx in range(i, j):
            v = base + prompts[idx] / prefill
            ttft[idx] = v
            if v <= slo:
                met += 1
        i = j
        w = min(n_windows - 1, int(t / window))
        tl_arrivals[w] += m
        tl_serving[w] += n
        tl_queue[w] += queue
        tl_steps[w] += 1
        tl_replicas[w] = n

    gpu_seconds, intervals = _replica_seconds(needed, dt=dt, startup=profile.pending_seconds + profile.startup_seconds)
    changes = _changes(intervals, end=steps * dt)
    ordered = sorted(ttft)
    timeline = Timeline(
        window=window, times=[w * window for w in range(n_windows)],
        rps=[tl_arrivals[w] / (tl_steps[w] * dt) if tl_steps[w] else 0.0 for w in range(n_windows)],
        replicas=tl_replicas, serving=[tl_serving[w] / tl_steps[w] if tl_steps[w] else 0.0 for w in range(n_windows)],
        ttft_p95=window_p95(ttft, times, window=window, n=n_windows),
        queue=[tl_queue[w] / tl_steps[w] if tl_steps[w] else 0.0 for w in range(n_windows)],
    )
    return PolicyResult(
        name=name, kind="oracle", description=description, requests=n_requests, met=met, failed=failed,
        ttft_p50=percentile(ordered, 0.5), ttft_p99=percentile(ordered, 0.99),
        gpu_hours=gpu_seconds * profile.gpus / 3600, scale_events=len(changes), max_queue=max_total_queue,
        peak_replicas=max(needed) if steps else 0, final_replicas=needed[-1] if steps else 0, changes=changes,
        timeline=timeline, wall_seconds=time.perf_counter() - wall,
    )


@dataclass(frozen=True)
class _Step:
    """One step of the shared-queue model, tried with a given number of replicas."""

    cap: Capacity
    dt: float
    rps: float
    queue: float
    running: float
    o_mean: float
    longest: float
    slo: float

    def attempt(self, count: int) -> tuple[bool, float, float, float]:
        """(every servable request of the step in time, total queue, total running, TTFT base) with `count`."""
        cap = self.cap
        q, r = self.queue / count, self.running / count
        itl = inter_token_latency(running=min(r, cap.batch_slots), capacity=cap)
        f = flow(dt=self.dt, rps=self.rps / count, queue=q, running=r, slots=cap.batch_slots, tau=self.o_mean * itl,
                 max_queue=cap.max_queue)
        base = f.queue * self.o_mean / cap.tokens_per_second + itl
        in_time = self.longest < 0 or base + self.longest / cap.prefill_tokens_per_second <= self.slo
        ok = f.rejected <= _EPS and in_time
        return ok, f.queue * count, f.running * count, base


def _replica_seconds(needed: array[int], *, dt: float, startup: float) -> tuple[float, list[tuple[float, float]]]:
    """Replica-seconds to have `needed[k]` replicas serving in step k: replica number j (1-based) runs while at
    least j are needed; each run starting at T > 0 first loads for `startup` (or, when T < startup, runs from
    the start instead); an idle gap shorter than a start-up is bridged (kept warm). Returns the seconds and every
    replica's running intervals, loading included (for the replica timeline)."""
    runs: list[tuple[int, float, float]] = []  # run-length encoding of the needed counts
    start = 0
    for k in range(1, len(needed) + 1):
        if k == len(needed) or needed[k] != needed[start]:
            runs.append((needed[start], start * dt, k * dt))
            start = k
    on_since: dict[int, float] = {}  # replica -> since when it runs
    closed: dict[int, list[tuple[float, float]]] = {}  # replica -> its finished runs
    seconds = 0.0
    current = 0
    for value, s, e in runs:
        for level in range(current + 1, value + 1):
            past = closed.get(level)
            if past:
                gap = s - past[-1][1]
                if gap < startup:
                    seconds += gap  # kept warm through the gap: its last run continues
                    on_since[level] = past.pop()[0]
                    continue
                seconds += startup
                on_since[level] = s - startup
            elif s < startup:
                seconds += s  # cheaper to have run since the start than to load it later
                on_since[level] = 0.0
            else:
                seconds += startup
                on_since[level] = s - startup
        for level in range(value + 1, current + 1):
            closed.setdefault(level, []).append((on_since.pop(level), s))
        seconds += value * (e - s)
        current = value
    end = runs[-1][2] if runs else 0.0
    intervals = [iv for runs_ in closed.values() for iv in runs_]
    intervals += [(since, end) for since in on_since.values()]
    return seconds, intervals


def _changes(intervals: list[tuple[float, float]], *, end: float) -> list[tuple[float, int, int]]:
    """Changes of the replica count (loading and warm gaps included) from every replica's running intervals."""
    events: dict[float, int] = {}
    for a, b in intervals:
        events[a] = events.get(a, 0) + 1
        if b < end:
            events[b] = events.get(b, 0) - 1
    out: list[tuple[float, int, int]] = []
    count = 0
    for t in sorted(events):
        new = count + events[t]
        if new != count and t > 0:
            out.append((t, count, new))
        count = new
    return out
