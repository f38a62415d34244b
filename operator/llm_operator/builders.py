"""Pure functions from an LLMDeployment to the manifests of its children.

Nothing here talks to a cluster: every `build_*` takes the validated model plus the few facts only the
reconciler knows (namespace, owner UID, whether the Prometheus Operator CRDs exist) and returns plain dicts
ready for server-side apply. `llmctl render` prints exactly what `build_children` returns.

Naming: the Service, PodDisruptionBudget and monitor are named after the LLMDeployment; the Deployment and
the model-repository ConfigMap of a revision are named `<name>-<revision>`, so a new revision starts next
to the old one and the reconciler retires old revisions by label (`serving.llmops.dev/revision`).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from llm_runtime.repository import render_python_backend
from pydantic import ValidationError

from . import api
from ._crd import dump_yaml

# ------------------------------------------------------------------------------------------ constants

APP_NAME = "triton-llm"
MANAGER = "triton-llm-operator"
PART_OF = "llmops"
COMPONENT_SERVER = "model-server"
COMPONENT_REPOSITORY = "model-repository"
COMPONENT_MONITORING = "monitoring"
REVISION_LABEL = f"{api.GROUP}/revision"
REVISION_LENGTH = 10

HTTP_PORT = 8000
GRPC_PORT = 8001
METRICS_PORT = 8002

REPOSITORY_DIR = "/models"
MODEL_DIR = "/mnt/model"

# UID/GID of the non-root `triton-server` user in NGC tritonserver images (and in our runtime image).
RUN_AS_USER = 1000

# The Service keeps routing to a terminating pod until endpoints propagate; sleeping before SIGTERM lets
# kube-proxy/ingress drop the pod first, then Triton drains within --exit-timeout-secs.
PRESTOP_SLEEP_SECONDS = 15
GRACE_MARGIN_SECONDS = 15
STARTUP_PERIOD_SECONDS = 10

TRITON_RELEASE = "26.07"
DEFAULT_IMAGES: dict[str, str] = {
    "python": "ghcr.io/llmops-dev/triton-llm-runtime:0.1.0",
    "vllm": f"nvcr.io/nvidia/tritonserver:{TRITON_RELEASE}-vllm-python-py3",
    "tensorrtllm": f"nvcr.io/nvidia/tritonserver:{TRITON_RELEASE}-trtllm-python-py3",
}
# KServe's storage initializer: `args: [<uri>, <dest>]`, reads HF_TOKEN / AWS_* from the environment and
# understands hf://repo:revision, s3:// and gs://.
FETCH_IMAGE = "kserve/storage-initializer:v0.15.2"

TRTLLM_EXECUTOR_WORKER = "/opt/tritonserver/backends/tensorrtllm/trtllmExecutorWorker"

GPU_RESOURCE = "nvidia.com/gpu"


class RenderError(ValueError):
    """A manifest file could not be rendered; the message names the file, document and field."""


# ------------------------------------------------------------------------------------ labels / names


def deployment_name(llmd: api.LLMDeployment, *, revision: str) -> str:
    return f"{llmd.name}-{revision}" if revision else llmd.name


def selector_labels(llmd: api.LLMDeployment) -> dict[str, str]:
    """Labels that select every model pod of this LLMDeployment, across revisions (Service, PDB, HPA)."""
    return {
        "app.kubernetes.io/name": APP_NAME,
        "app.kubernetes.io/instance": llmd.name,
        "app.kubernetes.io/component": COMPONENT_SERVER,
    }


def selector_string(llmd: api.LLMDeployment) -> str:
    """`status.selector` for the scale subresource: the serialized form of `selector_labels`."""
    return ",".join(f"{k}={v}" for k, v in sorted(selector_labels(llmd).items()))


def _label_value(text: str) -> str:
    value = re.sub(r"[^A-Za-z0-9_.-]", "-", text)[:63]
    return re.sub(r"^[^A-Za-z0-9]+|[^A-Za-z0-9]+$", "", value) or "unknown"


def image_for(llmd: api.LLMDeployment) -> str:
    return llmd.spec.runtime.image or DEFAULT_IMAGES[llmd.spec.runtime.backend]


def _version(llmd: api.LLMDeployment) -> str:
    # app.kubernetes.io/version: the server build, i.e. the image tag (digest-pinned images have none).
    image = image_for(llmd).split("@", 1)[0]
    last = image.rsplit("/", 1)[-1]
    return _label_value(last.split(":", 1)[1]) if ":" in last else "latest"


def common_labels(llmd: api.LLMDeployment, *, component: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": APP_NAME,
        "app.kubernetes.io/instance": llmd.name,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/managed-by": MANAGER,
        "app.kubernetes.io/part-of": PART_OF,
        "app.kubernetes.io/version": _version(llmd),
    }


def _metadata(
    llmd: api.LLMDeployment,
    *,
    name: str,
    namespace: str,
    owner_uid: str | None,
    component: str,
    revision: str | None = None,
    extra_labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    labels = {**(extra_labels or {}), **common_labels(llmd, component=component)}
    if revision is not None:
        labels[REVISION_LABEL] = revision
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "labels": labels}
    if annotations:
        meta["annotations"] = dict(annotations)
    if owner_uid:
        meta["ownerReferences"] = [owner_reference(llmd, owner_uid=owner_uid)]
    return meta


def owner_reference(llmd: api.LLMDeployment, *, owner_uid: str) -> dict[str, Any]:
    return {
        "apiVersion": api.API_VERSION,
        "kind": api.KIND,
        "name": llmd.name,
        "uid": owner_uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


# --------------------------------------------------------------------------------- status helpers


def gpu_summary(llmd: api.LLMDeployment) -> str:
    """`status.gpu` for the GPU printer column, e.g. `8x NVIDIA-H100-80GB-HBM3` or `1x mig-1g.10gb`."""
    res = llmd.spec.resources
    if res.gpu is not None:
        return f"{res.gpu.count}x {res.gpu.product or 'any'}"
    if res.mig is not None:
        suffix = f" ({res.mig.product})" if res.mig.product else ""
        return f"{res.mig.count}x mig-{res.mig.profile}{suffix}"
    return "none"


def ready_text(*, ready_replicas: int, desired_replicas: int) -> str:
    """`status.readyText` for the Ready printer column, e.g. `2/3`."""
    return f"{ready_replicas}/{desired_replicas}"


def endpoints(llmd: api.LLMDeployment, *, namespace: str) -> dict[str, str]:
    """`status.endpoints`: in-cluster URLs of the Service."""
    host = f"{llmd.name}.{namespace}.svc"
    return {
        "http": f"http://{host}:{HTTP_PORT}",
        "grpc": f"{host}:{GRPC_PORT}",
        "metrics": f"http://{host}:{METRICS_PORT}/metrics",
    }


# ------------------------------------------------------------------------------- model repository


def _pbtxt(value: str) -> str:
    return json.dumps(value)


def _pbtxt_parameters(params: dict[str, str]) -> list[str]:
    lines: list[str] = []
    for key in sorted(params):
        lines += [
            "parameters {",
            f"  key: {_pbtxt(key)}",
            f"  value: {{ string_value: {_pbtxt(params[key])} }}",
            "}",
        ]
    return lines


def _json_or_string(value: str) -> Any:
    # vLLM engine args are typed (floats, ints, bools); the CRD carries strings to stay simple and bounded.
    try:
        return json.loads(value)
    except ValueError:
        return value


def _vllm_files(spec: api.LLMDeploymentSpec) -> dict[str, str]:
    name = spec.model.name
    rt = spec.runtime
    engine: dict[str, Any] = {
        "model": MODEL_DIR,
        "served_model_name": name,
        "tensor_parallel_size": rt.tensor_parallel_size,
        "max_num_seqs": rt.max_batch_size,
        "dtype": rt.dtype,
        # Keep vLLM's stats on: the backend's token counters and TTFT histograms come from them.
        "disable_log_stats": False,
    }
    if spec.resources.gpu is not None and spec.resources.gpu.count > rt.tensor_parallel_size:
        engine["data_parallel_size"] = spec.resources.gpu.count // rt.tensor_parallel_size
    engine.update({k: _json_or_string(v) for k, v in rt.parameters.items()})
    config = [
        f"name: {_pbtxt(name)}",
        'backend: "vllm"',
        # KIND_MODEL: vLLM places itself on the GPUs it was given; Triton must not pin instances to devices.
        "instance_group [",
        "  {",
        "    count: 1",
        "    kind: KIND_MODEL",
        "  }",
        "]",
        *_pbtxt_parameters({"REPORT_CUSTOM_METRICS": "true"}),
    ]
    return {
        f"{name}/config.pbtxt": "\n".join(config) + "\n",
        f"{name}/1/model.json": json.dumps(engine, indent=2, sort_keys=True) + "\n",
    }


def _trtllm_files(spec: api.LLMDeploymentSpec) -> dict[str, str]:
    """The `tensorrt_llm` model of TensorRT-LLM's inflight-batching repository, serving the engines at
    MODEL_DIR (token IDs in, token IDs out; tokenization is the client's or an ensemble's job)."""
    name = spec.model.name
    rt = spec.runtime
    queue_policy = f"max_queue_size: {rt.max_queue_size}"
    if rt.queue_timeout_seconds:
        queue_policy += f" default_timeout_microseconds: {rt.queue_timeout_seconds * 1_000_000}"
    inputs = [
        ("input_ids", "TYPE_INT32", "[ -1 ]", False, True),
        ("input_lengths", "TYPE_INT32", "[ 1 ]", False, False),
        ("request_output_len", "TYPE_INT32", "[ 1 ]", False, False),
        ("end_id", "TYPE_INT32", "[ 1 ]", True, False),
        ("pad_id", "TYPE_INT32", "[ 1 ]", True, False),
        ("streaming", "TYPE_BOOL", "[ 1 ]", True, False),
        ("temperature", "TYPE_FP32", "[ 1 ]", True, False),
        ("runtime_top_k", "TYPE_INT32", "[ 1 ]", True, False),
        ("runtime_top_p", "TYPE_FP32", "[ 1 ]", True, False),
        ("random_seed", "TYPE_UINT64", "[ 1 ]", True, False),
    ]
    input_blocks = []
    for in_name, dtype, dims, optional, ragged in inputs:
        body = [f'    name: "{in_name}"', f"    data_type: {dtype}", f"    dims: {dims}"]
        if in_name != "input_ids":
            body.append("    reshape: { shape: [ ] }")
        if optional:
            body.append("    optional: true")
        if ragged:
            body.append("    allow_ragged_batch: true")
        input_blocks.append("  {\n" + "\n".join(body) + "\n  }")
    params = {
        "gpt_model_type": "inflight_fused_batching",
        "gpt_model_path": MODEL_DIR,
        "batch_scheduler_policy": "guaranteed_no_evict",
        "max_beam_width": "1",
        "executor_worker_path": TRTLLM_EXECUTOR_WORKER,
        **rt.parameters,
    }
    config = [
        f"name: {_pbtxt(name)}",
        'backend: "tensorrtllm"',
        f"max_batch_size: {rt.max_batch_size}",
        "model_transaction_policy {",
        "  decoupled: true",
        "}",
        "dynamic_batching {",
        f"  preferred_batch_size: [ {rt.max_batch_size} ]",
        "  max_queue_delay_microseconds: 0",
        f"  default_queue_policy {{ {queue_policy} }}",
        "}",
        "input [",
        ",\n".join(input_blocks),
        "]",
        "output [",
        '  {\n    name: "output_ids"\n    data_type: TYPE_INT32\n    dims: [ -1, -1 ]\n  },',
        '  {\n    name: "sequence_length"\n    data_type: TYPE_INT32\n    dims: [ -1 ]\n  }',
        "]",
        # The C++ backend drives the GPUs through its executor; the Triton instance itself is a CPU thread.
        "instance_group [",
        "  {",
        "    count: 1",
        "    kind: KIND_CPU",
        "  }",
        "]",
        *_pbtxt_parameters(params),
    ]
    return {f"{name}/config.pbtxt": "\n".join(config) + "\n", f"{name}/1/.keep": ""}


def repository_files(llmd: api.LLMDeployment) -> dict[str, str]:
    """The Triton model repository for the chosen backend, keyed by path relative to the repository root."""
    spec = llmd.spec
    rt = spec.runtime
    if rt.backend == "python":
        return render_python_backend(
            model_name=spec.model.name,
            model_dir=MODEL_DIR,
            max_batch_size=rt.max_batch_size,
            max_queue_size=rt.max_queue_size,
            queue_timeout_us=rt.queue_timeout_seconds * 1_000_000,
            dtype=rt.dtype,
            tensor_parallel_size=rt.tensor_parallel_size,
            parameters=dict(rt.parameters) or None,
        )
    if rt.backend == "vllm":
        return _vllm_files(spec)
    return _trtllm_files(spec)


def _configmap_key(path: str) -> str:
    # ConfigMap keys may not contain '/'; the volume's items[].path maps each key back to its path.
    return re.sub(r"[^-._a-zA-Z0-9]", "_", path.replace("/", "__"))


def _repository_items(files: dict[str, str]) -> list[dict[str, str]]:
    items = [{"key": _configmap_key(p), "path": p} for p in sorted(files)]
    keys = [i["key"] for i in items]
    if len(set(keys)) != len(keys):
        raise ValueError(f"model repository paths collide as ConfigMap keys: {sorted(files)}")
    return items


def build_model_repository_configmap(
    llmd: api.LLMDeployment, *, namespace: str, revision: str, owner_uid: str | None
) -> dict[str, Any]:
    """ConfigMap holding the Triton model repository of one revision. Immutable: a change of content is a
    new revision with a new name, so a pod can never see a repository from another revision."""
    files = repository_files(llmd)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(
            llmd,
            name=deployment_name(llmd, revision=revision),
            namespace=namespace,
            owner_uid=owner_uid,
            component=COMPONENT_REPOSITORY,
            revision=revision,
        ),
        "immutable": True,
        "data": {_configmap_key(p): files[p] for p in sorted(files)},
    }


# ------------------------------------------------------------------------------------ pod template


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
        "image": FETCH_IMAGE,
        "imagePullPolicy": "IfNotPresent",
        "args": [_hf_uri_with_revision(model) if model.scheme == "hf" else model.uri, MODEL_DIR],
        # HOME must be writable for the hub/boto caches under a read-only, non-root image user.
        "env": [{"name": "HOME", "value": "/tmp"}, {"name": "HF_HUB_DISABLE_TELEMETRY", "value": "1"}],
        "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "4Gi"}},
        "securityContext": _restricted_container_security(),
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
        "containers": [container],
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
    return {
        "metadata": {"labels": labels,
                     "annotations": {**spec.pod_annotations, f"{api.GROUP}/model-name": spec.model.name}},
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


def build_monitor(llmd: api.LLMDeployment, *, namespace: str, owner_uid: str | None) -> dict[str, Any]:
    """A Prometheus Operator PodMonitor or ServiceMonitor (`spec.monitoring.kind`) scraping port `metrics`."""
    mon = llmd.spec.monitoring
    # The two kinds differ only in where the endpoint list lives.
    endpoints_key = "podMetricsEndpoints" if mon.kind == "PodMonitor" else "endpoints"
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
            endpoints_key: [{"port": "metrics", "path": "/metrics", "interval": mon.interval}],
        },
    }


def build_children(
    llmd: api.LLMDeployment, *, namespace: str, owner_uid: str | None, monitoring_crds: bool
) -> list[dict[str, Any]]:
    """Every child of the current revision, in apply order: the repository before the pods that mount it,
    the Service before the pods (so endpoints appear as pods become ready), the monitor last."""
    revision = revision_hash(llmd)
    children = [
        build_model_repository_configmap(llmd, namespace=namespace, revision=revision, owner_uid=owner_uid),
        build_service(llmd, namespace=namespace, owner_uid=owner_uid),
        build_deployment(llmd, namespace=namespace, revision=revision, owner_uid=owner_uid),
        build_pdb(llmd, namespace=namespace, owner_uid=owner_uid),
    ]
    if monitoring_crds and llmd.spec.monitoring.enabled:
        children.append(build_monitor(llmd, namespace=namespace, owner_uid=owner_uid))
    return children


# ------------------------------------------------------------------------------------------ render


def format_validation_error(err: ValidationError) -> str:
    """One line per problem: `spec.model.uri: <message>` (camelCase paths, as written in the manifest)."""
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "<root>"
        msg = e["msg"].removeprefix("Value error, ")
        lines.append(f"{loc}: {msg}")
    return "\n".join(lines)


def load_file(path: str | Path) -> list[api.LLMDeployment]:
    """Parse and validate every LLMDeployment in a (multi-document) YAML file; other kinds are skipped."""
    path = Path(path)
    try:
        docs = list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
    except OSError as exc:
        raise RenderError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise RenderError(f"{path}: not valid YAML: {exc}") from exc
    out: list[api.LLMDeployment] = []
    for index, doc in enumerate(docs):
        if doc is None:
            continue
        where = f"{path}: document {index + 1}"
        if not isinstance(doc, dict):
            raise RenderError(f"{where}: expected a mapping, got {type(doc).__name__}")
        api_version, kind = doc.get("apiVersion"), doc.get("kind")
        ours = isinstance(api_version, str) and api_version.startswith(f"{api.GROUP}/")
        if kind != api.KIND and not ours:
            # Secrets/PVCs that an example ships next to its LLMDeployment are the user's, not children.
            continue
        if kind != api.KIND or api_version != api.API_VERSION:
            raise RenderError(
                f"{where}: expected apiVersion {api.API_VERSION} kind {api.KIND}, got {api_version} {kind}"
            )
        name = (doc.get("metadata") or {}).get("name")
        if name:
            where += f" ({name})"
        try:
            llmd = api.parse(doc)
        except ValidationError as exc:
            raise RenderError(f"{where}: invalid LLMDeployment:\n{format_validation_error(exc)}") from exc
        if not name:
            raise RenderError(f"{where}: metadata.name is required")
        out.append(llmd)
    return out


def _dump_all(manifests: Iterable[dict[str, Any]]) -> str:
    parts = []
    for m in manifests:
        header = f"# Source: {m['kind']}/{m['metadata']['name']}\n"
        parts.append("---\n" + header + dump_yaml(m))
    return "".join(parts)


def render_file(path: str | Path, *, monitoring_crds: bool = True) -> str:
    """Render every LLMDeployment in `path` to its child manifests as multi-document YAML, like
    `helm template`. Namespace comes from metadata.namespace (default `default`); owner references are
    included only when the object carries a metadata.uid (i.e. was read back from a cluster)."""
    rendered: list[dict[str, Any]] = []
    for llmd in load_file(path):
        uid = llmd.metadata.get("uid")
        rendered += build_children(
            llmd,
            namespace=llmd.namespace or "default",
            owner_uid=uid if isinstance(uid, str) and uid else None,
            monitoring_crds=monitoring_crds,
        )
    return _dump_all(rendered)
