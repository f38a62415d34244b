"""docs/rbac.yaml grants the operator everything it really does, checked by the real RBAC authorizer."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from e2e.pytest_plugin import Cluster, Operator

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]
SA = "system:serviceaccount:llmops-system:triton-llm-operator"
# What kopf itself does for the handlers in llm_operator/handlers.py: list+watch every watched resource.
KOPF_WATCHES = [
    ("llmdeployments.serving.llmops.dev", None),
    ("deployments.apps", None),
    ("configmaps", None),
    ("services", None),
    ("poddisruptionbudgets.policy", None),
    ("nodes", None),
    ("customresourcedefinitions.apiextensions.k8s.io", None),
]

_PATH = re.compile(
    r"^/(?:api/v1|apis/(?P<group>[^/]+)/[^/]+)(?:/namespaces/(?P<ns>[^/]+))?/(?P<resource>[^/]+)"
    r"(?:/(?P<name>[^/]+))?(?:/(?P<sub>[^/]+))?$"
)
_VERBS = {"POST": "create", "PATCH": "patch", "DELETE": "delete", "PUT": "update"}


def _can(cluster: Cluster, verb: str, resource: str, namespace: str | None, subresource: str | None = None) -> bool:
    args = ["auth", "can-i", verb, resource, f"--as={SA}"]
    args += [f"--subresource={subresource}"] if subresource else []
    args += [f"--namespace={namespace}"] if namespace else ["--all-namespaces"]
    return cluster.kubectl(*args, check=False).stdout.strip() == "yes"


def test_every_request_the_operator_made_is_allowed_by_the_shipped_rbac(
    cluster: Cluster, operator: Operator, namespace: str
) -> None:
    # Make sure the operator has done a full reconcile (apply, status, events) even when run alone.
    from tests.e2e.test_operator import apply, llmd, wait_condition

    apply(cluster, namespace, llmd("rbac-probe", replicas=1))
    wait_condition(cluster, namespace, "rbac-probe", "Ready", "True")
    cluster.kubectl("create", "namespace", "llmops-system", check=False)
    cluster.kubectl("apply", "-f", str(ROOT / "docs" / "rbac.yaml"))
    calls = set(operator.controller.kube.calls)
    assert len(calls) > 10, "run after the operator tests so that the operator has done real work"
    denied = []
    for method, path in sorted(calls):
        m = _PATH.match(path.split("?")[0])
        assert m, path
        group, resource, sub = m["group"], m["resource"], m["sub"]
        verb = ("get" if m["name"] else "list") if method == "GET" else _VERBS[method]
        target = resource + (f".{group}" if group else "")
        if not _can(cluster, verb, target, m["ns"], sub):
            denied.append(f"{verb} {target} ({method} {path})")
    for resource, _ in KOPF_WATCHES:
        for verb in ("list", "watch"):
            if not _can(cluster, verb, resource, None):
                denied.append(f"{verb} {resource} (kopf watch)")
    assert not denied, "docs/rbac.yaml lacks:\n" + "\n".join(denied)


def test_the_shipped_rbac_is_least_privilege(cluster: Cluster) -> None:
    cluster.kubectl("create", "namespace", "llmops-system", check=False)
    cluster.kubectl("apply", "-f", str(ROOT / "docs" / "rbac.yaml"))
    for verb, resource in [
        ("update", "llmdeployments.serving.llmops.dev"),  # never writes spec
        ("patch", "llmdeployments.serving.llmops.dev"),
        ("delete", "llmdeployments.serving.llmops.dev"),
        ("list", "secrets"),  # reads a Secret only by the name the spec gives
        ("create", "pods"),
        ("patch", "nodes"),
        ("create", "clusterrolebindings.rbac.authorization.k8s.io"),
    ]:
        assert not _can(cluster, verb, resource, "default"), f"{verb} {resource} should be denied"
