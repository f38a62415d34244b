"""Benchmark: the naive FastAPI + model.generate server vs llm_runtime, side by side, repeated.

    .venv/bin/python bench/runtime.py                # both servers, concurrency 1, 8 and 32, 3 repeats
    .venv/bin/python bench/runtime.py --engines      # in-process: own scheduler vs transformers' manager

Both servers serve the same random-weight Llama-architecture model (created locally) on the same device,
pinned with `taskset` to the same CPUs (--cpus, default: every CPU this process may use; the load
generator is pinned there too), with the same torch thread count and the same sampling (temperature,
top-k, top-p 1), and every request asks for exactly --output-tokens tokens after a --prompt-tokens
prompt. The baseline is the server of the seed document: FastAPI, one `model.generate` per request,
called inside an `async def` endpoint (no streaming, no batching). llm_runtime is measured through its
OpenAI front (`llmctl serve`, streaming SSE), i.e. the full path a client sees.

Reported per server and concurrency: output tokens/s, time to first token and end-to-end latency (p50,
p99), CPU-seconds per output token (user + system of the server's whole process tree: for llm_runtime
tritonserver, the python stub and the front), and peak RSS. Both servers stay up; for each of --repeats
runs and each concurrency the two are measured back to back, the order alternating, and the
runtime/baseline ratios are reported as min / median / max over the runs. Time to first token for the
baseline is its full latency: it sends nothing before the end. Only ratios measured in the same run are
meaningful; absolute numbers depend on the machine and on what else runs on it (the load average is
printed). CPU-seconds per token depend least on that load.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
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


def serve_baseline(model_dir: str, port: int, *, temperature: float, top_k: int) -> None:
    import torch
    import uvicorn
    from fastapi import FastAPI
    from llm_runtime.engine import cpu_threads, pick_device
    from pydantic import BaseModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = pick_device()  # the device llm_runtime picks, with the same dtype ("auto" = checkpoint's)
    torch.set_num_threads(cpu_threads())  # same thread budget as llm_runtime
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    dtype: Any = "auto" if device.type == "cuda" else torch.float32
    model: Any = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype)
    model = model.to(device)
    model.eval()

    class Prompt(BaseModel):
        text: str
        max_new_tokens: int = 100

    app = FastAPI()

    async def generate(prompt: Prompt) -> dict[str, Any]:
        input_ids = tokenizer.encode(prompt.text, return_tensors="pt").to(device)
        # Exactly max_new_tokens like the runtime side (random weights may emit EOS early otherwise), and
        # the runtime's sampling: the model's generation_config would otherwise pick its own top-k.
        output: Any = model.generate(
            input_ids,
            max_new_tokens=prompt.max_new_tokens,
            min_new_tokens=prompt.max_new_tokens,
            do_sample=True,
            temperature=temperature,
            top_k=top_k,
            top_p=1.0,
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
    cpu_s: float = 0.0  # CPU-seconds (user + system) of the server's process tree during the run
    other_cpu_s: float = 0.0  # the same for the other, idle, server meanwhile

    @property
    def tok_s(self) -> float:
        return self.tokens / self.wall if self.wall else float("nan")

    @property
    def cpu_per_token(self) -> float:
        return self.cpu_s / self.tokens if self.tokens else float("nan")


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


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU time so far of a process and all its descendants."""
    import psutil

    root = psutil.Process(pid)
    total = 0.0
    for p in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            total += t.user + t.system
    return total


@dataclass(frozen=True)
class Sampling:
    temperature: float
    top_k: int


async def _one_runtime(client: Any, url: str, model: str, prompt: str, n: int, sampling: Sampling,
                       res: Result) -> None:
    body = {"model": model, "prompt": prompt, "max_tokens": n, "temperature": sampling.temperature,
            "top_k": sampling.top_k, "top_p": 1.0, "stream": True, "ignore_eos": True,
            "stream_options": {"include_usage": True}}
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


