"""Fidelity of `llmctl simulate`: one step profile through the real closed loop of the metrics test bed (traffic
emulator → Prometheus → prometheus-adapter → HPA in kube-controller-manager → operator → kwok pods) and through
the simulator with the test bed's parameters, then the two replica timelines side by side.

Target (issue #9): the same replica counts in the same order, each change within one HPA sync period plus one
scrape interval (5 s + 2 s) of the real one.

Two simulations are compared. The *blind* one knows nothing of the real run but the load: its scrape, rule
evaluation and HPA sync run at mid-period phases, while the real ones run at whatever phase they happen to have.
That costs up to a sync period on the first change, and a later change can inherit it roughly twice over: a
later scale-up leaves a longer queue to drain before the scale-down window starts. The *aligned* one runs its
scrapes and rule evaluations at the phases read from Prometheus' own sample timestamps, and its HPA syncs when
the real one did, read from its first scale-up (when the watch saw it written, and which rule evaluation's value
its status says it used: the only ways to observe that controller's clock), so what remains is the model: the
queues, the missing-pod rules, stabilization, rate limits.
"""

from __future__ import annotations

import itertools
import math
import statistics
import threading
import time
from dataclasses import replace
from typing import Any

import pytest

from e2e.pytest_plugin import Cluster, Operator, wait_for
from tests.e2e.test_autoscaling_loop import FAST_DOWN, OUTPUT_TOKENS, PER_POD_RPS, _model, _ready
from tests.e2e.test_metrics_bed import custom_metric, promql
from tests.e2e.test_operator import apply, wait_condition

pytestmark = pytest.mark.cluster

SYNC_PERIOD = 5.0  # kube-controller-manager --horizontal-pod-autoscaler-sync-period of `llmctl dev up`
SCRAPE_INTERVAL = 2.0
EVALUATION_INTERVAL = 2.0
TOLERANCE = SYNC_PERIOD + SCRAPE_INTERVAL
PROMPT_TOKENS = 512
HIGH_RPS = 2.5 * PER_POD_RPS  # two and a half replicas' worth: the queue grows on one
DROP_AT = 20.0  # seconds after the step up, the load goes back to 0
SETTLE = 8.0  # after the last expected change, watch this long for another one
AFTER = 60.0  # the simulations run this much longer, to their final count
STEP = 0.05  # simulation step, fine enough for the phases


@pytest.fixture
def traffic(cluster: Cluster) -> Any:
    from llm_operator.dev.traffic.client import TrafficClient

    assert cluster.traffic_url, "the session cluster runs without the metrics test bed"
    return TrafficClient(cluster.traffic_url)


class Watch:
    """spec.replicas of one LLMDeployment and the status of its HPA, stamped when each watch event arrives.
    (Polling through kubectl sees a change up to a second late on a loaded machine.)"""

    def __init__(self, cluster: Cluster, namespace: str, name: str) -> None:
        self.samples: list[tuple[float, int]] = []
        self.hpa: list[tuple[float, dict[str, Any]]] = []
        self._stop = threading.Event()
        self._args = (cluster.api_client(), namespace, name)
        self._threads = [threading.Thread(target=self._run, args=(kind,), daemon=True) for kind in ("llmd", "hpa")]

    def _run(self, kind: str) -> None:
        from kubernetes import client, watch
        from llm_operator import api

        api_client, namespace, name = self._args
        custom = client.CustomObjectsApi(api_client)
        autoscaling = client.AutoscalingV2Api(api_client)
        while not self._stop.is_set():
            try:
                # short streams, so that stopping never waits long; each restart lists the object again
                if kind == "llmd":
                    stream = watch.Watch().stream(custom.list_namespaced_custom_object, api.GROUP, api.VERSION,
                                                  namespace, api.PLURAL, field_selector=f"metadata.name={name}",
                                                  timeout_seconds=2)
                else:
                    stream = watch.Watch().stream(autoscaling.list_namespaced_horizontal_pod_autoscaler, namespace,
                                                  field_selector=f"metadata.name={name}", timeout_seconds=2)
                for event in stream:
                    seen = time.monotonic()
                    if kind == "llmd":
                        replicas = int(event["object"]["spec"].get("replicas", 0))
                        if not self.samples or self.samples[-1][1] != replicas:
                            self.samples.append((seen, replicas))
                    else:
                        self.hpa.append((seen, api_client.sanitize_for_serialization(event["object"].status)))
            except Exception:  # a dropped stream: list and watch again
                self._stop.wait(0.1)

    def __enter__(self) -> Watch:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)


