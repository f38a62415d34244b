"""The local control plane is real: discovery, scheduling on fake GPU nodes, taints, garbage collection."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from e2e.pytest_plugin import Cluster, wait_for

pytestmark = pytest.mark.cluster


def _deployment(name: str, *, gpus: int = 1, selector: dict[str, str] | None = None,
                tolerations: list[dict[str, Any]] | None = None, replicas: int = 1) -> str:
    pod_spec: dict[str, Any] = {
        "containers": [
            {
                "name": "main",
                "image": "nvcr.io/nvidia/tritonserver:25.01-py3",
                "resources": {"limits": {"nvidia.com/gpu": str(gpus)}} if gpus else {},
            }
        ],
        "nodeSelector": selector or {},
        "tolerations": tolerations
        if tolerations is not None
        else [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    }
    return yaml.safe_dump(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": name}},
                "template": {"metadata": {"labels": {"app": name}}, "spec": pod_spec},
            },
        }
    )


def _pods(cluster: Cluster, ns: str, app: str) -> list[dict[str, Any]]:
    return list(cluster.kubectl_json("get", "pods", "-n", ns, "-l", f"app={app}")["items"])


def _node(cluster: Cluster, name: str) -> dict[str, Any]:
    return dict(cluster.kubectl_json("get", "node", name))


def test_discovery_serves_the_apis_the_operator_needs(cluster: Cluster) -> None:
    versions = set(cluster.kubectl("api-versions").stdout.split())
    assert {"apps/v1", "autoscaling/v2", "policy/v1", "apiextensions.k8s.io/v1", "v1"} <= versions
    version = json.loads(cluster.kubectl("version", "-o", "json").stdout)
    assert version["serverVersion"]["gitVersion"].startswith("v1.")
    assert version["serverVersion"]["gitVersion"] != "v0.0.0-master"


def test_default_fleet_has_gpu_spot_and_cpu_nodes(cluster: Cluster) -> None:
    nodes = cluster.kubectl_json("get", "nodes")["items"]
    by_pool: dict[str, list[dict[str, Any]]] = {}
    for node in nodes:
        by_pool.setdefault(node["metadata"]["labels"]["llmops.dev/node-pool"], []).append(node)
    on_demand_gpu = by_pool["gpu-h100"] + by_pool["gpu-a100"]
    assert len(on_demand_gpu) == 4
    assert {n["metadata"]["labels"]["nvidia.com/gpu.product"] for n in on_demand_gpu} == {
        "NVIDIA-H100-80GB-HBM3",
        "NVIDIA-A100-SXM4-80GB",
    }
    assert all(int(n["status"]["allocatable"]["nvidia.com/gpu"]) >= 6 for n in on_demand_gpu)
    assert len(by_pool["gpu-spot-l4"]) == 2
    assert all(
        {"key": "llmops.dev/spot", "value": "true", "effect": "NoSchedule"} in n["spec"]["taints"]
        for n in by_pool["gpu-spot-l4"]
    )
    assert len(by_pool["cpu"]) == 2
    assert all("nvidia.com/gpu" not in n["status"]["allocatable"] for n in by_pool["cpu"])
    # kwok renews a Lease per node, so the node lifecycle controller never marks them NotReady (which would
    # flip every pod to NotReady after 40 s).
    leases = wait_for(lambda: {lease["metadata"]["name"] for lease in
                               cluster.kubectl_json("get", "leases", "-n", "kube-node-lease")["items"]}
                      >= {n["metadata"]["name"] for n in nodes}, what="a Lease per node")
    assert leases
    for node in nodes:  # kwok made every node Ready
        ready = [c for c in node["status"]["conditions"] if c["type"] == "Ready"]
        assert ready and ready[0]["status"] == "True", node["metadata"]["name"]


def test_gpu_pod_lands_on_matching_product_and_runs(cluster: Cluster, namespace: str) -> None:
    product = "NVIDIA-A100-SXM4-80GB"
    cluster.kubectl(
        "apply", "-n", namespace, "-f", "-",
        input=_deployment("a100", gpus=2, selector={"nvidia.com/gpu.product": product}),
    )
    pods = wait_for(
        lambda: [p for p in _pods(cluster, namespace, "a100") if p["status"].get("phase") == "Running"],
        what="a Running pod",
    )
    node = _node(cluster, pods[0]["spec"]["nodeName"])
    assert node["metadata"]["labels"]["nvidia.com/gpu.product"] == product
    ready = [c for c in pods[0]["status"]["conditions"] if c["type"] == "Ready"]
    assert ready[0]["status"] == "True"


def test_unknown_gpu_product_stays_pending_with_failed_scheduling(cluster: Cluster, namespace: str) -> None:
    cluster.kubectl(
        "apply", "-n", namespace, "-f", "-",
        input=_deployment("b200", selector={"nvidia.com/gpu.product": "NVIDIA-B200"}),
    )

    def failed_scheduling() -> list[dict[str, Any]]:
        events = cluster.kubectl_json("get", "events", "-n", namespace)["items"]
        return [e for e in events if e["reason"] == "FailedScheduling"]

    events = wait_for(failed_scheduling, what="a FailedScheduling event")
    assert "node(s) didn't match Pod's node affinity/selector" in events[0]["message"]
    pods = _pods(cluster, namespace, "b200")
    assert pods and all(p["status"]["phase"] == "Pending" and not p["spec"].get("nodeName") for p in pods)


def test_spot_nodes_need_the_spot_toleration(cluster: Cluster, namespace: str) -> None:
    gpu_toleration = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    spot_toleration = {"key": "llmops.dev/spot", "operator": "Equal", "value": "true", "effect": "NoSchedule"}
    # Only the spot pool has L4s, so without the toleration there is nowhere to go.
    cluster.kubectl(
        "apply", "-n", namespace, "-f", "-",
        input=_deployment("l4-no-tol", selector={"nvidia.com/gpu.product": "NVIDIA-L4"},
                          tolerations=[gpu_toleration]),
    )
    # Any GPU, no spot toleration, more replicas than one node holds: they must spread over on-demand only.
    cluster.kubectl(
        "apply", "-n", namespace, "-f", "-",
        input=_deployment("any-gpu", gpus=4, tolerations=[gpu_toleration], replicas=6),
    )
    cluster.kubectl(
        "apply", "-n", namespace, "-f", "-",
        input=_deployment("l4-tol", selector={"nvidia.com/gpu.product": "NVIDIA-L4"},
                          tolerations=[gpu_toleration, spot_toleration]),
    )
    running = wait_for(
        lambda: [p for p in _pods(cluster, namespace, "l4-tol") if p["status"].get("phase") == "Running"],
        what="the tolerating pod to run",
    )
    assert _node(cluster, running[0]["spec"]["nodeName"])["metadata"]["labels"]["llmops.dev/capacity-type"] == "spot"
    placed = wait_for(
        lambda: (ps := [p for p in _pods(cluster, namespace, "any-gpu") if p["spec"].get("nodeName")])
        and len(ps) == 6 and ps,
        what="6 any-gpu pods to be placed",
    )
    for pod in placed:
        labels = _node(cluster, pod["spec"]["nodeName"])["metadata"]["labels"]
        assert labels["llmops.dev/capacity-type"] == "on-demand"
    events = wait_for(
        lambda: [
            e for e in cluster.kubectl_json("get", "events", "-n", namespace)["items"]
            if e["reason"] == "FailedScheduling" and e["involvedObject"]["name"].startswith("l4-no-tol")
        ],
        what="FailedScheduling for the non-tolerating pod",
    )
    assert "untolerated taint" in events[0]["message"]
    assert all(not p["spec"].get("nodeName") for p in _pods(cluster, namespace, "l4-no-tol"))


def test_deleting_a_deployment_garbage_collects_replicasets_and_pods(cluster: Cluster, namespace: str) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=_deployment("gc", gpus=0, replicas=2, tolerations=[]))
    wait_for(
        lambda: len([p for p in _pods(cluster, namespace, "gc") if p["status"].get("phase") == "Running"]) == 2,
        what="2 running pods",
    )
    rs = cluster.kubectl_json("get", "replicasets", "-n", namespace, "-l", "app=gc")["items"]
    assert len(rs) == 1 and rs[0]["metadata"]["ownerReferences"][0]["kind"] == "Deployment"
    # --cascade=background: the API server deletes only the Deployment; the GC controller does the rest.
    cluster.kubectl("delete", "deployment", "gc", "-n", namespace, "--cascade=background", "--wait=false")
    wait_for(
        lambda: not cluster.kubectl_json("get", "replicasets", "-n", namespace, "-l", "app=gc")["items"]
        and not _pods(cluster, namespace, "gc"),
        timeout=90,
        what="ReplicaSets and Pods to be garbage-collected",
    )


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split(") ", 1)[1][:1] != "Z"


def test_dev_up_and_down_leave_nothing_behind(cluster: Cluster, tmp_path: Path) -> None:
    """With the metrics test bed too: Prometheus, the traffic emulator and prometheus-adapter must go as well."""
    env = {**os.environ, "LLMCTL_STATE_DIR": str(tmp_path), "LLMCTL_BIN_DIR": str(cluster.bin_dir)}
    llmctl = [sys.executable, "-m", "llm_operator.cli"]
    up = subprocess.run(
        [*llmctl, "dev", "up", "--name", "small", "--gpu-nodes", "1", "--spot-nodes", "0", "--cpu-nodes", "1",
         "--metrics"],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )
    assert up.returncode == 0, up.stderr
    state = json.loads((tmp_path / "small" / "cluster.json").read_text())
    metrics_parts = {"prometheus", "traffic", "prometheus-adapter"}
    assert set(state["pids"]) == {"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok",
                                  *metrics_parts}
    assert state["metrics"] is True
    assert all(_pid_alive(pid) for pid in state["pids"].values())
    assert all(_listening(state["ports"][name]) for name in ("kube-apiserver", "etcd", *metrics_parts))
    kubectl = [str(cluster.bin_dir / "kubectl"), f"--kubeconfig={state['kubeconfig']}"]
    nodes = subprocess.run([*kubectl, "get", "nodes", "-o", "name"], capture_output=True, text=True,
                           check=True).stdout.split()
    assert sorted(nodes) == ["node/cpu-0", "node/gpu-h100-0"]
    # `dev up` returned only once the aggregated API answers through the apiserver.
    discovery = subprocess.run([*kubectl, "get", "--raw", "/apis/custom.metrics.k8s.io/v1beta2"],
                               capture_output=True, text=True, check=False)
    assert discovery.returncode == 0 and json.loads(discovery.stdout)["groupVersion"] == "custom.metrics.k8s.io/v1beta2"
    status = subprocess.run([*llmctl, "dev", "status", "--name", "small"], env=env, capture_output=True, text=True,
                            timeout=60, check=False)
    assert status.returncode == 0, status.stdout + status.stderr
    assert f"prometheus: http://127.0.0.1:{state['ports']['prometheus']}" in status.stdout
    assert f"traffic emulator: http://127.0.0.1:{state['ports']['traffic']}" in status.stdout
    assert "APIService v1beta1.custom.metrics.k8s.io: Available=True" in status.stdout
    assert "APIService v1beta2.custom.metrics.k8s.io: Available=True" in status.stdout

    down = subprocess.run([*llmctl, "dev", "down", "--name", "small"], env=env, capture_output=True, text=True,
                          timeout=120, check=False)
    assert down.returncode == 0, down.stderr
    assert not any(_pid_alive(pid) for pid in state["pids"].values())
    assert not any(_listening(port) for port in state["ports"].values())
    assert not (tmp_path / "small").exists()
    # Nor any other process started for it (every one names the state folder or the kubeconfig in its flags).
    leftovers = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if str(tmp_path / "small") in cmdline and _pid_alive(int(proc.name)):
                leftovers.append(cmdline.replace("\0", " "))
    assert not leftovers
