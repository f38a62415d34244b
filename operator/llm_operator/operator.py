"""Run the operator in this process (``llmctl run``)."""

from __future__ import annotations

import logging

import kopf


def run_operator(
    *,
    namespaces: list[str],
    liveness: str | None = None,
    metrics_port: int | None = None,
    verbose: bool = False,
) -> int:
    from llm_operator import handlers  # noqa: F401 - importing registers the handlers

    kopf.configure(verbose=verbose)
    if not verbose:
        # kopf logs every successful event handler at INFO; with one event per child change that drowns
        # the operator's own messages.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    if metrics_port is not None:
        from prometheus_client import start_http_server

        start_http_server(metrics_port)
    kopf.run(
        standalone=True,
        clusterwide=not namespaces,
        namespaces=namespaces,
        liveness_endpoint=liveness,
    )
    return 0
