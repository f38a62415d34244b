"""The simulated deployment: replicas run the traffic emulator's queueing model, an autoscaler (the HPA port)
reads them through the simulated metrics chain, and every request's time to first token is recorded.

Replicas that started together share one state (a *group*): they receive the same share of the load, so their
queues stay equal. A group is split when some of its pods are deleted.
"""

from __future__ import annotations

import math
import time
from array import array
from bisect import bisect_left
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal

from llm_operator.dev.traffic._model import flow, inter_token_latency

from .hpa import HorizontalController, MetricError, MetricReading, Pod, PodMetric
from .pipeline import MetricsServer, Prometheus, Recorded
from .profile import ServerProfile, Timing
from .result import PolicyResult, Timeline, percentile, window_for, window_p95
from .trace import Trace

Source = Literal["queue", "tokens", "kv", "cpu"]
_EPS: Final = 1e-9
# How fast the model's mean token counts follow the trace (the fluid model has one mean per step).
TOKEN_MEAN_SECONDS: Final = 60.0
# A draining replica is done when less than half a request is left in its fluid batch.
DRAINED_RUNNING: Final = 0.5
_WARM: Final = -3600.0  # replicas that serve at t=0 started an hour before (past every readiness window)


@dataclass
class _Group:
    key: int
    count: int
    created: float
    running_at: float
    serving_at: float
    queue: float = 0.0
    running: float = 0.0
    generated: float = 0.0
    cpu: float = 0.0
    tps: float = 0.0
    base_ttft: float = 0.0
    reject: float = 0.0
    served: bool = False
    deleted_at: float | None = None

    def clone(self, *, key: int, count: int) -> _Group:
        return _Group(key, count, self.created, self.running_at, self.serving_at, self.queue, self.running,
                      self.generated, self.cpu, self.tps, self.base_ttft, self.reject, self.served, self.deleted_at)


def initial_replicas(trace: Trace, profile: ServerProfile, *, lo: int, hi: int) -> int:
    """Replicas a deployment that has been serving the trace's first minute would have: enough decode
    throughput for it, within [lo, hi]."""
    rps = trace.rate(start=0.0, end=min(60.0, trace.duration))
    need = math.ceil(rps * trace.mean_output / profile.tokens_per_second - _EPS)
    return max(lo, min(hi, need))


