"""The runtime under attack (issue 13), fast version: 10x overload, hostile input, 1000 streams opened and dropped,
and the OpenAI front's own error counter (issue 12). The full-size run is bench/runtime_attack.py."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from llm_runtime.front_metrics import FrontGuard
from llm_runtime.openai_front import ApiError, Chunk, OpenAIFront, start_front
from runtime_attack_client import open_and_drop_streams, overload, raise_nofile, scrape, tree_rss, wait_drained
from runtime_serving_helpers import Served, free_ports, post_json, start_serve

BATCH = 2
QUEUE = 2
MAX_INFLIGHT = 24  # below 10x capacity (40): the front's own limit refuses too, with the same 503 + Retry-After
MIB = 1024 * 1024


@pytest.fixture(scope="module")
def served(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    raise_nofile(4096)
    s = start_serve(tmp_path_factory.mktemp("attack"), "--model-dir", str(tiny_model_dir), "--max-batch-size",
                    str(BATCH), "--max-queue-size", str(QUEUE), "--max-inflight", str(MAX_INFLIGHT),
                    "--exit-timeout", "10")
    yield s
    s.stop_cleanly()


def _front_metrics(s: Served) -> dict[str, float]:
    return scrape(f"http://127.0.0.1:{s.openai_port}/metrics")


def _drained(s: Served, timeout_s: float = 30) -> None:
    took, last = wait_drained(triton_metrics_url=f"http://127.0.0.1:{s.metrics_port}/metrics",
                              front_metrics_url=f"http://127.0.0.1:{s.openai_port}/metrics", timeout_s=timeout_s)
    assert took is not None, f"still busy after {timeout_s}s: {last}"


@pytest.mark.triton
def test_tenfold_overload_is_refused_with_503_and_retry_after_and_memory_stays_bounded(served: Served) -> None:
    post_json(f"{served.openai_base}/completions", {"model": "tiny", "prompt": "warm", "max_tokens": 8})
    rss_before = tree_rss(served.proc.pid)["total"]
    triton_before = served.metrics()
    front_before = _front_metrics(served)
    outcome, _ = asyncio.run(overload(openai_base=served.openai_base, triton_base=served.http_base,
                                      model=served.model, concurrency=10 * (BATCH + QUEUE), duration_s=3,
                                      max_tokens=24))
    _drained(served)
    rss_after = tree_rss(served.proc.pid)["total"]
    assert served.proc.poll() is None
    assert not outcome.errors, outcome.errors  # every request got an HTTP answer
    statuses = {key.rsplit(" ", 1)[1] for key in outcome.statuses}
    assert statuses <= {"200", "503", "400"}, outcome.statuses
    served_ok = sum(n for k, n in outcome.statuses.items() if k.endswith(" 200"))
    refused = sum(n for k, n in outcome.statuses.items() if not k.endswith(" 200"))
    assert served_ok >= BATCH and refused > served_ok, outcome.statuses
    assert outcome.served_s and max(outcome.refused_s) < 30, "a refusal must not wait behind the batch"
    for key in outcome.retry_after:
        kind, status, retry = key.split(" ")
        if kind.startswith("openai"):
            # The OpenAI front: 503 + Retry-After, whether the engine's queue or the front's own limit refused.
            assert (status, retry) == ("503", "Retry-After=1"), outcome.retry_after
        else:
            # Triton 2.51's generate endpoint answers every error of a python-backend response with 400 and sets
            # no header: the message is what tells the client to retry (docs/runtime.md).
            assert status == "400", outcome.retry_after
    assert all("server is at capacity" in m and "retry after 1s" in m for m in outcome.refusal_messages)
    # Each refusal counted once: by the engine (its queue) or by the front (its in-flight limit). The model's
    # counters are published every 100 ms: give them a moment.
    deadline = time.monotonic() + 5
    while True:
        triton_after, front_after = served.metrics(), _front_metrics(served)
        counted = (triton_after["llm_requests_rejected_total"] - triton_before["llm_requests_rejected_total"]
                   + front_after["llm_requests_rejected_total"] - front_before["llm_requests_rejected_total"])
        if counted == refused or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert counted == refused, (counted, outcome.statuses)
    assert front_after["llm_requests_failed_total"] == front_before["llm_requests_failed_total"]
    assert triton_after["llm_requests_failed_total"] == triton_before["llm_requests_failed_total"]
    # Bounded memory: the whole tree (tritonserver + stub + front) grows by allocator reuse only.
    assert rss_after - rss_before < 200 * MIB, (rss_before / MIB, rss_after / MIB)


@pytest.mark.triton
def test_streams_opened_and_dropped_leave_nothing_behind(served: Served) -> None:
    n = 1000
    raise_nofile(n + 1000)
    rss_before = tree_rss(served.proc.pid)["total"]
    front_before = _front_metrics(served)
    seen = asyncio.run(open_and_drop_streams(openai_base=served.openai_base, model=served.model, n=n,
                                             max_tokens=200))
    assert sum(v for k, v in seen.items() if k.startswith("client error")) == 0, seen
    assert seen["status 200"] >= 1 and seen["status 503"] >= 1, seen
    assert seen["refused, Retry-After=1"] == seen["status 503"], seen
    # Nothing running, queued, pending in Triton, or in flight in the front; dropped clients are no errors.
    _drained(served)
    front_after = _front_metrics(served)
    assert front_after["llm_front_inflight_requests"] == 0
    assert front_after["llm_requests_failed_total"] == front_before["llm_requests_failed_total"]
    rss_after = tree_rss(served.proc.pid)["total"]
    assert rss_after - rss_before < 300 * MIB, (rss_before / MIB, rss_after / MIB)
    status, body, _ = post_json(f"{served.openai_base}/completions",
                                {"model": "tiny", "prompt": "still there", "max_tokens": 4})
    assert status == 200, body


LONG = "x" * 600  # the tiny model's context window is 512 tokens, one token per byte

# (body sent raw, field the message and `param` must name) for the OpenAI front's /v1/completions.
FRONT_CASES: list[tuple[bytes, str | None]] = [
    (b'{"model": "tiny", "prompt": "hi", "temperature": NaN}', "temperature"),
    (b'{"model": "tiny", "prompt": "hi", "temperature": Infinity}', "temperature"),
    (b'{"model": "tiny", "prompt": "hi", "temperature": -0.5}', "temperature"),
    (b'{"model": "tiny", "prompt": "hi", "top_p": -Infinity}', "top_p"),
    (b'{"model": "tiny", "prompt": "hi", "top_p": 0}', "top_p"),
    (b'{"model": "tiny", "prompt": "hi", "top_k": -7}', "top_k"),
    (b'{"model": "tiny", "prompt": "hi", "seed": -1}', "seed"),
    (b'{"model": "tiny", "prompt": "hi", "max_tokens": 99999999}', "max_tokens"),
    (b'{"model": "tiny", "prompt": "hi", "max_tokens": 1e400}', "max_tokens"),
    (b'{"model": "tiny", "prompt": "hi", "max_tokens": -1}', "max_tokens"),
    (b'{"model": "tiny", "prompt": "hi", "max_tokens": "16"}', "max_tokens"),
    (b'{"model": "tiny", "prompt": "hi", "temperature": "hot"}', "temperature"),
    (b'{"model": "tiny", "prompt": "hi", "stream": "yes"}', "stream"),
    (b'{"model": "tiny", "prompt": 5}', "prompt"),
    (json.dumps({"model": "tiny", "prompt": LONG}).encode(), "prompt"),
    (b'{"model": "tiny", "prompt": "\xff\xfe"}', None),  # invalid UTF-8: the body as a whole
    (b'{"model": "tiny", "prompt": "hi",', None),  # invalid JSON
]

# Triton's own generate endpoint, for what reaches our python model's validation.
TRITON_CASES: list[tuple[bytes, str]] = [
    (b'{"text_input": "hi", "temperature": NaN}', "temperature"),
    (b'{"text_input": "hi", "temperature": -Infinity}', "temperature"),
    (b'{"text_input": "hi", "temperature": -1}', "temperature"),
    (b'{"text_input": "hi", "top_p": -0.5}', "top_p"),
    (b'{"text_input": "hi", "top_k": -2}', "top_k"),
    (b'{"text_input": "hi", "seed": -1}', "seed"),
    (b'{"text_input": "hi", "max_tokens": 99999999}', "max_tokens"),
    (b'{"text_input": "hi", "max_tokens": -3}', "max_tokens"),
    (b'{"text_input": "\xff\xfe", "max_tokens": 4}', "text_input"),
    (json.dumps({"text_input": LONG, "max_tokens": 4}).encode(), "prompt"),
    (b'{"text_input": "hi", "bogus": 1}', "bogus"),
]


@pytest.mark.triton
def test_hostile_input_gets_4xx_naming_the_field(served: Served) -> None:
    for raw, field in FRONT_CASES:
        status, body, _ = post_json(f"{served.openai_base}/completions", None, raw=raw)
        assert status == 400, (raw[:80], body)
        err = body["error"]
        assert err["type"] == "invalid_request_error"
        if field is not None:
            assert field in err["message"] and err["param"] == field, (raw[:80], err)
    gen = f"{served.http_base}/v2/models/{served.model}/generate"
    for raw, field in TRITON_CASES:
        status, body, _ = post_json(gen, None, raw=raw)
        assert status == 400 and field in body["error"], (raw[:80], body)
    # What Triton's own JSON parser refuses never reaches the model: Triton 2.51 answers 500 with its parser's
    # message (documented in docs/runtime.md; put clients that need strict answers on the OpenAI front).
    for raw in (b'{"text_input": "hi",', b'{"text_input": "hi", "max_tokens": "4"}'):
        status, _, _ = post_json(gen, None, raw=raw)
        assert status == 500
    # And the server still serves, with nothing counted as a server error.
    assert post_json(gen, {"text_input": "ok", "max_tokens": 4})[0] == 200
    assert _front_metrics(served)["llm_requests_failed_total"] == 0


# ---- the front's own error counter (issue 12), no Triton needed ---------------------------------------------


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _front_without_triton(max_inflight: int = 8) -> tuple[OpenAIFront, web.AppRunner, str]:
    front = OpenAIFront(model_name="m", tokenizer=None, grpc_url=f"127.0.0.1:{_closed_port()}")
    (port,) = free_ports(1)
    runner = await start_front(front, host="127.0.0.1", port=port, max_inflight=max_inflight)
    return front, runner, f"http://127.0.0.1:{port}"


def _parse(text: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def test_a_front_whose_triton_is_down_answers_503_and_counts_it() -> None:
    async def run() -> None:
        _front, runner, base = await _front_without_triton()
        failed = 'llm_requests_failed_total{model="m",version="1",source="front"}'
        try:
            async with aiohttp.ClientSession() as session:
                for stream in (False, True):
                    body = {"model": "m", "prompt": "hi", "max_tokens": 4, "stream": stream}
                    async with session.post(f"{base}/v1/completions", json=body) as r:
                        assert r.status == 503 and r.headers["Retry-After"] == "2"
                        assert "not reachable" in (await r.json())["error"]["message"]
                # A client mistake is no server error: not counted.
                async with session.post(f"{base}/v1/completions", json={"model": "m", "prompt": ""}) as r:
                    assert r.status == 400
                async with session.get(f"{base}/metrics") as r:
                    assert r.status == 200
                    values = _parse(await r.text())
            assert values[failed] == 2
            assert values['llm_requests_rejected_total{model="m",version="1",source="front"}'] == 0
            assert values['llm_front_inflight_requests{model="m",version="1"}'] == 0
        finally:
            await runner.cleanup()

    asyncio.run(run())


def test_the_guard_counts_only_what_the_front_produced() -> None:
    """An error Triton sent (the engine counted it) is not counted again; the front's own 5xx, a crash in a
    handler, and refusals at the in-flight limit are; routing answers and 4xx are not."""

    async def run() -> None:
        guard = FrontGuard(model="m", max_inflight=1)
        app = web.Application()
        release = asyncio.Event()

        async def upstream_503(_r: web.Request) -> web.StreamResponse:
            return ApiError(503, "server is at capacity: ...", retry_after_s=1, upstream=True).response()

        async def upstream_500(_r: web.Request) -> web.StreamResponse:
            return ApiError(500, "generation failed: boom", upstream=True).response()

        async def own_500(_r: web.Request) -> web.StreamResponse:
            return ApiError(500, "the model ended the request without a response").response()

        async def crash(_r: web.Request) -> web.StreamResponse:
            raise RuntimeError("bug")

        async def slow(_r: web.Request) -> web.StreamResponse:
            await release.wait()
            return web.json_response({})

        handlers: dict[str, Any] = {"upstream_503": upstream_503, "upstream_500": upstream_500,
                                    "own_500": own_500, "crash": crash, "slow": slow}

        async def dispatch(request: web.Request) -> web.StreamResponse:
            return await handlers[request.headers["X-Case"]](request)

        app.router.add_post("/v1/completions", dispatch)
        guard.install(app)
        runner = web.AppRunner(app)
        await runner.setup()
        (port,) = free_ports(1)
        await web.TCPSite(runner, "127.0.0.1", port).start()
        url = f"http://127.0.0.1:{port}/v1/completions"
        try:
            async with aiohttp.ClientSession() as s:
                got = {}
                for case in ("upstream_503", "upstream_500", "own_500", "crash"):
                    async with s.post(url, headers={"X-Case": case}) as r:
                        got[case] = r.status
                assert got == {"upstream_503": 503, "upstream_500": 500, "own_500": 500, "crash": 500}
                assert guard.failed == 2 and guard.rejected == 0
                async def slow_request() -> aiohttp.ClientResponse:
                    return await s.post(url, headers={"X-Case": "slow"})

                blocked = asyncio.create_task(slow_request())
                while guard.inflight < 1:
                    await asyncio.sleep(0.01)
                async with s.post(url, headers={"X-Case": "own_500"}) as r:
                    assert r.status == 503 and r.headers["Retry-After"] == "1"
                assert guard.rejected == 1 and guard.failed == 2
                release.set()
                (await blocked).release()
                async with s.get(f"http://127.0.0.1:{port}/nothing") as r:
                    assert r.status == 404
            assert guard.inflight == 0 and guard.failed == 2
        finally:
            await runner.cleanup()

    asyncio.run(run())


class _BreakingFront(OpenAIFront):
    """A front whose Triton stream sends one chunk and then fails: with an error of the front's own (the gRPC
    stream broke) or with one Triton sent (the model failed; the model counts that one)."""

    upstream = False

    async def generate(self, *, prompt: str, params: Any, stream: bool) -> Any:
        yield Chunk("hel", None, 2, 1)
        await asyncio.sleep(0)
        if self.upstream:
            raise ApiError(500, "generation failed: out of memory", code="internal_error", upstream=True)
        raise RuntimeError("StatusCode.UNAVAILABLE: Socket closed")


def test_a_stream_broken_after_the_200_is_counted_only_when_the_front_broke_it() -> None:
    async def run(upstream: bool) -> tuple[str, float]:
        front = _BreakingFront(model_name="m", tokenizer=None, grpc_url=f"127.0.0.1:{_closed_port()}")
        front.upstream = upstream
        (port,) = free_ports(1)
        runner = await start_front(front, host="127.0.0.1", port=port)
        try:
            async with aiohttp.ClientSession() as session:
                body = {"model": "m", "prompt": "hi", "max_tokens": 4, "stream": True}
                async with session.post(f"http://127.0.0.1:{port}/v1/completions", json=body) as r:
                    assert r.status == 200
                    text = await r.text()
                async with session.get(f"http://127.0.0.1:{port}/metrics") as r:
                    values = _parse(await r.text())
            return text, values['llm_requests_failed_total{model="m",version="1",source="front"}']
        finally:
            await runner.cleanup()

    text, failed = asyncio.run(run(upstream=False))
    assert '"text": "hel"' in text and "the Triton server stream failed" in text and failed == 1
    text, failed = asyncio.run(run(upstream=True))
    assert "generation failed" in text and failed == 0