async def _drive(kind: str, url: str, model: str, prompt: str, n: int, concurrency: int, requests: int,
                 sampling: Sampling) -> Result:
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
                    await _one_runtime(client, url, model, prompt, n, sampling, res)
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


def _serve_cmd(
    kind: str, args: argparse.Namespace, model_dir: Path, work: Path, port: int
) -> tuple[list[str], str, str]:
    if kind == "baseline":
        me = str(Path(__file__).resolve())
        cmd = [sys.executable, me, "--serve-baseline", str(model_dir), "--port", str(port),
               "--temperature", str(args.temperature), "--top-k", str(args.top_k)]
        return cmd, f"http://127.0.0.1:{port}/generate/", f"http://127.0.0.1:{port}/docs"
    cmd = [sys.executable, "-m", "llm_runtime.cli", "serve", "--model-dir", str(model_dir),
           "--model-name", "bench", "--port", str(port), "--http-port", str(_free_port()),
           "--grpc-port", str(_free_port()), "--metrics-port", str(_free_port()),
           "--max-batch-size", str(max(args.concurrency)), "--max-queue-size", "256",
           "--work-dir", str(work / "serve")]
    return cmd, f"http://127.0.0.1:{port}/v1/completions", f"http://127.0.0.1:{port}/health"


class Server:
    """One server process, pinned to --cpus with taskset (which execs it: the pid is the server itself, and
    its children inherit the pinning)."""

    def __init__(self, kind: str, args: argparse.Namespace, model_dir: Path, work: Path) -> None:
        pythonpath = os.pathsep.join([str(HERE.parent / "runtime"), os.environ.get("PYTHONPATH", "")])
        env = dict(os.environ, PYTHONPATH=pythonpath)
        self.kind = kind
        cmd, self.url, self.health = _serve_cmd(kind, args, model_dir, work, _free_port())
        self.log = open(work / f"{kind}.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(["taskset", "-c", args.cpus, *cmd], stdout=self.log,
                                     stderr=subprocess.STDOUT, env=env)

    def stop(self) -> None:
        _stop(self.proc)
        self.log.close()


def measure(server: Server, other: Server, args: argparse.Namespace, prompt: str, c: int, run: int) -> Result:
    sampling = Sampling(args.temperature, args.top_k)
    n_req = max(args.min_requests, c * args.rounds)
    rss = RssSampler(server.proc.pid)
    cpu0, other0 = tree_cpu_seconds(server.proc.pid), tree_cpu_seconds(other.proc.pid)
    res = asyncio.run(_drive(server.kind, server.url, "bench", prompt, args.output_tokens, c, n_req, sampling))
    res.cpu_s = tree_cpu_seconds(server.proc.pid) - cpu0
    res.other_cpu_s = tree_cpu_seconds(other.proc.pid) - other0
    res.peak_rss_mb = rss.stop()
    print(f"  run {run + 1} {server.kind:8s} c={c:<3d} {res.tok_s:8.1f} tok/s  p99 TTFT {_pct(res.ttft, .99):.3f}s"
          f"  p99 latency {_pct(res.latency, .99):.3f}s  {res.cpu_per_token * 1e3:.2f} CPU-ms/token"
          f"  errors {res.errors}  load {os.getloadavg()[0]:.2f}", flush=True)
    return res


Runs = list[dict[str, dict[int, Result]]]


