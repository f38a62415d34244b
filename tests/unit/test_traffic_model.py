"""The traffic emulator's queueing model, stepped on a fake clock (no sleeps, no cluster)."""

from __future__ import annotations

from dataclasses import replace

import pytest
from llm_operator.api import Backend
from llm_operator.dev.traffic import (
    Behaviour,
    Capacity,
    Load,
    PodInfo,
    PodState,
    Step,
    TrafficModel,
    play,
    step_profile,
)
from llm_operator.dev.traffic._model import LATENCY_SPREAD, share_within

NS = "team"
# Default capacity: 2500 tokens/s at a full batch of 32; with 250 output tokens a pod finishes 10 requests/s.
OUTPUT = 250.0
POD_MAX_RPS = Capacity().tokens_per_second / OUTPUT


def pod(name: str, *, llmd: str = "llama", revision: str = "r1", backend: Backend = "vllm", image: str = "img:1.0",
        ready_since: float | None = 0.0, ready: bool = True, terminating: bool = False) -> PodInfo:
    return PodInfo(namespace=NS, name=name, llmdeployment=llmd, revision=revision, backend=backend,
                   image=image, model="m", ready=ready, ready_since=ready_since, terminating=terminating)


def model(*pods: PodInfo, rps: float = 0.0, startup_delay: float = 0.0, max_step: float = 0.25) -> TrafficModel:
    m = TrafficModel(start=0.0, startup_delay=startup_delay, max_step=max_step)
    m.sync_pods(pods)
    m.set_load(namespace=NS, name="llama", load=Load(rps=rps, prompt_tokens=500, output_tokens=OUTPUT))
    return m


def state(m: TrafficModel, name: str) -> PodState:
    return m.pods[(NS, name)]


def ttft_mean(m: TrafficModel, name: str, *, since: tuple[float, float] = (0.0, 0.0)) -> float:
    h = state(m, name).ttft
    return (h.total - since[0]) / (h.count - since[1])


def test_under_capacity_tokens_follow_the_offered_load() -> None:
    m = model(pod("a"), rps=4.0)
    m.advance(to=60)
    s = state(m, "a")
    before = (s.generated_tokens, s.prompt_tokens, s.finished)
    m.advance(to=120)
    # Steady state: what arrives is served, nothing waits.
    assert (s.generated_tokens - before[0]) / 60 == pytest.approx(4.0 * OUTPUT, rel=0.02)
    assert (s.prompt_tokens - before[1]) / 60 == pytest.approx(4.0 * 500, rel=0.001)
    assert (s.finished - before[2]) / 60 == pytest.approx(4.0, rel=0.02)
    assert s.queue == 0
    # Little's law: running = arrival rate * time in the batch (OUTPUT tokens at the current ITL).
    assert s.running == pytest.approx(4.0 * OUTPUT * s.last_itl, rel=0.05)
    assert 0 < s.kv_cache_utilization < 1


def test_queue_grows_under_overload_at_the_excess_rate() -> None:
    m = model(pod("a"), rps=15.0)
    m.advance(to=60)
    s = state(m, "a")
    q60, ttft60, gen60 = s.queue, s.last_ttft, s.generated_tokens
    m.advance(to=120)
    assert s.running == pytest.approx(Capacity().batch_slots, rel=1e-6)
    # The batch is full: the pod serves C / O = 10 requests/s, the other 5/s queue up.
    assert (s.queue - q60) / 60 == pytest.approx(15.0 - POD_MAX_RPS, rel=0.03)
    assert (s.generated_tokens - gen60) / 60 == pytest.approx(Capacity().tokens_per_second, rel=0.01)
    # A longer queue means a longer wait for the first token: queue * O / C.
    assert s.last_ttft > ttft60 > 1.0
    assert s.last_ttft == pytest.approx(s.queue * OUTPUT / Capacity().tokens_per_second, rel=0.02)
    assert s.kv_cache_utilization == pytest.approx(32 * (500 + OUTPUT / 2) / Capacity().kv_cache_tokens)


