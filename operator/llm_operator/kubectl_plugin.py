"""`kubectl llm`: watch and steer canary rollouts of LLMDeployments (docs/kubectl-llm.md).

Installed as the console script `kubectl-llm`, so kubectl finds it as a plugin on PATH. The commands that steer
a rollout only write annotations (llm_operator.rollout.requests): the operator carries them out and reports
back in `status.rollout`.

Exit codes: 0 done, 1 error (unknown object, nothing to act on, API failure), 2 usage.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from llm_operator.api import API_VERSION, GROUP, KIND, PLURAL
from llm_operator.builders import REVISION_LABEL
from llm_operator.rollout import requests

PROG = "kubectl llm"
# managedFields shows the annotations as the user's, not the operator's. Not "kubectl…": Flux (fluxcd/pkg ssa) takes
# over the fields of every manager whose name starts with "kubectl" and would then delete them, as Git lacks them.
FIELD_MANAGER = "llmops-rollout-cli"
INSTANCE_LABEL = "app.kubernetes.io/instance"
RESOURCE = f"{PLURAL}.{GROUP}"  # llmdeployments.serving.llmops.dev, as kubectl names it
WATCH_INTERVAL = 2.0


class PluginError(Exception):
    """Something a person must hear about; exit status 1."""


# ----------------------------------------------------------------------------------------------- reading


def _rollout(obj: Mapping[str, Any]) -> dict[str, Any]:
    return dict((obj.get("status") or {}).get("rollout") or {})


def _spec_rollout(obj: Mapping[str, Any]) -> dict[str, Any]:
    return dict((obj.get("spec") or {}).get("rollout") or {})


def strategy(obj: Mapping[str, Any]) -> str:
    """The strategy the spec asks for (RollingUpdate when unset)."""
    return str(_spec_rollout(obj).get("strategy") or "RollingUpdate")


def in_progress(obj: Mapping[str, Any]) -> bool:
    """A canary revision exists next to a different stable one."""
    ro = _rollout(obj)
    return bool(ro.get("canaryRevision")) and ro.get("canaryRevision") != ro.get("stableRevision")


def _annotations(obj: Mapping[str, Any]) -> dict[str, str]:
    return dict((obj.get("metadata") or {}).get("annotations") or {})


def _stale_hint(obj: Mapping[str, Any]) -> str:
    generation = (obj.get("metadata") or {}).get("generation")
    observed = (obj.get("status") or {}).get("observedGeneration")
    if generation is not None and observed != generation:
        return f" (the operator has not observed generation {generation} yet: try again in a moment)"
    return ""


def refusal(verb: str, obj: Mapping[str, Any]) -> str | None:
    """Why VERB (one of requests.VERBS) makes no sense for OBJ now, or None when it may be sent. Pure.

    An aborted rollout takes only retry (the operator ignores promote and promote-full there; unlike Argo
    Rollouts, whose promote --full also clears an abort)."""
    name = (obj.get("metadata") or {}).get("name", "?")
    ro = _rollout(obj)
    canary = strategy(obj) == "Canary"
    shown = "promote --full" if verb == "promote-full" else verb
    not_canary = (f"LLMDeployment {name!r} uses strategy {strategy(obj)}; {shown} applies to Canary rollouts only "
                  "(spec.rollout.strategy: Canary)")
    if verb == "resume":
        if not requests.user_paused(_annotations(obj)):
            return f"LLMDeployment {name!r} is not paused (no {requests.PAUSED_ANNOTATION} annotation)"
        return None
    if not canary:
        return not_canary
    if verb == "pause":
        if requests.user_paused(_annotations(obj)):
            return f"LLMDeployment {name!r} is already paused; `{PROG} resume {name}` lifts the pause"
        return None
    if verb == "retry":
        if not ro.get("aborted"):
            return f"LLMDeployment {name!r} is not aborted: nothing to retry"
        return None
    if not in_progress(obj):
        stable = ro.get("stableRevision") or (obj.get("status") or {}).get("revision")
        where = f" (revision {stable} is stable)" if stable else ""
        return f"LLMDeployment {name!r} has no rollout in progress{where}{_stale_hint(obj)}"
    if ro.get("aborted"):
        why = f": {ro['abortMessage']}" if ro.get("abortMessage") else ""
        if verb == "abort":
            return f"the rollout of LLMDeployment {name!r} is already aborted{why}"
        if verb in ("promote", "promote-full"):
            return (f"the rollout of LLMDeployment {name!r} to revision {ro.get('canaryRevision')} was aborted"
                    f"{why}. `{PROG} retry {name}` starts it again from its first step; then promote")
    return None


# --------------------------------------------------------------------------------------------- rendering

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def _duration_seconds(text: str) -> float | None:
    parts = re.findall(r"([0-9]+)(ms|s|m|h)", text or "")
    if not parts or "".join(n + u for n, u in parts) != text:
        return None
    return sum(int(n) * _UNITS[u] for n, u in parts)


def _time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _stamp(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _step_text(step: Mapping[str, Any]) -> str:
    if step.get("setWeight") is not None:
        return f"setWeight {step['setWeight']}"
    pause = step.get("pause")
    if isinstance(pause, Mapping):
        return f"pause {pause['duration']}" if pause.get("duration") else "pause until promoted"
    return "?"


def _number(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _table(rows: Sequence[Sequence[str]], indent: str = "  ") -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [indent + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
            for row in rows]


def render(obj: Mapping[str, Any], deployments: Sequence[Mapping[str, Any]]) -> str:
    """The `kubectl llm status` text for an LLMDeployment and its Deployments. Pure and free of relative times,
    so `--watch` prints again only when something changed."""
    meta = obj.get("metadata") or {}
    name = meta.get("name", "?")
    status = obj.get("status") or {}
    ro = _rollout(obj)
    spec_ro = _spec_rollout(obj)
    canary_spec = spec_ro.get("canary") or {}
    annotations = _annotations(obj)
    lines: list[str] = []

    def field(label: str, value: str) -> None:
        lines.append(f"{label + ':':<14}{value}")

    field("Name", f"{name}")
    field("Namespace", str(meta.get("namespace", "?")))
    shown_strategy = ro.get("strategy") or strategy(obj)
    field("Strategy", shown_strategy if shown_strategy == strategy(obj)
          else f"{shown_strategy} (spec asks for {strategy(obj)})")
    stable_rev, canary_rev = ro.get("stableRevision"), ro.get("canaryRevision")
    if stable_rev or canary_rev:
        field("Revision", f"stable {stable_rev or '-'} → canary {canary_rev}" if canary_rev and
              canary_rev != stable_rev else f"stable {stable_rev} (no canary)")
    elif status.get("revision"):
        field("Revision", f"{status['revision']}")
    generation, observed = meta.get("generation"), status.get("observedGeneration")
    if generation is not None and observed != generation:
        field("Observed", f"generation {observed if observed is not None else '-'} of {generation} "
              "(the operator has not caught up yet)")
    if ro:
        field("Phase", f"{ro.get('phase', '?')}" + (f": {ro['message']}" if ro.get("message") else ""))
        if ro.get("pausedReason"):
            field("Paused", str(ro["pausedReason"]))
    else:
        field("Phase", "(no rollout status yet)")
    if requests.user_paused(annotations):
        field("User pause", f"yes ({requests.PAUSED_ANNOTATION}); `{PROG} resume {name}` lifts it")
    if ro.get("aborted"):
        when = f" at {ro['abortedAt']}" if ro.get("abortedAt") else ""
        field("Aborted", f"yes{when}" + (f": {ro['abortMessage']}" if ro.get("abortMessage") else "")
              + f"; `{PROG} retry {name}` starts again")
    if ro.get("promoteFull"):
        field("Promote full", "requested: the remaining steps are skipped")

    steps = canary_spec.get("steps") or []
    if steps:
        index = ro.get("stepIndex")
        done = index if isinstance(index, int) else 0
        lines.append(f"Steps:        {min(done, len(steps))} of {len(steps)} done")
        started = _time(ro.get("stepStartedAt"))
        for i, step in enumerate(steps):
            marker = "→" if i == index else ("✓" if isinstance(index, int) and i < index else " ")
            text = f"  {marker} [{i}] {_step_text(step)}"
            if i == index and started is not None:
                text += f"  (since {_stamp(started)}"
                pause = step.get("pause") if isinstance(step.get("pause"), Mapping) else None
                seconds = _duration_seconds(pause.get("duration", "")) if pause else None
                if seconds is not None:
                    text += f", until {_stamp(started + timedelta(seconds=seconds))}"
                text += ")"
            lines.append(text)
    if ro.get("weight") is not None:
        field("Weight", f"{ro['weight']}% to canary, {100 - int(ro['weight'])}% to stable")

    # Replicas per revision: what the rollout wants, what each Deployment asks for, what is Ready.
    wanted = {stable_rev: ro.get("stableReplicas"), canary_rev: ro.get("canaryReplicas")}
    by_revision: dict[str, list[Mapping[str, Any]]] = {}
    for dep in deployments:
        rev = ((dep.get("metadata") or {}).get("labels") or {}).get(REVISION_LABEL, "?")
        by_revision.setdefault(rev, []).append(dep)
    order = [r for r in (stable_rev, canary_rev) if r] + sorted(r for r in by_revision if r not in wanted)
    rows = [["REVISION", "ROLE", "WANTED", "DEPLOYMENT", "READY"]]
    for rev in dict.fromkeys(order):
        deps = by_revision.get(rev, [])
        role = "stable" if rev == stable_rev else "canary" if rev == canary_rev else "old"
        asked = sum(int((d.get("spec") or {}).get("replicas", 0) or 0) for d in deps)
        ready = sum(int((d.get("status") or {}).get("readyReplicas", 0) or 0) for d in deps)
        names = ",".join(str((d.get("metadata") or {}).get("name")) for d in deps)
        rows.append([rev, role, _number(wanted.get(rev)), f"{asked} ({names})" if deps else "none",
                     str(ready) if deps else "0"])
    if len(rows) > 1:
        lines.append("Replicas:")
        lines.extend(_table(rows))

    analysis = ro.get("analysis")
    if analysis:
        limits = canary_spec.get("analysis") or {}
        fail_limit = limits.get("failureLimit")
        inc_limit = limits.get("inconclusiveLimit")
        counters = [f"{analysis.get('measurements', 0)} measurements",
                    f"{analysis.get('failed', 0)} failed" + (f" (aborts above {fail_limit})"
                                                             if fail_limit is not None else ""),
                    f"{analysis.get('inconclusive', 0)} inconclusive" + (f" (pauses above {inc_limit})"
                                                                         if inc_limit is not None else ""),
                    f"{analysis.get('errors', 0)} errors"]
        last = f"; last at {analysis['lastMeasuredAt']}" if analysis.get("lastMeasuredAt") else ""
        field("Analysis", f"{analysis.get('phase', '?')}: {', '.join(counters)}{last}")
        checks = analysis.get("checks") or []
        if checks:
            lines.extend(_table([["CHECK", "PHASE", "CANARY", "STABLE", "MESSAGE"]] + [
                [str(c.get("metric", "?")), str(c.get("phase", "?")), _number(c.get("canary")),
                 _number(c.get("stable")), str(c.get("message", ""))] for c in checks]))
    elif canary_spec and not canary_spec.get("analysis"):
        field("Analysis", "none configured (no automatic rollback)")

    if ro.get("surge"):
        field("Surge", str(ro["surge"]) + (f": {ro['surgeReason']}" if ro.get("surgeReason") else ""))
    autoscaling = status.get("autoscaling") or {}
    if autoscaling:
        field("Autoscaling", f"{autoscaling.get('provider', '?')}: {autoscaling.get('summary') or '(no summary yet)'}")
    elif (obj.get("spec") or {}).get("autoscaling"):
        field("Autoscaling", "(no status yet)")
    else:
        field("Autoscaling", f"off ({status.get('readyText') or '-'} ready)")

    pending = requests.pending(annotations, ro.get("lastRequest"))
    if ro.get("lastRequest"):
        field("Last request", f"{ro['lastRequest']} (carried out)")
    if pending is not None:
        text = f"{pending.value} (not carried out yet)"
        if not pending.valid:
            text += f": invalid, {pending.reason}"
        field("Pending", text)

    conditions = status.get("conditions") or []
    if conditions:
        lines.append("Conditions:")
        lines.extend(_table([["TYPE", "STATUS", "REASON", "MESSAGE"]] + [
            [str(c.get("type", "?")), str(c.get("status", "?")), str(c.get("reason", "")),
             str(c.get("message", ""))] for c in conditions]))
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------ API access


def _connect(kubeconfig: str | None, context: str | None) -> tuple[Any, str]:
    """A client for the chosen kubeconfig and context, and the namespace that context names (else `default`).
    Without a kubeconfig (none given, no $KUBECONFIG, no ~/.kube/config) inside a pod: the pod's account."""
    from kubernetes import config
    from kubernetes.config.config_exception import ConfigException

    from llm_operator._k8s import honour_current_kubeconfig

    default_file = Path("~/.kube/config").expanduser()
    try:
        if kubeconfig or context or os.environ.get("KUBECONFIG") or default_file.exists():
            if kubeconfig is None:
                honour_current_kubeconfig()
            api_client = config.new_client_from_config(config_file=kubeconfig, context=context,
                                                       persist_config=False)
            contexts, active = config.list_kube_config_contexts(config_file=kubeconfig)
            chosen = next((c for c in contexts if c.get("name") == context), None) if context else active
            namespace = ((chosen or {}).get("context") or {}).get("namespace") or "default"
            return api_client, namespace
        config.load_incluster_config()
    except (ConfigException, OSError) as exc:
        source = kubeconfig or os.environ.get("KUBECONFIG") or (str(default_file) if default_file.exists() else "")
        where = f" from {source}" if source else " (no kubeconfig, not in a pod)"
        raise PluginError(f"cannot load the cluster configuration{where}: {exc}") from None
    from kubernetes import client

    sa_namespace = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
    namespace = sa_namespace.read_text().strip() if sa_namespace.exists() else "default"
    return client.ApiClient(), namespace


