"""Stable names of the custom metrics the runtime exports through ``pb_utils.MetricFamily``.

Autoscaling rules key on these names: never rename one, add a new one instead. Every series carries the
labels ``model`` and ``version`` (Triton's own convention for ``nv_inference_*``).
"""

from __future__ import annotations

from typing import Final

METRIC_QUEUE_DEPTH: Final = "llm_queue_depth"
"""Gauge: requests admitted but waiting for a batch slot."""

METRIC_RUNNING_REQUESTS: Final = "llm_running_requests"
"""Gauge: requests currently in the running (decoding) batch."""

METRIC_PROMPT_TOKENS: Final = "llm_prompt_tokens_total"
"""Counter: prompt tokens prefilled."""

METRIC_GENERATION_TOKENS: Final = "llm_generation_tokens_total"
"""Counter: tokens generated."""

METRIC_TIME_TO_FIRST_TOKEN: Final = "llm_time_to_first_token_seconds"
"""Histogram: seconds from admission to the first generated token."""

METRIC_INTER_TOKEN_LATENCY: Final = "llm_inter_token_latency_seconds"
"""Histogram: per finished request, the mean seconds between its consecutive generated tokens."""

METRIC_KV_CACHE_USAGE: Final = "llm_kv_cache_usage_ratio"
"""Gauge: fraction (0..1) of the KV-cache token budget in use."""

METRIC_BATCH_SIZE: Final = "llm_batch_size"
"""Histogram: mean number of sequences per decode step, one observation per 100 ms report period
while decoding (shows that requests share batches)."""

METRIC_REQUESTS_REJECTED: Final = "llm_requests_rejected_total"
"""Counter: requests refused because the admission queue was full."""

METRIC_REQUESTS_FINISHED: Final = "llm_requests_finished_total"
"""Counter: requests that ended after admission (finished, stopped, cancelled or failed)."""

METRIC_REQUESTS_FAILED: Final = "llm_requests_failed_total"
"""Counter: requests that ended in an internal error (e.g. a failed forward pass); they answer 500. A part of
``llm_requests_finished_total``. Canary analysis reads the error rate from this and ``llm_requests_rejected_total``
(and from the OpenAI front's own counters of the same names with ``source="front"``, see front_metrics.py)."""

ALL_METRICS: Final = (
    METRIC_QUEUE_DEPTH,
    METRIC_RUNNING_REQUESTS,
    METRIC_PROMPT_TOKENS,
    METRIC_GENERATION_TOKENS,
    METRIC_TIME_TO_FIRST_TOKEN,
    METRIC_INTER_TOKEN_LATENCY,
    METRIC_KV_CACHE_USAGE,
    METRIC_BATCH_SIZE,
    METRIC_REQUESTS_REJECTED,
    METRIC_REQUESTS_FINISHED,
    METRIC_REQUESTS_FAILED,
)

LATENCY_BUCKETS_S: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_SIZE_BUCKETS: Final = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0)
