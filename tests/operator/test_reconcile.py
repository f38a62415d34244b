"""reconcile() against a recording in-memory client: what it writes, and that it writes nothing it need not."""

from __future__ import annotations

from typing import Any

from llm_operator._reconcile import NodeFacts, reconcile
from llm_operator.builders import REVISION_LABEL

from tests.operator.fake_kube import FakeKube

NS = "team-a"


def _llmd(kube: FakeKube, name: str = "m", *, generation: int = 1, **spec: Any) -> dict[str, Any]:
    body = {
        "model": {"name": "tiny", "uri": "hf://HuggingFaceTB/SmolLM2-135M-Instruct"},
        "runtime": {"backend": "vllm"},
        "resources": {"gpu": {"count": 1, "product": "NVIDIA-H100-80GB-HBM3"}},
        "replicas": 2,
        **spec,
    }
    current = kube.get(api_version="serving.llmops.dev/v1alpha1", kind="LLMDeployment", namespace=NS, name=name)
    obj = current or {"apiVersion": "serving.llmops.dev/v1alpha1", "kind": "LLMDeployment",
                      "metadata": {"name": name, "namespace": NS}}
    obj["spec"] = body
    obj["metadata"]["generation"] = generation
    return kube.put(obj)


def _again(kube: FakeKube, name: str = "m") -> Any:
    body = kube.get(api_version="serving.llmops.dev/v1alpha1", kind="LLMDeployment", namespace=NS, name=name)
    return reconcile(kube, body)


def _deployments(kube: FakeKube) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["labels"][REVISION_LABEL]: d for d in kube.find("Deployment")}


def _set_pods(kube: FakeKube, deploy: dict[str, Any], *, replicas: int, ready: int, terminating: int = 0,
              served: bool = True) -> None:
    """The Deployment controller's view of its pods, as it would write it into status."""
    deploy = kube.get(api_version="apps/v1", kind="Deployment", namespace=NS, name=deploy["metadata"]["name"]) or {}
    status = {"replicas": replicas, "readyReplicas": ready, "updatedReplicas": replicas}
    if served:
        status["terminatingReplicas"] = terminating
    deploy["status"] = status
    kube.put(deploy)


def _condition(kube: FakeKube, type_: str) -> dict[str, Any]:
    obj = kube.get(api_version="serving.llmops.dev/v1alpha1", kind="LLMDeployment", namespace=NS, name="m") or {}
    return next(c for c in obj["status"]["conditions"] if c["type"] == type_)


def _status(kube: FakeKube) -> dict[str, Any]:
    obj = kube.get(api_version="serving.llmops.dev/v1alpha1", kind="LLMDeployment", namespace=NS, name="m") or {}
    return dict(obj["status"])


def test_first_reconcile_creates_every_child_and_a_second_one_writes_nothing() -> None:
    kube = FakeKube()
    reconcile(kube, _llmd(kube))
    kinds = sorted({kind for verb, kind, _ in kube.log if verb == "apply"})
    assert kinds == ["ConfigMap", "Deployment", "PodDisruptionBudget", "Service"]
    assert ("apply/status", "LLMDeployment", "m") in kube.log
    writes = kube.writes
    outcome = _again(kube)
    assert kube.writes == writes, kube.log[writes:]
    assert outcome.writes == 0


def test_status_is_written_once_per_change_and_ready_follows_the_deployment() -> None:
    kube = FakeKube()
    reconcile(kube, _llmd(kube))
    assert _condition(kube, "Ready")["status"] == "False"
    _set_pods(kube, next(iter(_deployments(kube).values())), replicas=2, ready=2)
    before = kube.writes
    _again(kube)
    assert [w for w in kube.log[before:] if w[0] == "apply/status"] == [("apply/status", "LLMDeployment", "m")]
    assert _condition(kube, "Ready")["reason"] == "AllReplicasReady"
    assert ("create", "Event", "m") not in kube.log  # Event names are unique, not the object's name
    assert any(verb == "create" and kind == "Event" for verb, kind, _ in kube.log[before:])
    settled = kube.writes
    _again(kube)
    assert kube.writes == settled, kube.log[settled:]


