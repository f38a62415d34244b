"""Canary traffic through a user's Gateway API HTTPRoute: a Service per revision and the route's weights.

With `spec.rollout.canary.trafficRouting.gatewayAPI.httpRoute: ROUTE` the operator creates `NAME-stable` and
`NAME-canary` (each selecting the pods of one revision) and sets, in every rule of ROUTE, the weights of the
backendRefs that name them: stable `100 - w`, canary `w`. Nothing else in the route is the operator's.

Why the apply body holds every rule: in the HTTPRoute CRD (sigs.k8s.io/gateway-api v1.7.0, v1 and v1beta1)
`spec.rules`, `spec.rules[].backendRefs`, `matches` and `filters` are all `x-kubernetes-list-type: atomic`.
Server-side apply cannot address one item of an atomic list, let alone one field of it: an apply that sets a
weight must send the whole `spec.rules` list, and the manager that applies it owns the whole list. So the body
is the route's current rules, copied verbatim with only the weights changed, plus the route's
`metadata.resourceVersion` as a precondition: a user's edit between our read and our write makes the apply
fail with 409 instead of being overwritten by our copy of the old rules.

The operator never adds a backendRef: a rule that names one of the two Services but not the other is reported
by `route_problem` (as Argo Rollouts' Gateway API plugin refuses, "backendRef was not found in httpRoute"). A
backendRef the operator inserted would vanish whenever the user re-applies their manifest, and the user would
not see in Git what carries their traffic.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from typing import Any, Literal

from .. import api
from ._meta import COMPONENT_SERVER, OPENAI_PORT, REVISION_LABEL, _metadata, selector_labels
from .workload import build_service

Role = Literal["stable", "canary"]
ROLES: tuple[Role, ...] = ("stable", "canary")
HTTPROUTE_API_VERSION = "gateway.networking.k8s.io/v1"
ROUTE_FIELD = "spec.rollout.canary.trafficRouting.gatewayAPI.httpRoute"
DEFAULT_WEIGHT = 1  # the CRD's default for a backendRef without `weight`


def revision_service_name(llmd: api.LLMDeployment, role: Role) -> str:
    """`NAME-stable` or `NAME-canary` (metadata.name is at most 52 characters, so this fits a DNS label)."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, not {role!r}")
    return f"{llmd.name}-{role}"


def build_revision_service(
    llmd: api.LLMDeployment, *, namespace: str, owner_uid: str | None, role: Role, revision: str
) -> dict[str, Any]:
    """The Service of one revision for an HTTPRoute backendRef: the main Service's ports and labels, a selector
    narrowed to ``revision``, always ClusterIP (a Gateway reaches it in-cluster; a LoadBalancer per revision
    would buy a cloud load balancer per step), without the main Service's annotations (they configure that
    load balancer)."""
    if not revision:
        raise ValueError("a revision Service needs the revision it selects")
    main = build_service(llmd, namespace=namespace, owner_uid=owner_uid)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(
            llmd,
            name=revision_service_name(llmd, role),
            namespace=namespace,
            owner_uid=owner_uid,
            component=COMPONENT_SERVER,
            revision=revision,
        ),
        "spec": {
            "type": "ClusterIP",
            "selector": {**selector_labels(llmd), REVISION_LABEL: revision},
            "ports": copy.deepcopy(main["spec"]["ports"]),
        },
    }


# ------------------------------------------------------------------------------------------ HTTPRoute


def _route_namespace(route: Mapping[str, Any]) -> str | None:
    return (route.get("metadata") or {}).get("namespace")


def _names_service(ref: Mapping[str, Any], service: str, namespace: str | None) -> bool:
    """Does this backendRef point at the core Service ``service`` in the route's own namespace?"""
    return (
        ref.get("name") == service
        and (ref.get("group") or "") == ""
        and (ref.get("kind") or "Service") == "Service"
        and ref.get("namespace") in (None, "", namespace)
    )


def _refs(route: Mapping[str, Any]) -> Iterator[tuple[int, list[Mapping[str, Any]]]]:
    for index, rule in enumerate((route.get("spec") or {}).get("rules") or []):
        yield index, list(rule.get("backendRefs") or [])