class Client:
    """The reads and the one write `kubectl llm` makes, through the project's client."""

    def __init__(self, api_client: Any) -> None:
        from llm_operator._k8s import Kube

        self.kube = Kube(api_client)

    def get(self, namespace: str, name: str) -> dict[str, Any]:
        obj = self.kube.get(api_version=API_VERSION, kind=KIND, namespace=namespace, name=name)
        if obj is None:
            raise PluginError(f"LLMDeployment {name!r} not found in namespace {namespace!r}")
        return obj

    def deployments(self, namespace: str, name: str) -> list[dict[str, Any]]:
        return self.kube.list(api_version="apps/v1", kind="Deployment", namespace=namespace,
                              label_selector=f"{INSTANCE_LABEL}={name},{REVISION_LABEL}")

    def patch_metadata(self, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        """A merge patch of the main resource (never status), recorded under FIELD_MANAGER.
        Kube.patch would record it under the operator's manager, so this goes through Kube's request path."""
        from llm_operator._k8s import _path

        assert set(body) == {"metadata"}, body
        return dict(self.kube._call("PATCH", _path(API_VERSION, KIND, namespace, name, None), body=body,
                                    query=[("fieldManager", FIELD_MANAGER)],
                                    content_type="application/merge-patch+json"))


# -------------------------------------------------------------------------------------------- commands

_DONE = {
    "promote": "promote requested: the rollout moves to its next step",
    "promote-full": "full promote requested: the remaining steps and analysis are skipped",
    "abort": "abort requested: the canary goes back to 0 and stable to full size",
    "retry": "retry requested: the rollout starts again from its first step",
    "pause": "paused: the rollout holds where it is until resumed",
    "resume": "resumed",
}


def _steer(args: argparse.Namespace) -> int:
    verb = "promote-full" if args.verb == "promote" and args.full else args.verb
    client, namespace = _client_and_namespace(args)
    obj = client.get(namespace, args.name)
    why = refusal(verb, obj)
    if why is not None:
        raise PluginError(why)
    body = requests.patch_for(verb, now=datetime.now(UTC))
    client.patch_metadata(namespace, args.name, body)
    value = body["metadata"]["annotations"].get(requests.REQUEST_ANNOTATION)
    print(f"{RESOURCE}/{args.name} {_DONE[verb]}" + (f" ({requests.REQUEST_ANNOTATION}: {value})" if value else ""))
    if verb == "pause" and not in_progress(obj):
        print(f"no rollout is in progress now: the next one holds until `{PROG} resume {args.name}`")
    if value:
        print(f"follow it with: {PROG} status {args.name} -n {namespace} --watch")
    return 0


def _status(args: argparse.Namespace) -> int:
    client, namespace = _client_and_namespace(args)

    def snapshot() -> str:
        obj = client.get(namespace, args.name)
        return render(obj, client.deployments(namespace, args.name))

    text = snapshot()
    print(text, end="", flush=True)
    if not args.watch:
        return 0
    clear = sys.stdout.isatty()
    try:
        while True:
            time.sleep(args.interval)
            try:
                new = snapshot()
            except PluginError:
                raise
            except Exception as exc:  # a blip of the API server: say so and keep watching
                print(f"({_stamp(datetime.now(UTC))} {exc}; retrying)", file=sys.stderr, flush=True)
                continue
            if new != text:
                text = new
                if clear:
                    print("\x1b[H\x1b[2J", end="")
                else:
                    print(f"--- {_stamp(datetime.now(UTC))}")
                print(text, end="", flush=True)
    except KeyboardInterrupt:
        return 0


def _client_and_namespace(args: argparse.Namespace) -> tuple[Client, str]:
    api_client, default_namespace = _connect(args.kubeconfig, args.context)
    return Client(api_client), args.namespace or default_namespace


def build_parser() -> argparse.ArgumentParser:
    def connection(parser: argparse.ArgumentParser, default: Any) -> None:
        parser.add_argument("-n", "--namespace", default=default,
                            help="namespace of the LLMDeployment (default: the context's namespace, else default)")
        parser.add_argument("--kubeconfig", default=default, help="kubeconfig file (default: $KUBECONFIG, "
                            "~/.kube/config)")
        parser.add_argument("--context", default=default, help="kubeconfig context (default: the current one)")

    parser = argparse.ArgumentParser(prog=PROG, description="Watch and steer canary rollouts of LLMDeployments. "
                                     "The steering commands write annotations that the operator carries out "
                                     "(docs/kubectl-llm.md).")
    connection(parser, None)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # On every command too, so `kubectl llm status NAME -n NS` works; SUPPRESS keeps a value given before it.
    common = argparse.ArgumentParser(add_help=False)
    connection(common, argparse.SUPPRESS)

    status = sub.add_parser("status", parents=[common], help="steps, weights, replicas, analysis, autoscaling",
                            description="Show where the rollout of an LLMDeployment stands.")
    status.add_argument("name", metavar="NAME")
    status.add_argument("-w", "--watch", action="store_true", help="print again on every change (Ctrl-C ends)")
    status.add_argument("--interval", type=float, default=WATCH_INTERVAL, help=argparse.SUPPRESS)
    status.set_defaults(func=_status)

    verbs = {
        "promote": "go to the next step now (ends a pause); --full skips every remaining step",
        "abort": "roll the canary back: weight 0, stable at full size",
        "retry": "start an aborted rollout again from its first step",
        "pause": "hold the rollout where it is until resume",
        "resume": "lift a pause set with pause",
    }
    for verb, text in verbs.items():
        cmd = sub.add_parser(verb, parents=[common], help=text, description=text[0].upper() + text[1:] + ".")
        if verb == "promote":
            cmd.add_argument("--full", action="store_true", help="skip all remaining steps and analysis")
        cmd.add_argument("name", metavar="NAME")
        cmd.set_defaults(func=_steer, verb=verb)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for stream in (sys.stdout, sys.stderr):  # the step markers are not ASCII; never crash on a C locale
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="replace")
    try:
        return int(args.func(args))
    except PluginError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        from llm_operator._k8s import KubeError

        if isinstance(exc, KubeError):
            print(f"error: {exc}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    raise SystemExit(main())
