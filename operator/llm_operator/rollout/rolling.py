"""Replica plan across revision Deployments: surge-free replacement so a full GPU pool never deadlocks.

A new revision gets a pod only after an old one gave its GPUs back (maxSurge 0, maxUnavailable 1).
Pure: observed Deployment facts in, target replicas and deletions out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class RevisionState:
    name: str
    revision: str
    spec_replicas: int
    replicas: int  # pods that exist (status.replicas)
    ready_replicas: int
    created: str  # creationTimestamp, to scale the oldest revision down first


@dataclass
class Plan:
    current_replicas: int
    scale: dict[str, int] = field(default_factory=dict)  # old revision name -> new spec.replicas
    delete: list[str] = field(default_factory=list)  # old revision Deployments to remove

    @property
    def rolling(self) -> bool:
        return bool(self.scale) or bool(self.delete)


def plan(*, desired: int, current: RevisionState | None, old: Sequence[RevisionState]) -> Plan:
    old_sorted = sorted(old, key=lambda r: (r.created, r.name))
    remaining = [r for r in old_sorted if r.spec_replicas > 0 or r.replicas > 0]
    result = Plan(current_replicas=desired, delete=[r.name for r in old_sorted if r not in remaining])
    if not remaining:
        return result
    cur_spec = current.spec_replicas if current else 0
    cur_ready = current.ready_replicas if current else 0
    old_spec = {r.name: r.spec_replicas for r in remaining}
    total_old = sum(old_spec.values())
    # Trim old revisions beyond what is desired at all, plus one more pod once every pod the new
    # revision was given is ready (maxUnavailable 1). Oldest revisions go first.
    cut = max(total_old - desired, 1 if cur_ready >= cur_spec else 0)
    for r in remaining:
        take = min(old_spec[r.name], cut)
        old_spec[r.name] -= take
        cut -= take
    for r in remaining:
        if old_spec[r.name] != r.spec_replicas:
            result.scale[r.name] = old_spec[r.name]
    # The new revision grows only into GPUs that old pods have actually given back (maxSurge 0).
    live_old_pods = max(sum(r.replicas for r in remaining), sum(old_spec.values()))
    result.current_replicas = max(0, desired - live_old_pods)
    return result
