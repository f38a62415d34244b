"""The operator, running for real against the real local cluster: children, status, drift, GC, bad input."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from llm_operator.builders import REVISION_LABEL

from e2e.pytest_plugin import Cluster, Operator, ensure_monitoring_crds, first_mismatch, wait_for

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
MANAGED = "app.kubernetes.io/managed-by=triton-llm-operator"


def llmd(name: str, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": {"name": "tiny", "uri": "hf://HuggingFaceTB/SmolLM2-135M-Instruct"},
        "runtime": {"backend": "vllm"},
        "resources": {"gpu": {"count": 1, "product": "NVIDIA-H100-80GB-HBM3"}},
        "replicas": 1,
    }
    body.update(spec)
    return {"apiVersion": "serving.llmops.dev/v1alpha1", "kind": "LLMDeployment", "metadata": {"name": name},
            "spec": body}


def apply(cluster: Cluster, namespace: str, *docs: dict[str, Any], check: bool = True) -> Any:
    for doc in docs:
        doc.get("metadata", {}).pop("namespace", None)  # examples say `default`; tests use their own
    return cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump_all(docs), check=check)


def get(cluster: Cluster, namespace: str, kind: str, name: str) -> dict[str, Any] | None:
    proc = cluster.kubectl("get", kind, name, "-n", namespace, "-o", "json", check=False)
    return json.loads(proc.stdout) if proc.returncode == 0 else None


def children(cluster: Cluster, namespace: str, kind: str, name: str) -> list[dict[str, Any]]:
    selector = f"{MANAGED},app.kubernetes.io/instance={name}"
    return list(cluster.kubectl_json("get", kind, "-n", namespace, "-l", selector)["items"])


def condition(obj: dict[str, Any] | None, type_: str) -> dict[str, Any]:
    for cond in ((obj or {}).get("status") or {}).get("conditions") or []:
        if cond["type"] == type_:
            return dict(cond)
    return {}


def wait_condition(cluster: Cluster, namespace: str, name: str, type_: str, status: str, reason: str | None = None,
                   timeout: float = 60) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        obj = get(cluster, namespace, "llmd", name)
        cond = condition(obj, type_)
        ok = cond.get("status") == status and (reason is None or cond.get("reason") == reason)
        current = obj is not None and cond.get("observedGeneration") == obj["metadata"]["generation"]
        return obj if ok and current else None

    result: dict[str, Any] = wait_for(check, timeout=timeout, what=f"{name} {type_}={status} ({reason})")
    return result


def events(cluster: Cluster, namespace: str, name: str) -> list[dict[str, Any]]:
    items = cluster.kubectl_json("get", "events", "-n", namespace)["items"]
    return [e for e in items if e["involvedObject"]["name"] == name and e["involvedObject"]["kind"] == "LLMDeployment"]


# ------------------------------------------------------------------------------------------------ happy path


def test_creates_children_with_owner_refs_and_reports_ready(cluster: Cluster, operator: Operator,
                                                            namespace: str) -> None:
    apply(cluster, namespace, llmd("svc-a", replicas=2))
    obj = wait_condition(cluster, namespace, "svc-a", "Ready", "True", "AllReplicasReady")
    uid = obj["metadata"]["uid"]
    status = obj["status"]
    assert status["observedGeneration"] == obj["metadata"]["generation"]
    assert status["replicas"] == 2 and status["readyReplicas"] == 2 and status["updatedReplicas"] == 2
    assert status["readyText"] == "2/2" and status["gpu"] == "1x NVIDIA-H100-80GB-HBM3"
    assert status["endpoints"]["http"] == f"http://svc-a.{namespace}.svc:8000"
    assert condition(obj, "Degraded")["status"] == "False"
    assert condition(obj, "Progressing")["status"] == "False"

    for kind in ("configmap", "deployment", "service", "poddisruptionbudget"):
        items = children(cluster, namespace, kind, "svc-a")
        assert len(items) == 1, kind
        refs = items[0]["metadata"]["ownerReferences"]
        assert refs == [{"apiVersion": "serving.llmops.dev/v1alpha1", "kind": "LLMDeployment", "name": "svc-a",
                         "uid": uid, "controller": True, "blockOwnerDeletion": True}], kind
    # The selector in status finds exactly the running model pods, on nodes with the requested product.
    pods = cluster.kubectl_json("get", "pods", "-n", namespace, "-l", status["selector"])["items"]
    assert len(pods) == 2 and all(p["status"]["phase"] == "Running" for p in pods)
    for pod in pods:
        node = cluster.kubectl_json("get", "node", pod["spec"]["nodeName"])
        assert node["metadata"]["labels"]["nvidia.com/gpu.product"] == "NVIDIA-H100-80GB-HBM3"
    # Printer columns a person reads.
    table = cluster.kubectl("get", "llmd", "svc-a", "-n", namespace).stdout
    assert "tiny" in table and "vllm" in table and "2/2" in table and "AllReplicasReady" in table
    assert any(e["reason"] == "Ready" for e in events(cluster, namespace, "svc-a"))


def test_steady_state_resync_makes_zero_writes(cluster: Cluster, operator: Operator, namespace: str) -> None:
    apply(cluster, namespace, llmd("steady", replicas=1))
    wait_condition(cluster, namespace, "steady", "Ready", "True")
    writes, gets, cached = operator.resync(namespace, ["steady"])
    assert cached > 0, "the resync did not read this namespace"
    # Every child read comes from the caches: no request at all in 3 steady-state rounds.
    assert (writes, gets) == (0, 0)


def test_operator_never_writes_spec_and_scale_subresource_drives_replicas(
    cluster: Cluster, operator: Operator, namespace: str
) -> None:
    apply(cluster, namespace, llmd("scaled", replicas=1))
    obj = wait_condition(cluster, namespace, "scaled", "Ready", "True")
    deployment = children(cluster, namespace, "deployment", "scaled")[0]["metadata"]["name"]
    cluster.kubectl("scale", "llmd/scaled", "-n", namespace, "--replicas=3")
    wait_for(lambda: (get(cluster, namespace, "deployment", deployment) or {}).get("spec", {}).get("replicas") == 3,
             what="Deployment scaled to 3")
    obj = wait_condition(cluster, namespace, "scaled", "Ready", "True", "AllReplicasReady")
    assert obj["status"]["replicas"] == 3
    assert [d["metadata"]["name"] for d in children(cluster, namespace, "deployment", "scaled")] == [deployment]
    scale = json.loads(cluster.kubectl("get", "--raw",
                                       f"/apis/serving.llmops.dev/v1alpha1/namespaces/{namespace}/llmdeployments/scaled/scale").stdout)
    assert scale["status"]["replicas"] == 3 and "app.kubernetes.io/instance=scaled" in scale["status"]["selector"]
    managed = cluster.kubectl("get", "llmd", "scaled", "-n", namespace, "-o", "json", "--show-managed-fields").stdout
    entries = [e for e in json.loads(managed)["metadata"]["managedFields"] if e["manager"] == "triton-llm-operator"]
    assert entries, "the operator's status writes must be recorded under its field manager"
    for entry in entries:
        assert entry.get("subresource") == "status", entry
        assert "f:spec" not in entry["fieldsV1"]


def test_hpa_can_target_the_llmdeployment(cluster: Cluster, operator: Operator, namespace: str) -> None:
    apply(cluster, namespace, llmd("hpa-target", replicas=1))
    wait_condition(cluster, namespace, "hpa-target", "Ready", "True")
    hpa = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "hpa-target"},
        "spec": {
            "scaleTargetRef": {"apiVersion": "serving.llmops.dev/v1alpha1", "kind": "LLMDeployment",
                               "name": "hpa-target"},
            "minReplicas": 2,
            "maxReplicas": 4,
            "metrics": [{"type": "Resource",
                         "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}}}],
        },
    }
    apply(cluster, namespace, hpa)

    # The real HPA controller reads the scale subresource; with no metrics API it cannot compute usage,
    # but it still enforces minReplicas through /scale, which the operator then follows.
    def able_to_scale() -> bool:
        obj = get(cluster, namespace, "hpa", "hpa-target") or {}
        conds = {c["type"]: c for c in obj.get("status", {}).get("conditions", [])}
        return conds.get("AbleToScale", {}).get("status") == "True"

    wait_for(able_to_scale, timeout=60, what="HPA AbleToScale")
    obj = wait_for(lambda: (o := get(cluster, namespace, "llmd", "hpa-target")) and o["spec"]["replicas"] == 2 and o,
                   timeout=60, what="HPA to raise spec.replicas to minReplicas")
    wait_condition(cluster, namespace, "hpa-target", "Ready", "True")
    assert obj["spec"]["replicas"] == 2


# ------------------------------------------------------------------------------------------------ changes


def test_children_edited_or_deleted_by_hand_are_restored(cluster: Cluster, operator: Operator,
                                                         namespace: str) -> None:
    apply(cluster, namespace, llmd("drift", replicas=1))
    wait_condition(cluster, namespace, "drift", "Ready", "True")
    pdb = children(cluster, namespace, "poddisruptionbudget", "drift")[0]
    cluster.kubectl("patch", "pdb", pdb["metadata"]["name"], "-n", namespace, "--type=merge",
                    "-p", json.dumps({"spec": {"maxUnavailable": 7}}))
    wait_for(lambda: (get(cluster, namespace, "pdb", pdb["metadata"]["name"]) or {}).get("spec", {})
             .get("maxUnavailable") == pdb["spec"]["maxUnavailable"], what="PDB restored")
    cm = children(cluster, namespace, "configmap", "drift")[0]
    svc = children(cluster, namespace, "service", "drift")[0]["metadata"]["name"]
    cluster.kubectl("delete", "service", svc, "-n", namespace)
    wait_for(lambda: get(cluster, namespace, "service", svc), what="Service recreated")
    cluster.kubectl("delete", "configmap", cm["metadata"]["name"], "-n", namespace)
    wait_for(lambda: get(cluster, namespace, "configmap", cm["metadata"]["name"]), what="ConfigMap recreated")
    dep = children(cluster, namespace, "deployment", "drift")[0]
    cluster.kubectl("set", "image", f"deployment/{dep['metadata']['name']}", "-n", namespace,
                    f"{dep['spec']['template']['spec']['containers'][0]['name']}=busybox:evil")
    wait_for(lambda: children(cluster, namespace, "deployment", "drift")[0]["spec"]["template"]["spec"]
             ["containers"][0]["image"] == dep["spec"]["template"]["spec"]["containers"][0]["image"],
             what="Deployment image restored")

    def rolled_back() -> bool:
        d = children(cluster, namespace, "deployment", "drift")[0]
        st = d.get("status") or {}
        return (st.get("observedGeneration") == d["metadata"]["generation"] and st.get("replicas") == 1
                and st.get("updatedReplicas") == 1 and st.get("readyReplicas") == 1)

    # The hand-set image started a rollout of the Deployment's pods, which the restore reverts; once the
    # Deployment controller has finished with it, nothing changes any more.
    wait_for(rolled_back, timeout=60, what="the Deployment back to one ready pod of the restored template")
    wait_condition(cluster, namespace, "drift", "Ready", "True")
    # Restored means settled: no further writes once the objects match again.
    operator.settle()
    writes = operator.controller.kube.writes_by_namespace[namespace]
    operator.controller.enqueue((namespace, "drift"))
    time.sleep(0.3)
    operator.settle()
    assert operator.controller.kube.writes_by_namespace[namespace] == writes


def test_deleting_the_llmdeployment_removes_everything(cluster: Cluster, operator: Operator,
                                                       namespace: str) -> None:
    apply(cluster, namespace, llmd("gone", replicas=1))
    wait_condition(cluster, namespace, "gone", "Ready", "True")
    cluster.kubectl("delete", "llmd", "gone", "-n", namespace, "--wait=true", "--timeout=30s")
    wait_for(lambda: all(not children(cluster, namespace, k, "gone")
                         for k in ("configmap", "deployment", "service", "poddisruptionbudget", "pods")),
             timeout=90, what="garbage collection of every child")


# ------------------------------------------------------------------------------------- cannot be served


def test_missing_secret_degrades_without_half_built_children_and_recovers(
    cluster: Cluster, operator: Operator, namespace: str
) -> None:
    apply(cluster, namespace, llmd("needs-secret", model={"name": "tiny", "uri": "s3://bucket/tiny",
                                                          "secretRef": {"name": "s3-creds"}}))
    obj = wait_condition(cluster, namespace, "needs-secret", "Ready", "False", "SecretNotFound")
    assert "s3-creds" in condition(obj, "Ready")["message"]
    degraded = condition(obj, "Degraded")
    assert degraded["status"] == "True" and degraded["reason"] == "SecretNotFound"
    for kind in ("configmap", "deployment", "service", "poddisruptionbudget"):
        assert not children(cluster, namespace, kind, "needs-secret"), kind
    assert any(e["reason"] == "SecretNotFound" and e["type"] == "Warning"
               for e in events(cluster, namespace, "needs-secret"))
    cluster.kubectl("create", "secret", "generic", "s3-creds", "-n", namespace,
                    "--from-literal=AWS_ACCESS_KEY_ID=x", "--from-literal=AWS_SECRET_ACCESS_KEY=y")
    wait_condition(cluster, namespace, "needs-secret", "Ready", "True", timeout=60)
    assert condition(get(cluster, namespace, "llmd", "needs-secret"), "Degraded")["status"] == "False"
    assert any(e["reason"] == "Recovered" for e in events(cluster, namespace, "needs-secret"))


@pytest.mark.parametrize(
    ("spec", "reason", "words"),
    [
        ({"resources": {"gpu": {"count": 1, "product": "NVIDIA-B200"}}}, "GPUProductUnavailable",
         ["NVIDIA-B200", "NVIDIA-H100-80GB-HBM3"]),
        ({"model": {"name": "tiny", "pvc": {"claimName": "weights", "path": "tiny"}}}, "PVCNotFound", ["weights"]),
        ({"resources": {"mig": {"profile": "2g.20gb", "count": 1}}}, "MIGProfileUnavailable",
         ["nvidia.com/mig-2g.20gb"]),
        ({"resources": {"gpu": {"count": 16, "product": "NVIDIA-H100-80GB-HBM3"}}, "runtime":
          {"backend": "vllm", "tensorParallelSize": 16}}, "Unschedulable", ["Insufficient nvidia.com/gpu"]),
    ],
    ids=["gpu-product", "pvc", "mig-profile", "too-many-gpus"],
)
def test_valid_but_unservable_specs_report_a_specific_reason(
    cluster: Cluster, operator: Operator, namespace: str, spec: dict[str, Any], reason: str, words: list[str]
) -> None:
    apply(cluster, namespace, llmd("unservable", **spec))
    obj = wait_condition(cluster, namespace, "unservable", "Degraded", "True", reason)
    assert condition(obj, "Ready")["status"] == "False"
    for word in words:
        assert word in condition(obj, "Degraded")["message"]
    if reason != "Unschedulable":  # nothing half-built when the revision cannot start at all
        assert not children(cluster, namespace, "deployment", "unservable")


def test_invalid_specs_are_rejected_by_the_api_server(cluster: Cluster, crd: str, namespace: str) -> None:
    """Every case is rejected, each by an error item that names the case's field and carries its message (for
    CEL cases our rule's message: tests/unit/test_api.py checks that every CelRule has such a case)."""
    from tests.unit.invalid_specs import INVALID_SPECS, build, invalid_items

    rejected = []
    failures = []
    for i, case in enumerate(INVALID_SPECS):
        proc = apply(cluster, namespace, build(case, name=f"bad-{i}"), check=False)
        items = invalid_items(proc.stderr)
        if proc.returncode != 0 and any(f == case.field and case.expected in f"{f}: {rest}" for f, rest in items):
            rejected.append(case.id)
        else:
            failures.append(f"{case.id}: wanted {case.field or '<nil>'}: ...{case.expected}...; rc={proc.returncode} "
                            f"stderr={proc.stderr.strip()[:400]}")
    assert not failures, "\n".join(failures)
    assert len(rejected) == len(INVALID_SPECS)
    assert cluster.kubectl_json("get", "llmd", "-n", namespace)["items"] == []


