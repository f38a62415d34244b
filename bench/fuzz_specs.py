"""Thousands of LLMDeployments fuzzed from the CRD schema against the real API server and the real operator.

Runs tests/e2e/test_schema_fuzz.py::test_fuzzed_specs (see its docstring for what each spec is checked for) with
more examples than `make test` does, on the test session's own local cluster (or --kubeconfig), then prints the
figures: specs tried, accepted and rejected by the API server, mutated, reconciled for real with the conditions
the operator wrote, known API server / `llmctl render` disagreements, updates of a live object from one accepted
spec to another (test_fuzzed_updates), time. A failure prints hypothesis's
shrunk spec; add it to tests/e2e/schema_fuzz_regressions.json.

    python bench/fuzz_specs.py --examples 3000 --updates 100 --out bench/results/fuzz_specs.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=3000, help="specs to generate (default 3000)")
    parser.add_argument("--real-one-in", type=int, default=3,
                        help="create one in N accepted specs for real, reconciled by the operator (default 3)")
    parser.add_argument("--quiet-seconds", type=float, default=1.0,
                        help="after each real reconcile, count operator writes for this long once idle (hot loops)")
    parser.add_argument("--updates", type=int, default=100,
                        help="pairs of accepted specs applied one after the other to a live object (default 100)")
    parser.add_argument("--kubeconfig", help="use this running cluster instead of starting one")
    parser.add_argument("--out", type=Path, help="write the figures as JSON here too")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        env = {**os.environ, "LLMOPS_FUZZ_EXAMPLES": str(args.examples), "LLMOPS_FUZZ_REPORT": str(report),
               "LLMOPS_FUZZ_REAL_ONE_IN": str(args.real_one_in), "LLMOPS_FUZZ_QUIET_SECONDS": str(args.quiet_seconds),
               "LLMOPS_FUZZ_UPDATES": str(args.updates)}
        command = [sys.executable, "-m", "pytest", "tests/e2e/test_schema_fuzz.py", "-p", "no:xdist", "-q",
                   "-o", "timeout=0", "-k", "test_fuzzed_specs or test_fuzzed_updates or test_fuzz_figures"]
        if args.kubeconfig:
            command.append(f"--kubeconfig={args.kubeconfig}")
        started = time.monotonic()
        proc = subprocess.run(command, cwd=ROOT, env=env, check=False)
        wall = time.monotonic() - started
        figures = json.loads(report.read_text()) if report.exists() else {}
    figures["wall_seconds_incl_cluster_start"] = round(wall, 1)
    figures["pytest_exit"] = proc.returncode
    print(json.dumps(figures, indent=1))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(figures, indent=1) + "\n")
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