def test_hand_edited_child_is_reapplied_once() -> None:
    kube = FakeKube()
    reconcile(kube, _llmd(kube))
    pdb = kube.find("PodDisruptionBudget")[0]
    pdb["spec"]["maxUnavailable"] = 7
    kube.put(pdb)
    before = kube.writes
    _again(kube)
    assert kube.log[before:] == [("apply", "PodDisruptionBudget", pdb["metadata"]["name"])]
    assert kube.find("PodDisruptionBudget")[0]["spec"]["maxUnavailable"] == 1


def test_spec_change_cuts_one_old_pod_and_the_new_revision_waits_for_its_gpu() -> None:
    kube = FakeKube()
    reconcile(kube, _llmd(kube))
    (old_rev, old), = _deployments(kube).items()
    _set_pods(kube, old, replicas=2, ready=2)
    _again(kube)

    _llmd(kube, generation=2, runtime={"backend": "vllm", "maxBatchSize": 32})
    _again(kube)
    deps = _deployments(kube)
    new_rev = next(r for r in deps if r != old_rev)
    assert deps[old_rev]["spec"]["replicas"] == 1  # one old pod goes, the other keeps serving
    assert deps[new_rev]["spec"]["replicas"] == 0  # its GPU is not free yet
    assert _condition(kube, "Progressing")["status"] == "True"

    # The cut pod is terminating and still holds its GPU: no child changes (status reports the new count).
    _set_pods(kube, deps[old_rev], replicas=1, ready=1, terminating=1)
    before = kube.writes
    _again(kube)
    assert _deployments(kube)[new_rev]["spec"]["replicas"] == 0
    assert [w for w in kube.log[before:] if w[1] != "LLMDeployment"] == []
    _again(kube)
    assert kube.writes == before + 1

    # Gone: the new revision gets one pod, and the last old pod stays until that one is ready.
    _set_pods(kube, deps[old_rev], replicas=1, ready=1, terminating=0)
    _again(kube)
    assert _deployments(kube)[new_rev]["spec"]["replicas"] == 1
    assert _deployments(kube)[old_rev]["spec"]["replicas"] == 1
    _set_pods(kube, _deployments(kube)[new_rev], replicas=1, ready=0)
    _again(kube)
    assert _deployments(kube)[old_rev]["spec"]["replicas"] == 1
    _set_pods(kube, _deployments(kube)[new_rev], replicas=1, ready=1)
    _again(kube)
    assert _deployments(kube)[old_rev]["spec"]["replicas"] == 0


def test_without_terminating_replicas_in_status_the_pods_are_counted() -> None:
    kube = FakeKube()
    reconcile(kube, _llmd(kube))
    (old_rev, old), = _deployments(kube).items()
    _set_pods(kube, old, replicas=2, ready=2, served=False)
    _llmd(kube, generation=2, runtime={"backend": "vllm", "maxBatchSize": 32})
    _again(kube)
    _set_pods(kube, old, replicas=1, ready=1, served=False)
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "m-old-1", "namespace": NS, "deletionTimestamp": "2026-11-23T00:00:00Z",
                        "labels": old["spec"]["template"]["metadata"]["labels"]}}
    kube.put(pod)
    _again(kube)
    new_rev = next(r for r in _deployments(kube) if r != old_rev)
    assert _deployments(kube)[new_rev]["spec"]["replicas"] == 0
    kube.objects.pop(("v1", "Pod", NS, "m-old-1"))
    _again(kube)
    assert _deployments(kube)[new_rev]["spec"]["replicas"] == 1


AUTOSCALING = {"minReplicas": 1, "maxReplicas": 6, "metrics": {"queueDepth": 4}}


