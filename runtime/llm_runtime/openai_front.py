"""OpenAI-compatible HTTP front (/v1/models, /v1/completions, /v1/chat/completions) in front of Triton.

A thin aiohttp process that renders chat templates and forwards every request to the Triton model over
gRPC streaming, so batching, admission and metrics stay in one place (the Triton model). Triton's own
OpenAI frontend needs the in-process `tritonserver` Python bindings, which the pip-installable
nvidia-pytriton wheel does not ship; this front works with the plain tritonserver binary.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from llm_runtime.errors import OverloadedError
from llm_runtime.front_metrics import (
    DEFAULT_MAX_INFLIGHT,
    FRONT_FAILURE,
    UPSTREAM_ERROR,
    FrontGuard,
    raise_nofile_limit,
)
from llm_runtime.triton_protocol import Chunk, GenParams, PythonProtocol, TritonProtocol

__all__ = ["ApiError", "Chunk", "GenParams", "OpenAIFront", "start_front"]

log = logging.getLogger("llm_runtime.openai")

_COMMON_FIELDS = {
    "model",
    "max_tokens",
    "temperature",
    "top_p",
    "top_k",
    "stop",
    "seed",
    "stream",
    "stream_options",
    "n",
    "user",
    "presence_penalty",
    "frequency_penalty",
    "ignore_eos",
    "logprobs",
}
_COMPLETION_FIELDS = _COMMON_FIELDS | {"prompt", "echo", "suffix", "best_of"}
_CHAT_FIELDS = _COMMON_FIELDS | {"messages", "max_completion_tokens", "top_logprobs"}
_MAX_STOP = 8
_JSON_KINDS = {list: "array", str: "string", int: "number", float: "number", bool: "boolean", type(None): "null"}
# Triton's INT32 inputs: a larger value would wrap around on the way to the model.
_MAX_INT32 = 2**31 - 1


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        retry_after_s: int | None = None,
        upstream: bool = False,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.retry_after_s = retry_after_s
        # True when the error is one Triton sent: Triton's model counted it (front_metrics.py).
        self.upstream = upstream

    def response(self) -> web.Response:
        err_type = "invalid_request_error" if self.status < 500 else "server_error"
        body = {"error": {"message": self.message, "type": err_type, "param": self.param, "code": self.code}}
        headers = {"Retry-After": str(self.retry_after_s)} if self.retry_after_s else None
        resp = web.json_response(body, status=self.status, headers=headers)
        resp[UPSTREAM_ERROR] = self.upstream
        return resp


# The runtime's validation messages start with the field they are about (sampling.py, engine.py).
_FIELD_IN_MESSAGE = re.compile(r"^(?:each )?(max_tokens|temperature|top_p|top_k|seed|stop|text_input|the prompt)\b")


def _from_triton_error(message: str) -> ApiError:
    if OverloadedError.MARKER in message:
        return ApiError(503, message, code="server_overloaded", retry_after_s=1, upstream=True)
    if "unknown model" in message.lower() or "is not found" in message:
        return ApiError(404, message, code="model_not_found", upstream=True)
    if "generation failed" in message or "internal error" in message:
        return ApiError(500, message, code="internal_error", upstream=True)
    m = _FIELD_IN_MESSAGE.match(message)
    param = None if m is None else {"text_input": "prompt", "the prompt": "prompt"}.get(m[1], m[1])
    return ApiError(400, message, param=param, upstream=True)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _parse_params(body: dict[str, Any], *, default_max_tokens: int | None, max_tokens_key: str) -> GenParams:
    def num(name: str, default: float, lo: float, hi: float, *, lo_open: bool = False) -> float:
        v = body.get(name)
        if v is None:
            return default
        above_lo = _is_num(v) and (float(v) > lo if lo_open else float(v) >= lo)
        if not above_lo or not float(v) <= hi:
            interval = f"in ({lo}, {hi}]" if lo_open else f"between {lo} and {hi}"
            raise ApiError(400, f"{name} must be a number {interval}, got {v!r}", param=name)
        return float(v)

    max_tokens = body.get(max_tokens_key, body.get("max_tokens"))
    if max_tokens is None:
        max_tokens = default_max_tokens
    elif not _is_int(max_tokens) or max_tokens < 1:
        raise ApiError(400, f"max_tokens must be a positive integer, got {max_tokens!r}", param="max_tokens")
    elif max_tokens > _MAX_INT32:
        raise ApiError(400, f"max_tokens={max_tokens} is far beyond any context window", param="max_tokens")
    top_k = body.get("top_k", 0)
    if top_k is None:
        top_k = 0
    if not _is_int(top_k) or not -1 <= top_k <= _MAX_INT32:
        raise ApiError(
            400, f"top_k must be an integer from -1 to {_MAX_INT32} (-1 or 0 disables it), got {top_k!r}", param="top_k"
        )
    stop = body.get("stop")
    if stop is None:
        stops: list[str] = []
    elif isinstance(stop, str):
        stops = [stop]
    elif isinstance(stop, list) and all(isinstance(s, str) for s in stop) and len(stop) <= _MAX_STOP:
        stops = list(stop)
    else:
        raise ApiError(400, f"stop must be a string or a list of at most {_MAX_STOP} strings", param="stop")
    seed = body.get("seed")
    if seed is not None and (not _is_int(seed) or not 0 <= seed < 2**63):
        raise ApiError(400, f"seed must be an integer between 0 and 2**63-1, got {seed!r}", param="seed")
    n = body.get("n")
    if n is not None and not (_is_int(n) and n == 1):
        raise ApiError(400, f"n={n!r} is not supported: use n=1 and send several requests", param="n")
    for name in ("presence_penalty", "frequency_penalty"):
        v = body.get(name)
        if v is not None and not (_is_num(v) and v == 0):
            raise ApiError(400, f"{name} is not supported: leave it unset or 0, got {v!r}", param=name)
    # Chat takes logprobs as a boolean, completions as a count: either way only "none" is served.
    for name in ("logprobs", "top_logprobs"):
        v = body.get(name)
        if v is not None and v is not False and not (_is_int(v) and v == 0):
            raise ApiError(400, f"{name} is not supported: leave {name} unset, got {v!r}", param=name)
    ignore_eos = body.get("ignore_eos", False)
    if not isinstance(ignore_eos, bool):
        raise ApiError(400, "ignore_eos must be true or false", param="ignore_eos")
    return GenParams(
        max_tokens=max_tokens,
        temperature=num("temperature", 1.0, 0.0, 2.0),
        top_p=num("top_p", 1.0, 0.0, 1.0, lo_open=True),
        top_k=max(0, top_k),
        stop=stops,
        seed=seed,
        ignore_eos=ignore_eos,
    )


class OpenAIFront:
    def __init__(
        self,
        *,
        model_name: str,
        tokenizer: Any,
        grpc_url: str,
        triton_model: str | None = None,
        protocol: TritonProtocol | None = None,
    ) -> None:
        self.model_name = model_name
        self.triton_model = triton_model or model_name
        self.tokenizer = tokenizer
        self.protocol: TritonProtocol = protocol or PythonProtocol()
        self.grpc_url = grpc_url
        self.created = int(time.time())
        self._client: Any = None
        self.inflight = 0
        self.guard: FrontGuard | None = None  # set by start_front
        self.app = web.Application(client_max_size=4 * 1024 * 1024)
        self.app.router.add_get("/v1/models", self.models)
        self.app.router.add_get("/v1/models/{name}", self.model)
        self.app.router.add_post("/v1/completions", self.completions)
        self.app.router.add_post("/v1/chat/completions", self.chat)
        self.app.router.add_get("/health", self.health)
        self.app.on_cleanup.append(self._close)

    def client(self) -> Any:
        if self._client is None:
            import tritonclient.grpc.aio as grpcclient

            self._client = grpcclient.InferenceServerClient(self.grpc_url)
        return self._client

    async def _close(self, _app: web.Application) -> None:
        if self._client is not None:
            await self._client.close()

    # ---- helpers ------------------------------------------------------------------------------------

    async def _body(self, request: web.Request, allowed: set[str]) -> dict[str, Any]:
        raw = await request.read()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ApiError(400, f"request body is not valid UTF-8 (byte {exc.start}): send UTF-8 JSON") from exc
        try:
            body = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ApiError(
                400, f"request body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
            ) from exc
        if not isinstance(body, dict):
            kind = _JSON_KINDS.get(type(body), type(body).__name__)
            raise ApiError(400, f"request body must be a JSON object {{...}}, got a JSON {kind}")
        unknown = sorted(set(body) - allowed)
        if unknown:
            raise ApiError(400, f"unknown field(s) {', '.join(unknown)}: remove them", param=unknown[0])
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise ApiError(400, f'model is required: set "model": "{self.model_name}"', param="model")
        if model != self.model_name:
            raise ApiError(
                404,
                f'model {model!r} does not exist here: use "{self.model_name}" (see GET /v1/models)',
                param="model",
                code="model_not_found",
            )
        return body

    async def generate(self, *, prompt: str, params: GenParams, stream: bool) -> AsyncIterator[Chunk]:
        import tritonclient.grpc as grpcclient

        inputs = []
        for t in self.protocol.inputs(prompt=prompt, params=params, stream=stream):
            tensor = grpcclient.InferInput(t.name, list(t.data.shape), t.datatype)
            tensor.set_data_from_numpy(t.data)
            inputs.append(tensor)
        read = self.protocol.decoder(prompt=prompt, params=params, stream=stream)

        async def requests() -> AsyncIterator[dict[str, Any]]:
            yield {"model_name": self.triton_model, "inputs": inputs, "request_id": uuid.uuid4().hex}

        responses = self.client().stream_infer(requests())
        done = False
        last: Chunk | None = None
        try:
            async for result, error in responses:
                if error is not None:
                    done = True  # an error response is the request's last one
                    raise _from_triton_error(str(error))
                reply = read(result, False)
                last = reply.chunk
                # Mark completion before yielding: a caller that stops after the last chunk leaves this
                # generator suspended, and cancelling a finished Triton request (on close) leaks it in
                # Triton 2.51, which then never finishes unloading the model at shutdown.
                done = reply.final
                yield reply.chunk
                if reply.chunk.finish_reason:
                    return
            done = True
            # The stream ended without a finish reason (a backend that does not report one): say so.
            if last is not None:
                yield Chunk("", "stop", last.prompt_tokens, last.completion_tokens)
        finally:
            if not done:
                # The HTTP client went away (or errored), or the front ended the request (a stop string):
                # cancelling the gRPC call cancels the Triton request, which frees its batch slot.
                responses.cancel()

    async def _first(self, it: AsyncIterator[Chunk]) -> Chunk:
        try:
            return await it.__anext__()
        except StopAsyncIteration as exc:
            raise ApiError(500, "the model ended the request without a response") from exc
        except ApiError:
            raise
        except Exception as exc:
            raise ApiError(503, f"the Triton server is not reachable: {exc}", retry_after_s=2) from exc

    # ---- endpoints ----------------------------------------------------------------------------------

    def _model_card(self) -> dict[str, Any]:
        return {"id": self.model_name, "object": "model", "created": self.created, "owned_by": "llm-runtime"}

    async def models(self, _request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [self._model_card()]})

    async def model(self, request: web.Request) -> web.Response:
        if request.match_info["name"] != self.model_name:
            return ApiError(
                404,
                f'model {request.match_info["name"]!r} does not exist here: use "{self.model_name}"',
                code="model_not_found",
            ).response()
        return web.json_response(self._model_card())

    async def health(self, _request: web.Request) -> web.Response:
        try:
            ready = await self.client().is_model_ready(self.triton_model)
        except Exception:
            ready = False
        return web.json_response({"ready": bool(ready)}, status=200 if ready else 503)

    async def completions(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await self._body(request, _COMPLETION_FIELDS)
            prompt = body.get("prompt")
            if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
                prompt = prompt[0]
            if not isinstance(prompt, str):
                raise ApiError(400, "prompt must be a string (or a list with exactly one string)", param="prompt")
            if not prompt:
                raise ApiError(400, "prompt is empty: send at least one character", param="prompt")
            # Only the values that change nothing pass (`True == 1` in Python, so compare types too).
            echo, suffix, best_of = body.get("echo"), body.get("suffix"), body.get("best_of")
            if echo is not None and echo is not False:
                raise ApiError(400, f"echo is not supported: leave it unset or false, got {echo!r}", param="echo")
            if suffix is not None and suffix != "":
                raise ApiError(400, f"suffix is not supported: leave it unset, got {suffix!r}", param="suffix")
            if best_of is not None and not (_is_int(best_of) and best_of == 1):
                raise ApiError(400, f"best_of={best_of!r} is not supported: leave it unset or 1", param="best_of")
            params = _parse_params(body, default_max_tokens=16, max_tokens_key="max_tokens")
            return await self._run(request, body, prompt, params, chat=False)
        except ApiError as err:
            return err.response()

    async def chat(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await self._body(request, _CHAT_FIELDS)
            prompt = self._render_chat(body.get("messages"))
            params = _parse_params(body, default_max_tokens=None, max_tokens_key="max_completion_tokens")
            return await self._run(request, body, prompt, params, chat=True)
        except ApiError as err:
            return err.response()

    def _render_chat(self, messages: Any) -> str:
        if not isinstance(messages, list) or not messages:
            raise ApiError(400, "messages must be a non-empty list of {role, content} objects", param="messages")
        norm = []
        for i, msg in enumerate(messages):
            if not isinstance(msg, dict) or msg.get("role") not in ("system", "user", "assistant", "developer"):
                raise ApiError(
                    400,
                    f"messages[{i}].role must be one of system, developer, user, assistant",
                    param=f"messages[{i}].role",
                )
            content = msg.get("content")
            if isinstance(content, list):
                parts = []
                for part in content:
                    if (
                        not isinstance(part, dict)
                        or part.get("type") != "text"
                        or not isinstance(part.get("text"), str)
                    ):
                        raise ApiError(
                            400,
                            f"messages[{i}].content parts must be {{type: text, text: ...}}; "
                            "images and audio are not supported",
                            param=f"messages[{i}].content",
                        )
                    parts.append(part["text"])
                content = "".join(parts)
            if not isinstance(content, str):
                raise ApiError(400, f"messages[{i}].content must be a string", param=f"messages[{i}].content")
            norm.append({"role": msg["role"], "content": content})
        if getattr(self.tokenizer, "chat_template", None):
            try:
                return str(self.tokenizer.apply_chat_template(norm, tokenize=False, add_generation_prompt=True))
            except Exception as exc:
                raise ApiError(
                    400, f"the model's chat template rejected the messages: {exc}", param="messages"
                ) from exc
        # Base models without a template: a plain transcript the model can continue.
        return "".join(f"{m['role']}: {m['content']}\n" for m in norm) + "assistant:"

    async def _run(
        self, request: web.Request, body: dict[str, Any], prompt: str, params: GenParams, *, chat: bool
    ) -> web.StreamResponse:
        stream = body.get("stream", False)
        if not isinstance(stream, bool):
            raise ApiError(400, "stream must be true or false", param="stream")
        opts = body.get("stream_options") or {}
        if not isinstance(opts, dict) or set(opts) - {"include_usage"}:
            raise ApiError(400, "stream_options accepts only include_usage", param="stream_options")
        rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex
        self.inflight += 1
        try:
            it = self.generate(prompt=prompt, params=params, stream=stream)
            first = await self._first(it)
            if not stream:
                return web.json_response(self._full(rid, first, chat=chat))
            return await self._sse(request, rid, first, it, chat=chat, include_usage=bool(opts.get("include_usage")))
        finally:
            self.inflight -= 1

    def _usage(self, c: Chunk) -> dict[str, int]:
        return {
            "prompt_tokens": c.prompt_tokens,
            "completion_tokens": c.completion_tokens,
            "total_tokens": c.prompt_tokens + c.completion_tokens,
        }

    def _full(self, rid: str, c: Chunk, *, chat: bool) -> dict[str, Any]:
        base = {"id": rid, "created": int(time.time()), "model": self.model_name, "usage": self._usage(c)}
        if chat:
            choice = {"index": 0, "message": {"role": "assistant", "content": c.text}, "finish_reason": c.finish_reason}
            return {**base, "object": "chat.completion", "choices": [choice]}
        choice2 = {"index": 0, "text": c.text, "finish_reason": c.finish_reason, "logprobs": None}
        return {**base, "object": "text_completion", "choices": [choice2]}

    def _chunk(self, rid: str, c: Chunk | None, *, chat: bool, first: bool) -> dict[str, Any]:
        base: dict[str, Any] = {"id": rid, "created": int(time.time()), "model": self.model_name}
        if c is None:
            return {**base, "object": "chat.completion.chunk" if chat else "text_completion", "choices": []}
        if chat:
            delta: dict[str, Any] = {"content": c.text}
            if first:
                delta["role"] = "assistant"
            choice = {"index": 0, "delta": delta, "finish_reason": c.finish_reason}
            return {**base, "object": "chat.completion.chunk", "choices": [choice]}
        return {
            **base,
            "object": "text_completion",
            "choices": [{"index": 0, "text": c.text, "finish_reason": c.finish_reason, "logprobs": None}],
        }

    async def _sse(
        self,
        request: web.Request,
        rid: str,
        first: Chunk,
        it: AsyncIterator[Chunk],
        *,
        chat: bool,
        include_usage: bool,
    ) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)

        async def send(obj: dict[str, Any]) -> None:
            await resp.write(b"data: " + json.dumps(obj).encode() + b"\n\n")

        last = first
        try:
            await send(self._chunk(rid, first, chat=chat, first=True))
            if not first.finish_reason:
                async for c in it:
                    last = c
                    await send(self._chunk(rid, c, chat=chat, first=False))
            if include_usage:
                await send({**self._chunk(rid, None, chat=chat, first=False), "usage": self._usage(last)})
            await resp.write(b"data: [DONE]\n\n")
        except ApiError as err:
            # Headers are gone already: report in-band, as OpenAI does.
            resp[FRONT_FAILURE] = err.status >= 500 and not err.upstream
            await send({"error": {"message": err.message, "type": "server_error", "code": err.code}})
        except (ConnectionResetError, asyncio.CancelledError):
            await it.aclose()  # type: ignore[attr-defined]
            raise
        except Exception as exc:  # the gRPC stream broke (Triton went away) after the 200 was sent
            log.warning("llm_runtime: stream %s broken off: %s", rid, exc)
            resp[FRONT_FAILURE] = True
            await send({"error": {"message": f"the Triton server stream failed: {exc}", "type": "server_error",
                                  "code": "internal_error"}})
        await resp.write_eof()
        return resp


async def start_front(
    front: OpenAIFront, *, host: str, port: int, max_inflight: int = DEFAULT_MAX_INFLIGHT
) -> web.AppRunner:
    """Serve ``front`` on host:port, with its guard (in-flight limit, own error counters, GET /metrics)."""
    front.guard = FrontGuard(model=front.triton_model, max_inflight=max_inflight)
    front.guard.install(front.app)
    nofile = raise_nofile_limit()
    log.info("OpenAI front: at most %d requests in flight, open-files limit %d", max_inflight, nofile)
    # handler_cancellation: a client that disconnects cancels its handler, which cancels the Triton request.
    # backlog: a burst of connections beyond the default 128 would wait for SYN retransmits (1 s, 3 s, ...).
    runner = web.AppRunner(front.app, handler_cancellation=True, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port, backlog=4096).start()
    return runner
