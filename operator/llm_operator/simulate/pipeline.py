"""The metrics chain between a model pod and the HPA, with its lags (docs/metrics.md):

pod ──scrape──► Prometheus ──recording rules (evaluation interval)──► prometheus-adapter ──► HPA, and for the
CPU policy pod ──kubelet──► metrics-server ──► HPA.

* Prometheus keeps each pod's scraped samples. A rule evaluation at time t records, per pod, the queue-depth and
  KV-cache gauges of the latest scrape (an instant selector's value) and `rate(tokens[1m])` over the samples in
  [t - 1m, t], computed as Prometheus 2.x `promql/functions.go` `extrapolatedRate` does (at least two samples,
  extrapolation to the window's edges, zero-point limit for counters). A pod that is no longer scraped goes stale
  at once (staleness markers), so its series disappear from the next evaluation.
* prometheus-adapter answers each HPA query with the latest recorded samples of the pods matched by the HPA's
  selector (`pkg/custom-provider/provider.go` `GetMetricBySelector`: it lists the pods, then queries Prometheus
  at "now"), turning each value into a quantity with `int64(value*1000)` milli-units (`metricFor`). Its relist
  only registers metric *names*: a metric nobody exported during the last relist interval is not served.
* metrics-server scrapes cumulative CPU every resolution and serves the usage between its last two scrapes
  (`pkg/storage/types.go` `resourceUsage`), with that window and the later timestamp.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field


def extrapolated_rate(samples: Iterable[tuple[float, float]], *, range_start: float, range_end: float,
                      window: float) -> float | None:
    """Prometheus `rate()` of a counter over `window` seconds ending at `range_end`, from the samples inside
    [range_start, range_end] (Prometheus 2.x includes both ends). None with fewer than two samples (the series
    is then absent from the result)."""
    points = list(samples)
    if len(points) < 2:
        return None
    first_t, first_v = points[0]
    last_t, last_v = points[-1]
    result = last_v - first_v
    last_value = 0.0
    for _, v in points:  # counter resets
        if v < last_value:
            result += last_value
        last_value = v
    duration_to_start = first_t - range_start
    duration_to_end = range_end - last_t
    sampled = last_t - first_t
    if sampled <= 0:
        return None
    average = sampled / (len(points) - 1)
    if result > 0 and first_v >= 0:
        # Counters cannot be negative: do not extrapolate to before the counter's zero point.
        duration_to_zero = sampled * (first_v / result)
        if duration_to_zero < duration_to_start:
            duration_to_start = duration_to_zero
    threshold = average * 1.1
    interval = sampled
    interval += duration_to_start if duration_to_start < threshold else average / 2
    interval += duration_to_end if duration_to_end < threshold else average / 2
    return result * (interval / sampled) / window


@dataclass
class Recorded:
    """One pod's recorded series after a rule evaluation (None: absent)."""

    queue: float | None
    kv: float | None
    tokens_rate: float | None


@dataclass
class Prometheus:
    rate_window: float
    lookback: float = 300.0
    _counters: dict[int, deque[tuple[float, float]]] = field(default_factory=dict)
    _gauges: dict[int, tuple[float, float, float]] = field(default_factory=dict)
    recorded: dict[int, Recorded] = field(default_factory=dict)
    recorded_at: float = -math.inf

    def scrape(self, t: float, samples: Iterable[tuple[int, float, float, float]]) -> None:
        """One scrape round of every target: (pod key, queue, kv, generated-tokens counter). Targets missing
        from this round are gone: Prometheus writes staleness markers, so their series end here."""
        seen: set[int] = set()
        # Later evaluations (at >= t) read only samples in their last rate window.
        keep = self.rate_window
        for key, queue, kv, counter in samples:
            seen.add(key)
            history = self._counters.get(key)
            if history is None:
                history = self._counters[key] = deque()
            history.append((t, counter))
            while history and history[0][0] < t - keep:
                history.popleft()
            self._gauges[key] = (t, queue, kv)
        for key in [k for k in self._counters if k not in seen]:
            del self._counters[key]
            self._gauges.pop(key, None)

    def fork(self, old: int, new: int) -> None:
        """Pods split off a group keep their series (their history is the group's)."""
        if old in self._counters:
            self._counters[new] = deque(self._counters[old])
        if old in self._gauges:
            self._gauges[new] = self._gauges[old]
        if old in self.recorded:
            r = self.recorded[old]
            self.recorded[new] = Recorded(r.queue, r.kv, r.tokens_rate)

    def evaluate(self, t: float) -> None:
        """The recording rules' evaluation at t (llmops:queue_depth, :kv_cache_utilization,
        :generation_tokens:rate1m per pod)."""
        out: dict[int, Recorded] = {}
        start = t - self.rate_window
        for key, history in self._counters.items():
            gauge = self._gauges.get(key)
            if gauge is None or gauge[0] < t - self.lookback:
                continue
            rate = extrapolated_rate([p for p in history if start <= p[0] <= t], range_start=start, range_end=t,
                                     window=self.rate_window)
            out[key] = Recorded(gauge[1], gauge[2], rate)
        self.recorded = out
        self.recorded_at = t


@dataclass
class MetricsServer:
    _samples: dict[int, deque[tuple[float, float]]] = field(default_factory=dict)

    def scrape(self, t: float, samples: Iterable[tuple[int, float]]) -> None:
        seen: set[int] = set()
        for key, cpu_seconds in samples:
            seen.add(key)
            history = self._samples.setdefault(key, deque(maxlen=2))
            history.append((t, cpu_seconds))
        for key in [k for k in self._samples if k not in seen]:
            del self._samples[key]

    def fork(self, old: int, new: int) -> None:
        if old in self._samples:
            self._samples[new] = deque(self._samples[old], maxlen=2)

    def usage(self, key: int) -> tuple[float, float, float] | None:
        """(cores, timestamp, window) from the last two scrapes, or None before the second."""
        history = self._samples.get(key)
        if history is None or len(history) < 2:
            return None
        (t1, c1), (t2, c2) = history
        return (c2 - c1) / (t2 - t1), t2, t2 - t1
