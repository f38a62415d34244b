"""Invalid LLMDeployments and the error each must produce: data shared by the unit tests (pydantic, offline)
and the cluster tests (the real API server with the generated CRD).

Each `Case.patch` is a JSON merge patch (RFC 7386: nested dicts merge, `None` deletes a key, lists replace)
applied to `valid_object()`. `Case.expected` is a substring of the API server's error item and `Case.field` is
the field path that item starts with, in the API server's notation (`steps[0].weight`; `ROOT` for the object
itself, which it prints as `<nil>`). For CEL rules `expected` is our own message, so `llmctl render` and
`kubectl apply` say the same thing, and `field` is the path of the schema node holding the rule plus the rule's
fieldPath. Pydantic names the same field: its error location is the field itself, or for a CEL rule the model
holding the rule (the unit tests add the rule's field_path).
"""

from __future__ import annotations

import copy
import re
from typing import Any, NamedTuple

ROOT = ""  # an error on the object itself; the API server prints its path as <nil>


class Case(NamedTuple):
    id: str
    patch: dict[str, Any]
    expected: str
    field: str


def valid_object(name: str = "invalid-case") -> dict[str, Any]:
    """A minimal valid LLMDeployment every case starts from."""
    return {
        "apiVersion": "serving.llmops.dev/v1alpha1",
        "kind": "LLMDeployment",
        "metadata": {"name": name},
        "spec": {
            "model": {"name": "tiny", "uri": "hf://HuggingFaceTB/SmolLM2-135M-Instruct"},
            "runtime": {"backend": "vllm"},
            "resources": {"gpu": {"count": 1, "product": "NVIDIA-H100-80GB-HBM3"}},
        },
    }


def merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def invalid_items(stderr: str) -> list[tuple[str, str]]:
    """(field, rest) of each item of the API server's "is invalid" error as kubectl prints it: one item after
    the colon, or several on lines starting with "* "."""
    _, found, detail = stderr.partition(" is invalid: ")
    if not found:
        return []
    items = [line.strip().removeprefix("* ") for line in detail.splitlines() if line.strip()]
    return [(ROOT if f == "<nil>" else f, rest) for f, _, rest in (item.partition(": ") for item in items)]


def pydantic_path(field: str) -> str:
    """The API server's `a.b[0].c` as pydantic's dotted location `a.b.0.c`."""
    return re.sub(r"\[(\d+)\]", r".\1", field)


def build(case: Case, name: str = "invalid-case") -> dict[str, Any]:
    return merge_patch(valid_object(name), case.patch)


def _spec(**spec: Any) -> dict[str, Any]:
    return {"spec": spec}


