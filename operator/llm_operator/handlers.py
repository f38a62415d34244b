"""Every kopf handler of the operator, registered in one place. Each one only feeds the work queue.

Run with ``llmctl run`` or ``kopf run -m llm_operator.handlers``.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import kopf

from llm_operator import GROUP, PLURAL, VERSION
from llm_operator import _kinds as registry
from llm_operator._controller import Controller
from llm_operator._k8s import Kube, honour_current_kubeconfig
from llm_operator._reconcile import LABEL_INSTANCE, LABEL_MANAGED_BY
from llm_operator.api import GPU_PRODUCT_LABEL
from llm_operator.builders import MANAGER

CHILD_LABELS = {LABEL_MANAGED_BY: MANAGER}

# The running controller; tests and the metrics endpoint read it (e.g. request counters).
controller: Controller | None = None


def _ctl() -> Controller:
    if controller is None:
        raise kopf.TemporaryError("operator is starting", delay=1)
    return controller


@kopf.on.startup()
def startup(settings: kopf.OperatorSettings, logger: logging.Logger | logging.LoggerAdapter[Any], **_: Any) -> None:
    global controller
    # Our own Events carry reasons; kopf's log-to-Event posting would add a write per log line.
    settings.posting.enabled = False
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 310
    settings.watching.connect_timeout = 30
    settings.networking.request_timeout = 60
    controller = Controller(
        Kube(),
        workers=int(os.environ.get("LLMOPS_WORKERS", "8")),
        resync_seconds=float(os.environ.get("LLMOPS_RESYNC_SECONDS", "300")),
    )
    controller.start()
    logger.info("triton-llm-operator started (workers=%s)", os.environ.get("LLMOPS_WORKERS", "8"))


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    # kopf's own client-library login, but with $KUBECONFIG as it is now (in a pod: the service account).
    honour_current_kubeconfig()
    return kopf.login_via_client(**kwargs)


@kopf.on.cleanup()
def cleanup(**_: Any) -> None:
    global controller
    if controller is not None:
        controller.stop()
        controller = None


@kopf.on.probe(id="queue")
def probe(**_: Any) -> dict[str, Any]:
    ctl = _ctl()
    return {"llmdeployments": len(ctl.bodies), "idle": ctl.idle(), "api_requests": dict(ctl.kube.requests)}


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
def llmdeployment_event(body: kopf.Body, type: str | None, **kwargs: Any) -> None:
    ctl = _ctl()
    ctl.node_index = kwargs["gpu_nodes"]  # the index above, injected by kopf under its function's name
    ctl.pod_index = kwargs["gpu_pods"]
    ctl.observe(dict(body), deleted=type == "DELETED")


def _owner_key(body: kopf.Body) -> tuple[str, str] | None:
    for ref in body.metadata.get("ownerReferences") or []:
        if ref.get("kind") == "LLMDeployment" and ref.get("controller"):
            return body.metadata.namespace or "", ref["name"]
    return None


def _child_event(body: kopf.Body, **_: Any) -> None:
    key = _owner_key(body)
    if key is not None:
        _ctl().enqueue(key)


for _kind in registry.WATCHED:
    kopf.on.event(_kind.group, _kind.version, _kind.plural, labels=CHILD_LABELS, id=f"child-{_kind.plural}")(
        _child_event
    )


@kopf.on.event("", "v1", "nodes")
def node_event(body: kopf.Body, type: str | None, **_: Any) -> None:
    ctl = _ctl()
    facts = None if type == "DELETED" else _node_facts(body.metadata.labels, body.status, body.metadata.name or "",
                                                       body.spec)
    if ctl.set_node(body.metadata.name or "", facts) and type is not None:
        ctl.enqueue_all()  # a GPU product appeared or vanished: Degraded objects may recover


@kopf.on.event("apiextensions.k8s.io", "v1", "customresourcedefinitions")
def crd_event(body: kopf.Body, type: str | None, **_: Any) -> None:
    optional = registry.OPTIONAL.get(body.metadata.name or "")
    if optional is None:
        return
    kind = optional.kind
    ctl = _ctl()
    kinds = ctl.monitor_kinds - {kind} if type == "DELETED" else ctl.monitor_kinds | {kind}
    if kinds != ctl.monitor_kinds:
        ctl.monitor_kinds = kinds
        if type is not None:
            ctl.enqueue_all()
