"""A model pod that fails shows up in the LLMDeployment's conditions, through the real API server and operator.

kwok runs no container, so no kubelet ever writes ErrImagePull or CrashLoopBackOff here. The test writes those
container states into the pod's status subresource itself, shaped as the kubelet writes them; everything after
that is real: the Deployment controller counts the pod unready, the operator reads the pod and reports it.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from e2e.pytest_plugin import Cluster, Operator, wait_for
from tests.e2e.test_operator import apply, llmd, wait_condition

pytestmark = pytest.mark.cluster


def _pod(cluster: Cluster, namespace: str) -> dict[str, Any]:
    def running() -> dict[str, Any] | None:
        pods = cluster.kubectl_json("get", "pods", "-n", namespace)["items"]
        ready = [p for p in pods if any(c.get("type") == "Ready" and c.get("status") == "True"
                                        for c in (p.get("status") or {}).get("conditions") or [])]
        return ready[0] if ready else None

    pod: dict[str, Any] = wait_for(running, timeout=90, what="a Ready model pod")
    return pod


def _write_status(cluster: Cluster, namespace: str, pod: dict[str, Any], containers: list[dict[str, Any]]) -> None:
    status = dict(pod["status"])
    status["containerStatuses"] = containers
    status["conditions"] = [
        {**c, "status": "False"} if c.get("type") in ("Ready", "ContainersReady") else c
        for c in status.get("conditions") or []
    ]
    cluster.kubectl("patch", "pod", pod["metadata"]["name"], "-n", namespace, "--subresource=status",
                    "--type=merge", "-p", json.dumps({"status": status}))


@pytest.mark.parametrize(("containers", "reason", "words"), [
    ([{"name": "triton", "image": "registry.example.com/nope/triton:1", "ready": False, "started": False,
       "restartCount": 0, "imageID": "", "state": {"waiting": {"reason": "ImagePullBackOff",
       "message": 'Back-off pulling image "registry.example.com/nope/triton:1"'}}, "lastState": {}},
      {"name": "openai", "image": "x", "imageID": "", "ready": False, "started": True, "restartCount": 0,
       "state": {"running": {"startedAt": "2026-11-23T00:00:00Z"}}, "lastState": {}}],
     "ImagePullFailed", "registry.example.com/nope/triton:1"),
    ([{"name": "triton", "image": "img", "imageID": "", "ready": False, "started": False, "restartCount": 4,
       "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s restarting failed container"}},
       "lastState": {"terminated": {"exitCode": 1, "reason": "Error", "startedAt": "2026-11-23T00:00:00Z",
                                    "finishedAt": "2026-11-23T00:00:09Z",
                                    "message": "E1123 model directory /mnt/model has no config.json"}}},
      {"name": "openai", "image": "x", "imageID": "", "ready": False, "started": True, "restartCount": 0,
       "state": {"running": {"startedAt": "2026-11-23T00:00:00Z"}}, "lastState": {}}],
     "ModelLoadFailed", "model directory /mnt/model has no config.json"),
], ids=["image-pull", "model-does-not-load"])
def test_a_failing_pod_is_reported_in_degraded_and_ready(
    cluster: Cluster, operator: Operator, namespace: str, containers: list[dict[str, Any]], reason: str, words: str
) -> None:
    apply(cluster, namespace, llmd("fails"))
    wait_condition(cluster, namespace, "fails", "Ready", "True", timeout=90)
    _write_status(cluster, namespace, _pod(cluster, namespace), containers)
    obj = wait_condition(cluster, namespace, "fails", "Degraded", "True", reason, timeout=60)
    degraded = next(c for c in obj["status"]["conditions"] if c["type"] == "Degraded")
    assert words in degraded["message"], degraded
    ready = next(c for c in obj["status"]["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", reason), ready
    events = cluster.kubectl_json("get", "events", "-n", namespace)["items"]
    assert any(e.get("reason") == reason and e.get("type") == "Warning" for e in events), [
        (e.get("reason"), e.get("type")) for e in events]