def test_autoscaling_creates_an_hpa_reads_its_decisions_and_never_writes_spec() -> None:
    kube = FakeKube()
    reconcile(kube, _llmd(kube, autoscaling=AUTOSCALING))
    (hpa,) = kube.find("HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["kind"] == "LLMDeployment"
    assert _condition(kube, "ScalingActive")["reason"] == "AutoscalerStarting"
    # The HPA scales the LLMDeployment through /scale (spec.replicas) and reports why in its status.
    obj = kube.get(api_version="serving.llmops.dev/v1alpha1", kind="LLMDeployment", namespace=NS, name="m") or {}
    obj["spec"]["replicas"] = 4
    kube.put(obj)
    hpa["status"] = {"currentReplicas": 2, "desiredReplicas": 4, "lastScaleTime": "2026-11-23T05:00:00Z",
                     "conditions": [{"type": "ScalingActive", "status": "True", "reason": "ValidMetricFound"}],
                     "currentMetrics": [{"type": "Pods", "pods": {"metric": {"name": "llmops_queue_depth"},
                                                                  "current": {"averageValue": "9"}}}]}
    kube.put(hpa)
    before = kube.writes
    _again(kube)
    assert _deployments(kube).popitem()[1]["spec"]["replicas"] == 4
    status = (kube.get(api_version="serving.llmops.dev/v1alpha1", kind="LLMDeployment", namespace=NS,
                       name="m") or {})["status"]["autoscaling"]
    assert status["desiredReplicas"] == 4 and status["metrics"][0]["current"] == 9.0
    assert _condition(kube, "ScalingActive")["reason"] == "ValidMetricFound"
    assert not [w for w in kube.log[before:] if w[1] == "HorizontalPodAutoscaler"], "the HPA was rewritten"
    assert all(not (w[1] == "LLMDeployment" and w[0] == "apply") for w in kube.log), "the operator wrote spec"
    settled = kube.writes
    _again(kube)
    assert kube.writes == settled, kube.log[settled:]


def test_turning_autoscaling_off_deletes_the_hpa_and_keeps_the_replica_count() -> None:
    kube = FakeKube()
    reconcile(kube, _llmd(kube, autoscaling=AUTOSCALING))
    obj = kube.get(api_version="serving.llmops.dev/v1alpha1", kind="LLMDeployment", namespace=NS, name="m") or {}
    obj["spec"]["replicas"] = 5  # where the HPA left it
    kube.put(obj)
    _again(kube)
    # The user removes the autoscaling block (and, as docs/autoscaling.md says, leaves replicas alone).
    obj = kube.get(api_version="serving.llmops.dev/v1alpha1", kind="LLMDeployment", namespace=NS, name="m") or {}
    del obj["spec"]["autoscaling"]
    obj["metadata"]["generation"] = 2
    kube.put(obj)
    _again(kube)
    assert kube.find("HorizontalPodAutoscaler") == []
    assert _deployments(kube).popitem()[1]["spec"]["replicas"] == 5
    status = (kube.get(api_version="serving.llmops.dev/v1alpha1", kind="LLMDeployment", namespace=NS,
                       name="m") or {})["status"]
    assert "autoscaling" not in status
    assert {c["type"] for c in status["conditions"]} == {"Ready", "Progressing", "Degraded"}


def test_a_recreated_object_adopts_nothing_of_its_deleted_namesake() -> None:
    """The garbage collector has not yet removed the children of a deleted LLMDeployment of the same name: the
    new one deletes them (uid precondition) instead of applying over them, then builds its own."""
    kube = FakeKube()
    old = _llmd(kube)
    old["metadata"]["uid"] = "uid-old"
    kube.put(old)
    reconcile(kube, old)
    owned = ("ConfigMap", "Deployment", "Service", "PodDisruptionBudget")
    stale = {(c["kind"], c["metadata"]["name"]) for c in kube.objects.values() if c["kind"] in owned}
    assert {k for k, _ in stale} == set(owned)
    for obj in kube.objects.values():
        if obj["kind"] in owned:
            obj["metadata"]["uid"] = f"child-of-old-{obj['kind']}"
            assert obj["metadata"]["ownerReferences"][0]["uid"] == "uid-old"
    new = kube.get(api_version="serving.llmops.dev/v1alpha1", kind="LLMDeployment", namespace=NS, name="m") or {}
    new["metadata"]["uid"] = "uid-new"
    kube.put(new)
    before = len(kube.log)
    reconcile(kube, new)
    first = kube.log[before:]
    assert not [w for w in first if w[0] == "apply" and (w[1], w[2]) in stale], first
    assert {(w[1], w[2]) for w in first if w[0] == "delete"} == stale, first
    assert _condition(kube, "Degraded")["reason"] == "StaleChildren"
    _again(kube)
    children = [c for c in kube.objects.values() if c["kind"] in owned]
    assert children and all(c["metadata"]["ownerReferences"][0]["uid"] == "uid-new" for c in children), children


def test_a_child_name_taken_by_another_controller_is_a_conflict_not_a_takeover() -> None:
    kube = FakeKube()
    kube.put({"apiVersion": "v1", "kind": "Service", "metadata": {
        "name": "m", "namespace": NS, "uid": "svc",
        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": "web-uid",
                             "controller": True}]}, "spec": {"ports": []}})
    body = _llmd(kube)
    body["metadata"]["uid"] = "uid-m"
    kube.put(body)
    reconcile(kube, body)
    assert ("apply", "Service", "m") not in kube.log and ("delete", "Service", "m") not in kube.log
    degraded = _condition(kube, "Degraded")
    assert degraded["reason"] == "NameConflict" and "Deployment web" in degraded["message"]


