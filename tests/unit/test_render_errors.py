"""`llmctl render -f` on bad input (issue #13): a file without an LLMDeployment fails and says so; a spec with several
mistakes reports every one of them, in every document, not just the first."""

from __future__ import annotations

from pathlib import Path

import pytest
from llm_operator import cli

HEAD = "apiVersion: serving.llmops.dev/v1alpha1\nkind: LLMDeployment\n"


def render(tmp_path: Path, text: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    path = tmp_path / "in.yaml"
    path.write_text(text)
    rc = cli.main(["render", "-f", str(path)])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.parametrize("text", [
    "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n",  # another kind only
    "",  # empty
    "---\n# just a comment\n---\n",
    "image: {tag: x}\nreplicaCount: 2\n",  # a Helm values file by mistake (no kind)
])
def test_a_file_without_an_llmdeployment_fails_and_says_so(tmp_path: Path, text: str,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = render(tmp_path, text, capsys)
    assert rc == 1 and out == ""
    assert "no LLMDeployment (serving.llmops.dev/v1alpha1, kind LLMDeployment) in the file; nothing to render" in err


def test_every_mistake_of_every_document_is_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = (
        HEAD + "metadata: {name: a}\nspec:\n  model: {name: a, uri: 'ftp://x', revision: v1}\n"
        "  runtime: {backend: onnx}\n  replicas: -1\n"
        "---\napiVersion: v1\nkind: Secret\nmetadata: {name: fine}\n"
        "---\n" + HEAD + "metadata: {name: b}\nspec:\n  model: {name: b, uri: 'hf://o/b'}\n"
        "  resources: {gpu: {count: 1}, memory: 1Gi, sharedMemory: 2Gi}\n"
        "  autoscaling: {minReplicas: 5, maxReplicas: 2, metrics: {queueDepth: 10}}\n"
        "---\n" + HEAD + "metadata: {namespace: x}\nspec:\n  model: {name: c, uri: 'hf://o/c'}\n  replicas: -2\n"
    )
    rc, out, err = render(tmp_path, text, capsys)
    assert rc == 1 and out == ""
    assert "3 invalid documents:" in err
    for line in (
        "document 1 (a): invalid LLMDeployment:",
        # two rules of one object (the model): both, as the API server's CEL validation reports both
        "spec.model: spec.model.uri must start with hf://",
        "spec.model: spec.model.revision is only supported for hf:// URIs",
        "spec.runtime.backend: Input should be 'python', 'vllm' or 'tensorrtllm'",
        "spec.replicas: Input should be greater than or equal to 0",
        "document 3 (b): invalid LLMDeployment:",
        "spec.resources: spec.resources.sharedMemory must be smaller than spec.resources.memory",
        "spec.autoscaling: spec.autoscaling.minReplicas must be less than or equal to spec.autoscaling.maxReplicas",
        "document 4: invalid LLMDeployment:",
        "metadata.name is required",
    ):
        assert line in err, f"{line!r} missing from:\n{err}"
    assert err.count("spec.replicas: Input should be greater than or equal to 0") == 2  # documents 1 and 4
    assert "document 2" not in err  # the Secret is not ours and not an error


def test_a_single_mistake_reads_as_before(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = render(tmp_path, HEAD + "metadata: {namespace: x}\nspec:\n  model: {name: c, uri: 'hf://o/c'}\n",
                        capsys)
    assert rc == 1 and "invalid documents" not in err and err.strip().endswith("document 1: metadata.name is required")
