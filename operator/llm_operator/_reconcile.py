"""spec → pure builders → apply → observe → status, for one LLMDeployment.

Level-based and idempotent: it reads what exists, writes only what differs, and reports what it saw.
Called from the kopf handlers (handlers.py) with the CR body; safe to call any number of times.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from llm_operator import FIELD_MANAGER, builders
from llm_operator import _conditions as conds
from llm_operator import _kinds as registry
from llm_operator._conditions import Condition
from llm_operator._diff import contains
from llm_operator._k8s import KubeAPI, KubeError
from llm_operator._pod_health import pod_problems
from llm_operator._scaling import SCALING_ACTIVE, SCALING_LIMITED, PendingGPUs, explain
from llm_operator.api import API_VERSION, GPU_PRODUCT_LABEL, KIND, LLMDeployment
from llm_operator.builders import (
    build_children,
    build_revision_service,
    revision_hash,
    revision_service_name,
    route_problem,
    route_weights,
)
from llm_operator.builders.render import format_validation_error
from llm_operator.rollout import RevisionState, canary, plan, requests
from llm_operator.rollout import analysis as rollout_analysis
from llm_operator.rollout.replicas import NodeGPUs, free_slots

log = logging.getLogger("llm_operator.reconcile")

LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
AUTOSCALER_KINDS = frozenset({"HorizontalPodAutoscaler", "ScaledObject"})
# Clusters with node auto-provisioning (Karpenter, cluster-autoscaler) create GPU nodes on demand;
# there a missing product is not an error.
SKIP_NODE_CHECK_ENV = "LLMOPS_SKIP_NODE_CHECK"

_locks: dict[tuple[str, str], threading.Lock] = {}
_locks_guard = threading.Lock()


def lock_for(namespace: str, name: str) -> threading.Lock:
    """One reconcile at a time per LLMDeployment: its own handlers and its children's events race otherwise."""
    with _locks_guard:
        return _locks.setdefault((namespace, name), threading.Lock())


@dataclass(frozen=True)
class NodeFacts:
    """What the cluster's nodes offer, from the kopf node index: GPU products and MIG resources."""

    gpu_products: Mapping[str, int] = field(default_factory=dict)  # product label -> allocatable GPUs
    extended: Mapping[str, int] = field(default_factory=dict)  # e.g. nvidia.com/mig-1g.10gb -> count
    gpu_nodes: tuple[NodeGPUs, ...] = ()
    gpu_used: Mapping[str, int] = field(default_factory=dict)  # node -> GPUs its pods hold
    unbound: Mapping[tuple[str, str], int] = field(default_factory=dict)  # (namespace, LLMD) -> GPUs pending
    ours: Mapping[tuple[str, str], int] = field(default_factory=dict)  # (namespace, LLMD) -> GPU pods seen

    @classmethod
    def from_nodes(cls, nodes: Any, *, pods: Any = ()) -> NodeFacts:
        products: dict[str, int] = {}
        extended: dict[str, int] = {}
        gpu_nodes = []
        for node in nodes:
            alloc = node.get("allocatable") or {}
            product = node.get("product")
            gpus = int(alloc.get("nvidia.com/gpu", "0") or 0)
            if product:
                products[product] = products.get(product, 0) + gpus
            if gpus:
                gpu_nodes.append(NodeGPUs(node.get("name", ""), product, gpus, not node.get("unschedulable")))
            for key, value in alloc.items():
                if key.startswith("nvidia.com/mig-"):
                    extended[key] = extended.get(key, 0) + int(value or 0)
        used: dict[str, int] = {}
        unbound: dict[tuple[str, str], int] = {}
        ours: dict[tuple[str, str], int] = {}
        for node, pod in pods:
            owner = (str(pod.get("namespace")), str(pod["instance"])) if pod.get("instance") else None
            if owner is not None:
                ours[owner] = ours.get(owner, 0) + 1
            if node:
                used[node] = used.get(node, 0) + int(pod.get("gpus", 0))
            elif owner is not None:
                unbound[owner] = unbound.get(owner, 0) + int(pod.get("gpus", 0))
        return cls(products, extended, tuple(gpu_nodes), used, unbound, ours)

    def room(self, llmd: LLMDeployment, namespace: str) -> tuple[int, str]:
        """Free slots for one more pod of this model (replicas.free_slots), from the node and pod indexes."""
        gpu = llmd.spec.resources.gpu
        if gpu is None:
            return free_slots((), {}, product=None, gpus_per_pod=0)
        return free_slots(self.gpu_nodes, self.gpu_used, product=gpu.product, gpus_per_pod=gpu.count,
                          unbound_gpus=self.unbound.get((namespace, llmd.name), 0))


