"""The work queue in front of reconcile(): dedupe, retries with backoff, newest body wins. No cluster."""

from __future__ import annotations

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


def make(fn: Any, **kwargs: Any) -> Controller:
    ctl = Controller(FakeKube(), workers=2, resync_seconds=3600, reconcile_fn=fn, **kwargs)  # type: ignore[arg-type]
    ctl.start()
    return ctl


class SteppedClock:
    """A clock that only moves when the test steps it: due times become exact numbers, and no test sleeps
    through a backoff."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


KEY = ("ns", "a")


class Stepper:
    """Runs a controller on a SteppedClock and counts reconciles."""

    def __init__(self, fn: Any, *, resync_seconds: float = 3600) -> None:
        self.clock = SteppedClock()
        self.calls: list[float] = []

        def counted(kube: Any, b: Any, **kw: Any) -> Outcome:
            self.calls.append(self.clock.now)
            result: Outcome = fn(len(self.calls))
            return result

        self.ctl = Controller(FakeKube(), workers=2, resync_seconds=resync_seconds,  # type: ignore[arg-type]
                              reconcile_fn=counted, clock=self.clock)
        self.ctl.start()

    def next_delay(self) -> float:
        """Wait (on real time, briefly) for the reconcile in flight to finish and reschedule, and return the
        delay it chose; then step the clock to that moment and let the loop run it."""
        calls = len(self.calls)
        wait(lambda: len(self.calls) == calls and self.ctl.due(KEY) is not None and self.ctl.idle())
        due = self.ctl.due(KEY)
        assert due is not None
        delay = due - self.clock.now
        self.clock.now = due
        self.ctl.wake()
        wait(lambda: len(self.calls) == calls + 1)
        return delay


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


def test_failures_back_off_exponentially_up_to_a_minute_then_reset_on_success() -> None:
    def fn(n: int) -> Outcome:
        if n <= 9 or n == 11:
            raise KubeError("boom", status=500)
        return Outcome(ready=True, reason="AllReplicasReady", requeue_after=5)

    s = Stepper(fn)
    try:
        s.ctl.observe(body("a", 1))
        wait(lambda: len(s.calls) == 1)
        assert [s.next_delay() for _ in range(9)] == [1, 2, 4, 8, 16, 32, 60, 60, 60]
        assert s.next_delay() == 5  # the 10th reconcile succeeded and asked to be requeued in 5 s
        assert s.next_delay() == 1  # a new failure starts over at 1 s
    finally:
        s.ctl.stop()


def test_a_crash_backs_off_like_an_api_error() -> None:
    def fn(n: int) -> Outcome:
        raise RuntimeError("bug")

    s = Stepper(fn)
    try:
        s.ctl.observe(body("a", 1))
        wait(lambda: len(s.calls) == 1)
        assert [s.next_delay() for _ in range(3)] == [1, 2, 4]
    finally:
        s.ctl.stop()


def test_requeue_after_schedules_the_next_reconcile_at_that_delay() -> None:
    s = Stepper(lambda n: Outcome(ready=False, reason="SecretNotFound", requeue_after=[10.0, 2.5, 7.0][n % 3]))
    try:
        s.ctl.observe(body("a", 1))
        wait(lambda: len(s.calls) == 1)
        assert [s.next_delay() for _ in range(3)] == [2.5, 7.0, 10.0]
        assert s.calls == [1000.0, 1002.5, 1009.5, 1019.5]
    finally:
        s.ctl.stop()


def test_without_requeue_after_the_next_reconcile_is_the_resync() -> None:
    s = Stepper(lambda n: Outcome(ready=True, reason="AllReplicasReady"), resync_seconds=300)
    try:
        s.ctl.observe(body("a", 1))
        wait(lambda: len(s.calls) == 1)
        assert [s.next_delay() for _ in range(2)] == [300, 300]
    finally:
        s.ctl.stop()


def test_requeue_after_longer_than_the_resync_is_cut_to_the_resync() -> None:
    s = Stepper(lambda n: Outcome(ready=False, reason="x", requeue_after=900), resync_seconds=300)
    try:
        s.ctl.observe(body("a", 1))
        wait(lambda: len(s.calls) == 1)
        assert s.next_delay() == 300
    finally:
        s.ctl.stop()


def test_queue_depth_counts_what_is_due_not_what_waits_for_its_resync() -> None:
    from llm_operator._controller import QUEUE_DEPTH

    s = Stepper(lambda n: Outcome(ready=True, reason="AllReplicasReady"), resync_seconds=300)
    try:
        s.ctl.observe(body("a", 1))
        wait(lambda: len(s.calls) == 1 and s.ctl.due(KEY) is not None and s.ctl.idle())
        # Reconciled, next due at its resync: nothing is backlog, on an idle operator the gauge reads 0.
        assert s.ctl.depth() == 0
        assert QUEUE_DEPTH._value.get() == 0  # type: ignore[attr-defined]
        s.clock.now += 300  # the resync is due but the loop has not picked it up yet
        assert s.ctl.depth() == 1
    finally:
        s.ctl.stop()
