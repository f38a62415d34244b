"""The canary step machine and its replica math, driven against a simulated GPU cluster (no API server).

The model: a pool of GPU slots; pods are created Pending and bind when a slot is free; a bound pod loads its
model for a few ticks before it is Ready; a deleted pod keeps its slot for its grace period. Each tick the planner
sees the Deployments as they are, its own last status (nothing else survives a pass, as after a restart) and
an analysis measurement when one is due.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from llm_operator import api
from llm_operator.rollout import analysis as an
from llm_operator.rollout import canary
from llm_operator.rollout.replicas import NodeGPUs, free_slots, split
from llm_operator.rollout.requests import Request
from llm_operator.rollout.rolling import RevisionState

T0 = dt.datetime(2026, 11, 23, 8, 0, tzinfo=dt.UTC)

# ------------------------------------------------------------------------------------------ replica math


@pytest.mark.parametrize(("total", "weight", "canary_n"), [
    (10, 41, 4),  # Argo's documented example: 4 canary / 6 stable
    (10, 10, 1), (10, 50, 5), (4, 10, 1), (4, 50, 2), (4, 90, 3), (2, 1, 1), (2, 99, 1), (3, 50, 2),
    (8, 25, 2), (8, 100, 8), (8, 0, 0),
])
def test_split_without_routing_is_the_closest_ratio_and_never_zero(total: int, weight: int, canary_n: int) -> None:
    assert split(total, weight, routed=False, room=False) == (canary_n, total - canary_n)


@given(st.integers(2, 200), st.integers(1, 99), st.booleans())
def test_split_keeps_both_revisions_for_weights_1_to_99(total: int, weight: int, routed: bool) -> None:
    c, s = split(total, weight, routed=routed, room=False)
    assert c + s == total and 1 <= c <= total - 1


def test_split_with_routing_gives_the_canary_enough_pods_for_its_weight() -> None:
    assert split(10, 41, routed=True, room=False) == (5, 5)
    assert split(10, 10, routed=True, room=False) == (1, 9)


def test_one_replica_needs_room_to_keep_stable_during_a_canary() -> None:
    assert split(1, 10, routed=False, room=True) == (1, 1)
    assert split(1, 10, routed=False, room=False) == (1, 0)


def test_free_slots_divides_each_node_separately_and_counts_our_pending_pods() -> None:
    nodes = [NodeGPUs("a", "A100", 8), NodeGPUs("b", "A100", 8), NodeGPUs("c", "H100", 8),
             NodeGPUs("d", "A100", 8, schedulable=False)]
    slots, why = free_slots(nodes, {"a": 6, "b": 5}, product="A100", gpus_per_pod=3)
    assert slots == 1 and "5 GPUs free" in why  # a: 2 free (no pod fits), b: 3 free (one pod)
    assert free_slots(nodes, {"a": 6, "b": 5}, product="A100", gpus_per_pod=3, unbound_gpus=3)[0] == 0
    assert free_slots(nodes, {}, product=None, gpus_per_pod=4)[0] == 6  # a, b, c: 2 pods each
    slots, why = free_slots(nodes, {"a": 8, "b": 8}, product="A100", gpus_per_pod=1)
    assert slots == 0 and "full" in why


# ------------------------------------------------------------------------------------------ cluster model


@dataclass
class Pod:
    bound_at: int | None = None
    deleted_at: int | None = None


@dataclass
class Dep:
    name: str
    revision: str
    created: str
    spec: int = 0
    pods: list[Pod] = field(default_factory=list)


@dataclass
class Cluster:
    slots: int  # GPU slots (pods) in the pool
    load: int = 3  # ticks from bind to Ready
    grace: int = 2  # ticks a deleted pod keeps its slot
    tick: int = 0
    deps: dict[str, Dep] = field(default_factory=dict)

    def ready(self, p: Pod) -> bool:
        return p.deleted_at is None and p.bound_at is not None and self.tick - p.bound_at >= self.load

    def state(self, d: Dep) -> RevisionState:
        live = [p for p in d.pods if p.deleted_at is None]
        return RevisionState(d.name, d.revision, d.spec, len(live), sum(self.ready(p) for p in live), d.created,
                             terminating=sum(p.deleted_at is not None for p in d.pods))

    def occupied(self) -> int:
        return sum(p.bound_at is not None for d in self.deps.values() for p in d.pods)

    def room(self) -> int:
        pending = sum(p.bound_at is None and p.deleted_at is None for d in self.deps.values() for p in d.pods)
        return max(self.slots - self.occupied() - pending, 0)

    def step(self) -> None:
        self.tick += 1
        for d in self.deps.values():
            d.pods = [p for p in d.pods if p.deleted_at is None or self.tick - p.deleted_at < self.grace]
            live = [p for p in d.pods if p.deleted_at is None]
            for _ in range(d.spec - len(live)):
                d.pods.append(Pod())
            extra = len(live) - d.spec
            # The ReplicaSet controller deletes unbound, then unready pods first.
            for p in sorted(live, key=lambda p: (p.bound_at is not None, self.ready(p)))[: max(extra, 0)]:
                p.deleted_at = self.tick
        for d in self.deps.values():
            for p in d.pods:
                if p.bound_at is None and p.deleted_at is None and self.occupied() < self.slots:
                    p.bound_at = self.tick

    def ready_total(self) -> int:
        return sum(self.ready(p) for d in self.deps.values() for p in d.pods)


def _spec(steps: list[dict[str, Any]], *, analysis: bool = True, failure_limit: int = 1) -> api.CanarySpec:
    doc: dict[str, Any] = {"steps": steps}
    if analysis:
        doc["analysis"] = {"interval": "10s", "failureLimit": failure_limit,
                           "prometheus": {"address": "http://127.0.0.1:9"},
                           "checks": [{"metric": "errorRate", "max": 0.05}]}
    return api.CanarySpec.model_validate(doc)


def _measurement(phase: str) -> an.Measurement:
    value = {"Successful": 0.0, "Failed": 0.2, "Inconclusive": None}.get(phase)
    message = f"errorRate canary {value} > max 0.05" if phase == "Failed" else phase
    if phase == "Error":
        message = "Prometheus at http://127.0.0.1:9 could not be queried"
    return an.summarize([an.CheckVerdict("errorRate", phase, message, value)])  # type: ignore[arg-type]


@dataclass
class Run:
    cluster: Cluster
    spec: api.CanarySpec
    total: int
    revision: str = "rB"
    status: dict[str, Any] = field(default_factory=dict)
    verdict: str = "Successful"  # what each measurement says
    annotations: dict[str, str] = field(default_factory=dict)
    history: list[canary.Decision] = field(default_factory=list)
    min_ready: int = 10**9
    seconds_per_tick: int = 5

    def now(self) -> dt.datetime:
        return T0 + dt.timedelta(seconds=self.seconds_per_tick * self.cluster.tick)

    def deployments(self) -> dict[str, RevisionState]:
        states = {d.revision: self.cluster.state(d) for d in self.cluster.deps.values()}
        if self.revision not in states:
            states[self.revision] = RevisionState(f"m-{self.revision}", self.revision, 0, 0, 0, "~")
        return states

    def room(self) -> int:
        # As reconcile computes it: free slots beyond what the total needs, our own pods' slots counted.
        held = sum(max(s.replicas + s.terminating, s.spec_replicas) for s in self.deployments().values())
        return max(self.cluster.room() - max(self.total - held, 0), 0)

    def request(self) -> Request | None:
        from llm_operator.rollout import requests

        return requests.pending(self.annotations, self.status.get("lastRequest"))

    def pass_(self) -> canary.Decision:
        from llm_operator.rollout import requests

        inp = canary.Inputs(canary=self.spec, total=self.total, revision=self.revision,
                            deployments=self.deployments(), previous=self.status, now=self.now(),
                            room=self.room(), request=self.request(),
                            user_paused=requests.user_paused(self.annotations))
        d = canary.plan(inp)
        if d.measure and self.spec.analysis is not None and an.due(
                self.status.get("analysis") if self.status.get("canaryRevision") == self.revision else None,
                interval_seconds=10, now=self.now()):
            inp.measurement = _measurement(self.verdict)
            d = canary.plan(inp)
        # Apply, exactly as reconcile does: the spec revision's Deployment, scale the others, delete.
        own = inp.deployments[self.revision].name
        if own not in self.cluster.deps:
            self.cluster.deps[own] = Dep(own, self.revision, f"{self.cluster.tick:06d}")
        self.cluster.deps[own].spec = d.current_replicas
        for name, n in d.replicas.items():
            self.cluster.deps[name].spec = n
        for name in d.delete:
            del self.cluster.deps[name]
        self.status = d.status
        self.history.append(d)
        return d

    def run(self, ticks: int, until: Any = None) -> None:
        for _ in range(ticks):
            self.pass_()
            self.cluster.step()
            self.min_ready = min(self.min_ready, self.cluster.ready_total())
            assert self.cluster.occupied() <= self.cluster.slots
            if until is not None and until(self):
                return


def _stable_cluster(total: int, slots: int) -> Cluster:
    c = Cluster(slots=slots, tick=100)
    c.deps["m-rA"] = Dep("m-rA", "rA", "000001", spec=total, pods=[Pod(bound_at=0) for _ in range(total)])
    return c


STEPS = [{"setWeight": 25}, {"pause": {"duration": "20s"}}, {"setWeight": 50}, {"pause": {"duration": "20s"}}]


def _promoted(r: Run) -> bool:
    return r.status.get("phase") == "Healthy" and r.status.get("stableRevision") == r.revision


# ------------------------------------------------------------------------------------------ behaviour


@pytest.mark.parametrize("slots", [4, 6])  # a full pool (swap) and one with room for two more pods (surge)
def test_a_good_canary_walks_every_step_and_is_promoted(slots: int) -> None:
    r = Run(_stable_cluster(4, slots), _spec(STEPS), total=4, status={"stableRevision": "rA", "phase": "Healthy"})
    r.run(300, until=_promoted)
    assert _promoted(r), r.status
    assert list(r.cluster.deps) == ["m-rB"] and r.cluster.deps["m-rB"].spec == 4
    # Every step's split was held: at each pause the canary had exactly its share of ready pods.
    paused = [(d.status.get("weight"), d.status.get("canaryReplicas")) for d in r.history
              if d.status.get("stepIndex") in (1, 3) and d.status.get("phase") == "Progressing"]
    assert (25, 1) in paused and (50, 2) in paused
    assert r.min_ready >= 3  # never more than one replica's worth of capacity away
    if slots == 6:
        assert all(d.status["surge"] == "Surge" for d in r.history[:2])
    else:
        assert r.history[0].status["surge"] == "Swap"


def test_surge_finishes_sooner_than_swap_and_keeps_full_capacity() -> None:
    ticks = {}
    for slots in (8, 16):
        r = Run(_stable_cluster(8, slots), _spec([{"setWeight": 50}], analysis=False), total=8,
                status={"stableRevision": "rA"})
        r.run(500, until=_promoted)
        assert _promoted(r)
        ticks[slots] = r.cluster.tick
        if slots == 16:
            assert r.min_ready >= 8
    assert ticks[16] < ticks[8]


@pytest.mark.parametrize("failure_limit", [0, 1, 2])
def test_a_failing_canary_is_aborted_after_failure_limit_plus_one_measurements(failure_limit: int) -> None:
    r = Run(_stable_cluster(4, 4), _spec(STEPS, failure_limit=failure_limit), total=4,
            status={"stableRevision": "rA"}, verdict="Failed")
    r.run(300, until=lambda r: r.status.get("aborted"))
    assert r.status["aborted"] and r.status["phase"] == "Degraded"
    assert r.status["analysis"]["failed"] == failure_limit + 1
    last = r.history[-1]
    assert last.degraded is not None and last.degraded[0] == "CanaryAnalysisFailed"
    assert "errorRate canary 0.2 > max 0.05" in last.degraded[1]
    assert any(e[1] == "CanaryAnalysisFailed" and "errorRate" in e[2] for e in last.events)
    # Then: the weight is 0, the canary has no pods, stable is back at full size and stays so.
    r.run(40)
    assert r.status["aborted"] and r.history[-1].weight == 0
    assert r.cluster.deps["m-rB"].spec == 0 and not r.cluster.deps["m-rB"].pods
    assert r.cluster.state(r.cluster.deps["m-rA"]).ready_replicas == 4
    assert r.revision in r.status["canaryRevision"]
    assert r.min_ready >= 3  # the rollback swaps on a full pool: never more than one replica away


def test_no_data_or_no_prometheus_never_promotes() -> None:
    for verdict, reason in (("Inconclusive", "AnalysisInconclusive"), ("Error", "PrometheusUnreachable")):
        r = Run(_stable_cluster(2, 2), _spec([{"setWeight": 50}, {"pause": {"duration": "10s"}}]), total=2,
                status={"stableRevision": "rA"}, verdict=verdict)
        r.run(200)
        assert not _promoted(r) and r.status["stableRevision"] == "rA"
        assert r.status["phase"] == "Paused" and r.status["pausedReason"] == reason, r.status
        # Prometheus comes back with good data: the rollout resumes by itself from an Error pause. An
        # inconclusive pause waits for a person (kubectl llm promote), as in Argo Rollouts.
        r.verdict = "Successful"
        if verdict == "Inconclusive":
            r.annotations["serving.llmops.dev/rollout-request"] = "promote/1"
        r.run(200, until=_promoted)
        assert _promoted(r), r.status


def test_an_indefinite_pause_waits_for_promote_and_requests_run_once() -> None:
    r = Run(_stable_cluster(2, 2), _spec([{"setWeight": 50}, {"pause": {}}, {"setWeight": 100}], analysis=False),
            total=2, status={"stableRevision": "rA"})
    r.run(100)
    assert r.status["pausedReason"] == "PauseStep" and r.status["stepIndex"] == 1
    r.annotations["serving.llmops.dev/rollout-request"] = "promote/x1"
    r.run(200, until=_promoted)
    assert _promoted(r) and r.status["lastRequest"] == "promote/x1"
    assert sum(e[1] == "CanaryPromoted" and "step" in e[2] for d in r.history for e in d.events) == 1


def test_abort_then_retry_then_promote_full() -> None:
    steps = [{"setWeight": 25}, {"pause": {}}, {"setWeight": 50}, {"pause": {}}]
    r = Run(_stable_cluster(4, 4), _spec(steps, analysis=False), total=4, status={"stableRevision": "rA"})
    r.run(100)
    r.annotations["serving.llmops.dev/rollout-request"] = "abort/1"
    r.run(60)
    assert r.status["aborted"] and r.history[-1].degraded == ("RolloutAborted", "aborted by kubectl llm abort")
    assert r.cluster.deps["m-rB"].spec == 0
    r.annotations["serving.llmops.dev/rollout-request"] = "retry/2"
    r.run(100)
    assert not r.status.get("aborted") and r.status["stepIndex"] == 1 and r.status["pausedReason"] == "PauseStep"
    r.annotations["serving.llmops.dev/rollout-request"] = "promote-full/3"
    r.run(200, until=_promoted)
    assert _promoted(r)


def test_user_pause_holds_every_step() -> None:
    r = Run(_stable_cluster(4, 4), _spec(STEPS, analysis=False), total=4, status={"stableRevision": "rA"},
            annotations={"serving.llmops.dev/rollout-paused": "true"})
    r.run(100)
    assert r.status["pausedReason"] == "UserPause" and r.status["stepIndex"] == 0
    del r.annotations["serving.llmops.dev/rollout-paused"]
    r.run(300, until=_promoted)
    assert _promoted(r)


def test_a_new_spec_mid_canary_restarts_the_steps_and_retires_the_old_canary() -> None:
    r = Run(_stable_cluster(4, 4), _spec(STEPS, analysis=False), total=4, status={"stableRevision": "rA"})
    r.run(30)
    assert r.status["canaryRevision"] == "rB" and r.cluster.deps["m-rB"].spec > 0
    r.revision = "rC"
    r.run(400, until=_promoted)
    assert _promoted(r) and set(r.cluster.deps) == {"m-rC"}
    assert r.min_ready >= 3


def test_going_back_to_the_stable_spec_skips_the_steps() -> None:
    r = Run(_stable_cluster(4, 4), _spec(STEPS, analysis=False), total=4, status={"stableRevision": "rA"})
    r.run(30)
    r.revision = "rA"
    r.run(100, until=lambda r: set(r.cluster.deps) == {"m-rA"} and r.cluster.ready_total() == 4)
    assert set(r.cluster.deps) == {"m-rA"} and r.status["stableRevision"] == "rA"


@settings(max_examples=60, deadline=None)
@given(total=st.integers(1, 6), extra=st.integers(0, 3), load=st.integers(1, 5), grace=st.integers(0, 4),
       scale_at=st.integers(0, 80), new_total=st.integers(1, 6))
def test_any_pool_any_timing_converges_without_deadlock(total: int, extra: int, load: int, grace: int,
                                                        scale_at: int, new_total: int) -> None:
    slots = max(total, new_total) + extra
    c = _stable_cluster(total, slots)
    c.load, c.grace = load, grace
    r = Run(c, _spec(STEPS, analysis=False), total=total, status={"stableRevision": "rA"})
    for i in range(1500):
        if i == scale_at:
            r.total = new_total  # the HPA moves the total mid-canary: the split follows, no step restarts
        r.pass_()
        r.cluster.step()
        assert r.cluster.occupied() <= slots
        if _promoted(r) and set(r.cluster.deps) == {"m-rB"} and r.cluster.ready_total() == r.total:
            break
    else:
        raise AssertionError(f"no convergence: {r.status}")


def test_promote_full_is_a_person_overriding_an_unreachable_prometheus() -> None:
    r = Run(_stable_cluster(2, 2), _spec([{"setWeight": 50}, {"pause": {"duration": "10s"}}]), total=2,
            status={"stableRevision": "rA"}, verdict="Error")
    r.run(100)
    assert r.status["pausedReason"] == "PrometheusUnreachable" and not _promoted(r)
    r.annotations["serving.llmops.dev/rollout-request"] = "promote-full/1"
    r.run(200, until=_promoted)
    assert _promoted(r) and r.min_ready >= 1