@dataclass
class Outcome:
    ready: bool
    reason: str
    requeue_after: float | None = None
    writes: int = 0
    body: Mapping[str, Any] | None = None  # the object as our status write returned it


@dataclass
class Problem:
    reason: str
    message: str


def _event(kube: KubeAPI, body: Mapping[str, Any], *, type_: str, reason: str, message: str) -> None:
    meta = body["metadata"]
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    try:
        kube.create(
            {
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {"name": f"{meta['name']}.{uuid.uuid4().hex[:12]}", "namespace": meta["namespace"]},
                "involvedObject": {
                    "apiVersion": API_VERSION,
                    "kind": KIND,
                    "name": meta["name"],
                    "namespace": meta["namespace"],
                    "uid": meta.get("uid"),
                    "resourceVersion": meta.get("resourceVersion"),
                },
                "type": type_,
                "reason": reason,
                "message": message[:1024],
                "source": {"component": FIELD_MANAGER},
                "reportingComponent": FIELD_MANAGER,
                "reportingInstance": os.environ.get("HOSTNAME", "local"),
                "firstTimestamp": stamp,
                "lastTimestamp": stamp,
                "count": 1,
            }
        )
    except KubeError as exc:  # an Event is best effort; never fail a reconcile over one
        log.warning("could not record event %s: %s", reason, exc)


def _preflight(kube: KubeAPI, llmd: LLMDeployment, namespace: str, nodes: NodeFacts | None) -> list[Problem]:
    """Valid specs that cannot be served: report them instead of creating pods that never start."""
    problems: list[Problem] = []
    spec = llmd.spec
    if spec.model.secret_ref is not None:
        secret = spec.model.secret_ref.name
        if kube.get(api_version="v1", kind="Secret", namespace=namespace, name=secret) is None:
            problems.append(
                Problem(
                    "SecretNotFound",
                    f"spec.model.secretRef names Secret {secret!r}, which does not exist in namespace "
                    f"{namespace!r}; create it (e.g. kubectl create secret generic {secret} "
                    f"--from-literal=HF_TOKEN=...) or remove spec.model.secretRef",
                )
            )
    pvc = spec.model.pvc_source()
    if pvc is not None:
        claim = pvc.claim_name
        if kube.get(api_version="v1", kind="PersistentVolumeClaim", namespace=namespace, name=claim) is None:
            problems.append(
                Problem(
                    "PVCNotFound",
                    f"the model PersistentVolumeClaim {claim!r} does not exist in namespace {namespace!r}; "
                    "create it and copy the weights onto it, or fix spec.model",
                )
            )
    if nodes is not None and os.environ.get(SKIP_NODE_CHECK_ENV) != "1":
        gpu, mig = spec.resources.gpu, spec.resources.mig
        product = (gpu.product if gpu else None) or (mig.product if mig else None)
        if product and product not in nodes.gpu_products:
            known = ", ".join(sorted(nodes.gpu_products)) or "none"
            problems.append(
                Problem(
                    "GPUProductUnavailable",
                    f"no node has {GPU_PRODUCT_LABEL}={product} (products in this cluster: {known}); "
                    "change spec.resources.gpu.product or add such nodes",
                )
            )
        if mig is not None:
            resource = f"nvidia.com/mig-{mig.profile}"
            if nodes.extended.get(resource, 0) < mig.count:
                problems.append(
                    Problem(
                        "MIGProfileUnavailable",
                        f"no node offers {mig.count} x {resource}; enable that MIG profile on a node "
                        "(GPU operator mig.strategy=mixed) or change spec.resources.mig.profile",
                    )
                )
    return problems


def _revision_of(deploy: Mapping[str, Any]) -> str:
    return str((deploy["metadata"].get("labels") or {}).get(builders.REVISION_LABEL, ""))


