"""The LLMDeployment API (serving.llmops.dev/v1alpha1): the single source of truth for the CRD.

`_crd.py` turns these models into the CRD's OpenAPI schema; `builders` reads them to render children.
Cross-field rules are declared once as `CelRule`s: the CEL expression goes into the CRD's
`x-kubernetes-validations` (so the API server rejects bad objects), and the Python mirror runs in a pydantic
validator with the *same message* (so `llmctl render` rejects them identically without a cluster).

Field descriptions are the attribute docstrings (`use_attribute_docstrings`), which is what
`kubectl explain llmd.spec...` prints, so they are written for users.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    WithJsonSchema,
    model_validator,
)
from pydantic.alias_generators import to_camel

GROUP = "serving.llmops.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "LLMDeployment"
PLURAL = "llmdeployments"
SINGULAR = "llmdeployment"
SHORT_NAMES = ("llmd",)

# Node label / taint contract shared with the test cluster and documented in docs/api.md.
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
CAPACITY_TYPE_LABEL = "llmops.dev/capacity-type"
SPOT_TAINT_KEY = "llmops.dev/spot"

URI_SCHEMES = ("hf", "s3", "gs", "oci", "pvc")
# Kept identical in CEL (RE2) and Python (re): no look-arounds, no backreferences. Python checks them with
# re.fullmatch: RE2's `$` never matches before a trailing newline, re.match's does.
# No backslashes: these are embedded in single-quoted CEL strings, where `\s` would be an invalid escape.
URI_PATTERN = r"^(hf|s3|gs|oci|pvc)://[^ ]+$"
PVC_URI_PATTERN = r"^pvc://[a-z0-9]([-a-z0-9]*[a-z0-9])?(/[^ ]*)?$"
PARAMETER_KEY_PATTERN = r"^[A-Za-z0-9_.-]+$"
QUANTITY_PATTERN = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
DNS1123_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS1123_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
LABEL_VALUE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
# '+me' profiles exist, but '+' is not allowed in an extended resource name, so they cannot be requested.
MIG_PROFILE_PATTERN = r"^[1-7]g\.[0-9]+gb$"
DURATION_PATTERN = r"^([0-9]+(ms|s|m|h))+$"
ENV_NAME_PATTERN = r"^[-._a-zA-Z][-._a-zA-Z0-9]*$"
MODEL_NAME_PATTERN = r"^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$"
# The id OpenAI clients send: Hugging Face style `org/name`, with the tag characters vendors use (`:`, `@`).
SERVED_MODEL_NAME_PATTERN = r"^[A-Za-z0-9]([A-Za-z0-9._:@+/-]*[A-Za-z0-9])?$"
CONDITION_TYPE_PATTERN = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$"
)
CONDITION_REASON_PATTERN = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"

# tritonserver flags the operator sets itself; letting runtime.args override them would break probes,
# the Service or graceful shutdown in ways that are hard to diagnose from the pod.
RESERVED_TRITON_FLAGS = (
    "--model-repository",
    "--model-store",
    "--http-port",
    "--grpc-port",
    "--metrics-port",
    "--exit-timeout-secs",
)


@dataclass(frozen=True)
class CelRule:
    """One cross-field rule, enforced by the API server (CEL) and by pydantic (`check`) with one message."""

    rule: str
    message: str
    check: Callable[[Any], bool]
    field_path: str | None = None
    reason: str | None = None

    def as_schema(self) -> dict[str, str]:
        out = {"rule": self.rule, "message": self.message}
        if self.field_path:
            out["fieldPath"] = self.field_path
        if self.reason:
            out["reason"] = self.reason
        return out


def _add_cel(schema: dict[str, Any], cls: type[BaseModel]) -> None:
    rules: tuple[CelRule, ...] = getattr(cls, "__cel_rules__", ())
    if rules:
        schema["x-kubernetes-validations"] = [r.as_schema() for r in rules]


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        use_attribute_docstrings=True,
        json_schema_extra=_add_cel,
        validate_default=False,
        # JSON types as the API server checks them: no "1" for an integer, 1 or "true" for a boolean, "1.5" for a
        # number (found by tests/e2e/test_schema_fuzz.py: lax coercion let `llmctl render` accept them).
        strict=True,
    )

    __cel_rules__: ClassVar[tuple[CelRule, ...]] = ()

    @model_validator(mode="before")
    @classmethod
    def _drop_nulls(cls, data: Any) -> Any:
        # The API server prunes a null of a non-nullable field (none is nullable) before defaulting: `runtime:
        # null` or `backend: null` means "absent", so the default applies (found by test_schema_fuzz.py).
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if v is not None}
        return data

    @model_validator(mode="after")
    def _check_cel_mirror(self) -> Any:
        # Every rule, like the API server (which reports each failing CEL rule), not just the first; one message
        # per line (format_validation_error prints each with the field's path).
        failed: list[str] = []
        for rule in type(self).__cel_rules__:
            try:
                ok = rule.check(self)
            except Exception:
                if not failed:
                    raise
                continue  # a rule that assumes an earlier one holds
            if not ok:
                failed.append(rule.message)
        if failed:
            raise ValueError("\n".join(failed))
        return self

    def to_k8s(self) -> dict[str, Any]:
        """camelCase JSON form without unset optionals, as the API server would store it."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


def _check_quantity(value: str | int) -> str | int:
    if isinstance(value, str) and not re.fullmatch(QUANTITY_PATTERN, value):
        raise ValueError(f"{value!r} is not a Kubernetes quantity (examples: 500m, 8, 32Gi)")
    if isinstance(value, int) and value < 0:
        raise ValueError(f"{value!r} must not be negative")
    return value


_QUANTITY_SUFFIX = {
    "": 1,
    "n": 10**-9,
    "u": 10**-6,
    "m": 10**-3,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "E": 10**18,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
}


def quantity_value(value: str | int) -> float:
    """A Kubernetes quantity as a number (bytes, cores), for the few comparisons the rules need."""
    if isinstance(value, int):
        return float(value)
    match = re.fullmatch(r"([+-]?[0-9.]+)([eE][+-]?[0-9]+|[numkMGTPE]i?)?", value)
    if match is None:
        raise ValueError(f"{value!r} is not a Kubernetes quantity")
    number, suffix = match.group(1), match.group(2) or ""
    if suffix[:1] in ("e", "E") and suffix not in _QUANTITY_SUFFIX:  # `E`/`Ei` are exa, `E3` an exponent
        return float(number + suffix)
    return float(number) * _QUANTITY_SUFFIX[suffix]


def _shm_fits(s: ResourcesSpec) -> bool:
    if s.memory is None:
        return True
    return quantity_value(s.shared_memory) < quantity_value(s.memory)


# Same shape controller-gen emits for resource.Quantity: int-or-string with the quantity pattern.
Quantity = Annotated[
    str | int,
    AfterValidator(_check_quantity),
    WithJsonSchema(
        {
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "pattern": QUANTITY_PATTERN,
            "x-kubernetes-int-or-string": True,
        }
    ),
]

# The API server prunes a null map value (`podAnnotations: {a: null}` is stored as `{}`); so does the mirror.
_NO_NULL_VALUES = BeforeValidator(lambda d: {k: v for k, v in d.items() if v is not None} if isinstance(d, dict) else d)

ShortMap = Annotated[
    dict[Annotated[str, StringConstraints(max_length=253)], Annotated[str, StringConstraints(max_length=1024)]],
    Field(max_length=32),
    _NO_NULL_VALUES,
]


