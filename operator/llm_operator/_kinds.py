"""The one registry of the kinds the operator touches: children it owns and the objects it only reads.

The API client (paths), the pruner, the child watches, the monitor-CRD watch and the RBAC rules all read this
table, so a new child kind is one line here instead of an edit in six places.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from llm_operator.api import API_VERSION, KIND, PLURAL


@dataclass(frozen=True)
class Kind:
    api_version: str
    kind: str
    plural: str
    verbs: tuple[str, ...]  # what the operator does with it; the RBAC rules are derived from this
    namespaced: bool = True
    child: bool = False  # created by the operator with an owner reference
    prunable: bool = False  # deleted when the spec no longer asks for it (Deployments retire by rollout)
    watched: bool = False  # its events re-queue the owning LLMDeployment (or, not a child, those naming it)
    cached: bool = False  # not a child, yet read through an informer (one without a label selector)
    crd: str | None = None  # served only while this CRD exists (e.g. the Prometheus Operator's)
    subresources: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (subresource, verbs)
    # Granted by a Role in the operator's own namespace only (the leader Lease), never by the ClusterRole: a
    # cluster-wide `update leases` could take over other controllers' elections (kube-system's, nodes').
    own_namespace: bool = False

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    @property
    def version(self) -> str:
        return self.api_version.rpartition("/")[2]


_OWN = ("get", "list", "watch", "create", "patch", "delete")

KINDS: tuple[Kind, ...] = (
    Kind(API_VERSION, KIND, PLURAL, ("get", "list", "watch"), subresources=(("status", ("get", "patch")),)),
    Kind("v1", "ConfigMap", "configmaps", _OWN, child=True, prunable=True, watched=True),
    Kind("apps/v1", "Deployment", "deployments", _OWN, child=True, watched=True,
         subresources=(("scale", ("patch",)),)),
    Kind("v1", "Service", "services", _OWN, child=True, prunable=True, watched=True),
    Kind("policy/v1", "PodDisruptionBudget", "poddisruptionbudgets", _OWN, child=True, prunable=True, watched=True),
    Kind("monitoring.coreos.com/v1", "PodMonitor", "podmonitors", _OWN, child=True, prunable=True,
         crd="podmonitors.monitoring.coreos.com"),
    Kind("monitoring.coreos.com/v1", "ServiceMonitor", "servicemonitors", _OWN, child=True, prunable=True,
         crd="servicemonitors.monitoring.coreos.com"),
    Kind("autoscaling/v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers", _OWN, child=True, prunable=True,
         watched=True),  # its status (metrics, decisions) feeds status.autoscaling
    Kind("keda.sh/v1alpha1", "ScaledObject", "scaledobjects", _OWN, child=True, prunable=True,
         crd="scaledobjects.keda.sh"),
    # Read only: what the preflight checks and status need, nothing more.
    Kind("v1", "Secret", "secrets", ("get",)),  # existence by the name the spec gives; never listed
    Kind("v1", "PersistentVolumeClaim", "persistentvolumeclaims", ("get",)),
    # Unschedulable messages, terminating pods on old API servers, and the GPUs pods hold (surge room)
    Kind("v1", "Pod", "pods", ("list", "watch")),
    Kind("v1", "Node", "nodes", ("list", "watch"), namespaced=False),  # GPU products and MIG resources
    Kind("v1", "Namespace", "namespaces", ("list", "watch"), namespaced=False),  # kopf's namespace scanning
    Kind("v1", "Event", "events", ("create",)),
    Kind("apiextensions.k8s.io/v1", "CustomResourceDefinition", "customresourcedefinitions", ("list", "watch"),
         namespaced=False),  # which optional child kinds (monitors) the cluster serves
    # The user's route of a canary with trafficRouting.gatewayAPI: read, and its backendRef weights set by
    # server-side apply (RBAC's `patch`; never `create`: a missing route is reported, not made). Cached and
    # watched while its CRD is served, so a steady-state pass reads nothing and a user's edit of the weights
    # re-queues the LLMDeployments that name the route.
    Kind("gateway.networking.k8s.io/v1", "HTTPRoute", "httproutes", ("get", "list", "watch", "patch"),
         watched=True, cached=True, crd="httproutes.gateway.networking.k8s.io"),
    # Leader election (llmctl run --leader-elect): one Lease, read, created once, renewed by update (PUT).
    Kind("coordination.k8s.io/v1", "Lease", "leases", ("get", "create", "update"), own_namespace=True),
    Kind("v1", "ServiceAccount", "serviceaccounts", ()),  # tools only (bench/): the operator never touches it
)

BY_KIND: dict[str, Kind] = {k.kind: k for k in KINDS}
CHILDREN: tuple[Kind, ...] = tuple(k for k in KINDS if k.child)
PRUNABLE: tuple[Kind, ...] = tuple(k for k in CHILDREN if k.prunable)
WATCHED: tuple[Kind, ...] = tuple(k for k in CHILDREN if k.watched)
CACHED: tuple[Kind, ...] = tuple(k for k in KINDS if k.child or k.cached)  # an informer each
OPTIONAL: dict[str, Kind] = {k.crd: k for k in CACHED if k.crd}  # CRD name -> kind


def kind(name: str) -> Kind:
    try:
        return BY_KIND[name]
    except KeyError:
        raise ValueError(f"kind {name!r} is not in the operator's kind registry (llm_operator._kinds)") from None


def own_namespace_rules() -> list[dict[str, list[str]]]:
    """The Role rules the operator needs in its own namespace (leader election's Lease)."""
    return cluster_role_rules(k for k in KINDS if k.own_namespace)


def cluster_role_rules(kinds: Iterable[Kind] | None = None) -> list[dict[str, list[str]]]:
    """The ClusterRole rules the operator needs: one rule per resource or subresource, verbs as registered
    (by default every kind but those granted in its own namespace)."""
    rules = []
    for k in (kinds if kinds is not None else (k for k in KINDS if not k.own_namespace)):
        if not k.verbs:
            continue
        rules.append({"apiGroups": [k.group], "resources": [k.plural], "verbs": list(k.verbs)})
        for sub, verbs in k.subresources:
            rules.append({"apiGroups": [k.group], "resources": [f"{k.plural}/{sub}"], "verbs": list(verbs)})
    return rules

