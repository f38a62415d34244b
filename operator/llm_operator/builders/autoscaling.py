"""The autoscaler of an LLMDeployment: an autoscaling/v2 HPA, or a KEDA ScaledObject.

Both target the LLMDeployment itself through its scale subresource, never a Deployment: the operator splits
the replica count across revisions, so a rollout and the autoscaler never fight over one object. Both read
the canonical metric vocabulary (llm_operator.metrics), so they work the same for every backend.
"""

from __future__ import annotations

import copy
from decimal import Decimal
from typing import Any

from .. import api, metrics
from ._meta import COMPONENT_SERVER, _metadata

# A model pod takes minutes and a whole GPU to start, and its load metrics only fall once it serves. So: scale up
# at once but by at most 2 pods or 100 % per 2 minutes, one step per model load plus the metrics' lag (the queue
# stays high while new pods load, and a faster HPA keeps adding pods that cannot drain the old pods' queues);
# scale down one pod a minute after 2 minutes of lower load. `llmctl simulate`'s sweep chose these (issue #9,
# docs/simulate.md, README "Simulate"); until then they were 2 pods or 100 % per 60 s up and 1 pod per 120 s after
# a 300 s window down.
DEFAULT_BEHAVIOR: dict[str, dict[str, Any]] = {
    "scaleUp": {
        "stabilizationWindowSeconds": 0,
        "selectPolicy": "Max",
        "policies": [{"type": "Pods", "value": 2, "periodSeconds": 120},
                     {"type": "Percent", "value": 100, "periodSeconds": 120}],
    },
    "scaleDown": {
        "stabilizationWindowSeconds": 120,
        "selectPolicy": "Max",
        "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}],
    },
}

# spec.autoscaling.metrics field -> the custom metric (prometheus-adapter) and the per-pod recorded series.
METRICS: dict[str, tuple[str, str]] = {
    "queueDepth": (metrics.ADAPTER_QUEUE_DEPTH, metrics.QUEUE_DEPTH),
    "tokensPerSecond": (metrics.ADAPTER_GENERATION_TOKENS_PER_SECOND, metrics.GENERATION_TOKENS_RATE),
    "kvCacheUtilization": (metrics.ADAPTER_KV_CACHE_UTILIZATION, metrics.KV_CACHE_UTILIZATION),
}


def quantity(value: float) -> str:
    """A Kubernetes quantity for a target: whole numbers as is, fractions in milli-units (0.8 -> "800m")."""
    exact = Decimal(str(value))
    if exact == exact.to_integral_value():
        return str(int(exact))
    return f"{int((exact * 1000).to_integral_value())}m"


def targets(spec: api.AutoscalingSpec) -> dict[str, float]:
    """The metrics set in the spec, by their spec name, in a fixed order."""
    values = {"queueDepth": spec.metrics.queue_depth, "tokensPerSecond": spec.metrics.tokens_per_second,
              "kvCacheUtilization": spec.metrics.kv_cache_utilization}
    return {name: float(v) for name, v in values.items() if v is not None}


def behavior(spec: api.AutoscalingSpec) -> dict[str, Any]:
    """The defaults above, with each field the user set replacing the default's (per direction)."""
    out = copy.deepcopy(DEFAULT_BEHAVIOR)
    if spec.behavior is None:
        return out
    for key, rules in (("scaleUp", spec.behavior.scale_up), ("scaleDown", spec.behavior.scale_down)):
        if rules is not None:
            out[key].update(rules.model_dump(by_alias=True, exclude_none=True))
    return out


def _target_ref(llmd: api.LLMDeployment) -> dict[str, str]:
    return {"apiVersion": api.API_VERSION, "kind": api.KIND, "name": llmd.name}


def build_hpa(llmd: api.LLMDeployment, *, namespace: str, owner_uid: str | None) -> dict[str, Any]:
    spec = llmd.spec.autoscaling
    assert spec is not None and spec.provider == "HPA"
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _metadata(llmd, name=llmd.name, namespace=namespace, owner_uid=owner_uid,
                              component=COMPONENT_SERVER),
        "spec": {
            "scaleTargetRef": _target_ref(llmd),
            "minReplicas": spec.min_replicas,
            "maxReplicas": spec.max_replicas,
            "metrics": [
                {"type": "Pods", "pods": {"metric": {"name": METRICS[name][0]},
                                          "target": {"type": "AverageValue", "averageValue": quantity(value)}}}
                for name, value in targets(spec).items()
            ],
            "behavior": behavior(spec),
        },
    }


def pods_query(llmd: api.LLMDeployment, *, namespace: str, series: str) -> str:
    """The sum of a per-pod series over this LLMDeployment's pods. KEDA divides it by the target per replica.

    Pods are named `<name>-<revision>-<replicaset hash>-<suffix>`, and revisions are `r` + 9 hex digits, so
    the pattern cannot match another LLMDeployment's pods unless its name is this one plus such a suffix.
    """
    return f'sum({series}{{namespace="{namespace}",pod=~"{llmd.name}-r[0-9a-f]{{9}}-.+"}})'


def build_scaled_object(llmd: api.LLMDeployment, *, namespace: str, owner_uid: str | None) -> dict[str, Any]:
    spec = llmd.spec.autoscaling
    assert spec is not None and spec.provider == "KEDA" and spec.keda is not None
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": _metadata(llmd, name=llmd.name, namespace=namespace, owner_uid=owner_uid,
                              component=COMPONENT_SERVER),
        "spec": {
            "scaleTargetRef": _target_ref(llmd),
            "minReplicaCount": spec.min_replicas,
            "maxReplicaCount": spec.max_replicas,
            "pollingInterval": spec.keda.polling_interval_seconds,
            "cooldownPeriod": spec.keda.cooldown_period_seconds,
            "advanced": {"horizontalPodAutoscalerConfig": {"behavior": behavior(spec)}},
            "triggers": [
                {
                    "type": "prometheus",
                    "name": name,
                    "metricType": "AverageValue",
                    "metadata": {
                        "serverAddress": spec.keda.prometheus_address,
                        "query": pods_query(llmd, namespace=namespace, series=METRICS[name][1]),
                        "threshold": f"{value:g}",  # KEDA parses a plain float, not a quantity
                    },
                }
                for name, value in targets(spec).items()
            ],
        },
    }


def build_autoscaler(
    llmd: api.LLMDeployment, *, namespace: str, owner_uid: str | None, keda_crd: bool
) -> dict[str, Any] | None:
    """The autoscaler child, or None: no autoscaling, or KEDA asked for while its CRD is not installed."""
    spec = llmd.spec.autoscaling
    if spec is None:
        return None
    if spec.provider == "HPA":
        return build_hpa(llmd, namespace=namespace, owner_uid=owner_uid)
    return build_scaled_object(llmd, namespace=namespace, owner_uid=owner_uid) if keda_crd else None
