"""Closed-loop autoscaling on the real chain of the metrics test bed:

traffic emulator → Prometheus (recording rules) → prometheus-adapter → HPA in kube-controller-manager →
LLMDeployment /scale → operator → Deployments → kwok pods → back to the emulator.

Timing (README "Metrics test bed"): HPA sync 5 s, scrape and rule evaluation 2 s, adapter relist 5 s, emulator
startup delay 3 s. A change of load reaches the HPA within about 10 s and a decision within one more sync;
each bound below is that plus the behaviour's own windows, with margin for a 2-core machine.
"""

from __future__ import annotations

import itertools
import os
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from e2e.pytest_plugin import Cluster, Operator, wait_for
from tests.e2e.test_operator import apply, condition, events, get, llmd, wait_condition

pytestmark = pytest.mark.cluster

# One emulated replica: 2500 generated tokens/s at a full batch of 32 (the emulator's default capacity).
OUTPUT_TOKENS = 256
PER_POD_RPS = 2500 / OUTPUT_TOKENS  # ~9.8 requests/s before a queue builds
REACT = 60.0  # HPA sync + scrape + rule evaluation + relist + startup delay + one scale-up period, with margin
FAST_DOWN = {"scaleDown": {"stabilizationWindowSeconds": 20,
                           "policies": [{"type": "Pods", "value": 1, "periodSeconds": 10}]}}


@pytest.fixture
def traffic(cluster: Cluster) -> Any:
    from llm_operator.dev.traffic.client import TrafficClient

    assert cluster.traffic_url, "the session cluster runs without the metrics test bed"
    return TrafficClient(cluster.traffic_url)


def _model(name: str, *, backend: str = "vllm", gpus: int = 1, product: str = "NVIDIA-H100-80GB-HBM3",
           **autoscaling: Any) -> dict[str, Any]:
    doc = llmd(name, runtime={"backend": backend}, resources={"gpu": {"count": gpus, "product": product}},
               autoscaling={"minReplicas": 1, "maxReplicas": 4, **autoscaling})
    del doc["spec"]["replicas"]
    return doc


class Replicas:
    """spec.replicas of an LLMDeployment over time, sampled every 0.5 s in the background."""

    def __init__(self, cluster: Cluster, namespace: str, name: str) -> None:
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(cluster, namespace, name), daemon=True)

    def _run(self, cluster: Cluster, namespace: str, name: str) -> None:
        while not self._stop.is_set():
            obj = get(cluster, namespace, "llmd", name)
            if obj is not None:
                self.samples.append((time.monotonic(), int(obj["spec"].get("replicas", 0))))
            self._stop.wait(0.5)

    def __enter__(self) -> Replicas:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def direction_changes(self) -> int:
        values = [v for _, v in self.samples]
        steps = [b - a for a, b in itertools.pairwise(values) if b != a]
        return sum(1 for a, b in itertools.pairwise(steps) if (a > 0) != (b > 0))


def _replicas(cluster: Cluster, namespace: str, name: str) -> int:
    return int((get(cluster, namespace, "llmd", name) or {}).get("spec", {}).get("replicas", 0))


def _ready(cluster: Cluster, namespace: str, name: str, replicas: int) -> dict[str, Any]:
    obj: dict[str, Any] = wait_for(
        lambda: (o := get(cluster, namespace, "llmd", name)) and o["spec"].get("replicas") == replicas
        and (o["status"] or {}).get("readyReplicas") == replicas and o,
        timeout=REACT, what=f"{name} at {replicas} ready replicas")
    return obj


@pytest.mark.parametrize("backend", ["vllm", "tensorrtllm"])
def test_step_up_on_queue_depth_then_down_after_the_window_without_flapping(
    cluster: Cluster, operator: Operator, namespace: str, traffic: Any, backend: str
) -> None:
    name = f"step-{backend}"
    apply(cluster, namespace, _model(name, backend=backend, metrics={"queueDepth": 4}, behavior=FAST_DOWN))
    _ready(cluster, namespace, name, 1)
    with Replicas(cluster, namespace, name) as seen:
        # 2.5 replicas' worth of load: the queue grows on one replica until the HPA adds two at once.
        traffic.set_load(namespace=namespace, name=name, rps=2.5 * PER_POD_RPS, output_tokens=OUTPUT_TOKENS)
        started = time.monotonic()
        obj = wait_for(lambda: (o := get(cluster, namespace, "llmd", name)) and o["spec"].get("replicas", 1) >= 3
                       and o, timeout=REACT, interval=0.5, what="scale-up to 3 replicas")
        reacted = time.monotonic() - started
        wait_condition(cluster, namespace, name, "ScalingActive", "True", "ValidMetricFound")
        scaled = wait_for(lambda: [e for e in events(cluster, namespace, name) if e["reason"] == "Scaled"],
                          timeout=30, what="the Scaled Event")
        assert "queue depth" in scaled[-1]["message"] and "> target 4" in scaled[-1]["message"], scaled
        obj = get(cluster, namespace, "llmd", name) or obj
        assert obj["status"]["autoscaling"]["lastScale"].endswith("-> 3"), obj["status"]["autoscaling"]
        assert _replicas(cluster, namespace, name) <= 4
        # Load gone: replicas fall only after the 20 s stabilization window, one pod per period, down to min.
        traffic.set_load(namespace=namespace, name=name, rps=0, output_tokens=OUTPUT_TOKENS)
        dropped = time.monotonic()
        wait_for(lambda: _replicas(cluster, namespace, name) == 1, timeout=REACT + 60, interval=0.5,
                 what="scale-down to minReplicas")
    first_down = next(t for t, v in seen.samples if t > dropped and v < max(v for _, v in seen.samples))
    assert first_down - dropped >= 20 - 2, "scaled down before the stabilization window"  # 2 s: sampling
    assert seen.direction_changes() <= 1, seen.samples  # one step up, one step down: no flapping
    assert reacted < REACT