def _changes(samples: list[tuple[float, int]], t0: float) -> list[tuple[float, int, int]]:
    """(seconds after t0, from, to) for each change of spec.replicas."""
    return [(t - t0, a, b) for (_, a), (t, b) in itertools.pairwise(samples) if b != a and t >= t0]


def _milli(quantity: str) -> int:
    return int(quantity[:-1]) if quantity.endswith("m") else round(float(quantity) * 1000)


def _sync_phase(cluster: Cluster, namespace: str, hpa: list[tuple[float, dict[str, Any]]], *, t0: float,
                t0_wall: float) -> float:
    """When, modulo the sync period, the real HPA syncs. Its first scale-up is seen through the watch a moment
    after it was written, and that sync may have taken a second or more (metrics through the aggregation layer
    and the adapter, on a loaded machine), so the write time alone is not enough: the status also says which
    queue average it read, recorded by exactly one rule evaluation, so it read after that evaluation and before
    the next. The simulated sync goes just before the write, within that interval."""
    seen_at, decision = next((seen, status) for seen, status in hpa if seen >= t0 and status.get("lastScaleTime")
                             and status.get("desiredReplicas", 1) > 1)
    saw = _milli(decision["currentMetrics"][0]["pods"]["current"]["averageValue"])
    # one series per pod; before the first scale-up only the first pod has a queue
    result = promql(cluster, f'llmops:queue_depth{{namespace="{namespace}"}}[150s]')
    decided = seen_at - t0
    read = [float(ts) - t0_wall for series in result for ts, value in series["values"]
            if int(float(value) * 1000) == saw and float(ts) - t0_wall <= decided]
    assert read, f"the HPA saw {saw}m, which no evaluation before its decision recorded: {result}"
    evaluation = max(read)
    sync = min(max(decided - 0.1, evaluation + STEP), evaluation + EVALUATION_INTERVAL - STEP)
    return math.ceil((sync % SYNC_PERIOD) / STEP - 1e-9) * STEP


def _phase(cluster: Cluster, series: str, *, t0_wall: float, period: float) -> float:
    """When, modulo `period`, Prometheus stamps the samples of `series` (scrapes or rule evaluations), in
    seconds after t0."""
    result = promql(cluster, f"{series}[60s]")
    stamps = [float(ts) for r in result for ts, _ in r["values"]]
    assert stamps, f"no samples of {series}"
    return statistics.median((ts - t0_wall) % period for ts in stamps)


def _simulate(doc: dict[str, Any], *, drop_at: float, duration: float, phases: dict[str, float] | None
              ) -> list[tuple[float, int, int]]:
    from llm_operator import api
    from llm_operator.dev.traffic._model import Capacity
    from llm_operator.simulate import policy, run_policy, trace
    from llm_operator.simulate.profile import DEV_CLUSTER, profile_for

    llmd = api.parse(doc)
    emulator = Capacity()  # the emulator's default capacity, which the real loop's pods get
    # The emulator's pods: Ready about 1 s after the HPA writes the scale (operator, ReplicaSet, scheduler,
    # kwok), then silent for its 3 s startup delay (e2e/pytest_plugin.py TRAFFIC_STARTUP_DELAY).
    profile = profile_for(llmd, overrides={
        "tokensPerSecond": emulator.tokens_per_second, "batchSlots": emulator.batch_slots,
        "prefillTokensPerSecond": emulator.prefill_tokens_per_second, "kvCacheTokens": emulator.kv_cache_tokens,
        "pendingSeconds": 1.0, "startupSeconds": 3.0})
    assert profile.max_queue is None  # vllm: the emulator's queue is unbounded too
    steps = trace.load(f"step:levels=0:{HIGH_RPS}/{drop_at}:0,duration={duration},arrivals=uniform,"
                       f"prompt={PROMPT_TOKENS},output={OUTPUT_TOKENS}")
    timing = replace(DEV_CLUSTER, step=STEP, **(phases or {}))
    result = run_policy(policy.parse("spec", llmd=llmd, source="test"), trace=steps, profile=profile,
                        timing=timing, slo=2.0, initial=1)
    return result.changes


