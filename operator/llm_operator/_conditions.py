"""metav1.Condition bookkeeping: lastTransitionTime moves only when status flips."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

READY = "Ready"
PROGRESSING = "Progressing"
DEGRADED = "Degraded"
ORDER = (READY, PROGRESSING, DEGRADED)


@dataclass(frozen=True)
class Condition:
    type: str
    status: bool
    reason: str
    message: str

    @property
    def status_text(self) -> str:
        return "True" if self.status else "False"


def now() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def merge(
    old: Sequence[Mapping[str, Any]] | None,
    new: Iterable[Condition],
    *,
    generation: int,
    timestamp: str | None = None,
) -> list[dict[str, Any]]:
    """The condition list to store: new values, keeping lastTransitionTime where the status did not change."""
    previous = {c.get("type"): c for c in old or []}
    merged: list[dict[str, Any]] = []
    for cond in sorted(new, key=lambda c: ORDER.index(c.type) if c.type in ORDER else len(ORDER)):
        before = previous.get(cond.type)
        unchanged = before is not None and before.get("status") == cond.status_text
        merged.append(
            {
                "type": cond.type,
                "status": cond.status_text,
                "observedGeneration": generation,
                "lastTransitionTime": (
                    before.get("lastTransitionTime") if unchanged and before else (timestamp or now())
                ),
                "reason": cond.reason,
                "message": cond.message,
            }
        )
    return merged


def find(conditions: Sequence[Mapping[str, Any]] | None, type_: str) -> Mapping[str, Any] | None:
    return next((c for c in conditions or [] if c.get("type") == type_), None)