# ---------------------------------------------------------------------------------------------- model


class LocalObjectReference(_Model):
    """A reference to an object in the same namespace."""

    name: Annotated[str, StringConstraints(min_length=1, max_length=253, pattern=DNS1123_SUBDOMAIN)]
    """Name of the object in the LLMDeployment's namespace."""


class PVCSource(_Model):
    """Model weights already present on a PersistentVolumeClaim."""

    claim_name: Annotated[str, StringConstraints(min_length=1, max_length=253, pattern=DNS1123_SUBDOMAIN)]
    """Name of the PersistentVolumeClaim in the LLMDeployment's namespace."""
    path: Annotated[str, StringConstraints(max_length=1024)] = ""
    """Directory inside the volume that holds the model (mounted as a subPath); empty for the volume root."""

    __cel_rules__ = (
        CelRule(
            rule="!self.path.startsWith('/') && !self.path.contains('..')",
            message="spec.model.pvc.path must be relative to the volume root and must not contain '..'",
            check=lambda s: not s.path.startswith("/") and ".." not in s.path,
            field_path=".path",
        ),
    )


def _model_source_count(m: ModelSpec) -> int:
    return int(m.uri is not None) + int(m.pvc is not None)


class ModelSpec(_Model):
    """Which model to serve and where its weights come from. Set exactly one source: `uri` or `pvc`."""

    name: Annotated[str, StringConstraints(min_length=1, max_length=63, pattern=MODEL_NAME_PATTERN)]
    """The Triton model name: the model repository folder, and `<name>` in Triton's own
    `/v2/models/<name>/...` requests. No slashes (it is a folder name)."""
    served_model_name: (
        Annotated[str, StringConstraints(min_length=1, max_length=256, pattern=SERVED_MODEL_NAME_PATTERN)] | None
    ) = None
    """The model id OpenAI clients send (`model` in `/v1/chat/completions` and `/v1/completions`, listed by
    `/v1/models`), e.g. `meta-llama/Llama-3.1-8B-Instruct`. Slashes are allowed. Defaults to `name`; the
    model pod's OpenAI front maps this id to the Triton model `name`."""
    uri: Annotated[str, StringConstraints(min_length=1, max_length=1024)] | None = None
    """Where the weights come from: `hf://<org>/<repo>`, `s3://<bucket>/<prefix>`, `gs://<bucket>/<prefix>`,
    `oci://<registry>/<repository>:<tag>`, or `pvc://<claim>/<path>` (shorthand for `pvc`). hf://, s3:// and
    gs:// are downloaded by an init container into a per-pod volume before Triton starts; oci:// is mounted as
    a Kubernetes image volume (needs the ImageVolume feature, on by default since 1.35)."""
    pvc: PVCSource | None = None
    """Weights already on a PersistentVolumeClaim, mounted read-only; nothing is downloaded."""
    revision: Annotated[str, StringConstraints(min_length=1, max_length=128)] | None = None
    """Hugging Face revision (branch, tag or commit) to download; only valid with `hf://`. Pin a commit for
    reproducible rollouts."""
    secret_ref: LocalObjectReference | None = None
    """Secret with the credentials to fetch the model. For hf://, s3:// and gs:// its keys become environment
    variables of the download container, `llm-fetch` (e.g. `HF_TOKEN`; `AWS_ACCESS_KEY_ID`,
    `AWS_SECRET_ACCESS_KEY`, `AWS_ENDPOINT_URL`, `AWS_DEFAULT_REGION`; `GCS_OAUTH_TOKEN`). For oci:// it must
    be a `kubernetes.io/dockerconfigjson` Secret and is used as an image pull secret. Credentials are only
    accepted by reference, never inline."""

    __cel_rules__ = (
        CelRule(
            rule="has(self.uri) != has(self.pvc)",
            message="exactly one model source is required: set spec.model.uri or spec.model.pvc, not both "
            "and not neither",
            check=lambda s: _model_source_count(s) == 1,
        ),
        CelRule(
            rule=f"!has(self.uri) || self.uri.matches('{URI_PATTERN}')",
            message="spec.model.uri must start with hf://, s3://, gs://, oci:// or pvc:// and contain no spaces",
            check=lambda s: s.uri is None or re.fullmatch(URI_PATTERN, s.uri) is not None,
            field_path=".uri",
        ),
        CelRule(
            rule=f"!has(self.uri) || !self.uri.startsWith('pvc://') || self.uri.matches('{PVC_URI_PATTERN}')",
            message="spec.model.uri: a pvc:// URI must be pvc://<claim-name>/<path> with a lowercase "
            "DNS-1123 claim name",
            check=lambda s: (
                s.uri is None or not s.uri.startswith("pvc://") or re.fullmatch(PVC_URI_PATTERN, s.uri) is not None
            ),
            field_path=".uri",
        ),
        CelRule(
            rule="!has(self.revision) || (has(self.uri) && self.uri.startsWith('hf://'))",
            message="spec.model.revision is only supported for hf:// URIs; put the version in the URI or "
            "path for other sources",
            check=lambda s: s.revision is None or (s.uri is not None and s.uri.startswith("hf://")),
            field_path=".revision",
        ),
        CelRule(
            rule="!has(self.secretRef) || (has(self.uri) && !self.uri.startsWith('pvc://'))",
            message="spec.model.secretRef is only used to download remote models; remove it for PVC sources",
            check=lambda s: s.secret_ref is None or (s.uri is not None and not s.uri.startswith("pvc://")),
            field_path=".secretRef",
        ),
    )

    @property
    def openai_id(self) -> str:
        """The model id of the OpenAI API."""
        return self.served_model_name or self.name

    def pvc_source(self) -> PVCSource | None:
        """The PVC holding the weights, from `pvc` or a `pvc://claim/path` URI; None for remote sources."""
        if self.pvc is not None:
            return self.pvc
        if self.uri is not None and self.uri.startswith("pvc://"):
            claim, _, path = self.uri.removeprefix("pvc://").partition("/")
            return PVCSource(claim_name=claim, path=path.strip("/"))
        return None

    @property
    def scheme(self) -> str:
        if self.uri is None:
            return "pvc"
        return self.uri.split("://", 1)[0]


# --------------------------------------------------------------------------------------------- runtime

Backend = Literal["python", "vllm", "tensorrtllm"]
DType = Literal["auto", "float16", "bfloat16", "float32"]


class EnvVar(_Model):
    """An environment variable for the Triton container."""

    name: Annotated[str, StringConstraints(min_length=1, max_length=256, pattern=ENV_NAME_PATTERN)]
    """Variable name."""
    value: Annotated[str, StringConstraints(max_length=4096)] = ""
    """Literal value. Put secrets in a Secret and reference it from the model's `secretRef` instead."""


