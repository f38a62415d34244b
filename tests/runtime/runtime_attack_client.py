"""Hostile clients for the runtime (shared by tests/runtime/test_runtime_attack.py and bench/runtime_attack.py):
overload, streams opened and dropped, and the RSS of the serving process tree."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import random
import re
import resource
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import psutil

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$")


def raise_nofile(want: int) -> int:
    """Raise this process's soft open-files limit towards ``want`` (capped by the hard limit); return it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return int(soft)


def scrape(url: str) -> dict[str, float]:
    """Prometheus text → {name: value summed over label sets} (+ {name{source=...}: value} per source)."""
    with urllib.request.urlopen(url, timeout=10) as r:
        text = r.read().decode()
    out: dict[str, float] = collections.defaultdict(float)
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if m and not line.startswith("#"):
            out[m.group(1)] += float(m.group(3))
    return dict(out)


# ---- RSS of tritonserver + python stub + front -----------------------------------------------------------


def tree_rss(pid: int) -> dict[str, int]:
    """RSS in bytes per role of `llmctl serve`'s process tree: front (the serve process itself, which runs the
    OpenAI front), tritonserver, stub (the python backend stubs), and total."""
    root = psutil.Process(pid)
    out = {"front": 0, "tritonserver": 0, "stub": 0, "other": 0}
    for p in [root, *root.children(recursive=True)]:
        try:
            rss = p.memory_info().rss
            name = " ".join(p.cmdline()[:1])
        except psutil.Error:
            continue
        if p.pid == pid:
            out["front"] += rss
        elif name.endswith("tritonserver"):
            out["tritonserver"] += rss
        elif "triton_python_backend_stub" in name:
            out["stub"] += rss
        else:
            out["other"] += rss
    out["total"] = sum(out.values())
    return out


class RssSampler:
    """Samples tree_rss every `period` seconds in a thread; keeps the peak per role."""

    def __init__(self, pid: int, period: float = 0.2) -> None:
        self.pid, self.period = pid, period
        self.peak: dict[str, int] = collections.defaultdict(int)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(psutil.Error):
                for k, v in tree_rss(self.pid).items():
                    self.peak[k] = max(self.peak[k], v)
            self._stop.wait(self.period)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# ---- overload ---------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    statuses: collections.Counter[str] = field(default_factory=collections.Counter)
    retry_after: collections.Counter[str] = field(default_factory=collections.Counter)
    refusal_messages: set[str] = field(default_factory=set)
    errors: collections.Counter[str] = field(default_factory=collections.Counter)
    refused_s: list[float] = field(default_factory=list)
    served_s: list[float] = field(default_factory=list)

    def add(self, kind: str, status: int, headers: Any, text: str, elapsed: float) -> None:
        self.statuses[f"{kind} {status}"] += 1
        if status != 200:
            self.retry_after[f"{kind} {status} Retry-After={headers.get('Retry-After')}"] += 1
            self.refusal_messages.add(text[:160])
            self.refused_s.append(elapsed)
        else:
            self.served_s.append(elapsed)


async def overload(
    *,
    openai_base: str,
    triton_base: str,
    model: str,
    concurrency: int,
    duration_s: float,
    max_tokens: int,
) -> tuple[Outcome, float]:
    """`concurrency` clients, half on the OpenAI front (streaming and not), half on Triton's generate endpoint,
    each sending again at once whatever the answer (a hostile client ignores Retry-After), for `duration_s`.
    At the end every request still in flight is abandoned (connections closed). Returns the outcome and the
    time the abandon happened (time.monotonic())."""
    out = Outcome()
    stop_at = time.monotonic() + duration_s
    conn = aiohttp.TCPConnector(limit=0, force_close=True)
    timeout = aiohttp.ClientTimeout(total=None)

    async def one(i: int, session: aiohttp.ClientSession) -> None:
        kind = ("openai-stream", "openai", "triton-generate", "triton-generate-stream")[i % 4]
        while time.monotonic() < stop_at:
            t0 = time.monotonic()
            if kind.startswith("openai"):
                url = f"{openai_base}/completions"
                body: dict[str, Any] = {"model": model, "prompt": f"overload {i}", "max_tokens": max_tokens,
                                        "ignore_eos": True, "stream": kind == "openai-stream"}
            else:
                stream = kind.endswith("stream")
                url = f"{triton_base}/v2/models/{model}/generate" + ("_stream" if stream else "")
                body = {"text_input": f"overload {i}", "max_tokens": max_tokens, "ignore_eos": True, "stream": stream}
            try:
                async with session.post(url, json=body) as r:
                    text = await r.text()
                    out.add(kind, r.status, r.headers, text, time.monotonic() - t0)
            except aiohttp.ClientError as exc:
                out.errors[f"{kind} {type(exc).__name__}"] += 1

    async with aiohttp.ClientSession(connector=conn, timeout=timeout) as session:
        tasks = [asyncio.create_task(one(i, session)) for i in range(concurrency)]
        done, pending = await asyncio.wait(tasks, timeout=duration_s + 0.5)
        # Whatever runs past the end is abandoned mid-request: the server must clean it up.
        for t in pending:
            t.cancel()
        abandoned_at = time.monotonic()
        await asyncio.gather(*pending, return_exceptions=True)
        for t in done:
            t.result()
    return out, abandoned_at


