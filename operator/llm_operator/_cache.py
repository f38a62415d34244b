"""Watch caches of the operator's children, and a client that reads from them.

A steady-state reconcile used to make about ten requests (a Deployment list, a GET of every child, a list per
prunable kind) although nothing had changed, and kopf's child watches streamed every ConfigMap, Deployment,
Service and PDB of the cluster to filter labels client-side. Here each child kind has one informer (list, then
watch from the list's resourceVersion, as client-go's reflector) with the server-side label selector
``app.kubernetes.io/managed-by=triton-llm-operator``: memory grows with the operator's own children, not with the
cluster, and ``CachedKube`` answers the reconciler's reads from memory.

Staleness is handled where it matters:
- an apply's answer goes into the store at once (resourceVersions order it against watch events, and a DELETED
  event leaves a tombstone so a late answer cannot resurrect the object), so the next pass does not re-apply;
- a child the cache does not hold is read from the API before it is created: an object of that name without our
  labels (a user's) must be reported, not overwritten;
- a kind whose informer has not synced (a monitor CRD that just appeared) is read from the API;
- the rollout math counts replicas from cached Deployments, and pods it has asked for that the pod index does
  not show yet are not free GPUs (``_reconcile``'s room rule): a fast pass after a scale-down must not surge into
  the slot the new revision's pod is about to take.
"""

from __future__ import annotations

import copy
import logging
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from prometheus_client import Counter as PromCounter
from prometheus_client import Gauge

from llm_operator import _kinds as registry
from llm_operator._k8s import Kube, KubeAPI, KubeError, _path

log = logging.getLogger("llm_operator.cache")

Obj = dict[str, Any]
Events = list[tuple[str, Obj]]
EventHandler = Callable[[str, Mapping[str, Any]], None]  # (ADDED | MODIFIED | DELETED, object)

WATCH_REQUESTS = PromCounter("llmop_watch_requests_total",
                             "List and watch requests of the operator's child caches", ["kind", "verb"])
WATCH_ERRORS = PromCounter("llmop_watch_errors_total", "Failed lists and broken watches of the child caches",
                           ["kind"])
CACHE_OBJECTS = Gauge("llmop_cache_objects", "Objects held in the operator's child caches", ["kind"])
CACHE_READS = PromCounter("llmop_cache_reads_total", "Reconciler reads answered from the child caches", ["kind"])


def _rv(obj: Mapping[str, Any]) -> int:
    try:
        return int(obj["metadata"].get("resourceVersion") or 0)
    except ValueError:  # opaque by contract; etcd-backed servers use integers
        return 0


def parse_selector(selector: str | None) -> list[tuple[str, str, str | None]]:
    """Equality-based label selectors (``k=v``, ``k==v``, ``k!=v``, ``k``, ``!k``): what the operator uses."""
    terms: list[tuple[str, str, str | None]] = []
    for raw in (selector or "").split(","):
        term = raw.strip()
        if not term:
            continue
        if "!=" in term:
            key, value = term.split("!=", 1)
            terms.append(("!=", key.strip(), value.strip()))
        elif "=" in term:
            key, value = term.replace("==", "=").split("=", 1)
            terms.append(("=", key.strip(), value.strip()))
        elif term.startswith("!"):
            terms.append(("!", term[1:].strip(), None))
        else:
            terms.append(("exists", term, None))
    return terms


def matches(labels: Mapping[str, str] | None, selector: str | None) -> bool:
    labels = labels or {}
    for op, key, value in parse_selector(selector):
        if op == "=" and labels.get(key) != value:
            return False
        if op == "!=" and labels.get(key) == value:
            return False
        if op == "exists" and key not in labels:
            return False
        if op == "!" and key in labels:
            return False
    return True


def _trim(obj: Mapping[str, Any]) -> Obj:
    """What the reconciler reads of an object: everything but managedFields, which no comparison uses and which
    made up a large part of each cached Deployment (as client-go's informers, which strip it for the same reason)."""
    meta = obj["metadata"]
    return {**obj, "metadata": {k: v for k, v in meta.items() if k != "managedFields"}}


