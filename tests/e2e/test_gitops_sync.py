"""The GitOps example (examples/gitops/) applied to the real local cluster in the order Argo CD would sync it.

No Argo CD runs here: this test emulates its sync, and says where. What it does as Argo CD does:

- renders the chart Application's source with `helm template` and the Application's own `valuesObject`;
- orders each Application's resources as gitops-engine does (sync wave, then its kind order, then name;
  gitops-engine/pkg/sync/sync_tasks.go) and the Applications by their waves in the root Application;
- applies with a client-side `kubectl apply`, Argo CD's default, into the destination namespace;
- moves to the next wave only once the previous one is healthy, judging an LLMDeployment by our health.lua in Argo
  CD's Lua VM (gitops/argocd/harness), a CRD by Established and a Deployment by its available replicas;
- on a second sync, `RespectIgnoreDifferences=true`: the live value of each ignored field replaces Git's before the
  apply.

What it does not do: Argo CD's diffing, dry runs (SkipDryRunOnMissingResource has nothing to skip once the CRD
exists), pruning and self-heal. The release name and the two destination namespaces are the test's own, so that
nothing collides with the rest of the session. kwok runs no container, so once the chart's Deployment is healthy the
operator runs beside the cluster with the pod's arguments and its ServiceAccount's token (as
tests/e2e/test_chart_install.py does).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from llm_operator.dev import argocd

from e2e.pytest_plugin import Cluster, OperatorProcess, wait_for
from tests.e2e.test_chart_install import pod_args, service_account_kubeconfig
from tests.e2e.test_operator import condition, get
from tests.unit.test_chart import CHART, KUBE_VERSION, helm, values_file

pytestmark = pytest.mark.cluster

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "gitops"
WAVE = "argocd.argoproj.io/sync-wave"
# gitops-engine's kind order within a wave (pkg/sync/sync_tasks.go, after Helm's kind sorter); other kinds go last.
KIND_ORDER = ["Namespace", "NetworkPolicy", "ResourceQuota", "LimitRange", "PodSecurityPolicy", "PodDisruptionBudget",
              "ServiceAccount", "Secret", "SecretList", "ConfigMap", "StorageClass", "PersistentVolume",
              "PersistentVolumeClaim", "CustomResourceDefinition", "ClusterRole", "ClusterRoleList",
              "ClusterRoleBinding", "ClusterRoleBindingList", "Role", "RoleList", "RoleBinding", "RoleBindingList",
              "Service", "DaemonSet", "Pod", "ReplicationController", "ReplicaSet", "Deployment",
              "HorizontalPodAutoscaler", "StatefulSet", "Job", "CronJob", "IngressClass", "Ingress", "APIService"]
CLUSTER_SCOPED = {"Namespace", "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding", "APIService",
                  "StorageClass", "PersistentVolume", "IngressClass"}


def docs(path: Path) -> list[dict[str, Any]]:
    files = sorted(path.glob("*.yaml")) if path.is_dir() else [path]
    return [d for f in files for d in yaml.safe_load_all(f.read_text()) if d]


def wave(obj: dict[str, Any]) -> int:
    return int(((obj.get("metadata") or {}).get("annotations") or {}).get(WAVE, "0"))


def sync_order(objs: list[dict[str, Any]]) -> list[tuple[int, list[dict[str, Any]]]]:
    def key(obj: dict[str, Any]) -> tuple[int, int, str]:
        kind = obj["kind"]
        order = KIND_ORDER.index(kind) - len(KIND_ORDER) if kind in KIND_ORDER else 0
        return wave(obj), order, obj["metadata"]["name"]

    waves: dict[int, list[dict[str, Any]]] = {}
    for obj in sorted(objs, key=key):
        waves.setdefault(wave(obj), []).append(obj)
    return sorted(waves.items())


def pointer_get(obj: Any, pointer: str) -> Any:
    for part in pointer.strip("/").split("/"):
        obj = obj[part]
    return obj


def pointer_set(obj: Any, pointer: str, value: Any) -> None:
    *parents, last = pointer.strip("/").split("/")
    for part in parents:
        obj = obj[part]
    obj[last] = value


class Sync:
    """One Application's sync, emulated."""

    def __init__(self, cluster: Cluster, harness: argocd.Harness, namespace: str) -> None:
        self.cluster, self.harness, self.namespace = cluster, harness, namespace
        self.applied: list[tuple[int, str, str]] = []

    def live(self, obj: dict[str, Any]) -> dict[str, Any] | None:
        args = ["get", obj["kind"].lower() if obj["kind"] != "LLMDeployment" else "llmd", obj["metadata"]["name"],
                "-o", "json"]
        if obj["kind"] == "HTTPRoute":
            args[1] = "httproutes.gateway.networking.k8s.io"
        if obj["kind"] not in CLUSTER_SCOPED:
            args += ["-n", self.namespace]
        proc = self.cluster.kubectl(*args, check=False)
        return json.loads(proc.stdout) if proc.returncode == 0 else None

    def healthy(self, obj: dict[str, Any]) -> bool:
        live = self.live(obj)
        if live is None:
            return False
        status = live.get("status") or {}
        if obj["kind"] == "CustomResourceDefinition":
            return any(c["type"] == "Established" and c["status"] == "True" for c in status.get("conditions", []))
        if obj["kind"] == "Deployment":
            want = live["spec"].get("replicas", 1)
            return (status.get("observedGeneration", 0) >= live["metadata"]["generation"]
                    and status.get("updatedReplicas", 0) == want and status.get("availableReplicas", 0) == want)
        if obj["kind"] == "LLMDeployment":
            return self.harness.health(live)["status"] == "Healthy"
        return True

    def run(self, objs: list[dict[str, Any]], *, ignore: dict[tuple[str, str], list[str]] | None = None,
            timeout: float = 120) -> None:
        for number, group in sync_order(objs):
            for obj in group:
                desired = json.loads(json.dumps(obj))
                if obj["kind"] not in CLUSTER_SCOPED:
                    desired["metadata"]["namespace"] = self.namespace
                live = self.live(obj)
                for pointer in (ignore or {}).get((obj["kind"], obj["metadata"]["name"]), []):
                    if live is not None:  # RespectIgnoreDifferences: only for objects that exist
                        pointer_set(desired, pointer, pointer_get(live, pointer))
                self.cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(desired))
                self.applied.append((number, obj["kind"], obj["metadata"]["name"]))
            self.wait_healthy(group, f"wave {number}", timeout)

    def wait_healthy(self, group: list[dict[str, Any]], what: str, timeout: float) -> None:
        names = [o["metadata"]["name"] for o in group]
        wait_for(lambda: all(self.healthy(o) for o in group), timeout=timeout, interval=0.5,
                 what=f"{what} healthy: {names}")


