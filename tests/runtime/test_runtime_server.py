"""The runtime served by the real tritonserver from the nvidia-pytriton wheel (one server per module)."""

from __future__ import annotations

import json
import queue
import threading
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import openai
import pytest
import tritonclient.grpc as grpcclient
from llm_runtime.tiny import create_tiny_model
from runtime_serving_helpers import Served, post_json, sse_events, start_serve

pytestmark = pytest.mark.triton

BATCH = 8
QUEUE = 8


@pytest.fixture(scope="module")
def served(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    s = start_serve(
        tmp_path_factory.mktemp("served"),
        "--model-dir",
        str(tiny_model_dir),
        "--max-batch-size",
        str(BATCH),
        "--max-queue-size",
        str(QUEUE),
        "--exit-timeout",
        "10",
    )
    yield s
    s.stop_cleanly()


@pytest.fixture
def client(served: Served) -> Any:
    return openai.OpenAI(base_url=served.openai_base, api_key="unused", max_retries=0, timeout=120)


def _inputs(prompt: str, **kw: Any) -> list[Any]:
    spec = {
        "max_tokens": ("INT32", np.int32),
        "temperature": ("FP32", np.float32),
        "seed": ("INT64", np.int64),
        "stream": ("BOOL", bool),
        "ignore_eos": ("BOOL", bool),
        "top_k": ("INT32", np.int32),
    }
    t = grpcclient.InferInput("text_input", [1], "BYTES")
    t.set_data_from_numpy(np.array([prompt.encode()], dtype=np.object_))
    out = [t]
    for name, value in kw.items():
        dtype, np_type = spec[name]
        inp = grpcclient.InferInput(name, [1], dtype)
        inp.set_data_from_numpy(np.array([value], dtype=np_type))
        out.append(inp)
    return out


def _grpc_stream(served: Served, prompt: str, *, cancel_after: int | None = None, **kw: Any) -> list[Any]:
    """Stream one request over gRPC; return the responses (or the ones seen before cancelling)."""
    results: queue.Queue[Any] = queue.Queue()
    c = grpcclient.InferenceServerClient(served.grpc_url)
    c.start_stream(callback=partial(lambda q, result, error: q.put(error or result), results))
    c.async_stream_infer(served.model, _inputs(prompt, **kw), enable_empty_final_response=True)
    got: list[Any] = []
    try:
        while True:
            r = results.get(timeout=60)
            if isinstance(r, Exception):
                raise r
            params = r.get_response().parameters
            final = params["triton_final_response"].bool_param
            if r.as_numpy("text_output") is not None:
                got.append(r)
            if final or (cancel_after is not None and len(got) >= cancel_after):
                break
    finally:
        c.stop_stream(cancel_requests=cancel_after is not None)
        c.close()
    return got


def _text(r: Any) -> str:
    return str(r.as_numpy("text_output").reshape(-1)[0].decode())


def test_grpc_streaming_sends_tokens_as_they_come_and_matches_non_streaming(served: Served) -> None:
    responses = _grpc_stream(served, "Stream me", max_tokens=24, temperature=0.0, ignore_eos=True, stream=True)
    counts = [int(r.as_numpy("completion_tokens")[0]) for r in responses]
    assert len(responses) >= 3, "streaming should send several responses, not one at the end"
    assert counts == sorted(counts) and counts[-1] == 24
    assert responses[-1].as_numpy("finish_reason")[0] == b"length"
    status, body, _ = post_json(
        f"{served.http_base}/v2/models/{served.model}/generate",
        {"text_input": "Stream me", "max_tokens": 24, "temperature": 0, "ignore_eos": True},
    )
    assert status == 200
    assert "".join(_text(r) for r in responses) == body["text_output"]
    assert body["completion_tokens"] == 24 and body["finish_reason"] == "length"


def test_http_generate_stream_sends_sse_events(served: Served) -> None:
    req = {"text_input": "SSE please", "max_tokens": 16, "temperature": 0, "ignore_eos": True}
    events = sse_events(f"{served.http_base}/v2/models/{served.model}/generate_stream", {**req, "stream": True})
    assert len(events) >= 2
    assert events[-1]["finish_reason"] == "length" and events[-1]["completion_tokens"] == 16
    assert all("error" not in e for e in events)
    _, whole, _ = post_json(f"{served.http_base}/v2/models/{served.model}/generate", req)
    assert "".join(e["text_output"] for e in events) == whole["text_output"]


def test_openai_client_completions_and_chat_stream_and_not(client: Any, served: Served) -> None:
    assert [m.id for m in client.models.list().data] == [served.model]
    kw: dict[str, Any] = {
        "model": served.model,
        "max_tokens": 20,
        "temperature": 0.8,
        "seed": 7,
        "extra_body": {"ignore_eos": True},
    }
    full = client.completions.create(prompt="Once", **kw)
    assert full.choices[0].finish_reason == "length"
    assert full.usage.completion_tokens == 20 and full.usage.prompt_tokens == 4
    assert full.usage.total_tokens == 24
    streamed = list(client.completions.create(prompt="Once", stream=True, **kw))
    assert "".join(c.choices[0].text for c in streamed) == full.choices[0].text
    assert streamed[-1].choices[0].finish_reason == "length"

    greedy = (
        client.completions.create(
            model=served.model, prompt="Hello world", max_tokens=24, temperature=0, extra_body={"ignore_eos": True}
        )
        .choices[0]
        .text
    )
    at = next(i for i in range(2, len(greedy) - 1) if "\ufffd" not in greedy[i : i + 2])
    stop = greedy[at : at + 2]
    stopped = client.completions.create(
        model=served.model,
        prompt="Hello world",
        max_tokens=24,
        temperature=0,
        stop=[stop],
        extra_body={"ignore_eos": True},
    ).choices[0]
    assert stopped.finish_reason == "stop"
    assert stopped.text == greedy[: greedy.index(stop)]

    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    chat = client.chat.completions.create(messages=msgs, **kw)
    assert chat.choices[0].message.role == "assistant"
    assert chat.usage.completion_tokens == 20 and chat.usage.prompt_tokens > 10
    chunks = list(
        client.chat.completions.create(messages=msgs, stream=True, stream_options={"include_usage": True}, **kw)
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == chat.choices[0].message.content
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 20


def test_seed_reproduces_output_and_another_seed_differs(client: Any, served: Served) -> None:
    def run(seed: int) -> str:
        r = client.completions.create(
            model=served.model,
            prompt="Seeded",
            max_tokens=32,
            temperature=1.0,
            seed=seed,
            extra_body={"ignore_eos": True},
        )
        return str(r.choices[0].text)

    with ThreadPoolExecutor(4) as pool:  # concurrently, so the requests also share batches
        a, b, c = pool.map(run, [11, 11, 12])
    assert a == b
    assert a != c


def test_concurrent_requests_share_batches_and_metrics_move(client: Any, served: Served) -> None:
    before = _settled(served)
    n, tokens = 8, 32

    def one(i: int) -> Any:
        return client.completions.create(
            model=served.model,
            prompt=f"Concurrent request {i}",
            max_tokens=tokens,
            temperature=0,
            extra_body={"ignore_eos": True},
        )

    with ThreadPoolExecutor(n) as pool:
        results = list(pool.map(one, range(n)))
    after = _settled(served)

    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    assert delta("llm_generation_tokens_total") == n * tokens
    assert delta("llm_prompt_tokens_total") == sum(r.usage.prompt_tokens for r in results)
    assert delta("llm_requests_finished_total") == n
    assert delta("llm_time_to_first_token_seconds_count") == n
    assert delta("llm_inter_token_latency_seconds_count") == n  # one mean per request
    periods = delta("llm_batch_size_count")
    assert periods > 0
    assert delta("llm_batch_size_sum") / periods > 2, "the average decode batch should be well above 1"
    assert after["llm_running_requests"] == 0 and after["llm_queue_depth"] == 0
    assert after["llm_kv_cache_usage_ratio"] == 0
    assert after["nv_inference_request_success"] > before.get("nv_inference_request_success", 0)


def _settled(served: Served) -> dict[str, float]:
    """Metrics once the runtime's own series stop changing (the reporter publishes every 100 ms)."""
    deadline = time.monotonic() + 15
    last = served.metrics()
    while True:
        time.sleep(0.25)
        now = served.metrics()
        own = [k for k in now if k.startswith("llm_")]
        if all(now[k] == last.get(k) for k in own) or time.monotonic() > deadline:
            return now
        last = now


def _wait_finished(served: Served, before: dict[str, float], n: int, within_s: float) -> dict[str, float]:
    """Wait until n more requests have left the batch and none is running; return the metrics."""
    deadline = time.monotonic() + within_s
    while True:
        m = served.metrics()
        done = m["llm_requests_finished_total"] - before["llm_requests_finished_total"]
        if (done >= n and m["llm_running_requests"] == 0) or time.monotonic() > deadline:
            return m
        time.sleep(0.05)


def test_cancelling_a_grpc_stream_frees_the_slot(served: Served) -> None:
    before = _settled(served)
    got = _grpc_stream(
        served, "Cancel me", cancel_after=3, max_tokens=500, temperature=0.0, ignore_eos=True, stream=True
    )
    assert len(got) == 3
    after = _wait_finished(served, before, 1, within_s=10.0)
    assert after["llm_requests_finished_total"] - before["llm_requests_finished_total"] == 1
    assert after["llm_running_requests"] == 0
    assert after["llm_generation_tokens_total"] - before["llm_generation_tokens_total"] < 500


def test_closing_an_openai_stream_frees_the_slot(client: Any, served: Served) -> None:
    before = _settled(served)
    stream = client.completions.create(
        model=served.model,
        prompt="Leave early",
        max_tokens=500,
        temperature=0,
        stream=True,
        extra_body={"ignore_eos": True},
    )
    for i, _ in enumerate(stream):
        if i == 2:
            break
    stream.close()
    after = _wait_finished(served, before, 1, within_s=10.0)
    assert after["llm_running_requests"] == 0
    assert after["llm_generation_tokens_total"] - before["llm_generation_tokens_total"] < 500


def test_full_queue_is_refused_with_503_and_retry_hint(served: Served) -> None:
    before = _settled(served)
    gen_url = f"{served.http_base}/v2/models/{served.model}/generate"
    oa_url = f"{served.openai_base}/completions"
    slow_triton = {"text_input": "busy", "max_tokens": 400, "temperature": 0, "ignore_eos": True}
    slow_oa = {"model": served.model, "prompt": "busy", "max_tokens": 400, "temperature": 0, "ignore_eos": True}
    jobs = [(gen_url, slow_triton)] * 20 + [(oa_url, slow_oa)] * 12
    peaks: dict[str, float] = {}
    watching = threading.Event()

    def watch() -> None:  # the gauges must show the load while it lasts
        while not watching.is_set():
            for name, value in served.metrics().items():
                peaks[name] = max(peaks.get(name, 0.0), value)
            time.sleep(0.05)

    def timed(job: tuple[str, dict[str, Any]]) -> tuple[int, dict[str, Any], dict[str, str], float]:
        t0 = time.perf_counter()
        status, payload, headers = post_json(*job)
        return status, payload, headers, time.perf_counter() - t0

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        with ThreadPoolExecutor(len(jobs)) as pool:
            results = list(pool.map(timed, jobs))
    finally:
        watching.set()
        watcher.join()
    assert peaks["llm_running_requests"] == BATCH
    assert peaks["llm_queue_depth"] >= 1
    assert 0 < peaks["llm_kv_cache_usage_ratio"] <= 1
    codes = [r[0] for r in results]
    oa_codes = [r[0] for r, j in zip(results, jobs, strict=True) if j[0] == oa_url]
    triton_codes = [r[0] for r, j in zip(results, jobs, strict=True) if j[0] == gen_url]
    assert codes.count(200) >= BATCH, codes
    # The OpenAI front answers 503 + Retry-After. Triton 2.51's generate endpoint turns every error a
    # python-backend response carries into 400, so there the message is what tells the client to retry.
    assert set(oa_codes) <= {200, 503} and set(triton_codes) <= {200, 400}, codes
    refused = [r for r in results if r[0] != 200]
    assert len(refused) >= len(jobs) - BATCH - QUEUE - 4, codes  # capacity is batch + queue
    triton_refused = [r for r, j in zip(results, jobs, strict=True) if r[0] == 400 and j[0] == gen_url]
    oa_503 = [r for r, j in zip(results, jobs, strict=True) if r[0] == 503 and j[0] == oa_url]
    assert triton_refused and oa_503, codes
    assert all("server is at capacity" in r[1]["error"] and "retry after 1s" in r[1]["error"] for r in triton_refused)
    assert "retry after" in oa_503[0][1]["error"]["message"]
    assert oa_503[0][2].get("Retry-After") == "1"
    after = _settled(served)
    assert after["llm_requests_rejected_total"] - before["llm_requests_rejected_total"] == len(refused)
    # "Refused immediately": a refusal is answered without waiting behind the batch, so every one arrives
    # before the first served request ends. (How much sooner is a figure for bench/runtime_attack.py: a ratio
    # of timings here failed on a loaded machine.)
    served_s = sorted(r[3] for r in results if r[0] == 200)
    refused_s = sorted(r[3] for r in refused)
    assert refused_s[-1] < served_s[0], (refused_s, served_s)
    # And the server still serves.
    ok = post_json(gen_url, {"text_input": "after", "max_tokens": 4})
    assert ok[0] == 200


def test_queue_timeout_refuses_a_request_when_its_time_is_up(tmp_path: Path) -> None:
    # One batch slot and a 0.3 s queue limit. A long request holds the slot; requests queued behind it
    # must be refused once they have waited 0.3 s, while it still runs, not when the slot frees. A long
    # context lets the blocker outlast the limit many times over even on a fast machine.
    model_dir = create_tiny_model(tmp_path / "long-context-model", context=4096)
    s = start_serve(
        tmp_path,
        "--model-dir",
        str(model_dir),
        "--max-batch-size",
        "1",
        "--max-queue-size",
        "8",
        "--queue-timeout-us",
        "300000",
        "--exit-timeout",
        "10",
    )
    try:
        client = openai.OpenAI(base_url=s.openai_base, api_key="unused", max_retries=0, timeout=120)
        before = _settled(s)
        blocker = client.completions.create(
            model=s.model,
            prompt="block",
            max_tokens=4000,
            temperature=0,
            stream=True,
            extra_body={"ignore_eos": True},
        )
        next(iter(blocker))  # its first token: it holds the only slot now
        short_oa = {"model": s.model, "prompt": "queued", "max_tokens": 4}
        short_gen = {"text_input": "queued", "max_tokens": 4}
        jobs = [
            (f"{s.openai_base}/completions", short_oa),
            (f"{s.openai_base}/completions", short_oa),
            (f"{s.http_base}/v2/models/{s.model}/generate", short_gen),
        ]
        with ThreadPoolExecutor(len(jobs)) as pool:
            results = list(pool.map(lambda j: post_json(*j), jobs))
        # Only now let the blocker go: if it is cut short, the refusals came while it held the slot.
        blocker.close()
        after = _wait_finished(s, before, 1, within_s=60)  # refusals are not "finished" requests
        assert after["llm_running_requests"] == 0
        assert after["llm_generation_tokens_total"] - before["llm_generation_tokens_total"] < 4000
        assert after["llm_requests_rejected_total"] - before["llm_requests_rejected_total"] == len(jobs)
        for (url, _), (status, payload, headers) in zip(jobs, results, strict=True):
            if "/v1/" in url:
                assert status == 503, payload
                assert headers.get("Retry-After") == "1"
                message = payload["error"]["message"]
            else:
                assert status == 400, payload  # Triton 2.51's generate endpoint: see the full-queue test
                message = payload["error"]
            assert "server is at capacity: the request waited more than 0.3s in the queue" in message
        assert post_json(f"{s.openai_base}/completions", short_oa)[0] == 200
    finally:
        s.stop_cleanly()


def test_bad_input_gets_4xx_naming_the_fix_while_good_requests_succeed(served: Served) -> None:
    oa = f"{served.openai_base}/completions"
    chat = f"{served.openai_base}/chat/completions"
    gen = f"{served.http_base}/v2/models/{served.model}/generate"
    m = served.model
    msg = [{"role": "user", "content": "hi"}]
    image = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}}]}]
    bad: list[tuple[str, Any, bytes | None, int, str]] = [
        (oa, None, b'{"model": "tiny", "prompt": ', 400, "not valid JSON"),
        (oa, None, b'{"model": "tiny", "prompt": "\xff\xfe"}', 400, "not valid UTF-8"),
        (oa, {"model": m, "prompt": ""}, None, 400, "prompt is empty"),
        (oa, {"model": m, "prompt": "x" * 600}, None, 400, "context window is 512"),
        (oa, {"model": m, "prompt": "hi", "max_tokens": -5}, None, 400, "max_tokens must be a positive integer"),
        (oa, {"model": m, "prompt": "hi", "max_tokens": 10**6}, None, 400, "max_tokens can be at most"),
        (oa, {"model": m, "prompt": "hi", "frobnicate": 1}, None, 400, "unknown field(s) frobnicate"),
        (oa, {"model": "gpt-17", "prompt": "hi"}, None, 404, "does not exist here"),
        (oa, {"model": m, "prompt": "hi", "temperature": 7}, None, 400, "temperature must be"),
        (oa, {"prompt": "hi"}, None, 400, "model is required"),
        (chat, {"model": m, "messages": []}, None, 400, "messages must be a non-empty list"),
        (chat, {"model": m, "messages": [{"role": "robot", "content": "x"}]}, None, 400, "role must be"),
        (gen, {"text_input": ""}, None, 400, "text_input is empty"),
        (gen, {"text_input": "hi", "max_tokens": -1}, None, 400, "max_tokens must be a positive integer"),
        (gen, {"text_input": "hi", "max_tokens": 100000}, None, 400, "max_tokens can be at most"),
        (gen, {"text_input": "hi", "bogus": 3}, None, 400, "unknown parameter(s) bogus"),
        (gen, {"text_input": "x" * 600}, None, 400, "context window is 512"),
        (gen, None, b'{"text_input": "\xff\xfe", "max_tokens": 3}', 400, "text_input is not valid UTF-8"),
        # What the runtime does not do is refused, never silently ignored.
        (oa, {"model": m, "prompt": "hi", "n": 2}, None, 400, "n=2 is not supported"),
        (oa, {"model": m, "prompt": "hi", "n": True}, None, 400, "n=True is not supported"),
        (oa, {"model": m, "prompt": "hi", "logprobs": 3}, None, 400, "logprobs is not supported"),
        (chat, {"model": m, "messages": msg, "logprobs": True}, None, 400, "logprobs is not supported"),
        (chat, {"model": m, "messages": msg, "top_logprobs": 2}, None, 400, "top_logprobs is not supported"),
        (oa, {"model": m, "prompt": "hi", "presence_penalty": 0.5}, None, 400, "presence_penalty is not supported"),
        (chat, {"model": m, "messages": msg, "frequency_penalty": 1}, None, 400, "frequency_penalty is not supported"),
        (oa, {"model": m, "prompt": "hi", "echo": True}, None, 400, "echo is not supported"),
        (oa, {"model": m, "prompt": "hi", "suffix": "end"}, None, 400, "suffix is not supported"),
        (oa, {"model": m, "prompt": "hi", "best_of": 3}, None, 400, "best_of=3 is not supported"),
        (oa, {"model": m, "prompt": "hi", "best_of": True}, None, 400, "best_of=True is not supported"),
        (chat, {"model": m, "messages": image}, None, 400, "messages[0].content parts must be {type: text"),
        (chat, {"model": m, "messages": [{"role": "user"}]}, None, 400, "messages[0].content must be a string"),
        (oa, {"model": m, "prompt": [1, 2, 3]}, None, 400, "prompt must be a string"),
        # Ranges, on the OpenAI front and on Triton's generate endpoint.
        (oa, {"model": m, "prompt": "hi", "top_p": 0}, None, 400, "top_p must be a number in (0.0, 1.0]"),
        (oa, {"model": m, "prompt": "hi", "top_p": 1.5}, None, 400, "top_p must be a number in (0.0, 1.0]"),
        (oa, {"model": m, "prompt": "hi", "top_k": -2}, None, 400, "top_k must be an integer from -1"),
        (oa, {"model": m, "prompt": "hi", "top_k": 2**40}, None, 400, "top_k must be an integer from -1"),
        (oa, {"model": m, "prompt": "hi", "top_k": 1.5}, None, 400, "top_k must be an integer from -1"),
        (oa, {"model": m, "prompt": "hi", "seed": -1}, None, 400, "seed must be an integer between 0 and"),
        (oa, {"model": m, "prompt": "hi", "seed": 2**63}, None, 400, "seed must be an integer between 0 and"),
        (oa, {"model": m, "prompt": "hi", "seed": "7"}, None, 400, "seed must be an integer between 0 and"),
        (gen, {"text_input": "hi", "top_p": 0}, None, 400, "top_p must be in (0, 1]"),
        (gen, {"text_input": "hi", "top_p": 1.5}, None, 400, "top_p must be in (0, 1]"),
        (gen, {"text_input": "hi", "top_k": -2}, None, 400, "top_k must be >= 0"),
        (gen, {"text_input": "hi", "seed": -1}, None, 400, "seed must be between 0 and"),
        (gen, {"text_input": "hi", "temperature": -1}, None, 400, "temperature must be between 0 and 100"),
        # A body that is valid JSON but not an object.
        (oa, [m, "hi"], None, 400, "request body must be a JSON object {...}, got a JSON array"),
        (chat, "hello", None, 400, "request body must be a JSON object {...}, got a JSON string"),
        (oa, None, b"null", 400, "request body must be a JSON object {...}, got a JSON null"),
    ]
    good = [(oa, {"model": m, "prompt": f"good {i}", "max_tokens": 8}, None, 200, "") for i in range(6)]
    jobs = [j for pair in zip(bad, good * 3, strict=False) for j in pair] + bad[len(good) * 3 :]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda j: post_json(j[0], j[1], raw=j[2]), jobs))
    for (url, _body, _raw, want, text), (status, payload, _) in zip(jobs, results, strict=True):
        assert status == want, (url, _body, _raw, payload)
        if want != 200:
            message = payload["error"]["message"] if isinstance(payload.get("error"), dict) else payload["error"]
            assert text in message, message
    assert post_json(gen, {"text_input": "still alive", "max_tokens": 3})[0] == 200