def _state(deploy: Mapping[str, Any], terminating: Mapping[str, int] | None) -> RevisionState:
    status = deploy.get("status") or {}
    if "terminatingReplicas" in status:  # beta and on by default since Kubernetes 1.35 (KEP-3973)
        gone = int(status["terminatingReplicas"] or 0)
    else:
        gone = (terminating or {}).get(_revision_of(deploy), 0)
    return RevisionState(
        name=deploy["metadata"]["name"],
        revision=_revision_of(deploy),
        spec_replicas=int(deploy["spec"].get("replicas", 1)),
        replicas=int(status.get("replicas", 0)),
        ready_replicas=int(status.get("readyReplicas", 0)),
        created=str(deploy["metadata"].get("creationTimestamp", "")),
        terminating=gone,
    )


def _terminating_pods(kube: KubeAPI, namespace: str, selector: str, deployments: Sequence[Mapping[str, Any]]
                      ) -> dict[str, int] | None:
    """Terminating pods per revision, read from the pods themselves, only where Deployment status lacks
    `terminatingReplicas` (older API servers): they keep their GPUs for their whole grace period."""
    if all("terminatingReplicas" in (d.get("status") or {}) for d in deployments):
        return None
    counts: dict[str, int] = {}
    for pod in kube.list(api_version="v1", kind="Pod", namespace=namespace, label_selector=selector):
        if pod["metadata"].get("deletionTimestamp"):
            revision = _revision_of(pod)
            counts[revision] = counts.get(revision, 0) + 1
    return counts


def _unappliable(exc: KubeError) -> bool:
    """A server-side apply the API server can never take, although it answers 500: the object does not fit its
    type's schema (unknown fields under the spec's pass-through `affinity` or `topologySpreadConstraints`, which
    the CRD keeps but a Deployment has no place for). Retrying would loop forever without a status."""
    text = str(exc)
    return exc.status == 500 and "failed to create typed patch object" in text and "not declared in schema" in text


def _key(obj: Mapping[str, Any]) -> tuple[str, str, str]:
    return obj["apiVersion"], obj["kind"], obj["metadata"]["name"]


def _pod_trouble(kube: KubeAPI, namespace: str, deploy: Mapping[str, Any]) -> tuple[list[str], list[Problem]]:
    """Why pods of this Deployment are not ready: the scheduler's message for each Pending pod it could not
    place, and the failing states the kubelet reports (image pulls, crashes, a model that does not load)."""
    labels = deploy["spec"]["selector"].get("matchLabels") or {}
    selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
    messages = []
    pods = [p for p in kube.list(api_version="v1", kind="Pod", namespace=namespace, label_selector=selector)
            if not p["metadata"].get("deletionTimestamp")]
    for pod in pods:
        for cond in (pod.get("status") or {}).get("conditions") or []:
            if cond.get("type") == "PodScheduled" and cond.get("reason") == "Unschedulable":
                messages.append(str(cond.get("message") or "unschedulable"))
    return messages, [Problem(p.reason, p.message) for p in pod_problems(pods)]


def _gpus_per_pod(llmd: LLMDeployment) -> int:
    resources = llmd.spec.resources
    return resources.gpu.count if resources.gpu else resources.mig.count if resources.mig else 0


