"""Command line of the emulator. The flags ``--kubeconfig``, ``--listen`` and ``--startup-delay`` are a contract
with ``llmctl dev up --metrics``, which starts ``python -m llm_operator.dev.traffic`` with them."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

DEFAULT_LISTEN = "127.0.0.1:9400"


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"--listen must be HOST:PORT (e.g. 127.0.0.1:9400), got {text!r}")
    return host.strip("[]"), int(port)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"seconds must be >= 0, got {text!r}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG"),
                        help="cluster whose model pods to emulate (default: $KUBECONFIG)")
    parser.add_argument("--listen", type=parse_listen, default=parse_listen(DEFAULT_LISTEN), metavar="HOST:PORT",
                        help=f"address of /metrics and the control API (default {DEFAULT_LISTEN}; port 0 picks one)")
    parser.add_argument("--startup-delay", type=_seconds, default=0.0, metavar="SECONDS",
                        help="a pod exports nothing and gets no load until it has been Ready this long (model load)")
    parser.add_argument("--config", type=Path, metavar="FILE",
                        help="control file (YAML/JSON: loads, capacities, behaviours, slos), re-applied on change")
    parser.add_argument("--tick", type=_seconds, default=1.0, metavar="SECONDS",
                        help="how often the pod list and the model advance between scrapes (default 1)")


def run(args: argparse.Namespace) -> int:
    from llm_operator.dev.traffic._kube import KubePodSource
    from llm_operator.dev.traffic._model import TrafficModel
    from llm_operator.dev.traffic._server import ControlFile, Emulator, TrafficServer

    def log(msg: str) -> None:
        print(f"traffic: {msg}", file=sys.stderr, flush=True)

    if args.config is not None and not args.config.is_file():
        log(f"control file {args.config} does not exist")
        return 2
    host, port = args.listen
    # Serve at once, even before the first pod list: /healthz tells the starter the process is up, and a list
    # that fails (API server not ready yet) is retried by the watch thread.
    source = KubePodSource(kubeconfig=args.kubeconfig, log=log).start()
    model = TrafficModel(start=time.time(), startup_delay=args.startup_delay)
    emulator = Emulator(model=model, source=source, clock=time.time)
    server = TrafficServer(
        emulator=emulator,
        host=host,
        port=port,
        tick_seconds=args.tick or 1.0,
        control_file=ControlFile(args.config) if args.config else None,
        log=log,
    )
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    server.start()
    log(f"serving {server.url}/metrics (control: PUT /load /capacity /behaviour /slo, GET /state); "
        f"startup delay {args.startup_delay:g}s")
    try:
        done.wait()
    finally:
        server.stop()
        source.stop()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llm_operator.dev.traffic", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))