class RuntimeSpec(_Model):
    """How Triton serves the model: backend, image, parallelism, batching and queueing."""

    backend: Backend = "python"
    """Triton backend: `python` (this project's torch runtime, `llm_runtime`), `vllm` (Triton's vLLM
    backend) or `tensorrtllm` (TensorRT-LLM engines, which `model` must point at)."""
    image: Annotated[str, StringConstraints(min_length=1, max_length=512)] | None = None
    """Triton server image. Defaults per backend: python uses the project's runtime image, vllm
    `nvcr.io/nvidia/tritonserver:<release>-vllm-python-py3`, tensorrtllm `...-trtllm-python-py3`."""
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    """When the kubelet pulls the image. Triton images are several GB: keep `IfNotPresent` with pinned
    tags."""
    image_pull_secrets: Annotated[list[LocalObjectReference], Field(max_length=8)] = Field(default_factory=list)
    """Secrets for pulling the image from a private registry (e.g. nvcr.io)."""
    tensor_parallel_size: Annotated[int, Field(ge=1, le=64)] = 1
    """GPUs one model instance is sharded across. Whole-GPU count must be a multiple of it; extra multiples
    run additional instances in the same pod."""
    max_batch_size: Annotated[int, Field(ge=1, le=4096)] = 64
    """Most sequences the engine batches at once (python: Triton `max_batch_size`; vllm: `max_num_seqs`;
    tensorrtllm: `triton_max_batch_size`)."""
    max_queue_size: Annotated[int, Field(ge=1, le=1000000)] = 128
    """Requests allowed to wait behind the running batch before new ones get HTTP 503 / gRPC UNAVAILABLE.
    Always bounded: shedding load early beats timing out every request. Not used by vllm, which queues
    inside the engine."""
    queue_timeout_seconds: Annotated[int, Field(ge=0, le=3600)] = 0
    """Seconds a request may wait in Triton's queue before it is rejected; 0 means no timeout. Not used by
    vllm."""
    dtype: DType = "auto"
    """Weight and activation dtype; `auto` uses the checkpoint's dtype."""
    parameters: Annotated[
        dict[
            Annotated[str, StringConstraints(max_length=128)],
            Annotated[str, StringConstraints(max_length=1024)],
        ],
        Field(max_length=64),
        _NO_NULL_VALUES,
    ] = Field(default_factory=dict)
    """Backend parameters. vllm: extra `AsyncEngineArgs` written to `model.json` (values that parse as JSON,
    such as `0.85` or `true`, are written as JSON); python and tensorrtllm: `parameters` in `config.pbtxt`."""
    args: Annotated[list[Annotated[str, StringConstraints(max_length=1024)]], Field(max_length=64)] = Field(
        default_factory=list
    )
    """Extra `tritonserver` command-line arguments, e.g. `--log-verbose=1`. The model repository, ports and
    exit timeout are set by the operator and cannot be overridden here."""
    env: Annotated[
        list[EnvVar],
        Field(
            max_length=64,
            json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
        ),
    ] = Field(default_factory=list)
    """Extra environment variables for the Triton container."""
    exit_timeout_seconds: Annotated[int, Field(ge=0, le=3600)] = 300
    """`--exit-timeout-secs`: how long Triton lets in-flight generations finish after SIGTERM. The pod's
    termination grace period is derived from it, so set it to your longest expected generation."""
    startup_timeout_seconds: Annotated[int, Field(ge=60, le=86400)] = 1800
    """Budget for download plus model load before the startup probe gives up and restarts the container.
    Large models from remote storage can need tens of minutes."""

    __cel_rules__ = (
        CelRule(
            rule=f"!has(self.parameters) || self.parameters.all(k, k.matches('{PARAMETER_KEY_PATTERN}'))",
            message="spec.runtime.parameters keys may only contain letters, digits, '_', '.' and '-'",
            check=lambda s: all(re.fullmatch(PARAMETER_KEY_PATTERN, k) for k in s.parameters),
            field_path=".parameters",
        ),
        CelRule(
            rule="!has(self.args) || self.args.all(a, "
            + " && ".join(f"!a.startsWith('{f}')" for f in RESERVED_TRITON_FLAGS)
            + ")",
            message="spec.runtime.args must not set "
            + ", ".join(RESERVED_TRITON_FLAGS)
            + ": the operator owns them (use spec.runtime.exitTimeoutSeconds for the exit timeout)",
            check=lambda s: all(not a.startswith(RESERVED_TRITON_FLAGS) for a in s.args),
            field_path=".args",
        ),
    )

    @model_validator(mode="after")
    def _unique_env(self) -> RuntimeSpec:
        # The CRD declares env as a map-list keyed by name, so the API server reports duplicates itself.
        names = [e.name for e in self.env]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"spec.runtime.env has duplicate names {dupes}; each variable may appear once")
        return self


# ------------------------------------------------------------------------------------------- resources


class GPUResources(_Model):
    """Whole GPUs per replica."""

    count: Annotated[int, Field(ge=1, le=16)] = 1
    """Whole GPUs (`nvidia.com/gpu`) per replica; must be a multiple of `spec.runtime.tensorParallelSize`."""
    product: Annotated[str, StringConstraints(min_length=1, max_length=63, pattern=LABEL_VALUE)] | None = None
    """GPU model the pods must land on: the `nvidia.com/gpu.product` node label set by GPU Feature Discovery,
    e.g. `NVIDIA-H100-80GB-HBM3` or `NVIDIA-A100-SXM4-80GB`. Any GPU when unset."""


class MIGResources(_Model):
    """A slice of a MIG-partitioned GPU (GPU operator's mixed strategy: `nvidia.com/mig-<profile>`)."""

    profile: Annotated[str, StringConstraints(min_length=1, max_length=32, pattern=MIG_PROFILE_PATTERN)]
    """MIG profile, e.g. `1g.10gb` or `3g.40gb`; requested as the resource `nvidia.com/mig-<profile>`."""
    count: Annotated[int, Field(ge=1, le=7)] = 1
    """Slices of that profile per replica. One model instance uses one slice: MIG slices cannot be combined
    with tensor parallelism."""
    product: Annotated[str, StringConstraints(min_length=1, max_length=63, pattern=LABEL_VALUE)] | None = None
    """Parent GPU model (`nvidia.com/gpu.product` node label), e.g. `NVIDIA-A100-SXM4-80GB`. Any when
    unset."""


class ResourcesSpec(_Model):
    """Compute per replica. Set `gpu` for whole GPUs or `mig` for a MIG slice; with neither the model runs on
    CPU (python backend only: useful for tests and tiny models)."""

    gpu: GPUResources | None = None
    """Whole GPUs per replica."""
    mig: MIGResources | None = None
    """A MIG slice per replica instead of whole GPUs."""
    cpu: Quantity | None = None
    """CPU request and limit per replica, e.g. `8`. Unset leaves it to the namespace's LimitRange."""
    memory: Quantity | None = None
    """Memory request and limit per replica, e.g. `64Gi`; must hold the weights while loading plus
    `sharedMemory`."""
    shared_memory: Quantity = "2Gi"
    """Size of the in-memory `/dev/shm` the Triton python backend exchanges tensors through; counts against
    `memory`."""

    __cel_rules__ = (
        CelRule(
            rule="!(has(self.gpu) && has(self.mig))",
            message="spec.resources: set gpu (whole GPUs) or mig (a MIG slice), not both",
            check=lambda s: not (s.gpu is not None and s.mig is not None),
        ),
        CelRule(
            # string(): int-or-string fields are either type in CEL; quantity() wants a string.
            rule="!has(self.memory) || "
            "quantity(string(self.sharedMemory)).compareTo(quantity(string(self.memory))) < 0",
            message="spec.resources.sharedMemory must be smaller than spec.resources.memory: /dev/shm is "
            "counted against the memory limit, so the pod would be OOM-killed",
            check=_shm_fits,
            field_path=".sharedMemory",
        ),
    )


# ------------------------------------------------------------------------------------------- placement

CapacityType = Literal["OnDemand", "Spot", "PreferSpot"]


