"""Render pods' emulated state as each backend's own Prometheus series (text format 0.0.4).

Every series carries ``namespace``, ``pod`` and ``revision`` (Prometheus scrapes with ``honor_labels``, so these
win over the scrape target's labels) plus the backend's own model labels: ``model``/``version`` for Triton and
llm_runtime series, ``model_name``/``engine`` for vLLM's.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

from llm_operator.metrics import FrontSeries, PythonSeries, TensorRTLLMSeries, TritonSeries, VLLMSeries

from ._model import Histogram, PodState

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
# Not a series any server exports: the emulator's stand-in for a pod's CPU utilisation (busy batch slots over
# batch slots, 0..1), so a CPU-utilisation autoscaling rule can be compared on fake pods (bench/autoscale.py).
# Only the dev cluster's adapter config serves it (llm_operator.dev._metrics_stack.DEV_ADAPTER_RULES).
EMULATED_CPU_UTILIZATION: Final = "llm_emulator_cpu_utilization"

Labels = tuple[tuple[str, str], ...]


@dataclass
class _Family:
    kind: str
    help: str
    samples: list[tuple[str, Labels, float]] = field(default_factory=list)


class _Writer:
    def __init__(self) -> None:
        self.families: dict[str, _Family] = {}

    def _family(self, name: str, kind: str, help_text: str) -> _Family:
        fam = self.families.get(name)
        if fam is None:
            fam = self.families[name] = _Family(kind, help_text)
        elif fam.kind != kind:
            raise ValueError(f"metric family {name} exported as both {fam.kind} and {kind}")
        return fam

    def gauge(self, name: str, help_text: str, labels: Labels, value: float) -> None:
        self._family(name, "gauge", help_text).samples.append((name, labels, value))

    def counter(self, name: str, help_text: str, labels: Labels, value: float) -> None:
        self._family(name, "counter", help_text).samples.append((name, labels, value))

    def histogram(self, name: str, help_text: str, labels: Labels, hist: Histogram, *, scale: float = 1.0) -> None:
        fam = self._family(name, "histogram", help_text)
        for bound, cum in hist.cumulative():
            fam.samples.append((f"{name}_bucket", (*labels, ("le", _number(bound * scale))), cum))
        fam.samples.append((f"{name}_sum", labels, hist.total * scale))
        fam.samples.append((f"{name}_count", labels, hist.count))

    def text(self) -> str:
        lines: list[str] = []
        for name, fam in self.families.items():
            lines.append(f"# HELP {name} {fam.help}")
            lines.append(f"# TYPE {name} {fam.kind}")
            for sample, labels, value in fam.samples:
                body = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
                lines.append(f"{sample}{{{body}}} {_number(value)}")
        return "\n".join(lines) + "\n" if lines else ""


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    return repr(float(value))


def _pod_labels(state: PodState) -> Labels:
    info = state.info
    return (("namespace", info.namespace), ("pod", info.name), ("revision", info.revision))


def _triton_core(w: _Writer, state: PodState, labels: Labels) -> None:
    """Series tritonserver itself exports for every model, whatever the backend."""
    if state.info.backend == "tensorrtllm":
        # The C++ backend reports each request's statistics at its final response, with its outcome.
        success = state.finished - state.failed
        failures = {"REJECTED": state.rejected, "CANCELED": 0.0, "BACKEND": state.failed, "OTHER": 0.0}
        duration_us = state.request_seconds * 1e6
    else:
        # Python-based decoupled models report statistics when execute() returns, before any response: every
        # request counts as a success, and the duration is execute()'s, not the request's.
        success = state.arrived
        failures = {"REJECTED": 0.0, "CANCELED": 0.0, "BACKEND": 0.0, "OTHER": 0.0}
        duration_us = state.execute_seconds * 1e6
    w.counter(TritonSeries.REQUEST_SUCCESS, "Number of successful inference requests, all batch sizes", labels,
              success)
    for reason, value in failures.items():
        w.counter(TritonSeries.REQUEST_FAILURE, "Number of failed inference requests, all batch sizes",
                  (*labels, ("reason", reason)), value)
    w.counter("nv_inference_count", "Number of inferences performed (does not include cached requests)", labels,
              success)
    w.counter(TritonSeries.REQUEST_DURATION_US, "Cumulative inference request duration in microseconds "
              "(includes cached requests)", labels, duration_us)
    # The engines keep their own queues; Triton's scheduler hands requests over at once.
    w.gauge(TritonSeries.PENDING_REQUESTS, "Instantaneous number of pending requests awaiting execution per-model.",
            labels, 0.0)
    w.histogram(TritonSeries.FIRST_RESPONSE_MS, "Duration from request to first response in milliseconds", labels,
                state.first_response, scale=1000.0)


def _python(w: _Writer, state: PodState) -> None:
    labels = (*_pod_labels(state), ("model", state.info.model), ("version", "1"))
    w.gauge(PythonSeries.QUEUE_DEPTH, "Requests waiting for a batch slot", labels, state.queue)
    w.gauge(PythonSeries.RUNNING_REQUESTS, "Requests in the running batch", labels, state.running)
    w.gauge(PythonSeries.KV_CACHE_USAGE, "Fraction of the KV-cache token budget in use", labels,
            state.kv_cache_utilization)
    w.counter(PythonSeries.PROMPT_TOKENS, "Prompt tokens prefilled", labels, state.prompt_tokens)
    w.counter(PythonSeries.GENERATION_TOKENS, "Tokens generated", labels, state.generated_tokens)
    w.counter(PythonSeries.REQUESTS_REJECTED, "Requests refused: queue full", labels, state.rejected)
    w.counter(PythonSeries.REQUESTS_FINISHED, "Requests that left the batch", labels, state.finished)
    # Proposed counter (not in llm_runtime yet, see llm_operator.metrics.PythonSeries.REQUESTS_FAILED).
    w.counter(PythonSeries.REQUESTS_FAILED, "Requests that left the batch with an internal error", labels,
              state.failed)
    w.histogram(PythonSeries.TTFT, "Seconds to the first token", labels, state.ttft)
    w.histogram(PythonSeries.INTER_TOKEN_LATENCY, "Seconds between tokens", labels, state.itl)
    _triton_core(w, state, labels)


def _vllm(w: _Writer, state: PodState) -> None:
    labels = (*_pod_labels(state), ("model_name", state.info.model), ("engine", "0"))
    w.gauge(VLLMSeries.QUEUE_DEPTH, "Number of requests waiting to be processed.", labels, state.queue)
    w.gauge(VLLMSeries.RUNNING_REQUESTS, "Number of requests in model execution batches.", labels, state.running)
    w.gauge(VLLMSeries.KV_CACHE_USAGE, "KV-cache usage. 1 means 100 percent usage.", labels,
            state.kv_cache_utilization)
    w.counter(VLLMSeries.PROMPT_TOKENS, "Number of prefill tokens processed.", labels, state.prompt_tokens)
    w.counter(VLLMSeries.GENERATION_TOKENS, "Number of generation tokens processed.", labels, state.generated_tokens)
    ok = state.finished - state.failed
    for reason, value in (("stop", ok), ("length", 0.0), ("abort", 0.0), ("error", state.failed)):
        w.counter(VLLMSeries.REQUEST_SUCCESS, "Count of successfully processed requests.",
                  (*labels, ("finished_reason", reason)), value)
    w.histogram(VLLMSeries.TTFT, "Histogram of time to first token in seconds.", labels, state.ttft)
    w.histogram(VLLMSeries.INTER_TOKEN_LATENCY, "Histogram of inter-token latency in seconds.", labels, state.itl)
    w.histogram(VLLMSeries.E2E_LATENCY, "Histogram of e2e request latency in seconds.", labels, state.e2e)
    _triton_core(w, state, (*_pod_labels(state), ("model", state.info.model), ("version", "1")))


def _tensorrtllm(w: _Writer, state: PodState, *, batch_slots: int, kv_cache_tokens: float) -> None:
    labels = (*_pod_labels(state), ("model", state.info.model), ("version", "1"))
    requests = {
        "waiting": state.queue,
        "active": state.running,
        "max": float(batch_slots),
        "scheduled": state.running,
        "context": 0.0,
    }
    for kind, value in requests.items():
        w.gauge(TensorRTLLMSeries.REQUEST_METRICS, "TRT LLM request metrics", (*labels, ("request_type", kind)), value)
    tokens_per_block = 64.0
    max_blocks = math.floor(kv_cache_tokens / tokens_per_block)
    used = round(state.kv_cache_utilization * max_blocks)
    blocks = {
        "max": float(max_blocks),
        "free": float(max_blocks - used),
        "used": float(used),
        "tokens_per": tokens_per_block,
        "fraction": state.kv_cache_utilization,
    }
    for kind, value in blocks.items():
        w.gauge(TensorRTLLMSeries.KV_CACHE_BLOCK_METRICS, "TRT LLM KV cache block metrics",
                (*labels, ("kv_cache_block_type", kind)), value)
    w.histogram(TensorRTLLMSeries.INPUT_TOKEN_LEN, "TRT LLM response metrics",
                (*labels, ("response_metric_type", "total_input_tokens")), state.input_len)
    w.histogram(TensorRTLLMSeries.OUTPUT_TOKEN_LEN, "TRT LLM response metrics",
                (*labels, ("response_metric_type", "total_output_tokens")), state.output_len)
    _triton_core(w, state, labels)


@dataclass(frozen=True, kw_only=True)
class Exported:
    """One pod to export, with what the TensorRT-LLM gauges need to know about its capacity."""

    state: PodState
    batch_slots: int
    kv_cache_tokens: float


def _front(w: _Writer, state: PodState) -> None:
    """The OpenAI front every model pod runs: its own failures and refusals. The emulated front never fails on
    its own (the emulated engine's errors are the model's), so both stay 0; they are exported because every
    backend's rules read them."""
    labels = (*_pod_labels(state), ("model", state.info.model), ("version", "1"),
              (FrontSeries.SOURCE_LABEL, FrontSeries.SOURCE))
    w.counter(FrontSeries.REQUESTS_FAILED, "Requests the OpenAI front answered 5xx on its own", labels, 0.0)
    w.counter(FrontSeries.REQUESTS_REJECTED, "Requests the OpenAI front refused at its in-flight limit", labels, 0.0)


def render(pods: Iterable[Exported]) -> str:
    """The /metrics body for ``pods`` (each pod's own backend series, and the emulated CPU utilisation)."""
    w = _Writer()
    for pod in pods:
        w.gauge(EMULATED_CPU_UTILIZATION, "Emulated CPU utilisation: busy batch slots / batch slots (0..1)",
                _pod_labels(pod.state), pod.state.cpu_utilization)
        backend = pod.state.info.backend
        if backend == "python":
            _python(w, pod.state)
        elif backend == "vllm":
            _vllm(w, pod.state)
        else:
            _tensorrtllm(w, pod.state, batch_slots=pod.batch_slots, kv_cache_tokens=pod.kv_cache_tokens)
        _front(w, pod.state)
    return w.text()

