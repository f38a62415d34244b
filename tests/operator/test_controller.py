"""The work queue in front of reconcile(): dedupe, retries with backoff, newest body wins. No cluster."""

from __future__ import annotations

import itertools
import threading
import time
from typing import Any

from llm_operator._controller import Controller
from llm_operator._k8s import KubeError
from llm_operator._reconcile import Outcome


class FakeKube:
    writes = 0
    requests: dict[str, int] = {}


def body(name: str, rv: int, uid: str = "u1") -> dict[str, Any]:
    return {"metadata": {"namespace": "ns", "name": name, "resourceVersion": str(rv), "uid": uid}, "spec": {}}


def wait(check: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.01)
    raise AssertionError("timed out")


def make(fn: Any) -> Controller:
    ctl = Controller(FakeKube(), workers=2, resync_seconds=3600, reconcile_fn=fn)  # type: ignore[arg-type]
    ctl.start()
    return ctl


def test_bursts_of_events_for_one_object_collapse_into_few_reconciles() -> None:
    seen: list[str] = []
    gate = threading.Event()

    def fn(kube: Any, b: Any, **_: Any) -> Outcome:
        gate.wait(2)
        seen.append(b["metadata"]["resourceVersion"])
        return Outcome(ready=True, reason="AllReplicasReady")

    ctl = make(fn)
    try:
        for rv in range(1, 50):
            ctl.observe(body("a", rv))
        gate.set()
        wait(ctl.idle)
        # One reconcile may have started with an early body; the last one always sees the newest.
        assert 1 <= len(seen) <= 2
        assert seen[-1] == "49"
    finally:
        ctl.stop()


def test_failures_are_retried_with_growing_backoff_then_succeed() -> None:
    calls: list[float] = []

    def fn(kube: Any, b: Any, **_: Any) -> Outcome:
        calls.append(time.monotonic())
        if len(calls) < 3:
            raise KubeError("boom", status=500)
        return Outcome(ready=True, reason="AllReplicasReady")

    ctl = make(fn)
    try:
        ctl.observe(body("a", 1))
        wait(lambda: len(calls) >= 3, timeout=10)
        gaps = [b - a for a, b in itertools.pairwise(calls)]
        assert gaps[0] >= 0.9 and gaps[1] >= 1.9  # 1 s, then 2 s
    finally:
        ctl.stop()


def test_a_stale_watch_event_does_not_replace_a_newer_body() -> None:
    ctl = make(lambda *a, **k: Outcome(ready=True, reason="x"))
    try:
        ctl.observe(body("a", 10))
        ctl.observe(body("a", 7))  # delivered late
        assert ctl.bodies[("ns", "a")]["metadata"]["resourceVersion"] == "10"
        ctl.observe(body("a", 3, uid="u2"))  # deleted and recreated: a new object wins
        assert ctl.bodies[("ns", "a")]["metadata"]["uid"] == "u2"
        ctl.observe(body("a", 4, uid="u2") | {"metadata": {**body("a", 4, "u2")["metadata"],
                                                           "deletionTimestamp": "now"}})
        assert ("ns", "a") not in ctl.bodies
    finally:
        ctl.stop()


def test_requeue_after_schedules_the_next_reconcile() -> None:
    calls: list[float] = []

    def fn(kube: Any, b: Any, **_: Any) -> Outcome:
        calls.append(time.monotonic())
        return Outcome(ready=False, reason="SecretNotFound", requeue_after=0.2)

    ctl = make(fn)
    try:
        ctl.observe(body("a", 1))
        wait(lambda: len(calls) >= 3)
    finally:
        ctl.stop()
