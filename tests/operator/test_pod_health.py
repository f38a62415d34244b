"""A model pod's failing states mapped to Degraded reasons: the pure mapping, and what reconcile reports."""

from __future__ import annotations

from typing import Any

import pytest
from llm_operator._pod_health import pod_problem, pod_problems
from llm_operator._reconcile import reconcile
from llm_operator.builders import REVISION_LABEL

from tests.operator.fake_kube import FakeKube

NS = "team-a"


def pod(name: str = "m-r1-abc", *, init: list[dict[str, Any]] | None = None, containers: list[dict[str, Any]],
        **status: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": NS},
            "status": {"initContainerStatuses": init or [], "containerStatuses": containers, **status}}


def waiting(name: str, reason: str, message: str = "", **extra: Any) -> dict[str, Any]:
    return {"name": name, "image": "ghcr.io/x/triton:nope", "ready": False, "started": False,
            "state": {"waiting": {"reason": reason, "message": message}}, **extra}


def crashed(name: str, *, restarts: int, code: int, message: str, waiting_reason: str = "CrashLoopBackOff"
            ) -> dict[str, Any]:
    return {"name": name, "image": "img", "ready": False, "started": False, "restartCount": restarts,
            "state": {"waiting": {"reason": waiting_reason}},
            "lastState": {"terminated": {"exitCode": code, "reason": "Error", "message": message}}}


RUNNING_FRONT = {"name": "openai", "ready": False, "started": True, "state": {"running": {}}}


@pytest.mark.parametrize("reason", ["ErrImagePull", "ImagePullBackOff", "InvalidImageName"])
def test_an_image_that_cannot_be_pulled_names_the_image_and_the_fields(reason: str) -> None:
    found = pod_problem(pod(containers=[waiting("triton", reason, "manifest unknown"), RUNNING_FRONT]))
    assert found is not None and found.reason == "ImagePullFailed"
    assert "ghcr.io/x/triton:nope" in found.message and "manifest unknown" in found.message
    assert "spec.runtime.image" in found.message and "imagePullSecrets" in found.message


def test_a_model_that_does_not_load_quotes_the_last_log_line() -> None:
    log = ("I1123 loading\n"
           "E1123 model directory /mnt/model has no config.json (found: nothing): the model volume is empty")
    found = pod_problem(pod(containers=[crashed("triton", restarts=3, code=1, message=log), RUNNING_FRONT]))
    assert found is not None and found.reason == "ModelLoadFailed"
    assert "model directory /mnt/model has no config.json" in found.message
    assert "exit code 1" in found.message and "3 restart(s)" in found.message
    assert "kubectl logs m-r1-abc -c triton --previous" in found.message


def test_a_failing_download_blames_the_model_uri_not_the_server() -> None:
    fetch = crashed("fetch-model", restarts=2, code=1, message="403 Forbidden: token has no access")
    found = pod_problem(pod(init=[fetch], containers=[waiting("triton", "PodInitializing"), RUNNING_FRONT]))
    assert found is not None and found.reason == "ModelFetchFailed"
    assert "403 Forbidden" in found.message and "spec.model.uri" in found.message


def test_a_missing_secret_is_a_config_error() -> None:
    found = pod_problem(pod(containers=[waiting("triton", "CreateContainerConfigError", 'secret "hf" not found')]))
    assert found is not None and found.reason == "ContainerConfigError" and 'secret "hf" not found' in found.message


def test_loading_pending_running_and_terminating_pods_are_no_problem() -> None:
    loading = {"name": "triton", "ready": False, "started": False, "restartCount": 0, "state": {"running": {}}}
    assert pod_problem(pod(containers=[loading, RUNNING_FRONT])) is None
    assert pod_problem(pod(containers=[waiting("triton", "ContainerCreating")])) is None
    assert pod_problem({"metadata": {"name": "p"}, "status": {"phase": "Pending"}}) is None
    ready_after_restart = {"name": "triton", "ready": True, "started": True, "restartCount": 1,
                           "state": {"running": {}}, "lastState": {"terminated": {"exitCode": 137}}}
    assert pod_problem(pod(containers=[ready_after_restart])) is None
    gone = pod(containers=[waiting("triton", "ErrImagePull")])
    gone["metadata"]["deletionTimestamp"] = "2026-11-23T00:00:00Z"
    assert pod_problem(gone) is None


def test_one_problem_per_reason() -> None:
    pods = [pod(f"p{i}", containers=[waiting("triton", "ImagePullBackOff")]) for i in range(3)]
    pods.append(pod("q", containers=[crashed("triton", restarts=1, code=1, message="boom")]))
    assert [p.reason for p in pod_problems(pods)] == ["ImagePullFailed", "ModelLoadFailed"]


def test_reconcile_reports_a_pull_failure_in_degraded_and_ready() -> None:
    kube = FakeKube()
    body = kube.put({
        "apiVersion": "serving.llmops.dev/v1alpha1", "kind": "LLMDeployment",
        "metadata": {"name": "m", "namespace": NS, "generation": 1},
        "spec": {"model": {"name": "tiny", "uri": "hf://HuggingFaceTB/SmolLM2-135M-Instruct"},
                 "runtime": {"backend": "vllm", "image": "ghcr.io/x/triton:nope"},
                 "resources": {"gpu": {"count": 1}}, "replicas": 1},
    })
    reconcile(kube, body)
    (deploy,) = kube.find("Deployment")
    labels = deploy["spec"]["selector"]["matchLabels"]
    assert labels[REVISION_LABEL]
    kube.put({"apiVersion": "v1", "kind": "Pod",
              "metadata": {"name": "m-x", "namespace": NS, "labels": dict(labels)},
              "status": {"phase": "Pending",
                         "containerStatuses": [waiting("triton", "ImagePullBackOff", "not found"), RUNNING_FRONT]}})
    deploy["status"] = {"replicas": 1, "readyReplicas": 0, "updatedReplicas": 1}
    kube.put(deploy)
    reconcile(kube, kube.get(api_version="serving.llmops.dev/v1alpha1", kind="LLMDeployment", namespace=NS,
                             name="m"))
    obj = kube.get(api_version="serving.llmops.dev/v1alpha1", kind="LLMDeployment", namespace=NS, name="m") or {}
    conds = {c["type"]: c for c in obj["status"]["conditions"]}
    assert conds["Degraded"]["status"] == "True" and conds["Degraded"]["reason"] == "ImagePullFailed"
    assert "ghcr.io/x/triton:nope" in conds["Degraded"]["message"]
    assert conds["Ready"]["status"] == "False" and conds["Ready"]["reason"] == "ImagePullFailed"
    events = [e for e in kube.find("Event") if e.get("reason") == "ImagePullFailed"]
    assert events, "a Warning Event names the problem"
