"""pytest plugin: one real local cluster per test session, one namespace per test.

Loaded by the root conftest.py. The cluster starts lazily, only when a test
asks for the ``cluster`` fixture, so pure unit tests never pay for it.

Options / environment:
  --kubeconfig PATH or LLMCTL_TEST_KUBECONFIG  use an already-running cluster (not stopped afterwards)
  --keep-cluster                               leave the session's cluster running and print its kubeconfig
  LLMCTL_BIN_DIR / KUBEBUILDER_ASSETS          use these binaries instead of building them
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "outage: restarts the dev cluster's apiserver and etcd; deselected in make test (garbage-collector "
        "timing), run with -m outage")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("llmctl cluster")
    group.addoption("--kubeconfig", default=None, help="use this running cluster instead of starting one")
    group.addoption("--keep-cluster", action="store_true", help="do not stop the session's cluster")


# Under pytest-xdist the cluster tests run on three clusters, one per worker (the `cluster` fixture is per session,
# that is per worker), so that their waits (HPA windows, metrics scrapes, rollouts, restarts) overlap; a fourth
# worker runs the unit and runtime modules. Balanced by per-module totals from a run with `--junitxml` (at
# aa60350 the first cluster had 756 s of tests, the others 497 s and 471 s: the wall time is the largest group);
# a cluster module not listed here runs on the first cluster.
CLUSTER_OF_MODULE: dict[str, str] = {
    **dict.fromkeys(("test_autoscaling_loop", "test_simulate_fidelity", "test_leader_election",
                     "test_operator_pod", "test_pods", "test_claims", "test_names"), "cluster-2"),
    **dict.fromkeys(("test_metrics_bed", "test_chaos", "test_schema_fuzz", "test_kubectl_plugin",
                     "test_pod_failures", "test_pod_security", "test_chart_install", "test_rbac",
                     "test_autoscaling_ownership", "test_rollout_availability", "test_argocd_capture"), "cluster-3"),
}


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Every other module is one unit of work too, so a module's fixtures (a tritonserver, a podman pod) start
    # once, not once per worker that happens to get one of its tests.
    for item in items:
        module = item.module.__name__.rsplit(".", 1)[-1] if item.module is not None else ""
        if item.get_closest_marker("cluster") is not None:
            item.add_marker(pytest.mark.xdist_group(CLUSTER_OF_MODULE.get(module, "cluster")))
        elif item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group(f"module-{module}"))


@dataclass
class Cluster:
    kubeconfig: Path
    bin_dir: Path
    server: str
    nodes: list[str]
    ready_seconds: float
    # The metrics test bed (`dev up --metrics`): None on a --kubeconfig cluster started without it.
    prometheus_url: str | None = None
    traffic_url: str | None = None

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


def first_mismatch(desired: Any, actual: Any, path: str = "") -> str | None:
    """Where ``llm_operator._diff.contains(desired, actual)`` fails, for a readable assertion message."""
    from llm_operator._diff import contains

    if contains(desired, actual):
        return None
    if isinstance(desired, dict) and isinstance(actual, dict):
        for key, value in desired.items():
            if value is not None and key not in actual:
                return f"{path}.{key}: missing (want {value!r})"
            if value is not None and not contains(value, actual[key]):
                return first_mismatch(value, actual[key], f"{path}.{key}")
    return f"{path or '.'}: want {json.dumps(desired)[:300]}, have {json.dumps(actual)[:300]}"


def monitoring_crd(kind: str) -> dict[str, Any]:
    """A schema-less stand-in for a Prometheus Operator CRD (PodMonitor, ServiceMonitor)."""
    plural = kind.lower() + "s"
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.monitoring.coreos.com"},
        "spec": {
            "group": "monitoring.coreos.com",
            "names": {"kind": kind, "plural": plural, "singular": kind.lower(), "listKind": f"{kind}List"},
            "scope": "Namespaced",
            "versions": [{"name": "v1", "served": True, "storage": True, "schema": {
                "openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}}],
        },
    }


def ensure_monitoring_crds(cluster: Cluster, operator: Operator | None = None) -> None:
    """Serve both monitor kinds, and wait until the in-process operator has seen them (else an object created
    now would first be reconciled without its monitor)."""
    import yaml

    kinds = ("PodMonitor", "ServiceMonitor")
    for kind in kinds:
        crd = monitoring_crd(kind)
        cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(crd))
        cluster.kubectl("wait", "--for=condition=Established", f"crd/{crd['metadata']['name']}", "--timeout=30s")
    if operator is not None:
        wait_for(lambda: set(kinds) <= operator.controller.monitor_kinds, timeout=30,
                 what="the operator to see the monitoring CRDs")


TRAFFIC_STARTUP_DELAY = 3.0


@pytest.fixture(scope="session")
def cluster(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    from llm_operator.dev import ClusterInfo, LocalCluster, resolve_bin_dir

    existing = request.config.getoption("--kubeconfig") or os.environ.get("LLMCTL_TEST_KUBECONFIG")
    if existing:
        import yaml

        server = yaml.safe_load(Path(existing).read_text())["clusters"][0]["cluster"]["server"]
        os.environ["KUBECONFIG"] = str(existing)
        # A `dev up --metrics` cluster keeps its state (and the test bed's ports) next to its kubeconfig.
        started = ClusterInfo.load(Path(existing).resolve().parent)
        yield Cluster(Path(existing), resolve_bin_dir(), server, [], 0.0,
                      started.prometheus_url if started else None, started.traffic_url if started else None)
        return
    state = tmp_path_factory.mktemp("cluster", numbered=True)
    local = LocalCluster(state_dir=state / "state")
    # One cluster per session, with the metrics test bed: it adds about a second to the start-up (Prometheus,
    # the emulator and the adapter start while the controllers do). Emulated pods load their model for
    # TRAFFIC_STARTUP_DELAY s, so a test can see a pod that exports nothing yet.
    from llm_operator.dev._cluster import ClusterError

    for attempt in range(3):
        try:
            info = local.up(timeout=240, metrics=True, traffic_startup_delay=TRAFFIC_STARTUP_DELAY)
            break
        except ClusterError as exc:
            # Free ports are picked before the components bind them; with two clusters starting at once (one
            # per xdist worker), another process can take one in between. A fresh set of ports fixes that.
            local.down()
            if "address already in use" not in str(exc) or attempt == 2:
                raise
            local = LocalCluster(state_dir=state / f"state-{attempt + 1}")
    previous = os.environ.get("KUBECONFIG")
    os.environ["KUBECONFIG"] = info.kubeconfig  # kopf and the kubernetes client read it
    try:
        yield Cluster(Path(info.kubeconfig), Path(info.bin_dir), info.server, info.nodes, info.ready_seconds,
                      info.prometheus_url, info.traffic_url)
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

    def established() -> bool:
        # Polled, not `kubectl wait`: under load the CRD can be read before it has any condition, and `kubectl
        # wait` then fails at once instead of waiting.
        crd = cluster.kubectl_json("get", "crd", "llmdeployments.serving.llmops.dev")
        conds = (crd.get("status") or {}).get("conditions") or []
        return any(c.get("type") == "Established" and c.get("status") == "True" for c in conds)

    wait_for(established, timeout=60, what="the LLMDeployment CRD Established")
    # Discovery of the new group can lag Established by a moment.
    wait_for(lambda: cluster.kubectl("get", "llmd", "-A", check=False).returncode == 0, what="llmd discovery")
    return "llmdeployments.serving.llmops.dev"


CONTROLLER_LOGGER = "llm_operator.controller"


class _ErrorRecords(logging.Handler):
    """The controller's ERROR records ("reconcile %s/%s crashed"). The work queue retries a crashed reconcile,
    so a test can pass while the operator hits a bug on every attempt; these records make that fail."""

    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.records: list[str] = []
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(self.format(record))


controller_errors = _ErrorRecords()
_in_process: Operator | None = None  # the session's in-process operator, once a test asked for it


@pytest.fixture(autouse=True)
def _fail_on_controller_crash(request: pytest.FixtureRequest) -> Iterator[None]:
    seen = len(controller_errors.records)
    yield
    crashes = controller_errors.records[seen:]
    # Only cluster tests: unit tests of the work queue crash reconciles on purpose with their own controllers.
    if crashes and request.node.get_closest_marker("cluster") is not None:
        pytest.fail("the operator's controller logged errors during this test:\n" + "\n".join(crashes),
                    pytrace=False)


class Operator:
    """The operator running in this process (kopf's KopfRunner thread), with access to its controller."""

    def __init__(self) -> None:
        self.runner: Any = None

    @property
    def controller(self) -> Any:
        from llm_operator import handlers

        assert handlers.controller is not None, "operator not started"
        return handlers.controller

    def start(self) -> None:
        from kopf.testing import KopfRunner
        from llm_operator import handlers

        assert self.runner is None, "already running"
        runner = KopfRunner(["run", "-A", "--standalone", "-m", "llm_operator.handlers"], timeout=60)
        runner.__enter__()
        self.runner = runner
        wait_for(lambda: handlers.controller is not None, timeout=30, what="operator start-up")

    def stop(self) -> None:
        runner, self.runner = self.runner, None
        if runner is not None:
            runner.__exit__(None, None, None)
            assert runner.exception is None, runner.output[-3000:]

    @contextlib.contextmanager
    def stopped(self) -> Iterator[None]:
        """The operator is down inside the block (its cleanup ran, nothing watches); a fresh one starts after."""
        self.stop()
        try:
            yield
        finally:
            self.start()

    def settle(self, timeout: float = 30.0) -> None:
        """Wait until the work queue is idle (nothing due, nothing running)."""
        wait_for(lambda: self.controller.idle(), timeout=timeout, interval=0.1, what="operator idle")

    def resync(self, namespace: str, names: list[str], rounds: int = 3) -> tuple[int, int, int]:
        """Force ``rounds`` reconciles of each object once the queue is idle; return the (writes, API GETs,
        reads answered by the child caches) the operator made in ``namespace`` meanwhile."""
        self.settle()
        kube = self.controller.kube
        counters = (kube.writes_by_namespace, kube.gets_by_namespace, kube.cache_reads_by_namespace)
        before = [c[namespace] for c in counters]
        for _ in range(rounds):
            for name in names:
                self.controller.enqueue((namespace, name))
            # A write would come back as watch events and more reconciles: let them arrive before settling.
            time.sleep(0.3)
            self.settle()
        writes, gets, cached = (c[namespace] - b for c, b in zip(counters, before, strict=True))
        return writes, gets, cached


@pytest.fixture(scope="session")
def operator(cluster: Cluster, crd: str) -> Iterator[Operator]:
    global _in_process
    os.environ.setdefault("LLMOPS_RESYNC_SECONDS", "300")
    logging.getLogger(CONTROLLER_LOGGER).addHandler(controller_errors)
    op = Operator()
    op.start()
    _in_process = op
    try:
        yield op
    finally:
        _in_process = None
        op.stop()


class OperatorProcess:
    """``llmctl run`` in a child process, as users run it: its own kubeconfig, flags and environment."""

    def __init__(self, log: Path) -> None:
        self.log_path = log
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self, *args: str, kubeconfig: Path, env: dict[str, str] | None = None,
              argv0: list[str] | None = None) -> None:
        """Start ``llmctl run ARGS`` (or ``ARGV0 run ARGS``) and wait for its start-up line."""
        assert self.proc is None or self.proc.poll() is not None, "one operator process at a time"
        command = argv0 or [str(Path(sys.executable).with_name("llmctl"))]
        environ = {**os.environ, "KUBECONFIG": str(kubeconfig), "LLMOPS_RESYNC_SECONDS": "300", **(env or {})}
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen([*command, "run", *args], stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env=environ, start_new_session=True)
        proc = self.proc

        def started() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"llmctl run exited with {proc.returncode}:\n{self.log[-3000:]}")
            return "triton-llm-operator started" in self.log

        wait_for(started, timeout=60, interval=0.2, what="llmctl run start-up")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        os.killpg(proc.pid, signal.SIGTERM)  # kopf stops gracefully on SIGTERM, as in a pod
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


@pytest.fixture
def operator_process(cluster: Cluster, crd: str, tmp_path: Path) -> Iterator[OperatorProcess]:
    """An operator in a child process for one test. The session's in-process operator, if started, is stopped
    meanwhile and started again afterwards: two operators writing the same objects would fight."""
    paused = _in_process.stopped() if _in_process is not None else contextlib.nullcontext()
    with paused:
        op = OperatorProcess(tmp_path / "operator.log")
        try:
            yield op
        finally:
            op.stop()
    crashes = [line for line in op.log.splitlines() if re.search(r"reconcile \S+ crashed", line)]
    if crashes:
        pytest.fail("the operator process logged crashed reconciles:\n" + "\n".join(crashes), pytrace=False)


# kopf's log lines start with "[2026-11-23 17:20:22,403]": milliseconds of 403 are not an HTTP status.
_DENIAL = re.compile(r"(?<![,.:\d])\b403\b|forbidden", re.IGNORECASE)


def denials(log: str) -> list[str]:
    """The operator log's lines that report an API request denied (HTTP 403, "forbidden")."""
    return [line for line in log.splitlines() if _DENIAL.search(line)]
