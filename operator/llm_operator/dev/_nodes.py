"""Fake node manifests from a node-profile file (pure functions, no cluster)."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

ROLES = ("gpu", "spot", "cpu")
ZONES = ("local-a", "local-b")


class NodeProfileError(ValueError):
    """A node-profile file is malformed; the message names the pool and field."""


def load_profile(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise NodeProfileError(f"cannot read node profile {path}: {exc}") from exc
    _validate(data, source=str(path))
    return dict(data)


def _validate(data: Any, *, source: str) -> None:
    if not isinstance(data, Mapping) or not isinstance(data.get("pools"), list):
        raise NodeProfileError(f"{source}: expected a mapping with a 'pools' list")
    names: set[str] = set()
    for i, pool in enumerate(data["pools"]):
        where = f"{source}: pools[{i}]"
        if not isinstance(pool, Mapping):
            raise NodeProfileError(f"{where}: expected a mapping")
        name = pool.get("name")
        if not isinstance(name, str) or not name or name in names:
            raise NodeProfileError(f"{where}.name: must be a unique non-empty string, got {name!r}")
        names.add(name)
        if pool.get("role") not in ROLES:
            raise NodeProfileError(f"{where}.role: must be one of {', '.join(ROLES)}, got {pool.get('role')!r}")
        count = pool.get("count", 1)
        if not isinstance(count, int) or count < 0:
            raise NodeProfileError(f"{where}.count: must be an integer >= 0, got {count!r}")
        if not isinstance(pool.get("allocatable", {}), Mapping):
            raise NodeProfileError(f"{where}.allocatable: must be a mapping of resource name to quantity")


def _resize(pools: list[dict[str, Any]], role: str, total: int | None) -> None:
    """Give the role's pools ``total`` nodes; later pools keep their size, the first absorbs the rest."""
    if total is None:
        return
    if total < 0:
        raise NodeProfileError(f"--{role}-nodes must be >= 0, got {total}")
    mine = [p for p in pools if p["role"] == role]
    if not mine:
        if total:
            raise NodeProfileError(f"the node profile has no '{role}' pool to put {total} node(s) in")
        return
    remaining = total
    for pool in reversed(mine[1:]):
        pool["count"] = min(pool.get("count", 1), max(remaining - 1, 0))
        remaining -= pool["count"]
    mine[0]["count"] = remaining


def build_nodes(
    profile: Mapping[str, Any],
    *,
    gpu_nodes: int | None = None,
    spot_nodes: int | None = None,
    cpu_nodes: int | None = None,
) -> list[dict[str, Any]]:
    """Node manifests for kwok to manage. Status is part of the body because no kubelet reports it."""
    _validate(profile, source="profile")
    pools = [dict(copy.deepcopy(p)) for p in profile["pools"]]
    _resize(pools, "gpu", gpu_nodes)
    _resize(pools, "spot", spot_nodes)
    _resize(pools, "cpu", cpu_nodes)
    nodes: list[dict[str, Any]] = []
    for pool in pools:
        for i in range(pool.get("count", 1)):
            name = f"{pool['name']}-{i}"
            allocatable = {k: str(v) for k, v in (pool.get("allocatable") or {}).items()}
            labels = {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "type": "kwok",
                "llmops.dev/node-pool": pool["name"],
                "topology.kubernetes.io/zone": ZONES[i % len(ZONES)],
                **{k: str(v) for k, v in (pool.get("labels") or {}).items()},
            }
            nodes.append(
                {
                    "apiVersion": "v1",
                    "kind": "Node",
                    "metadata": {
                        "name": name,
                        "labels": labels,
                        "annotations": {
                            "kwok.x-k8s.io/node": "fake",
                            "node.alpha.kubernetes.io/ttl": "0",
                        },
                    },
                    "spec": {"taints": list(pool.get("taints") or [])},
                    "status": {
                        "allocatable": allocatable,
                        "capacity": dict(allocatable),
                        "nodeInfo": {
                            "architecture": "amd64",
                            "operatingSystem": "linux",
                            "kubeletVersion": "fake",
                            "kubeProxyVersion": "fake",
                        },
                        "phase": "Running",
                    },
                }
            )
    return nodes
