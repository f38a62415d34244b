"""`kubectl llm` (the `kubectl-llm` console script) against the real local cluster.

The plugin only reads an LLMDeployment, its Deployments and its status, and writes annotations. These tests write
`status.rollout` themselves through the status subresource, so they check what the plugin prints and writes, not
the operator's canary logic. The operator applies its whole status on every pass and would replace a hand-written
one, and it watches every namespace (`kopf run -A`), so no name or namespace is out of its reach: while these tests
run, the session's in-process operator (if a test before started it) is stopped, as `operator_process` does.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from llm_operator.builders import REVISION_LABEL
from llm_operator.kubectl_plugin import FIELD_MANAGER
from llm_operator.rollout.requests import PAUSED_ANNOTATION, REQUEST_ANNOTATION

from e2e import pytest_plugin
from e2e.pytest_plugin import Cluster, wait_for
from tests.e2e.test_operator import apply, get, llmd

pytestmark = pytest.mark.cluster

PLUGIN = Path(sys.executable).with_name("kubectl-llm")
STABLE, CANARY = "aaaa1111", "bbbb2222"
REQUEST_VALUE = r"[0-9]{8}T[0-9]{6}Z-[0-9a-f]{6}"
NOW = "2026-11-23T07:30:00Z"
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


@pytest.fixture(scope="module")
def served_crd(cluster: Cluster, crd: str) -> str:
    """The CRD generated from the models this checkout runs. The same as crds/ once that file is regenerated;
    until then the session's CRD could lack status.rollout, and the API server would prune what the tests write."""
    from llm_operator._crd import crd_yaml

    text = crd_yaml()
    if pytest_plugin.CRD_FILE.read_text() != text:
        cluster.kubectl("apply", "--server-side", "-f", "-", input=text)
        cluster.kubectl("wait", "--for=condition=Established", f"crd/{crd}", "--timeout=60s")
    return crd


@pytest.fixture(scope="module")
def quiet(served_crd: str) -> Iterator[None]:
    """No operator reconciles during these tests (see the module docstring); stopped once for the module."""
    running = pytest_plugin._in_process
    with running.stopped() if running is not None else contextlib.nullcontext():
        yield


def plugin(cluster: Cluster, *args: str, kubeconfig: bool = True, env: dict[str, str] | None = None,
           check: int | None = 0) -> subprocess.CompletedProcess[str]:
    assert PLUGIN.exists(), f"{PLUGIN} is missing: run `.venv/bin/pip install -e . --no-deps` to install it"
    command = [str(PLUGIN), *args] + ([f"--kubeconfig={cluster.kubeconfig}"] if kubeconfig else [])
    proc = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False,
                          env={**os.environ, **(env or {})})
    if check is not None:
        assert proc.returncode == check, f"{command} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc


def canary_llmd(name: str) -> dict[str, Any]:
    return llmd(name, replicas=4, rollout={"strategy": "Canary", "canary": {
        "steps": [{"setWeight": 10}, {"pause": {"duration": "10m"}}, {"setWeight": 50}, {"pause": {}}],
        "analysis": {"interval": "1m", "failureLimit": 2, "inconclusiveLimit": 3,
                     "prometheus": {"address": "http://prometheus.monitoring:9090"},
                     "checks": [{"metric": "ttftP95", "maxRatioToStable": 1.3},
                                {"metric": "errorRate", "max": 0.01}]}}})


def deployment(name: str, revision: str, replicas: int, *, schedulable: bool = True) -> dict[str, Any]:
    """A Deployment labelled as the operator labels a revision's. Its pods land on the untainted CPU nodes and
    are Ready at once (kwok), or stay Pending with a node selector nothing matches."""
    labels = {"app.kubernetes.io/instance": name, REVISION_LABEL: revision}
    pod_spec: dict[str, Any] = {"containers": [{"name": "triton", "image": "registry.k8s.io/pause:3.10"}]}
    if not schedulable:
        pod_spec["nodeSelector"] = {"llmops.dev/no-such-pool": "true"}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": f"{name}-{revision}",
                                                                       "labels": labels},
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels}, "spec": pod_spec}}}


