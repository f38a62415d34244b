"""Canary rollouts on the metrics test bed: the real API server and controllers, kwok pods, the traffic emulator
exporting per-revision series, the real Prometheus with the shipped recording rules, and the operator's
analysis querying it (docs/rollouts.md).

Bad revisions are the emulator's: an image tag ending in `-faulty` fails 20 % of requests, `-slow` has three times the
time to first token (docs/metrics.md "Traffic emulator").
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from e2e.pytest_plugin import Cluster, Operator, wait_for
from tests.e2e.test_operator import apply, children, condition, events, get, llmd, wait_condition

pytestmark = pytest.mark.cluster

H100 = "NVIDIA-H100-80GB-HBM3"
INTERVAL = 5  # analysis interval, seconds
IMAGE = "nvcr.io/nvidia/tritonserver:25.01-vllm-python-py3"


@pytest.fixture
def traffic(cluster: Cluster) -> Any:
    from llm_operator.dev.traffic.client import TrafficClient

    assert cluster.traffic_url, "the session cluster runs without the metrics test bed"
    return TrafficClient(cluster.traffic_url)


def _model(name: str, cluster: Cluster, *, steps: list[dict[str, Any]], checks: list[dict[str, Any]] | None = None,
           replicas: int = 4, image: str = IMAGE, failure_limit: int = 1, route: str | None = None,
           prometheus: str | None = None) -> dict[str, Any]:
    canary: dict[str, Any] = {"steps": steps}
    if checks is not None:
        canary["analysis"] = {"interval": f"{INTERVAL}s", "failureLimit": failure_limit, "inconclusiveLimit": 20,
                              "prometheus": {"address": prometheus or cluster.prometheus_url, "timeout": "3s"},
                              "checks": checks}
    if route:
        canary["trafficRouting"] = {"gatewayAPI": {"httpRoute": route}}
    return llmd(name, replicas=replicas, runtime={"backend": "vllm", "image": image},
                resources={"gpu": {"count": 1, "product": H100}},
                podAnnotations={"kwok.llmops.dev/ready-delay": "2s"},
                rollout={"strategy": "Canary", "canary": canary})


def _rollout(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    obj = get(cluster, namespace, "llmd", name) or {}
    return dict((obj.get("status") or {}).get("rollout") or {})


def _deployments(cluster: Cluster, namespace: str, name: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["labels"]["serving.llmops.dev/revision"]: d
            for d in children(cluster, namespace, "deployments", name)}


class Timeline:
    """status.rollout, the Deployments and (optionally) the route's weights, sampled every 0.5 s."""

    def __init__(self, cluster: Cluster, namespace: str, name: str, route: str | None = None) -> None:
        self.samples: list[dict[str, Any]] = []
        self._args = (cluster, namespace, name, route)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        cluster, namespace, name, route = self._args
        while not self._stop.is_set():
            sample: dict[str, Any] = {"t": time.monotonic(), "rollout": _rollout(cluster, namespace, name)}
            deps = _deployments(cluster, namespace, name)
            sample["spec"] = {rev: d["spec"].get("replicas", 0) for rev, d in deps.items()}
            sample["ready"] = {rev: (d.get("status") or {}).get("readyReplicas", 0) for rev, d in deps.items()}
            if route:
                r = get(cluster, namespace, "httproute", route) or {}
                refs = ((r.get("spec") or {}).get("rules") or [{}])[0].get("backendRefs") or []
                sample["weights"] = {ref["name"]: ref.get("weight") for ref in refs}
            self.samples.append(sample)
            self._stop.wait(0.5)

    def __enter__(self) -> Timeline:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def _wait_rollout(cluster: Cluster, namespace: str, name: str, what: str, timeout: float = 120, **want: Any
                  ) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        r = _rollout(cluster, namespace, name)
        return r if all(r.get(k) == v for k, v in want.items()) else None

    result: dict[str, Any] = wait_for(check, timeout=timeout, interval=0.5, what=what)
    return result