def test_queue_drains_when_a_pod_is_added() -> None:
    m = model(pod("a"), rps=15.0)
    m.advance(to=120)
    a = state(m, "a")
    backlog = a.queue
    assert backlog > 400
    m.sync_pods([pod("a"), pod("b", ready_since=120.0)])
    m.advance(to=121)
    b = state(m, "b")
    # The load splits in two: 7.5/s per pod, below the 10/s each can serve, so a's backlog drains at 2.5/s.
    assert a.arrival_rps == b.arrival_rps == pytest.approx(7.5)
    previous = a.queue
    for t in range(130, 121 + int(backlog / 2.5) - 10, 10):
        m.advance(to=t)
        assert a.queue < previous
        previous = a.queue
        assert b.queue == 0
    m.advance(to=121 + backlog / 2.5 + 15)
    assert a.queue == 0
    assert a.last_ttft < 0.5


def test_load_splits_equally_across_serving_pods_only() -> None:
    m = model(
        pod("a"), pod("b"), pod("c", revision="r2"),
        pod("loading", ready=False, ready_since=None),
        pod("other", llmd="other"),
        rps=9.0,
    )
    m.advance(to=100)
    for name in ("a", "b", "c"):
        assert state(m, name).arrived == pytest.approx(300.0)
    assert state(m, "loading").arrived == 0
    assert state(m, "other").arrived == 0
    views = {v.state.info.name: v for v in m.views()}
    assert not views["loading"].exporting
    assert [s.info.name for s in m.exporting()] == ["a", "b", "c", "other"]


def test_startup_delay_hides_a_pod_and_keeps_it_out_of_rotation() -> None:
    m = model(pod("old", ready_since=-100.0), pod("new", ready_since=10.0), rps=6.0, startup_delay=30.0)
    m.advance(to=39.5)
    assert [s.info.name for s in m.exporting()] == ["old"]
    assert state(m, "new").arrived == 0
    assert state(m, "old").arrived == pytest.approx(6.0 * 39.5)
    m.advance(to=40.0)
    assert [s.info.name for s in m.exporting()] == ["new", "old"]
    m.advance(to=50.0)
    assert state(m, "new").arrived == pytest.approx(3.0 * 10.0, rel=0.03)


def test_terminating_pod_gets_no_new_requests_but_drains_and_still_exports() -> None:
    m = model(pod("a"), pod("b"), rps=25.0)
    m.advance(to=60)
    a = state(m, "a")
    assert a.queue > 0
    m.sync_pods([pod("a", terminating=True), pod("b")])
    m.advance(to=61)
    assert a.arrival_rps == 0
    assert state(m, "b").arrival_rps == 25.0
    m.advance(to=200)
    assert a.queue == 0
    assert a.running < 0.1
    assert "a" in [s.info.name for s in m.exporting()]


def test_gone_pods_are_dropped_and_a_backend_change_starts_fresh() -> None:
    m = model(pod("a"), pod("b"), rps=4.0)
    m.advance(to=30)
    m.sync_pods([pod("a", backend="tensorrtllm")])
    assert set(m.pods) == {(NS, "a")}
    assert state(m, "a").arrived == 0
    assert state(m, "a").info.backend == "tensorrtllm"


def test_slow_image_tag_triples_ttft_and_leaves_throughput_alone() -> None:
    m = model(pod("stable", revision="r1", image="reg/img:1.0"), pod("canary", revision="r2", image="reg/img:1.1-slow"),
              rps=8.0)
    m.advance(to=120)
    stable, canary = state(m, "stable"), state(m, "canary")
    assert [v.behaviour for v in m.views()] == ["slow", "normal"]
    assert ttft_mean(m, "canary") / ttft_mean(m, "stable") == pytest.approx(3.0, rel=1e-6)
    assert canary.itl.total / canary.itl.count == pytest.approx(stable.itl.total / stable.itl.count)
    assert canary.generated_tokens == pytest.approx(stable.generated_tokens)
    assert canary.failed == stable.failed == 0


