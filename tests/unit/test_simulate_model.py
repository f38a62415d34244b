"""The simulated deployment: the metrics chain's arithmetic, agreement with the traffic emulator's model, start-up,
drain and GPU-hours, and the oracle's accounting."""

from __future__ import annotations

import math
from array import array
from dataclasses import replace

import pytest
from llm_operator import api
from llm_operator.dev.traffic._model import Capacity, Load, PodInfo, TrafficModel
from llm_operator.simulate import oracle, policy, run_policy, trace
from llm_operator.simulate.pipeline import MetricsServer, Prometheus, extrapolated_rate
from llm_operator.simulate.profile import DEV_CLUSTER, ServerProfile, Timing, profile_for

# The emulator's default capacity: 2500 tokens/s at a full batch of 32, so one replica serves 2500 / 256 = 9.77
# requests/s of 256 output tokens.
EMULATOR = ServerProfile(tokens_per_second=2500, batch_slots=32, prefill_tokens_per_second=20000, startup_seconds=30)
PER_POD = 2500 / 256


def llmd(**autoscaling: object) -> api.LLMDeployment:
    spec: dict[str, object] = {"model": {"name": "m", "uri": "hf://a/b"}, "runtime": {"backend": "vllm"},
                               "resources": {"gpu": {"count": 2}}}
    if autoscaling:
        spec["autoscaling"] = {"minReplicas": 1, "maxReplicas": 8, **autoscaling}
    return api.parse({"apiVersion": api.API_VERSION, "kind": api.KIND, "metadata": {"name": "m"}, "spec": spec})


# ------------------------------------------------------------------------------------------ the metrics chain


def test_rate_over_a_full_window_is_the_slope() -> None:
    # a counter growing 10/s, scraped every 2 s, evaluated at t=100 over [40, 100]: 31 samples, no extrapolation
    samples = [(float(t), 10.0 * t) for t in range(40, 101, 2)]
    assert extrapolated_rate(samples, range_start=40, range_end=100, window=60) == pytest.approx(10.0)


def test_rate_of_a_new_series_is_extrapolated_only_to_its_zero_point() -> None:
    # a pod that started at t=97 (counter 0) making 10 tokens/s, scraped at 98 (10) and 100 (30). Prometheus:
    # increase 20 over 2 s; zero point 2 * 10/20 = 1 s before the first sample, under 1.1 * 2 -> extend by 1;
    # the end is at the last sample -> 20 * 3/2 = 30 tokens over the 60 s window = 0.5/s (the 1m rate lags)
    assert extrapolated_rate([(98.0, 10.0), (100.0, 30.0)], range_start=40, range_end=100,
                             window=60) == pytest.approx(0.5)
    assert extrapolated_rate([(100.0, 30.0)], range_start=40, range_end=100, window=60) is None


def test_rate_extrapolates_by_half_an_interval_when_samples_stop_early() -> None:
    # samples 50..80 every 2 s of 10/s (16 points, 30 s sampled), window [40, 100]: the first sample is 10 s after
    # the start (> 1.1 * 2) and the counter's zero point is far earlier -> +1 s; the end is 20 s away -> +1 s:
    # 300 * 32/30 / 60 = 5.333
    samples = [(float(t), 1000.0 + 10.0 * (t - 50)) for t in range(50, 81, 2)]
    assert extrapolated_rate(samples, range_start=40, range_end=100, window=60) == pytest.approx(300 * 32 / 30 / 60)


def test_prometheus_records_the_last_scrape_and_drops_stale_pods() -> None:
    prom = Prometheus(rate_window=60)
    for t in range(0, 21, 2):
        prom.scrape(float(t), [(1, 3.0, 0.5, 100.0 * t), (2, 7.0, 0.1, 50.0 * t)])
    prom.evaluate(21.0)
    assert prom.recorded[1].queue == 3.0 and prom.recorded[2].kv == 0.1
    # 11 samples over [0, 20] inside [-39, 21]; the zero point is at t=0 -> no extension before, +1 s after
    assert prom.recorded[1].tokens_rate == pytest.approx(100 * 20 * 21 / 20 / 60)
    prom.scrape(22.0, [(1, 4.0, 0.5, 2200.0)])  # pod 2 is gone: stale at once
    prom.evaluate(23.0)
    assert set(prom.recorded) == {1} and prom.recorded[1].queue == 4.0