def _stable(cluster: Cluster, namespace: str, doc: dict[str, Any], traffic: Any, rps: float = 20) -> str:
    name = doc["metadata"]["name"]
    apply(cluster, namespace, doc)
    wait_condition(cluster, namespace, name, "Ready", "True", "AllReplicasReady", timeout=90)
    traffic.set_load(namespace=namespace, name=name, rps=rps, output_tokens=64)
    return str(_wait_rollout(cluster, namespace, name, "first revision stable", phase="Healthy")["stableRevision"])


def _new_revision(doc: dict[str, Any], image: str) -> dict[str, Any]:
    doc["spec"]["runtime"]["image"] = image
    return doc


def _kubectl_llm(cluster: Cluster, namespace: str, *args: str) -> str:
    exe = Path(sys.executable).with_name("kubectl-llm")
    proc = subprocess.run([str(exe), *args, "-n", namespace], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "KUBECONFIG": str(cluster.kubeconfig)})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


# ------------------------------------------------------------------------------------------ good canary


def test_a_good_canary_follows_the_steps_on_a_gateway_route_survives_restarts_and_is_promoted(
    cluster: Cluster, operator: Operator, namespace: str, traffic: Any
) -> None:
    name, route = "good", "good-route"
    stable_svc, canary_svc = f"{name}-stable", f"{name}-canary"
    user_route = {
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": {"name": route},
        "spec": {"parentRefs": [{"name": "public"}], "rules": [
            {"backendRefs": [{"name": stable_svc, "port": 8000, "weight": 100},
                             {"name": canary_svc, "port": 8000, "weight": 0},
                             {"name": "other-model", "port": 8000, "weight": 5}]},
            {"matches": [{"path": {"type": "PathPrefix", "value": "/admin"}}],
             "backendRefs": [{"name": "admin", "port": 80}]},
        ]},
    }
    apply(cluster, namespace, user_route)
    before = get(cluster, namespace, "httproute", route)
    assert before is not None
    steps = [{"setWeight": 25}, {"pause": {"duration": "8s"}}, {"setWeight": 50}, {"pause": {"duration": "8s"}}]
    checks = [{"metric": "errorRate", "max": 0.05}, {"metric": "ttftP95", "maxRatioToStable": 2.0}]
    doc = _model(name, cluster, steps=steps, checks=checks, route=route)
    stable = _stable(cluster, namespace, doc, traffic)

    with Timeline(cluster, namespace, name, route) as timeline:
        apply(cluster, namespace, _new_revision(doc, IMAGE + "-v2"))
        first = _wait_rollout(cluster, namespace, name, "the first pause", stepIndex=1, phase="Progressing")
        canary = first["canaryRevision"]
        # Operator killed mid-canary, twice, at different steps: it resumes where status says it was.
        with operator.stopped():
            time.sleep(3)
            held = _rollout(cluster, namespace, name)
        after = _rollout(cluster, namespace, name)
        assert after.get("stepIndex", 0) >= held["stepIndex"] and after["canaryRevision"] == canary
        _wait_rollout(cluster, namespace, name, "the second pause", stepIndex=3)
        with operator.stopped():
            time.sleep(2)
        done = _wait_rollout(cluster, namespace, name, "promotion", timeout=180, phase="Healthy",
                             stableRevision=canary)
    assert done.get("canaryRevision") is None
    # Every step held its split, in replicas and in the route's weights (the route only moves once the
    # canary's pods for the step are ready).
    at = {s["rollout"].get("stepIndex"): s for s in timeline.samples if s["rollout"].get("canaryRevision") == canary}
    assert at[1]["rollout"]["weight"] == 25 and at[1]["rollout"]["canaryReplicas"] == 1
    assert at[3]["rollout"]["weight"] == 50 and at[3]["rollout"]["canaryReplicas"] == 2
    pause_samples = [s for s in timeline.samples if s["rollout"].get("stepIndex") in (1, 3)
                     and s["rollout"].get("canaryRevision") == canary and s.get("weights")]
    assert {(s["rollout"]["stepIndex"], s["weights"][canary_svc], s["weights"][stable_svc]) for s in pause_samples
            } >= {(1, 25, 75), (3, 50, 50)}
    for s in pause_samples:
        assert s["weights"][canary_svc] <= s["rollout"]["weight"]
    # No duplicate or orphaned revision at any time: at most stable and canary.
    assert all(set(s["spec"]) <= {stable, canary} for s in timeline.samples)
    # Promotion retired the old revision: its Deployment, and the route now sends everything to stable.
    wait_for(lambda: set(_deployments(cluster, namespace, name)) == {canary}, timeout=60,
             what="old revision removed")
    final = get(cluster, namespace, "httproute", route)
    assert final is not None
    refs = {r["name"]: r.get("weight") for r in final["spec"]["rules"][0]["backendRefs"]}
    assert refs == {stable_svc: 100, canary_svc: 0, "other-model": 5}
    assert final["spec"]["rules"][1] == before["spec"]["rules"][1]  # the user's other rule is untouched
    assert final["spec"]["parentRefs"] == before["spec"]["parentRefs"]
    stable_service = get(cluster, namespace, "service", stable_svc)
    assert stable_service is not None
    assert stable_service["spec"]["selector"]["serving.llmops.dev/revision"] == canary
    reasons = [e["reason"] for e in events(cluster, namespace, name)]
    assert "CanaryStarted" in reasons and "CanaryPromoted" in reasons
    analysis_seen = [s["rollout"].get("analysis") for s in timeline.samples if s["rollout"].get("analysis")]
    assert analysis_seen and max(a["measurements"] for a in analysis_seen) >= 2
    assert all(a["failed"] == 0 for a in analysis_seen)