def canary_status(generation: int, **rollout: Any) -> dict[str, Any]:
    """A status as the operator writes it mid-canary: paused at step 1 (pause 10m) at weight 10."""
    def cond(type_: str, status: str, reason: str, message: str) -> dict[str, Any]:
        return {"type": type_, "status": status, "reason": reason, "message": message,
                "lastTransitionTime": NOW, "observedGeneration": generation}

    body: dict[str, Any] = {
        "strategy": "Canary", "phase": "Paused", "message": "step 1 of 4: pause 10m at weight 10",
        "stableRevision": STABLE, "canaryRevision": CANARY, "stepIndex": 1, "stepStartedAt": NOW, "weight": 10,
        "stableReplicas": 3, "canaryReplicas": 1, "pausedReason": "PauseStep", "aborted": False,
        "promoteFull": False,
        "analysis": {"phase": "Running", "measurements": 4, "failed": 1, "inconclusive": 0, "errors": 0,
                     "lastMeasuredAt": "2026-11-23T07:34:00Z", "checks": [
                         {"metric": "ttftP95", "phase": "Successful", "canary": 0.91, "stable": 0.82,
                          "message": "ttftP95 canary 0.91s vs stable 0.82s, ratio 1.11 <= 1.3"},
                         {"metric": "errorRate", "phase": "Failed", "canary": 0.02,
                          "message": "errorRate canary 0.02 > max 0.01"}]},
        "surge": "Swap", "surgeReason": "0 free NVIDIA-H100-80GB-HBM3 GPUs on matching nodes",
        "lastRequest": "promote/20261123T072000Z-0a0b0c",
    }
    body.update(rollout)
    return {"observedGeneration": generation, "replicas": 4, "readyReplicas": 3, "updatedReplicas": 1,
            "revision": CANARY, "readyText": "3/4", "gpu": "1x NVIDIA-H100-80GB-HBM3",
            "autoscaling": {"provider": "HPA", "currentReplicas": 4, "desiredReplicas": 4,
                            "summary": "4 replicas (desired 4, min 2, max 8)"},
            "conditions": [cond("Ready", "False", "CanaryInProgress", "3/4 replicas ready"),
                           cond("Progressing", "True", "CanaryPaused", "paused at step 1 for 10m"),
                           cond("Degraded", "False", "AsExpected", "no problems")],
            "rollout": body}


def write_status(cluster: Cluster, namespace: str, name: str, status: dict[str, Any]) -> None:
    """Replace status.rollout (and the rest) through the status subresource, as the operator's writes do."""
    cluster.kubectl("patch", "llmd", name, "-n", namespace, "--subresource=status", "--type=merge",
                    "-p", json.dumps({"status": {"rollout": None}}))
    cluster.kubectl("patch", "llmd", name, "-n", namespace, "--subresource=status", "--type=merge",
                    "-p", json.dumps({"status": status}))
    written = ((get(cluster, namespace, "llmd", name) or {}).get("status") or {}).get("rollout") or {}
    # The schema's defaults (aborted: false, message: "") come on top of what was written; nothing is pruned.
    assert {k: written.get(k) for k in status["rollout"]} == status["rollout"], written


def annotations_of(cluster: Cluster, namespace: str, name: str) -> dict[str, str]:
    """The object's annotations but the one client-side `kubectl apply` keeps for itself."""
    found = ((get(cluster, namespace, "llmd", name) or {}).get("metadata") or {}).get("annotations") or {}
    return {k: v for k, v in found.items() if k != LAST_APPLIED}


def setup_canary(cluster: Cluster, namespace: str, name: str, **rollout: Any) -> dict[str, Any]:
    apply(cluster, namespace, canary_llmd(name), deployment(name, STABLE, 3),
          deployment(name, CANARY, 1, schedulable=False))
    obj = get(cluster, namespace, "llmd", name)
    assert obj is not None
    status = canary_status(obj["metadata"]["generation"], **rollout)
    write_status(cluster, namespace, name, status)
    wait_ready(cluster, namespace, f"{name}-{STABLE}", 3)
    return status