# ---- streams opened and dropped ----------------------------------------------------------------------------


async def open_and_drop_streams(
    *, openai_base: str, model: str, n: int, max_tokens: int, connect_window_s: float = 0.0
) -> collections.Counter[str]:
    """Open `n` streaming chat completions at once and drop every one: a third after the first SSE chunk, a
    third after the headers, a third before any answer (the connection is closed while the request waits).
    Returns counts of what each connection saw before it was dropped."""
    seen: collections.Counter[str] = collections.Counter()
    conn = aiohttp.TCPConnector(limit=0, force_close=True)
    timeout = aiohttp.ClientTimeout(total=120, sock_connect=60)
    gate = asyncio.Event()
    rng = random.Random(7)

    async def one(i: int, session: aiohttp.ClientSession) -> None:
        body = {"model": model, "messages": [{"role": "user", "content": f"stream {i}"}],
                "max_tokens": max_tokens, "ignore_eos": True, "stream": True}
        mode = i % 3
        if connect_window_s:
            await asyncio.sleep(rng.random() * connect_window_s)
        await gate.wait()
        try:
            if mode == 2:  # give up before the answer: close the connection while it waits
                async with asyncio.timeout(rng.random() * 0.5):
                    async with session.post(f"{openai_base}/chat/completions", json=body) as r:
                        seen[f"status {r.status}"] += 1
                        if r.status != 200:
                            seen[f"refused, Retry-After={r.headers.get('Retry-After')}"] += 1
                        elif r.connection is not None and r.connection.transport is not None:
                            r.connection.transport.abort()
                            seen["dropped after headers"] += 1
                        return
            async with session.post(f"{openai_base}/chat/completions", json=body) as r:
                seen[f"status {r.status}"] += 1
                if r.status == 200 and mode == 0:
                    line = await r.content.readline()
                    while line and not line.startswith(b"data: "):
                        line = await r.content.readline()
                    seen["dropped after a chunk" if line else "stream ended early"] += 1
                elif r.status == 200:
                    seen["dropped after headers"] += 1
                else:
                    await r.read()
                    seen[f"refused, Retry-After={r.headers.get('Retry-After')}"] += 1
                # Drop the connection mid-stream, as a client that dies does (no clean close).
                if r.connection is not None and r.connection.transport is not None:
                    r.connection.transport.abort()
        except TimeoutError:
            seen["dropped before an answer"] += 1
        except aiohttp.ClientError as exc:
            seen[f"client error {type(exc).__name__}"] += 1

    async with aiohttp.ClientSession(connector=conn, timeout=timeout) as session:
        tasks = [asyncio.create_task(one(i, session)) for i in range(n)]
        await asyncio.sleep(0)
        gate.set()
        await asyncio.gather(*tasks)
    return seen


def wait_drained(
    *, triton_metrics_url: str, front_metrics_url: str, timeout_s: float
) -> tuple[float | None, dict[str, float]]:
    """Seconds until llm_running_requests, llm_queue_depth, nv_inference_pending_request_count and the front's
    llm_front_inflight_requests are all 0 (None if not within timeout_s), and the last values seen."""
    t0 = time.monotonic()
    last: dict[str, float] = {}
    while True:
        t = scrape(triton_metrics_url)
        f = scrape(front_metrics_url)
        last = {
            "llm_running_requests": t.get("llm_running_requests", -1),
            "llm_queue_depth": t.get("llm_queue_depth", -1),
            "nv_inference_pending_request_count": t.get("nv_inference_pending_request_count", 0),
            "llm_front_inflight_requests": f.get("llm_front_inflight_requests", -1),
        }
        if all(v == 0 for v in last.values()):
            return time.monotonic() - t0, last
        if time.monotonic() - t0 > timeout_s:
            return None, last
        time.sleep(0.1)