@pytest.fixture
def models_namespace(cluster: Cluster) -> Iterator[str]:
    name = f"gitops-models-{uuid.uuid4().hex[:5]}"
    cluster.kubectl("create", "namespace", name)
    wait_for(lambda: cluster.kubectl("get", "serviceaccount", "default", "-n", name, check=False).returncode == 0,
             timeout=30, what="default ServiceAccount")
    yield name
    cluster.kubectl("delete", "namespace", name, "--ignore-not-found", "--timeout=90s", check=False)


def test_the_example_syncs_in_wave_order_and_its_models_reconcile(
    cluster: Cluster, operator_process: OperatorProcess, namespace: str, models_namespace: str, tmp_path: Path
) -> None:
    harness = argocd.Harness()
    apps = {a["metadata"]["name"]: a for a in docs(EXAMPLE / "apps")}
    root = docs(EXAMPLE / "root-app.yaml")[0]
    assert root["spec"]["source"]["path"] == "examples/gitops/apps"
    order = [a["metadata"]["name"] for _, group in sync_order(list(apps.values())) for a in group]
    assert order == ["triton-llm-operator", "llm-models"], "the root Application syncs the operator first"

    # --- wave 0 of the root: the chart, rendered as Argo CD renders it (helm template with the valuesObject).
    chart_app = apps["triton-llm-operator"]
    source = chart_app["spec"]["source"]
    assert source["path"] == "charts/triton-llm-operator" and (EXAMPLE.parents[1] / source["path"]) == CHART
    release = "gitops-e2e"  # the test's, not the example's releaseName: cluster-scoped names must not collide
    rendered = helm("template", release, str(CHART), "--namespace", namespace, "--kube-version", KUBE_VERSION,
                    "--include-crds", "-f", str(values_file(source["helm"]["valuesObject"], tmp_path)),
                    home=tmp_path).stdout
    chart_objs = [d for d in yaml.safe_load_all(rendered) if d]
    cluster_scoped = [o for o in chart_objs if o["kind"] in CLUSTER_SCOPED - {"CustomResourceDefinition"}]
    crd_name = "llmdeployments.serving.llmops.dev"
    crd_before = cluster.kubectl_json("get", "crd", crd_name)["metadata"]
    chart_sync = Sync(cluster, harness, namespace)
    try:
        chart_sync.run(chart_objs)
        waves = [(w, k) for w, k, _ in chart_sync.applied]
        assert waves[0] == (-1, "CustomResourceDefinition"), "the CRD goes first, in its own wave"
        assert [k for w, k in waves if w == 0][-1] == "Deployment", "the operator last, after its RBAC"
        crd = cluster.kubectl_json("get", "crd", crd_name)
        assert crd["metadata"]["annotations"]["argocd.argoproj.io/sync-options"] == "Prune=false"
        assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"

        # The operator's pod is healthy (kwok): run the operator with its arguments and ServiceAccount.
        fullname = f"{release}-triton-llm-operator"
        args, _, _ = pod_args(cluster.kubectl_json("get", "deployment", fullname, "-n", namespace))
        kubeconfig = service_account_kubeconfig(cluster, namespace, fullname, tmp_path / "sa.kubeconfig")
        operator_process.start(*args, kubeconfig=kubeconfig)

        # --- wave 1 of the root: the models, each wave gated on health.lua's verdict.
        models_app = apps["llm-models"]
        assert models_app["spec"]["source"]["path"] == "examples/gitops/models"
        options = models_app["spec"]["syncPolicy"]["syncOptions"]
        assert {"SkipDryRunOnMissingResource=true", "RespectIgnoreDifferences=true"} <= set(options)
        models = docs(EXAMPLE / "models")
        models_sync = Sync(cluster, harness, models_namespace)
        models_sync.run(models, timeout=120)
        assert models_sync.applied == [(0, "HTTPRoute", "chat"), (1, "LLMDeployment", "chat"),
                                       (1, "LLMDeployment", "qwen-7b")]
        for name in ("chat", "qwen-7b"):
            obj = get(cluster, models_namespace, "llmd", name) or {}
            assert condition(obj, "Ready")["status"] == "True", obj.get("status")
        assert get(cluster, models_namespace, "horizontalpodautoscaler", "chat"), "chat is autoscaled"
        route = get(cluster, models_namespace, "httproute", "chat") or {}
        weights = {r["name"]: r.get("weight") for r in route["spec"]["rules"][0]["backendRefs"]}
        assert weights == {"chat-stable": 100, "chat-canary": 0}

        # --- a later sync after the HPA moved chat to 3 replicas (through the scale subresource, as the HPA writes).
        cluster.kubectl("scale", "llmd/chat", "-n", models_namespace, "--replicas=3")
        ignore: dict[tuple[str, str], list[str]] = {}
        for rule in models_app["spec"]["ignoreDifferences"]:
            ignore[(rule["kind"], rule["name"])] = rule.get("jsonPointers", [])
        assert ignore[("LLMDeployment", "chat")] == ["/spec/replicas"]
        models_sync.run(models, ignore=ignore)
        chat = get(cluster, models_namespace, "llmd", "chat") or {}
        assert chat["spec"]["replicas"] == 3, "RespectIgnoreDifferences: the sync keeps the HPA's replicas"
        assert (get(cluster, models_namespace, "llmd", "qwen-7b") or {})["spec"]["replicas"] == 2
        # Without the option the same sync writes Git's value back: why the example sets it.
        models_sync.run([m for m in models if m["metadata"]["name"] == "chat" and m["kind"] == "LLMDeployment"])
        assert (get(cluster, models_namespace, "llmd", "chat") or {})["spec"]["replicas"] == 2
    finally:
        for obj in cluster_scoped:
            cluster.kubectl("delete", obj["kind"].lower(), obj["metadata"]["name"], "--ignore-not-found", check=False)
        # The session's CRD (same spec as the chart's) gets back the labels and annotations it had.
        after = cluster.kubectl_json("get", "crd", crd_name)["metadata"]
        restore = {field: {k: (crd_before.get(field) or {}).get(k) for k in after.get(field) or {}
                           if (crd_before.get(field) or {}).get(k) != after[field][k]}
                   for field in ("labels", "annotations")}
        cluster.kubectl("patch", "crd", crd_name, "--type=merge", "-p", json.dumps({"metadata": restore}))
