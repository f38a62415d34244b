"""The rendered fetch init container: `llm-fetch` from the runtime image, for hf://, s3:// and gs:// only."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from llm_operator import api, builders

UID = "7f6c9a1e-0000-4000-8000-000000000002"


def make(model: dict[str, Any], runtime: dict[str, Any] | None = None) -> api.LLMDeployment:
    return api.parse(
        {
            "apiVersion": api.API_VERSION,
            "kind": api.KIND,
            "metadata": {"name": "m", "namespace": "models"},
            "spec": {
                "model": {"name": "m", **model},
                "runtime": runtime or {"backend": "python"},
                "resources": {"gpu": {"count": 1}} if (runtime or {}).get("backend", "python") != "python" else {},
            },
        }
    )


def pod_spec(llmd: api.LLMDeployment) -> dict[str, Any]:
    out = builders.build_children(llmd, namespace="models", owner_uid=UID, monitoring_crds=False)
    (dep,) = [c for c in out if c["kind"] == "Deployment"]
    return dep["spec"]["template"]["spec"]


def fetch_container(llmd: api.LLMDeployment) -> dict[str, Any]:
    (fetch,) = pod_spec(llmd)["initContainers"]
    assert fetch["name"] == "fetch-model"
    return fetch


@pytest.fixture
def runtime_image() -> Iterator[str]:
    """Restore the module-level runtime image after a test sets it (as `--runtime-image` does at start-up)."""
    before = builders.DEFAULT_IMAGES["python"]
    yield before
    builders.DEFAULT_IMAGES["python"] = before


@pytest.mark.parametrize(
    ("model", "args"),
    [
        ({"uri": "hf://org/repo"}, ["hf://org/repo", "/mnt/model"]),
        ({"uri": "hf://org/repo", "revision": "v1.2"}, ["hf://org/repo:v1.2", "/mnt/model"]),
        ({"uri": "s3://bucket/models/llama"}, ["s3://bucket/models/llama", "/mnt/model"]),
        ({"uri": "gs://bucket/llama"}, ["gs://bucket/llama", "/mnt/model"]),
    ],
)
def test_llm_fetch_from_the_runtime_image(model: dict[str, Any], args: list[str]) -> None:
    fetch = fetch_container(make(model))
    assert fetch["image"] == builders.DEFAULT_IMAGES["python"]
    assert fetch["image"].startswith("ghcr.io/llmops-dev/triton-llm-runtime:")
    assert fetch["command"] == ["llm-fetch"]
    assert fetch["args"] == args
    assert fetch["imagePullPolicy"] == "IfNotPresent"
    assert fetch["env"] == [{"name": "HOME", "value": "/tmp"}, {"name": "HF_HUB_DISABLE_TELEMETRY", "value": "1"}]
    assert "envFrom" not in fetch
    assert fetch["volumeMounts"] == [{"name": "model", "mountPath": "/mnt/model"}]
    assert fetch["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert fetch["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    spec = pod_spec(make(model))
    # The pod runs everything as 1000:1000; the model volume is a per-pod emptyDir the triton container reads.
    assert spec["securityContext"]["runAsUser"] == spec["securityContext"]["runAsGroup"] == 1000
    assert {"name": "model", "emptyDir": {}} in spec["volumes"]


def test_the_secret_reaches_llm_fetch_as_environment() -> None:
    fetch = fetch_container(make({"uri": "s3://b/p", "secretRef": {"name": "s3-creds"}}))
    assert fetch["envFrom"] == [{"secretRef": {"name": "s3-creds"}}]


def test_the_fetch_image_follows_the_runtime_image_for_every_backend(runtime_image: str) -> None:
    builders.set_runtime_image("registry.example.com/llmops/triton-llm-runtime:9.9")
    for runtime in ({"backend": "python"}, {"backend": "vllm"}, {"backend": "tensorrtllm"},
                    {"backend": "python", "image": "registry.example.com/mine:1"}):
        llmd = make({"uri": "hf://org/repo"}, runtime)
        assert fetch_container(llmd)["image"] == "registry.example.com/llmops/triton-llm-runtime:9.9", runtime
    assert builders.fetch_image() == "registry.example.com/llmops/triton-llm-runtime:9.9"


def test_the_pull_policy_is_the_spec_s(runtime_image: str) -> None:
    llmd = make({"uri": "gs://b/p"}, {"backend": "python", "imagePullPolicy": "Always"})
    assert fetch_container(llmd)["imagePullPolicy"] == "Always"


def test_a_new_runtime_image_is_a_new_revision(runtime_image: str) -> None:
    llmd = make({"uri": "s3://b/p"}, {"backend": "vllm"})
    before = builders.revision_hash(llmd)
    builders.set_runtime_image("registry.example.com/llmops/triton-llm-runtime:9.9")
    assert builders.revision_hash(llmd) != before


@pytest.mark.parametrize("model", [{"uri": "oci://registry.example.com/models/llama:1"},
                                   {"uri": "pvc://weights/llama"}, {"pvc": {"claimName": "weights"}}])
def test_mounted_sources_have_no_fetch_container(model: dict[str, Any]) -> None:
    assert "initContainers" not in pod_spec(make(model)) or not pod_spec(make(model))["initContainers"]