def _line(changes: list[tuple[float, int, int]]) -> str:
    return ", ".join(f"{a}->{b} at {t:.1f} s" for t, a, b in changes)


def _offsets(real: list[tuple[float, int, int]], sim: list[tuple[float, int, int]]) -> list[float]:
    return [ts - tr for (tr, _, _), (ts, _, _) in zip(real, sim, strict=False)]


def test_simulated_replica_timeline_matches_the_real_hpa(cluster: Cluster, operator: Operator, namespace: str,
                                                         traffic: Any, capsys: pytest.CaptureFixture[str]) -> None:
    name = "fidelity"
    doc = _model(name, backend="vllm", metrics={"queueDepth": 4}, behavior=FAST_DOWN)
    apply(cluster, namespace, doc)
    _ready(cluster, namespace, name, 1)
    # The chain is warm, as the simulator assumes: the adapter lists the metric, the pod's value is served, and
    # the HPA reads it. (Right after the CRD is installed, kube-controller-manager cannot map the LLMDeployment
    # kind until its discovery refresh, up to 30 s, and reports FailedGetScale meanwhile.)
    wait_for(lambda: custom_metric(cluster, namespace, "llmops_queue_depth"), timeout=60, interval=0.5,
             what="llmops_queue_depth served for the pod")
    wait_condition(cluster, namespace, name, "ScalingActive", "True", "ValidMetricFound", timeout=90)
    with Watch(cluster, namespace, name) as seen:
        time.sleep(1.0)  # the watch has listed the object at 1 replica before the step
        traffic.set_load(namespace=namespace, name=name, rps=HIGH_RPS, prompt_tokens=PROMPT_TOKENS,
                         output_tokens=OUTPUT_TOKENS)
        t0, t0_wall = time.monotonic(), time.time()
        time.sleep(DROP_AT)
        traffic.set_load(namespace=namespace, name=name, rps=0, output_tokens=OUTPUT_TOKENS)
        drop_at = time.monotonic() - t0
        wait_for(lambda: seen.samples and seen.samples[-1][1] == 1, timeout=90, interval=0.5,
                 what="back to 1 replica")
        time.sleep(SETTLE)
        duration = time.monotonic() - t0
    real = _changes(seen.samples, t0)
    assert real, "the real HPA never scaled"

    blind = _simulate(doc, drop_at=drop_at, duration=duration + AFTER, phases=None)
    selector = f'{{namespace="{namespace}"}}'
    phases = {
        "scrape_phase": _phase(cluster, f"vllm:num_requests_waiting{selector}", t0_wall=t0_wall,
                               period=SCRAPE_INTERVAL),
        "evaluation_phase": _phase(cluster, f"llmops:queue_depth{selector}", t0_wall=t0_wall,
                                   period=EVALUATION_INTERVAL),
        "sync_phase": _sync_phase(cluster, namespace, seen.hpa, t0=t0, t0_wall=t0_wall),
    }
    aligned = _simulate(doc, drop_at=drop_at, duration=duration + AFTER, phases=phases)
    report = "\n".join([
        f"load {HIGH_RPS:.1f} rps at 0 s, 0 rps at {drop_at:.1f} s; observed for {duration:.0f} s (simulated "
        f"{AFTER:.0f} s longer); phases "
        + ", ".join(f"{k.removesuffix('_phase')} {v:.2f} s" for k, v in phases.items()),
        f"real      {_line(real)}",
        f"blind     {_line(blind)}  (offsets {', '.join(f'{d:+.1f}' for d in _offsets(real, blind))} s)",
        f"aligned   {_line(aligned)}  (offsets {', '.join(f'{d:+.1f}' for d in _offsets(real, aligned))} s)",
    ])
    with capsys.disabled():  # the figures docs/simulate.md quotes, also when the test passes
        print("\nfidelity: " + report.replace("\n", "\nfidelity: "))
    # Aligned: the same changes, each within the target. Blind: the same final count and the first change within
    # the target; the steps between can differ when a phase decides whether a sync still sees the small queue
    # of the step's first seconds (1 -> 2 -> 3 rather than 1 -> 3).
    assert [(a, b) for _, a, b in aligned] == [(a, b) for _, a, b in real], report
    assert max(abs(d) for d in _offsets(real, aligned)) <= TOLERANCE, report
    assert real[-1][2] == blind[-1][2] == 1, report
    assert abs(blind[0][0] - real[0][0]) <= TOLERANCE, report
