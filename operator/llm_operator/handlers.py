"""Every kopf handler of the operator, registered in one place. Each one only feeds the work queue.

Run with ``llmctl run`` or ``kopf run -m llm_operator.handlers``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

import kopf

from llm_operator import GROUP, PLURAL, VERSION
from llm_operator import _kinds as registry
from llm_operator._cache import CachedKube, Caches
from llm_operator._controller import Controller
from llm_operator._k8s import Kube, honour_current_kubeconfig
from llm_operator._leader import IS_LEADER, KubeLeaseAPI, LeaderElector
from llm_operator._leader import Config as LeaderConfig
from llm_operator._reconcile import LABEL_INSTANCE, LABEL_MANAGED_BY
from llm_operator.api import GPU_PRODUCT_LABEL
from llm_operator.builders import MANAGER

CHILD_LABELS = {LABEL_MANAGED_BY: MANAGER}
# The child caches' server-side selector: the API server sends only the operator's own children.
CHILD_SELECTOR = f"{LABEL_MANAGED_BY}={MANAGER}"

# The controller lives in kopf's memo (``memo.controller``: every handler gets it from there; kopf hands each
# object a shallow copy of the operator's memo, made after the start-up handlers ran, so all share the one
# controller). This module global only mirrors the running operator's controller for readers outside kopf:
# the tests and their fixtures (``handlers.controller``, read through the module's __getattr__ below).
_current: Controller | None = None


def __getattr__(name: str) -> Any:
    if name == "controller":
        return _current
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _ctl(memo: Any) -> Controller:
    ctl = getattr(memo, "controller", None) if memo is not None else None
    if ctl is None:
        raise kopf.TemporaryError("operator is starting", delay=1)
    return ctl


@kopf.on.startup()
def startup(settings: kopf.OperatorSettings, memo: kopf.Memo,
            logger: logging.Logger | logging.LoggerAdapter[Any], **_: Any) -> None:
    global _current
    # Our own Events carry reasons; kopf's log-to-Event posting would add a write per log line.
    settings.posting.enabled = False
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 310
    settings.watching.connect_timeout = 30
    settings.networking.request_timeout = 60
    election: LeaderConfig | None = memo.get("leader_election")
    kube = Kube()
    # Watched by exact name, one informer each; a kopf glob pattern (prod-*) needs the cluster-wide watch.
    namespaces = list(memo.get("namespaces") or [])
    if any(set(ns) & set("*?[!") for ns in namespaces):
        namespaces = []
    controller: Controller | None = None

    def child_event(kind: registry.Kind, type_: str, obj: Any) -> None:
        if controller is None:
            return
        meta = obj["metadata"]
        if kind.child:
            keys = [key] if (key := _owner_key(meta)) is not None else []
        else:  # a user's object the specs name (an HTTPRoute): every LLMDeployment that names it
            keys = _naming(controller.bodies, kind.kind, meta.get("namespace") or "", meta["name"])
        for key in keys:
            controller.enqueue(key)

    caches = Caches(kube, label_selector=CHILD_SELECTOR, namespaces=namespaces, on_event=child_event)
    controller = Controller(
        CachedKube(kube, caches),
        workers=int(os.environ.get("LLMOPS_WORKERS", "8")),
        resync_seconds=float(os.environ.get("LLMOPS_RESYNC_SECONDS", "300")),
        ready=caches.synced,  # no reconcile reads a cache before its first list is in
    )
    memo.caches = caches
    caches.start()
    # Optional kinds whose CRD is served already are known before the first reconcile, not when kopf's CRD
    # watch gets to them (crd_event then finds nothing new).
    controller.monitor_kinds = caches.start_served()
    if election is not None:
        elector = LeaderElector(KubeLeaseAPI(kube, election.namespace, election.lease_name), election,
                                on_started_leading=controller.started_leading)
        # Only the leader dispatches reconciles, and only the leader's client sends writes.
        controller.leader = elector.is_leader
        kube.write_gate = elector.is_leader
        memo.elector = elector
        elector.start()
    else:
        IS_LEADER.set(1)
    memo.controller = controller
    controller.start()
    _current = controller
    logger.info("triton-llm-operator started (workers=%s%s)", os.environ.get("LLMOPS_WORKERS", "8"),
                f", leader election on Lease {election.namespace}/{election.lease_name} as "
                f"{memo.elector.identity}" if election is not None else "")


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    # kopf's own client-library login, but with $KUBECONFIG as it is now (in a pod: the service account).
    honour_current_kubeconfig()
    return kopf.login_via_client(**kwargs)


@kopf.on.cleanup()
def cleanup(memo: kopf.Memo, **_: Any) -> None:
    global _current
    controller = memo.get("controller")
    if controller is not None:
        controller.stop()  # in-flight reconciles finish first
        memo.controller = None
    caches = memo.get("caches")
    if caches is not None:
        caches.stop()
        memo.caches = None
    elector = memo.get("elector")
    if elector is not None:
        elector.stop(release=True)  # then the Lease goes: a follower takes over at its next retry
        memo.elector = None
    _current = None


@kopf.on.probe(id="queue")
def probe(memo: kopf.Memo, **_: Any) -> dict[str, Any]:
    ctl = _ctl(memo)
    elector = memo.get("elector")
    return {"llmdeployments": len(ctl.bodies), "idle": ctl.idle(), "api_requests": dict(ctl.kube.requests),
            "leader": elector.is_leader() if elector is not None else True}


@kopf.index("", "v1", "nodes")
def gpu_nodes(name: str, labels: kopf.Labels, status: kopf.Status, spec: kopf.Spec,
              **_: Any) -> dict[str, dict[str, Any]]:
    return {name: _node_facts(labels, status, name, spec)}


def _node_facts(labels: Any, status: Any, name: str = "", spec: Any = None) -> dict[str, Any]:
    """What reconcile needs from a node (see NodeFacts): its GPU product and allocatable resources."""
    return {"product": (labels or {}).get(GPU_PRODUCT_LABEL), "allocatable": dict(status.get("allocatable") or {}),
            "name": name, "unschedulable": bool((spec or {}).get("unschedulable"))}


@kopf.index("", "v1", "pods")
def gpu_pods(spec: kopf.Spec, status: kopf.Status, labels: kopf.Labels, namespace: str | None,
             **_: Any) -> dict[str, dict[str, Any]]:
    """GPUs each pod holds, by node: the free room a rollout may surge into. Finished pods hold none."""
    gpus = pod_gpus(spec)
    if not gpus or status.get("phase") in ("Succeeded", "Failed"):
        return {}
    ours = (labels or {}).get(LABEL_MANAGED_BY) == MANAGER
    return {spec.get("nodeName") or "": {"gpus": gpus, "namespace": namespace or "",
                                         "instance": (labels or {}).get(LABEL_INSTANCE) if ours else None}}


def pod_gpus(spec: Any) -> int:
    """nvidia.com/gpu a pod requests (limits stand in for requests, as the scheduler does for extended
    resources)."""
    total = 0
    for container in (spec or {}).get("containers") or []:
        res = container.get("resources") or {}
        value = (res.get("requests") or {}).get("nvidia.com/gpu") or (res.get("limits") or {}).get("nvidia.com/gpu")
        total += int(value or 0)
    return total


@kopf.on.event(GROUP, VERSION, PLURAL)
def llmdeployment_event(body: kopf.Body, type: str | None, memo: kopf.Memo, **kwargs: Any) -> None:
    ctl = _ctl(memo)
    ctl.node_index = kwargs["gpu_nodes"]  # the index above, injected by kopf under its function's name
    ctl.pod_index = kwargs["gpu_pods"]
    ctl.observe(dict(body), deleted=type == "DELETED")


def _naming(bodies: Mapping[tuple[str, str], Mapping[str, Any]], kind: str, namespace: str, name: str
           ) -> list[tuple[str, str]]:
    """The LLMDeployments among ``bodies`` whose spec names the ``kind`` object ``namespace/name``."""
    if kind != "HTTPRoute":
        return []
    keys = []
    for key, body in list(bodies.items()):
        canary = ((body.get("spec") or {}).get("rollout") or {}).get("canary") or {}
        route = ((canary.get("trafficRouting") or {}).get("gatewayAPI") or {}).get("httpRoute")
        if key[0] == namespace and route == name:
            keys.append(key)
    return keys


def _owner_key(meta: Any) -> tuple[str, str] | None:
    for ref in meta.get("ownerReferences") or []:
        if ref.get("kind") == "LLMDeployment" and ref.get("controller"):
            return meta.get("namespace") or "", ref["name"]
    return None


@kopf.on.event("", "v1", "nodes")
def node_event(body: kopf.Body, type: str | None, memo: kopf.Memo, **_: Any) -> None:
    ctl = _ctl(memo)
    facts = None if type == "DELETED" else _node_facts(body.metadata.labels, body.status, body.metadata.name or "",
                                                       body.spec)
    if ctl.set_node(body.metadata.name or "", facts) and type is not None:
        ctl.enqueue_all()  # a GPU product appeared or vanished: Degraded objects may recover


@kopf.on.event("apiextensions.k8s.io", "v1", "customresourcedefinitions")
def crd_event(body: kopf.Body, type: str | None, memo: kopf.Memo, **_: Any) -> None:
    optional = registry.OPTIONAL.get(body.metadata.name or "")
    if optional is None:
        return
    kind = optional.kind
    ctl = _ctl(memo)
    caches = memo.get("caches")
    if caches is not None:
        if type == "DELETED":
            caches.stop_kind(kind)
        else:
            caches.start_kind(optional)
    kinds = ctl.monitor_kinds - {kind} if type == "DELETED" else ctl.monitor_kinds | {kind}
    if kinds != ctl.monitor_kinds:
        ctl.monitor_kinds = kinds
        if type is not None:
            ctl.enqueue_all()