def run(
    *,
    trace: Trace,
    profile: ServerProfile,
    timing: Timing,
    slo: float,
    name: str,
    kind: str,
    description: str,
    initial: int,
    controller: HorizontalController | None = None,
    sources: Mapping[str, Source] | None = None,
    metrics_listed: bool = True,
) -> PolicyResult:
    """Replay `trace` against `initial` warm replicas, scaled by `controller` (None: a fixed count).

    `sources` maps each of the controller's metric names to what it reads: the queue-depth, tokens/s or KV-cache
    series through Prometheus and the adapter, or CPU through metrics-server. `metrics_listed` says whether the
    adapter has listed the metric names at the start (a deployment that has been running).
    """
    wall = time.perf_counter()
    sources = dict(sources or {})
    cap = profile.capacity()
    slots, capacity_tps, prefill = cap.batch_slots, cap.tokens_per_second, cap.prefill_tokens_per_second
    max_queue = cap.max_queue
    dt = timing.step
    times, prompts, outputs = trace.times, trace.prompt_tokens, trace.output_tokens
    n_requests = len(times)
    ttft = array("d", [0.0]) * n_requests
    steps = max(1, math.ceil(trace.duration / dt - _EPS))
    alpha = 1.0 - math.exp(-dt / TOKEN_MEAN_SECONDS)
    o_mean, p_mean = trace.mean_output, trace.mean_prompt
    kv_tokens = profile.kv_cache_tokens
    cpu_cores = profile.cpu_request_cores
    cpu_request = math.ceil(cpu_cores * 1000)

    next_key = 1
    groups: list[_Group] = [_Group(0, initial, _WARM, _WARM, _WARM, served=True)]
    prom = Prometheus(rate_window=timing.rate_window, lookback=timing.lookback)
    metrics_server = MetricsServer()
    needs_cpu = "cpu" in sources.values()
    listed: dict[str, bool] = {name_: metrics_listed for name_ in sources}
    # Phases: each box runs on its own period; offsets put the chain's lag at its average (half of each).
    next_scrape = timing.scrape_interval / 2 if timing.scrape_phase is None else timing.scrape_phase
    next_eval = (timing.scrape_interval / 2 + timing.evaluation_interval / 2 if timing.evaluation_phase is None
                 else timing.evaluation_phase)
    next_ms = timing.metrics_resolution / 2
    next_sync = next_eval + timing.sync_period / 2 if timing.sync_phase is None else timing.sync_phase
    next_relist = timing.relist_interval if timing.relist_interval > 0 else math.inf

    desired = initial
    peak = initial
    changes: list[tuple[float, int, int]] = []
    gpu_seconds = 0.0
    met = failed = 0
    max_total_queue = 0.0
    rr = 0
    i = 0

    window = window_for(trace.duration, step=dt)
    n_windows = max(1, math.ceil(trace.duration / window - _EPS))
    tl_arrivals = [0] * n_windows
    tl_serving = [0.0] * n_windows
    tl_queue = [0.0] * n_windows
    tl_steps = [0] * n_windows
    tl_replicas = [0] * n_windows

    for k in range(steps):
        t = k * dt
        t_end = t + dt
        j = bisect_left(times, t_end, i)
        m = j - i
        if m:
            o_mean += alpha * (sum(outputs[i:j]) / m - o_mean)
            p_mean += alpha * (sum(prompts[i:j]) / m - p_mean)

        serving: list[_Group] = []
        n_serving = 0
        for g in groups:
            if g.deleted_at is None and g.serving_at <= t:
                g.served = True
                serving.append(g)
                n_serving += g.count
        rps_pod = m / dt / n_serving if n_serving else 0.0

        total_queue = 0.0
        for g in groups:
            if t < g.running_at:
                continue  # Pending: no container yet
            if not g.served:
                continue  # loading the model: no batch yet
            rps = rps_pod if g.deleted_at is None else 0.0
            if rps == 0.0 and g.queue == 0.0 and g.running < 1e-6:
                g.running = 0.0
                g.tps = 0.0
                continue
            itl = inter_token_latency(running=min(g.running, slots), capacity=cap)
            f = flow(dt=dt, rps=rps, queue=g.queue, running=g.running, slots=slots, tau=o_mean * itl,
                     max_queue=max_queue)
            g.queue, g.running = f.queue, f.running
            tokens = f.done * o_mean
            g.generated += tokens
            g.tps = tokens / dt
            g.cpu += cpu_cores * min(g.running, slots) / slots * dt
            # The emulator's TTFT: the queue ahead, drained by a full batch at C / O requests/s, plus one gap.
            g.base_ttft = g.queue * o_mean / capacity_tps + itl
            g.reject = f.rejected / (rps * dt) if rps > 0 and f.rejected > 0 else 0.0
            total_queue += g.queue * g.count
        if total_queue > max_total_queue:
            max_total_queue = total_queue

        if m:
            if n_serving == 0:
                for idx in range(i, j):
                    ttft[idx] = math.inf
                failed += m
            else:
                # Round robin over the serving pods (the Service's share), pod by pod.
                bases: list[float] = []
                rejects: list[float] = []
                for g in serving:
                    bases.extend([g.base_ttft] * g.count)
                    rejects.extend([g.reject] * g.count)
                if not any(rejects):
                    for idx in range(i, j):
                        v = bases[rr % n_serving] + prompts[idx] / prefill
                        rr += 1
                        ttft[idx] = v
                        if v <= slo:
                            met += 1
                else:
                    owed = [0.0] * n_serving
                    for idx in range(i, j):
                        pod = rr % n_serving
                        rr += 1
                        owed[pod] += rejects[pod]
                        if owed[pod] >= 0.5:  # this pod's share of refused arrivals
                            owed[pod] -= 1.0
                            ttft[idx] = math.inf
                            failed += 1
                            continue
                        v = bases[pod] + prompts[idx] / prefill
                        ttft[idx] = v
                        if v <= slo:
                            met += 1
        i = j

        live = 0
        for g in groups:
            live += g.count
        gpu_seconds += live * profile.gpus * dt

        # Draining replicas leave once the preStop sleep is over and their batch is empty, or at the grace period.
        if any(g.deleted_at is not None for g in groups):
            kept: list[_Group] = []
            for g in groups:
                if g.deleted_at is not None:
                    gone = t_end - g.deleted_at
                    if gone >= profile.grace_seconds - _EPS or (
                        gone >= profile.prestop_seconds - _EPS and g.queue <= _EPS and g.running < DRAINED_RUNNING
                    ):
                        continue
                kept.append(g)
            groups = kept

        w = min(n_windows - 1, int(t / window))
        tl_arrivals[w] += m
        tl_serving[w] += n_serving
        tl_queue[w] += total_queue
        tl_steps[w] += 1

        # ---------------------------------------------------------------- the metrics chain and the HPA
        if t_end >= next_scrape - _EPS:
            prom.scrape(t_end, [(g.key, g.queue, min(1.0, g.running * (p_mean + o_mean / 2) / kv_tokens), g.generated)
                                for g in groups if g.served])
            next_scrape += timing.scrape_interval
        if t_end >= next_eval - _EPS:
            prom.evaluate(t_end)
            next_eval += timing.evaluation_interval
        if needs_cpu and t_end >= next_ms - _EPS:
            metrics_server.scrape(t_end, [(g.key, g.cpu) for g in groups if t_end >= g.running_at])
            next_ms += timing.metrics_resolution
        if t_end >= next_relist - _EPS:
            for metric, source in sources.items():
                if source != "cpu":
                    listed[metric] = any(_value(r, source) is not None for r in prom.recorded.values())
            next_relist += timing.relist_interval
        if controller is not None and t_end >= next_sync - _EPS:
            next_sync += timing.sync_period
            pods, readings = _observe(groups, t_end, sources, prom, metrics_server, listed, cpu_request)
            decision = controller.reconcile(now=t_end, current_replicas=desired, pods=pods, metrics=readings)
            if decision.rescale:
                new = decision.desired_replicas
                changes.append((t_end, desired, new))
                if new > desired:
                    groups.append(_Group(next_key, new - desired, t_end, t_end + profile.pending_seconds,
                                         t_end + profile.pending_seconds + profile.startup_seconds))
                    next_key += 1
                else:
                    groups, next_key = _scale_down(groups, desired - new, t_end, next_key, prom, metrics_server,
                                                   profile)
                desired = new
                peak = max(peak, desired)
        tl_replicas[w] = desired

    rps_series = [tl_arrivals[w] / (tl_steps[w] * dt) if tl_steps[w] else 0.0 for w in range(n_windows)]
    timeline = Timeline(
        window=window, times=[w * window for w in range(n_windows)], rps=rps_series, replicas=tl_replicas,
        serving=[tl_serving[w] / tl_steps[w] if tl_steps[w] else 0.0 for w in range(n_windows)],
        ttft_p95=window_p95(ttft, times, window=window, n=n_windows),
        queue=[tl_queue[w] / tl_steps[w] if tl_steps[w] else 0.0 for w in range(n_windows)],
    )
    ordered = sorted(ttft)
    return PolicyResult(
        name=name, kind=kind, description=description, requests=n_requests, met=met, failed=failed,
        ttft_p50=percentile(ordered, 0.5), ttft_p99=percentile(ordered, 0.99), gpu_hours=gpu_seconds / 3600,
        scale_events=len(changes), max_queue=max_total_queue, peak_replicas=peak, final_replicas=desired,
        changes=changes, timeline=timeline, wall_seconds=time.perf_counter() - wall,
    )