# ------------------------------------------------------------------------------------------ bad canaries


@pytest.mark.parametrize(("suffix", "check", "quoted"), [
    ("-faulty", {"metric": "errorRate", "max": 0.05}, "errorRate canary"),
    ("-slow", {"metric": "ttftP95", "maxRatioToStable": 1.5}, "ttftP95 canary"),
])
def test_a_bad_canary_is_rolled_back_by_the_analysis(cluster: Cluster, operator: Operator, namespace: str,
                                                     traffic: Any, suffix: str, check: dict[str, Any],
                                                     quoted: str) -> None:
    name = f"bad{suffix}"
    failure_limit = 1
    steps = [{"setWeight": 50}, {"pause": {"duration": "10m"}}]
    doc = _model(name, cluster, steps=steps, checks=[check], failure_limit=failure_limit)
    stable = _stable(cluster, namespace, doc, traffic)

    with Timeline(cluster, namespace, name) as timeline:
        apply(cluster, namespace, _new_revision(doc, IMAGE + suffix))
        aborted = _wait_rollout(cluster, namespace, name, "abort", timeout=180, aborted=True)
        obj = wait_condition(cluster, namespace, name, "Degraded", "True", "CanaryAnalysisFailed", timeout=30)
        # Traffic and replicas go back to stable: the canary has no pods, stable is at full size.
        wait_for(lambda: (lambda d: d[stable]["status"].get("readyReplicas") == 4
                          and d[aborted["canaryRevision"]]["spec"]["replicas"] == 0
                          and not (d[aborted["canaryRevision"]]["status"].get("replicas") or 0))(
                              _deployments(cluster, namespace, name)),
                 timeout=90, what="stable back at full size")
    analysis = aborted["analysis"]
    assert analysis["failed"] == failure_limit + 1
    message = condition(obj, "Degraded")["message"]
    assert quoted in message and aborted["abortMessage"] in message
    warning = [e for e in events(cluster, namespace, name) if e["reason"] == "CanaryAnalysisFailed"]
    assert warning and quoted in warning[0]["message"]
    # Within failureLimit + 1 intervals of the first measurement with data (one interval of slack for a pass
    # that lands just after a measurement came due, and one for this 2-core machine).
    measured = [s["rollout"]["analysis"] for s in timeline.samples if (s["rollout"].get("analysis") or {})
                .get("checks") and any("canary" in c for c in s["rollout"]["analysis"]["checks"])]
    first = dt.datetime.fromisoformat(measured[0]["lastMeasuredAt"].replace("Z", "+00:00"))
    at = dt.datetime.fromisoformat(aborted["abortedAt"].replace("Z", "+00:00"))
    assert (at - first).total_seconds() <= (failure_limit + 1 + 2) * INTERVAL, (first, at)
    # Users were served throughout: never more than one replica's worth of Ready pods away.
    ready = [sum(s["ready"].values()) for s in timeline.samples if s["ready"]]
    assert min(ready) >= 3, ready
    # It stays aborted (the spec is untouched) until the spec changes or a retry.
    time.sleep(2 * INTERVAL)
    still = _rollout(cluster, namespace, name)
    assert still["aborted"] and still["phase"] == "Degraded"
    assert (get(cluster, namespace, "llmd", name) or {})["spec"]["runtime"]["image"] == IMAGE + suffix


