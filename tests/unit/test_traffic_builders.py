"""Pure canary traffic builders: the per-revision Services and the HTTPRoute weight body (builders/traffic.py)."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from llm_operator import api, builders

UID = "7f6c9a1e-0000-4000-8000-000000000001"
STABLE, CANARY = "llama-stable", "llama-canary"


def make(service: dict[str, Any] | None = None) -> api.LLMDeployment:
    spec: dict[str, Any] = {
        "model": {"name": "llama-3.1-8b", "uri": "hf://meta-llama/Llama-3.1-8B-Instruct"},
        "runtime": {"backend": "vllm"},
        "resources": {"gpu": {"count": 1, "product": "NVIDIA-H100-80GB-HBM3"}, "cpu": "8", "memory": "64Gi"},
    }
    if service is not None:
        spec["service"] = service
    return api.parse({"apiVersion": api.API_VERSION, "kind": api.KIND,
                      "metadata": {"name": "llama", "namespace": "models"}, "spec": spec})


def user_route() -> dict[str, Any]:
    """A route as read from the API server (defaults filled in), with everything a user might have."""
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "llm", "namespace": "models", "resourceVersion": "4711", "generation": 3,
                     "labels": {"team": "ml"}, "annotations": {"note": "mine"}},
        "spec": {
            "parentRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "public"}],
            "hostnames": ["llm.example.com"],
            "rules": [
                {
                    "name": "chat",
                    "matches": [{"path": {"type": "PathPrefix", "value": "/v1/chat"}}],
                    "filters": [{"type": "RequestHeaderModifier",
                                 "requestHeaderModifier": {"add": [{"name": "x-route", "value": "chat"}]}}],
                    "backendRefs": [
                        {"group": "", "kind": "Service", "name": STABLE, "port": 8000, "weight": 100},
                        {"group": "", "kind": "Service", "name": CANARY, "port": 8000, "weight": 0,
                         "filters": [{"type": "ResponseHeaderModifier",
                                      "responseHeaderModifier": {"set": [{"name": "x-rev", "value": "canary"}]}}]},
                        {"group": "", "kind": "Service", "name": "legacy-llm", "port": 80, "weight": 5},
                    ],
                    "timeouts": {"request": "300s"},
                },
                {
                    "matches": [{"path": {"type": "PathPrefix", "value": "/healthz"}}],
                    "backendRefs": [{"group": "", "kind": "Service", "name": "health", "port": 8080, "weight": 1}],
                },
                {   # names our Services in the route's namespace explicitly, weights left to the default
                    "matches": [{"path": {"type": "PathPrefix", "value": "/v2"}}],
                    "backendRefs": [
                        {"name": STABLE, "namespace": "models", "port": 8000},
                        {"name": CANARY, "port": 8000},
                        # Same names, but not our Services: another kind, another namespace.
                        {"group": "inference.networking.k8s.io", "kind": "InferencePool", "name": STABLE,
                         "weight": 7},
                        {"name": CANARY, "namespace": "elsewhere", "port": 8000, "weight": 9},
                    ],
                },
            ],
        },
        "status": {"parents": []},
    }


def weights(body_or_route: dict[str, Any], rule: int) -> list[Any]:
    return [ref.get("weight") for ref in body_or_route["spec"]["rules"][rule].get("backendRefs", [])]


def applied(route: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    """What the API server holds after the apply: `spec.rules` is atomic, so it is replaced whole."""
    out = copy.deepcopy(route)
    out["spec"]["rules"] = copy.deepcopy(body["spec"]["rules"])
    return out


def set_weight(route: dict[str, Any], w: int) -> dict[str, Any] | None:
    return builders.route_weights(route, stable_service=STABLE, canary_service=CANARY, canary_weight=w)


# ------------------------------------------------------------------------------------ revision Services


@pytest.mark.parametrize("role", ["stable", "canary"])
def test_revision_service_has_the_main_services_ports_and_labels_and_selects_one_revision(role: str) -> None:
    llmd = make()
    main = builders.build_service(llmd, namespace="models", owner_uid=UID)
    svc = builders.build_revision_service(llmd, namespace="models", owner_uid=UID, role=role,  # type: ignore[arg-type]
                                          revision="abc123def0")
    assert svc["metadata"]["name"] == f"llama-{role}" == builders.revision_service_name(llmd, role)  # type: ignore[arg-type]
    assert svc["metadata"]["namespace"] == "models"
    assert svc["spec"]["ports"] == main["spec"]["ports"]
    assert svc["metadata"]["labels"] == {**main["metadata"]["labels"], builders.REVISION_LABEL: "abc123def0"}
    assert svc["spec"]["selector"] == {**builders.selector_labels(llmd), builders.REVISION_LABEL: "abc123def0"}
    assert svc["metadata"]["ownerReferences"] == main["metadata"]["ownerReferences"]
    assert svc["spec"]["type"] == "ClusterIP"


def test_revision_service_is_cluster_ip_without_the_load_balancer_annotations() -> None:
    llmd = make({"type": "LoadBalancer", "annotations": {"service.beta.kubernetes.io/aws-load-balancer-type": "nlb"}})
    svc = builders.build_revision_service(llmd, namespace="models", owner_uid=None, role="canary", revision="r1")
    assert svc["spec"]["type"] == "ClusterIP"
    assert "annotations" not in svc["metadata"] and "ownerReferences" not in svc["metadata"]


def test_revision_service_refuses_a_bad_role_or_no_revision() -> None:
    with pytest.raises(ValueError, match="role"):
        builders.build_revision_service(make(), namespace="m", owner_uid=UID, role="blue", revision="r")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="revision"):
        builders.build_revision_service(make(), namespace="m", owner_uid=UID, role="stable", revision="")


# ------------------------------------------------------------------------------------------ route_weights


def test_weights_set_in_every_rule_that_names_the_services_and_nothing_else_changes() -> None:
    route = user_route()
    before = json.dumps(route, sort_keys=True)
    body = set_weight(route, 10)
    assert body is not None
    assert json.dumps(route, sort_keys=True) == before, "the input route must not be mutated"
    assert weights(body, 0) == [90, 10, 5]
    assert weights(body, 1) == [1]
    assert weights(body, 2) == [90, 10, 7, 9]  # the InferencePool and the other namespace's Service untouched
    # Everything but those four weights is the route's own, byte for byte.
    expected = copy.deepcopy(route["spec"]["rules"])
    expected[0]["backendRefs"][0]["weight"], expected[0]["backendRefs"][1]["weight"] = 90, 10
    expected[2]["backendRefs"][0]["weight"], expected[2]["backendRefs"][1]["weight"] = 90, 10
    assert body["spec"]["rules"] == expected


def test_the_body_holds_the_whole_atomic_rules_list_and_no_other_field() -> None:
    body = set_weight(user_route(), 50)
    assert body is not None
    assert body["apiVersion"] == "gateway.networking.k8s.io/v1" and body["kind"] == "HTTPRoute"
    # resourceVersion: a precondition, so a user's edit since our read fails the apply instead of being lost.
    assert body["metadata"] == {"name": "llm", "namespace": "models", "resourceVersion": "4711"}
    assert list(body["spec"]) == ["rules"]  # parentRefs, hostnames, labels, status stay the user's
    assert "status" not in body
    assert len(body["spec"]["rules"]) == 3


def test_idempotent_none_once_the_weights_are_set() -> None:
    route = user_route()
    body = set_weight(route, 25)
    assert body is not None
    assert set_weight(applied(route, body), 25) is None
    assert set_weight(route, 0) is not None  # rule 2's defaulted weights (1, 1) still differ from (100, 0)
    route["spec"]["rules"].pop(2)
    assert set_weight(route, 0) is None  # rule 0 already says stable 100, canary 0


def test_none_when_no_rule_names_the_services() -> None:
    route = user_route()
    route["spec"]["rules"] = [route["spec"]["rules"][1]]
    assert set_weight(route, 10) is None
    assert set_weight({"metadata": {"name": "empty"}, "spec": {}}, 10) is None


def test_a_missing_weight_counts_as_the_crd_default_of_one() -> None:
    route = user_route()
    route["spec"]["rules"] = [route["spec"]["rules"][2]]  # weights absent: both 1
    assert set_weight(route, 99) is not None  # stable 1 already, canary 1 -> 99
    body = set_weight(route, 50)
    assert body is not None and weights(body, 0)[:2] == [50, 50]


def test_promotion_and_rollback_weights() -> None:
    route = user_route()
    full = set_weight(route, 100)
    assert full is not None and weights(full, 0)[:2] == [0, 100]
    back = set_weight(applied(route, full), 0)
    assert back is not None and weights(back, 0)[:2] == [100, 0]


@pytest.mark.parametrize("bad", [-1, 101, 10.0, True, "10"])
def test_weight_must_be_an_integer_percentage(bad: Any) -> None:
    with pytest.raises(ValueError, match="canary_weight"):
        set_weight(user_route(), bad)


def test_stable_and_canary_must_differ() -> None:
    with pytest.raises(ValueError, match="differ"):
        builders.route_weights(user_route(), stable_service=STABLE, canary_service=STABLE, canary_weight=5)


@given(st.integers(min_value=0, max_value=100), st.integers(min_value=0, max_value=100))
def test_any_step_sequence_converges_in_one_apply(first: int, second: int) -> None:
    route = user_route()
    for w in (first, second):
        body = set_weight(route, w)
        if body is not None:
            route = applied(route, body)
        assert set_weight(route, w) is None
        for rule in (0, 2):
            assert weights(route, rule)[:2] == [100 - w, w]
        assert route["spec"]["rules"][1] == user_route()["spec"]["rules"][1]


# ------------------------------------------------------------------------------------------ route_problem


def problem(route: dict[str, Any] | None) -> str | None:
    return builders.route_problem(route, route_name="llm", stable_service=STABLE, canary_service=CANARY)


def test_no_problem_with_a_route_that_names_both_services() -> None:
    assert problem(user_route()) is None


def test_missing_route_names_the_field_and_the_fix() -> None:
    msg = problem(None)
    assert msg is not None
    assert msg.startswith("spec.rollout.canary.trafficRouting.gatewayAPI.httpRoute: HTTPRoute 'llm' does not exist")
    assert f"{{name: {STABLE}, port: 9000, weight: 100}}" in msg and f"{{name: {CANARY}, port: 9000, weight: 0}}" in msg


def test_route_without_our_backend_refs() -> None:
    route = user_route()
    route["spec"]["rules"] = [route["spec"]["rules"][1]]
    # Same names but another namespace or kind are not our Services.
    route["spec"]["rules"].append({"backendRefs": [{"name": STABLE, "namespace": "elsewhere", "port": 8000},
                                                   {"kind": "InferencePool", "group": "x.io", "name": CANARY}]})
    msg = problem(route)
    assert msg is not None
    assert f"HTTPRoute 'llm' has no rule with a backendRef to Service {STABLE} or {CANARY}" in msg
    assert "spec.rollout.canary.trafficRouting.gatewayAPI.httpRoute" in msg


def test_a_rule_with_only_one_of_the_two_services_is_refused_not_completed() -> None:
    route = user_route()
    route["spec"]["rules"][0]["backendRefs"].pop(1)  # canary gone from rule 0
    route["spec"]["rules"][0]["backendRefs"][0]["port"] = 8001
    msg = problem(route)
    assert msg is not None
    assert f"spec.rules[0].backendRefs names Service {STABLE} but not {CANARY}" in msg
    assert f"add {{name: {CANARY}, port: 8001, weight: 0}} next to it" in msg
    assert "never adds backendRefs" in msg
    route["spec"]["rules"][2]["backendRefs"].pop(0)  # and stable gone from rule 2
    msg = problem(route)
    assert msg is not None and "(1 more rule(s) alike)" in msg