def test_faulty_fails_a_fifth_and_revision_assignment_wins_over_the_image_tag() -> None:
    m = model(pod("stable", revision="r1"), pod("canary", revision="r2", image="img:2.0-faulty"), rps=8.0)
    m.advance(to=120)
    canary = state(m, "canary")
    assert canary.failed / canary.finished == pytest.approx(0.2)
    assert state(m, "stable").failed == 0
    # An explicit revision assignment overrides the tag: heal the canary, make the stable one slow.
    m.assign_behaviour(behaviour="normal", revision="r2")
    m.assign_behaviour(behaviour="slow", revision="r1")
    failed, counts = canary.failed, (state(m, "stable").ttft.total, state(m, "stable").ttft.count)
    canary_counts = (canary.ttft.total, canary.ttft.count)
    m.advance(to=240)
    assert canary.failed == failed
    assert ttft_mean(m, "stable", since=counts) / ttft_mean(m, "canary", since=canary_counts) == pytest.approx(3.0)
    with pytest.raises(ValueError, match="unknown behaviour"):
        m.assign_behaviour(behaviour="sluggish", revision="r1")
    m.define_behaviour(name="sluggish", behaviour=Behaviour(ttft_factor=5, error_ratio=0.5))
    m.assign_behaviour(behaviour="sluggish", image_tag_suffix="-faulty")
    m.assign_behaviour(behaviour=None, revision="r2")
    assert m.behaviour_of(canary.info) == Behaviour(ttft_factor=5, error_ratio=0.5)


def test_python_backend_refuses_beyond_its_admission_queue() -> None:
    m = model(pod("a", backend="python"), rps=20.0)
    m.advance(to=60)
    s = state(m, "a")
    assert s.queue == 64
    assert s.rejected > 0
    before = s.rejected
    m.advance(to=120)
    # At a full batch and a full queue everything beyond the 10/s served is refused.
    assert (s.rejected - before) / 60 == pytest.approx(20.0 - POD_MAX_RPS, rel=0.02)
    # vLLM's queue is unbounded: the same overload queues instead.
    v = model(pod("a", backend="vllm"), rps=20.0)
    v.advance(to=60)
    assert state(v, "a").rejected == 0 and state(v, "a").queue > 64


def test_capacity_per_llmdeployment() -> None:
    m = model(pod("a"), rps=15.0)
    m.set_capacity(namespace=NS, name="llama", capacity=replace(Capacity(), tokens_per_second=5000.0))
    m.advance(to=120)
    # 20 requests/s per pod now: no queue.
    assert state(m, "a").queue == 0
    with pytest.raises(ValueError, match="batchSlots"):
        Capacity(batch_slots=0)
    with pytest.raises(ValueError, match="rps"):
        Load(rps=-1)


def test_step_size_does_not_change_the_result() -> None:
    coarse, fine = model(pod("a"), rps=15.0, max_step=0.5), model(pod("a"), rps=15.0, max_step=0.05)
    coarse.advance(to=90)
    fine.advance(to=90)
    assert state(coarse, "a").queue == pytest.approx(state(fine, "a").queue, rel=0.02)
    assert state(coarse, "a").generated_tokens == pytest.approx(state(fine, "a").generated_tokens, rel=0.01)


def test_latency_histograms_spread_so_p95_exceeds_p50() -> None:
    m = model(pod("a"), rps=4.0)
    m.advance(to=60)
    h = state(m, "a").ttft
    cumulative = h.cumulative()
    assert cumulative[-1][1] == pytest.approx(h.count)
    # More than one finite bucket is populated: quantiles differ.
    populated = [b for (b, c), (_, prev) in zip(cumulative[1:], cumulative[:-1], strict=True) if c > prev]
    assert len(populated) >= 2
    assert h.total / h.count == pytest.approx(state(m, "a").last_ttft, rel=0.05)


def test_a_scripted_step_profile_plays_against_the_model_without_sleeping() -> None:
    m = model(pod("a"), rps=0.0)
    queue: list[tuple[float, float]] = []

    def sleep(seconds: float) -> None:
        m.advance(to=m.now + seconds)
        queue.append((m.now, state(m, "a").queue))

    def apply(step: Step) -> None:
        m.set_load(namespace=step.namespace, name=step.name,
                   load=Load(rps=step.rps, prompt_tokens=500, output_tokens=OUTPUT))

    profile = step_profile(namespace=NS, name="llama", levels=[(0, 2.0), (60, 20.0), (120, 2.0), (400, 0.0)])
    play(profile, apply=apply, clock=lambda: m.now, sleep=sleep)
    at = dict(queue)
    assert at[60.0] == 0
    assert at[120.0] == pytest.approx(10.0 * 60, rel=0.05)
    assert at[400.0] == 0
    with pytest.raises(ValueError, match="must not decrease"):
        step_profile(namespace=NS, name="llama", levels=[(10, 1.0), (5, 2.0)])


