"""Pure replica math shared by the canary planner: weight → replicas, free GPU slots, and a step between two
replica splits that never deadlocks a full GPU pool.

Argo Rollouts keeps the same split in `utils/replicaset/canary.go` (`approximateWeightedCanaryStableReplicaCounts`);
the rounding below follows it for a pool without room to surge (its `maxSurge: 0`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from llm_operator.rollout.rolling import MAX_UNAVAILABLE, RevisionState


def split(total: int, weight: int, *, routed: bool, room: bool) -> tuple[int, int]:
    """(canary, stable) replicas for a traffic weight over `total` replicas.

    Without a traffic router the split *is* the weight, so it is the closest replica ratio; with one, the
    canary gets enough pods to carry its weight (ceil). Either way a weight of 1-99 never leaves the canary
    without a pod (Argo does the same for 2+ replicas) and never takes the last stable pod, except for a single
    replica on a full pool, where canary and stable cannot both run and the canary takes the one slot.
    """
    if total <= 0 or weight <= 0:
        return 0, max(total, 0)
    if weight >= 100:
        return total, 0
    if total == 1:
        return (1, 1) if room else (1, 0)
    exact = total * weight / 100
    if routed:
        canary = math.ceil(exact)
    else:
        lo, hi = math.floor(exact), math.ceil(exact)
        tied = exact - lo == 0.5
        candidates = [hi] if hi < total else []
        if not tied and lo != 0:
            candidates.append(lo)
        canary = min(candidates or [hi], key=lambda c: abs(100 * c / total - weight))
    canary = min(max(canary, 1), total - 1)
    return canary, total - canary


@dataclass(frozen=True)
class NodeGPUs:
    name: str
    product: str | None
    allocatable: int
    schedulable: bool = True


def free_slots(
    nodes: Iterable[NodeGPUs],
    used: Mapping[str, int],
    *,
    product: str | None,
    gpus_per_pod: int,
    unbound_gpus: int = 0,
) -> tuple[int, str]:
    """Pods of `gpus_per_pod` that fit in the free GPUs of the nodes this model can use, and why.

    A pod needs all its GPUs on one node, so each node's free GPUs are divided separately. GPUs that our own
    pods wait for (Pending, not bound yet) are taken off first, or every pass would count the same room again.
    """
    if gpus_per_pod <= 0:
        return 0, "the model requests no whole GPUs: replacing one pod at a time"
    frees = []
    for node in nodes:
        if not node.schedulable or node.allocatable <= 0 or (product and node.product != product):
            continue
        frees.append(max(node.allocatable - used.get(node.name, 0), 0))
    total_free = sum(frees)
    slots = sum(f // gpus_per_pod for f in frees) - math.ceil(unbound_gpus / gpus_per_pod)
    slots = max(slots, 0)
    where = f"nodes with {product}" if product else "GPU nodes"
    if slots:
        return slots, f"{total_free} GPUs free on {where}: room for {slots} more pod(s) of {gpus_per_pod} GPUs"
    return 0, f"{total_free} GPUs free on {where}, a pod needs {gpus_per_pod} on one node: the pool is full"


@dataclass
class Step:
    replicas: dict[str, int] = field(default_factory=dict)  # Deployment name -> spec.replicas
    delete: list[str] = field(default_factory=list)


def _occupied(r: RevisionState) -> int:
    # A pod that exists or terminates holds its GPUs, and so may one the ReplicaSet is creating that status
    # does not show yet: the spec before this pass counts too.
    return max(r.replicas + r.terminating, r.spec_replicas)


def step(
    *,
    total: int,
    targets: Mapping[str, int],
    states: Sequence[RevisionState],
    room: int,
) -> Step:
    """One move from the observed replicas toward `targets` (Deployment name -> replicas; absent = 0).

    Revisions above target shrink, unready pods first, while what stays ready covers `total - 1`. Revisions
    below target grow into slots the others gave back
    plus `room` free slots in the pool. When every growing revision got its whole target this pass (the pool
    had room), shrinking waits until what stays ready covers `total`: a surge keeps full capacity.
    A revision at 0 replicas with no pods left is deleted.
    """
    result = Step()
    spec = {r.name: r.spec_replicas for r in states}
    by_name = {r.name: r for r in states}

    # Grow first: how much each growing revision may have depends on the slots the others hold before this
    # pass's cuts, because cut pods keep their GPUs until they are gone. `room` is the free slots beyond those
    # `total` replicas need (the caller takes off the slots our own pods gave back: `total - others` has them).
    budget = room
    grew_fully = True
    occupied_all = sum(_occupied(r) for r in states)
    for r in states:
        want = targets.get(r.name, 0)
        if want <= r.spec_replicas:
            continue
        mine = _occupied(r)
        within_total = max(total - (occupied_all - mine), 0)
        new = min(want, max(r.spec_replicas, within_total, mine + budget))
        budget -= max(new - mine, 0)
        budget = max(budget, 0)
        spec[r.name] = new
        grew_fully = grew_fully and new >= want

    floor = total if grew_fully and room > 0 else total - MAX_UNAVAILABLE

    def kept_ready(name: str) -> int:
        r = by_name[name]
        return min(r.ready_replicas, spec[name])

    def staying_ready() -> int:
        return sum(kept_ready(n) for n in spec)

    shrinking = sorted((r for r in states if spec[r.name] > targets.get(r.name, 0)),
                       key=lambda r: (r.name in targets, r.created, r.name))  # revisions going away first
    for r in shrinking:
        while spec[r.name] > targets.get(r.name, 0):
            before = staying_ready()
            spec[r.name] -= 1
            after = staying_ready()
            if after < floor and after < before:  # cutting an unready pod is free
                spec[r.name] += 1
                break
    for r in states:
        if spec[r.name] == 0 and r.name not in targets and r.replicas + r.terminating == 0:
            result.delete.append(r.name)
        elif spec[r.name] != r.spec_replicas or r.name in targets:
            result.replicas[r.name] = spec[r.name]
    return result
