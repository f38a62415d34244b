"""docs/rbac.yaml grants the operator everything it really does, checked by the real RBAC authorizer, and the
operator runs with nothing more than its ServiceAccount's token. The authorizer grants exactly what the kind registry
(llm_operator._kinds) says, kind by kind and verb by verb, and no rule anywhere (docs/rbac.yaml, the chart's roles
under every tested value set, the registry) holds a wildcard."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from llm_operator import _kinds as registry

from e2e.pytest_plugin import Cluster, Operator, OperatorProcess, denials, ensure_monitoring_crds, wait_for
from tests.e2e.test_operator import apply, children, get, llmd, wait_condition
from tests.unit.test_chart import VALUE_SETS, render

# Each cluster test is marked on its own: the wildcard check needs no cluster and runs beside them under xdist.

ROOT = Path(__file__).resolve().parents[2]
RBAC = ROOT / "docs" / "rbac.yaml"
SA_NAMESPACE, SA_NAME = "llmops-system", "triton-llm-operator"
SA = f"system:serviceaccount:{SA_NAMESPACE}:{SA_NAME}"

_PATH = re.compile(
    r"^/(?:api/v1|apis/(?P<group>[^/]+)/[^/]+)(?:/namespaces/(?P<ns>[^/]+))?/(?P<resource>[^/]+)"
    r"(?:/(?P<name>[^/]+))?(?:/(?P<sub>[^/]+))?$"
)
_VERBS = {"POST": "create", "PATCH": "patch", "DELETE": "delete", "PUT": "update", "WATCH": "watch"}


def kopf_watched_resources() -> list[str]:
    """Every resource kopf lists and watches for llm_operator.handlers, from kopf's own registry: event
    handlers, indexes, daemons/timers and change handlers (``resource.group``, RBAC style)."""
    import kopf
    import llm_operator.handlers  # noqa: F401 - importing registers the handlers in kopf's default registry

    registry = kopf.get_default_registry()
    selectors: set[Any] = set()
    for part in (registry._watching, registry._indexing, registry._spawning, registry._changing):
        selectors |= part.get_all_selectors()
    resources = set()
    for selector in selectors:
        # kopf matches `group, version, name` against plural, kind, singular or short names by discovery; RBAC
        # needs the plural, so a handler registered by another name makes the can-i checks below fail.
        name = selector.plural or selector.any_name
        assert isinstance(name, str) and selector.group is not None, f"{selector}: name group and resource"
        resources.add(name + (f".{selector.group}" if selector.group else ""))
    return sorted(resources)


def _can(cluster: Cluster, verb: str, resource: str, namespace: str | None, subresource: str | None = None) -> bool:
    args = ["auth", "can-i", verb, resource, f"--as={SA}"]
    args += [f"--subresource={subresource}"] if subresource else []
    args += [f"--namespace={namespace}"] if namespace else ["--all-namespaces"]
    return cluster.kubectl(*args, check=False).stdout.strip() == "yes"


def install_rbac(cluster: Cluster) -> None:
    cluster.kubectl("create", "namespace", SA_NAMESPACE, check=False)
    cluster.kubectl("apply", "-f", str(RBAC))


def exercise(cluster: Cluster, namespace: str) -> None:
    """Drive every path of the operator that calls the API: a Secret and a missing PVC looked up, children and a
    PodMonitor created, a rollout to a second revision (the old Deployment scaled through /scale and deleted,
    its ConfigMap pruned), the monitor pruned, and deletion. The monitoring CRDs must be served already."""
    cluster.kubectl("create", "secret", "generic", "hf", "-n", namespace, "--from-literal=HF_TOKEN=x")
    model = {"name": "tiny", "uri": "hf://HuggingFaceTB/SmolLM2-135M-Instruct", "secretRef": {"name": "hf"}}
    apply(cluster, namespace, llmd("rbac-probe", replicas=2, model=model),
          llmd("rbac-no-pvc", model={"name": "tiny", "pvc": {"claimName": "missing", "path": "tiny"}}))
    wait_condition(cluster, namespace, "rbac-no-pvc", "Degraded", "True", "PVCNotFound")
    first = wait_condition(cluster, namespace, "rbac-probe", "Ready", "True")["status"]["revision"]
    wait_for(lambda: get(cluster, namespace, "podmonitor", "rbac-probe"), what="the PodMonitor")

    apply(cluster, namespace, llmd("rbac-probe", replicas=2, model=model,
                                   runtime={"backend": "vllm", "parameters": {"max_model_len": "4096"}}))
    obj = wait_condition(cluster, namespace, "rbac-probe", "Progressing", "False", "RolloutComplete", timeout=90)
    second = obj["status"]["revision"]
    assert second != first
    wait_for(lambda: [d["metadata"]["labels"]["serving.llmops.dev/revision"]
                      for d in children(cluster, namespace, "deployment", "rbac-probe")] == [second]
             and [c["metadata"]["name"] for c in children(cluster, namespace, "configmap", "rbac-probe")]
             == [f"rbac-probe-{second}"], what="the old revision's Deployment and ConfigMap to go")
    wait_condition(cluster, namespace, "rbac-probe", "Ready", "True")

    cluster.kubectl("patch", "llmd", "rbac-probe", "-n", namespace, "--type=merge",
                    "-p", json.dumps({"spec": {"monitoring": {"enabled": False}}}))
    wait_for(lambda: get(cluster, namespace, "podmonitor", "rbac-probe") is None, what="the PodMonitor pruned")

    cluster.kubectl("delete", "llmd", "--all", "-n", namespace, "--wait=true", "--timeout=60s")
    wait_for(lambda: not any(children(cluster, namespace, k, "rbac-probe") for k in ("deployment", "pods")),
             timeout=90, what="garbage collection")


@pytest.mark.cluster
def test_every_request_the_operator_made_is_allowed_by_the_shipped_rbac(
    cluster: Cluster, operator: Operator, namespace: str
) -> None:
    ensure_monitoring_crds(cluster, operator)
    exercise(cluster, namespace)
    install_rbac(cluster)
    calls = {(m, p) for m, p in operator.controller.kube.calls if f"/namespaces/{namespace}/" in p or
             "/namespaces/" not in p}
    # The paths exercised above really reached the API (and so are checked below).
    for method, tail in [("GET", "/secrets/hf"), ("GET", "/persistentvolumeclaims/missing"),
                         ("PATCH", "/scale"), ("DELETE", "/deployments/rbac-probe-"), ("DELETE", "/configmaps/"),
                         ("PATCH", "/podmonitors/rbac-probe"), ("DELETE", "/podmonitors/rbac-probe"),
                         ("GET", "/pods"), ("POST", "/events"), ("PATCH", "/llmdeployments/rbac-probe/status"),
                         # the child caches' lists and watches (cluster-wide, server-side label selector)
                         ("GET", "/apis/apps/v1/deployments"), ("WATCH", "/apis/apps/v1/deployments"),
                         ("WATCH", "/api/v1/configmaps"), ("WATCH", "/podmonitors")]:
        assert any(m == method and tail in p for m, p in calls), f"no {method} …{tail} recorded"
    denied = []
    for method, path in sorted(calls):
        m = _PATH.match(path.split("?")[0])
        assert m, path
        group, resource, sub = m["group"], m["resource"], m["sub"]
        verb = ("get" if m["name"] else "list") if method == "GET" else _VERBS[method]
        target = resource + (f".{group}" if group else "")
        if not _can(cluster, verb, target, m["ns"], sub):
            denied.append(f"{verb} {target} ({method} {path})")
    watched = kopf_watched_resources()
    # Children are listed and watched by the operator's own caches (recorded in the calls above), not by kopf.
    assert {"llmdeployments.serving.llmops.dev", "nodes"} <= set(watched), watched
    for resource in watched:
        for verb in ("list", "watch"):
            if not _can(cluster, verb, resource, None):
                denied.append(f"{verb} {resource} (kopf watch)")
    assert not denied, "docs/rbac.yaml lacks:\n" + "\n".join(denied)


VERBS = ("get", "list", "watch", "create", "update", "patch", "delete", "deletecollection")
GROUPS = ["system:serviceaccounts", f"system:serviceaccounts:{SA_NAMESPACE}", "system:authenticated"]  # a token's
# Resources the registry does not name, and subresources of kinds it does: escalations if anything granted them.
NOT_REGISTERED: list[tuple[str, str, str | None]] = [
    ("", "pods", "exec"), ("", "pods", "attach"), ("", "pods", "portforward"), ("", "pods", "log"),
    ("", "pods", "eviction"), ("", "pods", "ephemeralcontainers"), ("", "serviceaccounts", "token"),
    ("", "services", "proxy"), ("", "nodes", "proxy"), ("", "nodes", "status"), ("apps", "deployments", "status"),
    ("serving.llmops.dev", "llmdeployments", "scale"), ("", "persistentvolumes", None), ("apps", "replicasets", None),
    ("batch", "jobs", None), ("rbac.authorization.k8s.io", "roles", None),
    ("rbac.authorization.k8s.io", "clusterrolebindings", None),
    ("admissionregistration.k8s.io", "validatingwebhookconfigurations", None),
    ("certificates.k8s.io", "certificatesigningrequests", None),
]


def subject_access_review(api: Any, verb: str, group: str, resource: str, namespace: str | None,
                          subresource: str | None = None) -> bool:
    """The real authorizer's answer for the operator's ServiceAccount (namespace None: cluster-wide, or all
    namespaces). One request each, so hundreds of checks take seconds where `kubectl auth can-i` takes minutes."""
    from kubernetes import client

    attributes = client.V1ResourceAttributes(verb=verb, group=group, resource=resource, subresource=subresource,
                                             namespace=namespace)
    body = client.V1SubjectAccessReview(spec=client.V1SubjectAccessReviewSpec(
        user=SA, groups=GROUPS, resource_attributes=attributes))
    status = client.AuthorizationV1Api(api).create_subject_access_review(body).status
    assert status is not None, "a SubjectAccessReview without status"
    return bool(status.allowed)


@pytest.mark.cluster
def test_the_shipped_rbac_is_least_privilege(cluster: Cluster) -> None:
    """For every kind of the registry (HTTPRoute, HPA, the leader Lease and pods included), each subresource it
    registers and every verb: the authorizer allows exactly the registered verbs, where the registry says (its own
    namespace for the Lease, else any namespace and cluster-wide). Everything it does not register is denied."""
    install_rbac(cluster)
    api = cluster.api_client()
    elsewhere = "rbac-elsewhere"  # a SubjectAccessReview needs no namespace object
    wait_for(lambda: subject_access_review(api, "get", "", "secrets", elsewhere), timeout=30,
             what="the RBAC authorizer to see docs/rbac.yaml")
    wrong, checked = [], set()
    for k in registry.KINDS:
        for sub, verbs in ((None, k.verbs), *k.subresources):
            granted = set(verbs)
            if k.own_namespace:
                where: dict[str | None, set[str]] = {SA_NAMESPACE: granted, elsewhere: set(), None: set()}
            elif k.namespaced:
                where = {elsewhere: granted, SA_NAMESPACE: granted, None: granted}
            else:
                where = {None: granted}
            for namespace, allowed in where.items():
                for verb in VERBS:
                    expected = verb in allowed
                    if subject_access_review(api, verb, k.group, k.plural, namespace, sub) != expected:
                        wrong.append(f"{verb} {k.plural}{'/' + sub if sub else ''}.{k.group or 'core'} in "
                                     f"{namespace or 'cluster'}: registry says {'allow' if expected else 'deny'}")
            checked.add(k.plural)
    for group, resource, sub in NOT_REGISTERED:
        for namespace in (elsewhere, None):
            for verb in VERBS:
                if subject_access_review(api, verb, group, resource, namespace, sub):
                    wrong.append(f"{verb} {resource}{'/' + sub if sub else ''}.{group or 'core'} in "
                                 f"{namespace or 'cluster'}: allowed, not in the registry")
    assert {"httproutes", "horizontalpodautoscalers", "leases", "pods", "llmdeployments", "secrets"} <= checked
    assert not wrong, "the authorizer and the kind registry disagree:\n" + "\n".join(wrong)


def _wildcards(rules: list[dict[str, Any]], where: str) -> list[str]:
    fields = ("apiGroups", "resources", "verbs", "resourceNames", "nonResourceURLs")
    return [f"{where}: {field} {rule[field]}" for rule in rules for field in fields
            if any("*" in value for value in rule.get(field) or [])]


def test_no_rbac_rule_uses_a_wildcard(tmp_path: Path) -> None:
    """No verb, resource or API group `*` (nor `pods/*`) in any rule the operator ships: docs/rbac.yaml, the chart's
    ClusterRoles and Roles rendered by helm under every value set the chart is tested with, the registry's rules."""
    sources: dict[str, list[dict[str, Any]]] = {}
    for doc in yaml.safe_load_all(RBAC.read_text()):
        if doc["kind"] in ("ClusterRole", "Role"):
            sources[f"docs/rbac.yaml {doc['kind']} {doc['metadata']['name']}"] = doc["rules"]
    for name, values in VALUE_SETS.items():
        for doc in render(values, tmp_path):
            if doc["kind"] in ("ClusterRole", "Role"):
                where = f"chart ({name}) {doc['kind']} {doc['metadata'].get('namespace', '')}/{doc['metadata']['name']}"
                sources[where] = doc["rules"]
    sources["registry (cluster_role_rules)"] = registry.cluster_role_rules(registry.KINDS)
    assert sum(len(rules) for rules in sources.values()) > 50 and any("chart" in s for s in sources), sources
    found = [line for where, rules in sources.items() for line in _wildcards(rules, where)]
    assert not found, "wildcards in RBAC rules:\n" + "\n".join(found)
    assert _wildcards([{"apiGroups": [""], "resources": ["pods/*"], "verbs": ["get"]}], "probe")  # it can fail


