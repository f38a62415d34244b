"""Pure functions from an LLMDeployment to the manifests of its children.

Nothing here talks to a cluster: every `build_*` takes the validated model plus the few facts only the
reconciler knows (namespace, owner UID, whether the Prometheus Operator CRDs exist) and returns plain dicts
ready for server-side apply. `llmctl render` prints exactly what `build_children` returns.

Naming: the Service, PodDisruptionBudget and monitor are named after the LLMDeployment; the Deployment and
the model-repository ConfigMap of a revision are named `<name>-<revision>`, so a new revision starts next
to the old one and the reconciler retires old revisions by label (`serving.llmops.dev/revision`).
"""

from __future__ import annotations

from ._meta import (
    APP_NAME,
    COMPONENT_MONITORING,
    COMPONENT_REPOSITORY,
    COMPONENT_SERVER,
    DEFAULT_IMAGES,
    FETCH_COMMAND,
    GPU_RESOURCE,
    GRACE_MARGIN_SECONDS,
    GRPC_PORT,
    HTTP_PORT,
    MANAGER,
    METRICS_PORT,
    MODEL_DIR,
    OPENAI_PORT,
    PART_OF,
    PRESTOP_SLEEP_SECONDS,
    REPOSITORY_DIR,
    REVISION_LABEL,
    REVISION_LENGTH,
    RUN_AS_USER,
    STARTUP_PERIOD_SECONDS,
    TRITON_RELEASE,
    TRTLLM_EXECUTOR_WORKER,
    common_labels,
    deployment_name,
    endpoints,
    fetch_image,
    gpu_summary,
    image_for,
    owner_reference,
    ready_text,
    selector_labels,
    selector_string,
    set_runtime_image,
)
from .autoscaling import (
    DEFAULT_BEHAVIOR,
    build_autoscaler,
    build_hpa,
    build_scaled_object,
)
from .pod import (
    build_pod_template,
    revision_hash,
    termination_grace_seconds,
)
from .render import (
    RenderError,
    format_validation_error,
    load_file,
    render_file,
)
from .repository import (
    build_model_repository_configmap,
    repository_files,
)
from .traffic import (
    build_revision_service,
    revision_service_name,
    route_problem,
    route_weights,
)
from .workload import (
    build_children,
    build_deployment,
    build_monitor,
    build_pdb,
    build_service,
)

__all__ = [
    "APP_NAME",
    "COMPONENT_MONITORING",
    "COMPONENT_REPOSITORY",
    "COMPONENT_SERVER",
    "DEFAULT_BEHAVIOR",
    "DEFAULT_IMAGES",
    "FETCH_COMMAND",
    "GPU_RESOURCE",
    "GRACE_MARGIN_SECONDS",
    "GRPC_PORT",
    "HTTP_PORT",
    "MANAGER",
    "METRICS_PORT",
    "MODEL_DIR",
    "OPENAI_PORT",
    "PART_OF",
    "PRESTOP_SLEEP_SECONDS",
    "REPOSITORY_DIR",
    "REVISION_LABEL",
    "REVISION_LENGTH",
    "RUN_AS_USER",
    "STARTUP_PERIOD_SECONDS",
    "TRITON_RELEASE",
    "TRTLLM_EXECUTOR_WORKER",
    "RenderError",
    "build_autoscaler",
    "build_children",
    "build_deployment",
    "build_hpa",
    "build_model_repository_configmap",
    "build_monitor",
    "build_pdb",
    "build_pod_template",
    "build_revision_service",
    "build_scaled_object",
    "build_service",
    "common_labels",
    "deployment_name",
    "endpoints",
    "fetch_image",
    "format_validation_error",
    "gpu_summary",
    "image_for",
    "load_file",
    "owner_reference",
    "ready_text",
    "render_file",
    "repository_files",
    "revision_hash",
    "revision_service_name",
    "route_problem",
    "route_weights",
    "selector_labels",
    "selector_string",
    "set_runtime_image",
    "termination_grace_seconds",
]