def wait_ready(cluster: Cluster, namespace: str, deployment_name: str, ready: int) -> None:
    wait_for(lambda: ((get(cluster, namespace, "deployment", deployment_name) or {}).get("status") or {})
             .get("readyReplicas") == ready, timeout=60, what=f"{deployment_name} {ready} ready")


# ------------------------------------------------------------------------------------------------- status


def test_status_renders_the_rollout_its_deployments_and_conditions(cluster: Cluster, namespace: str,
                                                                   quiet: None) -> None:
    setup_canary(cluster, namespace, "chat")
    out = plugin(cluster, "status", "chat", "-n", namespace).stdout
    lines = out.splitlines()

    def line(label: str) -> str:
        found = [ln for ln in lines if ln.startswith(label)]
        assert len(found) == 1, f"{label!r} in:\n{out}"
        return found[0]

    assert line("Name:").split() == ["Name:", "chat"]
    assert line("Namespace:").split() == ["Namespace:", namespace]
    assert line("Strategy:").split() == ["Strategy:", "Canary"]
    assert line("Revision:").endswith(f"stable {STABLE} → canary {CANARY}")
    assert line("Phase:").endswith("Paused: step 1 of 4: pause 10m at weight 10")
    assert line("Paused:").endswith("PauseStep")
    # Each step, the done ones ticked, a marker at the current one with its pause window.
    steps = lines.index(line("Steps:"))
    assert line("Steps:").endswith("1 of 4 done")
    assert lines[steps + 1:steps + 5] == [
        "  ✓ [0] setWeight 10",
        f"  → [1] pause 10m  (since {NOW}, until 2026-11-23T07:40:00Z)",
        "    [2] setWeight 50",
        "    [3] pause until promoted",
    ]
    assert line("Weight:").endswith("10% to canary, 90% to stable")
    # Replicas the rollout wants against the Deployments (found by label) and their Ready pods.
    table = lines[lines.index("Replicas:") + 1:lines.index("Replicas:") + 4]
    assert [row.split() for row in table] == [
        ["REVISION", "ROLE", "WANTED", "DEPLOYMENT", "READY"],
        [STABLE, "stable", "3", "3", f"(chat-{STABLE})", "3"],
        [CANARY, "canary", "1", "1", f"(chat-{CANARY})", "0"],
    ]
    assert line("Analysis:").endswith("Running: 4 measurements, 1 failed (aborts above 2), 0 inconclusive "
                                      "(pauses above 3), 0 errors; last at 2026-11-23T07:34:00Z")
    assert re.search(r"^  ttftP95 +Successful +0\.91 +0\.82 +ttftP95 canary 0\.91s vs stable 0\.82s, ratio 1\.11 "
                     r"<= 1\.3$", out, re.M), out
    assert re.search(r"^  errorRate +Failed +0\.02 +- +errorRate canary 0\.02 > max 0\.01$", out, re.M), out
    assert line("Surge:").endswith("Swap: 0 free NVIDIA-H100-80GB-HBM3 GPUs on matching nodes")
    assert line("Autoscaling:").endswith("HPA: 4 replicas (desired 4, min 2, max 8)")
    assert line("Last request:").endswith("promote/20261123T072000Z-0a0b0c (carried out)")
    assert "Pending:" not in out and "User pause:" not in out and "Aborted:" not in out
    conditions = lines[lines.index("Conditions:") + 1:]
    assert [row.split()[:3] for row in conditions] == [["TYPE", "STATUS", "REASON"], ["Ready", "False",
                                                       "CanaryInProgress"], ["Progressing", "True", "CanaryPaused"],
                                                      ["Degraded", "False", "AsExpected"]]
    assert conditions[2].endswith("paused at step 1 for 10m")

    # The namespace defaults to the kubeconfig context's.
    config = yaml.safe_load(cluster.kubeconfig.read_text())
    config["contexts"] = [{**c, "context": {**c["context"], "namespace": namespace}} for c in config["contexts"]]
    scoped = cluster.kubeconfig.parent / f"kubeconfig-{namespace}"
    scoped.write_text(yaml.safe_dump(config))
    try:
        assert plugin(cluster, "status", "chat", kubeconfig=False, env={"KUBECONFIG": str(scoped)}).stdout == out
        assert plugin(cluster, "--kubeconfig", str(scoped), "status", "chat", kubeconfig=False).stdout == out
    finally:
        scoped.unlink()


