"""Implementation of `llmctl serve` (kept apart from cli.py so that `--help` imports nothing heavy)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

from llm_runtime.launcher import LauncherError, TritonServer
from llm_runtime.repository import PARAM_EXIT_TIMEOUT_S, render_python_backend, write_model_repository

log = logging.getLogger("llm_runtime.serve")


def _model_name(args: argparse.Namespace, model_dir: Path) -> str:
    if args.model_name:
        return str(args.model_name)
    if args.tiny:
        return "tiny"
    name = re.sub(r"[^A-Za-z0-9_.-]", "-", model_dir.name).strip("-.") or "model"
    return name[:63]


def _say(msg: str) -> None:
    print(msg, flush=True)


def serve(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    work = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="llmctl-serve-"))
    work.mkdir(parents=True, exist_ok=True)
    if args.tiny:
        from llm_runtime.tiny import create_tiny_model

        model_dir = create_tiny_model(work / "tiny-model")
        _say(f"created a tiny random-weight model in {model_dir}")
    else:
        model_dir = Path(args.model_dir).expanduser().resolve()
        if not (model_dir / "config.json").is_file():
            _say(
                f"error: {model_dir} is not a Hugging Face model directory (no config.json): pass the "
                "directory that holds config.json, the *.safetensors weights and the tokenizer files"
            )
            return 2
    name = _model_name(args, model_dir)
    try:
        files = render_python_backend(
            model_name=name,
            model_dir=str(model_dir),
            max_batch_size=args.max_batch_size,
            max_queue_size=args.max_queue_size,
            queue_timeout_us=args.queue_timeout_us,
            dtype=args.dtype,
            parameters={PARAM_EXIT_TIMEOUT_S: str(args.exit_timeout)},
        )
    except ValueError as exc:
        _say(f"error: {exc}")
        return 2
    repo = work / "repository"
    write_model_repository(files, repo)
    server = TritonServer(
        repository=repo,
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        metrics_port=args.metrics_port,
        host=args.host,
        exit_timeout_s=max(1, int(args.exit_timeout)),
        log_file=work / "tritonserver.log",
    )
    stop_requested: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        stop_requested.append(signum)

    # Until the event loop runs, a signal only records the request; startup finishes or fails first.
    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        _say(f"starting tritonserver for model '{name}' (log: {server.log_file}) ...")
        t0 = time.monotonic()
        try:
            server.start()
        except LauncherError as exc:
            _say(f"error: {exc}")
            return 1
        _say(f"tritonserver ready in {time.monotonic() - t0:.1f}s")
        if stop_requested:
            return _shutdown(server, None)
        return asyncio.run(_run(args, server, name, model_dir, stop_requested))
    finally:
        if server.proc is not None and server.proc.poll() is None:
            server.stop()
        for s, h in previous.items():
            signal.signal(s, h)
        if not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)


async def _run(
    args: argparse.Namespace, server: TritonServer, name: str, model_dir: Path, stop_requested: list[int]
) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for s in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(s, stop.set)
    runner = None
    front = None
    if not args.no_openai:
        from transformers import AutoTokenizer

        from llm_runtime.openai_front import OpenAIFront, start_front

        tokenizer = await asyncio.to_thread(AutoTokenizer.from_pretrained, str(model_dir))
        front = OpenAIFront(model_name=name, tokenizer=tokenizer, grpc_url=server.grpc_url)
        runner = await start_front(front, host=args.host, port=args.port, max_inflight=args.max_inflight)
    if runner is not None:
        _say(f'  OpenAI API:   http://{args.host}:{args.port}/v1   (model "{name}")')
    _say(f"  Triton HTTP:  {server.http_url}   (POST /v2/models/{name}/generate and /generate_stream)")
    _say(f"  Triton gRPC:  {server.grpc_url}")
    _say(f"  Metrics:      {server.metrics_url}")
    _say("Press Ctrl-C to stop.")
    await stop.wait()
    _say("shutting down: finishing in-flight requests ...")
    if runner is not None and front is not None:
        # Stop accepting connections first, then let streams that are running end (bounded).
        for site in list(runner.sites):
            await site.stop()
        deadline = loop.time() + args.exit_timeout
        while front.inflight and loop.time() < deadline:
            await asyncio.sleep(0.05)
        await runner.cleanup()
    return await asyncio.to_thread(_shutdown, server, None)


def _shutdown(server: TritonServer, _unused: object) -> int:
    rc = server.stop()
    _say(f"tritonserver stopped (exit code {rc})")
    return 0 if rc == 0 else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(1)
