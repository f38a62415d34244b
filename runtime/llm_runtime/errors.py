"""Errors the runtime reports to clients, each mapped to one HTTP status (and gRPC code)."""

from __future__ import annotations


class RuntimeRequestError(Exception):
    """A request-level error: the message tells the client what to change."""

    http_status = 400


class BadRequestError(RuntimeRequestError):
    """The request itself is invalid (HTTP 400, gRPC INVALID_ARGUMENT)."""

    http_status = 400


class OverloadedError(RuntimeRequestError):
    """The admission queue is full or the request waited too long (HTTP 503, gRPC UNAVAILABLE)."""

    http_status = 503

    # Every overload message contains this marker: the OpenAI front maps gRPC stream errors (which carry
    # only a message) back to 503 + Retry-After through it.
    MARKER = "server is at capacity"

    def __init__(self, detail: str, *, retry_after_s: int = 1) -> None:
        self.retry_after_s = retry_after_s
        super().__init__(f"{self.MARKER}: {detail}; retry after {retry_after_s}s")
