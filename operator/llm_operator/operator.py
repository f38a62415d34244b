"""Run the operator in this process (``llmctl run``)."""

from __future__ import annotations

import ctypes
import logging
import os
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
    _fewer_malloc_arenas()
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


M_ARENA_MAX = -8  # glibc's malloc.h


def _fewer_malloc_arenas(arenas: int = 2) -> bool:
    """Cap glibc's malloc arenas before any thread starts. glibc gives threads that allocate at the same time
    arenas of their own (up to 8 per core), and memory freed in one stays there: with the work queue's workers,
    the informers' watch threads and kopf's, the caches' churn of objects scatters free memory over many arenas
    and RSS grows with it. The GIL lets one thread at a time run Python, so fewer arenas cost no speed.
    MALLOC_ARENA_MAX, when set, wins (glibc read it at start-up); not glibc (musl, macOS): nothing to do."""
    if "MALLOC_ARENA_MAX" in os.environ:
        return False
    try:
        return bool(ctypes.CDLL("libc.so.6").mallopt(M_ARENA_MAX, arenas))
    except (OSError, AttributeError):
        return False
