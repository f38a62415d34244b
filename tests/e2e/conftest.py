"""Fixtures for tests that run the real operator against the real local cluster."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from e2e.pytest_plugin import Cluster, wait_for

ROOT = Path(__file__).resolve().parents[2]
CRD_FILE = ROOT / "crds" / "llmdeployments.serving.llmops.dev.yaml"


@pytest.fixture(scope="session")
def crd(cluster: Cluster) -> str:
    cluster.kubectl("apply", "--server-side", "-f", str(CRD_FILE))
    cluster.kubectl("wait", "--for=condition=Established", "crd/llmdeployments.serving.llmops.dev",
                    "--timeout=60s")
    # Discovery of the new group can lag Established by a moment.
    wait_for(lambda: cluster.kubectl("get", "llmd", "-A", check=False).returncode == 0, what="llmd discovery")
    return "llmdeployments.serving.llmops.dev"


class Operator:
    """The operator running in this process (kopf's KopfRunner thread), with access to its controller."""

    def __init__(self, runner: Any) -> None:
        self.runner = runner

    @property
    def controller(self) -> Any:
        from llm_operator import handlers

        assert handlers.controller is not None, "operator not started"
        return handlers.controller

    def settle(self, timeout: float = 30.0) -> None:
        """Wait until the work queue is idle (nothing due, nothing running)."""
        wait_for(lambda: self.controller.idle(), timeout=timeout, interval=0.1, what="operator idle")


@pytest.fixture(scope="session")
def operator(cluster: Cluster, crd: str) -> Iterator[Operator]:
    from kopf.testing import KopfRunner

    os.environ.setdefault("LLMOPS_RESYNC_SECONDS", "300")
    with KopfRunner(["run", "-A", "--standalone", "-m", "llm_operator.handlers"], timeout=60) as runner:
        op = Operator(runner)
        wait_for(lambda: __import__("llm_operator.handlers").handlers.controller is not None, timeout=30,
                 what="operator start-up")
        yield op
    assert runner.exception is None, runner.output[-3000:]