class Toleration(_Model):
    """A core/v1 Toleration."""

    key: Annotated[str, StringConstraints(max_length=316)] | None = None
    """Taint key; empty with operator Exists tolerates everything."""
    operator: Literal["Exists", "Equal"] = "Equal"
    """`Exists` matches any value; `Equal` matches `value`."""
    value: Annotated[str, StringConstraints(max_length=63)] | None = None
    """Taint value for operator Equal."""
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    """Taint effect to match; all effects when unset."""
    toleration_seconds: Annotated[int, Field(ge=0, json_schema_extra={"format": "int64"})] | None = None
    """For NoExecute: how long the pod stays bound after the taint appears."""

    __cel_rules__ = (
        CelRule(
            rule="self.operator != 'Exists' || !has(self.value) || self.value == ''",
            message="a toleration with operator Exists must not set value",
            check=lambda s: s.operator != "Exists" or not s.value,
            field_path=".value",
        ),
    )


class PlacementSpec(_Model):
    """Where replicas may run. GPU product and spot choice are applied on top of these."""

    node_selector: ShortMap = Field(default_factory=dict)
    """Extra node labels the pods require. Use `spec.resources.gpu.product` for the GPU model."""
    tolerations: Annotated[list[Toleration], Field(max_length=32)] = Field(default_factory=list)
    """Extra tolerations. The `nvidia.com/gpu` and spot tolerations are added by the operator."""
    affinity: dict[str, Any] | None = None
    """core/v1 Affinity, passed to the pods unchanged except that spot/on-demand terms are merged in;
    validated by the API server when the Deployment is written."""
    topology_spread_constraints: Annotated[list[dict[str, Any]], Field(max_length=8)] = Field(default_factory=list)
    """core/v1 TopologySpreadConstraints. When a constraint has no labelSelector the operator selects this
    LLMDeployment's pods."""
    priority_class_name: Annotated[str, StringConstraints(max_length=253, pattern=DNS1123_SUBDOMAIN)] | None = None
    """PriorityClass of the pods, e.g. to let production models preempt batch work."""
    capacity_type: CapacityType = "OnDemand"
    """Spot or on-demand nodes, by the `llmops.dev/capacity-type` node label (`spot`/`on-demand`) and the
    `llmops.dev/spot=true:NoSchedule` taint on spot nodes. `OnDemand`: never on spot nodes. `Spot`: only on
    spot nodes. `PreferSpot`: spot nodes when available, otherwise on-demand."""

    __cel_rules__ = (
        CelRule(
            rule=f"!has(self.nodeSelector) || !('{GPU_PRODUCT_LABEL}' in self.nodeSelector)",
            message=f"spec.placement.nodeSelector must not set {GPU_PRODUCT_LABEL}; use "
            "spec.resources.gpu.product (or mig.product)",
            check=lambda s: GPU_PRODUCT_LABEL not in s.node_selector,
            field_path=".nodeSelector",
        ),
        CelRule(
            rule=f"!has(self.nodeSelector) || !('{CAPACITY_TYPE_LABEL}' in self.nodeSelector)",
            message=f"spec.placement.nodeSelector must not set {CAPACITY_TYPE_LABEL}; use spec.placement.capacityType",
            check=lambda s: CAPACITY_TYPE_LABEL not in s.node_selector,
            field_path=".nodeSelector",
        ),
    )


# ------------------------------------------------------------------------------ autoscaling / rollout


class ScalingPolicy(_Model):
    """One autoscaling/v2 HPA scaling policy: at most `value` pods (or percent) per `periodSeconds`."""

    type: Literal["Pods", "Percent"]
    """`Pods` (an absolute number of replicas) or `Percent` (of the current replicas)."""
    value: Annotated[int, Field(ge=1, le=1000)]
    """How many pods, or what percent, may be added or removed per period."""
    period_seconds: Annotated[int, Field(ge=1, le=1800)]
    """The window the policy holds over (1-1800 s)."""


class ScalingRules(_Model):
    """autoscaling/v2 `HPAScalingRules` for one direction."""

    stabilization_window_seconds: Annotated[int, Field(ge=0, le=3600)] | None = None
    """How far back the HPA looks for the most conservative recommendation before changing replicas."""
    select_policy: Literal["Max", "Min", "Disabled"] | None = None
    """Which policy wins when several allow a change; `Disabled` turns scaling in this direction off."""
    policies: Annotated[list[ScalingPolicy], Field(min_length=1, max_length=10)] | None = None
    """Rate limits for this direction."""


class ScalingBehavior(_Model):
    """autoscaling/v2 HPA `behavior`. Omitted parts take the operator's LLM defaults (docs/autoscaling.md):
    scale up at once by up to 2 pods or 100 % per 2 minutes (one step per model load), scale down one pod a
    minute after 2 minutes of lower load. A model pod takes minutes and a GPU to start; the defaults come from
    `llmctl simulate`'s sweep (docs/simulate.md)."""

    scale_up: ScalingRules | None = None
    """How fast replicas are added."""
    scale_down: ScalingRules | None = None
    """How fast replicas are removed."""


class AutoscalingMetrics(_Model):
    """Targets per ready replica, in the canonical metric vocabulary (docs/metrics.md). The replica count
    follows the largest recommendation across the metrics set."""

    queue_depth: Annotated[float, Field(le=100000)] | None = None
    """Average requests waiting (not yet in a batch) per replica. Best left out, or set as a backstop of 16 or
    more: while new replicas load, the old ones' queues keep it high and a small target overshoots."""
    tokens_per_second: Annotated[float, Field(ge=1, le=10000000)] | None = None
    """Average generated tokens per second per replica. Use the capacity `bench/runtime.py` measures for your
    model and GPU, times 0.8."""
    kv_cache_utilization: Annotated[float, Field(le=1)] | None = None
    """Average KV-cache use per replica, 0-1 (vLLM, TensorRT-LLM and the python backend report it)."""

    __cel_rules__ = (
        CelRule(
            rule="has(self.queueDepth) || has(self.tokensPerSecond) || has(self.kvCacheUtilization)",
            message="spec.autoscaling.metrics needs at least one target: queueDepth, tokensPerSecond or "
            "kvCacheUtilization",
            check=lambda s: any(v is not None for v in (s.queue_depth, s.tokens_per_second, s.kv_cache_utilization)),
        ),
        # CEL, not `minimum`: the API server checks an integer against a fractional minimum after truncating
        # the minimum (0 passes `minimum: 0.1`), so a target of 0 would slip through the schema.
        CelRule(
            rule="!has(self.queueDepth) || self.queueDepth > 0.0",
            message="spec.autoscaling.metrics.queueDepth must be greater than 0",
            check=lambda s: s.queue_depth is None or s.queue_depth > 0,
            field_path=".queueDepth",
        ),
        CelRule(
            rule="!has(self.kvCacheUtilization) || self.kvCacheUtilization > 0.0",
            message="spec.autoscaling.metrics.kvCacheUtilization must be greater than 0 (a share, 0-1)",
            check=lambda s: s.kv_cache_utilization is None or s.kv_cache_utilization > 0,
            field_path=".kvCacheUtilization",
        ),
    )


class KEDAOptions(_Model):
    """Settings only KEDA has (provider `KEDA`)."""

    prometheus_address: Annotated[str, StringConstraints(min_length=1, max_length=512, pattern=r"^https?://.+")]
    """Prometheus that KEDA queries, e.g. `http://prometheus.monitoring:9090`."""
    polling_interval_seconds: Annotated[int, Field(ge=1, le=3600)] = 15
    """How often KEDA queries Prometheus."""
    cooldown_period_seconds: Annotated[int, Field(ge=0, le=86400)] = 300
    """With minReplicas 0: how long after the last activity KEDA scales to zero."""


