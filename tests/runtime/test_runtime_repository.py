"""The repository renderer is what the operator puts into every model pod: check its output and errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from llm_runtime.repository import render_python_backend, write_model_repository

ARGS = {
    "model_name": "llama-3",
    "model_dir": "/models/llama",
    "max_batch_size": 16,
    "max_queue_size": 64,
    "queue_timeout_us": 5_000_000,
    "dtype": "bfloat16",
}


def test_renders_decoupled_python_backend_with_generate_inputs() -> None:
    files = render_python_backend(**ARGS)  # type: ignore[arg-type]
    assert set(files) == {"llama-3/config.pbtxt", "llama-3/1/model.py"}
    cfg = files["llama-3/config.pbtxt"]
    assert 'name: "llama-3"' in cfg
    assert 'backend: "python"' in cfg
    assert "decoupled: true" in cfg
    for name in ("text_input", "max_tokens", "temperature", "top_p", "top_k", "stop", "seed", "stream"):
        assert f'name: "{name}"' in cfg
    for name in ("text_output", "finish_reason", "prompt_tokens", "completion_tokens"):
        assert f'name: "{name}"' in cfg
    assert 'key: "model_dir"\n  value: { string_value: "/models/llama" }' in cfg
    assert 'key: "max_queue_size"\n  value: { string_value: "64" }' in cfg
    assert 'key: "dtype"\n  value: { string_value: "bfloat16" }' in cfg
    assert "from llm_runtime.triton_model import TritonPythonModel" in files["llama-3/1/model.py"]


def test_extra_parameters_override_defaults_and_are_escaped() -> None:
    files = render_python_backend(**ARGS, parameters={"dtype": "float16", "note": 'say "hi"'})  # type: ignore[arg-type]
    cfg = files["llama-3/config.pbtxt"]
    assert 'string_value: "float16"' in cfg
    assert 'string_value: "bfloat16"' not in cfg
    assert r'string_value: "say \"hi\""' in cfg


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"model_name": "bad name!"}, "not a valid Triton model name"),
        ({"max_batch_size": 0}, "max_batch_size must be >= 1"),
        ({"max_queue_size": -1}, "max_queue_size must be >= 0"),
        ({"dtype": "int3"}, "dtype 'int3' is not supported"),
        ({"tensor_parallel_size": 2}, "tensor_parallel_size=2 is not supported"),
        ({"model_dir": ""}, "model_dir must be a non-empty path"),
    ],
)
def test_invalid_arguments_are_refused_with_the_fix(override: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        render_python_backend(**{**ARGS, **override})  # type: ignore[arg-type]


def test_write_model_repository_writes_files_and_refuses_escapes(tmp_path: Path) -> None:
    files = render_python_backend(**ARGS)  # type: ignore[arg-type]
    write_model_repository(files, tmp_path)
    assert (tmp_path / "llama-3" / "config.pbtxt").read_text() == files["llama-3/config.pbtxt"]
    assert (tmp_path / "llama-3" / "1" / "model.py").is_file()
    with pytest.raises(ValueError, match="must be relative"):
        write_model_repository({"../evil.txt": "x"}, tmp_path)


def test_repository_and_cli_import_without_heavy_dependencies() -> None:
    # The operator image has no torch: importing these must not pull it (or tritonclient) in.
    code = (
        "import sys, llm_runtime.repository, llm_runtime.cli, llm_runtime.metrics;"
        "heavy = [m for m in ('torch', 'transformers', 'tritonclient', 'numpy') if m in sys.modules];"
        "print(heavy); sys.exit(1 if heavy else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