def test_metrics_server_serves_the_usage_between_its_last_two_scrapes() -> None:
    ms = MetricsServer()
    ms.scrape(0.0, [(1, 0.0)])
    assert ms.usage(1) is None
    ms.scrape(15.0, [(1, 6.0)])
    ms.scrape(30.0, [(1, 18.0)])
    assert ms.usage(1) == (0.8, 30.0, 15.0)


# ------------------------------------------------------------------------------------------ replicas


def _fixed(n: int) -> policy.Policy:
    return policy.parse(f"fixed:{n}", llmd=llmd(), source="test")


def test_one_overloaded_replica_queues_exactly_as_the_emulator_does() -> None:
    # 15 requests/s on one replica for 60 s, in the simulator and in the emulator's own model
    rps = 15.0
    t = trace.load(f"poisson:rps={rps},duration=60,arrivals=uniform,prompt=512,output=256")
    r = run_policy(_fixed(1), trace=t, profile=EMULATOR, timing=DEV_CLUSTER, slo=2.0)
    model = TrafficModel(start=0.0)
    model.set_load(namespace="n", name="m", load=Load(rps=rps, prompt_tokens=512, output_tokens=256))
    model.set_capacity(namespace="n", name="m", capacity=Capacity())
    model.sync_pods([PodInfo(namespace="n", name="p", llmdeployment="m", revision="r", backend="vllm", image="i",
                             model="m", ready=True, ready_since=-100.0)])
    model.advance(to=60.0)
    emulated = model.pods[("n", "p")].queue
    # the queue grows at the excess rate once the batch is full (a few seconds)
    assert 0.9 * (rps - PER_POD) * 60 < emulated < (rps - PER_POD) * 60
    assert r.max_queue == pytest.approx(emulated, rel=0.01)


def test_fixed_replicas_cost_their_gpus_for_the_whole_trace() -> None:
    t = trace.load("poisson:rps=5,duration=30m,seed=1")
    r = run_policy(_fixed(3), trace=t, profile=replace(EMULATOR, gpus=2), timing=Timing(), slo=2.0)
    assert r.gpu_hours == pytest.approx(3 * 2 * 0.5)
    assert r.scale_events == 0 and r.attainment == 1.0 and r.failed == 0
    assert 0.02 < r.ttft_p50 < r.ttft_p99 < 0.1  # prefill 512/20000 plus one token gap


def test_no_replica_serving_fails_requests_and_a_full_python_queue_refuses() -> None:
    # python: the queue is bounded by spec.runtime.maxQueueSize (128): 3x overload for 2 minutes refuses some
    python = api.parse({"apiVersion": api.API_VERSION, "kind": api.KIND, "metadata": {"name": "m"}, "spec": {
        "model": {"name": "m", "uri": "hf://a/b"}, "runtime": {"backend": "python", "maxQueueSize": 128}}})
    prof = profile_for(python, overrides={"tokensPerSecond": 2500, "batchSlots": 32})
    assert prof.max_queue == 128 and prof.gpus == 1
    t = trace.load(f"poisson:rps={3 * PER_POD},duration=2m,arrivals=uniform,output=256")
    r = run_policy(_fixed(1), trace=t, profile=prof, timing=Timing(), slo=60.0)
    assert r.max_queue == pytest.approx(128)
    assert 0.3 < r.failed / r.requests < 0.7
    assert r.met == r.requests - r.failed  # with a 60 s SLO, everything admitted is in time


