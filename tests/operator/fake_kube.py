"""An in-memory stand-in for the API server that satisfies `llm_operator._k8s.KubeAPI` and records every write.

It keeps objects as they were applied (server-side apply merges maps; lists are replaced), so whatever a
reconcile reads back is exactly what it wrote: a second reconcile of an unchanged object must write nothing.
"""

from __future__ import annotations

import copy
import itertools
from typing import Any

Key = tuple[str, str, str, str]  # apiVersion, kind, namespace, name


def _merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _matches(obj: dict[str, Any], selector: str | None) -> bool:
    labels = obj["metadata"].get("labels") or {}
    for term in (selector or "").split(","):
        if term:
            key, _, value = term.partition("=")
            if labels.get(key) != value:
                return False
    return True


class FakeKube:
    def __init__(self) -> None:
        self.objects: dict[Key, dict[str, Any]] = {}
        self.log: list[tuple[str, str, str]] = []  # (verb, kind, name) of every write
        self._rv = itertools.count(100)

    @property
    def writes(self) -> int:
        return len(self.log)

    def put(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Store an object as the cluster would have it (no write recorded): test set-up and cluster actions."""
        meta = obj["metadata"]
        meta.setdefault("uid", f"uid-{meta['name']}")
        meta.setdefault("creationTimestamp", f"2026-11-23T00:00:{next(self._rv) % 60:02d}Z")
        meta["resourceVersion"] = str(next(self._rv))
        self.objects[(obj["apiVersion"], obj["kind"], meta.get("namespace") or "", meta["name"])] = obj
        return copy.deepcopy(obj)

    def find(self, kind: str) -> list[dict[str, Any]]:
        return [copy.deepcopy(o) for k, o in sorted(self.objects.items()) if k[1] == kind]

    # ------------------------------------------------------------------ KubeAPI

    def get(self, *, api_version: str, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        obj = self.objects.get((api_version, kind, namespace or "", name))
        return copy.deepcopy(obj) if obj is not None else None

    def list(
        self, *, api_version: str, kind: str, namespace: str | None, label_selector: str | None = None
    ) -> list[dict[str, Any]]:
        return [copy.deepcopy(o) for (av, k, ns, _), o in sorted(self.objects.items())
                if av == api_version and k == kind and ns == (namespace or "") and _matches(o, label_selector)]

    def apply(self, obj: dict[str, Any], *, subresource: str | None = None, force: bool = True) -> dict[str, Any]:
        meta = obj["metadata"]
        key = (obj["apiVersion"], obj["kind"], meta.get("namespace") or "", meta["name"])
        self.log.append(("apply" + (f"/{subresource}" if subresource else ""), obj["kind"], meta["name"]))
        current = self.objects.get(key)
        if subresource == "status":
            assert current is not None, "status of an object that does not exist"
            merged = copy.deepcopy(current)
            merged["status"] = copy.deepcopy(obj["status"])  # status is owned whole by the operator
        else:
            merged = _merge(current or {}, obj)
        return self.put(merged)

    def patch(
        self, *, api_version: str, kind: str, namespace: str | None, name: str, body: dict[str, Any],
        subresource: str | None = None,
    ) -> dict[str, Any]:
        key = (api_version, kind, namespace or "", name)
        self.log.append(("patch" + (f"/{subresource}" if subresource else ""), kind, name))
        return self.put(_merge(self.objects[key], body))

    def delete(
        self, *, api_version: str, kind: str, namespace: str | None, name: str, uid: str | None = None
    ) -> bool:
        self.log.append(("delete", kind, name))
        key = (api_version, kind, namespace or "", name)
        if uid and (self.objects.get(key) or {}).get("metadata", {}).get("uid") != uid:
            return False
        return self.objects.pop(key, None) is not None

    def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        self.log.append(("create", obj["kind"], obj["metadata"]["name"]))
        return self.put(copy.deepcopy(obj))
