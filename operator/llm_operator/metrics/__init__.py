"""One metric vocabulary across serving backends.

Each backend (``python`` = this project's ``llm_runtime``, ``vllm``, ``tensorrtllm``) exports different series.
The Prometheus recording rules in ``recording_rules.yaml`` (:data:`RULES_PATH`) map all of them onto the
canonical ``llmops:*`` series below, so the autoscaler and the canary analysis never need to know which
backend a revision runs. ``adapter.yaml`` (:data:`ADAPTER_CONFIG_PATH`) is the prometheus-adapter config that
exposes the per-pod canonical series as ``custom.metrics.k8s.io`` Pods metrics for an HPA.

Two levels of canonical series:

* per pod, labels ``namespace``, ``pod``, ``revision``, ``backend``: what an HPA reads through the adapter;
* per revision, labels ``namespace``, ``revision``, ``backend``: what the canary analysis compares.

The ``revision`` label is the pod label ``serving.llmops.dev/revision``. The traffic emulator exports it as a
target label ``revision`` (scraped with ``honor_labels``); in production the operator's PodMonitor relabels it
(``podTargetLabels: [serving.llmops.dev/revision]`` gives ``serving_llmops_dev_revision``; add a
``relabelings`` entry ``sourceLabels: [__meta_kubernetes_pod_label_serving_llmops_dev_revision]``,
``targetLabel: revision``). See docs/metrics.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final, get_args

from llm_runtime import metrics as _runtime

from llm_operator.api import Backend

RULES_PATH: Final = Path(__file__).with_name("recording_rules.yaml")
ADAPTER_CONFIG_PATH: Final = Path(__file__).with_name("adapter.yaml")

BACKENDS: Final[tuple[Backend, ...]] = get_args(Backend)

POD_LABELS: Final = ("namespace", "pod", "revision")
"""Labels every per-pod canonical series keeps (plus ``backend``, set by the rule)."""
REVISION_LABELS: Final = ("namespace", "revision")
"""Labels every per-revision canonical series keeps (plus ``backend``)."""
BACKEND_LABEL: Final = "backend"
REVISION_LABEL: Final = "revision"

# ------------------------------------------------------------------------------ canonical, per pod

QUEUE_DEPTH: Final = "llmops:queue_depth"
"""Gauge, requests: admitted but waiting for a batch slot (the engine's queue, not Triton's)."""
RUNNING_REQUESTS: Final = "llmops:running_requests"
"""Gauge, requests: in the running (decoding) batch."""
GENERATION_TOKENS_RATE: Final = "llmops:generation_tokens:rate1m"
"""Tokens/s generated, over 1 minute."""
PROMPT_TOKENS_RATE: Final = "llmops:prompt_tokens:rate1m"
"""Prompt tokens/s processed, over 1 minute."""
TTFT_P50: Final = "llmops:ttft_seconds:p50"
"""Seconds, median time to first token over 1 minute (absent while no request got a first token)."""
TTFT_P95: Final = "llmops:ttft_seconds:p95"
"""Seconds, 95th percentile time to first token over 1 minute."""
INTER_TOKEN_LATENCY_MEAN: Final = "llmops:inter_token_latency_seconds:mean1m"
"""Seconds, mean time between consecutive generated tokens over 1 minute."""
REQUESTS_RATE: Final = "llmops:requests:rate1m"
"""Requests/s that ended (answered, failed or refused, by the model or by the OpenAI front), over 1 minute."""
REQUEST_ERRORS_RATE: Final = "llmops:request_errors:rate1m"
"""Requests/s that ended in an error (refused, or failed with a 5xx by the model or by the OpenAI front itself), over
1 minute: what clients saw."""
REQUEST_ERROR_RATIO: Final = "llmops:request_error_ratio:rate1m"
"""0..1, errors / requests over 1 minute (absent while no request ended)."""
KV_CACHE_UTILIZATION: Final = "llmops:kv_cache_utilization"
"""Gauge 0..1: fraction of the KV cache in use."""

# Intermediate per-pod series: numerator and denominator of the mean inter-token latency. Kept apart so that a
# per-revision mean weights every observation equally instead of averaging per-pod means.
ITL_SUM_RATE: Final = "llmops:inter_token_latency_seconds_sum:rate1m"
ITL_COUNT_RATE: Final = "llmops:inter_token_latency_seconds_count:rate1m"

PER_BACKEND: Final = (
    QUEUE_DEPTH,
    RUNNING_REQUESTS,
    GENERATION_TOKENS_RATE,
    PROMPT_TOKENS_RATE,
    TTFT_P50,
    TTFT_P95,
    ITL_SUM_RATE,
    ITL_COUNT_RATE,
    REQUESTS_RATE,
    REQUEST_ERRORS_RATE,
    KV_CACHE_UTILIZATION,
)
"""Per-pod series with one rule per backend (the rule sets the ``backend`` label)."""

DERIVED_PER_POD: Final = (INTER_TOKEN_LATENCY_MEAN, REQUEST_ERROR_RATIO)
"""Per-pod series computed from the per-backend ones, backend-independent."""

PER_POD: Final = (*PER_BACKEND, *DERIVED_PER_POD)

# ------------------------------------------------------------------------------ canonical, per revision


def revision_series(pod_series: str) -> str:
    """The per-revision name of a per-pod canonical series: ``llmops:x`` → ``llmops:revision:x``."""
    prefix = "llmops:"
    if not pod_series.startswith(prefix):
        raise ValueError(f"{pod_series!r} is not a canonical llmops: series")
    return f"llmops:revision:{pod_series[len(prefix):]}"


REVISION_PODS: Final = "llmops:revision:pods"
"""Number of pods of the revision that export metrics (started and Ready)."""
REVISION_QUEUE_DEPTH: Final = revision_series(QUEUE_DEPTH)
REVISION_RUNNING_REQUESTS: Final = revision_series(RUNNING_REQUESTS)
REVISION_GENERATION_TOKENS_RATE: Final = revision_series(GENERATION_TOKENS_RATE)
REVISION_PROMPT_TOKENS_RATE: Final = revision_series(PROMPT_TOKENS_RATE)
REVISION_TTFT_P50: Final = revision_series(TTFT_P50)
REVISION_TTFT_P95: Final = revision_series(TTFT_P95)
REVISION_ITL_SUM_RATE: Final = revision_series(ITL_SUM_RATE)
REVISION_ITL_COUNT_RATE: Final = revision_series(ITL_COUNT_RATE)
REVISION_INTER_TOKEN_LATENCY_MEAN: Final = revision_series(INTER_TOKEN_LATENCY_MEAN)
REVISION_REQUESTS_RATE: Final = revision_series(REQUESTS_RATE)
REVISION_REQUEST_ERRORS_RATE: Final = revision_series(REQUEST_ERRORS_RATE)
REVISION_REQUEST_ERROR_RATIO: Final = revision_series(REQUEST_ERROR_RATIO)
REVISION_KV_CACHE_UTILIZATION: Final = revision_series(KV_CACHE_UTILIZATION)

PER_REVISION: Final = (
    REVISION_PODS,
    REVISION_QUEUE_DEPTH,
    REVISION_RUNNING_REQUESTS,
    REVISION_GENERATION_TOKENS_RATE,
    REVISION_PROMPT_TOKENS_RATE,
    REVISION_TTFT_P50,
    REVISION_TTFT_P95,
    REVISION_ITL_SUM_RATE,
    REVISION_ITL_COUNT_RATE,
    REVISION_INTER_TOKEN_LATENCY_MEAN,
    REVISION_REQUESTS_RATE,
    REVISION_REQUEST_ERRORS_RATE,
    REVISION_REQUEST_ERROR_RATIO,
    REVISION_KV_CACHE_UTILIZATION,
)

# ------------------------------------------------------------------------------ adapter (custom metrics)

ADAPTER_QUEUE_DEPTH: Final = "llmops_queue_depth"
ADAPTER_RUNNING_REQUESTS: Final = "llmops_running_requests"
ADAPTER_GENERATION_TOKENS_PER_SECOND: Final = "llmops_generation_tokens_per_second"
ADAPTER_PROMPT_TOKENS_PER_SECOND: Final = "llmops_prompt_tokens_per_second"
ADAPTER_TTFT_P95_SECONDS: Final = "llmops_ttft_p95_seconds"
ADAPTER_INTER_TOKEN_LATENCY_SECONDS: Final = "llmops_inter_token_latency_seconds"
ADAPTER_KV_CACHE_UTILIZATION: Final = "llmops_kv_cache_utilization"

ADAPTER_METRICS: Final[dict[str, str]] = {
    ADAPTER_QUEUE_DEPTH: QUEUE_DEPTH,
    ADAPTER_RUNNING_REQUESTS: RUNNING_REQUESTS,
    ADAPTER_GENERATION_TOKENS_PER_SECOND: GENERATION_TOKENS_RATE,
    ADAPTER_PROMPT_TOKENS_PER_SECOND: PROMPT_TOKENS_RATE,
    ADAPTER_TTFT_P95_SECONDS: TTFT_P95,
    ADAPTER_INTER_TOKEN_LATENCY_SECONDS: INTER_TOKEN_LATENCY_MEAN,
    ADAPTER_KV_CACHE_UTILIZATION: KV_CACHE_UTILIZATION,
}
"""Custom-metrics name (what an HPA's ``pods.metric.name`` says) → the per-pod recorded series behind it."""

# ------------------------------------------------------------------------------ backend source series


class PythonSeries:
    """``llm_runtime`` (names from runtime/llm_runtime/metrics.py); labels ``model``, ``version``."""

    QUEUE_DEPTH: Final = _runtime.METRIC_QUEUE_DEPTH
    RUNNING_REQUESTS: Final = _runtime.METRIC_RUNNING_REQUESTS
    PROMPT_TOKENS: Final = _runtime.METRIC_PROMPT_TOKENS
    GENERATION_TOKENS: Final = _runtime.METRIC_GENERATION_TOKENS
    TTFT: Final = _runtime.METRIC_TIME_TO_FIRST_TOKEN
    INTER_TOKEN_LATENCY: Final = _runtime.METRIC_INTER_TOKEN_LATENCY
    KV_CACHE_USAGE: Final = _runtime.METRIC_KV_CACHE_USAGE
    REQUESTS_FINISHED: Final = _runtime.METRIC_REQUESTS_FINISHED
    REQUESTS_REJECTED: Final = _runtime.METRIC_REQUESTS_REJECTED
    REQUESTS_FAILED: Final = _runtime.METRIC_REQUESTS_FAILED
    """Requests that ended in an internal error (a failed forward pass; they answer 500)."""


class FrontSeries:
    """llm_runtime's OpenAI front (runtime/llm_runtime/front_metrics.py), served on its own port at ``/metrics``.

    The same counter names as the python backend's, with the label ``source="front"``: what only the front saw
    (Triton unreachable, a stream that broke, a bug in the front: answered 5xx; or refused with 503 by its
    in-flight limit). Those requests never reach the model's counters, so every backend's rules add them once to
    requests and to errors; a 5xx that carries Triton's own error is not counted by the front (the model did).
    Labels ``model``, ``version``, ``source``.
    """

    REQUESTS_FAILED: Final = _runtime.METRIC_REQUESTS_FAILED
    REQUESTS_REJECTED: Final = _runtime.METRIC_REQUESTS_REJECTED
    SOURCE_LABEL: Final = "source"
    SOURCE: Final = "front"


class VLLMSeries:
    """vLLM V1 engine (``vllm/v1/metrics/loggers.py``, vLLM >= 0.11); labels ``model_name``, ``engine``.

    Deprecated names still read as fallbacks: ``vllm:time_per_output_token_seconds`` (renamed to
    ``vllm:inter_token_latency_seconds`` in 0.11, hidden in 0.12; Triton's vllm_backend still reports the old
    name) and ``vllm:gpu_cache_usage_perc`` (renamed to ``vllm:kv_cache_usage_perc``; hidden in 0.11).
    """

    QUEUE_DEPTH: Final = "vllm:num_requests_waiting"
    RUNNING_REQUESTS: Final = "vllm:num_requests_running"
    PROMPT_TOKENS: Final = "vllm:prompt_tokens_total"
    GENERATION_TOKENS: Final = "vllm:generation_tokens_total"
    TTFT: Final = "vllm:time_to_first_token_seconds"
    INTER_TOKEN_LATENCY: Final = "vllm:inter_token_latency_seconds"
    INTER_TOKEN_LATENCY_DEPRECATED: Final = "vllm:time_per_output_token_seconds"
    E2E_LATENCY: Final = "vllm:e2e_request_latency_seconds"
    KV_CACHE_USAGE: Final = "vllm:kv_cache_usage_perc"
    KV_CACHE_USAGE_DEPRECATED: Final = "vllm:gpu_cache_usage_perc"
    REQUEST_SUCCESS: Final = "vllm:request_success_total"
    """Counts every finished request by ``finished_reason`` (stop, length, abort, error, ...)."""


class TritonSeries:
    """Triton core (every backend runs in tritonserver); labels ``model``, ``version``. No ``_total``."""

    REQUEST_SUCCESS: Final = "nv_inference_request_success"
    REQUEST_FAILURE: Final = "nv_inference_request_failure"
    REQUEST_DURATION_US: Final = "nv_inference_request_duration_us"
    PENDING_REQUESTS: Final = "nv_inference_pending_request_count"
    FIRST_RESPONSE_MS: Final = "nv_inference_first_response_histogram_ms"


class TensorRTLLMSeries:
    """TensorRT-LLM backend in Triton (``custom_metrics_reporter.cc``); labels ``model``, ``version``."""

    REQUEST_METRICS: Final = "nv_trt_llm_request_metrics"
    """Gauge by ``request_type``: ``waiting`` (queue), ``active`` (running), ``max``, ``scheduled``, ``context``."""
    KV_CACHE_BLOCK_METRICS: Final = "nv_trt_llm_kv_cache_block_metrics"
    """Gauge by ``kv_cache_block_type``: ``fraction`` (used/max), ``used``, ``free``, ``max``, ``tokens_per``."""
    INPUT_TOKEN_LEN: Final = "nv_llm_input_token_len"
    """Histogram of prompt tokens per request (observed at the final response)."""
    OUTPUT_TOKEN_LEN: Final = "nv_llm_output_token_len"
    """Histogram of output tokens per request (observed at the final response)."""


SOURCE_SERIES: Final[dict[Backend, tuple[str, ...]]] = {
    "python": (
        PythonSeries.QUEUE_DEPTH,
        PythonSeries.RUNNING_REQUESTS,
        PythonSeries.PROMPT_TOKENS,
        PythonSeries.GENERATION_TOKENS,
        PythonSeries.TTFT,
        PythonSeries.INTER_TOKEN_LATENCY,
        PythonSeries.KV_CACHE_USAGE,
        PythonSeries.REQUESTS_FINISHED,
        PythonSeries.REQUESTS_REJECTED,
        PythonSeries.REQUESTS_FAILED,
    ),
    "vllm": (
        VLLMSeries.QUEUE_DEPTH,
        VLLMSeries.RUNNING_REQUESTS,
        VLLMSeries.PROMPT_TOKENS,
        VLLMSeries.GENERATION_TOKENS,
        VLLMSeries.TTFT,
        VLLMSeries.INTER_TOKEN_LATENCY,
        VLLMSeries.INTER_TOKEN_LATENCY_DEPRECATED,
        VLLMSeries.E2E_LATENCY,
        VLLMSeries.KV_CACHE_USAGE,
        VLLMSeries.KV_CACHE_USAGE_DEPRECATED,
        VLLMSeries.REQUEST_SUCCESS,
        FrontSeries.REQUESTS_FAILED,
        FrontSeries.REQUESTS_REJECTED,
    ),
    "tensorrtllm": (
        TensorRTLLMSeries.REQUEST_METRICS,
        TensorRTLLMSeries.KV_CACHE_BLOCK_METRICS,
        TensorRTLLMSeries.INPUT_TOKEN_LEN,
        TensorRTLLMSeries.OUTPUT_TOKEN_LEN,
        TritonSeries.REQUEST_SUCCESS,
        TritonSeries.REQUEST_FAILURE,
        TritonSeries.REQUEST_DURATION_US,
        TritonSeries.FIRST_RESPONSE_MS,
        FrontSeries.REQUESTS_FAILED,
        FrontSeries.REQUESTS_REJECTED,
    ),
}
"""The backend series each backend's rules read (metric family names; histograms without suffixes)."""

__all__ = [
    "ADAPTER_CONFIG_PATH",
    "ADAPTER_METRICS",
    "BACKENDS",
    "DERIVED_PER_POD",
    "PER_BACKEND",
    "PER_POD",
    "PER_REVISION",
    "RULES_PATH",
    "SOURCE_SERIES",
    "Backend",
    "FrontSeries",
    "PythonSeries",
    "TensorRTLLMSeries",
    "TritonSeries",
    "VLLMSeries",
    "revision_series",
]