DEFAULT_MIN_REPLICAS = 2
"""spec.autoscaling.minReplicas when it is left out, capped at maxReplicas: a second replica is the headroom that
absorbs a burst while new ones load their model (docs/autoscaling.md)."""


class AutoscalingSpec(_Model):
    """Scale on queue depth, token throughput and KV-cache use. The operator writes an HPA (or a KEDA
    ScaledObject) that targets this LLMDeployment's scale subresource, so the autoscaler owns `spec.replicas`
    while this is set; the operator itself never writes spec. Remove this block to stop autoscaling: the
    replica count stays where it was."""

    # No schema default: a default of 2 would make `maxReplicas: 1` without minReplicas invalid, and CEL cannot
    # default one field from another. The operator computes it (_default_min_replicas).
    min_replicas: Annotated[int, Field(ge=0, le=1000, default_factory=lambda: DEFAULT_MIN_REPLICAS)]
    """Fewest replicas. Left out: 2, or 1 with maxReplicas 1 (a second replica absorbs a burst while new ones
    load). 0 (scale to zero) needs provider KEDA."""
    max_replicas: Annotated[int, Field(ge=1, le=1000)]
    """Most replicas."""
    metrics: AutoscalingMetrics
    """Targets per replica; at least one."""
    behavior: ScalingBehavior | None = None
    """HPA scaling behaviour; omitted parts take the LLM defaults."""
    provider: Literal["HPA", "KEDA"] = "HPA"
    """`HPA` (a HorizontalPodAutoscaler reading prometheus-adapter's custom metrics) or `KEDA` (a ScaledObject
    with Prometheus triggers; needs KEDA installed)."""
    keda: KEDAOptions | None = None
    """KEDA settings; required with, and only allowed with, provider KEDA."""

    __cel_rules__ = (
        CelRule(
            rule="!has(self.minReplicas) || self.minReplicas <= self.maxReplicas",
            message="spec.autoscaling.minReplicas must be less than or equal to spec.autoscaling.maxReplicas",
            check=lambda s: "min_replicas" not in s.model_fields_set or s.min_replicas <= s.max_replicas,
            field_path=".minReplicas",
        ),
        CelRule(
            rule="!has(self.minReplicas) || self.minReplicas >= 1 || self.provider == 'KEDA'",
            message="spec.autoscaling.minReplicas 0 (scale to zero) needs provider KEDA; an HPA keeps at least 1",
            check=lambda s: "min_replicas" not in s.model_fields_set or s.min_replicas >= 1 or s.provider == "KEDA",
            field_path=".minReplicas",
        ),
        CelRule(
            rule="(self.provider == 'KEDA') == has(self.keda)",
            message="spec.autoscaling.keda is required with provider KEDA and not allowed with provider HPA "
            "(set provider: KEDA or remove keda)",
            check=lambda s: (s.provider == "KEDA") == (s.keda is not None),
            field_path=".keda",
        ),
    )

    @model_validator(mode="after")
    def _default_min_replicas(self) -> AutoscalingSpec:
        # Runs after the CEL mirror, which skips an unset minReplicas as `!has(self.minReplicas)` does. Written
        # into __dict__ so the field stays unset (model_fields_set, exclude_unset) as it is in the stored object.
        if "min_replicas" not in self.model_fields_set:
            self.__dict__["min_replicas"] = min(DEFAULT_MIN_REPLICAS, self.max_replicas)
        return self


class CanaryPause(_Model):
    """Hold the current weight. With `duration` the step ends by itself; without it the rollout waits for
    `kubectl llm promote` (docs/rollouts.md)."""

    duration: Annotated[str, StringConstraints(max_length=16, pattern=DURATION_PATTERN)] | None = None
    """How long to hold, e.g. `30s`, `10m`, `1h`; leave it out to wait for a promote."""


class CanaryStep(_Model):
    """One step of a canary rollout: exactly one of `setWeight` or `pause`."""

    set_weight: Annotated[int, Field(ge=1, le=100, json_schema_extra={"format": "int32"})] | None = None
    """Percent of traffic for the new revision (1-100). Without traffic routing it becomes the share of replicas
    (a canary never rounds to 0 pods); with `trafficRouting.gatewayAPI` it is the HTTPRoute weight."""
    pause: CanaryPause | None = None
    """Hold the current weight for a while, or until promoted."""

    __cel_rules__ = (
        CelRule(
            rule="has(self.setWeight) != has(self.pause)",
            message="each spec.rollout.canary.steps[] item needs exactly one of setWeight or pause "
            "(e.g. {setWeight: 10} or {pause: {duration: 5m}})",
            check=lambda s: (s.set_weight is None) != (s.pause is None),
        ),
    )


AnalysisMetric = Literal["ttftP95", "ttftP50", "errorRate", "tokensPerSecondPerReplica", "interTokenLatency",
                         "custom"]


class AnalysisCheck(_Model):
    """One check of the canary against fixed bounds or against the stable revision, in the canonical metric
    vocabulary (docs/metrics.md), so it works the same for every backend."""

    metric: AnalysisMetric
    """`ttftP95`/`ttftP50` (time to first token, seconds), `errorRate` (failed share of requests, 0-1),
    `tokensPerSecondPerReplica` (generated tokens/s per pod), `interTokenLatency` (mean seconds between tokens),
    or `custom` with your own `query`."""
    query: Annotated[str, StringConstraints(min_length=1, max_length=4096)] | None = None
    """PromQL for `custom`: one number per revision. `$revision` and `$namespace` are replaced by the revision
    being measured (canary, then stable) and the LLMDeployment's namespace."""
    max: float | None = None
    """Fail when the canary's value is above this."""
    min: float | None = None
    """Fail when the canary's value is below this."""
    max_ratio_to_stable: float | None = None
    """Fail when canary ÷ stable is above this (e.g. 1.3: at most 30 % worse)."""
    min_ratio_to_stable: float | None = None
    """Fail when canary ÷ stable is below this (e.g. 0.8 for a throughput floor)."""

    __cel_rules__ = (
        CelRule(
            rule="has(self.max) || has(self.min) || has(self.maxRatioToStable) || has(self.minRatioToStable)",
            message="each spec.rollout.canary.analysis.checks[] item needs a bound: max, min, maxRatioToStable "
            "or minRatioToStable",
            check=lambda s: any(v is not None for v in (s.max, s.min, s.max_ratio_to_stable,
                                                        s.min_ratio_to_stable)),
        ),
        CelRule(
            rule="(self.metric == 'custom') == has(self.query)",
            message="spec.rollout.canary.analysis.checks[].query is required with metric custom and not allowed "
            "with a built-in metric",
            check=lambda s: (s.metric == "custom") == (s.query is not None),
            field_path=".query",
        ),
        CelRule(
            rule="!has(self.min) || !has(self.max) || self.min <= self.max",
            message="spec.rollout.canary.analysis.checks[].min must not be greater than max",
            check=lambda s: s.min is None or s.max is None or s.min <= s.max,
            field_path=".min",
        ),
        CelRule(
            rule="(!has(self.maxRatioToStable) || self.maxRatioToStable > 0.0) && "
            "(!has(self.minRatioToStable) || self.minRatioToStable > 0.0)",
            message="spec.rollout.canary.analysis.checks[] maxRatioToStable and minRatioToStable must be greater "
            "than 0 (e.g. 1.3 or 0.8)",
            check=lambda s: all(v is None or v > 0 for v in (s.max_ratio_to_stable, s.min_ratio_to_stable)),
        ),
    )


