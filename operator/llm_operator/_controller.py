"""A small work queue in front of reconcile(): dedupe per object, retry with backoff, periodic resync.

kopf's watch streams feed it (handlers.py). Keeping the queue here rather than using kopf's stateful
create/update handlers means no finalizers (an LLMDeployment can be deleted while the operator is down)
and no bookkeeping annotations written onto users' objects.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from llm_operator import _status_metrics
from llm_operator._cache import CachedKube
from llm_operator._k8s import Kube, KubeError
from llm_operator._reconcile import NodeFacts, Outcome, lock_for, reconcile

log = logging.getLogger("llm_operator.controller")

Key = tuple[str, str]  # (namespace, name)

RECONCILES = Counter("llmop_reconcile_total", "Reconciles by result", ["result"])
RECONCILE_SECONDS = Histogram("llmop_reconcile_duration_seconds", "Time spent in one reconcile")
QUEUE_DEPTH = Gauge("llmop_workqueue_depth", "LLMDeployments waiting to be reconciled")
MANAGED = Gauge("llmop_llmdeployments", "LLMDeployments the operator currently knows about")


class Controller:
    def __init__(
        self,
        kube: Kube | CachedKube,
        *,
        workers: int = 8,
        resync_seconds: float = 300.0,
        reconcile_fn: Callable[..., Outcome] = reconcile,
        clock: Callable[[], float] = time.monotonic,
        leader: Callable[[], bool] | None = None,
        ready: Callable[[], bool] | None = None,
    ) -> None:
        self.kube = kube
        # The child caches have synced: until then nothing is dispatched (a reconcile reading a half-filled
        # cache would re-create children that exist).
        self.ready = ready
        # Leader election: while this returns False nothing is dispatched (keys stay queued, bodies stay
        # current), so only the leader reconciles. None: always the leader (a single replica).
        self.leader = leader
        # Every due time, delay and duration is read from this clock, so tests can step time instead of sleeping.
        self._clock = clock
        self.resync_seconds = resync_seconds
        self.bodies: dict[Key, Mapping[str, Any]] = {}
        self.nodes: dict[str, dict[str, Any]] = {}
        # kopf's node index (live mapping). kopf starts no resource handler before indexes are populated,
        # so the first reconcile already sees every node.
        self.node_index: Mapping[str, Any] | None = None
        # kopf's index of pods that request GPUs, by node ("" while unbound): free GPU room for surges.
        self.pod_index: Mapping[str, Any] | None = None
        self.monitor_kinds: frozenset[str] = frozenset()  # Prometheus Operator kinds the cluster serves
        self._reconcile = reconcile_fn
        self._heap: list[tuple[float, Key]] = []
        self._due: dict[Key, float] = {}
        self._running: set[Key] = set()
        self._again: set[Key] = set()
        self._failures: dict[Key, int] = {}
        self._cv = threading.Condition()
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="reconcile")
        self._slots = threading.Semaphore(workers)
        self._thread = threading.Thread(target=self._loop, name="llmop-queue", daemon=True)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        with self._cv:
            self._cv.notify_all()
        self._thread.join(timeout=5)
        self._pool.shutdown(wait=True, cancel_futures=True)

    # ------------------------------------------------------------------ inputs

    def observe(self, body: Mapping[str, Any], *, deleted: bool = False) -> None:
        meta = body["metadata"]
        key = (meta["namespace"], meta["name"])
        if deleted or meta.get("deletionTimestamp"):
            # Owner references and the garbage collector remove the children; nothing to do here.
            self.bodies.pop(key, None)
            self.forget(key)
        else:
            current = self.bodies.get(key)
            same_object = current is not None and body["metadata"].get("uid") == current["metadata"].get("uid")
            if not same_object or _rv(body) >= _rv(current or {"metadata": {}}):
                self.bodies[key] = body
            self.enqueue(key)
        MANAGED.set(len(self.bodies))
        _status_metrics.export(key, self.bodies.get(key))  # conditions, replicas, canary weight as gauges

    def _remember(self, key: Key, body: Mapping[str, Any]) -> None:
        """Keep the newest copy: our own status write may land before its watch event does, and reconciling
        the stale copy again would repeat the write (and its Events)."""
        current = self.bodies.get(key)
        if current is None:
            return
        if _rv(body) > _rv(current) and body["metadata"].get("uid") == current["metadata"].get("uid"):
            self.bodies[key] = body

    def node_facts(self) -> NodeFacts | None:
        if self.node_index is None:
            return None
        pods = [] if self.pod_index is None else [
            (node, v) for node, store in list(self.pod_index.items()) for v in list(store)]
        return NodeFacts.from_nodes((v for store in list(self.node_index.values()) for v in list(store)), pods=pods)

    def set_node(self, name: str, facts: dict[str, Any] | None) -> bool:
        """Record a node's GPU facts; True when what the fleet offers changed."""
        before = NodeFacts.from_nodes(self.nodes.values())
        if facts is None:
            self.nodes.pop(name, None)
        else:
            self.nodes[name] = facts
        return NodeFacts.from_nodes(self.nodes.values()) != before

    def enqueue(self, key: Key, delay: float = 0.0) -> None:
        when = self._clock() + delay
        with self._cv:
            if key in self._running:
                self._again.add(key)
                return
            if key in self._due and self._due[key] <= when:
                return
            self._due[key] = when
            heapq.heappush(self._heap, (when, key))
            QUEUE_DEPTH.set(self._depth_locked())
            self._cv.notify()

    def started_leading(self) -> None:
        """Leader election won: reconcile everything (what changed while following was only observed)."""
        self.enqueue_all()
        self.wake()

    def enqueue_all(self) -> None:
        for key in list(self.bodies):
            self.enqueue(key)

    def forget(self, key: Key) -> None:
        with self._cv:
            self._due.pop(key, None)
            self._failures.pop(key, None)
            QUEUE_DEPTH.set(self._depth_locked())

    def depth(self) -> int:
        """Objects due now and not yet picked up: what llmop_workqueue_depth reports."""
        with self._cv:
            return self._depth_locked()

    def _depth_locked(self) -> int:
        # Objects merely waiting for their periodic resync are not backlog; counting them made the gauge
        # read "N waiting" on an idle operator.
        now = self._clock()
        return sum(1 for t in self._due.values() if t <= now)

    def due(self, key: Key) -> float | None:
        """When ``key`` is next due, on the controller's clock; None while it is not queued."""
        with self._cv:
            return self._due.get(key)

    def wake(self) -> None:
        """Re-check what is due now. The loop also wakes by itself at least once a second; a clock that is
        stepped rather than running (tests) calls this after each step."""
        with self._cv:
            self._cv.notify_all()

    def idle(self) -> bool:
        with self._cv:
            now = self._clock()
            return not self._running and not any(t <= now for t in self._due.values())

    # ------------------------------------------------------------------ loop

    def _loop(self) -> None:
        while not self._stop.is_set():
            if (self.leader is not None and not self.leader()) or (self.ready is not None and not self.ready()):
                with self._cv:
                    self._cv.wait(timeout=0.5)  # a follower: woken at once when it starts leading
                continue
            with self._cv:
                while self._heap and self._due.get(self._heap[0][1]) != self._heap[0][0]:
                    heapq.heappop(self._heap)  # stale entry, superseded by an earlier or removed one
                QUEUE_DEPTH.set(self._depth_locked())
                if not self._heap:
                    self._cv.wait(timeout=1.0)
                    continue
                when, key = self._heap[0]
                wait = when - self._clock()
                if wait > 0:
                    self._cv.wait(timeout=min(wait, 1.0))
                    continue
                heapq.heappop(self._heap)
                del self._due[key]
                self._running.add(key)
                QUEUE_DEPTH.set(self._depth_locked())
            self._slots.acquire()
            self._pool.submit(self._work, key)

    def _work(self, key: Key) -> None:
        delay: float | None = self.resync_seconds
        try:
            body = self.bodies.get(key)
            if body is None:
                return
            started = self._clock()
            with lock_for(*key):
                outcome = self._reconcile(
                    self.kube, body, nodes=self.node_facts(),
                    monitor_kinds=self.monitor_kinds,
                )
            RECONCILE_SECONDS.observe(self._clock() - started)
            if outcome.body is not None:
                self._remember(key, outcome.body)
            RECONCILES.labels("success").inc()
            self._failures.pop(key, None)
            if outcome.requeue_after is not None:
                delay = min(delay, outcome.requeue_after) if delay else outcome.requeue_after
        except KubeError as exc:
            RECONCILES.labels("error").inc()
            if exc.status == 404 and key not in self.bodies:
                delay = None
            else:
                delay = self._backoff(key)
                log.warning("reconcile %s/%s failed (retry in %.0fs): %s", *key, delay, exc)
        except Exception:
            RECONCILES.labels("error").inc()
            delay = self._backoff(key)
            log.exception("reconcile %s/%s crashed (retry in %.0fs)", *key, delay)
        finally:
            self._slots.release()
            with self._cv:
                self._running.discard(key)
                again = key in self._again
                self._again.discard(key)
            if again:
                self.enqueue(key)
            elif delay is not None and key in self.bodies:
                self.enqueue(key, delay)

    def _backoff(self, key: Key) -> float:
        failures = self._failures.get(key, 0) + 1
        self._failures[key] = failures
        return float(min(2 ** (failures - 1), 60))


def _rv(body: Mapping[str, Any]) -> int:
    try:
        return int(body["metadata"].get("resourceVersion") or 0)
    except ValueError:  # opaque by contract; etcd-backed servers use integers
        return 0
