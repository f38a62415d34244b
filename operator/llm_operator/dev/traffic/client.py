"""A small client for a running traffic emulator, for tests and demos.

>>> c = TrafficClient("http://127.0.0.1:9400")
>>> c.set_load(namespace="team-a", name="llama", rps=20, prompt_tokens=512, output_tokens=256)
>>> c.set_behaviour(revision="r0123abcd", behaviour="slow")
>>> c.play(step_profile(namespace="team-a", name="llama", levels=[(0, 2), (60, 20), (180, 2)]))
"""

from __future__ import annotations

import contextlib
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from llm_operator.dev.traffic._profile import Step, play, step_profile

__all__ = ["Step", "TrafficClient", "TrafficClientError", "step_profile"]


class TrafficClientError(RuntimeError):
    """The emulator refused a request (the message is its own) or could not be reached."""


class TrafficClient:
    def __init__(self, base_url: str, *, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout

    def _request(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> bytes:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"{self.base_url}{path}", data=data, method=method,
                                     headers={"Content-Type": "application/json"} if data else {})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return bytes(resp.read())
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")
            with contextlib.suppress(ValueError, KeyError, TypeError):
                detail = json.loads(detail)["error"]
            raise TrafficClientError(f"{method} {path}: {exc.code} {detail}") from None
        except urllib.error.URLError as exc:
            raise TrafficClientError(f"{method} {path}: {exc.reason}") from None

    def _put(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self._request("PUT", path, body))
        return result

    def set_load(
        self,
        *,
        namespace: str,
        name: str,
        rps: float,
        prompt_tokens: float | None = None,
        output_tokens: float | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"namespace": namespace, "name": name, "rps": rps}
        if prompt_tokens is not None:
            body["promptTokens"] = prompt_tokens
        if output_tokens is not None:
            body["outputTokens"] = output_tokens
        return self._put("/load", body)

    def set_capacity(
        self,
        *,
        namespace: str,
        name: str,
        tokens_per_second: float | None = None,
        batch_slots: int | None = None,
        prefill_tokens_per_second: float | None = None,
        kv_cache_tokens: float | None = None,
        max_queue: int | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"namespace": namespace, "name": name}
        for key, value in (("tokensPerSecond", tokens_per_second), ("batchSlots", batch_slots),
                           ("prefillTokensPerSecond", prefill_tokens_per_second),
                           ("kvCacheTokens", kv_cache_tokens), ("maxQueue", max_queue)):
            if value is not None:
                body[key] = value
        return self._put("/capacity", body)

    def set_behaviour(
        self,
        *,
        behaviour: str | Mapping[str, Any] | None,
        revision: str | None = None,
        image_tag_suffix: str | None = None,
    ) -> dict[str, Any]:
        """Name a behaviour (``slow``, ``faulty``, ``normal``, or one defined before), give one inline
        (``{"ttftFactor": 5, "errorRatio": 0.5}``), or None to remove the assignment."""
        body: dict[str, Any] = {"behaviour": behaviour}
        if revision is not None:
            body["revision"] = revision
        if image_tag_suffix is not None:
            body["imageTagSuffix"] = image_tag_suffix
        return self._put("/behaviour", body)

    def set_slo(self, *, namespace: str, name: str, ttft_seconds: float) -> dict[str, Any]:
        """Count this LLMDeployment's requests against a TTFT SLO from now on (``state()["llmdeployments"]``)."""
        return self._put("/slo", {"namespace": namespace, "name": name, "ttftSeconds": ttft_seconds})

    def state(self) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self._request("GET", "/state"))
        return result

    def metrics(self) -> str:
        return self._request("GET", "/metrics").decode()

    def healthy(self) -> bool:
        try:
            return self._request("GET", "/healthz").strip() == b"ok"
        except TrafficClientError:
            return False

    def play(
        self,
        steps: Iterable[Step],
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """Apply a scripted profile in real time (blocks until its last step)."""

        def apply(step: Step) -> None:
            self.set_load(namespace=step.namespace, name=step.name, rps=step.rps, prompt_tokens=step.prompt_tokens,
                          output_tokens=step.output_tokens)

        play(steps, apply=apply, clock=clock, sleep=sleep)
