"""Autoscaling against the real API server and the real HPA controller: ownership, explanations, KEDA's CRD."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from e2e.pytest_plugin import Cluster, Operator, wait_for
from tests.e2e.test_operator import apply, children, condition, get, llmd, wait_condition

pytestmark = pytest.mark.cluster

KEDA_VERSION = "v2.21.0"
AUTOSCALING = {"minReplicas": 3, "maxReplicas": 5, "metrics": {"queueDepth": 4, "tokensPerSecond": 1500}}


def _autoscaled(name: str, **autoscaling: Any) -> dict[str, Any]:
    doc = llmd(name, autoscaling={**AUTOSCALING, **autoscaling})
    del doc["spec"]["replicas"]  # as docs/autoscaling.md says: the HPA owns it, so Git leaves it out
    return doc


def test_the_operator_owns_the_hpa_and_the_hpa_owns_replicas(cluster: Cluster, operator: Operator,
                                                             namespace: str) -> None:
    apply(cluster, namespace, _autoscaled("scaled"))
    hpa = wait_for(lambda: get(cluster, namespace, "hpa", "scaled"), what="the HPA")
    assert hpa["spec"]["scaleTargetRef"]["kind"] == "LLMDeployment"
    assert hpa["metadata"]["ownerReferences"][0]["kind"] == "LLMDeployment"
    assert [m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"]] == [
        "llmops_queue_depth", "llmops_generation_tokens_per_second"]
    # The real HPA controller raises spec.replicas to minReplicas through the scale subresource; the operator
    # follows with the Deployment, and all replicas become ready.
    obj = wait_for(lambda: (o := get(cluster, namespace, "llmd", "scaled")) and o["spec"].get("replicas") == 3 and o,
                   timeout=60, what="the HPA to set spec.replicas to minReplicas")
    obj = wait_condition(cluster, namespace, "scaled", "Ready", "True", "AllReplicasReady")
    assert obj["status"]["autoscaling"]["provider"] == "HPA"
    # The operator reports what the HPA sees (with or without a metrics pipeline in this cluster).
    obj = wait_for(lambda: (o := get(cluster, namespace, "llmd", "scaled"))
                   and condition(o, "ScalingActive").get("reason") not in (None, "AutoscalerStarting") and o,
                   timeout=60, what="ScalingActive reported from the HPA's first sync")
    assert obj["status"]["autoscaling"]["summary"]
    assert condition(obj, "ScalingLimited")["status"] in ("True", "False")
    assert obj["spec"]["replicas"] >= 3, "never below minReplicas"
    assert "SCALING" in cluster.kubectl("get", "llmd", "scaled", "-n", namespace).stdout

    managed = cluster.kubectl("get", "llmd", "scaled", "-n", namespace, "-o", "json", "--show-managed-fields").stdout
    writers = {e["manager"]: e for e in json.loads(managed)["metadata"]["managedFields"]}
    assert "f:replicas" in json.dumps(writers["kube-controller-manager"]["fieldsV1"]), writers.keys()
    assert "f:spec" not in json.dumps(writers["triton-llm-operator"]["fieldsV1"])

    # Hand edits and deletion are undone.
    cluster.kubectl("patch", "hpa", "scaled", "-n", namespace, "--type=merge", "-p", '{"spec":{"maxReplicas":99}}')
    wait_for(lambda: (get(cluster, namespace, "hpa", "scaled") or {}).get("spec", {}).get("maxReplicas") == 5,
             what="HPA edit undone")
    uid = get(cluster, namespace, "hpa", "scaled")["metadata"]["uid"]  # type: ignore[index]
    cluster.kubectl("delete", "hpa", "scaled", "-n", namespace)
    wait_for(lambda: (h := get(cluster, namespace, "hpa", "scaled")) and h["metadata"]["uid"] != uid,
             what="HPA recreated")

    # Autoscaling off: the HPA goes, the replica count stays where it was (never back to 1).
    off = llmd("scaled")
    del off["spec"]["replicas"]
    apply(cluster, namespace, off)
    wait_for(lambda: get(cluster, namespace, "hpa", "scaled") is None, what="HPA deleted")
    obj = wait_condition(cluster, namespace, "scaled", "Ready", "True")
    assert obj["spec"]["replicas"] == 3
    assert "autoscaling" not in obj["status"]
    assert condition(obj, "ScalingActive") == {}
    deployment = children(cluster, namespace, "deployment", "scaled")[0]
    assert deployment["spec"]["replicas"] == 3


def test_min_replicas_left_out_is_two_capped_at_max_replicas(cluster: Cluster, operator: Operator,
                                                            namespace: str) -> None:
    # No schema default (a default of 2 would reject `maxReplicas: 1`, valid before minReplicas defaulted to 2):
    # the API server stores no minReplicas, its CEL rules skip it, and the operator's HPA gets min(2, maxReplicas).
    docs = [_autoscaled(name, maxReplicas=top) for name, top in (("single", 1), ("pair", 4))]
    for doc in docs:
        del doc["spec"]["autoscaling"]["minReplicas"]
    apply(cluster, namespace, *docs)
    for name, floor in (("single", 1), ("pair", 2)):
        stored = get(cluster, namespace, "llmd", name)
        assert stored is not None and "minReplicas" not in stored["spec"]["autoscaling"], stored
        hpa = wait_for(lambda n=name: get(cluster, namespace, "hpa", n), what=f"the HPA of {name}")
        assert hpa["spec"]["minReplicas"] == floor, hpa["spec"]
    proc = apply(cluster, namespace, _autoscaled("too-few", maxReplicas=1, minReplicas=2), check=False)
    assert proc.returncode != 0 and "minReplicas must be less than or equal to" in proc.stderr, proc.stderr


@pytest.fixture(scope="session")
def keda_crd(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """KEDA's own ScaledObject CRD, from its Go module (no KEDA operator runs: only the schema is exercised)."""
    proc = subprocess.run(["go", "mod", "download", "-json", f"github.com/kedacore/keda/v2@{KEDA_VERSION}"],
                          capture_output=True, text=True, check=False, timeout=300,
                          cwd=tmp_path_factory.mktemp("keda"))
    info = json.loads(proc.stdout or "{}")
    assert proc.returncode == 0 and "Dir" in info, f"cannot fetch KEDA {KEDA_VERSION}: {proc.stdout}{proc.stderr}"
    return Path(info["Dir"]) / "config" / "crd" / "bases" / "keda.sh_scaledobjects.yaml"


