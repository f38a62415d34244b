"""What one replica can do, and how fast metrics travel: the simulator's parameters, with their sources.

Capacity defaults come from this project's runtime benchmark (README "Runtime", docs/runtime.md "Continuous
batching"): llm_runtime's scheduler made 1208 output tokens/s (median of 3) on an NVIDIA H100 with 32 requests
in the batch. The benchmark has no prefill figure, so the prefill rate is the traffic emulator's default
(docs/metrics.md). A profile file (YAML/JSON, the same camelCase keys as the emulator's `PUT /capacity` plus the
ones below) or flags override them for a real GPU and model.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Final

import yaml

from llm_operator import api
from llm_operator.builders._meta import PRESTOP_SLEEP_SECONDS
from llm_operator.builders.pod import termination_grace_seconds
from llm_operator.dev.traffic._model import DEFAULT_MAX_QUEUE, Capacity
from llm_operator.metrics import RULES_PATH

from .hpa import (
    DEFAULT_CPU_INITIALIZATION_PERIOD,
    DEFAULT_DOWNSCALE_STABILIZATION,
    DEFAULT_INITIAL_READINESS_DELAY,
    DEFAULT_SYNC_PERIOD,
    DEFAULT_TOLERANCE,
)

BENCH_TOKENS_PER_SECOND: Final = 1208.0  # H100, llm_runtime scheduler, 32 requests (docs/runtime.md)
BENCH_BATCH_SLOTS: Final = 32
# A model load (weights from the node's cache, engine start, CUDA graphs) before a new replica serves.
DEFAULT_STARTUP_SECONDS: Final = 90.0


class ProfileError(ValueError):
    """A profile file or flag that cannot be used; the message names the field."""


@dataclass(frozen=True, kw_only=True)
class ServerProfile:
    """One replica: the emulator's queueing model parameters plus start-up, drain and CPU use."""

    tokens_per_second: float = BENCH_TOKENS_PER_SECOND
    batch_slots: int = BENCH_BATCH_SLOTS
    prefill_tokens_per_second: float = Capacity().prefill_tokens_per_second
    kv_cache_tokens: float = Capacity().kv_cache_tokens
    max_queue: int | None = None
    # Pending (scheduling, image pull) then loading (Running, not Ready, no metrics) before it serves.
    pending_seconds: float = 0.0
    startup_seconds: float = DEFAULT_STARTUP_SECONDS
    # Scale-down: the preStop sleep, then Triton drains in-flight requests for at most the grace period.
    prestop_seconds: float = float(PRESTOP_SLEEP_SECONDS)
    grace_seconds: float = 330.0
    gpus: float = 1.0
    # CPU (for the CPU-utilization policy): a replica uses its request times busy batch slots over batch slots,
    # the traffic emulator's stand-in for an inference server's CPU (docs/metrics.md). Only the ratio matters
    # to a Utilization target; the request is the spec's resources.cpu, else a nominal core.
    cpu_request_cores: float = 1.0

    def __post_init__(self) -> None:
        for name in ("tokens_per_second", "prefill_tokens_per_second", "kv_cache_tokens", "gpus"):
            if not getattr(self, name) > 0:
                raise ProfileError(f"{_camel(name)} must be > 0, got {getattr(self, name)}")
        if self.batch_slots < 1:
            raise ProfileError(f"batchSlots must be >= 1, got {self.batch_slots}")
        for name in ("pending_seconds", "startup_seconds", "prestop_seconds", "grace_seconds"):
            value = getattr(self, name)
            if not (value >= 0 and math.isfinite(value)):
                raise ProfileError(f"{_camel(name)} must be a number >= 0, got {value}")
        if not self.cpu_request_cores > 0:
            raise ProfileError(f"cpuRequestCores must be > 0, got {self.cpu_request_cores}")

    def capacity(self) -> Capacity:
        """The emulator model's per-pod capacity (so both use one queueing model)."""
        return Capacity(tokens_per_second=self.tokens_per_second, batch_slots=self.batch_slots,
                        prefill_tokens_per_second=self.prefill_tokens_per_second,
                        kv_cache_tokens=self.kv_cache_tokens, max_queue=self.max_queue)


@dataclass(frozen=True, kw_only=True)
class Timing:
    """How often each box of the metrics chain acts (seconds), and the HPA controller's flags.

    Defaults are a production cluster's: HPA sync 15 s and tolerance 0.1 (kube-controller-manager), the
    PodMonitor's scrape interval (spec.monitoring.interval, 15 s), rule evaluation 30 s (kube-prometheus-stack's
    `evaluationInterval`; Prometheus itself defaults to 1 m), the recording rules' 1 m rate window,
    prometheus-adapter's relist 10 min and metrics-server's 15 s resolution (its deployment manifest).
    `llmctl dev up --metrics` uses 5 s / 2 s / 2 s / relist 5 s (:data:`DEV_CLUSTER`).
    """

    step: float = 1.0
    sync_period: float = DEFAULT_SYNC_PERIOD
    scrape_interval: float = 15.0
    evaluation_interval: float = 30.0
    rate_window: float = 60.0
    relist_interval: float = 600.0
    metrics_resolution: float = 15.0
    lookback: float = 300.0  # Prometheus' lookback delta: an instant query sees samples this old
    tolerance: float = DEFAULT_TOLERANCE
    downscale_stabilization: float = DEFAULT_DOWNSCALE_STABILIZATION
    cpu_initialization_period: float = DEFAULT_CPU_INITIALIZATION_PERIOD
    initial_readiness_delay: float = DEFAULT_INITIAL_READINESS_DELAY
    # When each box first acts (seconds into the trace; a real cluster's phases are arbitrary). None: the first
    # scrape half an interval in, each later box half its own period after the one it reads, which puts the
    # chain's lag at its average.
    scrape_phase: float | None = None
    evaluation_phase: float | None = None
    sync_phase: float | None = None

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None and f.name.endswith("_phase"):
                continue
            if not (value >= 0 and math.isfinite(value)):
                raise ProfileError(f"{f.name.replace('_', '-')} must be a number >= 0, got {value}")
        if not self.step > 0:
            raise ProfileError(f"step must be > 0, got {self.step}")
        for name in ("sync_period", "scrape_interval", "evaluation_interval", "metrics_resolution"):
            if getattr(self, name) < self.step:
                raise ProfileError(f"{name.replace('_', '-')} ({getattr(self, name):g} s) must be at least the "
                                   f"simulation step ({self.step:g} s)")


