"""The model pod template (GPU/MIG limits, placement, probes, restricted security) and the revision hash."""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

from .. import api
from ._meta import (
    COMPONENT_SERVER,
    FETCH_COMMAND,
    GPU_RESOURCE,
    GRACE_MARGIN_SECONDS,
    GRPC_PORT,
    HTTP_PORT,
    METRICS_PORT,
    MODEL_DIR,
    OPENAI_PORT,
    PRESTOP_SLEEP_SECONDS,
    REPOSITORY_DIR,
    REVISION_LABEL,
    REVISION_LENGTH,
    RUN_AS_USER,
    STARTUP_PERIOD_SECONDS,
    common_labels,
    deployment_name,
    fetch_image,
    front_image,
    image_for,
    selector_labels,
)
from .repository import _repository_items, repository_files

# ------------------------------------------------------------------------------------ pod template

RESTARTED_AT_ANNOTATION = f"{api.GROUP}/restartedAt"
"""An LLMDeployment annotation the operator copies into the pod template, as `kubectl rollout restart` sets
`kubectl.kubernetes.io/restartedAt`: a new value is a new revision, so every model pod is replaced through the
rollout strategy, without a spec change (no GitOps drift). Argo CD's restart action writes it."""


def _gpu_limits(spec: api.LLMDeploymentSpec) -> dict[str, Any]:
    if spec.resources.gpu is not None:
        return {GPU_RESOURCE: spec.resources.gpu.count}
    if spec.resources.mig is not None:
        return {f"nvidia.com/mig-{spec.resources.mig.profile}": spec.resources.mig.count}
    return {}


def _gpu_product(spec: api.LLMDeploymentSpec) -> str | None:
    if spec.resources.gpu is not None:
        return spec.resources.gpu.product
    if spec.resources.mig is not None:
        return spec.resources.mig.product
    return None


def _uses_gpu(spec: api.LLMDeploymentSpec) -> bool:
    return spec.resources.gpu is not None or spec.resources.mig is not None


def _container_resources(spec: api.LLMDeploymentSpec) -> dict[str, Any]:
    # GPUs may only be limits (requests default to them); CPU/memory requests == limits gives the pod a
    # predictable QoS so a neighbour's burst cannot evict a model that took minutes to load.
    limits: dict[str, Any] = {}
    requests: dict[str, Any] = {}
    for key, value in (("cpu", spec.resources.cpu), ("memory", spec.resources.memory)):
        if value is not None:
            limits[key] = str(value)
            requests[key] = str(value)
    limits.update(_gpu_limits(spec))
    out: dict[str, Any] = {}
    if requests:
        out["requests"] = requests
    if limits:
        out["limits"] = limits
    return out


def _restricted_container_security() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _pod_security() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_USER,
        "runAsGroup": RUN_AS_USER,
        "fsGroup": RUN_AS_USER,
        # A model PVC holds hundreds of GB: never chown it recursively on every pod start.
        "fsGroupChangePolicy": "OnRootMismatch",
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _hf_uri_with_revision(model: api.ModelSpec) -> str:
    assert model.uri is not None
    return f"{model.uri}:{model.revision}" if model.revision else model.uri


