from __future__ import annotations

import os
from pathlib import Path


def repo_root() -> Path | None:
    """The source checkout this package runs from, if any (editable install or PYTHONPATH)."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "e2e" / "build-binaries.sh").is_file() and (parent / "pyproject.toml").is_file():
            return parent
    return None


def e2e_dir() -> Path:
    env = os.environ.get("LLMCTL_E2E_DIR")
    if env:
        return Path(env)
    root = repo_root()
    if root is None:
        raise FileNotFoundError(
            "cannot find the e2e/ folder (build script, kwok stages, node profiles); "
            "run from a source checkout or set LLMCTL_E2E_DIR"
        )
    return root / "e2e"


def cache_root() -> Path:
    env = os.environ.get("LLMCTL_CACHE_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "triton-llm-operator"
