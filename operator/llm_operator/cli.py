"""`llmctl`: the one command line for the whole product."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from llm_operator import __version__

if TYPE_CHECKING:
    from llm_operator.dev import LocalCluster


def _state_root() -> Path:
    env = os.environ.get("LLMCTL_STATE_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_STATE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".local" / "state") / "triton-llm-operator"


def _cluster(args: argparse.Namespace) -> LocalCluster:
    from llm_operator.dev import LocalCluster

    return LocalCluster(
        state_dir=_state_root() / args.name,
        kubeconfig=Path(args.kubeconfig) if getattr(args, "kubeconfig", None) else None,
        profile=Path(args.node_profile) if getattr(args, "node_profile", None) else None,
        gpu_nodes=getattr(args, "gpu_nodes", None),
        spot_nodes=getattr(args, "spot_nodes", None),
        cpu_nodes=getattr(args, "cpu_nodes", None),
        log=lambda msg: print(f"  {msg}", file=sys.stderr),
    )


def _dev_up(args: argparse.Namespace) -> int:
    from llm_operator.dev import BinariesError, ClusterError, NodeProfileError

    cluster = _cluster(args)
    try:
        info = cluster.up(timeout=args.timeout, metrics=args.metrics, traffic_startup_delay=args.startup_delay)
    except (ClusterError, BinariesError, NodeProfileError) as exc:
        print(f"llmctl dev up: {exc}", file=sys.stderr)
        return 1
    print(f"cluster '{info.name}' is up in {info.ready_seconds}s: {info.server} ({len(info.nodes)} fake nodes)")
    if info.metrics:
        print(f"prometheus: {info.prometheus_url}   traffic emulator: {info.traffic_url}   "
              "custom metrics: kubectl get --raw /apis/custom.metrics.k8s.io/v1beta2")
    print(f"kubeconfig: {info.kubeconfig}")
    print(f"  export KUBECONFIG={info.kubeconfig}")
    print(f"  export PATH={info.bin_dir}:$PATH   # kubectl, helm")
    return 0


def _dev_down(args: argparse.Namespace) -> int:
    cluster = _cluster(args)
    had = cluster.info() is not None
    cluster.down()
    print(f"cluster '{args.name}' {'stopped and removed' if had else 'was not running'}")
    return 0


def _dev_status(args: argparse.Namespace) -> int:
    from llm_operator.dev._cluster import _alive

    cluster = _cluster(args)
    info = cluster.info()
    if info is None:
        print(f"cluster '{args.name}' is not running")
        return 1
    for name, pid in info.pids.items():
        where = f"127.0.0.1:{info.ports[name]}" if name in info.ports else ""
        print(f"{name:<26} pid {pid:<8} {'running' if _alive(pid) else 'DEAD':<8} {where}")
    print(f"kubeconfig: {info.kubeconfig}")
    healthy = all(_alive(p) for p in info.pids.values())
    if info.metrics:
        from llm_operator.dev._metrics_stack import CUSTOM_METRICS_GROUP, CUSTOM_METRICS_VERSIONS

        print(f"prometheus: {info.prometheus_url}")
        print(f"traffic emulator: {info.traffic_url}")
        for version in CUSTOM_METRICS_VERSIONS:
            available, text = cluster.apiservice_available(version)
            healthy = healthy and available
            print(f"APIService {version}.{CUSTOM_METRICS_GROUP}: Available={text}")
    return 0 if healthy else 1


def _dev_traffic(args: argparse.Namespace) -> int:
    from llm_operator.dev.traffic._cli import run

    return run(args)


def _crd(args: argparse.Namespace) -> int:
    from llm_operator._crd import crd_yaml

    text = crd_yaml()
    if args.check:
        target = Path(args.output or "crds/llmdeployments.serving.llmops.dev.yaml")
        if not target.exists() or target.read_text() != text:
            print(f"{target} is out of date; regenerate it with: llmctl crd -o {target}", file=sys.stderr)
            return 1
        print(f"{target} is up to date")
        return 0
    if args.output:
        Path(args.output).write_text(text)
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def _chart(args: argparse.Namespace) -> int:
    from llm_operator import _chart

    root = Path(args.root)
    if args.check:
        old = _chart.stale(root)
        for rel in old:
            print(f"{rel} is out of date; regenerate it with: llmctl chart", file=sys.stderr)
        if not old:
            print("the chart's generated files are up to date")
        return 1 if old else 0
    for rel in _chart.write(root):
        print(f"wrote {rel}", file=sys.stderr)
    return 0


def _runtime_image(args: argparse.Namespace, command: str) -> bool:
    if args.runtime_image is None:
        return True
    from llm_operator.builders import set_runtime_image

    try:
        set_runtime_image(args.runtime_image)
    except ValueError as exc:
        print(f"llmctl {command}: {exc}", file=sys.stderr)
        return False
    return True


def _render(args: argparse.Namespace) -> int:
    from llm_operator.builders import render_file

    if not _runtime_image(args, "render"):
        return 2
    try:
        sys.stdout.write(render_file(Path(args.filename)))
    except (OSError, ValueError) as exc:
        print(f"llmctl render: {exc}", file=sys.stderr)
        return 1
    return 0


def _run(args: argparse.Namespace) -> int:
    from llm_operator import _leader
    from llm_operator.operator import run_operator

    if not _runtime_image(args, "run"):
        return 2
    election = None
    if args.leader_elect:
        election = _leader.Config(
            lease_name=args.leader_election_id,
            namespace=args.leader_election_namespace or _leader.default_namespace(),
            lease_duration=args.lease_duration, renew_deadline=args.renew_deadline, retry_period=args.retry_period,
            identity=_leader.default_identity(),
        )
        try:
            election.validate()
        except ValueError as exc:
            print(f"llmctl run: {exc}", file=sys.stderr)
            return 2
    return run_operator(
        leader_election=election,
        namespaces=args.namespace or [],
        liveness=args.liveness,
        metrics_port=args.metrics_port,
        metrics_address=args.metrics_address,
        verbose=args.verbose,
        log_level=args.log_level,
    )


def _simulate(args: argparse.Namespace) -> int:
    from llm_operator.simulate._cli import run

    return run(args)


def _images(args: argparse.Namespace) -> int:
    from llm_operator.images import run

    return run(args)


def _serve(args: argparse.Namespace) -> int:
    from llm_runtime.cli import run_serve

    return run_serve(args)


RUNTIME_IMAGE_HELP = (
    "the runtime image (default ghcr.io/llmops-dev/triton-llm-runtime:<version>, what `make images` tags): the "
    "python backend's default image, every model pod's openai container and its fetch-model init container "
    "(llm-fetch); the chart sets it from runtimeImage"
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llmctl", description=__doc__)
    parser.add_argument("--version", action="version", version=f"llmctl {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    dev = sub.add_parser("dev", help="a real local Kubernetes control plane with fake GPU nodes")
    dev_sub = dev.add_subparsers(dest="dev_command", required=True, metavar="ACTION")
    for action, func, helptext in (
        ("up", _dev_up, "start etcd, kube-apiserver, controller-manager, scheduler and kwok on 127.0.0.1"),
        ("down", _dev_down, "stop every process `dev up` started and remove its state"),
        ("status", _dev_status, "show the cluster's processes"),
    ):
        p = dev_sub.add_parser(action, help=helptext, description=helptext)
        p.add_argument("--name", default="dev", help="cluster name; state lives in $LLMCTL_STATE_DIR/NAME")
        p.add_argument("--kubeconfig", help="where to write the kubeconfig (default: STATE/kubeconfig)")
        p.set_defaults(func=func)
        if action == "up":
            p.add_argument("--gpu-nodes", type=int, help="on-demand GPU nodes (default from the profile: 4)")
            p.add_argument("--spot-nodes", type=int, help="spot GPU nodes, tainted llmops.dev/spot (default 2)")
            p.add_argument("--cpu-nodes", type=int, help="CPU-only nodes (default 2)")
            p.add_argument("--node-profile", help="YAML node-profile file (see e2e/nodes/default.yaml)")
            p.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for readiness")
            p.add_argument(
                "--metrics", action=argparse.BooleanOptionalAction, default=False,
                help="also start the metrics test bed: Prometheus, the traffic emulator and prometheus-adapter "
                "serving custom.metrics.k8s.io (off by default: it needs the prometheus package and the "
                "adapter build)",
            )
            p.add_argument("--startup-delay", type=float, default=None, metavar="SECONDS",
                           help="with --metrics: seconds an emulated model pod exports nothing after it starts "
                           "(its model load time; the emulator's default if not given)")

    traffic_help = "emulate the metrics of the model pods under a controllable load (see docs/metrics.md)"
    traffic = dev_sub.add_parser("traffic", help=traffic_help, description=traffic_help)
    from llm_operator.dev.traffic._cli import add_arguments as add_traffic_arguments

    add_traffic_arguments(traffic)
    traffic.set_defaults(func=_dev_traffic)

    crd = sub.add_parser("crd", help="print the LLMDeployment CRD generated from the API models")
    crd.add_argument("-o", "--output", help="write to this file instead of stdout")
    crd.add_argument("--check", action="store_true", help="exit 1 if the file differs from the models")
    crd.set_defaults(func=_crd)

    chart_help = ("write the Helm chart's generated files (CRD, RBAC rules, metrics rules, dashboard, values.yaml) "
                  "and docs/rbac.yaml, docs/helm-values.md from their sources")
    chart = sub.add_parser("chart", help=chart_help, description=chart_help)
    chart.add_argument("--check", action="store_true", help="exit 1 if a generated file is stale")
    chart.add_argument("--root", default=".", help="the repository root (default: the current directory)")
    chart.set_defaults(func=_chart)

    images_help = "build the operator and runtime images with podman (cached by content hash; see docs/images.md)"
    images = sub.add_parser("images", help=images_help, description=images_help)
    from llm_operator.images import add_arguments as add_images_arguments

    add_images_arguments(images)
    images.set_defaults(func=_images)

    render = sub.add_parser("render", help="print the manifests the operator would create, with no cluster")
    render.add_argument("-f", "--filename", required=True, help="YAML file with one or more LLMDeployments")
    render.add_argument("--runtime-image", default=None, metavar="IMAGE", help=RUNTIME_IMAGE_HELP)
    render.set_defaults(func=_render)

    run = sub.add_parser("run", help="run the operator against the current kubeconfig")
    run.add_argument("-n", "--namespace", action="append", help="watch only this namespace (repeatable)")
    run.add_argument("--runtime-image", default=None, metavar="IMAGE", help=RUNTIME_IMAGE_HELP)
    run.add_argument("--liveness", default=None, help="liveness endpoint, e.g. http://0.0.0.0:8080/healthz")
    run.add_argument("--metrics-port", type=int, default=None, help="serve Prometheus metrics on this port")
    run.add_argument("--metrics-address", default="127.0.0.1",
                     help="address the metrics port binds (default 127.0.0.1; 0.0.0.0 in a pod)")
    run.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default="info",
                     help="log level (default info; debug includes kopf's per-event messages, like -v)")
    run.add_argument("-v", "--verbose", action="store_true", help="the same as --log-level=debug")
    run.add_argument("--leader-elect", action=argparse.BooleanOptionalAction, default=False,
                     help="run as one of several replicas: only the holder of a coordination.k8s.io Lease "
                     "reconciles and writes, the others keep their watch caches warm (default off)")
    run.add_argument("--leader-election-id", default="triton-llm-operator", metavar="NAME",
                     help="the Lease's name (default triton-llm-operator)")
    run.add_argument("--leader-election-namespace", default=None, metavar="NS",
                     help="the Lease's namespace (default $POD_NAMESPACE, else the service account's, else default)")
    run.add_argument("--lease-duration", type=float, default=15.0, metavar="SECONDS",
                     help="how long followers wait after the last renewal they saw before taking over (default 15)")
    run.add_argument("--renew-deadline", type=float, default=10.0, metavar="SECONDS",
                     help="how long the leader retries renewing before it stops writing (default 10; "
                     "less than --lease-duration)")
    run.add_argument("--retry-period", type=float, default=2.0, metavar="SECONDS",
                     help="how often candidates try to acquire and the leader renews (default 2)")
    run.set_defaults(func=_run)

    simulate_help = "replay a request trace against autoscaling policies: SLO attainment and GPU-hours"
    simulate = sub.add_parser("simulate", help=simulate_help, description=simulate_help)
    from llm_operator.simulate._cli import add_arguments as add_simulate_arguments

    add_simulate_arguments(simulate)
    simulate.set_defaults(func=_simulate)

    serve = sub.add_parser("serve", help="serve a model locally with the real tritonserver")
    try:
        from llm_runtime.cli import add_serve_arguments
    except ImportError:  # the runtime package is optional at import time
        serve.add_argument("rest", nargs=argparse.REMAINDER)
    else:
        add_serve_arguments(serve)
    serve.set_defaults(func=_serve)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
