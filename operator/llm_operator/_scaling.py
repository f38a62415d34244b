"""Explain the autoscaler: status.autoscaling, the ScalingActive/ScalingLimited conditions and scale Events.

Pure: the spec, the live HPA (or KEDA ScaledObject) as the API server returned it, the previous
status.autoscaling and a few cluster facts in; the new status, conditions and Events out. The HPA decides; this
only says what it decided, why, and what holds it back, in the words of the LLMDeployment's own metrics.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from llm_operator import api
from llm_operator._conditions import Condition
from llm_operator.builders.autoscaling import METRICS, targets

SCALING_ACTIVE = "ScalingActive"
SCALING_LIMITED = "ScalingLimited"

LABELS = {"queueDepth": "queue depth", "tokensPerSecond": "tokens/s", "kvCacheUtilization": "KV-cache use"}
METRICS_HELP = (
    "check that prometheus-adapter is Available (kubectl get apiservice v1beta1.custom.metrics.k8s.io), that "
    "Prometheus scrapes the model pods and loads the llmops recording rules, and that the pods export metrics "
    "(kubectl get --raw '/apis/custom.metrics.k8s.io/v1beta1/namespaces/{ns}/pods/*/{metric}')"
)
# HPA ScalingActive reasons that mean "no data", as kube-controller-manager writes them.
_NO_DATA = ("FailedGetPodsMetric", "FailedGetObjectMetric", "FailedGetExternalMetric", "FailedGetResourceMetric",
            "FailedGetContainerResourceMetric")


@dataclass(frozen=True)
class PendingGPUs:
    """Pods of the current revision that the scheduler could not place for lack of GPUs."""

    pods: int
    gpus_per_pod: int
    message: str  # the scheduler's words for one of them


@dataclass
class Explanation:
    status: dict[str, Any]
    conditions: list[Condition]
    events: list[tuple[str, str, str]] = field(default_factory=list)  # (type, reason, message)


def _number(text: Any) -> float | None:
    try:
        return api.quantity_value(text) if text is not None else None
    except (TypeError, ValueError):
        return None


def _fmt(value: float) -> str:
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"


def _hpa_condition(hpa: Mapping[str, Any] | None, type_: str) -> Mapping[str, Any] | None:
    for cond in ((hpa or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_:
            return dict(cond)
    return None


def _current_metrics(hpa: Mapping[str, Any] | None) -> dict[str, float]:
    out: dict[str, float] = {}
    for entry in ((hpa or {}).get("status") or {}).get("currentMetrics") or []:
        pods = entry.get("pods") or {}
        value = _number((pods.get("current") or {}).get("averageValue"))
        name = (pods.get("metric") or {}).get("name")
        if name and value is not None:
            out[name] = value
    return out


def reasons(metrics: Sequence[Mapping[str, Any]]) -> str:
    """`queue depth 9.5/replica > target 4; tokens/s 1200/replica < target 1500`."""
    parts = []
    for m in metrics:
        current, target = m.get("current"), m["target"]
        label = LABELS[m["name"]]
        if current is None:
            parts.append(f"{label}: no data (target {_fmt(target)})")
        else:
            sign = ">" if current > target else "<" if current < target else "="
            parts.append(f"{label} {_fmt(current)}/replica {sign} target {_fmt(target)}")
    return "; ".join(parts)


def explain(
    *,
    spec: api.AutoscalingSpec,
    namespace: str,
    autoscaler: Mapping[str, Any] | None,
    previous: Mapping[str, Any] | None,
    keda_installed: bool,
    pending: PendingGPUs | None,
) -> Explanation:
    goal = targets(spec)
    hpa = autoscaler if spec.provider == "HPA" else None
    status_in = (autoscaler or {}).get("status") or {}
    current = _current_metrics(hpa)
    metrics: list[dict[str, Any]] = [{"name": name, "target": value, **({"current": current[METRICS[name][0]]}
                                                  if METRICS[name][0] in current else {})}
               for name, value in goal.items()]
    out: dict[str, Any] = {"provider": spec.provider, "metrics": metrics}
    if hpa is not None:
        for key, source in (("currentReplicas", "currentReplicas"), ("desiredReplicas", "desiredReplicas"),
                            ("lastScaleTime", "lastScaleTime")):
            if status_in.get(source) is not None:
                out[key] = status_in[source]
    events: list[tuple[str, str, str]] = []
    previous = previous or {}
    if previous.get("lastScale") and previous.get("lastScaleTime") == out.get("lastScaleTime"):
        out["lastScale"] = previous["lastScale"]

    # ScalingActive: can the autoscaler compute a recommendation at all?
    if spec.provider == "KEDA":
        if not keda_installed:
            active = Condition(SCALING_ACTIVE, False, "KEDANotInstalled",
                               "spec.autoscaling.provider is KEDA but the cluster has no scaledobjects.keda.sh CRD: "
                               "install KEDA (https://keda.sh) or set provider: HPA")
        else:
            ready = next((c for c in status_in.get("conditions") or [] if c.get("type") == "Ready"), None)
            if ready is not None and ready.get("status") == "True":
                active = Condition(SCALING_ACTIVE, True, "KEDAReady", str(ready.get("message") or "ScaledObject ready"))
            else:
                active = Condition(SCALING_ACTIVE, False, "KEDANotReady",
                                   f"KEDA has not made the ScaledObject ready: {(ready or {}).get('message') or '-'}")
    else:
        hpa_active = _hpa_condition(hpa, "ScalingActive")
        if hpa_active is None:
            active = Condition(SCALING_ACTIVE, False, "AutoscalerStarting",
                               "the HorizontalPodAutoscaler has not synced yet (kube-controller-manager runs it "
                               "every --horizontal-pod-autoscaler-sync-period, 15 s by default)")
        elif hpa_active.get("status") == "True":
            active = Condition(SCALING_ACTIVE, True, "ValidMetricFound", reasons(metrics) or "metrics read")
        elif hpa_active.get("reason") in _NO_DATA:
            missing = [METRICS[m["name"]][0] for m in metrics if "current" not in m] or [METRICS[next(iter(goal))][0]]
            active = Condition(SCALING_ACTIVE, False, "MetricsUnavailable",
                               f"the custom metrics API has no {', '.join(missing)} for these pods, so the HPA keeps "
                               f"the replica count where it is; "
                               + METRICS_HELP.format(ns=namespace, metric=missing[0])
                               + f". HPA: {hpa_active.get('message', '')}")
        else:
            active = Condition(SCALING_ACTIVE, False, str(hpa_active.get("reason") or "ScalingInactive"),
                               str(hpa_active.get("message") or "the HPA is not scaling"))

    # ScalingLimited: cluster facts first (the HPA cannot see them), then the HPA's own bounds.
    desired = out.get("desiredReplicas")
    hpa_limited = _hpa_condition(hpa, "ScalingLimited")
    if pending is not None and pending.pods > 0:
        missing_gpus = pending.pods * pending.gpus_per_pod
        limited = Condition(SCALING_LIMITED, True, "InsufficientGPU",
                            f"{pending.pods} pod(s) of the current revision are Pending for lack of GPUs: "
                            f"{missing_gpus} more GPU(s) needed ({pending.gpus_per_pod} per replica); add GPU nodes "
                            f"or lower spec.autoscaling.maxReplicas. Scheduler: {pending.message}")
    elif hpa_limited is not None and hpa_limited.get("status") == "True":
        reason = str(hpa_limited.get("reason") or "ScalingLimited")
        advice = {
            "TooManyReplicas": f"at maxReplicas {spec.max_replicas}: raise spec.autoscaling.maxReplicas to serve "
                               f"more load",
            "TooFewReplicas": f"at minReplicas {spec.min_replicas}: the load would allow fewer",
            "ScaleUpLimit": "spec.autoscaling.behavior.scaleUp limits how fast replicas are added",
            "ScaleDownLimit": "spec.autoscaling.behavior.scaleDown limits how fast replicas are removed",
        }.get(reason, "")
        limited = Condition(SCALING_LIMITED, True, reason,
                            "; ".join(filter(None, [advice, f"HPA: {hpa_limited.get('message', '')}"])))
    else:
        limited = Condition(SCALING_LIMITED, False, "DesiredWithinRange",
                            f"the desired replica count is within {spec.min_replicas}-{spec.max_replicas}")
    if limited.status:
        out["limitedBy"] = limited.reason

    # One Event per scaling decision, when the HPA's lastScaleTime moves.
    last = out.get("lastScaleTime")
    if last and previous and last != previous.get("lastScaleTime") and desired is not None:
        # An HPA that had not synced yet reports 0 replicas: that is not where the scaling started from.
        before = previous.get("desiredReplicas") or previous.get("currentReplicas") or None
        if before != desired:
            out["lastScale"] = f"{before} -> {desired}" if before else f"-> {desired}"
            start = f"{before} → {desired}" if before else f"to {desired}"
            events.append(("Normal", "Scaled", f"Scaled {start}: {reasons(metrics)}"))

    now_replicas = out.get("currentReplicas")
    if not active.status:
        summary = active.reason
    elif now_replicas is not None and desired is not None and now_replicas != desired:
        summary = f"{now_replicas}->{desired}"
    else:
        summary = str(desired if desired is not None else "-")
    if limited.status:
        summary += f" {limited.reason}"
    out["summary"] = summary
    return Explanation(out, [active, limited], events)