def service_account_kubeconfig(cluster: Cluster, path: Path) -> Path:
    """A kubeconfig for the same server and CA that authenticates as the operator's ServiceAccount."""
    token = cluster.kubectl("create", "token", SA_NAME, "-n", SA_NAMESPACE, "--duration=1h").stdout.strip()
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    server = admin["clusters"][0]["cluster"]
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "local", "cluster": server}],
        "users": [{"name": SA_NAME, "user": {"token": token}}],
        "contexts": [{"name": SA_NAME, "context": {"cluster": "local", "user": SA_NAME}}],
        "current-context": SA_NAME,
    }))
    return path


@pytest.mark.cluster
def test_the_operator_runs_with_its_service_account_token(
    cluster: Cluster, operator_process: OperatorProcess, namespace: str, tmp_path: Path
) -> None:
    install_rbac(cluster)
    ensure_monitoring_crds(cluster)
    kubeconfig = service_account_kubeconfig(cluster, tmp_path / "sa.kubeconfig")
    whoami = cluster.kubectl("auth", "whoami", f"--kubeconfig={kubeconfig}", "-o", "json").stdout
    assert json.loads(whoami)["status"]["userInfo"]["username"] == SA  # not the admin's client certificate

    operator_process.start(kubeconfig=kubeconfig)  # all namespaces, as the ClusterRole is meant for
    try:
        exercise(cluster, namespace)
    finally:
        # A denial usually stalls the exercise too; report the denial, the cause, rather than a timeout.
        operator_process.stop()
        denied = denials(operator_process.log)
        assert not denied, "the operator was denied with docs/rbac.yaml:\n" + "\n".join(denied[:20])