def _value(r: Recorded, source: Source) -> float | None:
    if source == "queue":
        return r.queue
    if source == "kv":
        return r.kv
    return r.tokens_rate


def _observe(
    groups: list[_Group], now: float, sources: Mapping[str, Source], prom: Prometheus,
    metrics_server: MetricsServer, listed: Mapping[str, bool], cpu_request: int | None,
) -> tuple[list[Pod], dict[str, MetricReading]]:
    """What the HPA reads at `now`: the pods its selector matches, and each metric's per-pod values."""
    pods: list[Pod] = []
    names: dict[int, list[str]] = {}
    for g in groups:
        phase: Literal["Pending", "Running"] = "Pending" if now < g.running_at else "Running"
        ready = g.served and g.deleted_at is None
        pod_names = [f"p{g.key}-{n}" for n in range(g.count)]
        names[g.key] = pod_names
        for pod_name in pod_names:
            pods.append(Pod(name=pod_name, phase=phase, deleting=g.deleted_at is not None, ready=ready,
                            start_time=g.created, ready_transition=g.serving_at if ready else g.running_at,
                            cpu_request_milli=cpu_request))
    readings: dict[str, MetricReading] = {}
    for metric, source in sources.items():
        values: dict[str, PodMetric] = {}
        if source == "cpu":
            for g in groups:
                usage = metrics_server.usage(g.key)
                if usage is None or now < g.running_at:
                    continue
                cores, stamp, win = usage
                pm = PodMetric(value=math.ceil(cores * 1000 - _EPS), timestamp=stamp, window=win)
                for pod_name in names[g.key]:
                    values[pod_name] = pm
            readings[metric] = values
            continue
        if not listed.get(metric, True):
            readings[metric] = MetricError(f'the server could not find the metric {metric} for pods')
            continue
        for g in groups:
            r = prom.recorded.get(g.key)
            v = None if r is None else _value(r, source)
            if v is None:
                continue
            pm = PodMetric(value=int(v * 1000.0), timestamp=prom.recorded_at, window=60.0)
            for pod_name in names[g.key]:
                values[pod_name] = pm
        readings[metric] = values
    return pods, readings


def _scale_down(
    groups: list[_Group], remove: int, now: float, next_key: int, prom: Prometheus, metrics_server: MetricsServer,
    profile: ServerProfile,
) -> tuple[list[_Group], int]:
    """The ReplicaSet's choice (controller.ActivePodsWithRanks, simplified): pods not yet serving go first, then
    the most recently started. Pending pods vanish; started ones drain."""
    candidates = sorted((g for g in groups if g.deleted_at is None), key=lambda g: (g.served, -g.created))
    out = [g for g in groups if g.deleted_at is not None]
    for g in candidates:
        take = min(remove, g.count)
        remove -= take
        if take:
            if now < g.running_at:
                g.count -= take  # never started: nothing to drain
            elif take == g.count:
                g.deleted_at = now
            else:
                g.count -= take
                gone = g.clone(key=next_key, count=take)
                gone.deleted_at = now
                prom.fork(g.key, next_key)
                metrics_server.fork(g.key, next_key)
                next_key += 1
                out.append(gone)
        if g.count:
            out.append(g)
    return out, next_key