def _model_volume(
    spec: api.LLMDeploymentSpec,
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any] | None]:
    """(volume, mount into the Triton container, fetch init container or None) for the weights."""
    model = spec.model
    pvc = model.pvc_source()
    mount: dict[str, Any] = {"name": "model", "mountPath": MODEL_DIR, "readOnly": True}
    if pvc is not None:
        if pvc.path:
            mount["subPath"] = pvc.path
        volume = {"name": "model", "persistentVolumeClaim": {"claimName": pvc.claim_name, "readOnly": True}}
        return volume, mount, None
    assert model.uri is not None
    if model.scheme == "oci":
        volume = {
            "name": "model",
            "image": {
                "reference": model.uri.removeprefix("oci://"),
                "pullPolicy": spec.runtime.image_pull_policy,
            },
        }
        return volume, mount, None
    fetch: dict[str, Any] = {
        "name": "fetch-model",
        "image": fetch_image(),
        "imagePullPolicy": spec.runtime.image_pull_policy,
        "command": list(FETCH_COMMAND),
        "args": [_hf_uri_with_revision(model) if model.scheme == "hf" else model.uri, MODEL_DIR],
        # llm-fetch keeps every file it writes under MODEL_DIR (huggingface_hub's HF_HOME included); HOME only
        # has to be a folder for libraries that look at it.
        "env": [{"name": "HOME", "value": "/tmp"}, {"name": "HF_HUB_DISABLE_TELEMETRY", "value": "1"}],
        "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "4Gi"}},
        "securityContext": _restricted_container_security(),
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [{"name": "model", "mountPath": MODEL_DIR}],
    }
    if model.secret_ref is not None:
        fetch["envFrom"] = [{"secretRef": {"name": model.secret_ref.name}}]
    return {"name": "model", "emptyDir": {}}, mount, fetch


def _tolerations(spec: api.LLMDeploymentSpec) -> list[dict[str, Any]]:
    tolerations: list[dict[str, Any]] = []
    if _uses_gpu(spec):
        tolerations.append({"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"})
    if spec.placement.capacity_type in ("Spot", "PreferSpot"):
        tolerations.append({"key": api.SPOT_TAINT_KEY, "operator": "Equal", "value": "true", "effect": "NoSchedule"})
    tolerations.extend(t.to_k8s() for t in spec.placement.tolerations)
    return tolerations


def _node_selector(spec: api.LLMDeploymentSpec) -> dict[str, str]:
    selector = dict(spec.placement.node_selector)
    product = _gpu_product(spec)
    if product:
        selector[api.GPU_PRODUCT_LABEL] = product
    if spec.placement.capacity_type == "Spot":
        selector[api.CAPACITY_TYPE_LABEL] = "spot"
    return selector


def _affinity(spec: api.LLMDeploymentSpec) -> dict[str, Any] | None:
    """The user's affinity with the capacity-type terms merged in (never replacing the user's terms)."""
    affinity: dict[str, Any] = json.loads(json.dumps(spec.placement.affinity or {}))
    capacity = spec.placement.capacity_type
    if capacity == "OnDemand":
        # Spot nodes are tainted, but an untainted spot pool must not catch an on-demand model either.
        expr = {"key": api.CAPACITY_TYPE_LABEL, "operator": "NotIn", "values": ["spot"]}
        node = affinity.setdefault("nodeAffinity", {})
        required = node.setdefault("requiredDuringSchedulingIgnoredDuringExecution", {})
        terms = required.setdefault("nodeSelectorTerms", [])
        if not terms:
            terms.append({})
        # Terms are ORed: the constraint must be ANDed into every one of them.
        for term in terms:
            term.setdefault("matchExpressions", []).append(dict(expr))
    elif capacity == "PreferSpot":
        node = affinity.setdefault("nodeAffinity", {})
        preferred = node.setdefault("preferredDuringSchedulingIgnoredDuringExecution", [])
        preferred.append(
            {
                "weight": 100,
                "preference": {
                    "matchExpressions": [{"key": api.CAPACITY_TYPE_LABEL, "operator": "In", "values": ["spot"]}]
                },
            }
        )
    return affinity or None


def _topology_spread(llmd: api.LLMDeployment) -> list[dict[str, Any]]:
    out = []
    for constraint in llmd.spec.placement.topology_spread_constraints:
        c = json.loads(json.dumps(constraint))
        c.setdefault("labelSelector", {"matchLabels": selector_labels(llmd)})
        out.append(c)
    return out


def _triton_args(spec: api.LLMDeploymentSpec) -> list[str]:
    return [
        "tritonserver",
        f"--model-repository={REPOSITORY_DIR}",
        f"--http-port={HTTP_PORT}",
        f"--grpc-port={GRPC_PORT}",
        f"--metrics-port={METRICS_PORT}",
        f"--exit-timeout-secs={spec.runtime.exit_timeout_seconds}",
        "--strict-readiness=true",
        # TTFT and latency histograms for dashboards and a future autoscaler.
        "--metrics-config=histogram_latencies=true",
        *spec.runtime.args,
    ]