def reconcile(
    kube: KubeAPI,
    body: Mapping[str, Any],
    *,
    nodes: NodeFacts | None = None,
    monitor_kinds: frozenset[str] = frozenset(),
    emit: Callable[..., None] | None = None,
) -> Outcome:
    meta = body["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    generation = int(meta.get("generation") or 0)
    old_status = dict(body.get("status") or {})
    writes_before = kube.writes
    record = emit or (lambda **kw: _event(kube, body, **kw))

    try:
        llmd = LLMDeployment.model_validate(
            {"apiVersion": API_VERSION, "kind": KIND, "metadata": dict(meta), "spec": body.get("spec") or {}}
        )
    except ValidationError as exc:
        # The CRD's schema and CEL rules should have caught this; an older CRD version may not have. Every
        # mistake is reported, as the API server does, so a user fixes them in one round, not one per apply.
        # pydantic's locations start at the root model's field (`spec`), so they are already full paths.
        problems = [Problem("InvalidSpec", "; ".join(format_validation_error(exc).splitlines()))]
        return _finish(kube, body, old_status, generation, problems=problems, observed=None, record=record,
                       writes_before=writes_before)

    problems = _preflight(kube, llmd, namespace, nodes)
    selector_labels = f"{LABEL_INSTANCE}={name},{LABEL_MANAGED_BY}={builders.MANAGER}"
    deployments = kube.list(api_version="apps/v1", kind="Deployment", namespace=namespace,
                            label_selector=selector_labels)
    # Only objects that this LLMDeployment controls: a same-named CR recreated later must not adopt them.
    deployments = [d for d in deployments if _owned_by(d, meta.get("uid"))]
    revision = revision_hash(llmd)
    current = next((d for d in deployments if _revision_of(d) == revision), None)
    old = [d for d in deployments if d is not current]

    if problems and current is None:
        # Nothing half-built: a revision that cannot run is not started. Older revisions keep serving.
        return _finish(kube, body, old_status, generation, problems=problems,
                       observed=_Observed(llmd, revision, current, old, None), record=record,
                       writes_before=writes_before)

    # A monitor is built only when the cluster serves the kind the spec asks for (Prometheus Operator CRDs).
    monitoring_crds = llmd.spec.monitoring.kind in monitor_kinds
    keda_installed = "ScaledObject" in monitor_kinds
    children = build_children(llmd, namespace=namespace, owner_uid=meta.get("uid"), monitoring_crds=monitoring_crds,
                              keda_crd=keda_installed)
    terminating = _terminating_pods(kube, namespace, selector_labels, deployments) if old else None
    room, room_reason = nodes.room(llmd, namespace) if nodes is not None else (0, "no node facts yet")
    # Free slots our own old pods gave back are how a swap proceeds; only room beyond the slots `replicas`
    # needs is a surge. So the planners get the room left once every one of our replicas has its slot.
    states = {d["metadata"]["name"]: _state(d, terminating) for d in deployments}
    held = sum(max(st.replicas + st.terminating, st.spec_replicas) for st in states.values())
    given_back = max(llmd.spec.replicas - held, 0)
    if room and given_back:
        room_reason += f"; {given_back} of them are the slots this model's own replicas gave back"
    room = max(room - given_back, 0)
    # Pods our Deployments are meant to have that the pod index does not show yet (a ReplicaSet that has not
    # created them, or an event still on its way) will take free slots too: without this, a swap on a full pool
    # saw the slot an old pod gave back as room and surged into it (a fast pass after the cached reads).
    if nodes is not None and _gpus_per_pod(llmd):
        unseen = max(held - nodes.ours.get((namespace, name), 0), 0)
        if room and unseen:
            room_reason += f"; {unseen} of our own pods are not bound yet and will take free slots"
        room = max(room - unseen, 0)
    # The mode in status is what the rollout does, not just what a pass sees: once surged pods have taken the
    # free GPUs the pool shows no room, yet the rollout is still surging while it holds more than `replicas`.
    surging = room > 0 or held > llmd.spec.replicas
    rollout_spec = llmd.spec.rollout
    decision: canary.Decision | None = None
    if rollout_spec is not None and rollout_spec.canary is not None:
        decision = _plan_canary(llmd, meta, namespace, revision, states, old_status,
                                room=room, room_reason=room_reason, surging=surging)
        current_replicas, scale, delete = decision.current_replicas, decision.replicas, decision.delete
        rollout_status = decision.status
        routing = rollout_spec.canary.traffic_routing
        if routing is not None and decision.stable is not None:
            children += [
                build_revision_service(llmd, namespace=namespace, owner_uid=meta.get("uid"), role="stable",
                                       revision=decision.stable),
                build_revision_service(llmd, namespace=namespace, owner_uid=meta.get("uid"), role="canary",
                                       revision=decision.canary_revision or decision.stable),
            ]
    else:
        rolling = plan(desired=llmd.spec.replicas, current=states[current["metadata"]["name"]] if current else None,
                       old=[states[d["metadata"]["name"]] for d in old], room=room)
        current_replicas, scale, delete = rolling.current_replicas, rolling.scale, rolling.delete
        # Old revisions exist for the whole rollout, even in passes that only wait for a pod to go.
        # A rollout ends when the new revision is all ready, not when the last old pod is gone; a scale-up
        # outside a rollout is not one.
        cur_ready = int(((current or {}).get("status") or {}).get("readyReplicas", 0))
        was_rolling = (old_status.get("rollout") or {}).get("phase") == "Progressing"
        rolling_now = bool(old) or (was_rolling and cur_ready < current_replicas)
        rollout_status = _rolling_status(revision, rolling_now, surging, room_reason)
    desired_keys = set()
    service: dict[str, Any] | None = None
    autoscaler: dict[str, Any] | None = None
    for child in children:
        desired_keys.add(_key(child))
        if child["kind"] == "Deployment":
            child["spec"]["replicas"] = current_replicas
            live = current
            if live is None:
                # `current` comes from the Deployments this object owns; one of the same name owned by another
                # uid (a deleted predecessor the garbage collector has not reached) must not be taken over.
                live = kube.get(api_version="apps/v1", kind="Deployment", namespace=namespace,
                                name=child["metadata"]["name"])
        else:
            if child["kind"] == "Service" and child["metadata"]["name"] == llmd.name:
                service = child
            live = kube.get(api_version=child["apiVersion"], kind=child["kind"], namespace=namespace,
                            name=child["metadata"]["name"])
        if live is not None and _foreign(live, meta.get("uid")):
            problems.append(_not_ours(kube, llmd, live))
            continue
        if child["kind"] in AUTOSCALER_KINDS:
            autoscaler = live
        if live is None or not contains(child, live):
            try:
                applied = kube.apply(child)
            except KubeError as exc:
                if exc.status in (400, 403, 422) or _unappliable(exc):
                    # Rejected for good (e.g. an invalid affinity passed through from the spec): report it.
                    problems.append(Problem("ApplyFailed", f"{child['kind']} {child['metadata']['name']} was "
                                            f"rejected by the API server: {exc}"))
                    continue
                raise
            if child["kind"] == "Deployment":
                current = applied
            elif child["kind"] in AUTOSCALER_KINDS:
                autoscaler = applied
    for old_name, replicas in scale.items():
        kube.patch(api_version="apps/v1", kind="Deployment", namespace=namespace, name=old_name,
                   body={"spec": {"replicas": replicas}}, subresource="scale")
    for old_name in delete:
        kube.delete(api_version="apps/v1", kind="Deployment", namespace=namespace, name=old_name)
    if decision is not None and rollout_spec is not None and rollout_spec.canary is not None \
            and rollout_spec.canary.traffic_routing is not None:
        problem = _route(kube, llmd, namespace, rollout_spec.canary.traffic_routing, decision)
        if problem is not None:
            problems.append(problem)
    old = [d for d in old if d["metadata"]["name"] not in delete]
    _prune(kube, namespace, meta.get("uid"), selector_labels, desired_keys,
           keep_revisions={_revision_of(d) for d in old}, monitor_kinds=monitor_kinds)

    pending: PendingGPUs | None = None
    if current is not None and problems == []:
        status = current.get("status") or {}
        # While our own pods are terminating they still hold GPUs that a Pending pod waits for: that is a
        # rollout step, not an unschedulable spec.
        draining = any(_state(d, terminating).terminating for d in [current, *old])
        if int(status.get("readyReplicas", 0)) < current_replicas and not draining:
            messages, failing = _pod_trouble(kube, namespace, current) if current_replicas else ([], [])
            problems.extend(failing)
            if messages:
                problems.append(Problem("Unschedulable", f"pods cannot be scheduled: {messages[0]}"))
                short = [m for m in messages if f"Insufficient {builders.GPU_RESOURCE}" in m or "nvidia.com/mig-" in m]
                if short:
                    pending = PendingGPUs(pods=len(short), gpus_per_pod=_gpus_per_pod(llmd), message=short[0])
    observed = _Observed(llmd, revision, current, old, service, autoscaler, pending, keda_installed,
                         rollout_status, decision)
    return _finish(kube, body, old_status, generation, problems=problems, observed=observed, record=record,
                   writes_before=writes_before)


def _plan_canary(
    llmd: LLMDeployment,
    meta: Mapping[str, Any],
    namespace: str,
    revision: str,
    deployments: Mapping[str, RevisionState],  # Deployment name -> its facts
    old_status: Mapping[str, Any],
    *,
    room: int,
    room_reason: str,
    surging: bool,
) -> canary.Decision:
    """The canary step machine, with a measurement from Prometheus when one is due (the only I/O here)."""
    assert llmd.spec.rollout is not None and llmd.spec.rollout.canary is not None
    spec = llmd.spec.rollout.canary
    states = {st.revision: st for st in deployments.values()}
    if revision not in states:  # the canary's Deployment is created by this pass
        states[revision] = RevisionState(name=builders.deployment_name(llmd, revision=revision), revision=revision,
                                         spec_replicas=0, replicas=0, ready_replicas=0, created="~")
    previous = dict(old_status.get("rollout") or {})
    annotations = meta.get("annotations") or {}
    now = dt.datetime.now(dt.UTC)
    inputs = canary.Inputs(canary=spec, total=llmd.spec.replicas, revision=revision, deployments=states,
                           previous=previous, now=now, room=room, room_reason=room_reason, surging=surging,
                           request=requests.pending(annotations, previous.get("lastRequest")),
                           user_paused=requests.user_paused(annotations))
    decision = canary.plan(inputs)
    analysis = spec.analysis
    if decision.measure and analysis is not None and decision.stable is not None:
        same = previous.get("canaryRevision") == revision and previous.get("stableRevision") == decision.stable
        last = previous.get("analysis") if same else None
        interval = rollout_analysis.parse_duration(analysis.interval)
        if rollout_analysis.due(last, interval_seconds=interval, now=now):
            inputs.measurement = rollout_analysis.measure(analysis, namespace=namespace, canary_revision=revision,
                                                          stable_revision=decision.stable)
            decision = canary.plan(inputs)
        decision.requeue_after = min(decision.requeue_after or interval, interval)
    return decision


def _rolling_status(revision: str, rolling: bool, surging: bool, room_reason: str) -> dict[str, Any]:
    status: dict[str, Any] = {"strategy": "RollingUpdate", "phase": "Progressing" if rolling else "Healthy",
                              "stableRevision": None if rolling else revision,
                              "message": f"rolling out revision {revision}" if rolling
                              else f"revision {revision} is stable"}
    if rolling:
        status.update(surge="Surge" if surging else "Swap", surgeReason=room_reason)
    return {k: v for k, v in status.items() if v is not None}


def _route(kube: KubeAPI, llmd: LLMDeployment, namespace: str, routing: Any, decision: canary.Decision
           ) -> Problem | None:
    """Set the user's HTTPRoute weights to the step's: only the weights, with our field manager."""
    name = routing.gateway_api.http_route
    stable_svc, canary_svc = revision_service_name(llmd, "stable"), revision_service_name(llmd, "canary")
    try:
        route = kube.get(api_version="gateway.networking.k8s.io/v1", kind="HTTPRoute", namespace=namespace,
                         name=name)
    except KubeError as exc:
        if exc.status != 404:
            raise
        route = None
    problem = route_problem(route, route_name=name, stable_service=stable_svc, canary_service=canary_svc)
    if problem is not None or route is None:
        return Problem("TrafficRoutingFailed", problem or f"HTTPRoute {name!r} not found")
    body = route_weights(route, stable_service=stable_svc, canary_service=canary_svc,
                         canary_weight=decision.weight or 0)
    if body is not None:
        try:
            kube.apply(body)
        except KubeError as exc:
            if exc.status != 409:
                raise
            # The body carries the resourceVersion we read: someone edited the route meanwhile. Their edit
            # stands; the next pass (a canary requeues within seconds) reads it and sets the weights again.
            log.info("HTTPRoute %s/%s changed while we set its weights; retrying next pass", namespace, name)
    return None


def _foreign(obj: Mapping[str, Any], uid: str | None) -> bool:
    """Controlled by someone else: applying over it would swap its controller for this object (adoption)."""
    refs = obj["metadata"].get("ownerReferences") or []
    return uid is not None and any(r.get("controller") and r.get("uid") != uid for r in refs)


def _not_ours(kube: KubeAPI, llmd: LLMDeployment, live: Mapping[str, Any]) -> Problem:
    """A same-named child of another controller. A deleted LLMDeployment of this name left it (the garbage
    collector lags): delete it, precondition on its uid, and build ours on a later pass; anything else is a
    conflict the user must resolve."""
    meta = live["metadata"]
    ref = next(r for r in meta.get("ownerReferences") or [] if r.get("controller"))
    what = f"{live['kind']} {meta['name']}"
    if ref.get("kind") == KIND and ref.get("name") == llmd.name:
        kube.delete(api_version=live["apiVersion"], kind=live["kind"], namespace=meta.get("namespace"),
                    name=meta["name"], uid=meta.get("uid"))
        return Problem("StaleChildren", f"{what} belongs to a deleted LLMDeployment of the same name (uid "
                                        f"{ref.get('uid')}); deleting it before creating this object's own")
    return Problem("NameConflict", f"{what} already exists and is controlled by {ref.get('kind')} "
                                   f"{ref.get('name')}; rename this LLMDeployment or remove that object")


def _owned_by(obj: Mapping[str, Any], uid: str | None) -> bool:
    refs = obj["metadata"].get("ownerReferences") or []
    return uid is None or any(r.get("uid") == uid and r.get("controller") for r in refs)


def _prune(
    kube: KubeAPI,
    namespace: str,
    uid: str | None,
    selector: str,
    desired: set[tuple[str, str, str]],
    *,
    keep_revisions: set[str],
    monitor_kinds: frozenset[str],
) -> None:
    """Delete owned children that the spec no longer asks for (e.g. monitoring turned off)."""
    kinds = [(k.api_version, k.kind) for k in registry.PRUNABLE if k.crd is None or k.kind in monitor_kinds]
    for api_version, kind in kinds:
        try:
            items = kube.list(api_version=api_version, kind=kind, namespace=namespace, label_selector=selector)
        except KubeError as exc:
            if exc.status == 404:  # the monitor CRD went away since we last looked
                continue
            raise
        for obj in items:
            if _key(obj) in desired or not _owned_by(obj, uid):
                continue
            if _revision_of(obj) and _revision_of(obj) in keep_revisions:
                continue  # still used by an old revision that is being replaced
            kube.delete(api_version=api_version, kind=kind, namespace=namespace, name=obj["metadata"]["name"])


@dataclass
class _Observed:
    llmd: LLMDeployment
    revision: str
    current: Mapping[str, Any] | None
    old: Sequence[Mapping[str, Any]]
    service: Mapping[str, Any] | None
    autoscaler: Mapping[str, Any] | None = None
    pending: PendingGPUs | None = None
    keda_installed: bool = False
    rollout: Mapping[str, Any] | None = None  # status.rollout
    canary: canary.Decision | None = None


def _finish(
    kube: KubeAPI,
    body: Mapping[str, Any],
    old_status: Mapping[str, Any],
    generation: int,
    *,
    problems: list[Problem],
    observed: _Observed | None,
    record: Callable[..., None],
    writes_before: int,
) -> Outcome:
    meta = body["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    status: dict[str, Any] = {"observedGeneration": generation}
    desired_replicas = int((body.get("spec") or {}).get("replicas", 1))
    ready = updated = total = 0
    if observed is not None:
        llmd = observed.llmd
        desired_replicas = llmd.spec.replicas
        if observed.current is not None:
            cur_status = observed.current.get("status") or {}
            ready = int(cur_status.get("readyReplicas", 0))
            updated = int(cur_status.get("updatedReplicas", 0))
            total = int(cur_status.get("replicas", 0))
        # Old revisions still serve while they drain, but Ready speaks about the current revision; during a
        # canary both revisions serve by design, so Ready counts both.
        total += sum(int((dep.get("status") or {}).get("replicas", 0)) for dep in observed.old)
        if observed.canary is not None:
            ready += sum(int((dep.get("status") or {}).get("readyReplicas", 0)) for dep in observed.old)
        status["revision"] = observed.revision
        status["selector"] = builders.selector_string(llmd)
        status["gpu"] = builders.gpu_summary(llmd)
        if observed.service is not None:
            status["endpoints"] = builders.endpoints(llmd, namespace=namespace)
    status.update(replicas=total, readyReplicas=ready, updatedReplicas=updated,
                  readyText=builders.ready_text(ready_replicas=ready, desired_replicas=desired_replicas))

    rolling = observed is not None and (bool(observed.old) or updated < desired_replicas)
    decision = observed.canary if observed is not None else None
    if decision is not None and decision.degraded is not None:
        problems = [Problem(*decision.degraded), *problems]
    if problems:
        first = problems[0]
        degraded = Condition(conds.DEGRADED, True, first.reason, "; ".join(p.message for p in problems))
    else:
        degraded = Condition(conds.DEGRADED, False, "AsExpected", "no problems found")
    if problems and ready == 0:
        ready_cond = Condition(conds.READY, False, problems[0].reason, problems[0].message)
    elif ready >= desired_replicas:
        reason = "ScaledToZero" if desired_replicas == 0 else "AllReplicasReady"
        ready_cond = Condition(conds.READY, True, reason, f"{ready}/{desired_replicas} replicas ready")
    else:
        ready_cond = Condition(conds.READY, False, "ReplicasNotReady",
                               f"{ready}/{desired_replicas} replicas ready (model loading or pods pending)")
    rollout_state = dict(observed.rollout or {}) if observed is not None else {}
    if decision is not None and rollout_state.get("phase") in ("Progressing", "Paused", "Degraded"):
        phase = rollout_state["phase"]
        reason = {"Progressing": "CanaryInProgress", "Paused": "CanaryPaused", "Degraded": "RolloutAborted"}[phase]
        progressing = Condition(conds.PROGRESSING, phase != "Degraded", reason, str(rollout_state.get("message")))
        rolling = phase != "Degraded" or bool(observed and observed.old)
    elif rolling:
        progressing = Condition(conds.PROGRESSING, True, "RolloutInProgress",
                                f"revision {status.get('revision')}: {updated}/{desired_replicas} updated, "
                                f"{len(observed.old) if observed else 0} older revision(s) draining")
    else:
        progressing = Condition(conds.PROGRESSING, False, "RolloutComplete",
                                f"revision {status.get('revision', '?')} is fully rolled out")
    new_conditions = [ready_cond, progressing, degraded]
    scale_events: list[tuple[str, str, str]] = []
    if observed is not None and observed.llmd.spec.autoscaling is not None:
        explained = explain(spec=observed.llmd.spec.autoscaling, namespace=namespace, autoscaler=observed.autoscaler,
                            previous=old_status.get("autoscaling"), keda_installed=observed.keda_installed,
                            pending=observed.pending)
        status["autoscaling"] = explained.status
        new_conditions += explained.conditions
        scale_events = explained.events
    if rollout_state:
        status["rollout"] = rollout_state
    if decision is not None:
        scale_events = [*decision.events, *scale_events]
    status["conditions"] = conds.merge(old_status.get("conditions"), new_conditions, generation=generation)

    comparable = {k: v for k, v in status.items() if k != "conditions"}
    same_conditions = all(
        (before := conds.find(old_status.get("conditions"), c.type)) is not None
        and before.get("status") == c.status_text
        and before.get("reason") == c.reason
        and before.get("message") == c.message
        and before.get("observedGeneration") == generation
        for c in new_conditions
    )
    updated_body = None
    # status.rollout loses keys as a rollout moves on (a pause ends), which `contains` cannot see.
    same_rollout = old_status.get("rollout") == status.get("rollout")
    if not (contains(comparable, old_status) and same_conditions and same_rollout):
        updated_body = kube.apply(
            {"apiVersion": API_VERSION, "kind": KIND, "metadata": {"name": name, "namespace": namespace},
             "status": status},
            subresource="status",
        )
        _transitions(old_status, new_conditions, record)
        for type_, reason, message in scale_events:
            record(type_=type_, reason=reason, message=message)
    return Outcome(
        ready=ready_cond.status,
        reason=ready_cond.reason,
        requeue_after=_requeue(decision, rolling, bool(problems and not ready_cond.status)),
        writes=kube.writes - writes_before,
        body=updated_body,
    )


def _requeue(decision: canary.Decision | None, rolling: bool, failing: bool) -> float | None:
    # Pauses and analysis intervals end with time, not with an event, so a canary asks to be woken.
    delays = [d for d in (decision.requeue_after if decision else None, 10.0 if rolling or failing else None)
              if d is not None]
    return min(delays) if delays else None


def _transitions(old_status: Mapping[str, Any], new: list[Condition], record: Callable[..., None]) -> None:
    """Events for changes a person cares about: becoming ready/unready, degraded and recovered."""
    for cond in new:
        before = conds.find(old_status.get("conditions"), cond.type)
        changed = before is None or before.get("status") != cond.status_text or before.get("reason") != cond.reason
        if not changed:
            continue
        if cond.type == conds.DEGRADED and cond.status:
            record(type_="Warning", reason=cond.reason, message=cond.message)
        elif cond.type == conds.DEGRADED and before is not None and before.get("status") == "True":
            record(type_="Normal", reason="Recovered", message=f"recovered from {before.get('reason')}")
        elif cond.type == conds.READY and cond.status:
            record(type_="Normal", reason="Ready", message=cond.message)
        elif cond.type == conds.PROGRESSING and cond.status:
            record(type_="Normal", reason="RolloutStarted", message=cond.message)
        elif cond.type == SCALING_LIMITED and cond.status:
            record(type_="Warning" if cond.reason == "InsufficientGPU" else "Normal", reason=cond.reason,
                   message=cond.message)
        elif cond.type == SCALING_ACTIVE and not cond.status and cond.reason != "AutoscalerStarting":
            record(type_="Warning", reason=cond.reason, message=cond.message)
