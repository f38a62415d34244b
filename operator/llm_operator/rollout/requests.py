"""Manual rollout control through annotations: what `kubectl llm` writes and what the operator reads.

Pure: no I/O. The operator never writes spec, and a person never writes status (the operator applies its whole
status each pass), so a request travels in two annotations of the LLMDeployment (docs/kubectl-llm.md):

- `serving.llmops.dev/rollout-request: <action>/<id>`, a one-shot request. The operator carries out a value
  that differs from `status.rollout.lastRequest`, then records it there (`Request.record`), so a request runs
  exactly once, survives an operator restart, and repeating an action takes a new id.
- `serving.llmops.dev/rollout-paused: "true"`, which holds the rollout until it is removed.

Argo CD compares only the fields a manifest in Git sets, so neither annotation shows up as drift; Argo CD
resource actions will write the same annotations.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal

from llm_operator import GROUP

REQUEST_ANNOTATION: Final = f"{GROUP}/rollout-request"
PAUSED_ANNOTATION: Final = f"{GROUP}/rollout-paused"

Action = Literal["promote", "promote-full", "abort", "retry"]
ACTIONS: Final[tuple[Action, ...]] = ("promote", "promote-full", "abort", "retry")
"""One-shot requests, carried out once each."""
VERBS: Final = (*ACTIONS, "pause", "resume")
"""Everything `patch_for` builds a patch for: the requests plus the pause annotation's two verbs."""
INVALID: Final = "invalid"
"""`Request.action` of an annotation value that cannot be carried out."""

MAX_VALUE_LENGTH: Final = 128
"""`status.rollout.lastRequest` holds at most this many characters, so no longer value is valid."""
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:+-]*")
_ID_TIME = "%Y%m%dT%H%M%SZ"


@dataclass(frozen=True)
class Request:
    """A request found in the annotations that the operator has not carried out yet."""

    action: str
    """One of ACTIONS, or INVALID when the value cannot be parsed."""
    value: str
    """The annotation's value, exactly as written (quote it in Events)."""
    id: str | None = None
    """The part after the slash; None when invalid."""
    reason: str = ""
    """Why the value is invalid, for an Event; empty when valid."""

    @property
    def valid(self) -> bool:
        return self.action != INVALID

    @property
    def record(self) -> str:
        """What the operator stores in `status.rollout.lastRequest` once it handled this request (carried it
        out, or reported it as invalid). The value itself, except that a value too long for the status field is
        stored as a short digest of it, so a long bad value is reported once and not on every pass."""
        return record_of(self.value)


def record_of(value: str) -> str:
    """The form of an annotation value that `status.rollout.lastRequest` holds (see `Request.record`)."""
    if len(value) <= MAX_VALUE_LENGTH:
        return value
    return f"{INVALID}/sha256-{hashlib.sha256(value.encode()).hexdigest()[:32]}"


def new_request(action: str, *, now: datetime) -> str:
    """A fresh annotation value for ACTION: `promote/20261123T073000Z-1a2b3c` (UTC time, 6 random hex digits).

    A naive `now` is taken as UTC."""
    if action not in ACTIONS:
        raise ValueError(f"unknown rollout request {action!r}; expected one of {', '.join(ACTIONS)}")
    when = now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)
    return f"{action}/{when.strftime(_ID_TIME)}-{secrets.token_hex(3)}"


def parse(value: str) -> Request:
    """The request an annotation value asks for; a Request with action INVALID (and a reason) when it asks for
    nothing the operator can do. Never raises."""
    if len(value) > MAX_VALUE_LENGTH:
        return Request(INVALID, value, reason=f"longer than {MAX_VALUE_LENGTH} characters")
    action, slash, id_ = value.partition("/")
    if not slash:
        return Request(INVALID, value, reason="expected <action>/<id>, e.g. promote/20261123T073000Z-1a2b3c")
    if action not in ACTIONS:
        return Request(INVALID, value, reason=f"unknown action {action!r}; expected one of {', '.join(ACTIONS)}")
    if not _ID.fullmatch(id_):
        return Request(INVALID, value, reason=f"the id after {action}/ must be letters, digits and . _ : + - "
                       "(starting with a letter or digit)")
    return Request(action, value, id=id_)


def pending(annotations: Mapping[str, str] | None, last_request: str | None) -> Request | None:
    """The request the operator should carry out now: the request annotation's value, unless it is absent,
    empty, or already recorded in `status.rollout.lastRequest` (`last_request`). A malformed value comes back as a
    Request with action INVALID, to be reported once and then recorded like any other."""
    value = (annotations or {}).get(REQUEST_ANNOTATION)
    if not value or not value.strip():
        return None
    if last_request is not None and record_of(value) == last_request:
        return None
    return parse(value)


def user_paused(annotations: Mapping[str, str] | None) -> bool:
    """Whether a person holds the rollout with `serving.llmops.dev/rollout-paused: "true"` (any case). Other
    values, such as "false", do not pause."""
    return str((annotations or {}).get(PAUSED_ANNOTATION, "")).strip().lower() == "true"


def patch_for(action: str, *, now: datetime) -> dict[str, Any]:
    """The metadata merge patch (RFC 7386) that `kubectl llm ACTION` sends to the LLMDeployment.

    - promote, promote-full: set the request and remove the pause annotation (a promote also ends a user pause);
    - abort, retry: set the request;
    - pause: set the pause annotation; resume: remove it (None deletes a key in a merge patch)."""
    annotations: dict[str, str | None]
    if action in ("promote", "promote-full"):
        annotations = {REQUEST_ANNOTATION: new_request(action, now=now), PAUSED_ANNOTATION: None}
    elif action in ACTIONS:
        annotations = {REQUEST_ANNOTATION: new_request(action, now=now)}
    elif action == "pause":
        annotations = {PAUSED_ANNOTATION: "true"}
    elif action == "resume":
        annotations = {PAUSED_ANNOTATION: None}
    else:
        raise ValueError(f"unknown rollout verb {action!r}; expected one of {', '.join(VERBS)}")
    return {"metadata": {"annotations": annotations}}


__all__ = [
    "ACTIONS",
    "INVALID",
    "MAX_VALUE_LENGTH",
    "PAUSED_ANNOTATION",
    "REQUEST_ANNOTATION",
    "VERBS",
    "Action",
    "Request",
    "new_request",
    "parse",
    "patch_for",
    "pending",
    "record_of",
    "user_paused",
]
