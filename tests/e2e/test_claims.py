"""README claims about the operator, each checked against the real local cluster: the conditions ApplyFailed,
InvalidSpec and ScaledToZero, LLMOPS_SKIP_NODE_CHECK, recovery when a GPU node appears, deletion while the
operator is down, and the llmop_* metrics."""

from __future__ import annotations

import contextlib
import copy
import json
import threading
import urllib.request
import uuid
from typing import Any

import pytest
import yaml
from llm_operator.dev._cluster import free_port
from llm_operator.dev._nodes import build_nodes
from prometheus_client.parser import text_string_to_metric_families

from e2e.pytest_plugin import CRD_FILE, Cluster, Operator, OperatorProcess, wait_for
from tests.e2e.test_operator import apply, children, condition, events, get, llmd, wait_condition

pytestmark = pytest.mark.cluster

CHILD_KINDS = ("configmap", "deployment", "service", "poddisruptionbudget")


def pods(cluster: Cluster, namespace: str, name: str) -> list[dict[str, Any]]:
    return list(cluster.kubectl_json("get", "pods", "-n", namespace, "-l", f"app.kubernetes.io/instance={name}")
                ["items"])


# ------------------------------------------------------------------------------------------------ conditions


def test_a_child_the_api_server_rejects_is_reported_as_apply_failed_and_recovers(
    cluster: Cluster, operator: Operator, namespace: str
) -> None:
    # The CRD passes affinity through unchecked (x-kubernetes-preserve-unknown-fields); the Deployment's
    # validation rejects the unknown operator.
    affinity = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "topology.kubernetes.io/zone", "operator": "Near", "values": ["a"]}]}]}}}
    apply(cluster, namespace, llmd("rejected", placement={"affinity": affinity}))
    obj = wait_condition(cluster, namespace, "rejected", "Degraded", "True", "ApplyFailed")
    message = condition(obj, "Degraded")["message"]
    assert "Deployment rejected-" in message and "Near" in message, message  # names the child, quotes the server
    assert condition(obj, "Ready")["status"] == "False" and condition(obj, "Ready")["reason"] == "ApplyFailed"
    assert not children(cluster, namespace, "deployment", "rejected")
    assert any(e["type"] == "Warning" and e["reason"] == "ApplyFailed" for e in events(cluster, namespace, "rejected"))

    cluster.kubectl("patch", "llmd", "rejected", "-n", namespace, "--type=json",
                    "-p", json.dumps([{"op": "remove", "path": "/spec/placement/affinity"}]))
    obj = wait_condition(cluster, namespace, "rejected", "Ready", "True", "AllReplicasReady")
    assert condition(obj, "Degraded")["reason"] == "AsExpected"
    assert any(e["reason"] == "Recovered" for e in events(cluster, namespace, "rejected"))


def _relaxed(crd: dict[str, Any]) -> dict[str, Any]:
    """The CRD as an older release might have shipped it: same structure, no value constraints on spec."""
    constraints = {"enum", "pattern", "minimum", "maximum", "minLength", "maxLength", "minItems", "maxItems",
                   "maxProperties", "x-kubernetes-validations"}

    def strip(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: strip(v) for k, v in node.items() if k not in constraints}
        if isinstance(node, list):
            return [strip(v) for v in node]
        return node

    relaxed = copy.deepcopy(crd)
    for version in relaxed["spec"]["versions"]:
        root = version["schema"]["openAPIV3Schema"]
        root.pop("x-kubernetes-validations", None)
        root["properties"]["spec"] = strip(root["properties"]["spec"])
    return relaxed


def test_an_object_stored_under_an_older_crd_is_reported_as_invalid_spec(
    cluster: Cluster, operator: Operator, namespace: str
) -> None:
    real = yaml.safe_load(CRD_FILE.read_text())
    stale = llmd("stale", runtime={"backend": "bogus"})
    probe = llmd("stale-probe", runtime={"backend": "bogus"})

    def admitted() -> bool:
        proc = cluster.kubectl("create", "--dry-run=server", "-n", namespace, "-f", "-", input=yaml.safe_dump(probe),
                               check=False)
        return proc.returncode == 0

    def set_crd(crd: dict[str, Any]) -> None:
        # Server-side apply under kubectl's manager, as the session's `crd` fixture did: fields left out go away.
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", input=yaml.safe_dump(crd))

    # The operator first meets the object after the upgrade, as an operator upgraded with its CRD would.
    with operator.stopped():
        try:
            set_crd(_relaxed(real))
            wait_for(admitted, timeout=30, what="the relaxed CRD to admit backend 'bogus'")
            apply(cluster, namespace, stale)
        finally:
            set_crd(real)
            wait_for(lambda: not admitted(), timeout=30, what="the real CRD to reject backend 'bogus' again")
    obj = wait_condition(cluster, namespace, "stale", "Degraded", "True", "InvalidSpec")
    message = condition(obj, "Degraded")["message"]
    # The field, once (not spec.spec.), and what it accepts.
    assert "spec.runtime.backend:" in message and "spec.spec." not in message and "vllm" in message, message
    assert condition(obj, "Ready")["status"] == "False" and condition(obj, "Ready")["reason"] == "InvalidSpec"
    for kind in CHILD_KINDS:
        assert not children(cluster, namespace, kind, "stale"), kind
    assert any(e["type"] == "Warning" and e["reason"] == "InvalidSpec" for e in events(cluster, namespace, "stale"))

    cluster.kubectl("patch", "llmd", "stale", "-n", namespace, "--type=merge",
                    "-p", json.dumps({"spec": {"runtime": {"backend": "vllm"}}}))
    obj = wait_condition(cluster, namespace, "stale", "Ready", "True", "AllReplicasReady")
    assert condition(obj, "Degraded")["reason"] == "AsExpected"