def route_weights(
    route: Mapping[str, Any], *, stable_service: str, canary_service: str, canary_weight: int
) -> dict[str, Any] | None:
    """The server-side apply body that sets the weights of the backendRefs naming the two Services, in every
    rule, to ``100 - canary_weight`` and ``canary_weight``; None when they already are (or no rule names them:
    `route_problem` says so).

    The body is `apiVersion`, `kind`, `metadata.{name, namespace, resourceVersion}` and the complete
    `spec.rules`, every rule and backendRef copied as read, because the rule lists are atomic (module doc).
    Apply it with the operator's field manager and force: the user's manager owned `spec.rules` until then.
    """
    if isinstance(canary_weight, bool) or not isinstance(canary_weight, int) or not 0 <= canary_weight <= 100:
        raise ValueError(f"canary_weight must be an integer from 0 to 100, not {canary_weight!r}")
    if stable_service == canary_service:
        raise ValueError(f"stable and canary Services must differ (both {stable_service!r})")
    want = {stable_service: 100 - canary_weight, canary_service: canary_weight}
    namespace = _route_namespace(route)
    rules = copy.deepcopy(list((route.get("spec") or {}).get("rules") or []))
    changed = False
    for rule in rules:
        for ref in rule.get("backendRefs") or []:
            for service, weight in want.items():
                if _names_service(ref, service, namespace):
                    if ref.get("weight", DEFAULT_WEIGHT) != weight:
                        changed = True
                    ref["weight"] = weight
    if not changed:
        return None
    meta = route.get("metadata") or {}
    metadata: dict[str, Any] = {"name": meta["name"]}
    if namespace:
        metadata["namespace"] = namespace
    if meta.get("resourceVersion"):
        metadata["resourceVersion"] = meta["resourceVersion"]
    return {
        "apiVersion": route.get("apiVersion") or HTTPROUTE_API_VERSION,
        "kind": "HTTPRoute",
        "metadata": metadata,
        "spec": {"rules": rules},
    }


def _ref_hint(service: str, port: Any, weight: int) -> str:
    return f"{{name: {service}, port: {port}, weight: {weight}}}"


def route_problem(
    route: Mapping[str, Any] | None, *, route_name: str, stable_service: str, canary_service: str
) -> str | None:
    """Why the operator cannot set weights on the route, naming the field and the fix; None when it can.

    Problems: the route does not exist; no rule has a backendRef to either Service; a rule names one of them
    but not the other (the operator does not add backendRefs, module doc).
    """
    both = (
        f"backendRefs: [{_ref_hint(stable_service, OPENAI_PORT, 100)}, {_ref_hint(canary_service, OPENAI_PORT, 0)}]"
    )
    if route is None:
        return (
            f"{ROUTE_FIELD}: HTTPRoute {route_name!r} does not exist in this namespace; create it with a rule whose "
            f"{both}, or remove trafficRouting to split traffic by replica count"
        )
    namespace = _route_namespace(route)
    services = (stable_service, canary_service)
    half: list[str] = []
    any_ref = False
    for index, refs in _refs(route):
        named = {s: [r for r in refs if _names_service(r, s, namespace)] for s in services}
        if not any(named.values()):
            continue
        any_ref = True
        for have, lack in ((stable_service, canary_service), (canary_service, stable_service)):
            if named[have] and not named[lack]:
                port = named[have][0].get("port", OPENAI_PORT)
                half.append(
                    f"HTTPRoute {route_name!r} spec.rules[{index}].backendRefs names Service {have} but not "
                    f"{lack}: add {_ref_hint(lack, port, 0)} next to it (the operator sets weights, it never adds "
                    f"backendRefs)"
                )
    if not any_ref:
        return (
            f"{ROUTE_FIELD}: HTTPRoute {route_name!r} has no rule with a backendRef to Service {stable_service} or "
            f"{canary_service}; add to the rule that serves this model {both}"
        )
    if half:
        more = f" ({len(half) - 1} more rule(s) alike)" if len(half) > 1 else ""
        return f"{ROUTE_FIELD}: {half[0]}{more}"
    return None
