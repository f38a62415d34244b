"""Label keys, names, owner references and small status helpers shared by every builder."""

from __future__ import annotations

import re
from typing import Any

from .. import __version__, api

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
# The OpenAI-compatible API (`openai` container of every model pod): the way clients talk to a model.
OPENAI_PORT = 9000

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
    # Built by `make images` / `llmctl images build` from runtime/Containerfile, tagged with the package version.
    "python": f"ghcr.io/llmops-dev/triton-llm-runtime:{__version__}",
    "vllm": f"nvcr.io/nvidia/tritonserver:{TRITON_RELEASE}-vllm-python-py3",
    "tensorrtllm": f"nvcr.io/nvidia/tritonserver:{TRITON_RELEASE}-trtllm-python-py3",
}


def set_runtime_image(image: str) -> None:
    """Where this installation's runtime image lives (`llmctl run|render --runtime-image`, the chart's
    `runtimeImage`/`imageRegistry`): the python backend's default image and the image of every pod's `openai`
    container. Set once at start-up, before any object is built, so a process renders one image throughout."""
    if not image or any(c.isspace() for c in image):
        raise ValueError(f"--runtime-image must be an image reference, got {image!r}")
    DEFAULT_IMAGES["python"] = image


# The fetch init container runs `llm-fetch SOURCE DEST` (llm_runtime.fetch: hf://repo:revision, s3://, gs://;
# HF_TOKEN, AWS_*, GCS_OAUTH_TOKEN from the spec's secretRef) from the runtime image.
FETCH_COMMAND = ["llm-fetch"]


def fetch_image() -> str:
    """The fetch init container's image: this installation's runtime image, which carries `llm-fetch`. It follows
    `--runtime-image` / the chart's `runtimeImage` like the `openai` container, whatever the backend and
    `spec.runtime.image` (a user's Triton image need not have the tool). For the python backend's default image
    it is the Triton container's image too: one pull per node."""
    return DEFAULT_IMAGES["python"]


TRTLLM_EXECUTOR_WORKER = "/opt/tritonserver/backends/tensorrtllm/trtllmExecutorWorker"

GPU_RESOURCE = "nvidia.com/gpu"




# ------------------------------------------------------------------------------------ labels / names


def front_image(llmd: api.LLMDeployment) -> str:
    """The image of the `openai` container. The python backend's image is the runtime image, which holds the
    front: one image, pulled once. The vllm and tensorrtllm Triton images lack it, so their pods run the
    front from the project's runtime image."""
    if llmd.spec.runtime.backend == "python":
        return image_for(llmd)
    return DEFAULT_IMAGES["python"]


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
        "openai": f"http://{host}:{OPENAI_PORT}/v1",
        "model": llmd.spec.model.openai_id,
    }
