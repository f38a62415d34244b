"""Surge-free revision replacement that keeps at most one replica unavailable (maxSurge 0, maxUnavailable 1).

Invariants, for a fixed `desired`, whatever the cluster's timing:
- **Availability.** Ready pods across all revisions never fall below `desired - 1` because of the plan: an old
  pod is cut only while the pods that stay (old ones kept, plus ready new ones) cover `desired - 1`.
- **No surge.** The new revision only grows into GPU slots that old pods have really given back. A terminating
  pod still holds its GPUs for its whole grace period (minutes for a model server that drains its requests), so
  it counts as occupying its slot until it is gone. Otherwise the new pod would sit Pending on a full pool.

Pure: observed Deployment facts in, target replicas and deletions out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

MAX_UNAVAILABLE = 1


@dataclass(frozen=True)
class RevisionState:
    name: str
    revision: str
    spec_replicas: int
    replicas: int  # pods that exist and are not terminating (Deployment status.replicas)
    ready_replicas: int
    created: str  # creationTimestamp, to scale the oldest revision down first
    terminating: int = 0  # pods being deleted that still hold their GPUs (status.terminatingReplicas)


@dataclass
class Plan:
    current_replicas: int
    scale: dict[str, int] = field(default_factory=dict)  # old revision name -> new spec.replicas
    delete: list[str] = field(default_factory=list)  # old revision Deployments to remove

    @property
    def rolling(self) -> bool:
        return bool(self.scale) or bool(self.delete)


def _kept_ready(r: RevisionState, spec: int) -> int:
    """Ready pods of an old revision left after scaling it to `spec`.

    The ReplicaSet controller deletes not-ready pods before ready ones, so cutting removes the unready first.
    Ready pods beyond the spec are already on their way out (a cut we made earlier that status has not caught
    up with), so they are never counted as staying.
    """
    return min(r.ready_replicas, spec)


def plan(*, desired: int, current: RevisionState | None, old: Sequence[RevisionState], room: int = 0) -> Plan:
    """`room`: free GPU slots in the pool beyond the slots `desired` replicas need. With room the new revision
    surges into them at once and old pods stay until new ones are ready; without, one old pod goes per new one
    (a swap)."""
    old_sorted = sorted(old, key=lambda r: (r.created, r.name))
    remaining = [r for r in old_sorted if r.spec_replicas > 0 or r.replicas > 0 or r.terminating > 0]
    result = Plan(current_replicas=desired, delete=[r.name for r in old_sorted if r not in remaining])
    if not remaining:
        return result
    cur_ready = current.ready_replicas if current else 0
    cur_spec = current.spec_replicas if current else 0
    new_spec = {r.name: r.spec_replicas for r in remaining}

    # 1. Old revisions alone never hold more than is desired at all (a scale-down during a rollout).
    excess = sum(new_spec.values()) - desired
    for r in remaining:
        take = min(new_spec[r.name], max(excess, 0))
        new_spec[r.name] -= take
        excess -= take

    # 2. The new revision grows only into slots that old pods have given back. A pod that exists or is still
    # terminating holds its GPUs; so may a pod the ReplicaSet created that status does not show yet, which is
    # why the spec as it was before this pass counts too (its cut pods go away only after this pass).
    # Pods the new revision was already given hold their slots, so keeping its spec never surges.
    occupied = sum(max(r.replicas + r.terminating, r.spec_replicas) for r in remaining)
    result.current_replicas = max(min(cur_spec, desired), desired - occupied, 0)
    if room > 0:
        # `room` is free slots beyond those `desired` replicas need: surge into them now.
        mine = max((current.replicas + current.terminating) if current else 0, cur_spec)
        result.current_replicas = max(result.current_replicas, min(desired, mine + room))

    # 3. Cut further old pods, oldest revision first, only while what stays ready still covers desired - 1;
    # or desired itself when the new revision could take all its pods in free GPUs (a surge keeps capacity).
    floor = desired if result.current_replicas >= desired else desired - MAX_UNAVAILABLE

    def staying_ready() -> int:
        return cur_ready + sum(_kept_ready(r, new_spec[r.name]) for r in remaining)

    # A pod that is not ready serves nobody, so cutting it is free even when readiness is already short.
    for r in remaining:
        while new_spec[r.name] > 0:
            before = staying_ready()
            new_spec[r.name] -= 1
            after = staying_ready()
            if after < floor and after < before:
                new_spec[r.name] += 1
                break
    for r in remaining:
        if new_spec[r.name] != r.spec_replicas:
            result.scale[r.name] = new_spec[r.name]

    return result
