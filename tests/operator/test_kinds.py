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


def test_kopf_watches_every_watched_child_and_the_optional_crds() -> None:
    import kopf
    from llm_operator import handlers  # noqa: F401  (registers the handlers)

    watched = {h.selector.any_name for h in kopf.get_default_registry()._watching.get_all_handlers()
               if h.selector is not None}
    assert {k.plural for k in registry.WATCHED} <= watched
    assert "customresourcedefinitions" in watched and "nodes" in watched


def test_paths_come_from_the_registry() -> None:
    from llm_operator._k8s import _path

    assert _path("v1", "Node", "ns", "n1", None) == "/api/v1/nodes/n1"
    assert _path("apps/v1", "Deployment", "ns", "d", "scale") == "/apis/apps/v1/namespaces/ns/deployments/d/scale"
    with pytest.raises(ValueError, match="_kinds"):
        _path("v1", "Unknown", "ns", None, None)
