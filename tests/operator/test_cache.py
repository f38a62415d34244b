"""The child caches (llm_operator._cache) without a cluster: the store's ordering rules, selectors, and a
steady-state reconcile through CachedKube that sends nothing to the API."""

from __future__ import annotations

import copy
from typing import Any

from llm_operator import _kinds as registry
from llm_operator._cache import CachedKube, Caches, Store, matches
from llm_operator._reconcile import reconcile
from llm_operator.handlers import CHILD_SELECTOR

from tests.operator.fake_kube import FakeKube

NS = "team-a"


def _obj(name: str, rv: int, ns: str = NS, **labels: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": ns, "resourceVersion": str(rv), "labels": labels}}


def test_selector_terms() -> None:
    labels = {"a": "1", "b": "2"}
    assert matches(labels, "a=1,b==2") and matches(labels, "") and matches(labels, None)
    assert not matches(labels, "a=1,b=3") and not matches(labels, "c=1")
    assert matches(labels, "a!=2") and not matches(labels, "a!=1")
    assert matches(labels, "a") and not matches(labels, "!a") and matches(labels, "!c")


def test_store_keeps_the_newest_version_and_a_deletion_beats_a_late_apply_answer() -> None:
    store = Store()
    assert store.upsert(_obj("x", 10))
    assert not store.upsert(_obj("x", 9)), "an older version (a late event) replaced a newer one"
    assert store.upsert(_obj("x", 12))
    store.remove(NS, "x", rv=15)
    # An apply answered at rv 14 arrives after the watch said the object was deleted at 15: stays deleted.
    assert not store.upsert(_obj("x", 14)) and store.get(NS, "x") is None
    assert store.upsert(_obj("x", 16)), "re-created after the deletion"
    got = store.get(NS, "x")
    assert got is not None and got["metadata"]["resourceVersion"] == "16"
    got["metadata"]["name"] = "changed"  # readers get copies
    assert store.get(NS, "x") is not None
    with_fields = _obj("y", 20)
    with_fields["metadata"]["managedFields"] = [{"manager": "triton-llm-operator", "fieldsV1": {}}]
    store.upsert(with_fields)
    assert "managedFields" not in (store.get(NS, "y") or {})["metadata"]
    assert with_fields["metadata"]["managedFields"], "the caller's object was changed"


def test_store_lists_by_namespace_and_selector_and_a_relist_yields_the_difference() -> None:
    store = Store()
    store.replace([_obj("a", 1, app="m"), _obj("b", 2, app="n"), _obj("c", 3, ns="other", app="m")])
    assert [o["metadata"]["name"] for o in store.list(NS, "app=m")] == ["a"]
    assert sorted(o["metadata"]["name"] for o in store.list(None, "app=m")) == ["a", "c"]
    events = store.replace([_obj("a", 1, app="m"), _obj("b", 5, app="n"), _obj("d", 6, app="m")])
    assert sorted((t, o["metadata"]["name"]) for t, o in events) == [
        ("ADDED", "d"), ("DELETED", "c"), ("MODIFIED", "b")]
    assert len(store) == 3


class _Synced:
    """An informer whose list is already in: its store is fed by the test as the watch would."""

    def __init__(self, kube: Any, kind: registry.Kind, *, label_selector: str, namespace: str | None,
                 on_event: Any) -> None:
        self.kind, self.namespace = kind, namespace
        self.store = Store()
        self.synced = _Flag()

    def start(self) -> _Synced:
        return self


class _Flag:
    def is_set(self) -> bool:
        return True


class _CountingKube(FakeKube):
    def __init__(self) -> None:
        super().__init__()
        self.reads: list[tuple[str, str]] = []

    def get(self, **kw: Any) -> dict[str, Any] | None:
        self.reads.append(("get", kw["kind"]))
        return super().get(**kw)

    def list(self, **kw: Any) -> list[dict[str, Any]]:
        self.reads.append(("list", kw["kind"]))
        return super().list(**kw)


def _cached(raw: _CountingKube) -> tuple[CachedKube, Caches]:
    caches = Caches(raw, label_selector=CHILD_SELECTOR, informer=_Synced)  # type: ignore[arg-type]
    caches.start()
    return CachedKube(raw, caches), caches  # type: ignore[arg-type]


def _watch(raw: _CountingKube, caches: Caches) -> None:
    """Deliver what the API server holds to the stores, as the watches would."""
    for kind in registry.CACHED:
        informer = caches.informer(kind.kind, NS)
        if informer is not None:
            for obj in raw.find(kind.kind):
                informer.store.upsert(copy.deepcopy(obj))


def _pods_ready(raw: _CountingKube, kube: CachedKube, caches: Caches) -> dict[str, Any]:
    """The Deployment controller reports both pods ready, the watches deliver it, and a reconcile writes Ready;
    the LLMDeployment as it is then."""
    deploy = raw.find("Deployment")[0]
    deploy["status"] = {"replicas": 2, "readyReplicas": 2, "updatedReplicas": 2, "terminatingReplicas": 0}
    raw.put(deploy)
    _watch(raw, caches)
    reconcile(kube, raw.get(api_version="serving.llmops.dev/v1alpha1", kind="LLMDeployment", namespace=NS,
                            name="m"))
    body = raw.get(api_version="serving.llmops.dev/v1alpha1", kind="LLMDeployment", namespace=NS, name="m")
    assert body is not None and body["status"]["readyReplicas"] == 2
    return body


def _three_steady_passes_send_nothing(raw: _CountingKube, kube: CachedKube, body: dict[str, Any]) -> None:
    raw.reads.clear()
    writes = raw.writes
    for _ in range(3):
        reconcile(kube, body)
    assert raw.reads == [], "a steady-state reconcile read from the API"
    assert raw.writes == writes, raw.log[writes:]


def _llmd(raw: FakeKube) -> dict[str, Any]:
    return raw.put({"apiVersion": "serving.llmops.dev/v1alpha1", "kind": "LLMDeployment",
                    "metadata": {"name": "m", "namespace": NS, "generation": 1},
                    "spec": {"model": {"name": "tiny", "uri": "hf://HuggingFaceTB/SmolLM2-135M-Instruct"},
                             "runtime": {"backend": "vllm"},
                             "resources": {"gpu": {"count": 1, "product": "NVIDIA-H100-80GB-HBM3"}},
                             "replicas": 2}})


def test_a_steady_state_reconcile_through_the_caches_sends_no_request() -> None:
    raw = _CountingKube()
    kube, caches = _cached(raw)
    reconcile(kube, _llmd(raw))
    created = {kind for verb, kind, _ in raw.log if verb == "apply"}
    assert {"ConfigMap", "Deployment", "Service", "PodDisruptionBudget"} <= created
    # Creation reads each missing child from the API once: an object of that name without our labels (a user's)
    # must be reported, not overwritten; the cache cannot know about it.
    assert {("get", "ConfigMap"), ("get", "Service")} <= set(raw.reads)
    body = _pods_ready(raw, kube, caches)
    _three_steady_passes_send_nothing(raw, kube, body)
    assert kube.cache_reads_by_namespace[NS] > 0


def test_the_answer_of_an_apply_is_cached_so_the_next_pass_writes_nothing_before_the_watch_catches_up() -> None:
    raw = _CountingKube()
    kube, _ = _cached(raw)
    body = _llmd(raw)
    reconcile(kube, body)  # no watch delivers anything: only the apply answers are in the stores
    body = raw.get(api_version="serving.llmops.dev/v1alpha1", kind="LLMDeployment", namespace=NS, name="m")
    writes = raw.writes
    raw.reads.clear()
    reconcile(kube, body)
    assert raw.writes == writes, raw.log[writes:]
    # Pods are not cached: while replicas are not ready the reconcile lists them for the reason.
    assert raw.reads == [("list", "Pod")]


def test_a_child_deleted_by_hand_is_recreated_and_a_foreign_object_is_not_overwritten() -> None:
    raw = _CountingKube()
    kube, caches = _cached(raw)
    reconcile(kube, _llmd(raw))
    _watch(raw, caches)
    service = caches.informer("Service", NS)
    assert service is not None
    name = raw.find("Service")[0]["metadata"]["name"]
    raw.objects = {k: v for k, v in raw.objects.items() if k[1] != "Service"}
    service.store.remove(NS, name, rv=10_000)  # the watch's DELETED event
    body = raw.get(api_version="serving.llmops.dev/v1alpha1", kind="LLMDeployment", namespace=NS, name="m")
    reconcile(kube, body)
    assert [o["metadata"]["name"] for o in raw.find("Service")] == [name]
    # Another controller's ConfigMap of the child's name without our labels: never in the cache, so only the
    # API read before creating finds it, and it is reported instead of taken over.
    cm = raw.find("ConfigMap")[0]
    raw.objects = {k: v for k, v in raw.objects.items() if k[1] != "ConfigMap"}
    informer = caches.informer("ConfigMap", NS)
    assert informer is not None
    informer.store.remove(NS, cm["metadata"]["name"], rv=20_000)
    raw.put({"apiVersion": "v1", "kind": "ConfigMap",
             "metadata": {"name": cm["metadata"]["name"], "namespace": NS, "ownerReferences": [
                 {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "x", "uid": "other", "controller": True}]},
             "data": {"mine": "1"}})
    writes = len(raw.log)
    outcome = reconcile(kube, raw.get(api_version="serving.llmops.dev/v1alpha1", kind="LLMDeployment",
                                      namespace=NS, name="m"))
    assert not [w for w in raw.log[writes:] if w[1] == "ConfigMap"], "the user's ConfigMap was overwritten"
    assert outcome.reason == "NameConflict"
    assert (raw.find("ConfigMap")[0].get("data") or {}) == {"mine": "1"}


def test_a_canary_on_a_gateway_route_reads_the_route_from_its_cache_in_the_steady_state() -> None:
    raw = _CountingKube()
    kube, caches = _cached(raw)
    caches.start_kind(registry.kind("HTTPRoute"))  # the Gateway API CRD is served
    body = _llmd(raw)
    body["spec"]["rollout"] = {"strategy": "Canary", "canary": {
        "steps": [{"setWeight": 20}, {"pause": {}}], "trafficRouting": {"gatewayAPI": {"httpRoute": "llm"}}}}
    body = raw.put(body)
    raw.put({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
             "metadata": {"name": "llm", "namespace": NS, "resourceVersion": "1"},  # a user's: none of our labels
             "spec": {"rules": [{"backendRefs": [{"name": "m-stable", "port": 8000, "weight": 100},
                                                 {"name": "m-canary", "port": 8000, "weight": 0}]}]}})
    _watch(raw, caches)  # the route's informer lists it
    reconcile(kube, body)
    assert {kind for verb, kind, _ in raw.log if verb == "apply"} >= {"Service", "Deployment"}
    assert ("get", "HTTPRoute") not in raw.reads, "the route was read from the API though its cache was synced"
    body = _pods_ready(raw, kube, caches)
    assert {s["metadata"]["name"] for s in raw.find("Service")} >= {"m-stable", "m-canary"}
    _three_steady_passes_send_nothing(raw, kube, body)


class _Unsynced(_Synced):
    """An informer whose first list has not come in yet."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.synced = _Switch()  # type: ignore[assignment]


class _Switch:
    def __init__(self) -> None:
        self.on = False

    def is_set(self) -> bool:
        return self.on


class _CRDs:
    """Answers the start-up question "is CRD X served?" as the API server's fieldSelector list would."""

    def __init__(self, served: dict[str, bool]) -> None:
        self.served = served  # CRD name -> Established
        self.asked: list[str] = []

    def record_call(self, verb: str, path: str) -> None:
        pass

    def send(self, method: str, path: str, *, query: list[tuple[str, str]]) -> dict[str, Any]:
        name = dict(query)["fieldSelector"].removeprefix("metadata.name=")
        self.asked.append(name)
        if name not in self.served:
            return {"items": []}
        status = "True" if self.served[name] else "False"
        return {"items": [{"metadata": {"name": name},
                           "status": {"conditions": [{"type": "Established", "status": status}]}}]}


def test_optional_kinds_served_at_start_up_are_cached_before_the_first_reconcile() -> None:
    route_crd, keda_crd = registry.kind("HTTPRoute").crd, registry.kind("ScaledObject").crd
    assert route_crd and keda_crd
    kube = _CRDs({route_crd: True, keda_crd: False})  # KEDA's CRD exists but is not Established
    caches = Caches(kube, label_selector=CHILD_SELECTOR, informer=_Unsynced, optional_grace=60)  # type: ignore[arg-type]
    caches.start()
    assert caches.start_served() == frozenset({"HTTPRoute"})
    assert sorted(kube.asked) == sorted(registry.OPTIONAL)  # one question per optional CRD
    children = [i for k in registry.CHILDREN if k.crd is None for i in caches._informers[k.kind]]
    for informer in children:
        informer.synced.on = True  # type: ignore[attr-defined]
    assert not caches.synced(), "reconciles started before the route cache had its first list"
    caches._informers["HTTPRoute"][0].synced.on = True  # type: ignore[attr-defined]
    assert caches.synced()
    assert "ScaledObject" not in caches._informers and "PodMonitor" not in caches._informers


def test_an_optional_cache_that_never_syncs_stalls_reconciles_for_the_grace_period_only() -> None:
    route_crd = registry.kind("HTTPRoute").crd or ""
    caches = Caches(_CRDs({route_crd: True}), label_selector=CHILD_SELECTOR, informer=_Unsynced,  # type: ignore[arg-type]
                    optional_grace=0.0)
    caches.start()
    caches.start_served()
    for k in registry.CHILDREN:
        for informer in caches._informers.get(k.kind, []):
            informer.synced.on = True  # type: ignore[attr-defined]
    assert caches.synced(), "a route cache that cannot sync held the reconciles past the grace period"
