"""Publish engine statistics as Triton custom metrics from a background thread.

Each ``increment``/``set``/``observe`` is an IPC round trip to the Triton process, so the reporter
aggregates on a short period instead of reporting from the scheduler's hot loop.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from llm_runtime import metrics as m
from llm_runtime.engine import Engine

log = logging.getLogger("llm_runtime")

_PERIOD_S = 0.1


class MetricsReporter:
    def __init__(self, *, engine: Engine, pb_utils: Any, labels: dict[str, str], period_s: float = _PERIOD_S) -> None:
        self._engine = engine
        self._period_s = period_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        fam = pb_utils.MetricFamily
        # The families must outlive their Metric objects: Triton refuses updates once a family is gone.
        self._families: list[Any] = []

        def family(name: str, description: str, kind: Any) -> Any:
            f = fam(name=name, description=description, kind=kind)
            self._families.append(f)
            return f

        try:
            gauge, counter, hist = fam.GAUGE, fam.COUNTER, fam.HISTOGRAM
            self._queue = family(m.METRIC_QUEUE_DEPTH, "Requests waiting for a batch slot", gauge).Metric(labels=labels)
            self._running = family(m.METRIC_RUNNING_REQUESTS, "Requests in the running batch", gauge).Metric(
                labels=labels
            )
            self._kv = family(m.METRIC_KV_CACHE_USAGE, "Fraction of the KV-cache token budget in use", gauge).Metric(
                labels=labels
            )
            self._prompt = family(m.METRIC_PROMPT_TOKENS, "Prompt tokens prefilled", counter).Metric(labels=labels)
            self._gen = family(m.METRIC_GENERATION_TOKENS, "Tokens generated", counter).Metric(labels=labels)
            self._rejected = family(m.METRIC_REQUESTS_REJECTED, "Requests refused: queue full", counter).Metric(
                labels=labels
            )
            self._finished = family(m.METRIC_REQUESTS_FINISHED, "Requests that left the batch", counter).Metric(
                labels=labels
            )
            self._failed = family(m.METRIC_REQUESTS_FAILED, "Requests that ended in an internal error",
                                  counter).Metric(labels=labels)
            buckets = list(m.LATENCY_BUCKETS_S)
            self._ttft = family(m.METRIC_TIME_TO_FIRST_TOKEN, "Seconds to the first token", hist).Metric(
                labels=labels, buckets=buckets
            )
            self._itl = family(m.METRIC_INTER_TOKEN_LATENCY, "Seconds between tokens", hist).Metric(
                labels=labels, buckets=buckets
            )
            self._batch = family(m.METRIC_BATCH_SIZE, "Sequences per decode step", hist).Metric(
                labels=labels, buckets=list(m.BATCH_SIZE_BUCKETS)
            )
            self.enabled = True
        except Exception as exc:  # tritonserver --allow-metrics=false: serve without custom metrics
            log.warning("llm_runtime: custom metrics disabled: %s", exc)
            self.enabled = False
        self._last = engine.stats()
        self._gauges: dict[str, float] = {}

    def start(self) -> None:
        if not self.enabled:
            return
        self._thread = threading.Thread(target=self._loop, name="llm-metrics", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def _loop(self) -> None:
        while not self._stop.wait(self._period_s):
            try:
                self.report_once()
            except Exception:
                log.exception("llm_runtime: metrics report failed")

    def report_once(self) -> None:
        # Only changed values are sent: every call is an IPC that holds the GIL until Triton answers, and
        # an idle model that makes none cannot be caught mid-call when Triton unloads it.
        s = self._engine.stats()
        for key, metric, value in (
            ("queue", self._queue, float(s.queue_depth)),
            ("running", self._running, float(s.running)),
            ("kv", self._kv, float(s.kv_cache_usage)),
        ):
            if self._gauges.get(key) != value:
                metric.set(value)
                self._gauges[key] = value
        for metric, now, before in (
            (self._prompt, s.prompt_tokens_total, self._last.prompt_tokens_total),
            (self._gen, s.generation_tokens_total, self._last.generation_tokens_total),
            (self._rejected, s.rejected_total, self._last.rejected_total),
            (self._finished, s.finished_total, self._last.finished_total),
            (self._failed, s.failed_total, self._last.failed_total),
        ):
            if now > before:
                metric.increment(float(now - before))
        self._last = s
        ttft, itl, batch_sizes = self._engine.drain_samples()
        for v in ttft:
            self._ttft.observe(v)
        for v in itl:
            self._itl.observe(v)
        if batch_sizes:
            # One observation per report period: the mean decode batch over the period's steps.
            self._batch.observe(sum(batch_sizes) / len(batch_sizes))