def test_status_watch_prints_again_on_change_and_ends_on_ctrl_c(cluster: Cluster, namespace: str, quiet: None,
                                                                tmp_path: Path) -> None:
    status = setup_canary(cluster, namespace, "watched")
    log = tmp_path / "watch.out"
    with log.open("w") as sink:
        proc = subprocess.Popen([str(PLUGIN), "status", "watched", "-n", namespace, "--watch", "--interval", "0.3",
                                 f"--kubeconfig={cluster.kubeconfig}"], stdout=sink, stderr=subprocess.STDOUT,
                                text=True)
    try:
        wait_for(lambda: "Conditions:" in log.read_text(), timeout=30, what="the first print")
        time.sleep(1.0)  # several polls of an unchanged object print nothing more
        assert log.read_text().count("Name:") == 1, log.read_text()
        later = copy.deepcopy(status)
        later["rollout"].update(stepIndex=2, weight=50, stepStartedAt="2026-11-23T07:40:00Z", phase="Progressing",
                                message="step 2 of 4: weight 50", stableReplicas=2, canaryReplicas=2)
        del later["rollout"]["pausedReason"]
        write_status(cluster, namespace, "watched", later)
        wait_for(lambda: "  → [2] setWeight 50  (since 2026-11-23T07:40:00Z)" in log.read_text(), timeout=30,
                 what="the watch to print the new step")
        text = log.read_text()
        assert "\n--- " in text and "Weight:       50% to canary, 50% to stable" in text, text
    finally:
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(timeout=30)
    assert rc == 0, log.read_text()
    assert "Traceback" not in log.read_text()


# -------------------------------------------------------------------------------------------------- steering


