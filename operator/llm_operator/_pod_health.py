"""Why a model pod does not become ready, read from its status, as a Degraded reason a user can act on.

Pure: a pod (as the API returns it) in, a `PodProblem` or None out. The reconciler asks only about pods of
the current revision while fewer of them are ready than desired, so a pod that is merely loading is not a
problem: only states the kubelet reports as failing are.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

_PULL = {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull", "RegistryUnavailable"}
_CONFIG = {"CreateContainerConfigError", "CreateContainerError", "RunContainerError"}
# Longest part of a container's last words (its termination message, the log tail with
# FallbackToLogsOnError) carried into a condition message.
_TAIL = 300


@dataclass(frozen=True)
class PodProblem:
    reason: str
    message: str


def _last_words(status: Mapping[str, Any]) -> str:
    term = (status.get("lastState") or {}).get("terminated") or (status.get("state") or {}).get("terminated") or {}
    if not term:
        return ""
    text = f"exit code {term.get('exitCode')}"
    if term.get("reason"):
        text += f", {term['reason']}"
    message = str(term.get("message") or "").strip()
    if message:
        # The last line is where Triton and the runtime say why they stopped.
        lines = [ln.strip() for ln in message.splitlines() if ln.strip()]
        tail = lines[-1] if lines else message
        text += f": {tail[-_TAIL:]}"
    return text


def _container(pod_name: str, status: Mapping[str, Any], *, init: bool) -> PodProblem | None:
    name = status.get("name", "?")
    waiting = (status.get("state") or {}).get("waiting") or {}
    reason = str(waiting.get("reason") or "")
    detail = str(waiting.get("message") or "").strip()
    image = status.get("image") or ""
    if reason in _PULL:
        return PodProblem(
            "ImagePullFailed",
            f"pod {pod_name}: container {name} cannot pull image {image!r} ({reason}"
            + (f": {detail[-_TAIL:]}" if detail else "")
            + "); check spec.runtime.image (or the model's oci:// URI) and spec.runtime.imagePullSecrets",
        )
    if reason in _CONFIG:
        return PodProblem(
            "ContainerConfigError",
            f"pod {pod_name}: container {name} cannot start ({reason}"
            + (f": {detail[-_TAIL:]}" if detail else "")
            + "); a Secret or ConfigMap it needs may be missing",
        )
    restarts = int(status.get("restartCount") or 0)
    words = _last_words(status)
    if init and (reason == "CrashLoopBackOff" or (restarts and words)):
        return PodProblem(
            "ModelFetchFailed",
            f"pod {pod_name}: the model download (init container {name}) fails"
            + (f" ({words})" if words else "")
            + f", {restarts} restart(s); check spec.model.uri and spec.model.secretRef",
        )
    if init:
        return None
    never_started = status.get("started") is False or not status.get("ready")
    if reason == "CrashLoopBackOff" or (restarts and never_started and words):
        return PodProblem(
            "ModelLoadFailed" if name == "triton" else "ContainerCrashing",
            f"pod {pod_name}: container {name} keeps exiting before it is ready"
            + (f" ({words})" if words else "")
            + f", {restarts} restart(s); see kubectl logs {pod_name} -c {name} --previous",
        )
    return None


def pod_problem(pod: Mapping[str, Any]) -> PodProblem | None:
    """The first failing container of a pod (init containers first: nothing else runs before them)."""
    meta = pod.get("metadata") or {}
    if meta.get("deletionTimestamp"):
        return None
    status = pod.get("status") or {}
    name = str(meta.get("name", "?"))
    for cs in status.get("initContainerStatuses") or []:
        found = _container(name, cs, init=True)
        if found is not None:
            return found
    for cs in status.get("containerStatuses") or []:
        found = _container(name, cs, init=False)
        if found is not None:
            return found
    if status.get("phase") == "Failed":
        return PodProblem("PodFailed", f"pod {name} failed: {status.get('reason') or ''} {status.get('message') or ''}"
                          .strip())
    return None


def pod_problems(pods: Iterable[Mapping[str, Any]]) -> list[PodProblem]:
    """One problem per reason (the first pod's words), in the order the pods came."""
    seen: dict[str, PodProblem] = {}
    for pod in pods:
        found = pod_problem(pod)
        if found is not None and found.reason not in seen:
            seen[found.reason] = found
    return list(seen.values())
