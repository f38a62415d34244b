"""The kind registry is the one list: the builders, the shipped RBAC and kopf's watches all agree with it."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from llm_operator import _kinds as registry
from llm_operator import builders

ROOT = Path(__file__).resolve().parents[2]


def _triples(rules: list[dict[str, list[str]]]) -> set[tuple[str, str, str]]:
    return {(g, r, v) for rule in rules for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}


def test_shipped_rbac_is_exactly_what_the_registry_derives() -> None:
    docs = list(yaml.safe_load_all((ROOT / "docs" / "rbac.yaml").read_text()))
    role = next(d for d in docs if d["kind"] == "ClusterRole")
    shipped, derived = _triples(role["rules"]), _triples(registry.cluster_role_rules())
    assert shipped - derived == set(), "docs/rbac.yaml grants more than the registry (llm_operator._kinds) needs"
    assert derived - shipped == set(), "docs/rbac.yaml lacks verbs the registry (llm_operator._kinds) needs"


def test_every_kind_the_builders_emit_is_a_registered_child() -> None:
    emitted = set()
    for path in sorted((ROOT / "examples").glob("*.yaml")):
        for llmd in builders.load_file(path):
            for child in builders.build_children(llmd, namespace="ns", owner_uid="u", monitoring_crds=True):
                emitted.add((child["apiVersion"], child["kind"]))
    children = {(k.api_version, k.kind) for k in registry.CHILDREN}
    assert emitted <= children, emitted - children
    assert {(k.api_version, k.kind) for k in registry.WATCHED} <= emitted


def test_children_are_cached_by_informers_and_kopf_watches_the_rest() -> None:
    import kopf
    from llm_operator import handlers
    from llm_operator._cache import Caches

    watched = {h.selector.any_name for h in kopf.get_default_registry()._watching.get_all_handlers()
               if h.selector is not None}
    # Children come from the operator's own informers (server-side label selector), not kopf's watches, which
    # would stream every object of the kind in the cluster and filter labels client-side.
    assert not {k.plural for k in registry.CHILDREN} & watched
    assert {"llmdeployments", "customresourcedefinitions", "nodes"} <= watched
    started: list[tuple[str, str | None, str]] = []

    class Recorded:
        def __init__(self, kube: object, kind: registry.Kind, *, label_selector: str, namespace: str | None,
                     on_event: object) -> None:
            started.append((kind.plural, namespace, label_selector))

        def start(self) -> Recorded:
            return self

    caches = Caches(None, label_selector=handlers.CHILD_SELECTOR, informer=Recorded)  # type: ignore[arg-type]
    caches.start()
    always = {k.plural for k in registry.CHILDREN if k.crd is None}
    assert {p for p, _, _ in started} == always
    assert {k.plural for k in registry.WATCHED} <= always
    assert {s for _, _, s in started} == {"app.kubernetes.io/managed-by=triton-llm-operator"}
    # A user's HTTPRoute carries none of our labels: its informer (started while the CRD is served) selects all.
    route = registry.kind("HTTPRoute")
    assert registry.OPTIONAL[route.crd or ""] is route
    caches.start_kind(route)
    assert started[-1] == ("httproutes", None, "")


def test_a_route_event_requeues_the_llmdeployments_that_name_the_route() -> None:
    from llm_operator.handlers import _naming

    def body(route: str | None) -> dict[str, object]:
        canary = {"steps": [{"setWeight": 10}]}
        if route:
            canary["trafficRouting"] = {"gatewayAPI": {"httpRoute": route}}  # type: ignore[assignment]
        return {"spec": {"rollout": {"strategy": "Canary", "canary": canary}}}

    bodies = {("a", "m1"): body("llm"), ("a", "m2"): body("other"), ("b", "m3"): body("llm"), ("a", "m4"): body(None),
              ("a", "m5"): {"spec": {}}}
    assert _naming(bodies, "HTTPRoute", "a", "llm") == [("a", "m1")]
    assert _naming(bodies, "HTTPRoute", "c", "llm") == []
    assert _naming(bodies, "ConfigMap", "a", "llm") == []


def test_paths_come_from_the_registry() -> None:
    from llm_operator._k8s import _path

    assert _path("v1", "Node", "ns", "n1", None) == "/api/v1/nodes/n1"
    assert _path("apps/v1", "Deployment", "ns", "d", "scale") == "/apis/apps/v1/namespaces/ns/deployments/d/scale"
    with pytest.raises(ValueError, match="_kinds"):
        _path("v1", "Unknown", "ns", None, None)
