"""Run the operator in this process (``llmctl run``)."""

from __future__ import annotations

import logging
from typing import Any

import kopf


def run_operator(
    *,
    namespaces: list[str],
    liveness: str | None = None,
    metrics_port: int | None = None,
    metrics_address: str = "127.0.0.1",
    verbose: bool = False,
    log_level: str = "info",
    leader_election: Any = None,
) -> int:
    """``leader_election``: an ``llm_operator._leader.Config`` to run as one of several replicas (only the
    Lease's holder writes), or None for a single replica that always writes."""
    from llm_operator import handlers  # noqa: F401 - importing registers the handlers

    debug = verbose or log_level == "debug"
    kopf.configure(verbose=debug)
    if not debug:
        # kopf logs every successful event handler at INFO; with one event per child change that drowns
        # the operator's own messages.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
        if log_level in ("warning", "error"):
            logging.getLogger().setLevel(log_level.upper())
    if metrics_port is not None:
        from prometheus_client import start_http_server

        # Loopback unless asked: in a pod, Prometheus needs the pod IP (the Helm chart passes 0.0.0.0).
        start_http_server(metrics_port, addr=metrics_address)
    if leader_election is not None:
        leader_election.validate()
    # handlers.startup reads these from kopf's memo, where it also puts the controller, caches and elector.
    memo = kopf.Memo(leader_election=leader_election, namespaces=list(namespaces))
    kopf.run(
        memo=memo,
        standalone=True,
        clusterwide=not namespaces,
        namespaces=namespaces,
        liveness_endpoint=liveness,
    )
    return 0
