"""The image recipes without building them (no podman needed): names, Containerfiles, podman settings.

The builds and the pods themselves run in `make images-test` (images/test_pods.py).
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import yaml
from llm_operator import __version__, images
from llm_operator.builders._meta import DEFAULT_IMAGES, RUN_AS_USER
from llm_runtime import container

ROOT = Path(__file__).resolve().parents[2]


def test_containers_conf_is_the_setting_that_works_here() -> None:
    conf = tomllib.loads(images.CONTAINERS_CONF.read_text())
    assert conf["engine"]["runtime"] == "runc"
    assert conf["engine"]["cgroup_manager"] == "cgroupfs"
    assert conf["containers"]["default_ulimits"] == ["nofile=20000:20000", "nproc=4096:4096"]
    assert images.podman_env()["CONTAINERS_CONF"] == str(ROOT / "images" / "containers.conf")


def test_image_names_match_operator_defaults_and_chart() -> None:
    assert images.RUNTIME_IMAGE == DEFAULT_IMAGES["python"] == f"ghcr.io/llmops-dev/triton-llm-runtime:{__version__}"
    chart = yaml.safe_load((ROOT / "charts" / "triton-llm-operator" / "Chart.yaml").read_text())
    values = yaml.safe_load((ROOT / "charts" / "triton-llm-operator" / "values.yaml").read_text())
    assert f"{values['image']['repository']}:{chart['appVersion']}" == images.OPERATOR_IMAGE
    assert chart["appVersion"] == __version__
    assert {s.containerfile for s in images.IMAGES.values()} == {"operator/Containerfile", "runtime/Containerfile"}


def _containerfile(spec: images.ImageSpec) -> str:
    return (ROOT / spec.containerfile).read_text()


def test_containerfiles_have_base_arg_labels_and_non_root_user() -> None:
    for spec in images.IMAGES.values():
        text = _containerfile(spec)
        assert re.search(r"^ARG BASE=docker\.io/library/python:3\.1\d-slim-bookworm$", text, re.M), spec.key
        assert re.findall(r"^FROM \$\{BASE\}", text, re.M), spec.key
        for label in ("title", "description", "version", "revision", "source", "licenses"):
            assert f"org.opencontainers.image.{label}=" in text, (spec.key, label)
        assert re.search(rf'org\.opencontainers\.image\.title="{spec.name.split("/")[-1].split(":")[0]}"', text)
        user = re.findall(r"^USER (\d+):(\d+)$", text, re.M)
        assert len(user) == 1 and int(user[0][0]) != 0, spec.key
        # Every COPY source exists in the build context images.py assembles.
        for source in re.findall(r"^COPY (?!--from)(.+) \S+$", text, re.M):
            for path in source.split():
                assert (ROOT / path).exists() and any(path.startswith(p) for p in images.CONTEXT_PATHS), path
    runtime = _containerfile(images.IMAGES["runtime"])
    assert re.search(rf"^USER {RUN_AS_USER}:{RUN_AS_USER}$", runtime, re.M)  # the pods' runAsUser
    assert not re.search(r"^ENTRYPOINT", runtime, re.M)  # the pod's args start with `tritonserver`


def test_runtime_tritonserver_wrapper_is_a_python_script() -> None:
    wrapper = ROOT / "runtime" / "image" / "tritonserver"
    assert wrapper.read_text().startswith("#!/opt/llmops/bin/python\n")
    assert wrapper.stat().st_mode & 0o111


def test_container_command_adds_backend_dir_and_keeps_the_pods_args(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLM_RUNTIME_BACKEND_DIR", "/opt/llmops/backends")
    cmd = container.command(["tritonserver", "--model-repository=/models", "--http-port=8000"])
    assert cmd[0].endswith("/tritonserver/bin/tritonserver")
    assert "--backend-directory=/opt/llmops/backends" in cmd
    assert any(a.startswith("--cache-directory=") for a in cmd)
    assert cmd[-2:] == ["--model-repository=/models", "--http-port=8000"]
    given = container.command(["tritonserver", "--backend-directory=/x", "--allow-gpu-metrics=true"])
    assert [a for a in given if a.startswith("--backend-directory")] == ["--backend-directory=/x"]
    assert "--allow-gpu-metrics=false" not in given


def test_base_hash_follows_the_recipe(monkeypatch: pytest.MonkeyPatch) -> None:
    before = images.base_hash()
    monkeypatch.setattr(images, "BASE_PACKAGES", (*images.BASE_PACKAGES, "curl"))
    assert images.base_hash() != before


def test_context_files_are_the_copied_paths_only() -> None:
    files = images._context_files()
    assert "pyproject.toml" in files and "runtime/image/tritonserver" in files
    assert all(f.split("/")[0] in images.CONTEXT_PATHS for f in files)
    assert not any("__pycache__" in f or f.startswith(".venv") for f in files)
