"""`llmctl simulate` arguments and command (cli.py registers them)."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from typing import Any

from .profile import DEV_CLUSTER, ProfileError, Timing

SLO_HELP = "time-to-first-token SLO, e.g. 2s or 500ms (default 2s)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-f", "--filename", required=True, help="YAML file with the LLMDeployment to simulate")
    p.add_argument("--name", help="which LLMDeployment of the file (default: the only one)")
    p.add_argument("--trace", required=True, metavar="TRACE",
                   help="a CSV file (TIMESTAMP,ContextTokens,GeneratedTokens as in the Azure LLM inference trace, "
                   "or timestamp,prompt_tokens,output_tokens) or a generator: poisson:rps=5,duration=1h | "
                   "diurnal:low=1,high=10,period=24h | burst:base=2,peak=20,every=10m,length=1m | "
                   "step:levels=0:2/60:20/180:2 (each also takes seed=, prompt=, output=, spread=, arrivals=)")
    p.add_argument("--policy", action="append", default=[], metavar="POLICY",
                   help="add a policy to compare (repeatable): spec, hpa:KEY=VALUE,..., hpa:{YAML}, cpu:70, fixed:N, "
                   "oracle, or another LLMDeployment file (see docs/simulate.md); the LLMDeployment's own "
                   "spec.autoscaling is always first when it has one, the oracle always last")
    p.add_argument("--no-oracle", action="store_true", help="leave the oracle out (it is added by default)")
    p.add_argument("--slo-ttft", default="2s", help=SLO_HELP)
    p.add_argument("-o", "--output", choices=("table", "json"), default="table")
    p.add_argument("--timeline", action="store_true", help="with -o json: include each policy's timeline")
    p.add_argument("--plot", metavar="PNG", help="write load, replicas and TTFT over time to this PNG (matplotlib)")
    p.add_argument("--profile", metavar="FILE",
                   help="YAML/JSON replica profile (tokensPerSecond, batchSlots, prefillTokensPerSecond, "
                   "startupSeconds, ...; see docs/simulate.md)")
    p.add_argument("--tokens-per-second", type=float, help="decode tokens/s of one replica at a full batch")
    p.add_argument("--batch-slots", type=int, help="requests one replica batches at once")
    p.add_argument("--prefill-tokens-per-second", type=float, help="prompt tokens/s one replica prefills")
    p.add_argument("--startup", metavar="SECONDS", help="model load time of a new replica, e.g. 90s or 3m")
    p.add_argument("--initial-replicas", type=int, help="replicas serving at the start (default: enough for the "
                   "trace's first minute, within each policy's min/max)")
    p.add_argument("--dev-cluster", action="store_true",
                   help="the timing of `llmctl dev up --metrics` (HPA sync 5 s, scrape and rule evaluation 2 s, "
                   "relist 5 s) instead of a production cluster's (15 s, 15 s, 30 s, 10 min)")
    p.add_argument("--sync-period", metavar="SECONDS", help="HPA sync period (default 15s)")
    p.add_argument("--scrape-interval", metavar="SECONDS",
                   help="Prometheus scrape interval (default: the LLMDeployment's spec.monitoring.interval)")
    p.add_argument("--evaluation-interval", metavar="SECONDS", help="Prometheus rule evaluation interval (30s)")
    p.add_argument("--step", metavar="SECONDS", help="simulation step (default 1s)")


def _seconds(text: str, flag: str) -> float:
    from .trace import TraceError, parse_duration

    try:
        return parse_duration(text, field=flag)
    except TraceError as exc:
        raise ProfileError(str(exc)) from None


def run(args: argparse.Namespace) -> int:
    from llm_operator.builders.render import RenderError, load_file

    from . import report, simulate
    from .policy import PolicyError, parse
    from .profile import profile_for, read_profile_file, timing_for
    from .trace import TraceError, load

    def fail(message: str) -> int:
        print(f"llmctl simulate: {message}", file=sys.stderr)
        return 2

    try:
        found = load_file(args.filename)
    except RenderError as exc:
        return fail(str(exc))
    if not found:
        return fail(f"{args.filename}: no LLMDeployment in the file")
    if args.name is not None:
        matches = [d for d in found if d.name == args.name]
        if not matches:
            return fail(f"{args.filename}: no LLMDeployment named {args.name!r} (found: "
                        f"{', '.join(d.name for d in found)})")
        llmd = matches[0]
    elif len(found) > 1:
        return fail(f"{args.filename} holds {len(found)} LLMDeployments ({', '.join(d.name for d in found)}): "
                    "choose one with --name")
    else:
        llmd = found[0]

    if llmd.spec.autoscaling is None and not args.policy:
        return fail(f"{args.filename}: LLMDeployment {llmd.name} has no spec.autoscaling and no --policy was given: "
                    "add spec.autoscaling, or compare policies with --policy (e.g. --policy hpa:queueDepth=4,"
                    "maxReplicas=8 --policy cpu:70,maxReplicas=8 --policy fixed:4)")
    try:
        slo = _seconds(args.slo_ttft, "--slo-ttft")
        if slo <= 0:
            return fail(f"--slo-ttft must be > 0, got {args.slo_ttft!r}")
        overrides: dict[str, Any] = read_profile_file(args.profile) if args.profile else {}
        for key, value in (("tokensPerSecond", args.tokens_per_second), ("batchSlots", args.batch_slots),
                           ("prefillTokensPerSecond", args.prefill_tokens_per_second)):
            if value is not None:
                overrides[key] = value
        if args.startup is not None:
            overrides["startupSeconds"] = _seconds(args.startup, "--startup")
        profile = profile_for(llmd, overrides=overrides)
        timing = timing_for(llmd, base=DEV_CLUSTER if args.dev_cluster else Timing())
        changes: dict[str, float] = {}
        for attr, value in (("sync_period", args.sync_period), ("scrape_interval", args.scrape_interval),
                            ("evaluation_interval", args.evaluation_interval), ("step", args.step)):
            if value is not None:
                changes[attr] = _seconds(value, "--" + attr.replace("_", "-"))
        if args.dev_cluster and args.scrape_interval is None:
            changes["scrape_interval"] = DEV_CLUSTER.scrape_interval
        timing = replace(timing, **changes)
    except ProfileError as exc:
        return fail(str(exc))

    names = (["spec"] if llmd.spec.autoscaling is not None else []) + list(args.policy)
    if not args.no_oracle:
        names.append("oracle")
    policies = []
    seen: set[str] = set()
    try:
        for name in names:
            if name in seen:
                continue
            seen.add(name)
            policies.append(parse(name, llmd=llmd, source=args.filename))
    except PolicyError as exc:
        return fail(str(exc))
    if args.initial_replicas is not None and args.initial_replicas < 1:
        return fail(f"--initial-replicas must be >= 1, got {args.initial_replicas}")
    if args.plot:
        # Fail before minutes of simulation, not after.
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            return fail(f"--plot needs matplotlib, which is not installed: {report.PLOT_INSTALL_HINT}")

    try:
        trace = load(args.trace)
    except TraceError as exc:
        return fail(str(exc))
    if len(trace) == 0:
        return fail(f"{args.trace}: the trace has no requests")

    sim = simulate(llmd=llmd, trace=trace, policies=policies, profile=profile, timing=timing, slo=slo,
                   initial=args.initial_replicas)
    if args.output == "json":
        json.dump(report.as_json(sim, timeline=args.timeline), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(report.table(sim))
    if args.plot:
        try:
            report.plot(sim, args.plot)
        except report.PlotError as exc:
            return fail(str(exc))
        print(f"wrote {args.plot}", file=sys.stderr)
    return 0