# ------------------------------------------------------------------------------------------ manual control, no data


def test_manual_control_and_an_unreachable_prometheus(cluster: Cluster, operator: Operator, namespace: str,
                                                      traffic: Any) -> None:
    name = "manual"
    steps = [{"setWeight": 25}, {"pause": {}}, {"setWeight": 50}, {"pause": {}}]
    checks = [{"metric": "errorRate", "max": 0.05}]
    doc = _model(name, cluster, steps=steps, checks=checks)
    _stable(cluster, namespace, doc, traffic)
    apply(cluster, namespace, _new_revision(doc, IMAGE + "-v2"))
    _wait_rollout(cluster, namespace, name, "the indefinite pause", stepIndex=1, pausedReason="PauseStep")
    time.sleep(INTERVAL)
    assert _rollout(cluster, namespace, name)["stepIndex"] == 1, "an indefinite pause waits"
    assert "step 2/4" in _kubectl_llm(cluster, namespace, "status", name)

    _kubectl_llm(cluster, namespace, "promote", name)
    _wait_rollout(cluster, namespace, name, "the second pause", stepIndex=3, pausedReason="PauseStep")

    # Prometheus goes away (the analysis now points at a port nobody listens on: the same refused connection a
    # stopped Prometheus gives). The rollout holds, says why, and a promote cannot get it through.
    dead = json.dumps({"spec": {"rollout": {"canary": {"analysis": {"prometheus": {"address":
                                                                                    "http://127.0.0.1:9"}}}}}})
    cluster.kubectl("patch", "llmd", name, "-n", namespace, "--type=merge", "-p", dead)
    held = _wait_rollout(cluster, namespace, name, "PrometheusUnreachable", pausedReason="PrometheusUnreachable",
                         phase="Paused")
    assert "127.0.0.1:9" in held["message"]
    _kubectl_llm(cluster, namespace, "promote", name)
    time.sleep(3 * INTERVAL)
    r = _rollout(cluster, namespace, name)
    assert r["stableRevision"] != r.get("canaryRevision") and r.get("canaryRevision"), "never promoted without data"
    assert r["pausedReason"] == "PrometheusUnreachable"

    _kubectl_llm(cluster, namespace, "abort", name)
    aborted = _wait_rollout(cluster, namespace, name, "abort", aborted=True)
    assert aborted["weight"] == 0
    wait_condition(cluster, namespace, name, "Degraded", "True", "RolloutAborted", timeout=30)

    back = json.dumps({"spec": {"rollout": {"canary": {"analysis": {"prometheus": {"address":
                                                                                    cluster.prometheus_url}}}}}})
    cluster.kubectl("patch", "llmd", name, "-n", namespace, "--type=merge", "-p", back)
    _kubectl_llm(cluster, namespace, "retry", name)
    _wait_rollout(cluster, namespace, name, "retry restarts the steps", stepIndex=1, pausedReason="PauseStep")
    _kubectl_llm(cluster, namespace, "promote", "--full", name)
    _wait_rollout(cluster, namespace, name, "promote --full", timeout=120, phase="Healthy",
                  stableRevision=aborted["canaryRevision"])
    reasons = [e["reason"] for e in events(cluster, namespace, name)]
    assert {"RolloutAborted", "CanaryRetried", "CanaryPromotedFull"} <= set(reasons)


# ------------------------------------------------------------------------------------------ GPU-aware surge


