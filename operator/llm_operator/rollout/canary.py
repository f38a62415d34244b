"""The canary step machine: (spec, observed revisions, previous status.rollout, now, analysis) → (replicas per
revision, traffic weight, new status.rollout, Events).

Pure and total: nothing is remembered between passes except what it returns in status.rollout, so an operator
restarted at any point resumes at the same step. Argo Rollouts' `rollout/canary.go` is the model: a setWeight
step completes when the replicas for it are in place, a pause when its time is up or when promoted, and an
abort sends the weight to 0 and stable back to full size without touching spec.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from llm_operator import api
from llm_operator.rollout import analysis as an
from llm_operator.rollout import replicas as rmath
from llm_operator.rollout import requests
from llm_operator.rollout.rolling import RevisionState

ANALYSIS_FAILED = "CanaryAnalysisFailed"
ABORTED = "RolloutAborted"


def stamp(now: dt.datetime) -> str:
    return now.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_stamp(text: str | None) -> dt.datetime | None:
    if not text:
        return None
    return dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)


@dataclass
class Inputs:
    canary: api.CanarySpec
    total: int  # the LLMDeployment's replicas (the HPA's when autoscaling)
    revision: str  # the spec's revision
    # revision -> its Deployment's facts; the spec's revision is always there (all zeros, with the name its
    # Deployment will get, before it exists)
    deployments: Mapping[str, RevisionState]
    previous: Mapping[str, Any]  # status.rollout as last written ({} when none)
    now: dt.datetime
    room: int = 0  # free GPU slots in the pool (replicas.free_slots)
    room_reason: str = ""
    surging: bool = False  # our pods hold more slots than the total: a surge in progress
    request: requests.Request | None = None
    user_paused: bool = False
    measurement: Any = None  # rollout.analysis.Measurement taken this pass, if one was due


@dataclass
class Decision:
    current_replicas: int = 0  # the spec revision's Deployment
    replicas: dict[str, int] = field(default_factory=dict)  # Deployment name -> spec.replicas (others)
    delete: list[str] = field(default_factory=list)
    weight: int | None = None  # canary traffic weight to set on the route (None: no canary, route to stable)
    stable: str | None = None  # revisions, for the per-revision Services
    canary_revision: str | None = None
    status: dict[str, Any] = field(default_factory=dict)
    events: list[tuple[str, str, str]] = field(default_factory=list)  # (type, reason, message)
    degraded: tuple[str, str] | None = None  # (reason, message)
    measure: bool = False  # the canary takes traffic: analysis should run
    requeue_after: float | None = None


def weight_at(steps: Sequence[api.CanaryStep], index: int) -> int:
    """The weight of the last setWeight at or before `index` (100 once every step is done)."""
    if index >= len(steps):
        return 100
    weight = 0
    for s in steps[: index + 1]:
        if s.set_weight is not None:
            weight = s.set_weight
    return weight


def _choose_stable(inp: Inputs) -> str | None:
    previous = inp.previous.get("stableRevision")
    if previous and previous in inp.deployments:
        return str(previous)
    others = [r for rev, r in inp.deployments.items() if rev != inp.revision]
    if not others:
        return None
    # First canary after an upgrade, or the stable Deployment was deleted: the revision serving most is stable.
    best = max(others, key=lambda r: (r.ready_replicas, r.replicas, r.created))
    return best.revision


def plan(inp: Inputs) -> Decision:
    d = Decision()
    prev = dict(inp.previous)
    stable = _choose_stable(inp)
    steps = inp.canary.steps
    routed = inp.canary.traffic_routing is not None
    names = {rev: r.name for rev, r in inp.deployments.items()}
    status: dict[str, Any] = {"strategy": "Canary", "lastRequest": prev.get("lastRequest")}

    if stable is None or stable == inp.revision:
        # Nothing to compare with (the first revision), or the spec went back to stable: serve it at full size
        # and retire anything else, skipping the steps (Argo's "rollback to stable").
        rev = inp.revision
        _move(d, inp, {names[rev]: inp.total})
        d.stable = rev
        status.update(phase="Healthy", stableRevision=rev, message=f"revision {rev} is stable",
                      stableReplicas=inp.total, canaryReplicas=0)
        if prev.get("canaryRevision") and prev.get("canaryRevision") != rev:
            d.events.append(("Normal", "RolledBackToStable",
                             f"spec is back at stable revision {rev}: canary {prev['canaryRevision']} removed"))
        if len(inp.deployments) > 1 or inp.deployments[rev].ready_replicas < inp.total:
            status.update(phase="Progressing", message=f"revision {rev} is stable; scaling it to {inp.total} and "
                          "retiring other revisions")
            d.requeue_after = 5.0
        d.status = _finish(status, inp)
        return d

    # A new canary revision restarts the steps and the analysis; the request history stays.
    if prev.get("canaryRevision") != inp.revision or prev.get("stableRevision") != stable:
        prev = {"lastRequest": prev.get("lastRequest"), "stepIndex": 0, "stepStartedAt": stamp(inp.now)}
        d.events.append(("Normal", "CanaryStarted", f"canary {inp.revision} against stable {stable}: "
                         f"{len(steps)} step(s)"))
    index = int(prev.get("stepIndex") or 0)
    started = prev.get("stepStartedAt") or stamp(inp.now)
    aborted = bool(prev.get("aborted"))
    abort_message = prev.get("abortMessage")
    aborted_at = prev.get("abortedAt")
    promote_full = bool(prev.get("promoteFull"))
    analysis: dict[str, Any] | None = dict(prev["analysis"]) if prev.get("analysis") else None
    spec_analysis = inp.canary.analysis
    if inp.measurement is not None and spec_analysis is not None:
        analysis = an.advance(analysis, inp.measurement, failure_limit=spec_analysis.failure_limit,
                              inconclusive_limit=spec_analysis.inconclusive_limit, now=inp.now)
    skip_pause = False

    if inp.request is not None:
        status["lastRequest"] = inp.request.record
        action = inp.request.action
        if action == "abort" and not aborted:
            aborted, aborted_at = True, stamp(inp.now)
            abort_message = "aborted by kubectl llm abort"
            d.events.append(("Warning", ABORTED, f"canary {inp.revision} aborted by request; stable {stable} "
                             "back at full size"))
        elif action == "retry" and aborted:
            aborted, abort_message, aborted_at, analysis = False, None, None, None
            index, started = 0, stamp(inp.now)
            d.events.append(("Normal", "CanaryRetried", f"canary {inp.revision} restarts from step 1"))
        elif action == "promote-full" and not aborted:
            promote_full = True
            d.events.append(("Normal", "CanaryPromotedFull", f"canary {inp.revision}: remaining steps skipped"))
        elif action == "promote" and not aborted:
            skip_pause = True
            if analysis is not None and analysis.get("phase") in ("Inconclusive", "Error"):
                analysis = {**analysis, "phase": "Running", "inconclusive": 0, "errors": 0}
            d.events.append(("Normal", "CanaryPromoted", f"canary {inp.revision}: step {index + 1} promoted"))
        elif action == "invalid":
            d.events.append(("Warning", "InvalidRequest", f"{requests.REQUEST_ANNOTATION}: {inp.request.value!r}: "
                             f"{inp.request.reason}; use kubectl llm"))
        else:
            d.events.append(("Normal", "RequestIgnored", f"{action} does not apply now (aborted={aborted})"))

    if analysis is not None and analysis.get("phase") == "Failed" and not aborted:
        aborted, aborted_at = True, stamp(inp.now)
        abort_message = f"canary analysis failed: {_failing(analysis)}"
        d.events.append(("Warning", ANALYSIS_FAILED, f"canary {inp.revision} rolled back to stable {stable}: "
                         f"{_failing(analysis)}"))

    canary_state = inp.deployments[inp.revision]
    stable_state = inp.deployments[stable]
    canary_name = canary_state.name
    status.update(stableRevision=stable, canaryRevision=inp.revision)

    if aborted:
        # The weight drops to 0 at once; the canary's pods go as stable pods replace them (into free GPUs first),
        # so users keep at least total - 1 replicas serving. Its Deployment stays, at 0, for a retry.
        _move(d, inp, {stable_state.name: inp.total, canary_name: 0})
        d.weight, d.stable, d.canary_revision = 0, stable, inp.revision
        reason = ANALYSIS_FAILED if (abort_message or "").startswith("canary analysis failed") else ABORTED
        d.degraded = (reason, abort_message or "aborted")
        status.update(phase="Degraded", aborted=True, abortedAt=aborted_at, abortMessage=abort_message,
                      message=f"aborted: {abort_message}; stable {stable} serves all traffic. Change the spec or "
                      "run kubectl llm retry", stepIndex=index, stepStartedAt=started, weight=0,
                      stableReplicas=inp.total, canaryReplicas=0, analysis=analysis)
        d.status = _finish(status, inp)
        return d

    if promote_full:
        index = len(steps)
    paused_reason: str | None = None
    needs_analysis = inp.canary.analysis is not None
    # No data never counts as success: with analysis, the last measurement must exist and pass every check.
    last_ok = not needs_analysis or (
        analysis is not None and analysis.get("phase") in ("Running", "Successful")
        and bool(analysis.get("checks")) and all(c.get("phase") == "Successful" for c in analysis["checks"]))
    # Walk through every step that is complete now, so a restart or a slow pass never loses one.
    while True:
        if inp.user_paused:
            paused_reason = "UserPause"
            break
        if needs_analysis and analysis is not None and analysis.get("phase") == "Error":
            paused_reason = "PrometheusUnreachable"
            break
        if needs_analysis and analysis is not None and analysis.get("phase") == "Inconclusive":
            paused_reason = "AnalysisInconclusive"
            break
        if index >= len(steps):
            break
        current = steps[index]
        if current.set_weight is not None:
            canary_n, stable_n = rmath.split(inp.total, current.set_weight, routed=routed, room=inp.room > 0)
            if canary_state.ready_replicas < canary_n or stable_state.replicas + stable_state.terminating > stable_n:
                break
        else:
            pause = current.pause
            duration = an.parse_duration(pause.duration) if pause and pause.duration else None
            began = _parse_stamp(started) or inp.now
            measured = _parse_stamp((analysis or {}).get("lastMeasuredAt"))
            analysed = not needs_analysis or (last_ok and measured is not None and measured >= began)
            if skip_pause:
                skip_pause = False
            elif duration is None:
                paused_reason = "PauseStep"
                break
            elif (inp.now - began).total_seconds() < duration or not analysed:
                d.requeue_after = max(min(duration - (inp.now - began).total_seconds(), 30.0), 1.0)
                break
        index += 1
        started = stamp(inp.now)

    done = index >= len(steps)
    weight = weight_at(steps, index)
    canary_n, stable_n = rmath.split(inp.total, weight, routed=routed, room=inp.room > 0)
    _move(d, inp, {stable_state.name: stable_n, canary_name: canary_n})
    canary_ready = canary_state.ready_replicas
    # The route's weight only rises once the canary's pods for it are ready (Argo's rule); until then the
    # last weight whose pods were in place holds.
    applied = weight if canary_ready >= canary_n else (
        weight_at(steps, index - 1) if index > 0 and canary_ready > 0 else 0)
    d.weight, d.stable, d.canary_revision = applied, stable, inp.revision
    # `promote --full` is a person overriding the steps and the analysis (as Argo Rollouts cancels its analysis
    # runs): no more measurements, no gate.
    d.measure = needs_analysis and canary_ready > 0 and applied > 0 and not promote_full

    if done and canary_ready >= inp.total and (last_ok or promote_full) and not inp.user_paused:
        # Promotion: the canary is the new stable; the old revision's Deployment goes (its Service and
        # ConfigMap are pruned with it).
        d.events.append(("Normal", "CanaryPromoted" if not promote_full else "CanaryPromotedFull",
                         f"revision {inp.revision} promoted to stable (was {stable})"))
        _move(d, inp, {canary_name: inp.total})
        d.weight, d.stable, d.canary_revision = None, inp.revision, None
        status = {"strategy": "Canary", "lastRequest": status.get("lastRequest"), "phase": "Progressing",
                  "stableRevision": inp.revision, "message": f"revision {inp.revision} promoted; retiring {stable}",
                  "stableReplicas": inp.total, "canaryReplicas": 0}
        d.requeue_after = 2.0
        d.status = _finish(status, inp)
        return d

    phase = "Paused" if paused_reason else "Progressing"
    step_text = f"step {min(index + 1, len(steps))}/{len(steps)}" if not done else "all steps done"
    wait = {
        "UserPause": "paused by kubectl llm pause; kubectl llm resume continues",
        "PauseStep": "paused until kubectl llm promote",
        "PrometheusUnreachable": "Prometheus cannot be queried, so the canary is held (never promoted without "
                                 f"data): {_failing(analysis or {})}",
        "AnalysisInconclusive": "analysis has no data for the canary; kubectl llm promote to go on, abort or "
                                "retry",
    }
    message = f"canary {inp.revision} at {applied}% ({step_text}, {canary_ready}/{canary_n} canary ready)"
    if paused_reason:
        message += f": {wait[paused_reason]}"
    status.update(phase=phase, message=message, stepIndex=index, stepStartedAt=started, weight=applied,
                  stableReplicas=stable_n, canaryReplicas=canary_n, pausedReason=paused_reason,
                  promoteFull=promote_full or None, analysis=analysis)
    if d.requeue_after is None:
        d.requeue_after = 5.0
    d.status = _finish(status, inp)
    return d


def _failing(analysis: Mapping[str, Any]) -> str:
    bad = [c.get("message") or c.get("metric", "") for c in analysis.get("checks") or []
           if c.get("phase") != "Successful"]
    return "; ".join(str(b) for b in bad) or str(analysis.get("phase", ""))


def _move(d: Decision, inp: Inputs, targets: Mapping[str, int]) -> None:
    moved = rmath.step(total=inp.total, targets=targets, states=list(inp.deployments.values()), room=inp.room)
    own = inp.deployments[inp.revision].name
    d.current_replicas = moved.replicas.pop(own, inp.deployments[inp.revision].spec_replicas)
    d.replicas, d.delete = moved.replicas, [n for n in moved.delete if n != own]


def _finish(status: dict[str, Any], inp: Inputs) -> dict[str, Any]:
    if inp.room > 0 or inp.surging:
        status.update(surge="Surge", surgeReason=inp.room_reason)
    else:
        status.update(surge="Swap", surgeReason=inp.room_reason or "no free GPU slots")
    return {k: v for k, v in status.items() if v is not None and v is not False}
