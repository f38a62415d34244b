"""The runtime under attack (issue 13): 10x overload, and 10,000 streams opened and dropped.

    .venv/bin/python bench/runtime_attack.py                       # defaults below, ~2-3 minutes on 2 cores
    .venv/bin/python bench/runtime_attack.py --streams 2000 --overload-s 10

Serves a tiny random-weight model with `llmctl serve` (tritonserver + python stub + OpenAI front, all on
127.0.0.1) with a running batch of --batch and an admission queue of --queue, so the runtime serves
batch + queue requests at once. Then:

1. **10x overload**: 10 x (batch + queue) clients for --overload-s seconds, a quarter each on the OpenAI front
   (SSE and not) and on Triton's generate / generate_stream; each client sends again at once whatever the
   answer (ignores Retry-After). At the end every request still in flight is abandoned. Reported: answers by
   endpoint and status, Retry-After seen on refusals, RSS of tritonserver + stub + front before / peak / after,
   time from the abandon until nothing is running, queued, pending in Triton or in flight in the front.
2. **--streams streams opened and dropped**: that many streaming chat completions opened at once on the front
   (a third dropped after the first chunk, a third after the headers, a third before any answer), then the
   same drain check, RSS before / peak / after, and the front's own counters.
After both, one ordinary request must still succeed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "runtime"))

from runtime_attack_client import (  # noqa: E402
    RssSampler,
    open_and_drop_streams,
    overload,
    raise_nofile,
    scrape,
    tree_rss,
    wait_drained,
)
from runtime_serving_helpers import post_json, start_serve  # noqa: E402

MIB = 1024 * 1024


def _mib(rss: dict[str, int]) -> str:
    return ", ".join(f"{k} {v / MIB:.0f}" for k, v in rss.items() if v)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--queue", type=int, default=8)
    ap.add_argument("--overload-factor", type=int, default=10)
    ap.add_argument("--overload-s", type=float, default=20.0, help="0 skips the overload phase")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--streams", type=int, default=10_000)
    ap.add_argument("--stream-rounds", type=int, default=2,
                    help="repeat the streams phase: RSS that stops growing after the first is reuse, not a leak")
    ap.add_argument("--max-inflight", type=int, default=4096, help="the front's in-flight limit (serve default)")
    ap.add_argument("--out", type=Path, default=None, help="write the figures as JSON here too")
    args = ap.parse_args()

    nofile = raise_nofile(args.streams + 2000)  # `llmctl serve` inherits it; the front raises its own too
    print(f"open-files limit of the client and the server: {nofile}", flush=True)
    work = Path(tempfile.mkdtemp(prefix="runtime-attack-"))
    from llm_runtime.tiny import create_tiny_model

    model_dir = create_tiny_model(work / "tiny")
    served = start_serve(work, "--model-dir", str(model_dir), "--max-batch-size", str(args.batch),
                         "--max-queue-size", str(args.queue), "--max-inflight", str(args.max_inflight),
                         "--exit-timeout", "10")
    triton_metrics = f"http://127.0.0.1:{served.metrics_port}/metrics"
    front_metrics = f"http://127.0.0.1:{served.openai_port}/metrics"
    figures: dict[str, Any] = {"batch": args.batch, "queue": args.queue}
    try:
        # Warm up (first requests compile kernels, allocate caches): RSS "before" is a warm server's.
        for _ in range(3):
            assert post_json(f"{served.openai_base}/completions",
                             {"model": "tiny", "prompt": "warm", "max_tokens": args.max_tokens})[0] == 200
        time.sleep(1)

        # ---- 1. 10x overload
        if args.overload_s > 0:
            concurrency = args.overload_factor * (args.batch + args.queue)
            rss_before = tree_rss(served.proc.pid)
            m0 = scrape(triton_metrics)
            print(f"\n10x overload: {concurrency} clients for {args.overload_s:.0f}s "
                  f"(capacity {args.batch} running + {args.queue} queued)", flush=True)
            with RssSampler(served.proc.pid) as sampler:
                outcome, abandoned_at = asyncio.run(overload(
                    openai_base=served.openai_base, triton_base=served.http_base, model=served.model,
                    concurrency=concurrency, duration_s=args.overload_s, max_tokens=args.max_tokens))
                drain_s, last = wait_drained(triton_metrics_url=triton_metrics, front_metrics_url=front_metrics,
                                             timeout_s=120)
                drain_s = None if drain_s is None else time.monotonic() - abandoned_at  # from the abandon
            time.sleep(1)
            rss_after = tree_rss(served.proc.pid)
            m1 = scrape(triton_metrics)
            print("  answers:", dict(sorted(outcome.statuses.items())))
            print("  refusals:", dict(sorted(outcome.retry_after.items())))
            print("  refusal messages:", sorted(outcome.refusal_messages)[:4])
            if outcome.errors:
                print("  client errors:", dict(outcome.errors))
            print(f"  RSS MiB before: {_mib(rss_before)}")
            print(f"  RSS MiB peak:   {_mib(dict(sampler.peak))}")
            print(f"  RSS MiB after:  {_mib(rss_after)}")
            print(f"  drained (running, queued, pending, front in flight all 0) {drain_s:.2f}s after the abandon"
                  if drain_s is not None else f"  NOT drained after 120 s: {last}")
            rejected = m1.get("llm_requests_rejected_total", 0) - m0.get("llm_requests_rejected_total", 0)
            print(f"  llm_requests_rejected_total +{rejected:.0f}, llm_requests_failed_total "
                  f"+{m1.get('llm_requests_failed_total', 0) - m0.get('llm_requests_failed_total', 0):.0f}")
            if outcome.refused_s and outcome.served_s:
                rs, ss = sorted(outcome.refused_s), sorted(outcome.served_s)
                p50, p99 = rs[len(rs) // 2] * 1000, rs[int(len(rs) * 0.99)] * 1000
                print(f"  refusal latency p50 {p50:.0f} ms p99 {p99:.0f} ms; served p50 {ss[len(ss) // 2]:.2f}s")
            figures["overload"] = {
                "concurrency": concurrency, "duration_s": args.overload_s, "answers": dict(outcome.statuses),
                "refusals": dict(outcome.retry_after), "client_errors": dict(outcome.errors),
                "rss_before": rss_before, "rss_peak": dict(sampler.peak), "rss_after": rss_after, "drain_s": drain_s,
                "rejected": rejected,
            }

        # ---- 2. streams opened and dropped
        figures["streams"] = []
        for round_ in range(1, args.stream_rounds + 1):
            figures["streams"].append(streams_round(args, served, round_, triton_metrics, front_metrics))

        status, _body, _ = post_json(f"{served.openai_base}/completions",
                                    {"model": "tiny", "prompt": "still there?", "max_tokens": 8})
        print(f"\nafter the attack: an ordinary request answers {status}; server process alive: "
              f"{served.proc.poll() is None}")
        figures["after_status"] = status
        figures["front_failed_total"] = scrape(front_metrics).get("llm_requests_failed_total")
    finally:
        rc = served.stop()
        print(f"serve exit code {rc}")
        figures["exit_code"] = rc
    if args.out:
        args.out.write_text(json.dumps(figures, indent=2))
    return 0


def streams_round(args: argparse.Namespace, served: Any, round_: int, triton_metrics: str,
                  front_metrics: str) -> dict[str, Any]:
    rss_before = tree_rss(served.proc.pid)
    f0 = scrape(front_metrics)
    print(f"\n{args.streams} streaming connections opened at once and dropped (round {round_})", flush=True)
    t0 = time.monotonic()
    with RssSampler(served.proc.pid) as sampler:
        seen = asyncio.run(open_and_drop_streams(openai_base=served.openai_base, model=served.model,
                                                 n=args.streams, max_tokens=args.max_tokens))
        opened_s = time.monotonic() - t0
        drain_s, last = wait_drained(triton_metrics_url=triton_metrics, front_metrics_url=front_metrics,
                                     timeout_s=180)
    time.sleep(1)
    rss_after = tree_rss(served.proc.pid)
    f1 = scrape(front_metrics)
    print("  what the connections saw:", dict(sorted(seen.items())))
    print(f"  all {args.streams} handled (opened, answered or refused, dropped) in {opened_s:.1f}s")
    print(f"  drained {drain_s:.2f}s after the last drop" if drain_s is not None
          else f"  NOT drained after 180 s: {last}")
    print(f"  front: inflight {f1.get('llm_front_inflight_requests')}, rejected (in-flight limit) "
          f"+{f1.get('llm_requests_rejected_total', 0) - f0.get('llm_requests_rejected_total', 0):.0f}, failed "
          f"+{f1.get('llm_requests_failed_total', 0) - f0.get('llm_requests_failed_total', 0):.0f}")
    print(f"  RSS MiB before: {_mib(rss_before)}")
    print(f"  RSS MiB peak:   {_mib(dict(sampler.peak))}")
    print(f"  RSS MiB after:  {_mib(rss_after)}")
    return {
        "n": args.streams, "seen": dict(seen), "handled_s": opened_s, "drain_s": drain_s, "last": last,
        "rss_before": rss_before, "rss_peak": dict(sampler.peak), "rss_after": rss_after,
    }


if __name__ == "__main__":
    sys.exit(main())