def run_servers(args: argparse.Namespace, model_dir: Path, work: Path) -> Runs:
    """Both servers up at once; each (run, concurrency) pair is measured back to back, in alternating order.

    On a shared machine the load drifts over minutes; measuring the two halves of every ratio seconds apart,
    rather than one server's whole run after the other's, keeps that drift out of the ratios. The idle
    server's own CPU use meanwhile is recorded (the report prints its maximum).
    """
    from transformers import AutoTokenizer

    prompt = _prompt(AutoTokenizer.from_pretrained(str(model_dir)), args.prompt_tokens)
    servers = {kind: Server(kind, args, model_dir, work) for kind in ("baseline", "runtime")}
    try:
        for srv in servers.values():
            _wait_http(srv.health, srv.proc)
            # Warm-up: first-call costs (allocator, kernels) are not what we compare.
            asyncio.run(_drive(srv.kind, srv.url, "bench", prompt, 8, 2, 2, Sampling(args.temperature, args.top_k)))
        runs: Runs = [{"baseline": {}, "runtime": {}} for _ in range(args.repeats)]
        pair = 0
        for run in range(args.repeats):
            for c in args.concurrency:
                order = ("baseline", "runtime") if pair % 2 == 0 else ("runtime", "baseline")
                pair += 1
                for kind in order:
                    other = servers["runtime" if kind == "baseline" else "baseline"]
                    runs[run][kind][c] = measure(servers[kind], other, args, prompt, c, run)
    finally:
        for srv in servers.values():
            srv.stop()
    return runs


# (label, runtime/baseline ratio of one concurrency in one run)
_RATIOS: list[tuple[str, Any]] = [
    ("output tok/s", lambda rt, bl: rt.tok_s / bl.tok_s),
    ("p50 TTFT", lambda rt, bl: _pct(rt.ttft, .5) / _pct(bl.ttft, .5)),
    ("p99 TTFT", lambda rt, bl: _pct(rt.ttft, .99) / _pct(bl.ttft, .99)),
    ("p50 latency", lambda rt, bl: _pct(rt.latency, .5) / _pct(bl.latency, .5)),
    ("p99 latency", lambda rt, bl: _pct(rt.latency, .99) / _pct(bl.latency, .99)),
    ("CPU-s per token", lambda rt, bl: rt.cpu_per_token / bl.cpu_per_token),
]


def _spread(values: list[float]) -> str:
    return f"{min(values):.2f} / {statistics.median(values):.2f} / {max(values):.2f}"


def device_name() -> str:
    import torch

    if torch.cuda.is_available():
        return f"GPU {torch.cuda.get_device_name(0)}"
    return f"CPU ({os.cpu_count()} cores on the host)"