def test_triton_metrics_of_its_own_keep_working(served: Served) -> None:
    with urllib.request.urlopen(f"http://127.0.0.1:{served.metrics_port}/metrics", timeout=10) as r:
        text = r.read().decode()
    assert 'nv_inference_request_success{model="tiny",version="1"}' in text
    assert "nv_inference_pending_request_count" in text
    health = json.loads(urllib.request.urlopen(served.openai_base.replace("/v1", "/health")).read())
    assert health == {"ready": True}


def test_grpc_stream_survives_concurrent_cancellations(served: Served) -> None:
    # Several clients cancel mid-stream while another streams to the end: only the cancelled ones stop.
    with ThreadPoolExecutor(4) as pool:
        cancelled = [
            pool.submit(_grpc_stream, served, f"c{i}", cancel_after=2, max_tokens=300, stream=True, ignore_eos=True)
            for i in range(4)
        ]
        full = _grpc_stream(served, "survivor", max_tokens=40, temperature=0.0, ignore_eos=True, stream=True)
        # result() re-raises whatever a cancelling client hit (an error response, a timeout).
        got = [f.result(timeout=60) for f in cancelled]
    assert [len(g) for g in got] == [2] * 4
    for g in got:
        counts = [int(r.as_numpy("completion_tokens")[0]) for r in g]
        assert counts == sorted(counts) and counts[-1] < 300
        assert all(r.as_numpy("finish_reason")[0] == b"" for r in g), "a cancelled stream reported a finish"
    assert int(full[-1].as_numpy("completion_tokens")[0]) == 40
    deadline = time.monotonic() + 3
    while served.metrics()["llm_running_requests"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _settled(served)["llm_running_requests"] == 0