INVALID_SPECS: list[Case] = [
    # --- model source (CEL) ---
    Case(
        "no-model-source",
        _spec(model={"uri": None}),
        "exactly one model source is required",
        "spec.model",
    ),
    Case(
        "two-model-sources",
        _spec(model={"pvc": {"claimName": "weights"}}),
        "exactly one model source is required",
        "spec.model",
    ),
    Case(
        "uri-unsupported-scheme",
        _spec(model={"uri": "https://huggingface.co/gpt2"}),
        "spec.model.uri must start with hf://, s3://, gs://, oci:// or pvc://",
        "spec.model.uri",
    ),
    Case(
        "pvc-uri-bad-claim",
        _spec(model={"uri": "pvc://Bad_Claim/models"}),
        "a pvc:// URI must be pvc://<claim-name>/<path>",
        "spec.model.uri",
    ),
    Case(
        "revision-without-hf",
        _spec(model={"uri": "s3://bucket/llama", "revision": "v1"}),
        "spec.model.revision is only supported for hf:// URIs",
        "spec.model.revision",
    ),
    Case(
        "secret-with-pvc",
        _spec(model={"uri": "pvc://weights/llama", "secretRef": {"name": "hf-token"}}),
        "spec.model.secretRef is only used to download remote models",
        "spec.model.secretRef",
    ),
    Case(
        "pvc-path-escapes-volume",
        _spec(model={"uri": None, "pvc": {"claimName": "weights", "path": "../etc"}}),
        "spec.model.pvc.path must be relative to the volume root",
        "spec.model.pvc.path",
    ),
    # --- schema: required, enums, bounds, patterns ---
    Case(
        "model-name-missing",
        _spec(model={"name": None}),
        "spec.model.name: Required value",
        "spec.model.name",
    ),
    Case(
        "model-name-with-slash",
        _spec(model={"name": "meta/llama"}),
        "spec.model.name in body should match",
        "spec.model.name",
    ),
    Case(
        "unknown-backend",
        _spec(runtime={"backend": "onnxruntime"}),
        'spec.runtime.backend: Unsupported value: "onnxruntime"',
        "spec.runtime.backend",
    ),
    Case(
        "negative-replicas",
        _spec(replicas=-1),
        "spec.replicas in body should be greater than or equal to 0",
        "spec.replicas",
    ),
    Case(
        "tensor-parallel-too-large",
        _spec(runtime={"tensorParallelSize": 128}),
        "spec.runtime.tensorParallelSize in body should be less than or equal to 64",
        "spec.runtime.tensorParallelSize",
    ),
    Case(
        "bad-cpu-quantity",
        _spec(resources={"cpu": "eight"}),
        "spec.resources.cpu in body should match",
        "spec.resources.cpu",
    ),
    Case(
        "bad-mig-profile",
        _spec(resources={"gpu": None, "mig": {"profile": "half-a-gpu"}}),
        "spec.resources.mig.profile in body should match",
        "spec.resources.mig.profile",
    ),
    Case(
        "unknown-capacity-type",
        _spec(placement={"capacityType": "Cheap"}),
        'spec.placement.capacityType: Unsupported value: "Cheap"',
        "spec.placement.capacityType",
    ),
    Case(
        "canary-weight-over-100",
        _spec(rollout={"strategy": "Canary", "canary": {"steps": [{"setWeight": 150}]}}),
        "spec.rollout.canary.steps[0].setWeight in body should be less than or equal to 100",
        "spec.rollout.canary.steps[0].setWeight",
    ),
    # --- cross-field rules (CEL) ---
    Case(
        "gpu-count-not-multiple-of-tp",
        _spec(runtime={"tensorParallelSize": 4}, resources={"gpu": {"count": 6}}),
        "spec.resources.gpu.count must be a multiple of spec.runtime.tensorParallelSize",
        "spec.runtime.tensorParallelSize",
    ),
    Case(
        "tensor-parallel-on-mig",
        _spec(runtime={"tensorParallelSize": 2}, resources={"gpu": None, "mig": {"profile": "1g.10gb"}}),
        "spec.resources.gpu.count must be a multiple of spec.runtime.tensorParallelSize",
        "spec.runtime.tensorParallelSize",
    ),
    Case(
        "python-backend-tensor-parallel",
        _spec(runtime={"backend": "python", "tensorParallelSize": 2}, resources={"gpu": {"count": 2}}),
        "spec.runtime.tensorParallelSize must be 1 with backend python",
        "spec.runtime.tensorParallelSize",
    ),
    Case(
        "mig-and-whole-gpus",
        _spec(resources={"mig": {"profile": "1g.10gb"}}),
        "spec.resources: set gpu (whole GPUs) or mig (a MIG slice), not both",
        "spec.resources",
    ),
    Case(
        "shared-memory-over-memory-limit",
        _spec(resources={"memory": "1Gi", "sharedMemory": "2Gi"}),
        "spec.resources.sharedMemory must be smaller than spec.resources.memory",
        "spec.resources.sharedMemory",
    ),
    Case(
        "vllm-without-gpu",
        _spec(resources={"gpu": None}),
        "spec.runtime.backend vllm and tensorrtllm need a GPU",
        "spec.resources",
    ),
    Case(
        "autoscaling-min-over-max",
        _spec(autoscaling={"minReplicas": 5, "maxReplicas": 2, "metrics": {"queueDepth": 4}}),
        "spec.autoscaling.minReplicas must be less than or equal to spec.autoscaling.maxReplicas",
        "spec.autoscaling.minReplicas",
    ),
    Case(
        "autoscaling-no-metric",
        _spec(autoscaling={"maxReplicas": 4, "metrics": {}}),
        "spec.autoscaling.metrics needs at least one target",
        "spec.autoscaling.metrics",
    ),
    Case(
        "autoscaling-zero-target",
        _spec(autoscaling={"maxReplicas": 4, "metrics": {"queueDepth": 0}}),
        "spec.autoscaling.metrics.queueDepth must be greater than 0",
        "spec.autoscaling.metrics.queueDepth",
    ),
    Case(
        "autoscaling-kv-zero",
        _spec(autoscaling={"maxReplicas": 4, "metrics": {"kvCacheUtilization": 0}}),
        "spec.autoscaling.metrics.kvCacheUtilization must be greater than 0",
        "spec.autoscaling.metrics.kvCacheUtilization",
    ),
    Case(
        "autoscaling-kv-over-one",
        _spec(autoscaling={"maxReplicas": 4, "metrics": {"kvCacheUtilization": 1.5}}),
        "spec.autoscaling.metrics.kvCacheUtilization in body should be less than or equal to 1",
        "spec.autoscaling.metrics.kvCacheUtilization",
    ),
    Case(
        "autoscaling-scale-to-zero-with-hpa",
        _spec(autoscaling={"minReplicas": 0, "maxReplicas": 4, "metrics": {"queueDepth": 4}}),
        "spec.autoscaling.minReplicas 0 (scale to zero) needs provider KEDA",
        "spec.autoscaling.minReplicas",
    ),
    Case(
        "autoscaling-keda-field-with-hpa",
        _spec(autoscaling={"maxReplicas": 4, "metrics": {"queueDepth": 4},
                           "keda": {"prometheusAddress": "http://prometheus:9090"}}),
        "spec.autoscaling.keda is required with provider KEDA and not allowed with provider HPA",
        "spec.autoscaling.keda",
    ),
    Case(
        "autoscaling-keda-without-address",
        _spec(autoscaling={"maxReplicas": 4, "metrics": {"queueDepth": 4}, "provider": "KEDA"}),
        "spec.autoscaling.keda is required with provider KEDA and not allowed with provider HPA",
        "spec.autoscaling.keda",
    ),
    Case(
        "autoscaling-bad-policy-type",
        _spec(autoscaling={"maxReplicas": 4, "metrics": {"queueDepth": 4},
                           "behavior": {"scaleUp": {"policies": [{"type": "Replicas", "value": 1,
                                                                  "periodSeconds": 60}]}}}),
        'spec.autoscaling.behavior.scaleUp.policies[0].type: Unsupported value: "Replicas"',
        "spec.autoscaling.behavior.scaleUp.policies[0].type",
    ),
    Case(
        "canary-weights-decreasing",
        _spec(rollout={"strategy": "Canary", "canary": {"steps": [{"setWeight": 50}, {"setWeight": 20}]}}),
        "spec.rollout.canary.steps setWeight values must not decrease",
        "spec.rollout.canary.steps",
    ),
    Case(
        "canary-step-weight-and-pause",
        _spec(rollout={"strategy": "Canary", "canary": {"steps": [{"setWeight": 10, "pause": {}}]}}),
        "each spec.rollout.canary.steps[] item needs exactly one of setWeight or pause",
        "spec.rollout.canary.steps[0]",
    ),
    Case(
        "canary-only-pauses",
        _spec(rollout={"strategy": "Canary", "canary": {"steps": [{"pause": {"duration": "1m"}}]}}),
        "spec.rollout.canary.steps needs at least one setWeight step",
        "spec.rollout.canary.steps",
    ),
    Case(
        "canary-check-without-bound",
        _spec(rollout={"strategy": "Canary", "canary": {"steps": [{"setWeight": 10}], "analysis": {
            "prometheus": {"address": "http://prometheus:9090"}, "checks": [{"metric": "ttftP95"}]}}}),
        "each spec.rollout.canary.analysis.checks[] item needs a bound",
        "spec.rollout.canary.analysis.checks[0]",
    ),
    Case(
        "canary-custom-check-without-query",
        _spec(rollout={"strategy": "Canary", "canary": {"steps": [{"setWeight": 10}], "analysis": {
            "prometheus": {"address": "http://prometheus:9090"}, "checks": [{"metric": "custom", "max": 1}]}}}),
        "spec.rollout.canary.analysis.checks[].query is required with metric custom",
        "spec.rollout.canary.analysis.checks[0].query",
    ),
    Case(
        "canary-check-min-above-max",
        _spec(rollout={"strategy": "Canary", "canary": {"steps": [{"setWeight": 10}], "analysis": {
            "prometheus": {"address": "http://prometheus:9090"},
            "checks": [{"metric": "errorRate", "min": 0.5, "max": 0.1}]}}}),
        "spec.rollout.canary.analysis.checks[].min must not be greater than max",
        "spec.rollout.canary.analysis.checks[0].min",
    ),
    Case(
        "canary-check-ratio-zero",
        _spec(rollout={"strategy": "Canary", "canary": {"steps": [{"setWeight": 10}], "analysis": {
            "prometheus": {"address": "http://prometheus:9090"},
            "checks": [{"metric": "ttftP95", "maxRatioToStable": 0}]}}}),
        "maxRatioToStable and minRatioToStable must be greater than 0",
        "spec.rollout.canary.analysis.checks[0]",
    ),
    Case(
        "canary-analysis-interval-too-short",
        _spec(rollout={"strategy": "Canary", "canary": {"steps": [{"setWeight": 10}], "analysis": {
            "interval": "2s", "prometheus": {"address": "http://prometheus:9090"},
            "checks": [{"metric": "errorRate", "max": 0.01}]}}}),
        "spec.rollout.canary.analysis.interval must be at least 5s",
        "spec.rollout.canary.analysis.interval",
    ),
    Case(
        "canary-steps-without-canary-strategy",
        _spec(rollout={"strategy": "RollingUpdate", "canary": {"steps": [{"setWeight": 10}]}}),
        "spec.rollout.canary is required with strategy Canary and not allowed otherwise",
        "spec.rollout.canary",
    ),
    Case(
        "parameter-key-with-space",
        _spec(runtime={"parameters": {"max model len": "4096"}}),
        "spec.runtime.parameters keys may only contain letters, digits",
        "spec.runtime.parameters",
    ),
    Case(
        "args-override-model-repository",
        _spec(runtime={"args": ["--model-repository=/elsewhere"]}),
        "spec.runtime.args must not set --model-repository",
        "spec.runtime.args",
    ),
    Case(
        "gpu-product-in-node-selector",
        _spec(placement={"nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}}),
        "spec.placement.nodeSelector must not set nvidia.com/gpu.product",
        "spec.placement.nodeSelector",
    ),
    Case(
        "capacity-type-in-node-selector",
        _spec(placement={"nodeSelector": {"llmops.dev/capacity-type": "spot"}}),
        "spec.placement.nodeSelector must not set llmops.dev/capacity-type; use spec.placement.capacityType",
        "spec.placement.nodeSelector",
    ),
    Case(
        "toleration-exists-with-value",
        _spec(placement={"tolerations": [{"key": "dedicated", "operator": "Exists", "value": "llm"}]}),
        "a toleration with operator Exists must not set value",
        "spec.placement.tolerations[0].value",
    ),
    Case(
        "duplicate-env",
        _spec(runtime={"env": [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]}),
        "spec.runtime.env[1]: Duplicate value",
        "spec.runtime.env[1]",
    ),
    Case(
        "pod-annotation-in-operator-prefix",
        _spec(podAnnotations={"serving.llmops.dev/model-name": "other"}),
        "spec.podAnnotations keys under serving.llmops.dev/ belong to the operator",
        "spec.podAnnotations",
    ),
    Case(
        "name-not-dns-1035",
        {"metadata": {"name": "1-llama"}},
        "metadata.name must be a DNS-1035 label",
        ROOT,  # the message names metadata.name: a root rule cannot set a fieldPath into metadata
    ),
]
