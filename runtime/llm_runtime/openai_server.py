"""The OpenAI front on its own: `python -m llm_runtime.openai_server`, next to a running tritonserver.

`llmctl serve` runs the front and tritonserver in one process tree; in a pod the front is meant to run as a
second process (or container) of the runtime image beside tritonserver, talking to it over gRPC on
127.0.0.1. SIGTERM: stop accepting connections, let running requests finish (bounded by --exit-timeout),
exit 0.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence

from llm_runtime.triton_protocol import BACKENDS


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m llm_runtime.openai_server", description=__doc__)
    p.add_argument("--model-dir", required=True, help="the model folder (for the tokenizer and chat template)")
    p.add_argument("--model-name", required=True, help="the model id clients send (`model` in requests)")
    p.add_argument("--triton-model", default=None, help="the Triton model name (default: --model-name)")
    p.add_argument(
        "--backend",
        choices=BACKENDS,
        default="python",
        help="the Triton backend behind --triton-model, which decides the tensor names (default: python)",
    )
    p.add_argument("--grpc-url", default="127.0.0.1:8001", help="tritonserver's gRPC endpoint")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 in a pod)")
    p.add_argument("--port", type=int, default=9000)
    p.add_argument("--exit-timeout", type=float, default=30.0, help="seconds running requests get on SIGTERM")
    p.add_argument("--max-inflight", type=int, default=4096,
                   help="requests in flight beyond which the front answers 503 + Retry-After (0 = no limit)")
    return p


async def _run(args: argparse.Namespace) -> int:
    from transformers import AutoTokenizer

    from llm_runtime.openai_front import OpenAIFront, start_front
    from llm_runtime.triton_protocol import protocol_for

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for s in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(s, stop.set)
    try:
        tokenizer = await asyncio.to_thread(AutoTokenizer.from_pretrained, args.model_dir)
    except Exception as exc:  # a missing folder, no tokenizer files, a corrupt tokenizer.json: all fatal
        print(f"cannot load the tokenizer from {args.model_dir}: {exc}; the model volume is empty or incomplete "
              "(the front needs the model's tokenizer files, e.g. tokenizer.json and tokenizer_config.json)",
              file=sys.stderr, flush=True)
        return 1
    front = OpenAIFront(
        model_name=args.model_name,
        tokenizer=tokenizer,
        grpc_url=args.grpc_url,
        triton_model=args.triton_model,
        protocol=protocol_for(args.backend, tokenizer),
    )
    runner = await start_front(front, host=args.host, port=args.port, max_inflight=args.max_inflight)
    print(f"OpenAI API on http://{args.host}:{args.port}/v1 (model {args.model_name!r}, Triton {args.grpc_url})",
          flush=True)
    await stop.wait()
    for site in list(runner.sites):
        await site.stop()
    deadline = loop.time() + args.exit_timeout
    while front.inflight and loop.time() < deadline:
        await asyncio.sleep(0.05)
    await runner.cleanup()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return asyncio.run(_run(args))


if __name__ == "__main__":
    sys.exit(main())
