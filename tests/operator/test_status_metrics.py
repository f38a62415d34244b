"""The LLMDeployment status gauges on the operator's metrics port (what the chart's alerts and dashboard read)."""

from __future__ import annotations

from typing import Any

from llm_operator import _status_metrics as sm
from llm_operator._controller import Controller
from prometheus_client import REGISTRY


def value(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def body(name: str = "a", *, conditions: list[tuple[str, str, str]] = (), rollout: dict[str, Any] | None = None,
         revision: str = "r1", replicas: int = 2, ready: int = 1) -> dict[str, Any]:
    status: dict[str, Any] = {
        "revision": revision, "replicas": replicas, "readyReplicas": ready,
        "conditions": [{"type": t, "status": s, "reason": r} for t, s, r in conditions],
    }
    if rollout is not None:
        status["rollout"] = rollout
    return {"metadata": {"namespace": "sm", "name": name, "uid": "u", "resourceVersion": "1"},
            "spec": {"replicas": 3}, "status": status}


def test_conditions_replicas_and_revision_become_gauges() -> None:
    sm.export(("sm", "a"), body(conditions=[("Ready", "False", "ReplicasNotReady"),
                                            ("Degraded", "True", "SecretNotFound")]))
    cond = "llmop_llmdeployment_condition"
    assert value(cond, namespace="sm", llmdeployment="a", type="Ready", reason="ReplicasNotReady") == 0
    assert value(cond, namespace="sm", llmdeployment="a", type="Degraded", reason="SecretNotFound") == 1
    replicas = "llmop_llmdeployment_replicas"
    assert [value(replicas, namespace="sm", llmdeployment="a", state=s) for s in ("desired", "current", "ready")] == [
        3, 2, 1]
    assert value("llmop_llmdeployment_revision_info", namespace="sm", llmdeployment="a", revision="r1") == 1
    assert value("llmop_llmdeployment_canary_weight_percent", namespace="sm", llmdeployment="a") is None

    # A new reason replaces the old series (one series per condition type), a new revision the old info.
    sm.export(("sm", "a"), body(conditions=[("Degraded", "False", "AsExpected")], revision="r2"))
    assert value(cond, namespace="sm", llmdeployment="a", type="Degraded", reason="SecretNotFound") is None
    assert value(cond, namespace="sm", llmdeployment="a", type="Degraded", reason="AsExpected") == 0
    assert value(cond, namespace="sm", llmdeployment="a", type="Ready", reason="ReplicasNotReady") is None
    assert value("llmop_llmdeployment_revision_info", namespace="sm", llmdeployment="a", revision="r1") is None

    sm.export(("sm", "a"), None)  # deleted
    assert value(cond, namespace="sm", llmdeployment="a", type="Degraded", reason="AsExpected") is None
    assert value(replicas, namespace="sm", llmdeployment="a", state="desired") is None


def test_a_canary_exports_its_weight_and_both_revisions() -> None:
    rollout = {"strategy": "Canary", "phase": "Progressing", "weight": 25, "stableRevision": "r1",
               "canaryRevision": "r2"}
    sm.export(("sm", "c"), body("c", revision="r2", rollout=rollout))
    assert value("llmop_llmdeployment_canary_weight_percent", namespace="sm", llmdeployment="c") == 25
    for rev in ("r1", "r2"):
        assert value("llmop_llmdeployment_revision_info", namespace="sm", llmdeployment="c", revision=rev) == 1
    sm.export(("sm", "c"), body("c", revision="r2", rollout={"strategy": "RollingUpdate", "phase": "Healthy"}))
    assert value("llmop_llmdeployment_canary_weight_percent", namespace="sm", llmdeployment="c") is None
    assert value("llmop_llmdeployment_revision_info", namespace="sm", llmdeployment="c", revision="r1") is None
    sm.export(("sm", "c"), None)


def test_the_controller_exports_what_the_watch_delivers() -> None:
    ctl = Controller(object(), workers=1, resync_seconds=3600)  # type: ignore[arg-type]  # never started
    ctl.observe(body("w", conditions=[("ScalingLimited", "True", "InsufficientGPU")]))
    labels = {"namespace": "sm", "llmdeployment": "w", "type": "ScalingLimited", "reason": "InsufficientGPU"}
    assert value("llmop_llmdeployment_condition", **labels) == 1
    ctl.observe(body("w"), deleted=True)
    assert value("llmop_llmdeployment_condition", **labels) is None
