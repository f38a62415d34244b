"""Does the live object already hold what we would apply? Deciding this locally is what makes a
steady-state resync cost zero write requests."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

_SUFFIXES: dict[str, int | Decimal] = {
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
    "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"),
    "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
}


def _quantity(value: str) -> Decimal | None:
    """Parse a Kubernetes quantity ("1500m", "8Gi", "2"); None if it is not one."""
    for suffix in sorted(_SUFFIXES, key=len, reverse=True):
        if value.endswith(suffix):
            number, scale = value[: -len(suffix)], Decimal(_SUFFIXES[suffix])
            break
    else:
        number, scale = value, Decimal(1)
    try:
        return Decimal(number) * scale
    except InvalidOperation:
        return None


# Where the API server canonicalises quantities in the objects the builders make: container and PVC
# `resources.limits/requests` ("1000m" -> "1", GPU count 1 -> "1") and the shared-memory emptyDir's sizeLimit
# ("1024Mi" -> "1Gi"). Everywhere else a string is compared as a string: '1.0' and '1' are
# different env values, labels and ConfigMap data. Int-or-string fields (maxUnavailable, maxSurge, targetPort,
# probe ports) keep the type they were sent with, and validation rejects a numeric string there, so they
# need no special case.
_QUANTITY_MAPS = frozenset({"limits", "requests"})


def _is_quantity_path(path: tuple[str, ...]) -> bool:
    if len(path) >= 3 and path[-3] == "resources" and path[-2] in _QUANTITY_MAPS:
        return True
    return path[-2:] == ("emptyDir", "sizeLimit")


def _scalar_equal(desired: Any, actual: Any, path: tuple[str, ...]) -> bool:
    if isinstance(desired, bool) or isinstance(actual, bool):
        return desired is actual  # True == 1 in Python, but not to the API server
    if desired == actual:
        return True
    if _is_quantity_path(path) and isinstance(desired, (str, int)) and isinstance(actual, (str, int)):
        a, b = _quantity(str(desired)), _quantity(str(actual))
        return a is not None and a == b
    return False


def contains(desired: Any, actual: Any) -> bool:
    """True when every field in ``desired`` is present with an equal value in ``actual``.

    Extra fields in ``actual`` (server defaults, other managers' fields) are fine; lists must match
    element by element because every list we own is atomic or keyed in a fixed order.
    """
    return _contains(desired, actual, ())


def _contains(desired: Any, actual: Any, path: tuple[str, ...]) -> bool:
    # `path` holds the map keys from the root (list positions are left out): enough to tell quantity fields.
    if isinstance(desired, dict):
        if not isinstance(actual, dict):
            return False
        return all(k in actual and _contains(v, actual[k], (*path, k)) for k, v in desired.items() if v is not None)
    if isinstance(desired, list):
        if not isinstance(actual, list):
            return False
        key = _merge_key(desired)
        if key is not None:
            # A keyed list (containers, ports, env, volumes...): server-side apply merges entries by key and
            # leaves other managers' entries alone, so only ours must be present and equal.
            by_key = {item.get(key): item for item in actual if isinstance(item, dict)}
            return all(d[key] in by_key and _contains(d, by_key[d[key]], path) for d in desired)
        if len(desired) != len(actual):
            return False  # atomic list: ours replaces the whole list on apply
        return all(_contains(d, a, path) for d, a in zip(desired, actual, strict=True))
    return _scalar_equal(desired, actual, path)


# Merge keys of the keyed (x-kubernetes-list-type: map) lists in the objects we build. Tolerations,
# args and topology spread constraints are atomic lists and are compared whole.
_MERGE_KEYS = ("name", "containerPort", "port", "mountPath", "devicePath")


def _merge_key(items: list[Any]) -> str | None:
    if not items or not all(isinstance(i, dict) for i in items):
        return None
    for key in _MERGE_KEYS:
        if all(key in i for i in items):
            return key
    return None
