"""Figures of the metrics test bed (issue #7): what `--metrics` adds to `llmctl dev up`, and how long a change of
the emulated load takes to show through custom.metrics.k8s.io.

    .venv/bin/python bench/metrics_latency.py [--runs 3] [--idle 15] [--trials 10]

1. `dev up` with cached binaries, alternately without and with `--metrics` (--runs each, fresh state folders),
   timed until the command returns; after --idle seconds the RSS of Prometheus, prometheus-adapter and the
   traffic emulator (pids from the cluster's state file).
2. On one more `dev up --metrics` cluster, with the operator (`llmctl run`) in its own process and one vllm
   LLMDeployment of 1 replica: --trials times, the load goes from 0 to far above the pod's capacity (its queue
   jumps to its bound of 40 within one emulator step) and the time until `GET .../pods/*/llmops_queue_depth`
   answers 40 is taken (a series the adapter already lists: scrape + rule evaluation); then the load goes back
   to 0 and the queue is let drain. Then the LLMDeployment scales to 2 and the time from the emulator first
   exporting the new pod to the API listing it is taken (a new series: adds the adapter's relist).
Prints each figure and min/median/max.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "operator"))

from llm_operator.dev import resolve_bin_dir  # noqa: E402
from llm_operator.dev._cluster import METRICS_COMPONENTS, STATE_FILE  # noqa: E402
from llm_operator.dev.traffic.client import TrafficClient  # noqa: E402

LLMCTL = [sys.executable, "-m", "llm_operator.cli"]
QUEUE_BOUND = 40


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def spread(values: list[float]) -> str:
    return f"{min(values):.2f} / {statistics.median(values):.2f} / {max(values):.2f}"


def wait(check: Callable[[], Any], *, timeout: float, what: str, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if value := check():
                return value
        time.sleep(interval)
    raise SystemExit(f"timed out after {timeout}s waiting for {what}")


@contextlib.contextmanager
def dev_cluster(state_root: Path, name: str, *, metrics: bool) -> Iterator[tuple[float, dict[str, Any]]]:
    """(seconds `dev up` took, the cluster's state file) while it runs; `dev down` afterwards."""
    env = {**os.environ, "LLMCTL_STATE_DIR": str(state_root)}
    args = [*LLMCTL, "dev", "up", "--name", name, *(["--metrics", "--startup-delay", "0"] if metrics else [])]
    started = time.monotonic()
    up = subprocess.run(args, env=env, capture_output=True, text=True, check=False)
    elapsed = time.monotonic() - started
    try:
        if up.returncode != 0:
            raise SystemExit(f"llmctl dev up failed ({up.returncode}):\n{up.stderr}")
        yield elapsed, json.loads((state_root / name / STATE_FILE).read_text())
    finally:
        subprocess.run([*LLMCTL, "dev", "down", "--name", name], env=env, capture_output=True, check=False)


def measure_devup(runs: int, idle: float) -> None:
    times: dict[bool, list[float]] = {False: [], True: []}
    rss: dict[str, list[float]] = {name: [] for name in METRICS_COMPONENTS}
    with tempfile.TemporaryDirectory(prefix="metrics-bench-") as tmp:
        for i in range(runs):
            for metrics in (False, True):
                with dev_cluster(Path(tmp), f"up-{i}-{int(metrics)}", metrics=metrics) as (elapsed, state):
                    times[metrics].append(elapsed)
                    line = f"run {i + 1} {'--metrics' if metrics else 'plain    '} dev up {elapsed:.2f}s"
                    if metrics:
                        time.sleep(idle)
                        for name in METRICS_COMPONENTS:
                            rss[name].append(rss_mib(state["pids"][name]))
                        line += "  RSS MiB " + ", ".join(f"{n} {rss[n][-1]:.0f}" for n in METRICS_COMPONENTS)
                    print(line, flush=True)
    print(f"dev up without --metrics, s (min / median / max): {spread(times[False])}")
    print(f"dev up with --metrics, s:                          {spread(times[True])}")
    added = [b - a for a, b in zip(times[False], times[True], strict=True)]
    print(f"added by --metrics, s (pairwise):                  {spread(added)}")
    for name in METRICS_COMPONENTS:
        print(f"idle RSS {name}, MiB: {spread(rss[name])}")
    print(f"idle RSS all three, MiB (median): {sum(statistics.median(v) for v in rss.values()):.0f}")


def kubectl(state: dict[str, Any], *args: str, check: bool = True, stdin: str | None = None) -> str:
    proc = subprocess.run([str(Path(state["bin_dir"]) / "kubectl"), f"--kubeconfig={state['kubeconfig']}", *args],
                          capture_output=True, text=True, check=False, input=stdin)
    if check and proc.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)}: {proc.stderr}")
    return proc.stdout


_tls: dict[str, ssl.SSLContext] = {}