def test_scaling_to_zero_is_ready_with_reason_scaled_to_zero(cluster: Cluster, operator: Operator,
                                                             namespace: str) -> None:
    apply(cluster, namespace, llmd("zero", replicas=1))
    wait_condition(cluster, namespace, "zero", "Ready", "True", "AllReplicasReady")
    cluster.kubectl("scale", "llmd/zero", "-n", namespace, "--replicas=0")
    obj = wait_condition(cluster, namespace, "zero", "Ready", "True", "ScaledToZero")
    assert condition(obj, "Degraded")["reason"] == "AsExpected"
    assert [d["spec"]["replicas"] for d in children(cluster, namespace, "deployment", "zero")] == [0]
    wait_for(lambda: not pods(cluster, namespace, "zero"), what="the model pod to go")
    obj = wait_for(lambda: (o := get(cluster, namespace, "llmd", "zero")) and o["status"]["replicas"] == 0 and o,
                   what="status.replicas 0")
    assert obj["status"]["readyText"] == "0/0"
    assert condition(obj, "Ready")["reason"] == "ScaledToZero"


# ------------------------------------------------------------------------------------------------ GPU nodes


def test_skip_node_check_creates_pods_for_a_product_no_node_has_yet(
    cluster: Cluster, operator: Operator, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Read by every reconcile from the environment of the operator's process, which is this one.
    monkeypatch.setenv("LLMOPS_SKIP_NODE_CHECK", "1")
    apply(cluster, namespace, llmd("autoprov", resources={"gpu": {"count": 1, "product": "NVIDIA-B200"}}))
    # Without the setting this is Degraded GPUProductUnavailable with no Deployment; with it the pods are created
    # and wait, Pending, for a node auto-provisioner.
    obj = wait_condition(cluster, namespace, "autoprov", "Degraded", "True", "Unschedulable")
    assert "GPUProductUnavailable" not in json.dumps(obj["status"])
    [deployment] = children(cluster, namespace, "deployment", "autoprov")
    assert deployment["spec"]["template"]["spec"]["nodeSelector"]["nvidia.com/gpu.product"] == "NVIDIA-B200"
    assert [p["status"]["phase"] for p in pods(cluster, namespace, "autoprov")] == ["Pending"]


def gpu_node(pool: str, product: str) -> dict[str, Any]:
    """One kwok-managed GPU node shaped like the default fleet's H100 nodes (e2e/nodes/default.yaml)."""
    profile = {"pools": [{
        "name": pool, "role": "gpu", "count": 1,
        "labels": {"nvidia.com/gpu.present": "true", "nvidia.com/gpu.product": product, "nvidia.com/gpu.count": "8",
                   "llmops.dev/capacity-type": "on-demand", "karpenter.sh/capacity-type": "on-demand"},
        "taints": [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}],
        "allocatable": {"cpu": "192", "memory": "2048Gi", "ephemeral-storage": "7Ti", "pods": "110",
                        "nvidia.com/gpu": "8"},
    }]}
    [node] = build_nodes(profile)
    return node


def test_gpu_product_unavailable_clears_when_a_node_with_that_product_appears(
    cluster: Cluster, operator: Operator, namespace: str
) -> None:
    product = "NVIDIA-B200"
    apply(cluster, namespace, llmd("waits", resources={"gpu": {"count": 1, "product": product}}))
    wait_condition(cluster, namespace, "waits", "Degraded", "True", "GPUProductUnavailable")
    node = gpu_node(f"gpu-b200-{uuid.uuid4().hex[:5]}", product)
    node_name = node["metadata"]["name"]
    cluster.kubectl("create", "-f", "-", input=json.dumps(node))
    try:
        obj = wait_condition(cluster, namespace, "waits", "Ready", "True", "AllReplicasReady", timeout=90)
        assert condition(obj, "Degraded")["reason"] == "AsExpected"
        assert [p["spec"]["nodeName"] for p in pods(cluster, namespace, "waits")] == [node_name]
        assert any(e["reason"] == "Recovered" for e in events(cluster, namespace, "waits"))
    finally:
        # Pods first: a pod left on a deleted node lingers until the pod GC finds it.
        cluster.kubectl("delete", "llmd", "waits", "-n", namespace, "--wait=true", "--timeout=60s", check=False)
        wait_for(lambda: not pods(cluster, namespace, "waits"), timeout=60, what="pods on the extra node to go")
        cluster.kubectl("delete", "node", node_name, "--wait=true", "--timeout=60s")


