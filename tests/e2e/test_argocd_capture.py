"""Argo CD's view of real LLMDeployments: objects driven into every state on the real local cluster (the operator,
kwok pods, the metrics test bed for the canaries), each checked against the Argo CD customizations in Argo CD's Lua
VM (gitops/argocd/harness), and Argo CD's actions carried out on the live objects as its API server does (run the
action script on the live object, send the JSON merge patch from the live object to the result) with the operator
reacting to them.

With ARGOCD_CAPTURE=1 the objects are also written to gitops/argocd/resource_customizations/serving.llmops.dev/
LLMDeployment/testdata/ (and actions/testdata/ for the action inputs), without managedFields and kubectl's
last-applied-configuration and otherwise untouched; then `python -m llm_operator.dev.argocd regenerate` rebuilds
health_test.yaml and actions/action_test.yaml from them:

    ARGOCD_CAPTURE=1 .venv/bin/pytest -p no:xdist tests/e2e/test_argocd_capture.py
    .venv/bin/python -m llm_operator.dev.argocd regenerate
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from llm_operator.dev import argocd
from llm_operator.rollout.requests import REQUEST_ANNOTATION

from e2e.pytest_plugin import CRD_FILE, Cluster, Operator, wait_for
from tests.e2e.test_claims import _relaxed
from tests.e2e.test_operator import apply, condition, get, llmd

pytestmark = pytest.mark.cluster

CAPTURE = os.environ.get("ARGOCD_CAPTURE") == "1"
H100 = "NVIDIA-H100-80GB-HBM3"
A100 = "NVIDIA-A100-SXM4-80GB"
IMAGE = "nvcr.io/nvidia/tritonserver:25.01-vllm-python-py3"
INTERVAL = 5


@pytest.fixture(scope="session")
def harness() -> argocd.Harness:
    return argocd.Harness()


class Captures:
    """Checks each captured object against the customizations at once, and writes it in capture mode."""

    def __init__(self, harness: argocd.Harness) -> None:
        self.harness = harness
        self.names: list[str] = []

    def take(self, name: str, obj: dict[str, Any], *, action_input: bool = False,
             message: tuple[str, ...] = ()) -> dict[str, Any]:
        obj = argocd.strip(obj)
        want = argocd.expected_status(Path(name + ".yaml"))
        for open_libs in (False, True):
            health = self.harness.health(obj, open_libs=open_libs)
            assert health["status"] == want, (name, open_libs, health, obj.get("status"))
            for fragment in message:
                assert fragment in health["message"], (name, fragment, health)
        for open_libs in (False, True):
            assert self.harness.discovery(obj, open_libs=open_libs) == argocd.expected_discovery(obj), name
        for action in argocd.ACTIONS:
            refused = argocd.refusal(action, obj)
            try:
                returned, patch = self.harness.action(obj, action)
            except argocd.ActionError as exc:
                why = str(exc)
                assert refused is not None, f"{action} on {name} refused by Lua ({why}) but applies"
                continue
            assert refused is None, f"{action} on {name} ran in Lua but kubectl llm refuses it: {refused}"
            _assert_annotations_only(patch)
            expected = argocd.expected_after(action, obj)
            if action == "restart":
                stamp = returned["metadata"]["annotations"][argocd.RESTARTED_AT]
                assert time.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ"), stamp
                returned["metadata"]["annotations"][argocd.RESTARTED_AT] = argocd.RESTARTED_AT_PLACEHOLDER
            assert json.loads(json.dumps(returned)) == json.loads(json.dumps(expected)), (name, action)
        self.names.append(name)
        if CAPTURE:
            directory = argocd.customization_dir()
            text = yaml.safe_dump(obj, sort_keys=False, width=120)
            (directory / "testdata" / f"{name}.yaml").write_text(text)
            if action_input:
                (directory / "actions" / "testdata" / f"{name}.yaml").write_text(text)
        return obj


@pytest.fixture
def captures(harness: argocd.Harness) -> Captures:
    return Captures(harness)


def _assert_annotations_only(patch: dict[str, Any]) -> None:
    assert set(patch) == {"metadata"} and set(patch["metadata"]) == {"annotations"}, patch


def argocd_action(harness: argocd.Harness, cluster: Cluster, namespace: str, name: str, action: str
                  ) -> dict[str, Any]:
    """What Argo CD's API server does for a resource action (RunResourceActionV2): read the live object, run the
    action script on it, send the JSON merge patch from live to result. Returns the annotations it set."""
    live = get(cluster, namespace, "llmd", name)
    assert live is not None
    _, patch = harness.action(live, action)
    _assert_annotations_only(patch)
    cluster.kubectl("patch", "llmd", name, "-n", namespace, "--type=merge", "-p", json.dumps(patch))
    return dict(patch["metadata"]["annotations"])


def _obj(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    obj = get(cluster, namespace, "llmd", name)
    assert obj is not None
    return obj


def _current(obj: dict[str, Any]) -> bool:
    return (obj.get("status") or {}).get("observedGeneration") == obj["metadata"]["generation"]


def _until(cluster: Cluster, namespace: str, name: str, what: str, check: Callable[[dict[str, Any]], bool],
           timeout: float = 90) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    def probe() -> dict[str, Any] | None:
        obj = get(cluster, namespace, "llmd", name)
        seen["status"] = (obj or {}).get("status")
        return obj if obj is not None and _current(obj) and check(obj) else None

    try:
        result: dict[str, Any] = wait_for(probe, timeout=timeout, interval=0.2, what=f"{name}: {what}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nlast status: {json.dumps(seen.get('status'))[:3000]}") from None
    return result


def _cond(type_: str, status: str, reason: str | None = None) -> Callable[[dict[str, Any]], bool]:
    def check(obj: dict[str, Any]) -> bool:
        c = condition(obj, type_)
        return c.get("status") == status and (reason is None or c.get("reason") == reason)

    return check


def _all(*checks: Callable[[dict[str, Any]], bool]) -> Callable[[dict[str, Any]], bool]:
    return lambda obj: all(check(obj) for check in checks)


def _rollout(**want: Any) -> Callable[[dict[str, Any]], bool]:
    def check(obj: dict[str, Any]) -> bool:
        r = (obj.get("status") or {}).get("rollout") or {}
        return all(r.get(k) == v for k, v in want.items())

    return check


def _template_annotations(cluster: Cluster, namespace: str, name: str, revision: str) -> dict[str, str]:
    dep = get(cluster, namespace, "deployment", f"{name}-{revision}") or {}
    return dict(((dep.get("spec") or {}).get("template") or {}).get("metadata", {}).get("annotations") or {})


# ------------------------------------------------------------------------------------------ rolling and degraded


def test_rolling_update_states_and_the_restart_action(cluster: Cluster, operator: Operator, namespace: str,
                                                      captures: Captures, harness: argocd.Harness) -> None:
    slow = {"kwok.llmops.dev/ready-delay": "5s"}
    apply(cluster, namespace, llmd("ready", replicas=2, podAnnotations=slow))
    ready = _until(cluster, namespace, "ready", "Ready", _cond("Ready", "True", "AllReplicasReady"))
    captures.take("healthy_ready", ready, action_input=True, message=("2/2 replicas ready",))

    with operator.stopped():
        apply(cluster, namespace, llmd("fresh", replicas=1, podAnnotations={"kwok.llmops.dev/ready-delay": "600s"}))
        fresh = _obj(cluster, namespace, "fresh")
        captures.take("progressing_noStatus", fresh, message=("Waiting for the operator",))
        cluster.kubectl("patch", "llmd", "ready", "-n", namespace, "--type=merge", "-p", '{"spec":{"replicas":3}}')
        stale = _obj(cluster, namespace, "ready")
        assert stale["metadata"]["generation"] == 2 and stale["status"]["observedGeneration"] == 1
        captures.take("progressing_newGeneration", stale, message=("generation 2",))

    loading = _until(cluster, namespace, "fresh", "ReplicasNotReady", _cond("Ready", "False", "ReplicasNotReady"))
    captures.take("progressing_replicasNotReady", loading, message=("0/1 replicas ready",))
    _until(cluster, namespace, "ready", "3 ready", _cond("Ready", "True", "AllReplicasReady"))

    # A new image: the RollingUpdate replaces the pods one by one (each new one loads for 5 s).
    doc = llmd("ready", replicas=3, podAnnotations=slow, runtime={"backend": "vllm", "image": IMAGE + "-v2"})
    apply(cluster, namespace, doc)
    rolling = _until(cluster, namespace, "ready", "rolling", _cond("Progressing", "True", "RolloutInProgress"))
    captures.take("progressing_rollingUpdate", rolling, message=("RolloutInProgress",))
    done = _until(cluster, namespace, "ready", "rolled out", lambda o: _cond("Progressing", "False")(o)
                  and _cond("Ready", "True")(o), timeout=120)

    # Argo CD's restart action: a new revision whose pods carry the annotation, rolled out like any other.
    before = done["status"]["revision"]
    stamp = argocd_action(harness, cluster, namespace, "ready", "restart")[argocd.RESTARTED_AT]
    restarted = _until(cluster, namespace, "ready", "a new revision", lambda o: o["status"].get("revision") != before)
    revision = restarted["status"]["revision"]
    assert _template_annotations(cluster, namespace, "ready", revision)[argocd.RESTARTED_AT] == stamp
    assert (restarted["spec"] == done["spec"]), "a restart leaves the spec alone (no GitOps drift)"
    _until(cluster, namespace, "ready", "restart rolled out", lambda o: _cond("Progressing", "False")(o)
           and _cond("Ready", "True")(o) and o["status"].get("revision") == revision, timeout=120)
    wait_for(lambda: not get(cluster, namespace, "deployment", f"ready-{before}"), timeout=60,
             what="the old revision retired")


DEGRADED: list[tuple[str, dict[str, Any], str]] = [
    ("degraded_gpuProductUnavailable", {"resources": {"gpu": {"count": 1, "product": "NVIDIA-B200"}}},
     "GPUProductUnavailable"),
    ("degraded_secretNotFound", {"model": {"name": "tiny", "uri": "s3://bucket/tiny", "secretRef": {"name": "s3"}}},
     "SecretNotFound"),
    ("degraded_pvcNotFound", {"model": {"name": "tiny", "pvc": {"claimName": "weights", "path": "tiny"}}},
     "PVCNotFound"),
    ("degraded_migProfileUnavailable", {"resources": {"mig": {"profile": "2g.20gb", "count": 1}}},
     "MIGProfileUnavailable"),
    ("degraded_unschedulable", {"resources": {"gpu": {"count": 16, "product": H100}},
                                "runtime": {"backend": "vllm", "tensorParallelSize": 16}}, "Unschedulable"),
    ("degraded_applyFailed", {"placement": {"affinity": {"nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchExpressions": [
            {"key": "topology.kubernetes.io/zone", "operator": "Near", "values": ["a"]}]}]}}}}}, "ApplyFailed"),
    # Scaling limited by GPUs: the only A100 node has 6, two 3-GPU replicas fit, the HPA's minimum is 3.
    ("degraded_scalingLimited", {"replicas": 3, "resources": {"gpu": {"count": 3, "product": A100}},
                                 "autoscaling": {"minReplicas": 3, "maxReplicas": 4, "metrics": {"queueDepth": 16}}},
     "Unschedulable"),
]


def test_degraded_states(cluster: Cluster, operator: Operator, namespace: str, captures: Captures) -> None:
    """Every reason at once, one object each, in one namespace (one namespace deletion to wait for, not seven)."""
    objects = {name: f"broken-{i}" for i, (name, _, _) in enumerate(DEGRADED)}
    apply(cluster, namespace, *(llmd(objects[name], **spec) for name, spec, _ in DEGRADED))
    for name, _, reason in DEGRADED:
        limited = name == "degraded_scalingLimited"
        checks = [_cond("Degraded", "True", reason)] + ([_cond("ScalingLimited", "True", "InsufficientGPU")]
                                                        if limited else [])
        obj = _until(cluster, namespace, objects[name], f"Degraded {reason}", _all(*checks))
        captures.take(name, obj, message=(reason, "InsufficientGPU") if limited else (reason,))


def test_an_object_stored_under_an_older_crd_is_degraded(cluster: Cluster, operator: Operator, namespace: str,
                                                          captures: Captures) -> None:
    real = yaml.safe_load(CRD_FILE.read_text())

    def set_crd(crd: dict[str, Any]) -> None:
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", input=yaml.safe_dump(crd))

    def admitted() -> bool:
        probe = llmd("probe", runtime={"backend": "bogus"})
        return cluster.kubectl("create", "--dry-run=server", "-n", namespace, "-f", "-", input=yaml.safe_dump(probe),
                               check=False).returncode == 0

    with operator.stopped():
        try:
            set_crd(_relaxed(real))
            wait_for(admitted, timeout=30, what="the relaxed CRD")
            apply(cluster, namespace, llmd("stale", runtime={"backend": "bogus"}))
        finally:
            set_crd(real)
            wait_for(lambda: not admitted(), timeout=30, what="the real CRD again")
    obj = _until(cluster, namespace, "stale", "InvalidSpec", _cond("Degraded", "True", "InvalidSpec"))
    captures.take("degraded_invalidSpec", obj, message=("InvalidSpec", "spec.runtime.backend"))


# ------------------------------------------------------------------------------------------ canaries


@pytest.fixture
def traffic(cluster: Cluster) -> Any:
    from llm_operator.dev.traffic.client import TrafficClient

    assert cluster.traffic_url, "the session cluster runs without the metrics test bed"
    return TrafficClient(cluster.traffic_url)


def _canary(name: str, cluster: Cluster, *, image: str = IMAGE, route: str | None = None,
            prometheus: str | None = None, ready_delay: str = "6s") -> dict[str, Any]:
    canary: dict[str, Any] = {
        "steps": [{"setWeight": 25}, {"pause": {}}, {"setWeight": 50}, {"pause": {}}],
        "analysis": {"interval": f"{INTERVAL}s", "failureLimit": 1, "inconclusiveLimit": 20,
                     "prometheus": {"address": prometheus or cluster.prometheus_url, "timeout": "3s"},
                     "checks": [{"metric": "errorRate", "max": 0.05}]},
    }
    if route:
        canary["trafficRouting"] = {"gatewayAPI": {"httpRoute": route}}
    return llmd(name, replicas=2, runtime={"backend": "vllm", "image": image},
                resources={"gpu": {"count": 1, "product": H100}},
                podAnnotations={"kwok.llmops.dev/ready-delay": ready_delay},
                rollout={"strategy": "Canary", "canary": canary})


@pytest.fixture
def loaded(cluster: Cluster, namespace: str, traffic: Any) -> Iterator[Callable[[str], None]]:
    names: list[str] = []

    def load(name: str) -> None:
        traffic.set_load(namespace=namespace, name=name, rps=10, output_tokens=64)
        names.append(name)

    yield load
    for name in names:
        traffic.set_load(namespace=namespace, name=name, rps=0)


def test_canary_states_and_every_argocd_action(cluster: Cluster, operator: Operator, namespace: str,
                                               captures: Captures, harness: argocd.Harness,
                                               loaded: Callable[[str], None]) -> None:
    chat, faulty = _canary("chat", cluster), _canary("faulty", cluster, ready_delay="2s")
    apply(cluster, namespace, chat, faulty)
    for name in ("chat", "faulty"):
        _until(cluster, namespace, name, "Ready", _cond("Ready", "True", "AllReplicasReady"))
        loaded(name)
    stable = _until(cluster, namespace, "chat", "stable", _rollout(phase="Healthy"))
    captures.take("healthy_canaryStable", stable, action_input=True)
    _until(cluster, namespace, "faulty", "stable", _rollout(phase="Healthy"))

    # A faulty revision: the analysis rolls it back by itself (meanwhile chat goes on below).
    faulty["spec"]["runtime"]["image"] = IMAGE + "-faulty"
    apply(cluster, namespace, faulty)

    # Paused between rollouts: nothing moves yet, the next rollout waits.
    annotations = argocd_action(harness, cluster, namespace, "chat", "pause")
    assert annotations == {"serving.llmops.dev/rollout-paused": "true"}
    held = _until(cluster, namespace, "chat", "pause annotation",
                  lambda o: (o["metadata"].get("annotations") or {}).get("serving.llmops.dev/rollout-paused") == "true")
    captures.take("healthy_canaryPausedBetweenRollouts", held, action_input=True, message=("rollouts paused",))
    chat["spec"]["runtime"]["image"] = IMAGE + "-v2"
    apply(cluster, namespace, chat)
    waiting = _until(cluster, namespace, "chat", "held by the user pause",
                     _rollout(phase="Paused", pausedReason="UserPause"))
    assert waiting.get("status", {}).get("rollout", {}).get("canaryRevision")
    captures.take("suspended_userPause", waiting, action_input=True, message=("UserPause",))

    argocd_action(harness, cluster, namespace, "chat", "resume")
    moving = _until(cluster, namespace, "chat", "setWeight in progress", _rollout(phase="Progressing", stepIndex=0))
    captures.take("progressing_canarySetWeight", moving, action_input=True)
    paused = _until(cluster, namespace, "chat", "the first pause", _rollout(stepIndex=1, pausedReason="PauseStep"))
    captures.take("suspended_pauseStep", paused, action_input=True, message=("PauseStep",))
    canary_revision = paused["status"]["rollout"]["canaryRevision"]

    value = argocd_action(harness, cluster, namespace, "chat", "promote")[REQUEST_ANNOTATION]
    assert value.startswith("promote/argocd-rv")
    second = _until(cluster, namespace, "chat", "the second pause", _rollout(stepIndex=3, pausedReason="PauseStep"))
    assert second["status"]["rollout"]["lastRequest"] == value, "the operator carried out Argo CD's request"

    faulty_obj = _until(cluster, namespace, "faulty", "rolled back by the analysis",
                        _cond("Degraded", "True", "CanaryAnalysisFailed"), timeout=180)
    captures.take("degraded_canaryAnalysisFailed", faulty_obj, action_input=True,
                  message=("CanaryAnalysisFailed", "errorRate canary"))

    # Prometheus goes away: the canary holds and says why.
    dead = {"spec": {"rollout": {"canary": {"analysis": {"prometheus": {"address": "http://127.0.0.1:9"}}}}}}
    cluster.kubectl("patch", "llmd", "chat", "-n", namespace, "--type=merge", "-p", json.dumps(dead))
    unreachable = _until(cluster, namespace, "chat", "PrometheusUnreachable",
                         _rollout(phase="Paused", pausedReason="PrometheusUnreachable"), timeout=60)
    captures.take("suspended_prometheusUnreachable", unreachable, message=("PrometheusUnreachable", "127.0.0.1:9"))
    back = {"spec": {"rollout": {"canary": {"analysis": {"prometheus": {"address": cluster.prometheus_url}}}}}}
    cluster.kubectl("patch", "llmd", "chat", "-n", namespace, "--type=merge", "-p", json.dumps(back))

    argocd_action(harness, cluster, namespace, "chat", "abort")
    aborted = _until(cluster, namespace, "chat", "aborted", lambda o: _rollout(aborted=True)(o)
                     and _cond("Degraded", "True", "RolloutAborted")(o))
    captures.take("degraded_rolloutAborted", aborted, action_input=True, message=("RolloutAborted",))

    argocd_action(harness, cluster, namespace, "chat", "retry")
    _until(cluster, namespace, "chat", "retried from the first pause",
           lambda o: not (o["status"].get("rollout") or {}).get("aborted")
           and _rollout(stepIndex=1, pausedReason="PauseStep")(o) and _cond("Degraded", "False")(o), timeout=120)

    argocd_action(harness, cluster, namespace, "chat", "promote-full")
    promoted = _until(cluster, namespace, "chat", "fully promoted",
                      lambda o: _rollout(phase="Healthy", stableRevision=canary_revision)(o)
                      and _cond("Ready", "True")(o) and _cond("Progressing", "False")(o), timeout=120)
    captures.take("healthy_canaryPromoted", promoted, action_input=True)

    # restart on a Canary object: a new revision that goes through the steps like any other.
    stamp = argocd_action(harness, cluster, namespace, "chat", "restart")[argocd.RESTARTED_AT]
    restarted = _until(cluster, namespace, "chat", "a canary of the restarted revision",
                       lambda o: (o["status"].get("rollout") or {}).get("canaryRevision") not in (None,
                                                                                                  canary_revision))
    new_revision = restarted["status"]["rollout"]["canaryRevision"]
    wait_for(lambda: _template_annotations(cluster, namespace, "chat", new_revision).get(argocd.RESTARTED_AT)
             == stamp, timeout=30, what="the restarted revision's pod template")
    argocd_action(harness, cluster, namespace, "chat", "promote-full")
    _until(cluster, namespace, "chat", "restart promoted", _rollout(phase="Healthy", stableRevision=new_revision),
           timeout=120)


def test_a_canary_whose_route_is_missing_is_degraded(cluster: Cluster, operator: Operator, namespace: str,
                                                     captures: Captures, loaded: Callable[[str], None]) -> None:
    doc = _canary("routed", cluster, route="missing-route", ready_delay="2s")
    apply(cluster, namespace, doc)
    _until(cluster, namespace, "routed", "Ready", _cond("Ready", "True"))
    loaded("routed")
    doc["spec"]["runtime"]["image"] = IMAGE + "-v2"
    apply(cluster, namespace, doc)
    obj = _until(cluster, namespace, "routed", "TrafficRoutingFailed",
                 _cond("Degraded", "True", "TrafficRoutingFailed"))
    captures.take("degraded_trafficRoutingFailed", obj, action_input=True,
                  message=("TrafficRoutingFailed", "missing-route"))