def test_a_stored_spec_with_several_mistakes_reports_every_one() -> None:
    """An object stored under an older CRD (no schema check) with two mistakes: both fields are named in the
    Degraded message, not just the first, as the API server reports all of its own."""
    kube = FakeKube()
    body = _llmd(kube)
    body["spec"]["runtime"]["backend"] = "tgi"
    body["spec"]["replicas"] = -3
    kube.put(body)
    outcome = reconcile(kube, body)
    assert outcome.reason == "InvalidSpec"
    message = _condition(kube, "Degraded")["message"]
    assert "spec.runtime.backend" in message and "spec.replicas" in message, message
    assert not kube.find("Deployment")


def _full_pool(*, on_node: int, pending: int = 0) -> NodeFacts:
    """One H100 node with 2 GPUs; the pod index shows `on_node` of this model's pods bound to it and `pending`
    created but not bound."""
    node = {"name": "gpu-0", "product": "NVIDIA-H100-80GB-HBM3", "allocatable": {"nvidia.com/gpu": "2"}}
    pod = {"namespace": NS, "instance": "m", "gpus": 1}
    return NodeFacts.from_nodes([node], pods=[("gpu-0", pod)] * on_node + [("", pod)] * pending)


def test_pods_a_deployment_is_meant_to_have_but_the_index_does_not_show_yet_are_not_room_to_surge() -> None:
    kube = FakeKube()
    reconcile(kube, _llmd(kube), nodes=_full_pool(on_node=2))
    (old_rev, old), = _deployments(kube).items()
    _set_pods(kube, old, replicas=2, ready=2)
    _again(kube)
    _llmd(kube, generation=2, runtime={"backend": "vllm", "maxBatchSize": 32})
    _again(kube)  # no node facts: nothing is room, one old pod is cut
    _set_pods(kube, _deployments(kube)[old_rev], replicas=1, ready=1)
    body = kube.get(api_version="serving.llmops.dev/v1alpha1", kind="LLMDeployment", namespace=NS, name="m")
    reconcile(kube, body, nodes=_full_pool(on_node=1))  # the cut pod's slot: the new revision gets 1 pod
    new_rev = next(r for r in _deployments(kube) if r != old_rev)
    assert _deployments(kube)[new_rev]["spec"]["replicas"] == 1

    # A pass before the new pod shows up in the pod index sees one free GPU. It is the new pod's, not room for a
    # surge: the old pod must stay, the new revision must not ask for a second GPU, and the mode stays Swap.
    body = kube.get(api_version="serving.llmops.dev/v1alpha1", kind="LLMDeployment", namespace=NS, name="m")
    reconcile(kube, body, nodes=_full_pool(on_node=1))
    deps = _deployments(kube)
    assert (deps[old_rev]["spec"]["replicas"], deps[new_rev]["spec"]["replicas"]) == (1, 1)
    assert _status(kube)["rollout"]["surge"] == "Swap"
    assert "not bound yet" in _status(kube)["rollout"]["surgeReason"]

    # Once the index shows it (pending, then bound), the answer is the same.
    for facts in (_full_pool(on_node=1, pending=1), _full_pool(on_node=2)):
        body = kube.get(api_version="serving.llmops.dev/v1alpha1", kind="LLMDeployment", namespace=NS, name="m")
        reconcile(kube, body, nodes=facts)
        deps = _deployments(kube)
        assert (deps[old_rev]["spec"]["replicas"], deps[new_rev]["spec"]["replicas"]) == (1, 1)