# ------------------------------------------------------------------------------------------------ lifecycle


def test_deleting_while_the_operator_is_down_leaves_nothing_and_nothing_comes_back(
    cluster: Cluster, operator: Operator, namespace: str
) -> None:
    apply(cluster, namespace, llmd("orphan", replicas=2))
    obj = wait_condition(cluster, namespace, "orphan", "Ready", "True")
    assert not obj["metadata"].get("finalizers")  # else deletion would hang while the operator is down
    with operator.stopped():
        cluster.kubectl("delete", "llmd", "orphan", "-n", namespace, "--wait=true", "--timeout=30s")
        wait_for(lambda: not any(children(cluster, namespace, k, "orphan") for k in (*CHILD_KINDS, "pods")),
                 timeout=90, what="garbage collection of every child")
    # A witness created after the restart proves the new operator watches this namespace and has caught up.
    apply(cluster, namespace, llmd("witness"))
    wait_condition(cluster, namespace, "witness", "Ready", "True")
    operator.settle()
    assert get(cluster, namespace, "llmd", "orphan") is None
    for kind in (*CHILD_KINDS, "pods"):
        assert not children(cluster, namespace, kind, "orphan"), kind
    # The restarted operator never even tried to write anything of the deleted object.
    touched = [f"{m} {p}" for m, p in operator.controller.kube.calls
               if m != "GET" and f"/namespaces/{namespace}/" in p and "/orphan" in p]
    assert not touched, touched


# ------------------------------------------------------------------------------------------------ metrics

DOCUMENTED_METRICS = ("llmop_reconcile_total", "llmop_reconcile_duration_seconds", "llmop_workqueue_depth",
                      "llmop_llmdeployments", "llmop_api_requests_total")


def scrape(port: int) -> tuple[set[str], dict[str, float]]:
    """The metric family names (as in `# TYPE` lines) and every sample, keyed `name{label="value",...}`."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    names = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")}
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            samples[s.name + (f"{{{labels}}}" if labels else "")] = s.value
    return names, samples


def test_metrics_endpoint_serves_every_documented_metric_and_they_move(
    cluster: Cluster, operator_process: OperatorProcess, namespace: str
) -> None:
    port = free_port()
    # One worker: objects created together then wait in the queue, so its depth is seen above zero.
    operator_process.start("-n", namespace, "--metrics-port", str(port), "--metrics-address", "127.0.0.1",
                           kubeconfig=cluster.kubeconfig, env={"LLMOPS_WORKERS": "1"})
    names, before = wait_for(lambda: scrape(port), timeout=30, what="the metrics endpoint")
    missing = [m for m in DOCUMENTED_METRICS if m not in names and m.removesuffix("_total") not in names]
    assert not missing, f"not served: {missing}"
    assert before["llmop_llmdeployments"] == 0 and before["llmop_reconcile_duration_seconds_count"] == 0

    depths: list[float] = []
    done = threading.Event()

    def sample_depth() -> None:
        while not done.is_set():
            with contextlib.suppress(OSError):
                depths.append(scrape(port)[1]["llmop_workqueue_depth"])
            done.wait(0.05)

    sampler = threading.Thread(target=sample_depth, daemon=True)
    sampler.start()
    try:
        apply(cluster, namespace, *(llmd(f"m{i}") for i in range(3)))
        for i in range(3):
            wait_condition(cluster, namespace, f"m{i}", "Ready", "True")
    finally:
        done.set()
        sampler.join(timeout=10)
    _, after = scrape(port)
    assert after["llmop_llmdeployments"] == 3
    assert after['llmop_reconcile_total{result="success"}'] >= 3
    assert after["llmop_reconcile_duration_seconds_count"] >= 3 and after["llmop_reconcile_duration_seconds_sum"] > 0
    for verb in ("GET", "PATCH", "POST"):  # reads, server-side applies and status, Events
        assert after.get(f'llmop_api_requests_total{{verb="{verb}"}}', 0) > 0, verb
    assert max(depths, default=0) >= 1, f"queue depth never rose above 0 in {len(depths)} samples"

    cluster.kubectl("delete", "llmd", "--all", "-n", namespace, "--wait=true", "--timeout=60s")
    wait_for(lambda: scrape(port)[1]["llmop_llmdeployments"] == 0, timeout=30, what="llmop_llmdeployments back to 0")