def test_new_replicas_serve_only_after_start_up_and_leave_after_draining() -> None:
    # 2.5 replicas' worth for 3 minutes, then nothing: the HPA adds 2 replicas; they serve 30 s later (start-up)
    ours = policy.parse("spec", llmd=llmd(metrics={"queueDepth": 4}, behavior={"scaleDown": {
        "stabilizationWindowSeconds": 60, "policies": [{"type": "Pods", "value": 2, "periodSeconds": 10}]}}),
        source="test")
    t = trace.load(f"step:levels=0:{2.5 * PER_POD}/180:0,duration=600,arrivals=uniform,output=256")
    prof = replace(EMULATOR, gpus=2)
    r = run_policy(ours, trace=t, profile=prof, timing=DEV_CLUSTER, slo=2.0, initial=1)
    up_at, before, after = r.changes[0]
    assert (before, after) == (1, 3)
    assert r.timeline is not None
    serving = dict(zip(r.timeline.times, r.timeline.serving, strict=True))
    window = r.timeline.window
    assert all(v == 1 for at, v in serving.items() if at + window <= up_at + prof.startup_seconds)
    assert any(v == 3 for v in serving.values())
    down = [c for c in r.changes if c[2] < c[1]]
    assert down and down[-1][2] == 1
    # GPU-hours: every replica from its creation (start-up included) to the end of its drain (at least the
    # preStop sleep); never below the serving replica-seconds, and above the replicas asked for
    asked = 0.0
    count, last = 1, 0.0
    for at, _, new in r.changes:
        asked += count * (at - last)
        count, last = new, at
    asked += count * (t.duration - last)
    drain = sum((a - b) * prof.prestop_seconds for _, a, b in down)
    assert r.gpu_hours * 3600 / prof.gpus == pytest.approx(asked + drain, abs=2 * len(r.changes) + 1)


def test_cpu_policy_reads_busy_slots_through_metrics_server() -> None:
    cpu = policy.parse("cpu:70", llmd=llmd(metrics={"queueDepth": 4}), source="test")
    assert cpu.hpa is not None and cpu.hpa.behavior is None  # upstream defaults
    t = trace.load(f"poisson:rps={0.9 * PER_POD * 2},duration=20m,arrivals=uniform,output=256")
    r = run_policy(cpu, trace=t, profile=EMULATOR, timing=Timing(), slo=2.0, initial=1)
    # 1.8 replicas' worth: one replica's batch is full (100 % > 70 %): it scales up, within maxReplicas
    assert r.changes and r.changes[0][1:] == (1, 2) and r.peak_replicas <= 8


# ------------------------------------------------------------------------------------------ the oracle


def test_oracle_replica_seconds_bridge_short_gaps_and_pay_start_up() -> None:
    needed = array("i", [1, 1, 3, 3, 1, 1, 3, 3])  # 10 s steps
    # start-up 15 s: replicas 2 and 3 start at 20 s (15 s of loading first) and again at 60 s (the 20 s gap is
    # longer than a start-up): 80 + 2 * (15 + 20 + 15 + 20) = 220
    seconds, _ = oracle._replica_seconds(needed, dt=10, startup=15)
    assert seconds == 220
    # start-up 25 s: needed at 20 s < 25 s, so they run from the start; the 20 s gap is bridged:
    # 80 + 2 * (20 + 20 + 20 + 20) = 240
    seconds, intervals = oracle._replica_seconds(needed, dt=10, startup=25)
    assert seconds == 240
    assert sorted(intervals) == [(0.0, 80.0), (0.0, 80.0), (0.0, 80.0)]


def test_oracle_meets_the_slo_with_fewest_replicas() -> None:
    # 0.8 of a replica's worth, with 5-minute bursts to 2.5 replicas' worth every 15 minutes, for an hour
    t = trace.load(f"burst:base={0.8 * PER_POD},peak={2.5 * PER_POD},every=15m,length=5m,duration=1h,seed=4")
    o = run_policy(policy.parse("oracle", llmd=llmd(), source="test"), trace=t, profile=EMULATOR, timing=Timing(),
                   slo=2.0)
    assert o.attainment == 1.0 and o.failed == 0
    assert o.ttft_p99 <= 2.0 and not math.isnan(o.ttft_p50)
    # 3 replicas always suffice; the oracle runs 3 only around the bursts (plus start-up), and never less than
    # the decode work itself needs
    three = run_policy(_fixed(3), trace=t, profile=EMULATOR, timing=Timing(), slo=2.0)
    assert three.attainment == 1.0
    work = sum(t.output_tokens) / EMULATOR.tokens_per_second / 3600
    assert work < o.gpu_hours < 0.7 * three.gpu_hours
    assert o.peak_replicas == 3 and o.scale_events >= 6  # up and down around each of the 3 bursts
