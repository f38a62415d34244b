"""Canary weights on a user's HTTPRoute, against the real Gateway API CRDs (sigs.k8s.io/gateway-api, installed by
`LocalCluster.up`): the operator's server-side apply changes the weights and nothing else, and what happens to
ownership when the user applies their own manifest again (docs/rollouts.md "Gateway API")."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
import yaml
from llm_operator import FIELD_MANAGER, api, builders
from llm_operator._k8s import Kube, KubeError
from llm_operator.dev._gateway_api import CRD_NAMES, VERSION

from e2e.pytest_plugin import Cluster

pytestmark = pytest.mark.cluster

ROUTE_API = "gateway.networking.k8s.io/v1"
USER = "user-gitops"  # the user's field manager (kubectl's default is "kubectl")
STABLE, CANARY = "llama-stable", "llama-canary"


def llmd() -> api.LLMDeployment:
    return api.parse({
        "apiVersion": api.API_VERSION, "kind": api.KIND, "metadata": {"name": "llama"},
        "spec": {"model": {"name": "llama-3.1-8b", "uri": "hf://meta-llama/Llama-3.1-8B-Instruct"},
                 "runtime": {"backend": "vllm"}, "resources": {"gpu": {"count": 1}}},
    })


def user_manifest(namespace: str, name: str = "llm") -> dict[str, Any]:
    """What a user keeps in Git: two rules, the first with both revision Services and an unrelated backend."""
    return {
        "apiVersion": ROUTE_API,
        "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": namespace, "labels": {"team": "ml"}},
        "spec": {
            "parentRefs": [{"name": "public"}],
            "hostnames": ["llm.example.com"],
            "rules": [
                {
                    "matches": [{"path": {"type": "PathPrefix", "value": "/v1"}}],
                    "filters": [{"type": "RequestHeaderModifier",
                                 "requestHeaderModifier": {"add": [{"name": "x-route", "value": "chat"}]}}],
                    "backendRefs": [
                        {"name": STABLE, "port": 8000, "weight": 100},
                        {"name": CANARY, "port": 8000, "weight": 0},
                        {"name": "legacy-llm", "port": 80, "weight": 10},
                    ],
                    "timeouts": {"request": "300s"},
                },
                {
                    "matches": [{"path": {"type": "PathPrefix", "value": "/healthz"}}],
                    "backendRefs": [{"name": "health", "port": 8080}],
                },
            ],
        },
    }


def user_apply(cluster: Cluster, manifest: dict[str, Any], *args: str, check: bool = True) -> Any:
    return cluster.kubectl("apply", *args, "-f", "-", input=yaml.safe_dump(manifest), check=check)


def get_route(kube: Kube, namespace: str, name: str = "llm") -> dict[str, Any]:
    route = kube.get(api_version=ROUTE_API, kind="HTTPRoute", namespace=namespace, name=name)
    assert route is not None
    return route


def set_weight(kube: Kube, route: dict[str, Any], canary_weight: int, *, force: bool = True) -> dict[str, Any]:
    body = builders.route_weights(route, stable_service=STABLE, canary_service=CANARY, canary_weight=canary_weight)
    assert body is not None
    return kube.apply(body, force=force)


def weights(route: dict[str, Any]) -> list[list[Any]]:
    return [[ref.get("weight") for ref in rule.get("backendRefs", [])] for rule in route["spec"]["rules"]]


def owners(route: dict[str, Any]) -> dict[str, list[str]]:
    """manager -> the spec fields it owns, e.g. {"triton-llm-operator": ["f:rules"]}."""
    return {m["manager"]: sorted((m.get("fieldsV1") or {}).get("f:spec", {}))
            for m in route["metadata"].get("managedFields", [])}


def everything_but_our_weights(route: dict[str, Any]) -> str:
    """The route as JSON without the two Services' weights and the server's bookkeeping."""
    out = copy.deepcopy(route)
    for key in ("resourceVersion", "generation", "managedFields"):
        out["metadata"].pop(key, None)
    for rule in out["spec"]["rules"]:
        for ref in rule.get("backendRefs", []):
            if ref["name"] in (STABLE, CANARY):
                ref.pop("weight")
    return json.dumps(out, sort_keys=True)


def test_the_dev_cluster_serves_the_gateway_api_crds_with_atomic_rule_lists(cluster: Cluster) -> None:
    for name in CRD_NAMES:
        crd = cluster.kubectl_json("get", "crd", name)
        assert crd["metadata"]["annotations"]["gateway.networking.k8s.io/bundle-version"] == VERSION
        assert crd["metadata"]["annotations"]["gateway.networking.k8s.io/channel"] == "standard"
    crd = cluster.kubectl_json("get", "crd", "httproutes.gateway.networking.k8s.io")
    for version in crd["spec"]["versions"]:
        rules = version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["rules"]
        refs = rules["items"]["properties"]["backendRefs"]
        # What route_weights relies on: an apply must send every rule (builders/traffic.py module doc).
        assert rules["x-kubernetes-list-type"] == "atomic", version["name"]
        assert refs["x-kubernetes-list-type"] == "atomic", version["name"]
        assert refs["items"]["properties"]["weight"]["default"] == 1


def test_the_operator_sets_only_the_weights_and_the_user_reapplying_conflicts(cluster: Cluster, namespace: str) -> None:
    kube = Kube(cluster.api_client())
    for role in ("stable", "canary"):  # the builder's Services are what the route's backendRefs name
        svc = builders.build_revision_service(llmd(), namespace=namespace, owner_uid=None, role=role,
                                              revision=f"rev-{role}")
        kube.apply(svc)
    assert {s["metadata"]["name"] for s in kube.list(api_version="v1", kind="Service", namespace=namespace)} \
        == {STABLE, CANARY}

    manifest = user_manifest(namespace)
    user_apply(cluster, manifest, "--server-side", f"--field-manager={USER}")
    before = get_route(kube, namespace)
    assert owners(before) == {USER: ["f:hostnames", "f:parentRefs", "f:rules"]}
    assert builders.route_problem(before, route_name="llm", stable_service=STABLE, canary_service=CANARY) is None

    # Without force the first apply conflicts: the user's manager owns the whole atomic `spec.rules`.
    with pytest.raises(KubeError) as err:
        set_weight(kube, before, 10, force=False)
    assert err.value.status == 409 and f'conflict with "{USER}": .spec.rules' in str(err.value)

    after = set_weight(kube, before, 10)
    assert weights(after) == [[90, 10, 10], [1]]
    assert everything_but_our_weights(after) == everything_but_our_weights(before)  # the rest: byte-identical
    assert after["metadata"]["generation"] == before["metadata"]["generation"] + 1
    # The operator now owns all of `spec.rules`; the user keeps parentRefs, hostnames and the label.
    assert owners(after) == {USER: ["f:hostnames", "f:parentRefs"], FIELD_MANAGER: ["f:rules"]}
    assert builders.route_weights(after, stable_service=STABLE, canary_service=CANARY, canary_weight=10) is None

    # A stale read fails instead of writing back old rules over the user's newer edit.
    with pytest.raises(KubeError) as err:
        set_weight(kube, before, 30)
    assert err.value.status == 409 and "has been modified" in str(err.value)
    assert weights(get_route(kube, namespace)) == [[90, 10, 10], [1]]

    # The user re-applies their unchanged manifest: conflict on the whole of `.spec.rules`, nothing written.
    proc = user_apply(cluster, manifest, "--server-side", f"--field-manager={USER}", check=False)
    assert proc.returncode != 0
    assert f'conflict with "{FIELD_MANAGER}": .spec.rules' in proc.stderr
    assert weights(get_route(kube, namespace)) == [[90, 10, 10], [1]]

    # Even when the weights equal the manifest's again (rollback to 100/0) it conflicts: the manifest leaves out
    # what the CRD defaults (group, kind, weight 1), and an atomic list is compared whole.
    back = set_weight(kube, get_route(kube, namespace), 0)
    assert weights(back) == [[100, 0, 10], [1]]
    proc = user_apply(cluster, manifest, "--server-side", f"--field-manager={USER}", check=False)
    assert proc.returncode != 0 and ".spec.rules" in proc.stderr
    # A manifest that spells out the defaults, equal to the live rules, co-owns them instead.
    spelled = copy.deepcopy(manifest)
    spelled["spec"]["rules"] = back["spec"]["rules"]
    user_apply(cluster, spelled, "--server-side", f"--field-manager={USER}")
    assert owners(get_route(kube, namespace)) == {USER: ["f:hostnames", "f:parentRefs", "f:rules"],
                                                  FIELD_MANAGER: ["f:rules"]}

    # With --force-conflicts the user's weights win and the operator loses `spec.rules`; its next apply (with
    # force) takes the weights back: the two managers fight until the manifest stops setting those weights.
    set_weight(kube, get_route(kube, namespace), 50)
    user_apply(cluster, manifest, "--server-side", f"--field-manager={USER}", "--force-conflicts")
    forced = get_route(kube, namespace)
    assert weights(forced) == [[100, 0, 10], [1]]
    assert owners(forced) == {USER: ["f:hostnames", "f:parentRefs", "f:rules"]}
    again = set_weight(kube, forced, 50)
    assert weights(again) == [[50, 50, 10], [1]]
    assert owners(again) == {USER: ["f:hostnames", "f:parentRefs"], FIELD_MANAGER: ["f:rules"]}
    assert everything_but_our_weights(again) == everything_but_our_weights(before)


def test_client_side_apply_overwrites_the_weights_silently(cluster: Cluster, namespace: str) -> None:
    """`kubectl apply` without --server-side (and Argo CD's default sync) is an update: no conflict."""
    kube = Kube(cluster.api_client())
    manifest = user_manifest(namespace)
    user_apply(cluster, manifest)
    before = get_route(kube, namespace)
    after = set_weight(kube, before, 10)
    assert weights(after) == [[90, 10, 10], [1]]
    assert everything_but_our_weights(after) == everything_but_our_weights(before)
    assert owners(after) == {"kubectl-client-side-apply": [".", "f:hostnames", "f:parentRefs"],
                             FIELD_MANAGER: ["f:rules"]}
    proc = user_apply(cluster, manifest)
    assert proc.returncode == 0 and "configured" in proc.stdout
    reverted = get_route(kube, namespace)
    assert weights(reverted) == [[100, 0, 10], [1]]  # until the operator's next pass
    assert FIELD_MANAGER not in owners(reverted)


def test_an_apply_without_rules_by_their_only_owner_deletes_them(cluster: Cluster, namespace: str) -> None:
    """Why the operator must never 'let go' of a route with an apply that leaves `spec.rules` out: as their sole
    manager it would delete the user's rules (the CRD's default, one rule matching `/` with no backend, remains)."""
    kube = Kube(cluster.api_client())
    user_apply(cluster, user_manifest(namespace), "--server-side", f"--field-manager={USER}")
    set_weight(kube, get_route(kube, namespace), 10)
    kube.apply({"apiVersion": ROUTE_API, "kind": "HTTPRoute", "metadata": {"name": "llm", "namespace": namespace}})
    emptied = get_route(kube, namespace)
    assert emptied["spec"]["rules"] == [{"matches": [{"path": {"type": "PathPrefix", "value": "/"}}]}]
    assert emptied["spec"]["hostnames"] == ["llm.example.com"]  # the user's other fields are theirs, untouched