class Store:
    """One kind's objects by namespace and name, without managedFields. Thread-safe; readers get deep copies."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_ns: dict[str, dict[str, Obj]] = {}
        # Deleted objects' last resourceVersions: an apply answer older than its deletion is stale.
        self._tombstones: dict[tuple[str, str], int] = {}

    def __len__(self) -> int:
        with self._lock:
            return sum(len(v) for v in self._by_ns.values())

    def get(self, namespace: str, name: str) -> Obj | None:
        with self._lock:
            obj = self._by_ns.get(namespace, {}).get(name)
            return copy.deepcopy(obj) if obj is not None else None

    def list(self, namespace: str | None, selector: str | None) -> list[Obj]:
        with self._lock:
            spaces = [self._by_ns.get(namespace, {})] if namespace is not None else list(self._by_ns.values())
            found = [o for space in spaces for o in space.values()
                     if matches(o["metadata"].get("labels"), selector)]
            return copy.deepcopy(sorted(found, key=lambda o: (o["metadata"].get("namespace", ""),
                                                             o["metadata"]["name"])))

    def upsert(self, obj: Mapping[str, Any]) -> bool:
        """Keep ``obj`` unless the store already holds a newer version (or saw it deleted later)."""
        meta = obj["metadata"]
        key = (meta.get("namespace") or "", meta["name"])
        with self._lock:
            space = self._by_ns.setdefault(key[0], {})
            current = space.get(key[1])
            if current is not None and _rv(current) > _rv(obj):
                return False
            if current is None and self._tombstones.get(key, -1) >= _rv(obj):
                return False
            space[key[1]] = _trim(obj)
            self._tombstones.pop(key, None)
            return True

    def update_local(self, namespace: str, name: str, change: Callable[[Obj], None]) -> None:
        """Change the cached copy in place (same resourceVersion): the next watch event replaces it."""
        with self._lock:
            obj = self._by_ns.get(namespace, {}).get(name)
            if obj is not None:
                change(obj)

    def remove(self, namespace: str, name: str, *, rv: int = 0) -> Obj | None:
        with self._lock:
            space = self._by_ns.get(namespace, {})
            gone = space.pop(name, None)
            if not space:
                self._by_ns.pop(namespace, None)
            self._tombstones[(namespace, name)] = max(rv, _rv(gone) if gone else 0,
                                                      self._tombstones.get((namespace, name), 0))
            if len(self._tombstones) > 10_000:  # bounded: only the newest deletions matter
                for old in sorted(self._tombstones, key=self._tombstones.__getitem__)[:5_000]:
                    del self._tombstones[old]
            return gone

    def replace(self, items: Iterable[Obj]) -> Events:
        """A fresh list: the new contents, and the events that turn the old contents into it."""
        fresh: dict[str, dict[str, Obj]] = {}
        for obj in items:
            meta = obj["metadata"]
            fresh.setdefault(meta.get("namespace") or "", {})[meta["name"]] = _trim(obj)
        with self._lock:
            old, self._by_ns = self._by_ns, fresh
            self._tombstones.clear()
        events: Events = []
        for ns, space in fresh.items():
            for name, obj in space.items():
                before = old.get(ns, {}).get(name)
                if before is None:
                    events.append(("ADDED", obj))
                elif _rv(before) != _rv(obj):
                    events.append(("MODIFIED", obj))
        for ns, space in old.items():
            for name, obj in space.items():
                if name not in fresh.get(ns, {}):
                    events.append(("DELETED", obj))
        return events


class Informer:
    """List and watch one kind with a server-side label selector into a Store; call ``on_event`` after each
    change is in the store. Retries with capped exponential backoff, so an apiserver outage costs a bounded
    request rate; relists on 410 Gone."""

    def __init__(self, kube: Kube, kind: registry.Kind, *, label_selector: str, namespace: str | None = None,
                 on_event: EventHandler | None = None, page_size: int = 500, watch_seconds: int = 300,
                 max_backoff: float = 30.0) -> None:
        self.kube, self.kind, self.namespace = kube, kind, namespace
        self.label_selector = label_selector
        self.store = Store()
        self.synced = threading.Event()
        self._on_event = on_event
        self._page_size, self._watch_seconds, self._max_backoff = page_size, watch_seconds, max_backoff
        self._stop = threading.Event()
        self._raw: Any = None
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"informer-{kind.plural}{'-' + namespace if namespace else ''}")

    def start(self) -> Informer:
        self._thread.start()
        return self

    def signal_stop(self) -> None:
        self._stop.set()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        raw = self._raw
        if raw is not None:
            # Unblock a read waiting on a quiet watch: closing the response from this thread does not interrupt
            # a recv() in the other, shutting the socket down does.
            sock = getattr(getattr(raw, "connection", None), "sock", None)
            try:
                if sock is not None:
                    sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._thread.join(timeout=timeout)

    @property
    def path(self) -> str:
        return _path(self.kind.api_version, self.kind.kind, self.namespace, None, None)

    def _record(self, verb: str) -> None:
        WATCH_REQUESTS.labels(self.kind.kind, verb).inc()
        self.kube.record_call("GET" if verb == "list" else "WATCH", self.path)

    def _dispatch(self, type_: str, obj: Mapping[str, Any]) -> None:
        if self._on_event is None or self._stop.is_set():
            return
        try:
            self._on_event(type_, obj)
        except Exception:  # a handler's bug must not stop the cache
            log.exception("informer %s: event handler failed", self.kind.plural)

    def _selector(self) -> list[tuple[str, str]]:
        return [("labelSelector", self.label_selector)] if self.label_selector else []

    def _list(self) -> str:
        items: list[Obj] = []
        cont = ""
        while True:
            query = [*self._selector(), ("limit", str(self._page_size))]
            if cont:
                query.append(("continue", cont))
            self._record("list")
            page = self.kube.send("GET", self.path, query=query)
            items += [{"apiVersion": self.kind.api_version, "kind": self.kind.kind, **item}
                      for item in page.get("items") or []]
            cont = (page.get("metadata") or {}).get("continue") or ""
            if not cont:
                rv = str((page.get("metadata") or {}).get("resourceVersion") or "")
                break
        events = self.store.replace(items)
        CACHE_OBJECTS.labels(self.kind.kind).set(len(self.store))
        first = not self.synced.is_set()
        self.synced.set()
        if not first:  # after a relist: what changed while the watch was gone
            for type_, obj in events:
                self._dispatch(type_, obj)
        return rv

    def _watch(self, rv: str) -> str | None:
        """Follow the watch from ``rv``; the last resourceVersion seen, or None when the list must be redone."""
        query = [("watch", "true"), *self._selector(), ("resourceVersion", rv),
                 ("allowWatchBookmarks", "true"), ("timeoutSeconds", str(self._watch_seconds))]
        self._record("watch")

        def opened(raw: Any) -> None:
            self._raw = raw

        try:
            for event in self.kube.stream(self.path, query=query, read_timeout=self._watch_seconds + 30,
                                          on_open=opened):
                if self._stop.is_set():
                    return rv
                type_, obj = event.get("type"), event.get("object") or {}
                if type_ == "ERROR":
                    if obj.get("code") == 410:  # too old: the window was compacted
                        return None
                    raise KubeError(f"watch {self.path}: {obj.get('message')}", status=int(obj.get("code") or 0))
                rv = str(obj.get("metadata", {}).get("resourceVersion") or rv)
                if type_ == "BOOKMARK":
                    continue
                obj = {"apiVersion": self.kind.api_version, "kind": self.kind.kind, **obj}
                if type_ == "DELETED":
                    meta = obj["metadata"]
                    self.store.remove(meta.get("namespace") or "", meta["name"], rv=_rv(obj))
                elif not self.store.upsert(obj):
                    continue
                CACHE_OBJECTS.labels(self.kind.kind).set(len(self.store))
                self._dispatch(str(type_), obj)
        finally:
            self._raw = None
        return rv

    def _run(self) -> None:
        rv: str | None = None
        backoff = 1.0
        while not self._stop.is_set():
            try:
                if rv is None:
                    rv = self._list()
                rv = self._watch(rv)
                backoff = 1.0
            except Exception as exc:
                if self._stop.is_set():
                    return
                WATCH_ERRORS.labels(self.kind.kind).inc()
                if isinstance(exc, KubeError):
                    if exc.status == 410:  # Gone: our resourceVersion is older than etcd keeps; list again now
                        rv = None
                        continue
                    log.warning("informer %s: %s (retry in %.0fs)", self.kind.plural, exc, backoff)
                else:
                    # Not an answer of the API (a broken stream, a bug): nothing read since can be trusted.
                    log.exception("informer %s failed (retry in %.0fs)", self.kind.plural, backoff)
                    rv = None
                self._stop.wait(backoff)
                backoff = min(backoff * 2, self._max_backoff)


class Caches:
    """The informers of the child kinds: always-served kinds from the start, optional ones (monitor CRDs, KEDA)
    while their CRD is served."""

    def __init__(self, kube: Kube, *, label_selector: str, namespaces: Iterable[str] = (),
                 on_event: Callable[[registry.Kind, str, Mapping[str, Any]], None] | None = None,
                 informer: Callable[..., Informer] | None = None, optional_grace: float = 10.0) -> None:
        self.kube = kube
        self._make = informer or Informer  # unit tests pass informers that run no thread
        self.label_selector = label_selector
        # Exact namespace names get one informer each; none means cluster-wide.
        self.namespaces: list[str | None] = list(namespaces) or [None]
        self._on_event = on_event
        self._lock = threading.Lock()
        self._informers: dict[str, list[Informer]] = {}
        self._stopped = False
        self.optional_grace = optional_grace
        # Optional kinds found served at start-up: reconciles wait for their first list until this deadline.
        self._gated: dict[str, float] = {}

    def start(self, kinds: Iterable[registry.Kind] = ()) -> None:
        for k in kinds or [k for k in registry.CACHED if k.crd is None]:
            self.start_kind(k)

    def start_served(self) -> frozenset[str]:
        """Start the informers of the optional kinds whose CRD is served now, and make the first reconciles wait
        for their first list (at most ``optional_grace`` seconds). Without this, reconciles that ran before
        kopf's CRD watch reported the CRD read those kinds from the API, and took the kind for not installed (a
        KEDA model flipped to KEDANotInstalled and back at every start). One request per optional CRD; a
        failed one leaves that kind to the CRD watch, as before. Returns the kinds found served."""
        path = _path("apiextensions.k8s.io/v1", "CustomResourceDefinition", None, None, None)
        served = set()
        for crd, k in registry.OPTIONAL.items():
            WATCH_REQUESTS.labels("CustomResourceDefinition", "list").inc()
            self.kube.record_call("GET", path)
            try:
                found = self.kube.send("GET", path, query=[("fieldSelector", f"metadata.name={crd}")])
            except KubeError as exc:
                log.warning("could not tell whether CRD %s is served (%s); its kind waits for the CRD watch", crd, exc)
                continue
            if any(_established(item) for item in (found or {}).get("items") or []):
                self.start_kind(k, gate=True)
                served.add(k.kind)
        return frozenset(served)

    def start_kind(self, k: registry.Kind, *, gate: bool = False) -> None:
        with self._lock:
            if self._stopped or k.kind in self._informers:
                return
            if gate:
                self._gated[k.kind] = time.monotonic() + self.optional_grace
            handler = self._on_event
            on_event: EventHandler | None = None
            if handler is not None and k.watched:
                def on_event(type_: str, obj: Mapping[str, Any], k: registry.Kind = k) -> None:
                    handler(k, type_, obj)
            self._informers[k.kind] = [
                self._make(self.kube, k, label_selector=self.selector_of(k), namespace=ns,
                           on_event=on_event).start()
                for ns in self.namespaces]

    def selector_of(self, k: registry.Kind) -> str:
        """Children carry our labels; a user's object the spec names (an HTTPRoute) carries none we could
        select on, so its informer holds every object of its kind in the watched namespaces."""
        return self.label_selector if k.child else ""

    def stop_kind(self, kind: str) -> None:
        with self._lock:
            informers = self._informers.pop(kind, [])
        for inf in informers:
            inf.stop()

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            informers = [i for group in self._informers.values() for i in group]
            self._informers.clear()
        for inf in informers:
            inf.signal_stop()  # all at once, then wait for each
        for inf in informers:
            inf.stop()

    def wait_synced(self, timeout: float) -> bool:
        with self._lock:
            informers = [i for group in self._informers.values() for i in group]
        return all(i.synced.wait(timeout) for i in informers)

    def synced(self) -> bool:
        """The always-served kinds have their first list in, and so have the optional kinds found served at
        start-up (or ``optional_grace`` has passed). An optional kind whose CRD appears later is read from the
        API until its informer syncs: a CRD that never serves cannot stall anything."""
        now = time.monotonic()
        with self._lock:
            return all(i.synced.is_set() for kind, group in self._informers.items()
                       if registry.kind(kind).crd is None or self._gated.get(kind, 0.0) > now for i in group)

    def informer(self, kind: str, namespace: str | None) -> Informer | None:
        """The synced informer that holds every ``kind`` object of ``namespace`` (None: of all namespaces)."""
        with self._lock:
            group = self._informers.get(kind) or []
        if len(group) == 1 and group[0].namespace is None:
            found: Informer | None = group[0]
        else:
            found = next((i for i in group if namespace is not None and i.namespace == namespace), None)
        return found if found is not None and found.synced.is_set() else None


class CachedKube:
    """The reconciler's client: reads of cached kinds come from the informers' stores, everything else goes to
    the API; writes go to the API and their answers update the stores."""

    def __init__(self, kube: Kube, caches: Caches) -> None:
        self.raw = kube
        self.caches = caches
        self._lock = threading.Lock()
        self.cache_reads_by_namespace: Counter[str] = Counter()

    # What tests and the probe read from the client, passed through.
    @property
    def writes(self) -> int:
        return self.raw.writes

    @property
    def requests(self) -> Counter[str]:
        return self.raw.requests

    @property
    def writes_by_namespace(self) -> Counter[str]:
        return self.raw.writes_by_namespace

    @property
    def gets_by_namespace(self) -> Counter[str]:
        return self.raw.gets_by_namespace

    @property
    def calls(self) -> set[tuple[str, str]]:
        return self.raw.calls

    def _counted(self, kind: str, namespace: str | None) -> None:
        CACHE_READS.labels(kind).inc()
        with self._lock:
            self.cache_reads_by_namespace[namespace or ""] += 1

    def _store(self, kind: str, namespace: str | None) -> Store | None:
        informer = self.caches.informer(kind, namespace)
        return informer.store if informer is not None else None

    def _selector(self, kind: str) -> str:
        return self.caches.selector_of(registry.kind(kind))

    def get(self, *, api_version: str, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        store = self._store(kind, namespace)
        if store is not None:
            self._counted(kind, namespace)
            found = store.get(namespace or "", name)
            if found is not None:
                return found
        # Not cached, or not (yet) in the cache: only the API can say whether an object of that name exists
        # without our labels (a user's, which must not be overwritten) or was made since the last event.
        live = self.raw.get(api_version=api_version, kind=kind, namespace=namespace, name=name)
        if live is not None and store is not None and self._ours(kind, live):
            store.upsert(live)
        return live

    def list(self, *, api_version: str, kind: str, namespace: str | None, label_selector: str | None = None
             ) -> list[dict[str, Any]]:
        store = self._store(kind, namespace)
        # The cache holds only what the informers' selector selects: a query that asks for less is answered
        # from it, any other goes to the API.
        if store is not None and self._narrower(kind, label_selector):
            self._counted(kind, namespace)
            return store.list(namespace, label_selector)
        return self.raw.list(api_version=api_version, kind=kind, namespace=namespace, label_selector=label_selector)

    def apply(self, obj: dict[str, Any], *, subresource: str | None = None, force: bool = True) -> dict[str, Any]:
        applied = self.raw.apply(obj, subresource=subresource, force=force)
        if subresource is None:
            store = self._store(obj["kind"], obj["metadata"].get("namespace"))
            if store is not None and self._ours(obj["kind"], applied):
                store.upsert(applied)
        return applied

    def patch(self, *, api_version: str, kind: str, namespace: str | None, name: str, body: dict[str, Any],
              subresource: str | None = None) -> dict[str, Any]:
        result = self.raw.patch(api_version=api_version, kind=kind, namespace=namespace, name=name, body=body,
                                subresource=subresource)
        store = self._store(kind, namespace)
        if store is not None:
            if subresource is None:
                if self._ours(kind, result):
                    store.upsert(result)
            elif subresource == "scale" and "replicas" in (body.get("spec") or {}):
                # The answer is a Scale, not the object: note the new replicas until the watch brings the object.
                replicas = body["spec"]["replicas"]
                store.update_local(namespace or "", name, lambda o: o.setdefault("spec", {}).update(
                    replicas=replicas))
        return result

    def delete(self, *, api_version: str, kind: str, namespace: str | None, name: str, uid: str | None = None
               ) -> bool:
        gone = self.raw.delete(api_version=api_version, kind=kind, namespace=namespace, name=name, uid=uid)
        store = self._store(kind, namespace)
        if gone and store is not None:
            current = store.get(namespace or "", name)
            if current is not None and (uid is None or current["metadata"].get("uid") == uid):
                store.remove(namespace or "", name, rv=_rv(current))
        return gone

    def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        return self.raw.create(obj)

    def _ours(self, kind: str, obj: Mapping[str, Any]) -> bool:
        """Whether ``obj`` belongs in its kind's cache (the informer's selector selects it)."""
        return matches(obj["metadata"].get("labels"), self._selector(kind))

    def _narrower(self, kind: str, selector: str | None) -> bool:
        asked = dict(parse_selector_terms(selector))
        return all(asked.get(k) == v for k, v in parse_selector_terms(self._selector(kind)))


def _established(crd: Mapping[str, Any]) -> bool:
    return any(c.get("type") == "Established" and c.get("status") == "True"
               for c in (crd.get("status") or {}).get("conditions") or [])


def parse_selector_terms(selector: str | None) -> list[tuple[str, str]]:
    """The ``key=value`` terms of a selector (the only kind the informers use)."""
    return [(key, value) for op, key, value in parse_selector(selector) if op == "=" and value is not None]


_: type[KubeAPI] = CachedKube  # CachedKube satisfies the reconciler's client Protocol
