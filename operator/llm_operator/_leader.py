"""Leader election on a ``coordination.k8s.io/v1`` Lease, with the semantics of client-go's leaderelection.

Only the leader's work queue runs reconciles, and only the leader's client sends writes; followers keep their
watch caches (kopf's streams, the controller's bodies) warm so that a takeover starts from a full picture.

The timing is client-go's:

* ``lease_duration``: how long a follower waits, from the moment it *saw* the Lease record last change (its own
  clock, never the holder's timestamps), before it may take the Lease over;
* ``renew_deadline``: how long the leader keeps trying to renew before it gives up leadership;
* ``retry_period``: how often every candidate tries to acquire or renew.

Safety: the leader counts its renew deadline from the moment it *sent* its last successful renewal (before the
Lease could record it), and a follower counts the lease duration from the moment it *received* that record
(after). With ``renew_deadline < lease_duration`` the leader stops writing (``is_leader()`` turns False by its
clock alone, even if its election thread is stuck) at least ``lease_duration - renew_deadline`` before any
follower may acquire. Updates carry the Lease's resourceVersion, so two candidates never both win.

On a graceful stop (SIGTERM: kopf's cleanup) the leader stops its workers, then releases the Lease (an empty
holder, leaseDurationSeconds 1, as client-go's ReleaseOnCancel does), so a follower takes over at its next retry.
A leader that fails to renew becomes a candidate again (client-go's callers usually exit instead; here the
process keeps its caches and may win again).
"""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from prometheus_client import Counter, Gauge

log = logging.getLogger("llm_operator.leader")

IS_LEADER = Gauge("llmop_leader", "1 while this operator replica holds the leader Lease (or runs without election)")
TRANSITIONS = Counter("llmop_leader_transitions_total", "Times this replica became leader or stopped leading",
                      ["to"])

JITTER_FACTOR = 1.2  # client-go's JitterFactor: the retry period is stretched by up to this much
DEFAULT_LEASE_NAME = "triton-llm-operator"


class LeaseConflict(Exception):
    """The Lease changed since it was read (409), or someone created it first."""


class LeaseAPI(Protocol):
    """Reads and writes one Lease object. ``update`` must fail with LeaseConflict if metadata.resourceVersion is
    not the stored one; ``create`` if the Lease exists."""

    def get(self) -> dict[str, Any] | None: ...

    def create(self, lease: dict[str, Any]) -> dict[str, Any]: ...

    def update(self, lease: dict[str, Any]) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Config:
    lease_name: str = DEFAULT_LEASE_NAME
    namespace: str = "default"
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0
    identity: str = ""

    def validate(self) -> None:
        # client-go's NewLeaderElector checks, with the same messages' meaning.
        if self.lease_duration <= self.renew_deadline:
            raise ValueError("lease duration must be greater than the renew deadline")
        if self.renew_deadline <= JITTER_FACTOR * self.retry_period:
            raise ValueError(f"renew deadline must be greater than retry period * {JITTER_FACTOR}")
        if self.lease_duration < 1 or self.retry_period <= 0:
            raise ValueError("lease duration must be at least 1s and the retry period positive")
        if not self.lease_name:
            raise ValueError("the Lease needs a name")


def default_identity() -> str:
    """client-go's convention: hostname (the pod name in a pod) plus a unique suffix."""
    return f"{os.environ.get('POD_NAME') or socket.gethostname()}_{uuid.uuid4()}"


def default_namespace() -> str:
    """The pod's namespace (downward API or the service account's), else ``default``."""
    if os.environ.get("POD_NAMESPACE"):
        return os.environ["POD_NAMESPACE"]
    try:
        with open("/var/run/secrets/kubernetes.io/serviceaccount/namespace") as f:
            return f.read().strip() or "default"
    except OSError:
        return "default"