def test_emulated_cpu_is_busy_slots_over_slots() -> None:
    m = model(pod("a"), rps=4.0)
    assert state(m, "a").cpu_utilization == 0
    m.advance(to=60)
    s = state(m, "a")
    assert 0 < s.cpu_utilization < 1
    assert s.cpu_utilization == pytest.approx(s.running / Capacity().batch_slots)
    # Overload: every slot busy, and a CPU signal cannot tell a queue of 1 from a queue of 500.
    m.set_load(namespace=NS, name="llama", load=Load(rps=15.0, prompt_tokens=500, output_tokens=OUTPUT))
    m.advance(to=120)
    assert s.queue > 100
    assert s.cpu_utilization == 1.0
    m.set_capacity(namespace=NS, name="llama", capacity=replace(Capacity(), batch_slots=64))
    m.advance(to=121)
    assert s.cpu_utilization == pytest.approx(s.running / 64)


def test_share_within_counts_the_spread_deciles_under_the_limit() -> None:
    assert share_within(0.1, 2.0) == 1.0
    assert share_within(100.0, 2.0) == 0.0
    # Around the limit, some deciles of the log-normal spread are above it and some below, as in the histograms.
    assert 0 < share_within(2.0, 2.0) < 1
    assert share_within(2.0, 2.0) == sum(1 for x in LATENCY_SPREAD if 2.0 * x <= 2.0) / 10


def test_tally_counts_requests_within_the_ttft_slo_and_outlives_its_pods() -> None:
    m = model(pod("a"), rps=4.0)
    m.set_ttft_slo(namespace=NS, name="llama", seconds=2.0)
    m.advance(to=60)
    t = m.tallies[(NS, "llama")]
    assert t.arrived == pytest.approx(240.0)
    assert t.admitted == pytest.approx(240.0, rel=1e-6)
    assert t.ttft_met == pytest.approx(t.admitted)  # no queue: TTFT ~ 0.04 s
    assert t.ttft_met_share == pytest.approx(1.0)
    # Overload: the queue grows by 5/s and TTFT passes 2 s once ~20 requests wait (0.1 s each).
    m.set_load(namespace=NS, name="llama", load=Load(rps=15.0, prompt_tokens=500, output_tokens=OUTPUT))
    m.advance(to=120)
    s = state(m, "a")
    assert t.arrived == pytest.approx(240.0 + 900.0)
    assert t.admitted == pytest.approx(s.admitted)
    assert t.admitted + s.queue == pytest.approx(t.arrived)
    late = t.admitted - t.ttft_met
    assert late > 400  # all but the first few seconds' worth of the minute's ~600 admitted
    assert t.ttft_met_share == pytest.approx(t.ttft_met / t.arrived)
    # The pod goes (scale-down): its counters go with it, the LLMDeployment's tally stays, and what arrives
    # while no pod serves is counted as unserved (it misses the SLO).
    m.sync_pods([])
    m.advance(to=130)
    assert t.arrived == pytest.approx(240.0 + 900.0 + 150.0)
    assert t.unserved == pytest.approx(150.0)
    assert t.ttft_met_share is not None and t.ttft_met_share < (t.arrived - late - 150) / t.arrived
    # Another LLMDeployment's pods and a new SLO (a fresh tally) do not mix.
    m.sync_pods([pod("b"), pod("o", llmd="other")])
    m.set_ttft_slo(namespace=NS, name="llama", seconds=1.0)
    m.advance(to=140)
    fresh = m.tallies[(NS, "llama")]
    assert fresh is not t and fresh.ttft_slo_seconds == 1.0
    assert fresh.arrived == pytest.approx(150.0)
    assert m.tallies[(NS, "other")].arrived == 0 and m.tallies[(NS, "other")].ttft_met_share is None
    with pytest.raises(ValueError, match="ttftSeconds"):
        m.set_ttft_slo(namespace=NS, name="llama", seconds=0)


def test_python_refusals_miss_the_slo() -> None:
    m = model(pod("a", backend="python"), rps=20.0)
    m.set_ttft_slo(namespace=NS, name="llama", seconds=60.0)
    m.advance(to=120)
    t = m.tallies[(NS, "llama")]
    assert t.rejected == pytest.approx(state(m, "a").rejected) and t.rejected > 0
    # A queue bounded at 64 keeps TTFT near 6.4 s, within 60 s: only refused (and still queued) requests miss.
    assert t.ttft_met == pytest.approx(t.admitted)
    assert t.arrived == pytest.approx(t.admitted + t.rejected + state(m, "a").queue)
