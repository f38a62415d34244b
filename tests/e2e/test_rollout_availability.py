"""A spec change rolls a 2-replica model on a full GPU pool, watched pod by pod on the real cluster.

The pods behave like model servers here (kwok stages in e2e/kwok/stages.yaml): each new pod loads its model for
a few seconds before it is Ready, and each deleted pod stays Terminating, holding its GPUs, for its grace period.
A watch on the pods sees every transition, so the minimum Ready count is exact, not sampled.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from typing import Any

import pytest

from e2e.pytest_plugin import Cluster, Operator, wait_for
from tests.e2e.test_operator import apply, children, condition, events, get, llmd, wait_condition

pytestmark = pytest.mark.cluster

A100 = "NVIDIA-A100-SXM4-80GB"
A100_GPUS = 6  # the fleet's only A100 node (e2e/nodes/default.yaml): 3 GPUs x 2 replicas fill it
LOAD = "3s"
GRACE = "4s"


@dataclass
class PodWatch:
    """Every pod event of a namespace, folded into the number of serving (Ready, not deleting) pods."""

    cluster: Cluster
    namespace: str
    pods: dict[str, dict[str, Any]] = field(default_factory=dict)
    ready_timeline: list[int] = field(default_factory=list)
    holding_timeline: list[int] = field(default_factory=list)  # pods bound to a node, terminating included
    unschedulable: list[str] = field(default_factory=list)
    loading_seen: int = 0  # most pods seen bound to a node but not yet Ready (a model load)
    terminating_seen: int = 0  # most pods seen Terminating at once (holding GPUs in their grace period)
    error: BaseException | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _started: threading.Event = field(default_factory=threading.Event)

    @staticmethod
    def serving(pod: dict[str, Any]) -> bool:
        if pod["metadata"].get("deletionTimestamp"):
            return False  # endpoints drop a terminating pod at once
        conds = (pod.get("status") or {}).get("conditions") or []
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conds)

    def _record(self) -> None:
        self.ready_timeline.append(sum(self.serving(p) for p in self.pods.values()))
        self.holding_timeline.append(sum(bool(p["spec"].get("nodeName")) for p in self.pods.values()))
        live = [p for p in self.pods.values() if not p["metadata"].get("deletionTimestamp")]
        self.loading_seen = max(self.loading_seen, sum(bool(p["spec"].get("nodeName")) and not self.serving(p)
                                                       for p in live))
        self.terminating_seen = max(self.terminating_seen, len(self.pods) - len(live))

    def _run(self) -> None:
        from kubernetes import client, watch

        api = client.CoreV1Api(self.cluster.api_client())
        try:
            body = json.loads(api.list_namespaced_pod(self.namespace, _preload_content=False).data)
            for pod in body["items"]:
                self.pods[pod["metadata"]["name"]] = pod
            self._record()
            version = body["metadata"]["resourceVersion"]
            self._started.set()
            w = watch.Watch()
            while not self._stop.is_set():
                for event in w.stream(api.list_namespaced_pod, self.namespace, resource_version=version,
                                      timeout_seconds=2):
                    pod = event["raw_object"]
                    if event["type"] == "ERROR":
                        raise RuntimeError(f"watch error: {pod}")
                    version = pod["metadata"]["resourceVersion"]
                    if event["type"] == "DELETED":
                        self.pods.pop(pod["metadata"]["name"], None)
                    else:
                        self.pods[pod["metadata"]["name"]] = pod
                        for cond in (pod.get("status") or {}).get("conditions") or []:
                            if cond["type"] == "PodScheduled" and cond.get("reason") == "Unschedulable":
                                self.unschedulable.append(f"{pod['metadata']['name']}: {cond.get('message')}")
                    self._record()
                    if self._stop.is_set():
                        break
        except BaseException as exc:  # surfaced by stop(): a watch that died would make the minimum a lie
            self.error = exc
            self._started.set()

    def __enter__(self) -> PodWatch:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self._started.wait(30), "pod watch did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        if self.error is not None:
            raise AssertionError(f"the pod watch failed: {self.error!r}")


def _model(name: str, **runtime: Any) -> dict[str, Any]:
    return llmd(
        name,
        replicas=2,
        resources={"gpu": {"count": 3, "product": A100}},
        runtime={"backend": "vllm", **runtime},
        podAnnotations={"kwok.llmops.dev/ready-delay": LOAD, "kwok.llmops.dev/terminating-for": GRACE},
    )


def test_rollout_on_a_full_gpu_pool_never_drops_below_one_ready_pod(
    cluster: Cluster, operator: Operator, namespace: str
) -> None:
    apply(cluster, namespace, _model("full-pool"))
    first = wait_condition(cluster, namespace, "full-pool", "Ready", "True", "AllReplicasReady", timeout=90)
    node = cluster.kubectl_json("get", "nodes", "-l", f"nvidia.com/gpu.product={A100}")["items"]
    assert [int(n["status"]["allocatable"]["nvidia.com/gpu"]) for n in node] == [A100_GPUS], "pool is not full"

    with PodWatch(cluster, namespace) as pods:
        assert pods.ready_timeline[-1] == 2
        apply(cluster, namespace, _model("full-pool", maxBatchSize=32))

        def rolled() -> dict[str, Any] | None:
            obj = get(cluster, namespace, "llmd", "full-pool")
            done = (obj is not None and obj["status"].get("revision") != first["status"]["revision"]
                    and len(children(cluster, namespace, "deployment", "full-pool")) == 1
                    and condition(obj, "Ready").get("status") == "True"
                    and condition(obj, "Progressing").get("status") == "False"
                    and len(pods.pods) == 2)
            return obj if done else None

        obj = wait_for(rolled, timeout=180, interval=0.5, what="rollout to the new revision")

    # The kwok stages made the pods behave like model servers (otherwise this test would prove little).
    assert pods.loading_seen >= 1 and pods.terminating_seen >= 1, (pods.loading_seen, pods.terminating_seen)
    # maxUnavailable 1: a 2-replica model keeps serving through the whole rollout.
    assert min(pods.ready_timeline) == 1, pods.ready_timeline
    # maxSurge 0 on a full pool: never more pods bound than GPUs allow, terminating ones included, and no pod
    # ever waited Pending behind GPUs that a terminating pod still held.
    assert max(pods.holding_timeline) <= 2, pods.holding_timeline
    assert pods.unschedulable == []
    assert condition(obj, "Degraded")["status"] == "False"
    assert not [e for e in events(cluster, namespace, "full-pool") if e["reason"] == "Unschedulable"]
    assert any(e["reason"] == "RolloutStarted" for e in events(cluster, namespace, "full-pool"))
    live = cluster.kubectl_json("get", "pods", "-n", namespace, "-l", obj["status"]["selector"])["items"]
    assert {p["metadata"]["labels"]["serving.llmops.dev/revision"] for p in live} == {obj["status"]["revision"]}
