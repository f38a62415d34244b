"""The OpenAI front's own guard and metrics: an in-flight limit, and the errors only the front sees.

Canary analysis reads request errors from the canonical counters ``llm_requests_failed_total`` and
``llm_requests_rejected_total`` (llm_runtime/metrics.py). The Triton model counts what happens inside it (a
full queue, a failed forward pass). What only the front sees, it counts itself, under the same names with the
label ``source="front"``, and serves on its own port at ``GET /metrics``:

* ``llm_requests_failed_total{source="front"}``: answers with a 5xx the front produced itself (Triton not
  reachable, the gRPC stream broke, the model ended a request without a response, a bug in the front), plus
  streams the front broke off with an in-band error for such a reason after the 200 was sent;
* ``llm_requests_rejected_total{source="front"}``: requests refused with 503 + Retry-After because the front
  already had ``max_inflight`` requests in flight (they never reach Triton);
* ``llm_front_inflight_requests``: requests the front is handling now (returns to 0 when idle).

A 5xx that carries an error Triton sent (the engine's "server is at capacity", a failed forward pass) is
marked ``upstream`` and not counted here: the Triton model counted it already, and counting it twice would
double the error rate. Requests answered with 4xx are not errors of the server and are counted nowhere.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from collections.abc import Awaitable, Callable
from typing import Any, Final

from aiohttp import web

from llm_runtime.metrics import METRIC_REQUESTS_FAILED, METRIC_REQUESTS_REJECTED

log = logging.getLogger("llm_runtime.openai")

METRIC_FRONT_INFLIGHT: Final = "llm_front_inflight_requests"
"""Gauge: requests the OpenAI front is handling (served on the front's own /metrics)."""
SOURCE_LABEL: Final = "source"
SOURCE_FRONT: Final = "front"
DEFAULT_MAX_INFLIGHT: Final = 4096



def _response_key(name: str) -> Any:
    # aiohttp >= 3.12 wants typed keys for a response's own storage; older ones take strings.
    key_type = getattr(web, "ResponseKey", None)
    return name if key_type is None else key_type(name, bool)


# Keys set on an aiohttp response (responses are mutable mappings) to tell the guard what it carries.
UPSTREAM_ERROR: Final = _response_key("llm_runtime.upstream_error")
"""The response carries an error Triton sent: Triton's model counted it already."""
FRONT_FAILURE: Final = _response_key("llm_runtime.front_failure")
"""A stream the front broke off (in-band error after the 200) for a reason of its own."""

# Paths that run a generation (the in-flight limit applies to these only; /health and /metrics always answer).
_GUARDED: Final = frozenset({"/v1/completions", "/v1/chat/completions"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class FrontGuard:
    """Counts the front's own failures and refusals, bounds in-flight requests, serves /metrics."""

    def __init__(self, *, model: str, version: str = "1", max_inflight: int = DEFAULT_MAX_INFLIGHT) -> None:
        self.model, self.version = model, version
        self.max_inflight = max_inflight
        self.inflight = 0
        self.failed = 0
        self.rejected = 0

    def install(self, app: web.Application) -> None:
        """Add the middleware and the /metrics route (before the app is started)."""
        app.middlewares.append(self.middleware)
        app.router.add_get("/metrics", self.serve_metrics)

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path not in _GUARDED:
            return await handler(request)
        if self.max_inflight > 0 and self.inflight >= self.max_inflight:
            self.rejected += 1
            body = {
                "error": {
                    "message": f"server is at capacity: the front has {self.inflight} requests in flight "
                    f"(limit {self.max_inflight}); retry after 1s",
                    "type": "server_error",
                    "param": None,
                    "code": "server_overloaded",
                }
            }
            return web.json_response(body, status=503, headers={"Retry-After": "1"})
        self.inflight += 1
        try:
            resp = await handler(request)
        except (web.HTTPException, asyncio.CancelledError, ConnectionResetError):
            raise  # routing answers (404/405) and clients that went away are not server errors
        except Exception:
            # A bug in the front: answer like every other error, and count it.
            log.exception("llm_runtime: the OpenAI front failed on %s", request.path)
            self.failed += 1
            body = {"error": {"message": "internal error in the OpenAI front", "type": "server_error",
                              "param": None, "code": "internal_error"}}
            return web.json_response(body, status=500)
        finally:
            self.inflight -= 1
        if resp.get(FRONT_FAILURE) or (resp.status >= 500 and not resp.get(UPSTREAM_ERROR)):
            self.failed += 1
            text = resp.text if isinstance(resp, web.Response) else "(stream broken off)"
            log.warning("llm_runtime: the OpenAI front answered %s %d: %s", request.path, resp.status, text)
        return resp

    def render(self) -> str:
        labels = f'model="{_label_value(self.model)}",version="{_label_value(self.version)}"'
        src = f'{labels},{SOURCE_LABEL}="{SOURCE_FRONT}"'
        return (
            f"# HELP {METRIC_REQUESTS_FAILED} Requests answered with a 5xx the OpenAI front produced itself\n"
            f"# TYPE {METRIC_REQUESTS_FAILED} counter\n"
            f"{METRIC_REQUESTS_FAILED}{{{src}}} {self.failed}\n"
            f"# HELP {METRIC_REQUESTS_REJECTED} Requests the OpenAI front refused: too many in flight\n"
            f"# TYPE {METRIC_REQUESTS_REJECTED} counter\n"
            f"{METRIC_REQUESTS_REJECTED}{{{src}}} {self.rejected}\n"
            f"# HELP {METRIC_FRONT_INFLIGHT} Requests the OpenAI front is handling\n"
            f"# TYPE {METRIC_FRONT_INFLIGHT} gauge\n"
            f"{METRIC_FRONT_INFLIGHT}{{{labels}}} {self.inflight}\n"
        )

    async def serve_metrics(self, _request: web.Request) -> web.Response:
        return web.Response(text=self.render(), content_type="text/plain", charset="utf-8",
                            headers={"Cache-Control": "no-cache"})


def raise_nofile_limit() -> int:
    """Raise this process's soft open-files limit to the hard one (every client connection is a file) and
    return it. A front with the common soft default of 1024 fails to accept connections beyond that."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            log.warning("llm_runtime: could not raise the open-files limit above %d", soft)
    return int(soft)