def _micro_time(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")  # metav1.MicroTime


@dataclass(frozen=True)
class Record:
    holder: str
    lease_duration_seconds: int
    acquire_time: str | None
    renew_time: str | None
    transitions: int

    @classmethod
    def of(cls, lease: dict[str, Any]) -> Record:
        spec = lease.get("spec") or {}
        return cls(spec.get("holderIdentity") or "", int(spec.get("leaseDurationSeconds") or 0),
                   spec.get("acquireTime"), spec.get("renewTime"), int(spec.get("leaseTransitions") or 0))

    def spec(self) -> dict[str, Any]:
        return {"holderIdentity": self.holder, "leaseDurationSeconds": self.lease_duration_seconds,
                "acquireTime": self.acquire_time, "renewTime": self.renew_time, "leaseTransitions": self.transitions}


class LeaderElector:
    def __init__(
        self,
        api: LeaseAPI,
        config: Config,
        *,
        on_started_leading: Callable[[], None] | None = None,
        on_stopped_leading: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
        jitter: Callable[[], float] = random.random,
    ) -> None:
        config.validate()
        self.api = api
        self.config = config
        self.identity = config.identity or default_identity()
        self._on_started = on_started_leading
        self._on_stopped = on_stopped_leading
        self._clock = clock
        self._wall = wall
        self._jitter = jitter
        self._lock = threading.Lock()
        self._leading = False
        self._renewed_at: float | None = None  # when the last successful acquire/renew was *sent* (our clock)
        self._observed: Record | None = None
        self._observed_at = 0.0  # when the current record was first *received* (our clock)
        self._resource_version: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ the gate

    def is_leader(self) -> bool:
        """True only while this replica holds the Lease *and* its last renewal is younger than the renew
        deadline: a stuck election thread cannot keep the writes open."""
        with self._lock:
            return (self._leading and self._renewed_at is not None
                    and self._clock() < self._renewed_at + self.config.renew_deadline)

    @property
    def observed_holder(self) -> str:
        return self._observed.holder if self._observed else ""

    # ------------------------------------------------------------------ one attempt

    def try_acquire_or_renew(self) -> bool:
        """client-go's tryAcquireOrRenew: one read, then at most one create or update."""
        sent = self._clock()
        duration = max(1, round(self.config.lease_duration))
        try:
            lease = self.api.get()
        except Exception as exc:
            log.warning("leader election: cannot read Lease %s/%s: %s", self.config.namespace,
                        self.config.lease_name, exc)
            return False
        received = self._clock()
        if lease is None:
            now = _micro_time(self._wall())
            desired = Record(self.identity, duration, now, now, 0)
            body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": self.config.lease_name, "namespace": self.config.namespace},
                    "spec": desired.spec()}
            try:
                created = self.api.create(body)
            except Exception as exc:
                log.info("leader election: create of the Lease failed: %s", exc)
                return False
            self._saw(Record.of(created), received, created)
            self._renewed(sent)
            return True
        record = Record.of(lease)
        if record != self._observed:
            self._saw(record, received, lease)
        else:
            self._resource_version = (lease.get("metadata") or {}).get("resourceVersion")
        mine = record.holder == self.identity
        if (record.holder and not mine and self._clock() < self._observed_at + record.lease_duration_seconds):
            return False  # held by someone else, and not expired by our own observation
        # Stamped after the expiry check: a takeover's acquireTime is never earlier than the old holder's last
        # renewTime plus the lease duration.
        now = _micro_time(self._wall())
        if mine:
            desired = Record(self.identity, duration, record.acquire_time, now, record.transitions)
        else:
            desired = Record(self.identity, duration, now, now, record.transitions + 1)
        updated_body = {**lease, "spec": {**(lease.get("spec") or {}), **desired.spec()}}
        try:
            updated = self.api.update(updated_body)
        except Exception as exc:
            if not isinstance(exc, LeaseConflict):
                log.warning("leader election: update of the Lease failed: %s", exc)
            return False
        self._saw(Record.of(updated), received, updated)
        self._renewed(sent)
        return True

    def _saw(self, record: Record, at: float, lease: dict[str, Any]) -> None:
        self._observed = record
        self._observed_at = at
        self._resource_version = (lease.get("metadata") or {}).get("resourceVersion")

    def _renewed(self, sent: float) -> None:
        with self._lock:
            self._renewed_at = sent

    # ------------------------------------------------------------------ the loop

    def step(self) -> float:
        """One iteration of the election loop; returns how long to wait before the next."""
        if not self._leading:
            if self.try_acquire_or_renew():
                self._set_leading(True)
                return self.config.retry_period
            return self.config.retry_period * (1 + (JITTER_FACTOR - 1) * self._jitter())
        if self.try_acquire_or_renew():
            return self.config.retry_period
        with self._lock:
            renewed_at = self._renewed_at or 0.0
        if self._clock() >= renewed_at + self.config.renew_deadline:
            log.error("leader election: failed to renew Lease %s/%s within %.1fs: leadership lost",
                      self.config.namespace, self.config.lease_name, self.config.renew_deadline)
            self._set_leading(False)
            return self.config.retry_period
        # Retry until the deadline, but never sleep past it.
        return max(0.0, min(self.config.retry_period, renewed_at + self.config.renew_deadline - self._clock()))

    def _set_leading(self, leading: bool) -> None:
        with self._lock:
            if self._leading == leading:
                return
            self._leading = leading
        IS_LEADER.set(1 if leading else 0)
        TRANSITIONS.labels("leader" if leading else "follower").inc()
        if leading:
            log.info("leader election: %s became leader of Lease %s/%s", self.identity, self.config.namespace,
                     self.config.lease_name)
            if self._on_started:
                self._on_started()
        else:
            log.warning("leader election: %s stopped leading", self.identity)
            if self._on_stopped:
                self._on_stopped()

    def start(self) -> None:
        IS_LEADER.set(0)
        log.info("leader election: %s is a candidate for Lease %s/%s (lease %.1fs, renew deadline %.1fs, "
                 "retry %.1fs)", self.identity, self.config.namespace, self.config.lease_name,
                 self.config.lease_duration, self.config.renew_deadline, self.config.retry_period)
        self._thread = threading.Thread(target=self._run, name="llmop-leader-election", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                delay = self.step()
            except Exception:
                log.exception("leader election step crashed")
                delay = self.config.retry_period
            self._stop.wait(delay)

    def stop(self, *, release: bool = True) -> None:
        """Stop the election loop; then, if leading, stop leading and release the Lease."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.config.retry_period + 35)
        was_leading = self._leading
        self._set_leading(False)
        with self._lock:
            self._renewed_at = None
        if release and was_leading:
            self.release()

    def release(self) -> bool:
        """Give the Lease up (client-go's ReleaseOnCancel) if we still hold it; True when released."""
        try:
            lease = self.api.get()
            if lease is None or Record.of(lease).holder != self.identity:
                return False
            record = Record.of(lease)
            now = _micro_time(self._wall())
            spec = Record("", 1, now, now, record.transitions).spec()
            self.api.update({**lease, "spec": {**(lease.get("spec") or {}), **spec}})
        except Exception as exc:
            log.warning("leader election: could not release the Lease: %s", exc)
            return False
        log.info("leader election: %s released Lease %s/%s", self.identity, self.config.namespace,
                 self.config.lease_name)
        return True


class KubeLeaseAPI:
    """LeaseAPI over the operator's client; these requests bypass its write gate and request counters (they are
    the election's, not reconciles')."""

    def __init__(self, kube: Any, namespace: str, name: str) -> None:
        from llm_operator._k8s import _path

        self.kube = kube
        self.path = _path("coordination.k8s.io/v1", "Lease", namespace, None, None)  # the kind registry's
        self.name = name

    def get(self) -> dict[str, Any] | None:
        from llm_operator._k8s import KubeError

        try:
            return dict(self.kube.send("GET", f"{self.path}/{self.name}"))
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise

    def create(self, lease: dict[str, Any]) -> dict[str, Any]:
        return self._write("POST", self.path, lease)

    def update(self, lease: dict[str, Any]) -> dict[str, Any]:
        return self._write("PUT", f"{self.path}/{self.name}", lease)

    def _write(self, method: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        from llm_operator._k8s import KubeError

        try:
            return dict(self.kube.send(method, path, body=body))
        except KubeError as exc:
            if exc.status == 409:
                raise LeaseConflict(str(exc)) from exc
            raise