def report(args: argparse.Namespace, runs: Runs, load: tuple[float, float]) -> str:
    idle = max(r.other_cpu_s / r.wall for run in runs for by_c in run.values() for r in by_c.values())
    lines = [
        f"prompt {args.prompt_tokens} tokens, output {args.output_tokens} tokens, model hidden {args.hidden} x "
        f"{args.layers} layers, {args.heads} heads (random weights), {device_name()}; both servers pinned to CPUs "
        f"{args.cpus} (taskset), torch threads {max(1, len(_cpu_list(args.cpus)) // 2)} per server; sampling "
        f"temperature {args.temperature}, top-k {args.top_k}, top-p 1; {len(runs)} runs, the two measurements of "
        f"each ratio back to back in alternating order (the idle server used at most {idle:.1%} of one CPU "
        f"meanwhile); load average (1 min) {load[0]:.2f} at the start, {load[1]:.2f} at the end",
        "",
        "| run | server | concurrency | requests | output tok/s | p50 TTFT s | p99 TTFT s | p50 latency s |"
        " p99 latency s | CPU-ms per token | peak RSS MiB | errors |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for i, run in enumerate(runs):
        for kind in ("baseline", "runtime"):
            for c, r in sorted(run[kind].items()):
                lines.append(
                    f"| {i + 1} | {kind} | {c} | {len(r.latency)} | {r.tok_s:.1f} | {_pct(r.ttft, .5):.3f} | "
                    f"{_pct(r.ttft, .99):.3f} | {_pct(r.latency, .5):.3f} | {_pct(r.latency, .99):.3f} | "
                    f"{r.cpu_per_token * 1e3:.2f} | {r.peak_rss_mb:.0f} | {r.errors} |"
                )
    lines += [
        "",
        "runtime / baseline, min / median / max over the runs (tok/s: higher is better; the others: lower is better)",
        "",
        "| concurrency | " + " | ".join(label for label, _ in _RATIOS) + " |",
        "|---|" + "---|" * len(_RATIOS),
    ]
    for c in args.concurrency:
        cells = [_spread([fn(run["runtime"][c], run["baseline"][c]) for run in runs]) for _, fn in _RATIOS]
        lines.append(f"| {c} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "median over the runs of each server's own figures",
        "",
        "| server | concurrency | output tok/s | p99 TTFT s | p50 latency s | p99 latency s | CPU-ms per token |",
        "|---|---|---|---|---|---|---|",
    ]
    for kind in ("baseline", "runtime"):
        for c in args.concurrency:
            rs = [run[kind][c] for run in runs]

            def med(fn: Any, rs: list[Result] = rs) -> float:
                return statistics.median(fn(r) for r in rs)

            lines.append(
                f"| {kind} | {c} | {med(lambda r: r.tok_s):.1f} | {med(lambda r: _pct(r.ttft, .99)):.3f} | "
                f"{med(lambda r: _pct(r.latency, .5)):.3f} | {med(lambda r: _pct(r.latency, .99)):.3f} | "
                f"{med(lambda r: r.cpu_per_token) * 1e3:.2f} |"
            )
    return "\n".join(lines)


def _cpu_list(spec: str) -> list[int]:
    cpus: list[int] = []
    for part in spec.split(","):
        lo, _, hi = part.partition("-")
        cpus += list(range(int(lo), int(hi or lo) + 1))
    return cpus


# ---- engine choice: own scheduler vs transformers' continuous-batching manager ------------------------------


def run_engines(args: argparse.Namespace, model_dir: Path) -> str:
    from llm_runtime.engine import Engine, GenerationEvent, Request
    from llm_runtime.sampling import SamplingParams
    from transformers import GenerationConfig

    eng = Engine.load(model_dir, dtype=args.dtype, max_batch_size=args.engines_requests,
                      max_queue_size=args.engines_requests)
    prompt_ids = eng.tokenize(_prompt(eng.tokenizer, args.prompt_tokens))
    n, n_req = args.output_tokens, args.engines_requests
    rows = []

    # Own scheduler.
    eng.start()

    def run_own(count: int, tokens: int) -> float:
        done = threading.Event()
        left = [count]
        lock = threading.Lock()

        def on_event(ev: GenerationEvent) -> None:
            if ev.finished:
                with lock:
                    left[0] -= 1
                    if left[0] == 0:
                        done.set()

        t0 = time.perf_counter()
        for i in range(count):
            params = SamplingParams(max_tokens=tokens, temperature=args.temperature, top_k=args.top_k, seed=i,
                                    ignore_eos=True)
            eng.submit(Request(request_id=str(i), prompt_ids=prompt_ids, params=params, on_event=on_event))
        done.wait()
        return time.perf_counter() - t0

    run_own(2, 4)  # warm-up: first-call costs (allocator, kernels, CUDA context) are not what we compare
    own = n_req * n / run_own(n_req, n)
    eng.stop()
    rows.append((f"llm_runtime scheduler (padded batch, per-request seed), {n_req} requests at once", own))

    # transformers' manager, same model object and thread count.
    gc = GenerationConfig(max_new_tokens=n, do_sample=True, temperature=args.temperature, top_k=args.top_k,
                          top_p=1.0, eos_token_id=-1, pad_token_id=eng.pad_id)
    model = eng.model
    # The manager runs its own thread; it manages inference mode itself.
    model.generate_batch(inputs=[prompt_ids] * 2, generation_config=GenerationConfig(
        max_new_tokens=4, do_sample=False, eos_token_id=-1, pad_token_id=eng.pad_id))  # warm-up
    t0 = time.perf_counter()
    out = model.generate_batch(inputs=[prompt_ids] * n_req, generation_config=gc)
    tokens = sum(len(o.generated_tokens) for o in out.values())
    hf = tokens / (time.perf_counter() - t0)
    rows.append((f"transformers generate_batch (continuous-batching manager), {n_req} requests at once", hf))

    # What the naive server does with any number of clients: one model.generate after the other.
    import torch

    ids = torch.tensor([prompt_ids], device=eng.device)

    def naive(tokens: int) -> None:
        with torch.inference_mode():
            model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=tokens, min_new_tokens=tokens,
                           do_sample=True, temperature=args.temperature, top_k=args.top_k, top_p=1.0,
                           pad_token_id=eng.pad_id)

    naive(4)  # warm-up
    t0 = time.perf_counter()
    for _ in range(args.naive_requests):
        naive(n)
    rows.append((f"model.generate one request after another (the naive server), {args.naive_requests} requests",
                 args.naive_requests * n / (time.perf_counter() - t0)))
    lines = [f"{n} output tokens per request after a {len(prompt_ids)}-token prompt, in-process, {device_name()}, "
             f"model hidden {args.hidden} x {args.layers} layers, {args.heads} heads, {args.kv_heads} KV heads, "
             f"{eng.model.dtype}; sampling temperature {args.temperature}, top-k {args.top_k}; torch "
             f"{torch.__version__}",
             "", "| engine | output tok/s |", "|---|---|"]
    lines += [f"| {name} | {v:.1f} |" for name, v in rows]
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--serve-baseline", metavar="MODEL_DIR", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--engines", action="store_true", help="compare engines in-process instead of servers")
    p.add_argument("--engines-requests", type=int, default=32)
    p.add_argument("--naive-requests", type=int, default=8, help="--engines: sequential model.generate requests")
    p.add_argument("--dtype", default="auto", choices=("auto", "float32", "float16", "bfloat16"),
                   help="--engines: weights dtype (auto: float32 on CPU, the checkpoint's own on a GPU)")
    p.add_argument("--heads", type=int, default=4, help="attention heads of the generated model")
    p.add_argument("--kv-heads", type=int, default=2, help="key/value heads of the generated model")
    p.add_argument("--model-dir", help="benchmark this model instead of a generated random one")
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--prompt-tokens", type=int, default=128)
    p.add_argument("--output-tokens", type=int, default=128)
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--repeats", type=int, default=3, help="runs of the pair of servers (at least 3 for a spread)")
    p.add_argument("--cpus", default=None,
                   help="CPU list for taskset, both servers and the load generator (default: this process's CPUs)")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature, both servers")
    p.add_argument("--top-k", type=int, default=50, help="sampling top-k, both servers (0: off)")
    p.add_argument("--rounds", type=int, default=2, help="requests per worker at each concurrency")
    p.add_argument("--min-requests", type=int, default=8)
    p.add_argument("--out", help="also write the markdown report here")
    args = p.parse_args()
    if args.serve_baseline:
        serve_baseline(args.serve_baseline, args.port, temperature=args.temperature, top_k=args.top_k)
        return 0
    sys.path.insert(0, str(HERE.parent / "runtime"))
    if not args.engines:
        if shutil.which("taskset") is None:
            p.error("taskset not found: install util-linux (both servers are pinned to the same CPUs with it)")
        args.cpus = args.cpus or ",".join(str(c) for c in sorted(os.sched_getaffinity(0)))
        os.sched_setaffinity(0, _cpu_list(args.cpus))  # the load generator shares the servers' CPUs
    with tempfile.TemporaryDirectory(prefix="bench-runtime-") as tmp:
        work = Path(tmp)
        if args.model_dir:
            model_dir = Path(args.model_dir)
        else:
            from llm_runtime.tiny import create_tiny_model

            model_dir = create_tiny_model(work / "model", hidden=args.hidden, layers=args.layers, heads=args.heads,
                                          kv_heads=args.kv_heads, context=1024)
        if args.engines:
            text = run_engines(args, model_dir)
        else:
            load0 = os.getloadavg()[0]
            runs = run_servers(args, model_dir, work)
            text = report(args, runs, (load0, os.getloadavg()[0]))
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
