"""The Triton model repository of a revision (config.pbtxt, model.json per backend) and its immutable ConfigMap."""

from __future__ import annotations

import json
import re
from typing import Any

from llm_runtime.repository import render_python_backend

from .. import api
from ._meta import COMPONENT_REPOSITORY, MODEL_DIR, TRTLLM_EXECUTOR_WORKER, _metadata, deployment_name

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
        # Only the generated tokens come back, streaming or not: the OpenAI front detokenizes them as is.
        ("exclude_input_in_output", "TYPE_BOOL", "[ 1 ]", True, False),
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