def test_keda_provider_waits_for_the_crd_then_writes_a_scaled_object_keda_accepts(
    cluster: Cluster, operator: Operator, namespace: str, keda_crd: Path
) -> None:
    keda = {"minReplicas": 0, "provider": "KEDA", "keda": {"prometheusAddress": "http://prometheus.monitoring:9090"}}
    doc = _autoscaled("keda", **keda)
    served = cluster.kubectl("get", "crd", "scaledobjects.keda.sh", check=False).returncode == 0
    if not served:
        apply(cluster, namespace, doc)
        obj = wait_condition(cluster, namespace, "keda", "ScalingActive", "False", "KEDANotInstalled")
        assert "provider: HPA" in condition(obj, "ScalingActive")["message"]
    cluster.kubectl("apply", "--server-side", "-f", str(keda_crd))
    cluster.kubectl("wait", "--for=condition=Established", "crd/scaledobjects.keda.sh", "--timeout=60s")
    apply(cluster, namespace, doc)
    # The API server validates it against KEDA's real schema; a field KEDA does not know would be refused.
    scaled = wait_for(lambda: cluster.kubectl("get", "scaledobjects.keda.sh", "keda", "-n", namespace,
                                              check=False).returncode == 0
                      and cluster.kubectl_json("get", "scaledobjects.keda.sh", "keda", "-n", namespace),
                      timeout=60, what="the ScaledObject")
    assert scaled["spec"]["scaleTargetRef"] == {"apiVersion": "serving.llmops.dev/v1alpha1",
                                                "kind": "LLMDeployment", "name": "keda"}
    trigger = scaled["spec"]["triggers"][0]
    assert trigger["type"] == "prometheus" and trigger["metadata"]["threshold"] == "4"
    assert 'namespace="' + namespace + '"' in trigger["metadata"]["query"]
    # No KEDA operator runs here, so KEDA never marks it Ready: the operator says so instead of claiming scaling.
    wait_condition(cluster, namespace, "keda", "ScalingActive", "False", "KEDANotReady", timeout=60)
    assert get(cluster, namespace, "hpa", "keda") is None