# ------------------------------------------------------------------------------------------------ examples


def assert_render_matches_live(cluster: Cluster, namespace: str, name: str, tmp_path: Path) -> None:
    """`llmctl render` of the live LLMDeployment (its uid gives owner references) prints what the operator made:
    every rendered child is contained in the live one, and status.revision is the rendered revision."""
    live_llmd = cluster.kubectl_json("get", "llmd", name, "-n", namespace)
    source = tmp_path / f"{name}.yaml"
    source.write_text(yaml.safe_dump(live_llmd))
    proc = subprocess.run([str(Path(sys.executable).with_name("llmctl")), "render", "-f", str(source)],
                          capture_output=True, text=True, check=False, timeout=60)
    assert proc.returncode == 0, proc.stderr
    rendered = [d for d in yaml.safe_load_all(proc.stdout) if d]
    monitoring = {"enabled": True, "kind": "PodMonitor", **live_llmd["spec"].get("monitoring", {})}
    kinds = ["ConfigMap", "Deployment", "PodDisruptionBudget", "Service"] + [monitoring["kind"]] * monitoring["enabled"]
    if (live_llmd["spec"].get("autoscaling") or {"provider": "KEDA"}).get("provider", "HPA") == "HPA":
        kinds.append("HorizontalPodAutoscaler")
    assert sorted(d["kind"] for d in rendered) == sorted(kinds)
    revisions = {d["metadata"]["labels"][REVISION_LABEL] for d in rendered if d["kind"] == "Deployment"}
    assert revisions == {live_llmd["status"]["revision"]}
    for child in rendered:
        live = get(cluster, namespace, child["kind"].lower(), child["metadata"]["name"])
        assert live is not None, f"{child['kind']} {child['metadata']['name']} was rendered but does not exist"
        where = first_mismatch(child, live)
        assert where is None, f"{child['kind']} {child['metadata']['name']} differs from its rendering at {where}"


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_examples_apply_and_become_ready(cluster: Cluster, operator: Operator, namespace: str, path: Path,
                                         tmp_path: Path) -> None:
    # With both monitor kinds served every example gets its monitor, so the checks below cover that path too.
    ensure_monitoring_crds(cluster, operator)
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    llmds = [d for d in docs if d["kind"] == "LLMDeployment"]
    for doc in llmds:  # the examples' PVCs stay Pending (no storage here); the operator only needs them to exist
        pvc = (doc["spec"]["model"].get("pvc") or {}).get("claimName")
        if pvc and not any(d["kind"] == "PersistentVolumeClaim" for d in docs):
            docs.append({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": pvc},
                         "spec": {"accessModes": ["ReadOnlyMany"], "resources": {"requests": {"storage": "1Gi"}}}})
    apply(cluster, namespace, *docs)
    names = [doc["metadata"]["name"] for doc in llmds]
    for name in names:
        wait_condition(cluster, namespace, name, "Ready", "True", timeout=90)
    operator.settle()
    for name in names:
        assert_render_matches_live(cluster, namespace, name, tmp_path)
    writes, gets, cached = operator.resync(namespace, names, rounds=3)
    assert cached > 0, "the resync did not read this namespace"
    assert writes == 0, f"a steady-state resync of {path.name} wrote {writes} time(s)"
    # Only the Secrets and PVCs a spec names are read from the API (Secrets are never listed or cached: the
    # operator may not list them); children come from the caches.
    referenced = sum(bool(d["spec"]["model"].get("secretRef")) + bool(d["spec"]["model"].get("pvc"))
                     + str(d["spec"]["model"].get("uri", "")).startswith("pvc://") for d in llmds)
    assert gets <= 3 * referenced, f"{gets} API reads in 3 steady-state rounds of {path.name}"
    # Keep the fleet free for the next test: examples can take many GPUs.
    cluster.kubectl("delete", "llmd", "--all", "-n", namespace, "--wait=true", "--timeout=60s")