def test_steering_commands_write_the_annotation_protocol(cluster: Cluster, namespace: str, quiet: None) -> None:
    status = setup_canary(cluster, namespace, "steer")
    resource = "llmdeployments.serving.llmops.dev/steer"

    out = plugin(cluster, "pause", "steer", "-n", namespace).stdout
    assert out.startswith(f"{resource} paused")
    assert annotations_of(cluster, namespace, "steer") == {PAUSED_ANNOTATION: "true"}
    again = plugin(cluster, "pause", "steer", "-n", namespace, check=1)
    assert "already paused" in again.stderr
    assert "User pause:   yes" in plugin(cluster, "status", "steer", "-n", namespace).stdout

    # promote: a request with a fresh id, and the pause lifted in the same patch.
    out = plugin(cluster, "promote", "steer", "-n", namespace).stdout
    first = annotations_of(cluster, namespace, "steer")
    assert PAUSED_ANNOTATION not in first
    assert re.fullmatch(f"promote/{REQUEST_VALUE}", first[REQUEST_ANNOTATION]), first
    assert first[REQUEST_ANNOTATION] in out
    pending = plugin(cluster, "status", "steer", "-n", namespace).stdout
    assert f"Pending:      {first[REQUEST_ANNOTATION]} (not carried out yet)" in pending
    # The same action again is a new request: a new id.
    plugin(cluster, "promote", "steer", "-n", namespace)
    second = annotations_of(cluster, namespace, "steer")[REQUEST_ANNOTATION]
    assert second.startswith("promote/") and second != first[REQUEST_ANNOTATION]

    # GitOps: syncing the manifest from Git again, which has neither annotation, leaves both in place, with a
    # client-side apply (Argo CD's default) and with a server-side apply under another field manager.
    plugin(cluster, "pause", "steer", "-n", namespace)
    before = annotations_of(cluster, namespace, "steer")
    assert set(before) == {REQUEST_ANNOTATION, PAUSED_ANNOTATION}
    apply(cluster, namespace, canary_llmd("steer"))
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "--field-manager=argocd-controller", "-n",
                    namespace, "-f", "-", input=yaml.safe_dump(canary_llmd("steer")))
    assert annotations_of(cluster, namespace, "steer") == before
    plugin(cluster, "resume", "steer", "-n", namespace)

    # abort and retry leave a person's pause alone.
    plugin(cluster, "pause", "steer", "-n", namespace)
    plugin(cluster, "abort", "steer", "-n", namespace)
    now = annotations_of(cluster, namespace, "steer")
    assert now[PAUSED_ANNOTATION] == "true" and re.fullmatch(f"abort/{REQUEST_VALUE}", now[REQUEST_ANNOTATION])
    assert "not aborted: nothing to retry" in plugin(cluster, "retry", "steer", "-n", namespace, check=1).stderr
    plugin(cluster, "resume", "steer", "-n", namespace)
    assert PAUSED_ANNOTATION not in annotations_of(cluster, namespace, "steer")
    assert "is not paused" in plugin(cluster, "resume", "steer", "-n", namespace, check=1).stderr

    # Once the operator reports the rollout aborted: retry works; abort, promote and promote --full say why not.
    aborted = copy.deepcopy(status)
    aborted["rollout"].update(phase="Degraded", aborted=True, abortedAt="2026-11-23T07:36:00Z", weight=0,
                              stepIndex=0, stableReplicas=4, canaryReplicas=0,
                              abortMessage="errorRate canary 0.21 > max 0.01", lastRequest=now[REQUEST_ANNOTATION])
    del aborted["rollout"]["pausedReason"]
    write_status(cluster, namespace, "steer", aborted)
    shown = plugin(cluster, "status", "steer", "-n", namespace).stdout
    assert ("Aborted:      yes at 2026-11-23T07:36:00Z: errorRate canary 0.21 > max 0.01; `kubectl llm retry steer` "
            "starts again") in shown
    assert "Pending:" not in shown  # the abort request is recorded as carried out
    assert "already aborted" in plugin(cluster, "abort", "steer", "-n", namespace, check=1).stderr
    for promote in (["promote"], ["promote", "--full"]):
        refused = plugin(cluster, *promote, "steer", "-n", namespace, check=1).stderr
        assert "was aborted: errorRate canary 0.21 > max 0.01" in refused and "kubectl llm retry steer" in refused
    plugin(cluster, "retry", "steer", "-n", namespace)
    assert re.fullmatch(f"retry/{REQUEST_VALUE}", annotations_of(cluster, namespace, "steer")[REQUEST_ANNOTATION])

    # Retried (the operator restarts at step 0): promote --full goes.
    retried = copy.deepcopy(status)
    retried["rollout"].update(stepIndex=0, lastRequest=annotations_of(cluster, namespace, "steer")[REQUEST_ANNOTATION])
    write_status(cluster, namespace, "steer", retried)
    out = plugin(cluster, "promote", "--full", "steer", "-n", namespace).stdout
    assert "full promote requested" in out
    assert re.fullmatch(f"promote-full/{REQUEST_VALUE}",
                        annotations_of(cluster, namespace, "steer")[REQUEST_ANNOTATION])

    # No rollout in progress (canary promoted): promote and abort refuse; pause is still allowed.
    done = copy.deepcopy(status)
    done["rollout"] = {"strategy": "Canary", "phase": "Healthy", "stableRevision": CANARY, "weight": 0,
                       "stableReplicas": 4, "canaryReplicas": 0}
    write_status(cluster, namespace, "steer", done)
    for verb in ("promote", "abort"):
        err = plugin(cluster, verb, "steer", "-n", namespace, check=1).stderr
        assert f"LLMDeployment 'steer' has no rollout in progress (revision {CANARY} is stable)" in err
    assert "Revision:     stable bbbb2222 (no canary)" in plugin(cluster, "status", "steer", "-n", namespace).stdout
    assert "the next one holds" in plugin(cluster, "pause", "steer", "-n", namespace).stdout

    # The plugin writes metadata only, under its own field manager; never spec, never status.
    obj = json.loads(cluster.kubectl("get", "llmd", "steer", "-n", namespace, "-o", "json",
                                     "--show-managed-fields").stdout)
    entries = [e for e in obj["metadata"]["managedFields"] if e["manager"] == FIELD_MANAGER]
    assert entries and all(e.get("subresource") is None and set(e["fieldsV1"]) == {"f:metadata"}
                           for e in entries), entries
    assert obj["metadata"]["generation"] == 1  # annotations never bump the generation


