"""How long `llmctl dev up` takes with cached binaries, and how much memory the control plane holds at idle.

    .venv/bin/python bench/devup.py [--runs 3] [--idle 15]

Each run starts a fresh cluster in a temporary state folder with the plain command (`llmctl dev up`, default
fleet of 8 nodes), times it until it returns (API, nodes, node leases and the default ServiceAccount ready),
waits --idle seconds, reads the resident memory of every component from the pids in the cluster's state file
($LLMCTL_STATE_DIR/NAME/cluster.json), then runs `llmctl dev down`. The binaries are resolved (built if
missing) once before the first run, so no run pays for a build. Prints each run, then min/median/max.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "operator"))

from llm_operator.dev import resolve_bin_dir  # noqa: E402
from llm_operator.dev._cluster import COMPONENTS, STATE_FILE  # noqa: E402

NAME = "devup-bench"


def rss_mib(pid: int) -> float:
    """Resident set size from /proc (Linux), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def one_run(llmctl: Path, state_root: Path, idle: float) -> tuple[float, float, dict[str, float]]:
    """(seconds until `dev up` returned, the cluster's own ready_seconds, RSS MiB per component)."""
    env = {**os.environ, "LLMCTL_STATE_DIR": str(state_root)}
    started = time.monotonic()
    up = subprocess.run([str(llmctl), "dev", "up", "--name", NAME], env=env, capture_output=True, text=True,
                        check=False)
    elapsed = time.monotonic() - started
    try:
        if up.returncode != 0:
            raise SystemExit(f"llmctl dev up failed ({up.returncode}):\n{up.stderr}")
        time.sleep(idle)
        state = json.loads((state_root / NAME / STATE_FILE).read_text())
        rss = {name: rss_mib(state["pids"][name]) for name in COMPONENTS}
        return elapsed, float(state["ready_seconds"]), rss
    finally:
        subprocess.run([str(llmctl), "dev", "down", "--name", NAME], env=env, capture_output=True, check=False)


def spread(values: list[float]) -> str:
    return f"{min(values):.1f} / {statistics.median(values):.1f} / {max(values):.1f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="clusters to start one after another (default 3)")
    parser.add_argument("--idle", type=float, default=15.0, help="seconds at idle before reading RSS (default 15)")
    args = parser.parse_args()

    llmctl = Path(sys.executable).with_name("llmctl")
    print(f"binaries: {resolve_bin_dir()}", file=sys.stderr)  # builds them now if the cache is empty
    times: list[float] = []
    own: list[float] = []
    rss: dict[str, list[float]] = {name: [] for name in COMPONENTS}
    with tempfile.TemporaryDirectory(prefix="devup-bench-") as tmp:
        for run in range(1, args.runs + 1):
            elapsed, ready, memory = one_run(llmctl, Path(tmp), args.idle)
            times.append(elapsed)
            own.append(ready)
            for name, value in memory.items():
                rss[name].append(value)
            parts = ", ".join(f"{name} {value:.0f}" for name, value in memory.items())
            print(f"run {run}: dev up {elapsed:.1f} s (cluster.json ready_seconds {ready:.1f} s); "
                  f"RSS MiB: {parts}; total {sum(memory.values()):.0f}")
    totals = [sum(rss[name][i] for name in COMPONENTS) for i in range(args.runs)]
    print(f"\n`llmctl dev up` until it returns, s (min / median / max of {args.runs}): {spread(times)}")
    print(f"cluster.json ready_seconds, s (min / median / max):          {spread(own)}")
    print(f"RSS at idle after {args.idle:.0f} s, MiB (min / median / max):")
    for name in COMPONENTS:
        print(f"  {name:<24} {spread(rss[name])}")
    print(f"  {'total':<24} {spread(totals)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
