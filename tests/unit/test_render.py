"""`render_file` (behind `llmctl render -f`) and the shipped examples."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from llm_operator import api, builders

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))
# GPU products of the local test cluster's fake fleet (e2e/nodes); examples must schedule there.
CLUSTER_PRODUCTS = {"NVIDIA-H100-80GB-HBM3", "NVIDIA-A100-SXM4-80GB", "NVIDIA-L4"}

VALID = """\
apiVersion: serving.llmops.dev/v1alpha1
kind: LLMDeployment
metadata: {name: a, namespace: team-a}
spec:
  model: {name: a, uri: "hf://org/a"}
---
apiVersion: serving.llmops.dev/v1alpha1
kind: LLMDeployment
metadata: {name: b, uid: 11111111-2222-3333-4444-555555555555}
spec:
  model: {name: b, uri: "pvc://weights/b"}
"""


def test_render_multiple_documents(tmp_path: Path) -> None:
    path = tmp_path / "two.yaml"
    path.write_text(VALID)
    docs = list(yaml.safe_load_all(builders.render_file(path)))
    kinds = [(d["kind"], d["metadata"]["namespace"]) for d in docs]
    assert kinds[:5] == [
        ("ConfigMap", "team-a"),
        ("Service", "team-a"),
        ("Deployment", "team-a"),
        ("PodDisruptionBudget", "team-a"),
        ("PodMonitor", "team-a"),
    ]
    assert kinds[5][1] == "default"  # no namespace in the file
    assert all("ownerReferences" not in d["metadata"] for d in docs[:5])
    assert all(d["metadata"]["ownerReferences"][0]["name"] == "b" for d in docs[5:])


def test_render_without_monitoring_crds(tmp_path: Path) -> None:
    path = tmp_path / "two.yaml"
    path.write_text(VALID)
    docs = list(yaml.safe_load_all(builders.render_file(path, monitoring_crds=False)))
    assert "PodMonitor" not in {d["kind"] for d in docs}


def test_render_is_deterministic(tmp_path: Path) -> None:
    path = tmp_path / "two.yaml"
    path.write_text(VALID)
    assert builders.render_file(path) == builders.render_file(path)


def test_error_names_file_document_and_field(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        VALID + "---\n" + VALID.split("---")[0].replace("hf://org/a", "ftp://x").replace("name: a,", "name: c,")
    )
    with pytest.raises(builders.RenderError) as info:
        builders.render_file(path)
    message = str(info.value)
    assert str(path) in message
    assert "document 3 (c)" in message
    assert "spec.model: spec.model.uri must start with hf://" in message


def test_error_for_bad_enum_names_field(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(VALID.split("---")[0] + "  runtime: {backend: onnx}\n")
    with pytest.raises(builders.RenderError, match=r"spec\.runtime\.backend: Input should be 'python'"):
        builders.render_file(path)


def test_other_kinds_are_skipped_but_our_group_is_checked(tmp_path: Path) -> None:
    path = tmp_path / "mixed.yaml"
    path.write_text("apiVersion: v1\nkind: Secret\nmetadata: {name: s}\n---\n" + VALID)
    assert builders.render_file(path).count("kind: Deployment") == 2
    path.write_text("apiVersion: serving.llmops.dev/v1alpha1\nkind: LLMDeploymnt\nmetadata: {name: s}\n")
    with pytest.raises(
        builders.RenderError, match=r"expected apiVersion serving\.llmops\.dev/v1alpha1 kind LLMDeployment"
    ):
        builders.render_file(path)


def test_unreadable_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(builders.RenderError, match="cannot read"):
        builders.render_file(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("spec: [unclosed\n")
    with pytest.raises(builders.RenderError, match="not valid YAML"):
        builders.render_file(bad)


def test_missing_name(tmp_path: Path) -> None:
    path = tmp_path / "noname.yaml"
    path.write_text(VALID.split("---")[0].replace("{name: a, namespace: team-a}", "{namespace: x}"))
    with pytest.raises(builders.RenderError, match=r"metadata\.name is required"):
        builders.render_file(path)


# ---------------------------------------------------------------------------------------------- examples


def test_examples_exist() -> None:
    names = {p.name for p in EXAMPLES}
    assert len(names) >= 4
    llmds = [llmd for p in EXAMPLES for llmd in builders.load_file(p)]
    spec_of = {d.name: d.spec for d in llmds}
    # The four scenarios the issue asks for.
    assert any(s.resources.gpu and s.resources.gpu.count == 1 for s in spec_of.values())
    assert any(
        s.runtime.tensor_parallel_size == 8 and s.resources.gpu and s.resources.gpu.count == 8 for s in spec_of.values()
    )
    assert any(s.resources.mig is not None for s in spec_of.values())
    assert any(s.placement.capacity_type in ("Spot", "PreferSpot") for s in spec_of.values())


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_renders_and_targets_cluster_products(path: Path) -> None:
    llmds = builders.load_file(path)
    assert llmds, f"{path.name} holds no LLMDeployment"
    rendered = list(yaml.safe_load_all(builders.render_file(path)))
    assert {d["kind"] for d in rendered} >= {"ConfigMap", "Service", "Deployment", "PodDisruptionBudget"}
    for llmd in llmds:
        res = llmd.spec.resources
        product = (res.gpu.product if res.gpu else None) or (res.mig.product if res.mig else None)
        assert product is None or product in CLUSTER_PRODUCTS, product
        # Every Secret/PVC an example references ships in the same file, so applying the file just works.
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
        shipped = {(d["kind"], d["metadata"]["name"]) for d in docs}
        if llmd.spec.model.secret_ref is not None:
            assert ("Secret", llmd.spec.model.secret_ref.name) in shipped
        pvc = llmd.spec.model.pvc_source()
        if pvc is not None:
            assert ("PersistentVolumeClaim", pvc.claim_name) in shipped


def test_examples_are_valid_under_the_api() -> None:
    for path in EXAMPLES:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == api.KIND:
                api.parse(doc)
