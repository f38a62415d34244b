"""The autoscaler the operator writes, and how it explains the HPA's decisions (pure, no cluster)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from llm_operator import _scaling, api, builders
from llm_operator.builders.autoscaling import pods_query, quantity


def make(autoscaling: dict[str, Any] | None, **spec: Any) -> api.LLMDeployment:
    body: dict[str, Any] = {
        "model": {"name": "m", "uri": "hf://org/m"},
        "runtime": {"backend": "vllm"},
        "resources": {"gpu": {"count": 2, "product": "NVIDIA-H100-80GB-HBM3"}},
        **spec,
    }
    if autoscaling is not None:
        body["autoscaling"] = autoscaling
    return api.parse({"apiVersion": api.API_VERSION, "kind": api.KIND, "metadata": {"name": "chat"}, "spec": body})


HPA = {"maxReplicas": 8, "metrics": {"queueDepth": 4, "tokensPerSecond": 1500, "kvCacheUtilization": 0.8}}


@pytest.mark.parametrize(("value", "text"), [(4, "4"), (4.0, "4"), (0.8, "800m"), (2.5, "2500m"), (1500, "1500")])
def test_targets_are_quantities_the_api_server_keeps(value: float, text: str) -> None:
    assert quantity(value) == text


def test_hpa_targets_the_llmdeployment_with_canonical_pods_metrics() -> None:
    hpa = builders.build_hpa(make(HPA), namespace="ns", owner_uid="u1")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": api.API_VERSION, "kind": "LLMDeployment", "name": "chat"}
    assert hpa["metadata"]["ownerReferences"][0]["uid"] == "u1"
    assert [(m["pods"]["metric"]["name"], m["pods"]["target"]["averageValue"]) for m in hpa["spec"]["metrics"]] == [
        ("llmops_queue_depth", "4"), ("llmops_generation_tokens_per_second", "1500"),
        ("llmops_kv_cache_utilization", "800m")]
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 8)  # minReplicas left out: 2


@pytest.mark.parametrize(("autoscaling", "floor"), [
    ({"maxReplicas": 8}, 2),
    ({"maxReplicas": 2}, 2),
    ({"maxReplicas": 1}, 1),  # valid before minReplicas defaulted to 2, so still valid: the default is capped
    ({"maxReplicas": 8, "minReplicas": 1}, 1),
    ({"maxReplicas": 8, "minReplicas": 5}, 5),
])
def test_min_replicas_defaults_to_two_capped_at_max(autoscaling: dict[str, Any], floor: int) -> None:
    llmd = make({**autoscaling, "metrics": {"queueDepth": 4}})
    assert llmd.spec.autoscaling is not None and llmd.spec.autoscaling.min_replicas == floor
    assert builders.build_hpa(llmd, namespace="ns", owner_uid=None)["spec"]["minReplicas"] == floor
    # left unset, as the API server stores it (no schema default), so it follows a later maxReplicas
    dumped = llmd.spec.autoscaling.model_dump(by_alias=True, exclude_unset=True)
    assert ("minReplicas" in dumped) == ("minReplicas" in autoscaling)


def test_min_replicas_default_in_a_keda_scaled_object() -> None:
    spec = {"maxReplicas": 4, "metrics": {"queueDepth": 2.5}, "provider": "KEDA",
            "keda": {"prometheusAddress": "http://prometheus.monitoring:9090"}}
    obj = builders.build_autoscaler(make(spec), namespace="ns", owner_uid=None, keda_crd=True)
    assert obj is not None and obj["spec"]["minReplicaCount"] == 2


def test_min_replicas_has_no_schema_default_and_its_rules_allow_it_unset() -> None:
    from llm_operator import _crd

    node = _crd.openapi_schema()["properties"]["spec"]["properties"]["autoscaling"]
    assert "default" not in node["properties"]["minReplicas"] and "minReplicas" not in node.get("required", [])
    rules = [r["rule"] for r in node["x-kubernetes-validations"] if r.get("fieldPath") == ".minReplicas"]
    assert rules and all(r.startswith("!has(self.minReplicas) || ") for r in rules), rules


def test_default_behavior_is_what_the_simulator_sweep_chose() -> None:
    # docs/autoscaling.md "Default behavior", docs/simulate.md: scale up one step per model load, down faster.
    assert builders.DEFAULT_BEHAVIOR == {
        "scaleUp": {"stabilizationWindowSeconds": 0, "selectPolicy": "Max",
                    "policies": [{"type": "Pods", "value": 2, "periodSeconds": 120},
                                 {"type": "Percent", "value": 100, "periodSeconds": 120}]},
        "scaleDown": {"stabilizationWindowSeconds": 120, "selectPolicy": "Max",
                      "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}]},
    }


def test_behavior_overrides_merge_per_field_over_the_llm_defaults() -> None:
    spec = {**HPA, "behavior": {"scaleDown": {"stabilizationWindowSeconds": 600}}}
    behavior = builders.build_hpa(make(spec), namespace="ns", owner_uid=None)["spec"]["behavior"]
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] == 600
    assert behavior["scaleDown"]["policies"] == builders.DEFAULT_BEHAVIOR["scaleDown"]["policies"]
    assert behavior["scaleUp"] == builders.DEFAULT_BEHAVIOR["scaleUp"]
    assert builders.DEFAULT_BEHAVIOR["scaleDown"]["stabilizationWindowSeconds"] == 120  # defaults not mutated


def test_keda_scaled_object_sums_this_llmdeployments_pods_only() -> None:
    spec = {"minReplicas": 0, "maxReplicas": 4, "metrics": {"queueDepth": 2.5}, "provider": "KEDA",
            "keda": {"prometheusAddress": "http://prometheus.monitoring:9090"}}
    llmd = make(spec)
    assert builders.build_autoscaler(llmd, namespace="ns", owner_uid=None, keda_crd=False) is None
    obj = builders.build_autoscaler(llmd, namespace="ns", owner_uid=None, keda_crd=True)
    assert obj is not None and obj["kind"] == "ScaledObject"
    assert obj["spec"]["scaleTargetRef"]["kind"] == "LLMDeployment" and obj["spec"]["minReplicaCount"] == 0
    trigger = obj["spec"]["triggers"][0]
    assert trigger["metadata"]["threshold"] == "2.5" and trigger["metricType"] == "AverageValue"
    pattern = re.search(r'pod=~"([^"]+)"', trigger["metadata"]["query"])
    assert pattern is not None
    own = "chat-" + builders.revision_hash(llmd) + "-7d9f8c6b5-x2x9q"
    for pod, ours in [(own, True), ("chatbot-r0123456789-abc-x", False), ("chat-r01234-abc-x", False)]:
        assert bool(re.fullmatch(pattern.group(1), pod)) is ours, pod  # PromQL regexes are anchored
    query = pods_query(llmd, namespace="ns", series="llmops:queue_depth")
    assert query.startswith('sum(llmops:queue_depth{namespace="ns"')


def test_children_include_the_autoscaler_only_when_asked() -> None:
    kinds = [c["kind"] for c in builders.build_children(make(HPA), namespace="ns", owner_uid=None,
                                                         monitoring_crds=False)]
    assert kinds[-1] == "HorizontalPodAutoscaler"
    assert "HorizontalPodAutoscaler" not in [c["kind"] for c in builders.build_children(
        make(None), namespace="ns", owner_uid=None, monitoring_crds=False)]


def test_autoscaling_never_changes_the_revision() -> None:
    assert builders.revision_hash(make(HPA)) == builders.revision_hash(make(None))


# ------------------------------------------------------------------------------------------ explain


def hpa_status(*, active: tuple[str, str] = ("True", "ValidMetricFound"), limited: tuple[str, str] | None = None,
               current: int = 2, desired: int = 4, last: str = "2026-11-23T05:00:00Z",
               values: dict[str, str] | None = None) -> dict[str, Any]:
    """An HPA as kube-controller-manager writes its status."""
    values = {"llmops_queue_depth": "9500m", "llmops_generation_tokens_per_second": "1200"} if values is None \
        else values
    conditions = [{"type": "AbleToScale", "status": "True", "reason": "SucceededRescale", "message": "ok"},
                  {"type": "ScalingActive", "status": active[0], "reason": active[1], "message": "hpa says"}]
    if limited:
        conditions.append({"type": "ScalingLimited", "status": limited[0], "reason": limited[1],
                           "message": "the desired replica count is more than the maximum replica count"})
    return {"status": {
        "currentReplicas": current, "desiredReplicas": desired, "lastScaleTime": last, "conditions": conditions,
        "currentMetrics": [{"type": "Pods", "pods": {"metric": {"name": n}, "current": {"averageValue": v}}}
                           for n, v in values.items()],
    }}


SPEC = api.AutoscalingSpec.model_validate({"maxReplicas": 8, "metrics": {"queueDepth": 4, "tokensPerSecond": 1500}})


def _explain(hpa: dict[str, Any] | None, previous: dict[str, Any] | None = None,
             pending: _scaling.PendingGPUs | None = None, spec: api.AutoscalingSpec = SPEC) -> _scaling.Explanation:
    return _scaling.explain(spec=spec, namespace="ns", autoscaler=hpa, previous=previous, keda_installed=False,
                            pending=pending)


def test_a_scale_decision_gives_one_event_with_its_inputs() -> None:
    previous = {"desiredReplicas": 2, "currentReplicas": 2, "lastScaleTime": "2026-11-23T04:00:00Z"}
    out = _explain(hpa_status(), previous)
    assert out.events == [("Normal", "Scaled", "Scaled 2 → 4: queue depth 9.5/replica > target 4; "
                                                 "tokens/s 1200/replica < target 1500")]
    assert out.status["lastScale"] == "2 -> 4" and out.status["summary"] == "2->4"
    assert out.status["metrics"] == [{"name": "queueDepth", "target": 4.0, "current": 9.5},
                                     {"name": "tokensPerSecond", "target": 1500.0, "current": 1200.0}]
    # The next pass sees the status it wrote: no second Event, and the last change is kept.
    again = _explain(hpa_status(current=4), out.status)
    assert again.events == [] and again.status["lastScale"] == "2 -> 4"


def test_no_event_on_first_sight_or_without_a_new_scale_time() -> None:
    assert _explain(hpa_status(), None).events == []
    same = {"desiredReplicas": 2, "lastScaleTime": "2026-11-23T05:00:00Z"}
    assert _explain(hpa_status(), same).events == []


def test_missing_metrics_say_what_to_check_and_name_the_metric() -> None:
    out = _explain(hpa_status(active=("False", "FailedGetPodsMetric"), values={}))
    active = next(c for c in out.conditions if c.type == "ScalingActive")
    assert (active.status, active.reason) == (False, "MetricsUnavailable")
    assert "llmops_queue_depth" in active.message and "apiservice v1beta1.custom.metrics.k8s.io" in active.message
    assert out.status["summary"].startswith("MetricsUnavailable")
    assert all("current" not in m for m in out.status["metrics"])


def test_bounds_come_from_the_hpa_with_advice() -> None:
    out = _explain(hpa_status(limited=("True", "TooManyReplicas"), current=8, desired=8))
    limited = next(c for c in out.conditions if c.type == "ScalingLimited")
    assert (limited.status, limited.reason) == (True, "TooManyReplicas")
    assert "maxReplicas 8" in limited.message
    assert out.status["limitedBy"] == "TooManyReplicas" and out.status["summary"] == "8 TooManyReplicas"


def test_pending_pods_for_gpus_win_with_numbers() -> None:
    pending = _scaling.PendingGPUs(pods=3, gpus_per_pod=2, message="0/8 nodes are available: 3 Insufficient "
                                   "nvidia.com/gpu")
    out = _explain(hpa_status(limited=("False", "DesiredWithinRange")), pending=pending)
    limited = next(c for c in out.conditions if c.type == "ScalingLimited")
    assert (limited.status, limited.reason) == (True, "InsufficientGPU")
    assert "3 pod(s)" in limited.message and "6 more GPU(s)" in limited.message
    assert out.status["summary"] == "2->4 InsufficientGPU"


def test_before_the_first_hpa_sync_nothing_is_claimed() -> None:
    out = _explain({"spec": {}})
    active = next(c for c in out.conditions if c.type == "ScalingActive")
    assert (active.status, active.reason) == (False, "AutoscalerStarting")
    assert "currentReplicas" not in out.status and out.events == []


def test_keda_without_its_crd_is_reported() -> None:
    spec = api.AutoscalingSpec.model_validate({"maxReplicas": 4, "metrics": {"queueDepth": 4}, "provider": "KEDA",
                                               "keda": {"prometheusAddress": "http://p:9090"}})
    out = _scaling.explain(spec=spec, namespace="ns", autoscaler=None, previous=None, keda_installed=False,
                           pending=None)
    active = next(c for c in out.conditions if c.type == "ScalingActive")
    assert (active.status, active.reason) == (False, "KEDANotInstalled")
    assert "provider: HPA" in active.message


def test_status_round_trips_through_the_status_schema() -> None:
    previous = {"desiredReplicas": 2, "lastScaleTime": "2026-11-23T04:00:00Z"}
    out = _explain(hpa_status(limited=("True", "TooManyReplicas")), previous)
    api.AutoscalingStatus.model_validate(out.status)  # every key is a declared field (the CRD prunes others)
