"""Prometheus HTTP API instant query: the only I/O of the canary analysis (analysis.py injects it).

Every way of not getting one number back, other than an empty answer, is a :class:`PrometheusError`, so the
caller has exactly two outcomes to handle: a value (or None for no data), or "Prometheus could not be asked".
"""

from __future__ import annotations

import http.client
import json
import socket
import urllib.error
import urllib.parse
import urllib.request
from typing import Any


class PrometheusError(Exception):
    """Prometheus could not answer: unreachable, too slow, an HTTP or query error, or not one number."""


def query(address: str, promql: str, *, timeout: float) -> float | None:
    """The value of the instant query `promql` at `address` (e.g. `http://prometheus.monitoring:9090`).

    None when the answer is an empty vector (no data). NaN comes back as NaN: deciding that NaN is no data is
    the verdict's job, not the transport's.
    """
    # Prometheus's own `timeout` parameter (float seconds) stops the evaluation on the server too, so a slow
    # query does not keep running there after we gave up on it.
    params = urllib.parse.urlencode({"query": promql, "timeout": f"{timeout:g}"})
    url = f"{address.rstrip('/')}/api/v1/query?{params}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            body = response.read()
    except urllib.error.HTTPError as e:  # before URLError: it is one
        raise PrometheusError(f"HTTP {e.code} {e.reason}{_api_error(e.read())}") from e
    except urllib.error.URLError as e:
        raise PrometheusError(_reason(e.reason, timeout)) from e
    except TimeoutError as e:  # a read that stalls after the connection is up
        raise PrometheusError(f"timed out after {timeout:g}s") from e
    except (OSError, http.client.HTTPException, ValueError) as e:
        raise PrometheusError(f"{type(e).__name__}: {e}") from e
    return _value(body, promql)


def _reason(reason: Any, timeout: float) -> str:
    if isinstance(reason, TimeoutError):
        return f"timed out after {timeout:g}s"
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, socket.gaierror):
        return f"cannot resolve the host ({reason})"
    return str(reason)


def _api_error(body: bytes) -> str:
    """Prometheus explains 4xx/5xx answers in a JSON body (errorType bad_data, execution, timeout...)."""
    try:
        doc = json.loads(body)
        return f": {doc['errorType']}: {doc['error']}"
    except (ValueError, KeyError, TypeError):
        text = body.decode("utf-8", "replace").strip()
        return f": {text[:200]}" if text else ""


def _value(body: bytes, promql: str) -> float | None:
    try:
        doc = json.loads(body)
    except ValueError as e:
        raise PrometheusError("the answer is not JSON (is the address a Prometheus?)") from e
    if not isinstance(doc, dict) or doc.get("status") != "success":
        detail = f"{doc.get('errorType')}: {doc.get('error')}" if isinstance(doc, dict) else str(doc)[:200]
        raise PrometheusError(f"query failed: {detail}")
    try:
        kind, result = doc["data"]["resultType"], doc["data"]["result"]
        if kind == "scalar":
            return float(result[1])
        if kind == "vector":
            if not result:
                return None
            if len(result) == 1:
                return float(result[0]["value"][1])
    except (KeyError, IndexError, TypeError, ValueError) as e:
        raise PrometheusError(f"malformed answer: {body.decode('utf-8', 'replace')[:200]}") from e
    if kind == "vector":
        # Picking one of several series would compare arbitrary pods or backends: a custom query must
        # aggregate itself.
        raise PrometheusError(f"the query returned {len(result)} series, a check needs one number "
                              f"(aggregate it, e.g. with sum or max): {promql}")
    raise PrometheusError(f"the query returned a {kind}, a check needs one number: {promql}")