def test_token_throughput_alone_drives_a_scale_up(cluster: Cluster, operator: Operator, namespace: str,
                                                  traffic: Any) -> None:
    name = "tokens"
    # A queue target no load here reaches, and a tokens/s target that 1.5k tokens/s on one replica exceeds.
    apply(cluster, namespace, _model(name, backend="python", metrics={"queueDepth": 1000, "tokensPerSecond": 1000}))
    _ready(cluster, namespace, name, 1)
    traffic.set_load(namespace=namespace, name=name, rps=6, output_tokens=OUTPUT_TOKENS)  # 1536 tokens/s, no queue
    obj = wait_for(lambda: (o := get(cluster, namespace, "llmd", name)) and o["spec"].get("replicas", 1) >= 2 and o,
                   timeout=REACT + 60, interval=0.5, what="scale-up on tokens/s")  # rate1m needs samples
    # The operator sees the HPA's decision through the HPA's status, a moment after spec.replicas moved.
    scaled = wait_for(lambda: [e for e in events(cluster, namespace, name) if e["reason"] == "Scaled"],
                      timeout=30, what="the Scaled Event")
    assert "tokens/s" in scaled[-1]["message"] and "> target 1000" in scaled[-1]["message"], scaled
    obj = get(cluster, namespace, "llmd", name) or obj
    metrics = {m["name"]: m for m in obj["status"]["autoscaling"]["metrics"]}
    assert metrics["queueDepth"].get("current", 0) < 1, metrics  # the queue stayed empty
    state = traffic.state()
    assert state, "the emulator has no state"


def test_gpu_exhaustion_is_reported_with_numbers(cluster: Cluster, operator: Operator, namespace: str,
                                                 traffic: Any) -> None:
    name = "no-room"
    # The only A100 node has 6 GPUs: two 3-GPU replicas fit, the HPA will want four.
    apply(cluster, namespace, _model(name, gpus=3, product="NVIDIA-A100-SXM4-80GB", metrics={"queueDepth": 2}))
    _ready(cluster, namespace, name, 1)
    traffic.set_load(namespace=namespace, name=name, rps=8 * PER_POD_RPS, output_tokens=OUTPUT_TOKENS)
    obj = wait_condition(cluster, namespace, name, "ScalingLimited", "True", "InsufficientGPU", timeout=REACT + 30)
    message = condition(obj, "ScalingLimited")["message"]
    pending = _replicas(cluster, namespace, name) - 2
    assert pending >= 1 and f"{pending} pod(s)" in message and f"{pending * 3} more GPU(s)" in message, message
    assert "InsufficientGPU" in obj["status"]["autoscaling"]["summary"]
    assert any(e["reason"] == "InsufficientGPU" and e["type"] == "Warning" for e in events(cluster, namespace, name))
    # Nothing crashes or loops: the operator settles while the pods stay Pending.
    operator.settle(timeout=30)
    traffic.set_load(namespace=namespace, name=name, rps=0, output_tokens=OUTPUT_TOKENS)


@pytest.fixture
def paused_emulator(cluster: Cluster) -> Iterator[Any]:
    """SIGSTOP the emulator (scrapes fail, Prometheus marks its series stale) and always SIGCONT it after."""
    from llm_operator.dev import ClusterInfo

    info = ClusterInfo.load(cluster.kubeconfig.resolve().parent)
    assert info is not None and "traffic" in info.pids, "no emulator pid in the cluster state"
    pid = info.pids["traffic"]
    paused = {"on": False}

    def pause() -> None:
        os.killpg(pid, signal.SIGSTOP)
        paused["on"] = True

    try:
        yield pause
    finally:
        if paused["on"]:
            os.killpg(pid, signal.SIGCONT)


def test_metrics_gone_keeps_replicas_and_says_so(cluster: Cluster, operator: Operator, namespace: str,
                                                 traffic: Any, paused_emulator: Any) -> None:
    name = "blind"
    apply(cluster, namespace, _model(name, metrics={"queueDepth": 4}, minReplicas=1, behavior=FAST_DOWN))
    _ready(cluster, namespace, name, 1)
    traffic.set_load(namespace=namespace, name=name, rps=2.5 * PER_POD_RPS, output_tokens=OUTPUT_TOKENS)
    wait_for(lambda: _replicas(cluster, namespace, name) >= 3, timeout=REACT, interval=0.5, what="scale-up")
    wait_condition(cluster, namespace, name, "ScalingActive", "True", "ValidMetricFound")
    before = _replicas(cluster, namespace, name)
    paused_emulator()
    obj = wait_condition(cluster, namespace, name, "ScalingActive", "False", "MetricsUnavailable", timeout=REACT)
    assert "llmops_queue_depth" in condition(obj, "ScalingActive")["message"]
    # Longer than the 20 s scale-down window: missing data must not read as "no load".
    time.sleep(30)
    assert _replicas(cluster, namespace, name) == before
