"""pytest plugin: one real local cluster per test session, one namespace per test.

Loaded by the root conftest.py. The cluster starts lazily, only when a test
asks for the ``cluster`` fixture, so pure unit tests never pay for it.

Options / environment:
  --kubeconfig PATH or LLMCTL_TEST_KUBECONFIG  use an already-running cluster (not stopped afterwards)
  --keep-cluster                               leave the session's cluster running and print its kubeconfig
  LLMCTL_BIN_DIR / KUBEBUILDER_ASSETS          use these binaries instead of building them
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("llmctl cluster")
    group.addoption("--kubeconfig", default=None, help="use this running cluster instead of starting one")
    group.addoption("--keep-cluster", action="store_true", help="do not stop the session's cluster")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Under pytest-xdist (--dist loadgroup) every cluster test runs on one worker, so one cluster serves them
    # all while other workers run the unit and runtime tests.
    for item in items:
        if item.get_closest_marker("cluster") is not None:
            item.add_marker(pytest.mark.xdist_group("cluster"))


@dataclass
class Cluster:
    kubeconfig: Path
    bin_dir: Path
    server: str
    nodes: list[str]
    ready_seconds: float

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [str(self.bin_dir / "kubectl"), f"--kubeconfig={self.kubeconfig}", *args],
            input=input,
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({proc.returncode}): {proc.stderr}")
        return proc

    def kubectl_json(self, *args: str) -> Any:
        return json.loads(self.kubectl(*args, "-o", "json").stdout)

    def api_client(self) -> Any:
        from kubernetes import config

        return config.new_client_from_config(config_file=str(self.kubeconfig))


def wait_for(
    check: Callable[[], Any], *, timeout: float = 60.0, interval: float = 0.25, what: str = "condition"
) -> Any:
    """Poll until ``check`` returns a truthy value; fail with the last value/exception seen."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except Exception as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")


@pytest.fixture(scope="session")
def cluster(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    from llm_operator.dev import LocalCluster, resolve_bin_dir

    existing = request.config.getoption("--kubeconfig") or os.environ.get("LLMCTL_TEST_KUBECONFIG")
    if existing:
        import yaml

        server = yaml.safe_load(Path(existing).read_text())["clusters"][0]["cluster"]["server"]
        os.environ["KUBECONFIG"] = str(existing)
        yield Cluster(Path(existing), resolve_bin_dir(), server, [], 0.0)
        return
    state = tmp_path_factory.mktemp("cluster", numbered=True)
    local = LocalCluster(state_dir=state / "state")
    info = local.up(timeout=240)
    previous = os.environ.get("KUBECONFIG")
    os.environ["KUBECONFIG"] = info.kubeconfig  # kopf and the kubernetes client read it
    try:
        yield Cluster(Path(info.kubeconfig), Path(info.bin_dir), info.server, info.nodes, info.ready_seconds)
    finally:
        if previous is None:
            os.environ.pop("KUBECONFIG", None)
        else:
            os.environ["KUBECONFIG"] = previous
        if request.config.getoption("--keep-cluster"):
            print(f"\nkept cluster; KUBECONFIG={info.kubeconfig}")
        else:
            local.down()


@pytest.fixture
def namespace(cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace per test, deleted afterwards."""
    base = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    name = f"{base}-{uuid.uuid4().hex[:5]}"
    cluster.kubectl("create", "namespace", name)
    # Pods are refused until the ServiceAccount controller has created the namespace's default account.
    wait_for(
        lambda: cluster.kubectl("get", "serviceaccount", "default", "-n", name, check=False).returncode == 0,
        timeout=30,
        what=f"default ServiceAccount in {name}",
    )
    yield name
    # Wait for the namespace to go: its pods hold fake GPUs that the next test may need.
    cluster.kubectl("delete", "namespace", name, "--ignore-not-found", "--timeout=90s", check=False)


# ---------------------------------------------------------------- the operator under test

ROOT = Path(__file__).resolve().parents[1]
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