class PrometheusSource(_Model):
    """The Prometheus that holds the test bed's recording rules (docs/metrics.md)."""

    address: Annotated[str, StringConstraints(min_length=1, max_length=512, pattern=r"^https?://.+")]
    """Base URL, e.g. `http://prometheus.monitoring:9090`."""
    timeout: Annotated[str, StringConstraints(max_length=16, pattern=DURATION_PATTERN)] = "10s"
    """How long one query may take before the measurement counts as an error."""


class CanaryAnalysis(_Model):
    """Measure the canary against the stable revision while it takes traffic; roll back when it fails."""

    interval: Annotated[str, StringConstraints(max_length=16, pattern=DURATION_PATTERN)] = "1m"
    """Time between measurements (at least 5 s). Each measurement runs every check once."""
    failure_limit: Annotated[int, Field(ge=0, le=100, json_schema_extra={"format": "int32"})] = 2
    """Failed measurements tolerated: the canary is aborted at failureLimit + 1."""
    inconclusive_limit: Annotated[int, Field(ge=0, le=100, json_schema_extra={"format": "int32"})] = 3
    """Measurements without data tolerated in a row before the rollout pauses for a person to decide."""
    prometheus: PrometheusSource
    """Where to query."""
    checks: Annotated[list[AnalysisCheck], Field(min_length=1, max_length=16)]
    """What to check at every measurement; a measurement fails when any check fails."""

    __cel_rules__ = (
        CelRule(
            rule="!self.interval.matches('^[0-9]+ms$') && !self.interval.matches('^[0-4]s$')",
            message="spec.rollout.canary.analysis.interval must be at least 5s",
            check=lambda s: not re.fullmatch(r"^[0-9]+ms$", s.interval) and not re.fullmatch(r"^[0-4]s$", s.interval),
            field_path=".interval",
        ),
    )


class GatewayAPIRouting(_Model):
    """Split traffic with a Gateway API HTTPRoute that you own."""

    http_route: Annotated[str, StringConstraints(min_length=1, max_length=253)]
    """Name of the HTTPRoute (same namespace). The operator creates Services `NAME-stable` and `NAME-canary` and
    sets only the weights of the backendRefs that name them, in every rule that has one."""


class TrafficRouting(_Model):
    """How traffic is split between stable and canary. Without it, traffic follows the replica ratio."""

    gateway_api: GatewayAPIRouting = Field(alias="gatewayAPI")
    """Gateway API HTTPRoute weights."""


class CanarySpec(_Model):
    """Canary rollout: steps of weights and pauses, analysis against stable, optional traffic routing."""

    steps: Annotated[list[CanaryStep], Field(min_length=1, max_length=32)]
    """The steps, in order. After the last one the canary is promoted to stable."""
    analysis: CanaryAnalysis | None = None
    """Checks that run from the first setWeight until promotion; omitted: no automatic rollback."""
    traffic_routing: TrafficRouting | None = None
    """Exact traffic weights through a Gateway API HTTPRoute; omitted: weights become replica ratios."""

    __cel_rules__ = (
        CelRule(
            rule="self.steps.exists(s, has(s.setWeight))",
            message="spec.rollout.canary.steps needs at least one setWeight step",
            check=lambda s: any(st.set_weight is not None for st in s.steps),
            field_path=".steps",
        ),
        CelRule(
            rule="self.steps.filter(s, has(s.setWeight)).map(s, s.setWeight).isSorted()",
            message="spec.rollout.canary.steps setWeight values must not decrease (e.g. 10, 25, 50, 100)",
            check=lambda s: (lambda w: all(a <= b for a, b in itertools.pairwise(w)))(
                [st.set_weight for st in s.steps if st.set_weight is not None]),
            field_path=".steps",
        ),
    )


class RolloutSpec(_Model):
    """How a new revision (any change to the pod template or model) replaces the running one
    (docs/rollouts.md). Both strategies surge into free GPUs when the pool has room and swap one pod at a time
    when it is full, so a full pool never deadlocks."""

    strategy: Literal["RollingUpdate", "Canary"] = "RollingUpdate"
    """`RollingUpdate` replaces replicas in place; `Canary` moves traffic through `canary.steps`, measured by
    `canary.analysis`, and rolls back by itself when the canary fails."""
    canary: CanarySpec | None = None
    """Canary steps; required for, and only allowed with, strategy Canary."""

    __cel_rules__ = (
        CelRule(
            rule="(self.strategy == 'Canary') == has(self.canary)",
            message="spec.rollout.canary is required with strategy Canary and not allowed otherwise",
            check=lambda s: (s.strategy == "Canary") == (s.canary is not None),
            field_path=".canary",
        ),
    )


# ------------------------------------------------------------------------------- service / monitoring


class ServiceSpec(_Model):
    """The Service in front of the replicas (ports http 8000, grpc 8001, metrics 8002)."""

    type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = "ClusterIP"
    """Service type."""
    annotations: ShortMap = Field(default_factory=dict)
    """Annotations for the Service, e.g. for a cloud load balancer."""


class MonitoringSpec(_Model):
    """Prometheus scraping. Emitted only when the monitoring.coreos.com CRDs exist in the cluster."""

    enabled: bool = True
    """Create a PodMonitor or ServiceMonitor for Triton's metrics port."""
    kind: Literal["PodMonitor", "ServiceMonitor"] = "PodMonitor"
    """Which Prometheus Operator resource to create."""
    interval: Annotated[str, StringConstraints(max_length=16, pattern=DURATION_PATTERN)] = "15s"
    """Scrape interval, e.g. `15s`."""
    labels: ShortMap = Field(default_factory=dict)
    """Labels on the monitor so that your Prometheus selects it, e.g. `release: prometheus`."""


# ---------------------------------------------------------------------------------------------- spec


def _gpu_tp_ok(s: LLMDeploymentSpec) -> bool:
    tp = s.runtime.tensor_parallel_size
    if s.resources.gpu is not None:
        return s.resources.gpu.count % tp == 0
    return tp == 1