def test_rolling_update_surges_where_the_pool_has_room_and_swaps_where_it_is_full(
    cluster: Cluster, operator: Operator, namespace: str
) -> None:
    a100 = "NVIDIA-A100-SXM4-80GB"  # one node, 6 whole GPUs: 2 replicas of 3 fill it
    # A model load of 6 s keeps each rollout long enough to be sampled at every step.
    full = llmd("full", replicas=2, resources={"gpu": {"count": 3, "product": a100}},
                podAnnotations={"kwok.llmops.dev/ready-delay": "6s"})
    roomy = llmd("roomy", replicas=2, resources={"gpu": {"count": 1, "product": H100}},
                 podAnnotations={"kwok.llmops.dev/ready-delay": "6s"})
    apply(cluster, namespace, full, roomy)
    for n in ("full", "roomy"):
        wait_condition(cluster, namespace, n, "Ready", "True", "AllReplicasReady", timeout=90)
    modes: dict[str, set[str]] = {"full": set(), "roomy": set()}
    most_pods = {"full": 0, "roomy": 0}
    for doc in (full, roomy):
        doc["spec"]["runtime"] = {"backend": "vllm", "image": IMAGE + "-v2"}
    apply(cluster, namespace, full, roomy)

    def finished() -> bool:
        done = True
        for n in ("full", "roomy"):
            r = _rollout(cluster, namespace, n)
            if r.get("surge"):
                modes[n].add(r["surge"])
            pods = [p for p in children(cluster, namespace, "pods", n) if not p["metadata"].get("deletionTimestamp")]
            most_pods[n] = max(most_pods[n], len(pods))
            done = done and r.get("phase") == "Healthy" and len(_deployments(cluster, namespace, n)) == 1
        return done

    wait_for(finished, timeout=150, interval=0.2, what="both rollouts")
    assert modes["full"] == {"Swap"} and most_pods["full"] <= 2, (modes, most_pods)
    assert "Surge" in modes["roomy"] and most_pods["roomy"] > 2, (modes, most_pods)


# ------------------------------------------------------------------------------------------ HPA during a canary


def test_the_hpa_scales_the_total_during_a_canary_and_the_split_keeps_the_weight(
    cluster: Cluster, operator: Operator, namespace: str, traffic: Any
) -> None:
    from llm_operator.rollout.replicas import split

    name = "scaled"
    doc = _model(name, cluster, steps=[{"setWeight": 50}, {"pause": {}}], replicas=2)
    del doc["spec"]["replicas"]  # the HPA owns it
    doc["spec"]["autoscaling"] = {"minReplicas": 2, "maxReplicas": 6, "metrics": {"queueDepth": 4},
                                  "behavior": {"scaleUp": {"policies": [{"type": "Pods", "value": 4,
                                                                         "periodSeconds": 15}]}}}
    apply(cluster, namespace, doc)
    wait_for(lambda: (o := get(cluster, namespace, "llmd", name)) and (o.get("status") or {}).get("readyReplicas")
             == 2 and o, timeout=90, what="2 ready replicas")
    apply(cluster, namespace, _new_revision(doc, IMAGE + "-v2"))
    held = _wait_rollout(cluster, namespace, name, "the canary's indefinite pause", stepIndex=1,
                         pausedReason="PauseStep")
    assert (held["canaryReplicas"], held["stableReplicas"]) == (1, 1)
    # Four replicas' worth of load (the emulator's default replica makes ~9.8 requests/s of 256 tokens): the
    # queue grows, the real HPA raises spec.replicas, and the operator splits the new total at 50 %.
    traffic.set_load(namespace=namespace, name=name, rps=40, output_tokens=256)
    grown = wait_for(lambda: (r := _rollout(cluster, namespace, name)) and
                     (r.get("canaryReplicas", 0) + r.get("stableReplicas", 0)) >= 4 and r,
                     timeout=120, interval=0.5, what="the HPA to raise the total")
    total = grown["canaryReplicas"] + grown["stableReplicas"]
    assert (grown["canaryReplicas"], grown["stableReplicas"]) == split(total, 50, routed=False, room=False)
    assert grown["stepIndex"] == 1 and grown["weight"] == 50, "scaling neither restarts nor skips a step"
    # The Deployments carry the split (the pods follow as GPUs allow; the surge tests cover that part).
    wait_for(lambda: sorted(d["spec"]["replicas"] for d in _deployments(cluster, namespace, name).values())
             == sorted(split(total, 50, routed=False, room=False)), timeout=30, what="the Deployments at the split")
    traffic.set_load(namespace=namespace, name=name, rps=0)
