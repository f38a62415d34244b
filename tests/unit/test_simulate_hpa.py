"""The HPA port against hand-computed cases from the upstream rules (kubernetes v1.36.3
pkg/controller/podautoscaler: replica_calculator.go, horizontal.go, and ../shared/reference/progressive-delivery.md §5).

Every expected value below is worked out by hand in the comment next to it.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from llm_operator.simulate import hpa
from llm_operator.simulate.hpa import (
    Behavior,
    HorizontalController,
    HPASpec,
    MetricError,
    Pod,
    PodMetric,
    PodsMetric,
    ResourceMetric,
    ScalingPolicy,
    ScalingRules,
    Tolerances,
)

TOL = Tolerances(0.1, 0.1)
QUEUE = "llmops_queue_depth"
TOKENS = "llmops_generation_tokens_per_second"


def pods(n: int, prefix: str = "p", **kw: object) -> list[Pod]:
    return [Pod(name=f"{prefix}{i}", **kw) for i in range(n)]  # type: ignore[arg-type]


def values(**milli: int) -> dict[str, PodMetric]:
    return {name: PodMetric(value=v) for name, v in milli.items()}


def plain(ps: list[Pod], ms: dict[str, PodMetric], *, current: int, target: int = 4000,
          tolerances: Tolerances = TOL) -> int:
    replicas, _ = hpa.calc_plain_metric_replicas(pods=ps, metrics=ms, current_replicas=current, target_usage=target,
                                                 tolerances=tolerances, now=1000.0)
    return replicas


# ------------------------------------------------------------------------------------------ tolerance


def test_tolerance_keeps_the_count_up_to_ten_percent_either_way() -> None:
    three = pods(3)
    # 4.4 / 4 = 1.1: inside [0.9, 1.1] -> keep 3
    assert plain(three, values(p0=4400, p1=4400, p2=4400), current=3) == 3
    # 4.401 / 4 = 1.10025: outside -> ceil(1.10025 * 3) = ceil(3.30075) = 4
    assert plain(three, values(p0=4401, p1=4401, p2=4401), current=3) == 4
    # 3.6 / 4 = 0.9: inside -> keep 3
    assert plain(three, values(p0=3600, p1=3600, p2=3600), current=3) == 3
    # 2 / 4 = 0.5 -> ceil(0.5 * 3) = 2
    assert plain(three, values(p0=2000, p1=2000, p2=2000), current=3) == 2


def test_average_is_integer_milli_division_as_upstream() -> None:
    # (4401 + 4400 + 4400) // 3 = 4400 (not 4400.33): ratio exactly 1.1 -> inside the tolerance -> keep 3
    assert plain(pods(3), values(p0=4401, p1=4400, p2=4400), current=3) == 3
    ratio, usage = hpa.get_metric_usage_ratio(values(p0=4401, p1=4400, p2=4400), 4000)
    assert (ratio, usage) == (1.1, 4400)
    # 13202 // 3 = 4400 as well (a float or rounded mean, 4400.67, would leave the band and scale to 4)
    assert plain(pods(3), values(p0=4401, p1=4401, p2=4400), current=3) == 3


def test_asymmetric_tolerances_from_behavior() -> None:
    # KEP-4951: scaleUp.tolerance 0.05 -> 4.3 / 4 = 1.075 is now outside -> ceil(1.075 * 2) = 3
    spec = HPASpec(min_replicas=1, max_replicas=10, metrics=(PodsMetric(name=QUEUE, target_milli=4000),),
                   behavior=Behavior(scale_up=ScalingRules(tolerance=0.05)))
    ctl = HorizontalController(spec=spec)
    assert ctl.tolerances() == Tolerances(scale_down=0.1, scale_up=0.05)
    d = ctl.reconcile(now=0.0, current_replicas=2, pods=pods(2), metrics={QUEUE: values(p0=4300, p1=4300)})
    assert d.desired_replicas == 3
    # the controller's flag alone: 1.075 is inside 0.1 -> keep 2
    no_behavior = HorizontalController(spec=HPASpec(min_replicas=1, max_replicas=10, metrics=spec.metrics))
    d = no_behavior.reconcile(now=0.0, current_replicas=2, pods=pods(2), metrics={QUEUE: values(p0=4300, p1=4300)})
    assert d.desired_replicas == 2 and not d.rescale


# ------------------------------------------------------------------------------------------ missing / unready pods


def test_missing_pods_count_as_the_target_on_a_scale_down() -> None:
    # 2 pods report 1, 2 report nothing: ratio 1/4 = 0.25 < 1 -> missing pods use the target (4):
    # (1 + 1 + 4 + 4) / 4 = 2.5 -> 0.625 -> ceil(0.625 * 4) = ceil(2.5) = 3 (not ceil(0.25 * 2) = 1)
    assert plain(pods(4), values(p0=1000, p1=1000), current=4) == 3


def test_missing_pods_count_as_zero_on_a_scale_up_and_can_cancel_it() -> None:
    # 3 pods report 5.6, 1 reports nothing: ratio 1.4 > 1 -> the missing pod uses 0:
    # 16.8 / 4 = 4.2 -> 1.05, inside the tolerance -> keep 4
    assert plain(pods(4), values(p0=5600, p1=5600, p2=5600), current=4) == 4
    # 2 pods report 6, 2 nothing: ratio 1.5 -> (6 + 6 + 0 + 0) / 4 = 3 -> 0.75: the direction flips -> keep 4
    assert plain(pods(4), values(p0=6000, p1=6000), current=4) == 4
    # 3 pods report 10, 1 nothing: 2.5 -> 30 / 4 = 7.5 -> 1.875 -> ceil(1.875 * 4) = 8
    assert plain(pods(4), values(p0=10000, p1=10000, p2=10000), current=4) == 8


def test_pending_pods_count_as_zero_only_when_scaling_up() -> None:
    ps = [*pods(2), Pod(name="new", phase="Pending")]
    # 2 running report 5 (ratio 1.25); the pending one counts as 0: 10 / 3 = 3.333 -> 0.833, the direction
    # flips -> keep 3
    assert plain(ps, values(p0=5000, p1=5000), current=3) == 3
    # scaling down, the pending pod is just left out: 0.25 -> ceil(0.25 * 2) = 1
    assert plain(ps, values(p0=1000, p1=1000), current=3) == 1
    # for custom metrics a Running pod that is not Ready but reports counts like a ready one
    not_ready = [*pods(2), Pod(name="loading", ready=False)]
    assert plain(not_ready, values(p0=8000, p1=8000, loading=8000), current=3) == 6  # 2 * 3


def test_deleting_and_failed_pods_are_ignored() -> None:
    ps = [*pods(3), Pod(name="gone", deleting=True), Pod(name="dead", phase="Failed")]
    # only the 3 live pods: ratio 2 -> ceil(2 * 3) = 6, though gone and dead report 0
    assert plain(ps, values(p0=8000, p1=8000, p2=8000, gone=0, dead=0), current=5) == 6


def test_no_metric_at_all_is_an_error() -> None:
    with pytest.raises(MetricError, match="did not receive metrics"):
        plain(pods(2), {}, current=2)
    with pytest.raises(MetricError, match="no pods"):
        plain([], values(p0=1), current=2)
    ctl = HorizontalController(spec=HPASpec(min_replicas=1, max_replicas=5,
                                            metrics=(PodsMetric(name=QUEUE, target_milli=4000),)))
    d = ctl.reconcile(now=0.0, current_replicas=2, pods=pods(2), metrics={QUEUE: {}})
    assert not d.rescale and d.desired_replicas == 2
    assert "no metrics returned from custom metrics API" in d.scaling_active


# ------------------------------------------------------------------------------------------ max over metrics


def _two_metric_controller() -> HorizontalController:
    return HorizontalController(spec=HPASpec(min_replicas=1, max_replicas=10, metrics=(
        PodsMetric(name=QUEUE, target_milli=4000), PodsMetric(name=TOKENS, target_milli=1_000_000))))


def test_the_largest_proposal_wins() -> None:
    ctl = _two_metric_controller()
    # queue 2 / 4 -> ceil(0.5 * 3) = 2; tokens 1500 / 1000 -> ceil(1.5 * 3) = 5 -> 5
    d = ctl.reconcile(now=0.0, current_replicas=3, pods=pods(3), metrics={
        QUEUE: values(p0=2000, p1=2000, p2=2000), TOKENS: values(p0=1_500_000, p1=1_500_000, p2=1_500_000)})
    assert (d.desired_replicas, d.metric) == (5, TOKENS)


def test_a_broken_metric_blocks_a_scale_down_but_not_a_scale_up() -> None:
    tokens_up = values(p0=1_500_000, p1=1_500_000, p2=1_500_000)  # proposes 5
    d = _two_metric_controller().reconcile(now=0.0, current_replicas=3, pods=pods(3), metrics={
        QUEUE: MetricError("unable to fetch metrics"), TOKENS: tokens_up})
    assert d.rescale and d.desired_replicas == 5
    tokens_down = values(p0=500_000, p1=500_000, p2=500_000)  # proposes 2 < 3
    d = _two_metric_controller().reconcile(now=0.0, current_replicas=3, pods=pods(3), metrics={
        QUEUE: MetricError("unable to fetch metrics"), TOKENS: tokens_down})
    assert not d.rescale and d.desired_replicas == 3 and d.scaling_active.startswith("FailedGetMetric")


def test_out_of_range_current_is_clamped_without_reading_metrics() -> None:
    ctl = _two_metric_controller()
    d = ctl.reconcile(now=0.0, current_replicas=12, pods=pods(12), metrics={})
    assert d.desired_replicas == 10 and d.rescale
    spec = HPASpec(min_replicas=3, max_replicas=10, metrics=(PodsMetric(name=QUEUE, target_milli=4000),))
    d = HorizontalController(spec=spec).reconcile(now=0.0, current_replicas=1, pods=pods(1), metrics={})
    assert d.desired_replicas == 3


# ------------------------------------------------------------------------------------------ no behavior


def _queue_controller(behavior: Behavior | None, *, lo: int = 1, hi: int = 20) -> HorizontalController:
    return HorizontalController(spec=HPASpec(min_replicas=lo, max_replicas=hi,
                                             metrics=(PodsMetric(name=QUEUE, target_milli=4000),), behavior=behavior))


def _queue(n: int, milli: int) -> dict[str, dict[str, PodMetric]]:
    return {QUEUE: {f"p{i}": PodMetric(value=milli) for i in range(n)}}


def test_default_scale_up_limit_without_behavior_is_double_or_four() -> None:
    # from 1: max(2 * 1, 4) = 4; from 3: max(6, 4) = 6; maxReplicas 5 binds below 6 -> TooManyReplicas
    d = _queue_controller(None).reconcile(now=0.0, current_replicas=1, pods=pods(1), metrics=_queue(1, 40000))
    assert (d.desired_replicas, d.scaling_limited) == (4, "ScaleUpLimit")
    d = _queue_controller(None).reconcile(now=0.0, current_replicas=3, pods=pods(3), metrics=_queue(3, 40000))
    assert d.desired_replicas == 6
    d = _queue_controller(None, hi=5).reconcile(now=0.0, current_replicas=3, pods=pods(3), metrics=_queue(3, 40000))
    assert (d.desired_replicas, d.scaling_limited) == (5, "TooManyReplicas")


def test_downscale_stabilization_without_behavior_keeps_the_highest_of_five_minutes() -> None:
    ctl = _queue_controller(None)
    assert ctl.reconcile(now=0.0, current_replicas=5, pods=pods(5), metrics=_queue(5, 4000)).desired_replicas == 5
    # queue 1.6 / 4 = 0.4 -> ceil(0.4 * 5) = 2, but 5 was recommended within 300 s -> stay at 5
    d = ctl.reconcile(now=15.0, current_replicas=5, pods=pods(5), metrics=_queue(5, 1600))
    assert (d.desired_replicas, d.able_to_scale) == (5, "ScaleDownStabilized")
    d = ctl.reconcile(now=299.0, current_replicas=5, pods=pods(5), metrics=_queue(5, 1600))
    assert d.desired_replicas == 5
    # at 301 the samples from t=0 are older than the window: the max of the rest is 2
    d = ctl.reconcile(now=301.0, current_replicas=5, pods=pods(5), metrics=_queue(5, 1600))
    assert d.desired_replicas == 2 and d.rescale


# ------------------------------------------------------------------------------------------ behavior


LLM_UP = ScalingRules(stabilization_window_seconds=0, select_policy="Max",
                      policies=(ScalingPolicy(type="Pods", value=2, period_seconds=60),
                                ScalingPolicy(type="Percent", value=100, period_seconds=60)))


def test_scale_up_policies_count_the_events_of_their_period() -> None:
    ctl = _queue_controller(Behavior(scale_up=LLM_UP))
    # t=0 from 1: Pods -> 1 + 2 = 3, Percent -> ceil(1 * 2) = 2, Max -> 3
    d = ctl.reconcile(now=0.0, current_replicas=1, pods=pods(1), metrics=_queue(1, 40000))
    assert (d.desired_replicas, d.scaling_limited) == (3, "ScaleUpLimit")
    # t=30: +2 within 60 s -> period start 3 - 2 = 1 -> limit max(3, 2) = 3 -> no change
    d = ctl.reconcile(now=30.0, current_replicas=3, pods=pods(3), metrics=_queue(3, 40000))
    assert d.desired_replicas == 3 and not d.rescale
    # t=61: the event is older than 60 s -> start 3 -> max(3 + 2, ceil(3 * 2)) = 6
    d = ctl.reconcile(now=61.0, current_replicas=3, pods=pods(3), metrics=_queue(3, 40000))
    assert d.desired_replicas == 6


def test_select_policy_min_and_disabled() -> None:
    up_min = ScalingRules(select_policy="Min", policies=LLM_UP.policies)
    # min(1 + 2, ceil(1 * 2)) = 2
    d = _queue_controller(Behavior(scale_up=up_min)).reconcile(now=0.0, current_replicas=1, pods=pods(1),
                                                              metrics=_queue(1, 40000))
    assert d.desired_replicas == 2
    disabled = ScalingRules(select_policy="Disabled")
    d = _queue_controller(Behavior(scale_up=disabled)).reconcile(now=0.0, current_replicas=1, pods=pods(1),
                                                                metrics=_queue(1, 40000))
    assert d.desired_replicas == 1 and not d.rescale


def test_scale_down_window_then_one_pod_per_period() -> None:
    # the e2e tests' FAST_DOWN: stabilization 20 s, 1 pod per 10 s
    down = ScalingRules(stabilization_window_seconds=20,
                        policies=(ScalingPolicy(type="Pods", value=1, period_seconds=10),))
    ctl = _queue_controller(Behavior(scale_up=LLM_UP, scale_down=down))
    current = 3
    seen = []
    for now in (0.0, 5.0, 10.0, 15.0, 20.0, 25.0, 30.0, 35.0):
        metric = 4000 if now == 0 else 0  # at target first, then an empty queue (proposal 0)
        d = ctl.reconcile(now=now, current_replicas=current, pods=pods(current), metrics=_queue(current, metric))
        current = d.desired_replicas
        seen.append(current)
    # until t=20 the window still holds t=0's 3 (strictly newer than now - 20); at 20 it drops out: down to 0,
    # limited by Pods 1/10 s to 3 - 1 = 2; at 25 the event of t=20 counts (start 2 + 1 = 3 -> 2); at 30 it no
    # longer does (20 > 30 - 10 is false) -> 1; then minReplicas
    assert seen == [3, 3, 3, 3, 2, 2, 1, 1]


def test_percent_scale_down_truncates() -> None:
    down = ScalingRules(stabilization_window_seconds=0,
                        policies=(ScalingPolicy(type="Percent", value=50, period_seconds=60),))
    ctl = _queue_controller(Behavior(scale_down=down))
    # from 5: int(5 * (1 - 0.5)) = int(2.5) = 2
    d = ctl.reconcile(now=0.0, current_replicas=5, pods=pods(5), metrics=_queue(5, 0))
    assert (d.desired_replicas, d.scaling_limited) == (2, "ScaleDownLimit")


def test_partial_behavior_takes_the_api_defaults() -> None:
    b = hpa.default_behavior(Behavior(scale_up=ScalingRules(policies=(ScalingPolicy(type="Pods", value=1,
                                                                                      period_seconds=30),))),
                             downscale_stabilization=300)
    assert b.scale_up is not None and b.scale_down is not None
    assert b.scale_up.stabilization_window_seconds == 0 and b.scale_up.select_policy == "Max"
    assert b.scale_up.policies == (ScalingPolicy(type="Pods", value=1, period_seconds=30),)
    # scaleDown unset: Percent 100 per 15 s, and the controller's 5 min window
    assert b.scale_down.stabilization_window_seconds == 300
    assert b.scale_down.policies == (ScalingPolicy(type="Percent", value=100, period_seconds=15),)


def test_our_default_behavior_is_what_the_operator_writes() -> None:
    from llm_operator import api
    from llm_operator.builders.autoscaling import DEFAULT_BEHAVIOR
    from llm_operator.simulate import policy

    llmd = api.parse({"apiVersion": api.API_VERSION, "kind": api.KIND, "metadata": {"name": "m"}, "spec": {
        "model": {"name": "m", "uri": "hf://a/b"}, "runtime": {"backend": "vllm"}, "resources": {"gpu": {"count": 2}},
        "autoscaling": {"maxReplicas": 6, "metrics": {"queueDepth": 4, "tokensPerSecond": 850.5}}}})
    pol = policy.parse("spec", llmd=llmd, source="test")
    assert pol.hpa is not None and pol.hpa.behavior is not None
    up = DEFAULT_BEHAVIOR["scaleUp"]
    assert pol.hpa.behavior.scale_up == ScalingRules(
        stabilization_window_seconds=up["stabilizationWindowSeconds"], select_policy=up["selectPolicy"],
        policies=tuple(ScalingPolicy(type=p["type"], value=p["value"], period_seconds=p["periodSeconds"])
                       for p in up["policies"]))
    # targets as quantities, in milli-units: "4" -> 4000, "850500m" -> 850500
    assert pol.hpa.metrics == (PodsMetric(name=QUEUE, target_milli=4000), PodsMetric(name=TOKENS, target_milli=850500))
    assert (pol.hpa.min_replicas, pol.hpa.max_replicas) == (2, 6)  # minReplicas left out: 2
    assert policy.parse("hpa:maxReplicas=1", llmd=llmd, source="test").hpa == replace(
        pol.hpa, min_replicas=1, max_replicas=1)  # the default follows the overlay's maxReplicas


# ------------------------------------------------------------------------------------------ CPU (Resource)


def test_cpu_utilization_is_truncated_percent_of_requests() -> None:
    two = pods(2, cpu_request_milli=1000, start_time=-1000.0, ready_transition=-990.0)
    # (900 + 500) * 100 / 2000 = 70 % -> ratio 1 -> keep 2
    r, util = hpa.get_resource_replicas(pods=two, metrics=values(p0=900, p1=500), current_replicas=2,
                                        target_utilization=70, tolerances=TOL, now=0.0)
    assert (r, util) == (2, 70)
    # (1000 + 1000) * 100 / 2000 = 100 % -> 100 / 70 = 1.4286 -> ceil(2.857) = 3
    r, _ = hpa.get_resource_replicas(pods=two, metrics=values(p0=1000, p1=1000), current_replicas=2,
                                     target_utilization=70, tolerances=TOL, now=0.0)
    assert r == 3
    with pytest.raises(MetricError, match="missing request for cpu"):
        hpa.get_resource_replicas(pods=pods(1, start_time=-1000.0, ready_transition=-990.0), metrics=values(p0=1),
                                  current_replicas=1, target_utilization=70, tolerances=TOL, now=0.0)


def test_cpu_samples_of_fresh_or_unready_pods_are_set_aside() -> None:
    now = 100.0
    # started 50 s ago (inside the 300 s initialization period), Ready since 40 s ago; the sample's 15 s window
    # must start after the Ready transition: timestamp 70 >= 60 + 15? no -> unready; 80 >= 75 -> ready
    fresh = Pod(name="a", start_time=50.0, ready_transition=60.0, cpu_request_milli=1000)
    early = {"a": PodMetric(value=900, timestamp=70.0, window=15.0)}
    late = {"a": PodMetric(value=900, timestamp=80.0, window=15.0)}
    assert hpa.group_pods([fresh], early, resource="cpu", now=now).unready == {"a"}
    assert hpa.group_pods([fresh], late, resource="cpu", now=now).ready_pod_count == 1
    # past the initialization period, a pod that is not Ready and never became Ready within 30 s of its start
    old = Pod(name="b", start_time=-500.0, ready=False, ready_transition=-495.0, cpu_request_milli=1000)
    assert hpa.group_pods([old], {"b": PodMetric(value=1)}, resource="cpu", now=now).unready == {"b"}
    # custom metrics never look at readiness
    assert hpa.group_pods([old], {"b": PodMetric(value=1)}, resource="", now=now).ready_pod_count == 1


def test_cpu_policy_scales_through_the_controller() -> None:
    spec = HPASpec(min_replicas=1, max_replicas=10, metrics=(ResourceMetric(name="cpu", target_utilization=70),))
    ps = pods(2, cpu_request_milli=1000, start_time=-1000.0, ready_transition=-990.0)
    d = HorizontalController(spec=spec).reconcile(now=0.0, current_replicas=2, pods=ps,
                                                  metrics={"cpu": values(p0=1000, p1=1000)})
    assert d.desired_replicas == 3