def _triton_env(spec: api.LLMDeploymentSpec) -> list[dict[str, str]]:
    env: list[dict[str, str]] = []
    if spec.runtime.backend == "tensorrtllm":
        # Orchestrator mode: one tritonserver spawns the per-GPU executor workers itself (no mpirun wrapper).
        env.append({"name": "TRTLLM_ORCHESTRATOR", "value": "1"})
    env.extend({"name": e.name, "value": e.value} for e in spec.runtime.env)
    return env


def _openai_container(llmd: api.LLMDeployment, model_mount: dict[str, Any]) -> dict[str, Any]:
    """The OpenAI-compatible front (`llm_runtime.openai_server`) beside Triton: a second container, so its
    readiness, logs and resources are its own and the Triton container's command stays the backend's. It
    renders chat templates with the model's tokenizer and calls Triton over gRPC on localhost with the
    backend's tensor names; the pod is Ready only once both are."""
    spec = llmd.spec
    return {
        "name": "openai",
        "image": front_image(llmd),
        "imagePullPolicy": spec.runtime.image_pull_policy,
        "args": [
            "python",
            "-m",
            "llm_runtime.openai_server",
            f"--model-dir={MODEL_DIR}",
            f"--model-name={spec.model.openai_id}",
            f"--triton-model={spec.model.name}",
            f"--backend={spec.runtime.backend}",
            f"--grpc-url=127.0.0.1:{GRPC_PORT}",
            "--host=0.0.0.0",
            f"--port={OPENAI_PORT}",
            f"--exit-timeout={spec.runtime.exit_timeout_seconds}",
        ],
        "ports": [{"name": "openai", "containerPort": OPENAI_PORT, "protocol": "TCP"}],
        # A tokenizer and an HTTP server: small next to the model, and never the reason a GPU node is full.
        "resources": {"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"memory": "2Gi"}},
        # 200 only once Triton reports the model ready: no client reaches a pod that cannot answer.
        "readinessProbe": {
            "httpGet": {"path": "/health", "port": "openai"},
            "periodSeconds": 5,
            "timeoutSeconds": 5,
            "failureThreshold": 3,
        },
        # Keeps answering while the Service drops the pod, as Triton does; then drains within exit timeout.
        "lifecycle": {"preStop": {"sleep": {"seconds": PRESTOP_SLEEP_SECONDS}}},
        "securityContext": _restricted_container_security(),
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [dict(model_mount), {"name": "tmp", "mountPath": "/tmp"}],
    }


def termination_grace_seconds(spec: api.LLMDeploymentSpec) -> int:
    return PRESTOP_SLEEP_SECONDS + spec.runtime.exit_timeout_seconds + GRACE_MARGIN_SECONDS


def build_pod_template(llmd: api.LLMDeployment, *, revision: str) -> dict[str, Any]:
    """The Deployment's pod template for `revision` (an empty revision renders the hashable form)."""
    spec = llmd.spec
    files = repository_files(llmd)
    model_volume, model_mount, fetch = _model_volume(spec)
    container: dict[str, Any] = {
        "name": "triton",
        "image": image_for(llmd),
        "imagePullPolicy": spec.runtime.image_pull_policy,
        "args": _triton_args(spec),
        "ports": [
            {"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"},
            {"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"},
            {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"},
        ],
        "env": _triton_env(spec),
        "resources": _container_resources(spec),
        # Triton opens its ports only after every model loaded: the startup probe carries the whole load
        # budget so liveness cannot kill a pod that is still reading 140 GB of weights.
        "startupProbe": {
            "httpGet": {"path": "/v2/health/ready", "port": "http"},
            "periodSeconds": STARTUP_PERIOD_SECONDS,
            "timeoutSeconds": 5,
            "failureThreshold": math.ceil(spec.runtime.startup_timeout_seconds / STARTUP_PERIOD_SECONDS),
        },
        "readinessProbe": {
            "httpGet": {"path": "/v2/health/ready", "port": "http"},
            "periodSeconds": 5,
            "timeoutSeconds": 5,
            "failureThreshold": 3,
        },
        "livenessProbe": {
            "httpGet": {"path": "/v2/health/live", "port": "http"},
            "periodSeconds": 10,
            "timeoutSeconds": 5,
            "failureThreshold": 6,
        },
        "lifecycle": {"preStop": {"sleep": {"seconds": PRESTOP_SLEEP_SECONDS}}},
        "securityContext": _restricted_container_security(),
        # A model that fails to load exits before any probe passes: the log tail becomes the termination
        # message, which the operator quotes in its Degraded condition.
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [
            {"name": "model-repository", "mountPath": REPOSITORY_DIR, "readOnly": True},
            model_mount,
            {"name": "dshm", "mountPath": "/dev/shm"},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }
    if not container["env"]:
        del container["env"]
    if not container["resources"]:
        del container["resources"]
    volumes = [
        {
            "name": "model-repository",
            "configMap": {
                "name": deployment_name(llmd, revision=revision),
                "items": _repository_items(files),
            },
        },
        model_volume,
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": str(spec.resources.shared_memory)}},
        {"name": "tmp", "emptyDir": {}},
    ]
    pod_spec: dict[str, Any] = {
        "terminationGracePeriodSeconds": termination_grace_seconds(spec),
        # Triton never calls the Kubernetes API; no token in the pod, and no env var per Service in the
        # namespace (thousands of LLMDeployments would otherwise bloat every pod's environment).
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": _pod_security(),
        "containers": [container, _openai_container(llmd, model_mount)],
        "volumes": volumes,
    }
    if fetch is not None:
        pod_spec["initContainers"] = [fetch]
    node_selector = _node_selector(spec)
    if node_selector:
        pod_spec["nodeSelector"] = node_selector
    tolerations = _tolerations(spec)
    if tolerations:
        pod_spec["tolerations"] = tolerations
    affinity = _affinity(spec)
    if affinity:
        pod_spec["affinity"] = affinity
    spread = _topology_spread(llmd)
    if spread:
        pod_spec["topologySpreadConstraints"] = spread
    if spec.placement.priority_class_name:
        pod_spec["priorityClassName"] = spec.placement.priority_class_name
    pull_secrets = [s.name for s in spec.runtime.image_pull_secrets]
    if spec.model.scheme == "oci" and spec.model.secret_ref is not None:
        pull_secrets.append(spec.model.secret_ref.name)
    if pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": n} for n in dict.fromkeys(pull_secrets)]
    labels = {**common_labels(llmd, component=COMPONENT_SERVER), REVISION_LABEL: revision}
    annotations = {**spec.pod_annotations, f"{api.GROUP}/model-name": spec.model.name}
    if spec.model.served_model_name:
        annotations[f"{api.GROUP}/served-model-name"] = spec.model.served_model_name
    restarted_at = (llmd.metadata.get("annotations") or {}).get(RESTARTED_AT_ANNOTATION)
    if restarted_at:
        annotations[RESTARTED_AT_ANNOTATION] = str(restarted_at)
    return {
        "metadata": {"labels": labels, "annotations": annotations},
        "spec": pod_spec,
    }


# ---------------------------------------------------------------------------------------- revision


def revision_hash(llmd: api.LLMDeployment) -> str:
    """Hash of everything that shapes a model pod: the pod template (rendered with an empty revision so the
    hash does not depend on itself) and the model repository it mounts. Replicas, autoscaling, service and
    monitoring are not part of either, so scaling never creates a revision."""
    payload = {
        "template": build_pod_template(llmd, revision=""),
        "repository": repository_files(llmd),
    }
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    # Hex digits only could parse as a number in YAML/labels ("0123456789"); a letter keeps it a string.
    return "r" + digest[: REVISION_LENGTH - 1]