# ------------------------------------------------------------------------------------------------ monitors

PODMONITOR_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "podmonitors.monitoring.coreos.com"},
    "spec": {
        "group": "monitoring.coreos.com",
        "names": {"kind": "PodMonitor", "plural": "podmonitors", "singular": "podmonitor",
                  "listKind": "PodMonitorList"},
        "scope": "Namespaced",
        "versions": [{"name": "v1", "served": True, "storage": True,
                      "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}}],
    },
}


def test_pod_monitor_only_when_the_monitoring_crds_exist(cluster: Cluster, operator: Operator,
                                                        namespace: str) -> None:
    apply(cluster, namespace, llmd("monitored"))
    wait_condition(cluster, namespace, "monitored", "Ready", "True")
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(PODMONITOR_CRD))
    cluster.kubectl("wait", "--for=condition=Established", "crd/podmonitors.monitoring.coreos.com", "--timeout=30s")
    mon = wait_for(lambda: cluster.kubectl("get", "podmonitors", "-n", namespace, "-l",
                                           "app.kubernetes.io/instance=monitored", "-o", "json",
                                           check=False).returncode == 0
                   and json.loads(cluster.kubectl("get", "podmonitors", "-n", namespace, "-o", "json").stdout)["items"],
                   timeout=60, what="a PodMonitor for the LLMDeployment")
    assert mon[0]["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"