DEV_CLUSTER: Final = Timing(sync_period=5.0, scrape_interval=2.0, evaluation_interval=2.0, relist_interval=5.0)


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p.title() for p in rest)


_PROFILE_FIELDS: Final = {_camel(f.name): f.name for f in fields(ServerProfile)}


def rules_rate_window(path: Path = RULES_PATH) -> float:
    """The rate window of the shipped recording rules (`rate(...[1m])` for the tokens/s series), so the
    simulator follows the rules if they change."""
    text = path.read_text(encoding="utf-8")
    m = re.search(r"rate\(llm_generation_tokens_total\[(\d+)([smh])\]\)", text)
    if not m:
        return 60.0
    return float(m.group(1)) * {"s": 1, "m": 60, "h": 3600}[m.group(2)]


def parse_duration_seconds(text: str) -> float:
    """Kubernetes/Prometheus durations (`15s`, `1m`, `1m30s`) and plain numbers."""
    text = str(text).strip()
    try:
        return float(text)
    except ValueError:
        pass
    total = 0.0
    pos = 0
    for m in re.finditer(r"(\d+(?:\.\d+)?)(ms|s|m|h)", text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[m.group(2)]
        pos = m.end()
    if pos != len(text) or not text:
        raise ProfileError(f"not a duration: {text!r} (e.g. 15s, 1m)")
    return total


def profile_for(llmd: api.LLMDeployment, *, overrides: Mapping[str, Any] | None = None) -> ServerProfile:
    """The profile of `llmd`'s replicas: the bench defaults, the spec's GPUs, queue bound, grace period and CPU
    request, then `overrides` (profile-file keys, camelCase)."""
    spec = llmd.spec
    if spec.resources.gpu is not None:
        gpus = float(spec.resources.gpu.count)
    elif spec.resources.mig is not None:
        gpus = float(spec.resources.mig.count)  # GPU-hours count MIG slices as the slices held
    else:
        gpus = 1.0
    backend = spec.runtime.backend
    # vllm queues inside the engine (unbounded); python and tensorrtllm refuse beyond maxQueueSize.
    max_queue = None if DEFAULT_MAX_QUEUE[backend] is None else spec.runtime.max_queue_size
    cpu = _cpu_cores(spec.resources.cpu) if spec.resources.cpu is not None else 1.0
    profile = ServerProfile(max_queue=max_queue, gpus=gpus, grace_seconds=float(termination_grace_seconds(spec)),
                            cpu_request_cores=cpu)
    return apply_overrides(profile, overrides or {})


def _cpu_cores(quantity: str | int | float) -> float:
    text = str(quantity)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def apply_overrides(profile: ServerProfile, overrides: Mapping[str, Any]) -> ServerProfile:
    changes: dict[str, Any] = {}
    for key, value in overrides.items():
        name = _PROFILE_FIELDS.get(key)
        if name is None:
            raise ProfileError(f"unknown profile field {key!r}; fields: {', '.join(sorted(_PROFILE_FIELDS))}")
        if name == "batch_slots":
            if not isinstance(value, int) or isinstance(value, bool):
                raise ProfileError(f"batchSlots must be a whole number, got {value!r}")
        elif name == "max_queue":
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
                raise ProfileError(f"maxQueue must be a whole number >= 0 or null, got {value!r}")
        elif isinstance(value, bool) or not isinstance(value, int | float):
            raise ProfileError(f"{key} must be a number, got {value!r}")
        changes[name] = value
    try:
        return replace(profile, **changes)
    except ProfileError:
        raise
    except (TypeError, ValueError) as exc:
        raise ProfileError(str(exc)) from None


def read_profile_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ProfileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise ProfileError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ProfileError(f"{path}: expected a mapping of profile fields, got {type(data).__name__}")
    for key in data:
        if key not in _PROFILE_FIELDS:
            raise ProfileError(f"{path}: unknown field {key!r}; fields: {', '.join(sorted(_PROFILE_FIELDS))}")
    return data


def timing_for(llmd: api.LLMDeployment, *, base: Timing | None = None) -> Timing:
    """Production timing with the LLMDeployment's own scrape interval and the shipped rules' rate window."""
    base = base or Timing()
    scrape = parse_duration_seconds(llmd.spec.monitoring.interval)
    return replace(base, scrape_interval=max(scrape, base.step), rate_window=rules_rate_window())