def queue_depths(state: dict[str, Any], ns: str) -> dict[str, float]:
    """GET the Pods metric from the apiserver directly (a kubectl process per poll would blur the timing)."""
    from kubernetes.utils import parse_quantity

    pki = Path(state["state_dir"]) / "pki"
    if str(pki) not in _tls:
        ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        ctx.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
        _tls[str(pki)] = ctx
    url = f"{state['server']}/apis/custom.metrics.k8s.io/v1beta2/namespaces/{ns}/pods/*/llmops_queue_depth"
    try:
        with urllib.request.urlopen(url, context=_tls[str(pki)], timeout=10) as resp:
            items = json.loads(resp.read())["items"]
    except urllib.error.HTTPError:  # 404 until the adapter's relist has seen the series
        return {}
    return {i["describedObject"]["name"]: float(parse_quantity(i["value"])) for i in items}


def measure_latency(trials: int) -> None:
    ns, name = "bench", "lat"
    with tempfile.TemporaryDirectory(prefix="metrics-bench-") as tmp, \
            dev_cluster(Path(tmp), "latency", metrics=True) as (_, state):
        kubectl(state, "apply", "--server-side", "-f", str(ROOT / "crds" / "llmdeployments.serving.llmops.dev.yaml"))
        kubectl(state, "wait", "--for=condition=Established", "crd/llmdeployments.serving.llmops.dev")
        kubectl(state, "create", "namespace", ns)
        wait(lambda: kubectl(state, "get", "serviceaccount", "default", "-n", ns, check=False), timeout=30,
             what="the default ServiceAccount")
        env = {**os.environ, "KUBECONFIG": state["kubeconfig"]}
        log = open(Path(tmp) / "operator.log", "wb")  # noqa: SIM115 - the child's log
        operator = subprocess.Popen([*LLMCTL, "run", "-n", ns], env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            client = TrafficClient(f"http://127.0.0.1:{state['ports']['traffic']}")
            client.set_capacity(namespace=ns, name=name, tokens_per_second=2500, max_queue=QUEUE_BOUND)
            kubectl(state, "apply", "-n", ns, "-f", "-", stdin=json.dumps({
                "apiVersion": "serving.llmops.dev/v1alpha1", "kind": "LLMDeployment", "metadata": {"name": name},
                "spec": {"model": {"name": "tiny", "uri": "hf://HuggingFaceTB/SmolLM2-135M-Instruct"},
                         "runtime": {"backend": "vllm"},
                         "resources": {"gpu": {"count": 1, "product": "NVIDIA-H100-80GB-HBM3"}}, "replicas": 1}}))
            (pod,) = wait(lambda: queue_depths(state, ns), timeout=120, what="the first pod's queue depth")
            latencies = []
            for trial in range(trials):
                wait(lambda: queue_depths(state, ns).get(pod) == 0, timeout=60, what="an empty queue")
                # Between trials the phase of the change against the scrape and evaluation ticks varies.
                time.sleep((0.37 * trial) % 2)
                start = time.monotonic()
                client.set_load(namespace=ns, name=name, rps=500, output_tokens=100)
                wait(lambda: queue_depths(state, ns).get(pod) == QUEUE_BOUND, timeout=60, what="the full queue")
                latencies.append(time.monotonic() - start)
                print(f"trial {trial + 1}: load change visible through custom.metrics.k8s.io after "
                      f"{latencies[-1]:.2f}s", flush=True)
                client.set_load(namespace=ns, name=name, rps=0)
            print(f"load change -> custom metrics API, s (min / median / max): {spread(latencies)}")

            client.set_load(namespace=ns, name=name, rps=500, output_tokens=100)
            kubectl(state, "scale", "llmd", name, "-n", ns, "--replicas=2")
            new_pod = wait(lambda: [p["pod"] for p in client.state()["pods"]
                                    if p["namespace"] == ns and p["pod"] != pod and p["exporting"]],
                           timeout=120, what="the emulator to export the new pod")[0]
            exported = time.monotonic()
            wait(lambda: new_pod in queue_depths(state, ns), timeout=60, what="the new pod in the API")
            print(f"new pod: first exported -> listed by custom.metrics.k8s.io: {time.monotonic() - exported:.2f}s")
        finally:
            operator.terminate()
            operator.wait(timeout=30)
            log.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="dev up runs with and without --metrics (each)")
    parser.add_argument("--idle", type=float, default=15.0, help="seconds idle before reading RSS")
    parser.add_argument("--trials", type=int, default=10, help="load changes timed through the API")
    args = parser.parse_args()
    resolve_bin_dir(with_adapter=True)  # build once, outside the timings
    if args.runs:
        measure_devup(args.runs, args.idle)
    if args.trials:
        measure_latency(args.trials)


if __name__ == "__main__":
    main()