def test_errors_name_the_object_and_exit_nonzero(cluster: Cluster, namespace: str, quiet: None) -> None:
    for args in (["status", "ghost"], ["promote", "ghost"], ["pause", "ghost"]):
        proc = plugin(cluster, *args, "-n", namespace, check=1)
        assert proc.stderr.strip() == f"error: LLMDeployment 'ghost' not found in namespace '{namespace}'"
        assert proc.stdout == ""
    apply(cluster, namespace, llmd("rolling", replicas=1))
    for verb in ("promote", "abort", "retry", "pause"):
        err = plugin(cluster, verb, "rolling", "-n", namespace, check=1).stderr
        assert "uses strategy RollingUpdate" in err and "Canary rollouts only" in err, err
    assert "is not paused" in plugin(cluster, "resume", "rolling", "-n", namespace, check=1).stderr
    assert annotations_of(cluster, namespace, "rolling") == {}  # nothing was written
    # A RollingUpdate object without any status yet still renders.
    out = plugin(cluster, "status", "rolling", "-n", namespace).stdout
    assert "Strategy:     RollingUpdate" in out and "(no rollout status yet)" in out
    # Usage errors exit 2.
    for args in ([], ["promote"], ["frobnicate", "x"], ["status", "a", "--bogus"]):
        assert plugin(cluster, *args, check=2).stderr.startswith("usage: kubectl llm")
    # A kubeconfig that does not exist: exit 1 with the reason.
    proc = plugin(cluster, "status", "rolling", "--kubeconfig", str(cluster.kubeconfig) + ".missing",
                  kubeconfig=False, check=1)
    assert proc.stderr.startswith(f"error: cannot load the cluster configuration from {cluster.kubeconfig}.missing")


# -------------------------------------------------------------------------------------------- discovery


def test_kubectl_finds_the_plugin_on_path_and_runs_it(cluster: Cluster, namespace: str, quiet: None) -> None:
    kubectl = str(cluster.bin_dir / "kubectl")
    env = {**os.environ, "PATH": str(PLUGIN.parent), "KUBECONFIG": str(cluster.kubeconfig)}
    listed = subprocess.run([kubectl, "plugin", "list"], capture_output=True, text=True, env=env, timeout=60,
                            check=False)
    assert listed.returncode == 0, listed.stderr
    assert str(PLUGIN) in listed.stdout.splitlines(), listed.stdout
    setup_canary(cluster, namespace, "via-kubectl")
    proc = subprocess.run([kubectl, "llm", "status", "via-kubectl", "-n", namespace], capture_output=True,
                          text=True, env=env, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == plugin(cluster, "status", "via-kubectl", "-n", namespace).stdout
    assert f"stable {STABLE} → canary {CANARY}" in proc.stdout
    proc = subprocess.run([kubectl, "llm", "pause", "via-kubectl", "-n", namespace], capture_output=True, text=True,
                          env=env, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert annotations_of(cluster, namespace, "via-kubectl")[PAUSED_ANNOTATION] == "true"
