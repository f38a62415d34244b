"""Each LLMDeployment's status as Prometheus gauges on the operator's metrics port (``llmctl run --metrics-port``).

The model pods' series (docs/metrics.md) say how fast a revision serves; only the operator knows its conditions,
its replica counts and a canary's weight. The Helm chart's alerts (Degraded, canary aborted, scaling limited by
GPUs) and its Grafana dashboard read these:

``llmop_llmdeployment_condition{namespace, llmdeployment, type, reason}``
    1 while the condition is True, 0 while False; one series per condition type (the reason is a label).
``llmop_llmdeployment_replicas{namespace, llmdeployment, state}``
    ``desired`` (spec.replicas), ``current`` (status.replicas, every revision) and ``ready`` (status.readyReplicas).
``llmop_llmdeployment_canary_weight_percent{namespace, llmdeployment}``
    status.rollout.weight while a Canary strategy is in effect.
``llmop_llmdeployment_revision_info{namespace, llmdeployment, revision}``
    1 for each revision the status names (current, stable, canary): joins the model series, which carry only
    ``namespace`` and ``revision``, to the LLMDeployment's name.

Fed from the bodies the watch delivers (``Controller.observe``), so they follow the status as written, and are
removed with the object. ``namespace`` is the LLMDeployment's: scrape with ``honorLabels: true`` (the chart's
ServiceMonitor does), as for kube-state-metrics.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from prometheus_client import Gauge

CONDITION = Gauge(
    "llmop_llmdeployment_condition",
    "LLMDeployment status conditions: 1 while True, 0 while False",
    ["namespace", "llmdeployment", "type", "reason"],
)
REPLICAS = Gauge(
    "llmop_llmdeployment_replicas",
    "LLMDeployment replicas: desired (spec), current (all revisions) and ready",
    ["namespace", "llmdeployment", "state"],
)
CANARY_WEIGHT = Gauge(
    "llmop_llmdeployment_canary_weight_percent",
    "Traffic percent the canary revision gets (status.rollout.weight), while the Canary strategy is in effect",
    ["namespace", "llmdeployment"],
)
REVISION_INFO = Gauge(
    "llmop_llmdeployment_revision_info",
    "Revisions an LLMDeployment's status names (current, stable, canary); joins the model series by revision",
    ["namespace", "llmdeployment", "revision"],
)

_GAUGES = (CONDITION, REPLICAS, CANARY_WEIGHT, REVISION_INFO)
_lock = threading.Lock()
# (namespace, name) -> gauge -> label tuples exported for it, so a changed reason or revision drops the old series.
_exported: dict[tuple[str, str], dict[Gauge, set[tuple[str, ...]]]] = {}


def _series(namespace: str, name: str, body: Mapping[str, Any]) -> dict[Gauge, dict[tuple[str, ...], float]]:
    status = body.get("status") or {}
    spec = body.get("spec") or {}
    out: dict[Gauge, dict[tuple[str, ...], float]] = {g: {} for g in _GAUGES}
    for cond in status.get("conditions") or []:
        if cond.get("type"):
            labels = (namespace, name, str(cond["type"]), str(cond.get("reason") or ""))
            out[CONDITION][labels] = 1.0 if cond.get("status") == "True" else 0.0
    for state, value in (("desired", spec.get("replicas")), ("current", status.get("replicas")),
                         ("ready", status.get("readyReplicas"))):
        if isinstance(value, int):
            out[REPLICAS][(namespace, name, state)] = float(value)
    rollout = status.get("rollout") or {}
    if rollout.get("strategy") == "Canary":
        out[CANARY_WEIGHT][(namespace, name)] = float(rollout.get("weight") or 0)
    for revision in {status.get("revision"), rollout.get("stableRevision"), rollout.get("canaryRevision")}:
        if revision:
            out[REVISION_INFO][(namespace, name, str(revision))] = 1.0
    return out


def export(key: tuple[str, str], body: Mapping[str, Any] | None) -> None:
    """Set the gauges of ``key`` from ``body``; ``None`` (deleted) removes every series of it."""
    namespace, name = key
    wanted = _series(namespace, name, body) if body is not None else {g: {} for g in _GAUGES}
    with _lock:
        before = _exported.pop(key, {})
        now: dict[Gauge, set[tuple[str, ...]]] = {}
        for gauge in _GAUGES:
            for labels in before.get(gauge, set()) - set(wanted[gauge]):
                gauge.remove(*labels)
            for labels, value in wanted[gauge].items():
                gauge.labels(*labels).set(value)
            if wanted[gauge]:
                now[gauge] = set(wanted[gauge])
        if now:
            _exported[key] = now