class LLMDeploymentSpec(_Model):
    """Desired state of an LLMDeployment."""

    model: ModelSpec
    """The model to serve and where its weights come from."""
    runtime: RuntimeSpec = Field(default_factory=RuntimeSpec)
    """Triton backend, image and serving knobs."""
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    """GPUs, CPU and memory per replica."""
    placement: PlacementSpec = Field(default_factory=PlacementSpec)
    """Node selection: extra selectors, tolerations, affinity, spreading, priority, spot preference."""
    replicas: Annotated[int, Field(ge=0, le=1000, json_schema_extra={"format": "int32"})] = 1
    """Number of model pods. Driven by `kubectl scale` or an HPA through the scale subresource."""
    autoscaling: AutoscalingSpec | None = None
    """Autoscaling on queue depth, tokens/s and KV-cache use (docs/autoscaling.md). While set, the autoscaler
    owns `replicas`: leave `replicas` out of Git or ignore its differences (docs/autoscaling.md#gitops)."""
    rollout: RolloutSpec | None = None
    """How new revisions replace old ones: RollingUpdate (default) or Canary with analysis (docs/rollouts.md)."""
    service: ServiceSpec = Field(default_factory=ServiceSpec)
    """How the model is exposed inside the cluster."""
    monitoring: MonitoringSpec = Field(default_factory=MonitoringSpec)
    """Prometheus Operator integration."""
    pod_annotations: ShortMap = Field(default_factory=dict)
    """Annotations for every model pod (e.g. a service-mesh or log-agent opt-in). Changing them rolls the pods
    like any other pod template change. Keys under `serving.llmops.dev/` belong to the operator."""

    __cel_rules__ = (
        CelRule(
            rule="!has(self.podAnnotations) || self.podAnnotations.all(k, !k.startsWith('serving.llmops.dev/'))",
            message="spec.podAnnotations keys under serving.llmops.dev/ belong to the operator: use another prefix",
            check=lambda s: not any(k.startswith(f"{GROUP}/") for k in s.pod_annotations),
            field_path=".podAnnotations",
        ),
        CelRule(
            rule="has(self.resources.gpu) ? self.resources.gpu.count % self.runtime.tensorParallelSize == 0 "
            ": self.runtime.tensorParallelSize == 1",
            message="spec.resources.gpu.count must be a multiple of spec.runtime.tensorParallelSize "
            "(tensor parallelism needs whole GPUs: set resources.gpu.count)",
            check=_gpu_tp_ok,
            field_path=".runtime.tensorParallelSize",
        ),
        CelRule(
            rule="self.runtime.backend != 'python' || self.runtime.tensorParallelSize == 1",
            message="spec.runtime.tensorParallelSize must be 1 with backend python; use backend vllm or "
            "tensorrtllm for tensor parallelism",
            check=lambda s: s.runtime.backend != "python" or s.runtime.tensor_parallel_size == 1,
            field_path=".runtime.tensorParallelSize",
        ),
        CelRule(
            rule="self.runtime.backend == 'python' || has(self.resources.gpu) || has(self.resources.mig)",
            message="spec.runtime.backend vllm and tensorrtllm need a GPU: set spec.resources.gpu or "
            "spec.resources.mig",
            check=lambda s: s.runtime.backend == "python" or s.resources.gpu is not None or s.resources.mig is not None,
            field_path=".resources",
        ),
    )


# --------------------------------------------------------------------------------------------- status


class Condition(_Model):
    """A metav1.Condition."""

    type: Annotated[str, StringConstraints(min_length=1, max_length=316, pattern=CONDITION_TYPE_PATTERN)]
    """Condition type: `Ready`, `Progressing` or `Degraded`."""
    status: Literal["True", "False", "Unknown"]
    """Whether the condition holds."""
    observed_generation: Annotated[int, Field(ge=0, json_schema_extra={"format": "int64"})] | None = None
    """The metadata.generation the condition was computed from."""
    last_transition_time: Annotated[str, Field(json_schema_extra={"format": "date-time"})]
    """When `status` last changed (RFC 3339)."""
    reason: Annotated[str, StringConstraints(min_length=1, max_length=1024, pattern=CONDITION_REASON_PATTERN)]
    """CamelCase reason for the last transition, meant for automation and the printer column."""
    message: Annotated[str, StringConstraints(max_length=32768)]
    """Human-readable details, including what to do about it."""


class Endpoints(_Model):
    """In-cluster URLs of the model."""

    http: Annotated[str, StringConstraints(max_length=512)] | None = None
    """Triton HTTP/REST base URL, e.g. `http://<name>.<namespace>.svc:8000`."""
    grpc: Annotated[str, StringConstraints(max_length=512)] | None = None
    """Triton gRPC address, e.g. `<name>.<namespace>.svc:8001`."""
    metrics: Annotated[str, StringConstraints(max_length=512)] | None = None
    """Prometheus metrics URL, e.g. `http://<name>.<namespace>.svc:8002/metrics`."""
    openai: Annotated[str, StringConstraints(max_length=512)] | None = None
    """OpenAI-compatible API base URL for clients (`base_url` of the `openai` client), e.g.
    `http://<name>.<namespace>.svc:9000/v1`."""
    model: Annotated[str, StringConstraints(max_length=256)] | None = None
    """The model id OpenAI clients send: `spec.model.servedModelName`, or `spec.model.name`."""


class ScalingMetricStatus(_Model):
    """One autoscaling metric: its current average per replica against the target."""

    name: Literal["queueDepth", "tokensPerSecond", "kvCacheUtilization"]
    """The metric, as named in spec.autoscaling.metrics."""
    target: float
    """Target average per replica."""
    current: float | None = None
    """Current average per replica as the autoscaler last read it; absent while it has no data."""


class AutoscalingStatus(_Model):
    """What the autoscaler sees and decided, and what limits it (docs/autoscaling.md)."""

    provider: Literal["HPA", "KEDA"]
    """Which autoscaler the operator created."""
    current_replicas: Annotated[int, Field(ge=0, json_schema_extra={"format": "int32"})] | None = None
    """Replicas the autoscaler counted at its last sync."""
    desired_replicas: Annotated[int, Field(ge=0, json_schema_extra={"format": "int32"})] | None = None
    """Replicas the autoscaler wants now."""
    metrics: Annotated[list[ScalingMetricStatus], Field(max_length=8)] = Field(default_factory=list)
    """Each metric's current value against its target."""
    last_scale_time: Annotated[str, Field(json_schema_extra={"format": "date-time"})] | None = None
    """When the autoscaler last changed the replica count."""
    last_scale: Annotated[str, StringConstraints(max_length=64)] | None = None
    """The last change, e.g. `2 -> 4`."""
    limited_by: Annotated[str, StringConstraints(max_length=64)] | None = None
    """What holds scaling back now (the ScalingLimited reason), if anything."""
    summary: Annotated[str, StringConstraints(max_length=128)] | None = None
    """One line for `kubectl get llmd`: desired vs current replicas, or the limiting reason."""


class CheckResult(_Model):
    """The last measurement of one analysis check."""

    metric: Annotated[str, StringConstraints(max_length=64)]
    """The check's metric, as in spec."""
    phase: Literal["Successful", "Failed", "Inconclusive", "Error"]
    """Outcome of this check at the last measurement."""
    canary: float | None = None
    """The canary's value (absent without data)."""
    stable: float | None = None
    """The stable revision's value, for ratio checks."""
    message: Annotated[str, StringConstraints(max_length=512)] | None = None
    """The comparison in words, e.g. `ttftP95 canary 2.41s vs stable 0.82s, ratio 2.9 > 1.3`."""


class AnalysisStatus(_Model):
    """Counters and the last results of the canary analysis of the current revision."""

    phase: Literal["Pending", "Running", "Successful", "Failed", "Inconclusive", "Error"] | None = None
    """`Failed` aborts the rollout; `Inconclusive` and `Error` pause it."""
    measurements: Annotated[int, Field(ge=0, json_schema_extra={"format": "int32"})] | None = None
    """Measurements taken."""
    failed: Annotated[int, Field(ge=0, json_schema_extra={"format": "int32"})] | None = None
    """Failed measurements (abort above failureLimit)."""
    inconclusive: Annotated[int, Field(ge=0, json_schema_extra={"format": "int32"})] | None = None
    """Measurements in a row without data for some check."""
    errors: Annotated[int, Field(ge=0, json_schema_extra={"format": "int32"})] | None = None
    """Measurements in a row where Prometheus could not be queried."""
    last_measured_at: Annotated[str, Field(json_schema_extra={"format": "date-time"})] | None = None
    """When the last measurement was taken."""
    checks: Annotated[list[CheckResult], Field(max_length=16)] = Field(default_factory=list)
    """Each check's result at the last measurement."""


