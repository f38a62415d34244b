"""Benchmark: the naive FastAPI + model.generate server vs llm_runtime, side by side in one run.

    .venv/bin/python bench/runtime.py                # both servers, concurrency 1, 8 and 32
    .venv/bin/python bench/runtime.py --engines      # in-process: own scheduler vs transformers' manager

Both servers serve the same random-weight Llama-architecture model (created locally) on this machine's
CPU, with the same torch thread count, and every request asks for exactly --output-tokens tokens after a
--prompt-tokens prompt. The baseline is the server of the seed document: FastAPI, one `model.generate`
per request, called inside an `async def` endpoint (no streaming, no batching). llm_runtime is measured
through its OpenAI front (`llmctl serve`, streaming SSE), i.e. the full path a client sees.

Time to first token for the baseline is the full request latency: it sends nothing before the end.
Only ratios measured in the same run are meaningful; absolute numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


# ---- the naive baseline (seed document) ------------------------------------------------------------------


def serve_baseline(model_dir: str, port: int) -> None:
    import torch
    import uvicorn
    from fastapi import FastAPI
    from llm_runtime.engine import cpu_threads
    from pydantic import BaseModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(cpu_threads())  # same thread budget as llm_runtime
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model: Any = AutoModelForCausalLM.from_pretrained(model_dir)
    model.eval()

    class Prompt(BaseModel):
        text: str
        max_new_tokens: int = 100

    app = FastAPI()

    async def generate(prompt: Prompt) -> dict[str, Any]:
        input_ids = tokenizer.encode(prompt.text, return_tensors="pt")
        # Exactly max_new_tokens like the runtime side (random weights may emit EOS early otherwise).
        output: Any = model.generate(
            input_ids,
            max_new_tokens=prompt.max_new_tokens,
            min_new_tokens=prompt.max_new_tokens,
            do_sample=True,
            pad_token_id=tokenizer.pad_token_id,
        )
        text = tokenizer.decode(output[0, input_ids.shape[1] :], skip_special_tokens=True)
        return {"generated_text": text, "tokens": int(output.shape[1] - input_ids.shape[1])}

    # This module uses postponed annotations; FastAPI must see the real body model of this local class.
    generate.__annotations__ = {"prompt": Prompt, "return": dict}
    app.post("/generate/")(generate)

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


# ---- measurement ---------------------------------------------------------------------------------------


@dataclass
class Result:
    ttft: list[float] = field(default_factory=list)
    latency: list[float] = field(default_factory=list)
    tokens: int = 0
    wall: float = 0.0
    errors: int = 0
    peak_rss_mb: float = 0.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


class RssSampler:
    """Peak resident memory of a process and all its children (tritonserver, python stub, front)."""

    def __init__(self, pid: int) -> None:
        import psutil

        self._proc = psutil.Process(pid)
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import psutil

        while not self._stop.wait(0.05):
            try:
                procs = [self._proc, *self._proc.children(recursive=True)]
                total = 0
                for p in procs:
                    with contextlib.suppress(psutil.Error):
                        total += p.memory_info().rss
                self.peak = max(self.peak, total)
            except psutil.Error:
                return

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.peak / 2**20


async def _one_runtime(client: Any, url: str, model: str, prompt: str, n: int, res: Result) -> None:
    body = {"model": model, "prompt": prompt, "max_tokens": n, "temperature": 1.0, "stream": True,
            "ignore_eos": True, "stream_options": {"include_usage": True}}
    t0 = time.perf_counter()
    first = None
    tokens = 0
    async with client.stream("POST", url, json=body) as r:
        if r.status_code != 200:
            res.errors += 1
            await r.aread()
            return
        async for line in r.aiter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line[6:])
            if first is None and chunk.get("choices"):
                first = time.perf_counter() - t0
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
    res.ttft.append(first if first is not None else time.perf_counter() - t0)
    res.latency.append(time.perf_counter() - t0)
    res.tokens += tokens


async def _one_baseline(client: Any, url: str, prompt: str, n: int, res: Result) -> None:
    t0 = time.perf_counter()
    r = await client.post(url, json={"text": prompt, "max_new_tokens": n})
    if r.status_code != 200:
        res.errors += 1
        return
    elapsed = time.perf_counter() - t0
    res.ttft.append(elapsed)
    res.latency.append(elapsed)
    res.tokens += int(r.json()["tokens"])


async def _drive(kind: str, url: str, model: str, prompt: str, n: int, concurrency: int, requests: int) -> Result:
    import httpx

    res = Result()
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(requests):
        queue.put_nowait(i)
    limits = httpx.Limits(max_connections=concurrency + 4)
    async with httpx.AsyncClient(timeout=httpx.Timeout(1800.0), limits=limits) as client:

        async def worker() -> None:
            while not queue.empty():
                queue.get_nowait()
                if kind == "runtime":
                    await _one_runtime(client, url, model, prompt, n, res)
                else:
                    await _one_baseline(client, url, prompt, n, res)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        res.wall = time.perf_counter() - t0
    return res


def _wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 300) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} not up in {timeout}s")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _prompt(tokenizer: Any, tokens: int) -> str:
    base = "The operator scales the model servers when the queue grows. "
    text = base * (tokens // len(tokenizer(base)["input_ids"]) + 1)
    ids = tokenizer(text)["input_ids"][:tokens]
    return str(tokenizer.decode(ids))


def run_servers(args: argparse.Namespace, model_dir: Path, work: Path) -> dict[str, dict[int, Result]]:
    from transformers import AutoTokenizer

    prompt = _prompt(AutoTokenizer.from_pretrained(str(model_dir)), args.prompt_tokens)
    results: dict[str, dict[int, Result]] = {"baseline": {}, "runtime": {}}
    pythonpath = os.pathsep.join([str(HERE.parent / "runtime"), os.environ.get("PYTHONPATH", "")])
    env = dict(os.environ, PYTHONPATH=pythonpath)
    for kind in ("baseline", "runtime"):
        port = _free_port()
        if kind == "baseline":
            me = str(Path(__file__).resolve())
            cmd = [sys.executable, me, "--serve-baseline", str(model_dir), "--port", str(port)]
            url, health = f"http://127.0.0.1:{port}/generate/", f"http://127.0.0.1:{port}/docs"
        else:
            cmd = [sys.executable, "-m", "llm_runtime.cli", "serve", "--model-dir", str(model_dir),
                   "--model-name", "bench", "--port", str(port), "--http-port", str(_free_port()),
                   "--grpc-port", str(_free_port()), "--metrics-port", str(_free_port()),
                   "--max-batch-size", str(max(args.concurrency)), "--max-queue-size", "256",
                   "--work-dir", str(work / "serve")]
            url, health = f"http://127.0.0.1:{port}/v1/completions", f"http://127.0.0.1:{port}/health"
        log = open(work / f"{kind}.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            _wait_http(health, proc)
            # Warm-up: first-call costs (allocator, kernels) are not what we compare.
            asyncio.run(_drive(kind, url, "bench", prompt, 8, 2, 2))
            for c in args.concurrency:
                n_req = max(args.min_requests, c * args.rounds)
                rss = RssSampler(proc.pid)
                res = asyncio.run(_drive(kind, url, "bench", prompt, args.output_tokens, c, n_req))
                res.peak_rss_mb = rss.stop()
                results[kind][c] = res
                print(f"  {kind:8s} c={c:<3d} {res.tokens / res.wall:8.1f} tok/s  p50 TTFT {_pct(res.ttft, .5):.3f}s"
                      f"  p99 TTFT {_pct(res.ttft, .99):.3f}s  errors {res.errors}", flush=True)
        finally:
            _stop(proc)
            log.close()
    return results


def report(args: argparse.Namespace, results: dict[str, dict[int, Result]]) -> str:
    from llm_runtime.engine import cpu_threads

    lines = [
        f"prompt {args.prompt_tokens} tokens, output {args.output_tokens} tokens, model hidden {args.hidden} x "
        f"{args.layers} layers (random weights), CPU, torch threads {cpu_threads()} per server",
        "",
        "| server | concurrency | requests | output tok/s | p50 TTFT s | p99 TTFT s | p50 latency s | p99 latency s |"
        " peak RSS MiB | errors |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for kind in ("baseline", "runtime"):
        for c, r in sorted(results[kind].items()):
            lines.append(
                f"| {kind} | {c} | {len(r.latency)} | {r.tokens / r.wall:.1f} | {_pct(r.ttft, .5):.3f} | "
                f"{_pct(r.ttft, .99):.3f} | {_pct(r.latency, .5):.3f} | {_pct(r.latency, .99):.3f} | "
                f"{r.peak_rss_mb:.0f} | {r.errors} |"
            )
    lines += ["", "| concurrency | tok/s runtime / baseline | p99 TTFT runtime / baseline |", "|---|---|---|"]
    for c in sorted(results["runtime"]):
        rt, bl = results["runtime"][c], results["baseline"].get(c)
        if bl is None:
            continue
        lines.append(f"| {c} | {(rt.tokens / rt.wall) / (bl.tokens / bl.wall):.2f}x | "
                     f"{_pct(rt.ttft, .99) / _pct(bl.ttft, .99):.2f}x |")
    return "\n".join(lines)


# ---- engine choice: own scheduler vs transformers' continuous-batching manager ------------------------------


def run_engines(args: argparse.Namespace, model_dir: Path) -> str:
    from llm_runtime.engine import Engine, GenerationEvent, Request
    from llm_runtime.sampling import SamplingParams
    from transformers import GenerationConfig

    eng = Engine.load(model_dir, max_batch_size=args.engines_requests, max_queue_size=args.engines_requests)
    prompt_ids = eng.tokenize(_prompt(eng.tokenizer, args.prompt_tokens))
    n, n_req = args.output_tokens, args.engines_requests
    rows = []

    # Own scheduler.
    eng.start()
    done = threading.Event()
    left = [n_req]
    lock = threading.Lock()

    def on_event(ev: GenerationEvent) -> None:
        if ev.finished:
            with lock:
                left[0] -= 1
                if left[0] == 0:
                    done.set()

    t0 = time.perf_counter()
    for i in range(n_req):
        eng.submit(Request(request_id=str(i), prompt_ids=prompt_ids,
                           params=SamplingParams(max_tokens=n, temperature=1.0, seed=i, ignore_eos=True),
                           on_event=on_event))
    done.wait()
    own = n_req * n / (time.perf_counter() - t0)
    eng.stop()
    rows.append(("llm_runtime scheduler (padded batch, per-request seed)", own))

    # transformers' manager, same model object and thread count.
    gc = GenerationConfig(max_new_tokens=n, do_sample=True, temperature=1.0, eos_token_id=-1,
                          pad_token_id=eng.pad_id)
    model = eng.model
    # The manager runs its own thread; it manages inference mode itself.
    model.generate_batch(inputs=[prompt_ids] * 2, generation_config=GenerationConfig(
        max_new_tokens=4, do_sample=False, eos_token_id=-1, pad_token_id=eng.pad_id))  # warm-up
    t0 = time.perf_counter()
    out = model.generate_batch(inputs=[prompt_ids] * n_req, generation_config=gc)
    tokens = sum(len(o.generated_tokens) for o in out.values())
    hf = tokens / (time.perf_counter() - t0)
    rows.append(("transformers generate_batch (continuous-batching manager)", hf))
    lines = [f"{n_req} requests x {n} tokens after a {len(prompt_ids)}-token prompt, in-process, CPU",
             "", "| engine | output tok/s |", "|---|---|"]
    lines += [f"| {name} | {v:.1f} |" for name, v in rows]
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--serve-baseline", metavar="MODEL_DIR", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--engines", action="store_true", help="compare engines in-process instead of servers")
    p.add_argument("--engines-requests", type=int, default=32)
    p.add_argument("--model-dir", help="benchmark this model instead of a generated random one")
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--prompt-tokens", type=int, default=128)
    p.add_argument("--output-tokens", type=int, default=128)
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--rounds", type=int, default=2, help="requests per worker at each concurrency")
    p.add_argument("--min-requests", type=int, default=8)
    p.add_argument("--out", help="also write the markdown report here")
    args = p.parse_args()
    if args.serve_baseline:
        serve_baseline(args.serve_baseline, args.port)
        return 0
    sys.path.insert(0, str(HERE.parent / "runtime"))
    with tempfile.TemporaryDirectory(prefix="bench-runtime-") as tmp:
        work = Path(tmp)
        if args.model_dir:
            model_dir = Path(args.model_dir)
        else:
            from llm_runtime.tiny import create_tiny_model

            model_dir = create_tiny_model(work / "model", hidden=args.hidden, layers=args.layers, heads=4,
                                          kv_heads=2, context=1024)
        text = run_engines(args, model_dir) if args.engines else report(args, run_servers(args, model_dir, work))
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
