"""`llmctl serve`: build a model repository, start the real tritonserver and the OpenAI front locally.

Only argparse lives at module level so that `llmctl --help` works without the runtime extra installed;
torch, transformers and tritonclient are imported inside :func:`run_serve`.
"""

from __future__ import annotations

import argparse
import sys


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the `serve` options to ``parser`` (the `llmctl serve` sub-parser)."""
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--model-dir",
        help="Hugging Face-format causal LM directory (config.json, *.safetensors, tokenizer files)",
    )
    src.add_argument(
        "--tiny",
        action="store_true",
        help="create a tiny random-weight model and tokenizer locally (no download) and serve it",
    )
    parser.add_argument("--model-name", default=None, help="name served under (default: dir name or 'tiny')")
    parser.add_argument("--host", default="127.0.0.1", help="address the OpenAI front binds (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=9000, help="OpenAI-compatible front port (default 9000)")
    parser.add_argument("--http-port", type=int, default=8000, help="Triton HTTP port (default 8000)")
    parser.add_argument("--grpc-port", type=int, default=8001, help="Triton gRPC port (default 8001)")
    parser.add_argument("--metrics-port", type=int, default=8002, help="Triton metrics port (default 8002)")
    parser.add_argument("--max-batch-size", type=int, default=32, help="running batch size (default 32)")
    parser.add_argument(
        "--max-queue-size", type=int, default=64, help="admission queue bound; beyond it 503 (default 64)"
    )
    parser.add_argument(
        "--queue-timeout-us",
        type=int,
        default=0,
        help="refuse requests that waited longer than this in the queue (0: no limit)",
    )
    parser.add_argument(
        "--dtype", default="auto", choices=("auto", "float32", "float16", "bfloat16"), help="weights dtype"
    )
    parser.add_argument(
        "--exit-timeout", type=float, default=30.0, help="seconds in-flight requests get to finish on shutdown"
    )
    parser.add_argument("--work-dir", default=None, help="where to write the model repository (default: temp)")
    parser.add_argument(
        "--max-inflight",
        type=int,
        default=4096,
        help="requests in flight in the OpenAI front beyond which it answers 503 + Retry-After (0 = no limit)",
    )
    parser.add_argument("--no-openai", action="store_true", help="do not start the OpenAI-compatible front")


def run_serve(args: argparse.Namespace) -> int:
    """Run until SIGINT/SIGTERM; return the process exit code."""
    from llm_runtime._serve import serve  # heavy imports stay out of `llmctl --help`

    return serve(args)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llm_runtime.cli")
    sub = parser.add_subparsers(dest="command", required=True)
    add_serve_arguments(sub.add_parser("serve", help="serve a model with tritonserver and the OpenAI front"))
    args = parser.parse_args(argv)
    return run_serve(args)


if __name__ == "__main__":
    sys.exit(main())
