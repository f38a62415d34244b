"""The children of an LLMDeployment: a Deployment per revision, the Service, the PodDisruptionBudget, the monitor."""

from __future__ import annotations

from typing import Any

from .. import api
from ._meta import (
    COMPONENT_MONITORING,
    COMPONENT_SERVER,
    GRPC_PORT,
    HTTP_PORT,
    METRICS_PORT,
    OPENAI_PORT,
    REVISION_LABEL,
    _metadata,
    deployment_name,
    selector_labels,
)
from .autoscaling import build_autoscaler
from .pod import build_pod_template, revision_hash
from .repository import build_model_repository_configmap

# ---------------------------------------------------------------------------------------- children


def build_deployment(
    llmd: api.LLMDeployment, *, namespace: str, revision: str, owner_uid: str | None
) -> dict[str, Any]:
    """The Deployment of one revision, with `spec.replicas` from the LLMDeployment."""
    template = build_pod_template(llmd, revision=revision)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(
            llmd,
            name=deployment_name(llmd, revision=revision),
            namespace=namespace,
            owner_uid=owner_uid,
            component=COMPONENT_SERVER,
            revision=revision,
        ),
        "spec": {
            "replicas": llmd.spec.replicas,
            "selector": {"matchLabels": {**selector_labels(llmd), REVISION_LABEL: revision}},
            # maxSurge 0: on a full GPU pool a surge pod can never schedule and the rollout would hang.
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}},
            # A model load is minutes; don't call a rollout stuck while weights are still downloading.
            "progressDeadlineSeconds": llmd.spec.runtime.startup_timeout_seconds + 600,
            "revisionHistoryLimit": 2,
            "template": template,
        },
    }


def build_service(llmd: api.LLMDeployment, *, namespace: str, owner_uid: str | None) -> dict[str, Any]:
    svc = llmd.spec.service
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(
            llmd,
            name=llmd.name,
            namespace=namespace,
            owner_uid=owner_uid,
            component=COMPONENT_SERVER,
            annotations=dict(svc.annotations),
        ),
        "spec": {
            "type": svc.type,
            "selector": selector_labels(llmd),
            "ports": [
                {
                    "name": "http",
                    "port": HTTP_PORT,
                    "targetPort": "http",
                    "protocol": "TCP",
                    "appProtocol": "http",
                },
                {
                    "name": "grpc",
                    "port": GRPC_PORT,
                    "targetPort": "grpc",
                    "protocol": "TCP",
                    "appProtocol": "kubernetes.io/h2c",
                },
                {
                    "name": "metrics",
                    "port": METRICS_PORT,
                    "targetPort": "metrics",
                    "protocol": "TCP",
                    "appProtocol": "http",
                },
                {
                    "name": "openai",
                    "port": OPENAI_PORT,
                    "targetPort": "openai",
                    "protocol": "TCP",
                    "appProtocol": "http",
                },
            ],
        },
    }


def build_pdb(llmd: api.LLMDeployment, *, namespace: str, owner_uid: str | None) -> dict[str, Any]:
    """At most one model pod voluntarily evicted at a time. maxUnavailable (not minAvailable) so a
    single-replica model can still be drained off a node, and AlwaysAllow so pods that never became ready
    (e.g. a bad model) cannot block node maintenance."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(
            llmd, name=llmd.name, namespace=namespace, owner_uid=owner_uid, component=COMPONENT_SERVER
        ),
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": selector_labels(llmd)},
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }


# Prometheus's name for the pod label serving.llmops.dev/revision in Kubernetes service discovery.
REVISION_META_LABEL = "__meta_kubernetes_pod_label_" + "".join(c if c.isalnum() else "_" for c in REVISION_LABEL)


def build_monitor(llmd: api.LLMDeployment, *, namespace: str, owner_uid: str | None) -> dict[str, Any]:
    """A Prometheus Operator PodMonitor or ServiceMonitor (`spec.monitoring.kind`) scraping Triton's port
    `metrics` and the OpenAI front's port `openai` (its own errors and refusals, `source="front"`, which the
    canary's error rate adds to the model's)."""
    mon = llmd.spec.monitoring
    # The two kinds differ only in where the endpoint list lives.
    endpoints_key = "podMetricsEndpoints" if mon.kind == "PodMonitor" else "endpoints"

    def endpoint(port: str) -> dict[str, Any]:
        return {
            "port": port, "path": "/metrics", "interval": mon.interval,
            # The canonical series (llm_operator.metrics) keep a `revision` label, so the canary analysis can
            # compare revisions: copy it from the pod's serving.llmops.dev/revision label.
            "relabelings": [{"sourceLabels": [REVISION_META_LABEL], "targetLabel": "revision",
                             "action": "replace"}],
        }

    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": mon.kind,
        "metadata": _metadata(
            llmd,
            name=llmd.name,
            namespace=namespace,
            owner_uid=owner_uid,
            component=COMPONENT_MONITORING,
            extra_labels=dict(mon.labels),
        ),
        "spec": {
            "selector": {"matchLabels": selector_labels(llmd)},
            endpoints_key: [endpoint("metrics"), endpoint("openai")],
        },
    }


def build_children(
    llmd: api.LLMDeployment, *, namespace: str, owner_uid: str | None, monitoring_crds: bool, keda_crd: bool = False
) -> list[dict[str, Any]]:
    """Every child of the current revision, in apply order: the repository before the pods that mount it,
    the Service before the pods (so endpoints appear as pods become ready), the monitor and autoscaler last."""
    revision = revision_hash(llmd)
    children = [
        build_model_repository_configmap(llmd, namespace=namespace, revision=revision, owner_uid=owner_uid),
        build_service(llmd, namespace=namespace, owner_uid=owner_uid),
        build_deployment(llmd, namespace=namespace, revision=revision, owner_uid=owner_uid),
        build_pdb(llmd, namespace=namespace, owner_uid=owner_uid),
    ]
    if monitoring_crds and llmd.spec.monitoring.enabled:
        children.append(build_monitor(llmd, namespace=namespace, owner_uid=owner_uid))
    autoscaler = build_autoscaler(llmd, namespace=namespace, owner_uid=owner_uid, keda_crd=keda_crd)
    if autoscaler is not None:
        children.append(autoscaler)
    return children
