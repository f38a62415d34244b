"""Leader election (llm_operator._leader): the client-go state machine on a fake clock and a fake Lease API.

Several electors share one in-memory Lease (resourceVersion checked like the API server does); a scheduler runs
each elector's step() when it asks to run again, on a fake clock, so minutes of elections take milliseconds.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from llm_operator._controller import Controller
from llm_operator._k8s import Kube, KubeError
from llm_operator._leader import Config, LeaderElector, LeaseConflict, Record
from llm_operator._reconcile import Outcome

LEASE, RENEW, RETRY = 4.0, 3.0, 1.0  # the e2e test's durations: lease 4 s, renew deadline 3 s, retry 1 s


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t

    def wall(self) -> datetime:
        return datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=self.t)


class Store:
    """The API server's copy of one Lease."""

    def __init__(self) -> None:
        self.lease: dict[str, Any] | None = None
        self.rv = 0
        self.writes: list[tuple[str, str]] = []  # (verb, holder written)

    def holder(self) -> str:
        return Record.of(self.lease).holder if self.lease else ""


class FakeLeaseAPI:
    """One replica's view of the Store; ``down`` makes every call fail (a partition, a dead apiserver)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.down = False

    def _check(self) -> None:
        if self.down:
            raise KubeError("GET lease: connection refused", status=0)

    def get(self) -> dict[str, Any] | None:
        self._check()
        return None if self.store.lease is None else _copy(self.store.lease)

    def create(self, lease: dict[str, Any]) -> dict[str, Any]:
        self._check()
        if self.store.lease is not None:
            raise LeaseConflict("already exists")
        return self._store("create", lease)

    def update(self, lease: dict[str, Any]) -> dict[str, Any]:
        self._check()
        assert self.store.lease is not None
        if lease["metadata"].get("resourceVersion") != self.store.lease["metadata"]["resourceVersion"]:
            raise LeaseConflict("the object has been modified")
        return self._store("update", lease)

    def _store(self, verb: str, lease: dict[str, Any]) -> dict[str, Any]:
        self.store.rv += 1
        stored = _copy(lease)
        stored["metadata"]["resourceVersion"] = str(self.store.rv)
        self.store.lease = stored
        self.store.writes.append((verb, Record.of(stored).holder))
        return _copy(stored)


def _copy(lease: dict[str, Any]) -> dict[str, Any]:
    return {**lease, "metadata": dict(lease["metadata"]), "spec": dict(lease["spec"])}


class Sim:
    """Electors on one fake clock: each runs step() when its last step asked to run again."""

    def __init__(self, names: list[str], **config: float) -> None:
        self.clock = Clock()
        self.store = Store()
        self.apis = {n: FakeLeaseAPI(self.store) for n in names}
        cfg = {"lease_duration": LEASE, "renew_deadline": RENEW, "retry_period": RETRY, **config}
        self.events: list[tuple[float, str, str]] = []
        self.electors = {
            n: LeaderElector(self.apis[n], Config(identity=n, **cfg), clock=self.clock, wall=self.clock.wall,
                             jitter=lambda: 0.5,
                             on_started_leading=lambda n=n: self.events.append((self.clock.t, n, "leader")),
                             on_stopped_leading=lambda n=n: self.events.append((self.clock.t, n, "follower")))
            for n in names
        }
        self.due = {n: self.clock.t for n in names}
        self.paused: set[str] = set()  # a frozen process: its election thread does not run

    def leaders(self) -> list[str]:
        return [n for n, e in self.electors.items() if e.is_leader()]

    def run(self, seconds: float, *, tick: float = 0.05) -> None:
        """Advance the clock; at every tick at most one replica may hold the write gate."""
        end = self.clock.t + seconds
        while self.clock.t < end:
            for name in sorted(self.due, key=self.due.__getitem__):
                if name not in self.paused and self.due[name] <= self.clock.t:
                    self.due[name] = self.clock.t + self.electors[name].step()
            assert len(self.leaders()) <= 1, f"two writers at t={self.clock.t}: {self.leaders()}"
            self.clock.t = round(self.clock.t + tick, 6)

    def until(self, check: Any, limit: float) -> float:
        start = self.clock.t
        while not check():
            assert self.clock.t - start <= limit, f"not within {limit}s"
            self.run(0.05)
        return self.clock.t - start


def test_the_first_candidate_creates_the_lease_and_the_others_follow() -> None:
    sim = Sim(["a", "b", "c"])
    sim.run(0.1)
    assert sim.leaders() == ["a"] and sim.store.holder() == "a"
    spec = sim.store.lease["spec"]  # type: ignore[index]
    assert spec["leaseDurationSeconds"] == 4 and spec["leaseTransitions"] == 0
    assert spec["acquireTime"] == spec["renewTime"] and spec["acquireTime"].endswith("Z")
    acquired = spec["acquireTime"]
    sim.run(60)  # a minute of renewals every retry period: nobody else ever leads
    assert sim.leaders() == ["a"] and sim.events == [(1000.0, "a", "leader")]
    spec = sim.store.lease["spec"]  # type: ignore[index]
    assert spec["acquireTime"] == acquired and spec["renewTime"] > acquired and spec["leaseTransitions"] == 0
    renewals = [w for w in sim.store.writes if w == ("update", "a")]
    assert 55 <= len(renewals) <= 61, len(renewals)  # one per retry period
    assert all(holder == "a" for _, holder in sim.store.writes)


def test_a_leader_that_cannot_renew_stops_writing_before_anyone_can_take_over() -> None:
    sim = Sim(["a", "b"])
    sim.run(5)
    last_renew = sim.clock.t
    a_last = dict(sim.store.lease["spec"])  # type: ignore[index]
    sim.apis["a"].down = True  # a is cut off from the apiserver (b still reaches it)
    sim.run(0.01)
    gate_closed = sim.until(lambda: not sim.electors["a"].is_leader(), limit=10)
    taken_over = gate_closed + sim.until(lambda: sim.electors["b"].is_leader(), limit=10)
    # a stops by its renew deadline, counted from the last renewal it *sent*; b waits the lease duration from
    # when it *saw* that renewal, plus at most one retry period: a's writes end ≥ lease - renew (1 s) earlier.
    assert gate_closed <= RENEW + 0.05
    assert RENEW + 0.9 <= taken_over <= LEASE + RETRY * 1.2 + 0.1, (gate_closed, taken_over)
    assert sim.store.holder() == "b" and sim.store.lease["spec"]["leaseTransitions"] == 1  # type: ignore[index]
    acquired = datetime.fromisoformat(sim.store.lease["spec"]["acquireTime"])  # type: ignore[index]
    assert acquired - datetime.fromisoformat(a_last["renewTime"]) >= timedelta(seconds=LEASE)
    assert [e[1:] for e in sim.events] == [("a", "leader"), ("a", "follower"), ("b", "leader")]
    # The partition heals: a is a candidate again, sees b renewing, and stays a follower.
    sim.apis["a"].down = False
    sim.run(30)
    assert sim.leaders() == ["b"] and last_renew < sim.clock.t


def test_a_frozen_leader_closes_its_own_gate_by_the_clock() -> None:
    """A leader whose election thread is stuck (GC pause, blocked loop) cannot renew; is_leader() turns False on
    its clock alone, before the follower takes over."""
    sim = Sim(["a", "b"])
    sim.run(3)
    sim.paused.add("a")
    closed = sim.until(lambda: not sim.electors["a"].is_leader(), limit=10)
    assert closed <= RENEW
    sim.until(lambda: sim.electors["b"].is_leader(), limit=10)
    sim.paused.clear()  # it wakes up: its next step sees b's lease and steps down
    sim.run(5)
    assert sim.leaders() == ["b"] and sim.events[-1][1:] == ("a", "follower")


def test_release_on_stop_hands_over_at_the_next_retry() -> None:
    sim = Sim(["a", "b"])
    sim.run(5)
    sim.electors["a"].stop(release=True)
    sim.paused.add("a")
    spec = sim.store.lease["spec"]  # type: ignore[index]
    assert spec["holderIdentity"] == "" and spec["leaseDurationSeconds"] == 1
    assert not sim.electors["a"].is_leader()
    took = sim.until(lambda: sim.electors["b"].is_leader(), limit=5)
    assert took <= RETRY * 1.2 + 0.05  # no lease duration to wait out
    assert sim.store.lease["spec"]["leaseTransitions"] == 1  # type: ignore[index]


def test_release_does_nothing_when_someone_else_holds_the_lease() -> None:
    sim = Sim(["a", "b"])
    sim.run(1)
    assert sim.electors["b"].release() is False and sim.store.holder() == "a"


def test_the_resource_version_makes_racing_candidates_agree() -> None:
    """Both followers see the dead leader's lease expire at the same instant; one update wins, the other gets a
    conflict and stays a follower."""
    sim = Sim(["a", "b", "c"])
    sim.run(2)
    sim.paused.add("a")
    sim.apis["a"].down = True
    sim.due["b"] = sim.due["c"] = sim.clock.t  # lock-step candidates
    sim.until(lambda: sim.leaders() != [] and sim.leaders() != ["a"], limit=10)
    sim.run(10)
    assert len(sim.leaders()) == 1 and sim.leaders()[0] in ("b", "c")
    takeovers = [w for w in sim.store.writes if w[1] != "a"]
    assert len({holder for _, holder in takeovers}) == 1


def test_an_expired_lease_is_judged_by_our_own_clock_not_the_holders_timestamps() -> None:
    """A renewTime far in the past (the holder's clock is skewed) does not make the lease look expired: a follower
    starts counting when it first sees the record."""
    sim = Sim(["b"])
    sim.store.lease = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                       "metadata": {"name": "triton-llm-operator", "namespace": "default", "resourceVersion": "7"},
                       "spec": {"holderIdentity": "elsewhere", "leaseDurationSeconds": 4,
                                "renewTime": "2001-01-01T00:00:00.000000Z", "leaseTransitions": 3}}
    took = sim.until(lambda: sim.electors["b"].is_leader(), limit=10)
    assert LEASE <= took <= LEASE + RETRY * 1.2 + 0.1
    assert sim.store.lease["spec"]["leaseTransitions"] == 4  # type: ignore[index]


@pytest.mark.parametrize(("config", "message"), [
    ({"lease_duration": 3, "renew_deadline": 3, "retry_period": 1}, "greater than the renew deadline"),
    ({"lease_duration": 4, "renew_deadline": 1.1, "retry_period": 1}, "greater than retry period"),
])
def test_client_go_checks_the_durations(config: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LeaderElector(FakeLeaseAPI(Store()), Config(**config))


def test_the_cli_refuses_inconsistent_durations(capsys: pytest.CaptureFixture[str]) -> None:
    from llm_operator.cli import main

    assert main(["run", "--leader-elect", "--lease-duration", "2", "--renew-deadline", "3"]) == 2
    assert "lease duration must be greater" in capsys.readouterr().err


def test_a_follower_dispatches_nothing_and_reconciles_everything_once_it_leads() -> None:
    leading = threading.Event()
    seen: list[str] = []

    def reconcile(kube: Any, body: dict[str, Any], **_: Any) -> Outcome:
        seen.append(body["metadata"]["name"])
        return Outcome()

    ctl = Controller(Kube(api_client=object()), workers=2, reconcile_fn=reconcile, leader=leading.is_set)  # type: ignore[arg-type]
    ctl.start()
    try:
        for name in ("x", "y"):
            ctl.observe({"metadata": {"namespace": "ns", "name": name, "uid": name, "resourceVersion": "1"}})
        time.sleep(0.8)
        assert seen == [] and ctl.bodies.keys() == {("ns", "x"), ("ns", "y")}  # the cache is warm
        leading.set()
        ctl.started_leading()
        deadline = time.monotonic() + 20
        while sorted(seen) != ["x", "y"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sorted(seen) == ["x", "y"]
    finally:
        ctl.stop()


def test_the_client_refuses_writes_while_not_the_leader() -> None:
    kube = Kube(api_client=object())  # type: ignore[arg-type]
    kube.write_gate = lambda: False
    for call in (lambda: kube.apply({"apiVersion": "v1", "kind": "ConfigMap",
                                     "metadata": {"name": "c", "namespace": "ns"}}),
                 lambda: kube.delete(api_version="v1", kind="Service", namespace="ns", name="s")):
        with pytest.raises(KubeError, match="not the leader") as err:
            call()
        assert err.value.reason == "NotLeader"
    assert kube.writes == 0 and not kube.calls  # nothing was counted, nothing was sent


def test_llmctl_run_hands_the_election_to_kopf_through_its_memo(monkeypatch: pytest.MonkeyPatch) -> None:
    import kopf
    from llm_operator.cli import main

    runs: list[dict[str, Any]] = []
    monkeypatch.setattr(kopf, "run", lambda **kw: runs.append(kw))
    monkeypatch.setenv("POD_NAME", "op-0")
    monkeypatch.setenv("POD_NAMESPACE", "ops")
    root, objects = logging.getLogger(), logging.getLogger("kopf.objects")
    saved = root.level, list(root.handlers), objects.level
    try:
        assert main(["run", "--leader-elect", "--lease-duration=4", "--renew-deadline=3", "--retry-period=1",
                     "--log-level=warning"]) == 0
        assert main(["run", "--log-level=warning"]) == 0
    finally:  # kopf.configure and --log-level set the process's loggers: put them back
        root.setLevel(saved[0])
        root.handlers[:] = saved[1]
        objects.setLevel(saved[2])
    config = runs[0]["memo"]["leader_election"]
    assert (config.namespace, config.lease_name) == ("ops", "triton-llm-operator")
    assert (config.lease_duration, config.renew_deadline, config.retry_period) == (4, 3, 1)
    assert config.identity.startswith("op-0_") and len(config.identity) > len("op-0_") + 30
    assert runs[1]["memo"]["leader_election"] is None  # a single replica: no election
