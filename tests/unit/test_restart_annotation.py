"""The restart annotation (Argo CD's restart action): copied into the pod template, so a new value is a new revision
and nothing else changes."""

from __future__ import annotations

from typing import Any

from llm_operator import api, builders
from llm_operator.builders.pod import RESTARTED_AT_ANNOTATION


def make(annotations: dict[str, str] | None = None) -> api.LLMDeployment:
    metadata: dict[str, Any] = {"name": "llama", "namespace": "models"}
    if annotations is not None:
        metadata["annotations"] = annotations
    return api.parse({
        "apiVersion": api.API_VERSION, "kind": api.KIND, "metadata": metadata,
        "spec": {"model": {"name": "llama-3.1-8b", "uri": "hf://meta-llama/Llama-3.1-8B-Instruct"},
                 "runtime": {"backend": "vllm"},
                 "resources": {"gpu": {"count": 1, "product": "NVIDIA-H100-80GB-HBM3"}}},
    })


def test_the_annotation_is_copied_into_the_pod_template_and_makes_a_new_revision() -> None:
    plain = make()
    restarted = make({RESTARTED_AT_ANNOTATION: "2026-11-23T07:30:00Z"})
    again = make({RESTARTED_AT_ANNOTATION: "2026-11-23T08:00:00Z"})

    template = builders.build_pod_template(restarted, revision="r1")
    assert template["metadata"]["annotations"][RESTARTED_AT_ANNOTATION] == "2026-11-23T07:30:00Z"
    assert RESTARTED_AT_ANNOTATION not in builders.build_pod_template(plain, revision="r1")["metadata"]["annotations"]
    revisions = {builders.revision_hash(m) for m in (plain, restarted, again)}
    assert len(revisions) == 3, "each new value is a new revision"
    assert builders.revision_hash(make({RESTARTED_AT_ANNOTATION: "2026-11-23T07:30:00Z"})) == \
        builders.revision_hash(restarted), "the same value is the same revision"


def test_other_annotations_of_the_object_do_not_reach_the_pods_or_the_revision() -> None:
    plain = make()
    requested = make({"serving.llmops.dev/rollout-request": "promote/argocd-rv12", "serving.llmops.dev/rollout-paused":
                      "true", "argocd.argoproj.io/tracking-id": "models:serving.llmops.dev/LLMDeployment:models/llama"})
    assert builders.revision_hash(requested) == builders.revision_hash(plain)
    annotations = builders.build_pod_template(requested, revision="r1")["metadata"]["annotations"]
    assert set(annotations) == {"serving.llmops.dev/model-name"}


def test_an_empty_value_is_no_restart() -> None:
    assert builders.revision_hash(make({RESTARTED_AT_ANNOTATION: ""})) == builders.revision_hash(make())