class RolloutStatus(_Model):
    """Where the rollout stands. The operator keeps all of it here, so it survives a restart. (No schema
    defaults in status: the API server would add them, and the operator compares what it wrote with what is
    stored to skip needless writes.)"""

    strategy: Literal["RollingUpdate", "Canary"] | None = None
    """The strategy in effect."""
    phase: Literal["Healthy", "Progressing", "Paused", "Degraded"] | None = None
    """`Healthy`: one revision serves; `Progressing`: moving to a new one; `Paused`: waiting (step pause,
    `kubectl llm pause`, inconclusive analysis, Prometheus unreachable); `Degraded`: aborted back to stable."""
    message: Annotated[str, StringConstraints(max_length=1024)] | None = None
    """What happens now and why."""
    stable_revision: Annotated[str, StringConstraints(max_length=64)] | None = None
    """The last fully promoted revision."""
    canary_revision: Annotated[str, StringConstraints(max_length=64)] | None = None
    """The revision being rolled out (the spec's), while it differs from stable."""
    step_index: Annotated[int, Field(ge=0, json_schema_extra={"format": "int32"})] | None = None
    """Index of the current canary step (= the number of steps when all are done)."""
    step_started_at: Annotated[str, Field(json_schema_extra={"format": "date-time"})] | None = None
    """When the current step started (a pause counts its duration from here)."""
    weight: Annotated[int, Field(ge=0, le=100, json_schema_extra={"format": "int32"})] | None = None
    """Traffic percent the canary gets now (the HTTPRoute weight, or its share of replicas)."""
    stable_replicas: Annotated[int, Field(ge=0, json_schema_extra={"format": "int32"})] | None = None
    """Replicas of the stable revision this step wants."""
    canary_replicas: Annotated[int, Field(ge=0, json_schema_extra={"format": "int32"})] | None = None
    """Replicas of the canary revision this step wants."""
    paused_reason: Annotated[str, StringConstraints(max_length=64)] | None = None
    """Why it waits: `PauseStep`, `UserPause`, `AnalysisInconclusive`, `PrometheusUnreachable`."""
    aborted: bool | None = None
    """The canary was rolled back; it stays so until the spec changes or `kubectl llm retry`."""
    aborted_at: Annotated[str, Field(json_schema_extra={"format": "date-time"})] | None = None
    """When it was rolled back."""
    abort_message: Annotated[str, StringConstraints(max_length=1024)] | None = None
    """Why, e.g. the failing check and its values."""
    promote_full: bool | None = None
    """`kubectl llm promote --full` asked to skip the remaining steps."""
    analysis: AnalysisStatus | None = None
    """Canary analysis of the current revision."""
    surge: Literal["Surge", "Swap"] | None = None
    """How new pods get GPUs: `Surge` starts them in free GPUs before old ones stop; `Swap` stops one old pod
    per new one because the pool is full."""
    surge_reason: Annotated[str, StringConstraints(max_length=256)] | None = None
    """The free GPU count behind the choice."""
    last_request: Annotated[str, StringConstraints(max_length=128)] | None = None
    """The last `kubectl llm` request the operator carried out (the request annotation's value)."""


class LLMDeploymentStatus(_Model):
    """Observed state, written only by the operator."""

    model_config = ConfigDict(extra="ignore")

    observed_generation: Annotated[int, Field(ge=0, json_schema_extra={"format": "int64"})] | None = None
    """The metadata.generation this status describes."""
    replicas: Annotated[int, Field(ge=0, json_schema_extra={"format": "int32"})] | None = None
    """Model pods that exist, across all revisions (the scale subresource's status replicas)."""
    ready_replicas: Annotated[int, Field(ge=0, json_schema_extra={"format": "int32"})] | None = None
    """Model pods whose Triton reports ready."""
    updated_replicas: Annotated[int, Field(ge=0, json_schema_extra={"format": "int32"})] | None = None
    """Model pods running the current revision."""
    selector: Annotated[str, StringConstraints(max_length=1024)] | None = None
    """Label selector of the model pods in string form, for the scale subresource and HPAs."""
    revision: Annotated[str, StringConstraints(max_length=64)] | None = None
    """Hash of the current pod template (the `serving.llmops.dev/revision` label)."""
    endpoints: Endpoints | None = None
    """In-cluster URLs of the model's Service."""
    gpu: Annotated[str, StringConstraints(max_length=128)] | None = None
    """GPUs per replica for display, e.g. `8x NVIDIA-H100-80GB-HBM3`, `1x mig-1g.10gb` or `none`."""
    ready_text: Annotated[str, StringConstraints(max_length=32)] | None = None
    """Ready over desired replicas for display, e.g. `2/3`."""
    autoscaling: AutoscalingStatus | None = None
    """Present while spec.autoscaling is set."""
    rollout: RolloutStatus | None = None
    """Rollout state: stable and canary revisions, step, weight, pause, analysis, abort (docs/rollouts.md)."""
    conditions: Annotated[
        list[Condition],
        Field(
            max_length=16,
            json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
        ),
    ] = Field(default_factory=list)
    """`Ready`, `Progressing` and `Degraded` (plus `ScalingActive` and `ScalingLimited` while autoscaling), with
    reasons a person can act on."""


# ---------------------------------------------------------------------------------------------- root


class LLMDeployment(_Model):
    """LLMDeployment serves one large language model on Triton Inference Server pods with GPUs."""

    api_version: Literal["serving.llmops.dev/v1alpha1"] = "serving.llmops.dev/v1alpha1"
    """APIVersion of this object: `serving.llmops.dev/v1alpha1`."""
    kind: Literal["LLMDeployment"] = "LLMDeployment"
    """Kind of this object: `LLMDeployment`."""
    metadata: dict[str, Any] = Field(default_factory=dict)
    """Standard object metadata."""
    spec: LLMDeploymentSpec
    """Desired state."""
    status: LLMDeploymentStatus | None = None
    """Observed state, written by the operator."""

    __cel_rules__ = (
        CelRule(
            rule="!has(self.metadata.name) || (self.metadata.name.size() <= 52 && "
            "self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$'))",
            message="metadata.name must be a DNS-1035 label (lowercase letters, digits and '-', starting "
            "with a "
            "letter) of at most 52 characters: it names the Service and, with a revision suffix, the "
            "Deployments",
            check=lambda s: (
                "name" not in s.metadata
                or (
                    isinstance(s.metadata["name"], str)
                    and len(s.metadata["name"]) <= 52
                    and re.fullmatch(r"^[a-z]([-a-z0-9]*[a-z0-9])?$", s.metadata["name"]) is not None
                )
            ),
            # No fieldPath: metadata has no declared properties, so the API server would reject the path.
        ),
    )

    @property
    def name(self) -> str:
        name = self.metadata.get("name")
        if not isinstance(name, str) or not name:
            raise ValueError("metadata.name is required")
        return name

    @property
    def namespace(self) -> str | None:
        ns = self.metadata.get("namespace")
        return ns if isinstance(ns, str) and ns else None


def parse(obj: dict[str, Any]) -> LLMDeployment:
    """Validate one LLMDeployment object (as read from YAML or the API server)."""
    return LLMDeployment.model_validate(obj)
