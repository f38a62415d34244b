"""Chaos, small (issue #13; the full run is `python bench/chaos.py`, docs/chaos.md): `llmctl run` SIGKILLed
10 times during a storm over 10 LLMDeployments, the apiserver and etcd restarted under a running operator, and an
LLMDeployment recreated under the same name while the operator is down. Afterwards everything converges to what
the specs say (bench/chaos.py's `check`: no orphaned children, none of deleted objects, one Deployment per object,
current status, children as rendered). Figures are printed; run with `-s` to see them.
"""

from __future__ import annotations

import contextlib
import importlib.util
import random
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from e2e import pytest_plugin as plugin
from e2e.pytest_plugin import Cluster, wait_for

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]


def _load_bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_chaos", ROOT / "bench" / "chaos.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve the module's annotations through sys.modules
    spec.loader.exec_module(module)
    return module


chaos = _load_bench()


@pytest.fixture(scope="module")
def gc_ready(cluster: Cluster, crd: str) -> None:
    """The garbage collector watches LLMDeployments (at most 30 s after the CRD was applied, once a session)."""
    chaos.wait_gc_watches_llmdeployments(chaos.kube_for(cluster.kubeconfig), "default")


@pytest.fixture
def namespace(cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace, deleted afterwards without waiting for its pods to go: unlike the shared fixture's, they
    hold no fake GPUs that a later test could need (CPU models), and the wait cost 8-12 s per test."""
    name = f"chaos-{request.node.name[5:20].replace('_', '-').strip('-')}-{uuid.uuid4().hex[:5]}"
    kube = chaos.kube_for(cluster.kubeconfig)
    chaos.make_namespace(kube, name)
    yield name
    kube.delete(api_version="v1", kind="Namespace", namespace=None, name=name)


@pytest.fixture
def setup(cluster: Cluster, crd: str, gc_ready: None, namespace: str,
          tmp_path: Path) -> Iterator[tuple[Any, Any]]:
    """(a client, an operator process not yet started). The session's in-process operator, if started, is
    stopped meanwhile, as for the operator_process fixture."""
    paused = plugin._in_process.stopped() if plugin._in_process is not None else contextlib.nullcontext()
    with paused:
        op = chaos.Operator(namespace=namespace, kubeconfig=cluster.kubeconfig, log_path=tmp_path / "operator.log")
        try:
            yield chaos.kube_for(cluster.kubeconfig), op
        finally:
            op.stop()
    assert op.crashes() == [], "\n".join(op.crashes()[:20])


def test_sigkills_during_a_storm_converge_to_the_specs(setup: tuple[Any, Any], namespace: str) -> None:
    kube, op = setup
    result = chaos.operator_kills(kube, op, namespace, objects=10, kills=10, rng=random.Random(13), max_life=0.6,
                                  interval=0.1, timeout=150)
    print(f"\n10 SIGKILLs over 10 objects ({result['chaos_s']}s of chaos, ops {result['ops']}): converged "
          f"{result['convergence_s']}s after the last restart; {result['live_at_end']} live, "
          f"{result['deleted_at_end']} deleted at the end")
    assert result["final"] == {k: 0 for k in result["final"]}
    assert sum(result["ops"].values()) >= 20 and result["ops"].get("delete", 0) > 0


def _local(cluster: Cluster) -> Any:
    from llm_operator.dev import ClusterInfo, LocalCluster

    state = Path(cluster.kubeconfig).resolve().parent
    if ClusterInfo.load(state) is None:
        pytest.skip("restarts need a cluster started by `llmctl dev up` or this session (its state folder)")
    return LocalCluster(state_dir=state)


# Not in `make test` (deselected with -m "not outage"): in one of four full runs on the loaded 2-core machine, two
# children of an object deleted during the outage were still there 150 s later, waiting for kube-controller-manager's
# garbage collector, whose state after the apiserver and etcd restarts this test does not control. Run it with
# `pytest -m outage tests/e2e/test_chaos.py`, or the full scenarios with `python bench/chaos.py`.
@pytest.mark.outage
def test_apiserver_and_etcd_restarts_then_a_same_named_object_recreated_while_the_operator_is_down(
    cluster: Cluster, setup: tuple[Any, Any], namespace: str
) -> None:
    """One namespace and operator for the three cases (each namespace costs seconds to delete)."""
    kube, op = setup
    local = _local(cluster)
    for component in ("kube-apiserver", "etcd"):
        try:
            result = chaos.component_restart(kube, op, local, namespace, component, objects=4, outage=2.0,
                                             rng=random.Random(7), timeout=150)
        finally:  # whatever happened, the session's cluster is whole again for the tests after this one
            info = local.info()
            if info is not None and not chaos.psutil.pid_exists(info.pids[component]):
                local.start_component(component)
        print(f"\n{component} SIGKILLed, down {result['outage_s']}s: the operator sent "
              f"{result['requests_during_outage']:.0f} API requests meanwhile ({result['request_rate_per_s']}/s, "
              f"peak {result['peak_rate_per_s_0.5s_window']}/s over 0.5 s; {result['operator_cpu_during_outage_s']}s "
              f"CPU); a change made after the restart was reconciled in {result['after_change_reconciled_s']}s")
        assert result["changes_before_outage_applied"] and result["change_after_outage_seen"], result
        assert result["final"] == {k: 0 for k in result["final"]}
        # No hot loop: the work queue backs off (1, 2, 4 … s per object), so 4 objects cost a few requests a
        # second at most, and the process stays nearly idle.
        assert result["request_rate_per_s"] <= 10, result
        assert result["operator_cpu_during_outage_s"] <= 0.5 * result["outage_s"], result
    if cluster.prometheus_url:  # the aggregated metrics API is back too, for the autoscaling tests
        wait_for(lambda: local.apiservice_available()[0], timeout=60, what="custom metrics API Available")

    result = chaos.stale_state(kube, op, namespace, rng=random.Random(3), timeout=150)
    print(f"recreated while the operator was down: {result['children']} children, all owned by the new uid, none "
          f"of the old ones kept; converged {result['converged_s']}s after the restart")
    assert result["old_uid"] != result["new_uid"]
    assert result["old_children_adopted"] == [] and result["children_not_owned_by_new_uid"] == []
    assert result["children"] >= 4 and result["final"] == {k: 0 for k in result["final"]}


def test_recreated_while_the_gc_lags_adopts_nothing_of_the_old_object(
    cluster: Cluster, setup: tuple[Any, Any], namespace: str
) -> None:
    """kube-controller-manager (the GC) stopped from before the delete until the operator has reconciled the new
    object, which has the old one's very spec: every child name is taken by a child of the old uid."""
    kube, op = setup
    local = _local(cluster)
    try:
        result = chaos.stale_state(kube, op, namespace, rng=random.Random(5), timeout=90, late_gc=local)
    finally:
        info = local.info()
        if info is not None and not chaos.psutil.pid_exists(info.pids["kube-controller-manager"]):
            local.start_component("kube-controller-manager")
    print(f"\nrecreated while the GC lagged: adopted {result['old_children_adopted']}")
    assert result["old_children_adopted"] == [] and result["children_not_owned_by_new_uid"] == []
