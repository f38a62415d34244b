"""How the emulator reads model pods: from pods and ConfigMaps exactly as the operator's builders render them."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from invalid_specs import merge_patch
from kubernetes.client.exceptions import ApiException
from llm_operator import api, builders
from llm_operator.api import Backend
from llm_operator.dev.traffic._kube import (
    POD_SELECTOR,
    KubePodSource,
    backend_from_image,
    backend_from_repository,
    pod_info,
    repository_configmap,
)

UID = "7f6c9a1e-0000-4000-8000-000000000001"
READY_AT = "2026-11-23T10:00:05Z"


def llmd(backend: Backend, *, image: str | None = None) -> api.LLMDeployment:
    spec: dict[str, Any] = {
        "model": {"name": "llama-3.1-8b", "uri": "hf://meta-llama/Llama-3.1-8B-Instruct"},
        "runtime": {"backend": backend},
        "resources": {"gpu": {"count": 1, "product": "NVIDIA-H100-80GB-HBM3"}},
    }
    if image:
        spec["runtime"]["image"] = image
    obj = {"apiVersion": api.API_VERSION, "kind": api.KIND, "metadata": {"name": "llama", "namespace": "team"}}
    return api.parse(merge_patch(obj, {"spec": spec}))


def rendered(
    backend: Backend, *, image: str | None = None, ready: bool = True
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A pod of the operator's Deployment as the API would serve it, and its revision's ConfigMap."""
    children = builders.build_children(llmd(backend, image=image), namespace="team", owner_uid=UID,
                                       monitoring_crds=False)
    kinds = {c["kind"]: c for c in children}
    template = kinds["Deployment"]["spec"]["template"]
    pod = json.loads(json.dumps(template))
    pod["metadata"].update(name="llama-abc-x1", namespace="team")
    pod["status"] = {"conditions": [{"type": "Ready", "status": "True" if ready else "False",
                                     "lastTransitionTime": READY_AT}]}
    return pod, kinds["ConfigMap"]


def test_selector_matches_the_operators_model_pods() -> None:
    pod, _ = rendered("python")
    labels = pod["metadata"]["labels"]
    for term in POD_SELECTOR.split(","):
        key, _, value = term.partition("=")
        assert key in labels and (not value or labels[key] == value), term


@pytest.mark.parametrize("backend", ["python", "vllm", "tensorrtllm"])
def test_backend_and_identity_from_rendered_children(backend: Backend) -> None:
    pod, configmap = rendered(backend)
    assert repository_configmap(pod) == configmap["metadata"]["name"]
    assert backend_from_repository(configmap["data"]) == backend
    info = pod_info(pod, backend=backend, first_seen_ready=None)
    assert info is not None
    assert info.llmdeployment == "llama"
    assert info.revision == configmap["metadata"]["labels"][builders.REVISION_LABEL]
    assert info.image == builders.DEFAULT_IMAGES[backend]
    assert info.model == "llama-3.1-8b"
    assert info.ready and info.ready_since == datetime(2026, 11, 23, 10, 0, 5, tzinfo=UTC).timestamp()
    assert not info.terminating


def test_engine_backend_wins_in_a_repository_with_a_python_preprocessor() -> None:
    files = {"preprocessing__config.pbtxt": 'name: "pre"\nbackend: "python"\n',
             "tensorrt_llm__config.pbtxt": 'name: "tensorrt_llm"\nbackend: "tensorrtllm"\n',
             "tensorrt_llm__1__.keep": ""}
    assert backend_from_repository(files) == "tensorrtllm"
    assert backend_from_repository({"x__1__model.json": "{}"}) is None


def test_images_say_the_backend_of_ngc_tritonserver() -> None:
    assert backend_from_image(builders.DEFAULT_IMAGES["vllm"]) == "vllm"
    assert backend_from_image(builders.DEFAULT_IMAGES["tensorrtllm"]) == "tensorrtllm"
    assert backend_from_image(builders.DEFAULT_IMAGES["python"]) is None


def test_unready_terminating_and_foreign_pods() -> None:
    pod, _ = rendered("vllm", image="reg/vllm-server:1.2-slow", ready=False)
    pod["metadata"]["deletionTimestamp"] = READY_AT
    info = pod_info(pod, backend="vllm", first_seen_ready=123.0)
    assert info is not None
    assert not info.ready and info.ready_since is None and info.terminating
    assert info.image_tag == "1.2-slow"
    # Ready without a transition time: the time the emulator first saw it Ready.
    pod, _ = rendered("vllm")
    del pod["status"]["conditions"][0]["lastTransitionTime"]
    info = pod_info(pod, backend="vllm", first_seen_ready=123.0)
    assert info is not None and info.ready_since == 123.0
    del pod["metadata"]["labels"][builders.REVISION_LABEL]
    assert pod_info(pod, backend="vllm", first_seen_ready=None) is None


class _Data:
    def __init__(self, data: dict[str, str]) -> None:
        self.data = data


class FakeCore:
    def __init__(self, configmaps: dict[str, dict[str, str]]) -> None:
        self.configmaps = configmaps
        self.reads = 0

    def read_namespaced_config_map(self, name: str, namespace: str) -> _Data:
        self.reads += 1
        if name not in self.configmaps:
            raise ApiException(status=404, reason="Not Found")
        return _Data(self.configmaps[name])


class FakeCustom:
    def __init__(self, objects: dict[str, dict[str, Any]]) -> None:
        self.objects = objects

    def get_namespaced_custom_object(self, group: str, version: str, namespace: str, plural: str,
                                     name: str) -> dict[str, Any]:
        if name not in self.objects:
            raise ApiException(status=404, reason="Not Found")
        return self.objects[name]


def source(tmp_path: Path, *, configmaps: dict[str, dict[str, str]], llmds: dict[str, dict[str, Any]],
           now: list[float]) -> tuple[KubePodSource, FakeCore]:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
    }))
    src = KubePodSource(kubeconfig=str(kubeconfig), clock=lambda: now[0], retry_seconds=30)
    core = FakeCore(configmaps)
    src._core = core  # type: ignore[assignment]
    src._custom = FakeCustom(llmds)  # type: ignore[assignment]
    return src, core


def test_backend_resolution_order_and_caching(tmp_path: Path) -> None:
    """The revision's ConfigMap wins (it is what Triton loads, even mid-rollout to another backend); then the
    LLMDeployment's spec; then the image; then python. A found ConfigMap is cached (immutable), a miss is
    retried after the retry interval."""
    pod, configmap = rendered("vllm")
    cm_name = configmap["metadata"]["name"]
    now = [0.0]
    rollout_spec = {"spec": {"runtime": {"backend": "tensorrtllm"}}}
    src, core = source(tmp_path, configmaps={cm_name: configmap["data"]}, llmds={"llama": rollout_spec}, now=now)
    assert src._backend(pod) == "vllm"
    assert src._backend(pod) == "vllm"
    assert core.reads == 1

    src, core = source(tmp_path, configmaps={}, llmds={"llama": rollout_spec}, now=now)
    assert src._backend(pod) == "tensorrtllm"
    src, core = source(tmp_path, configmaps={}, llmds={}, now=now)
    assert src._backend(pod) == "vllm"  # from the NGC image name
    python_pod, _ = rendered("python")
    assert src._backend(python_pod) == "python"
    reads = core.reads
    src._backend(pod)
    assert core.reads == reads  # the miss is remembered for retry_seconds
    core.configmaps[cm_name] = {"llama__config.pbtxt": 'backend: "tensorrtllm"\n'}
    now[0] = 31.0
    assert src._backend(pod) == "tensorrtllm"
