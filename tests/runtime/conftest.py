"""Fixtures shared by the runtime tests: one tiny random-weight model per test session (per xdist worker)."""

from __future__ import annotations

from pathlib import Path

import pytest
from llm_runtime.tiny import create_tiny_model


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return create_tiny_model(tmp_path_factory.mktemp("tiny-model"))
