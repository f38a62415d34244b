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

    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    kopf.configure(verbose=verbose)
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
