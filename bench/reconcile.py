"""Reconcile throughput of the operator against the floor, side by side, on the real local cluster.

For each N it measures, in one run and on one fresh cluster:
  floor:    one client server-side-applies the very manifests `llmctl render` produces (ConfigMap, Service,
            Deployment, PDB per object), then waits until every Deployment is ready;
  operator: one client creates N LLMDeployments; the operator (a separate `llmctl run` process) builds the
            children; we wait until every LLMDeployment reports Ready=True.
Then it waits for one periodic resync of every object and checks that it wrote nothing.

    python bench/reconcile.py --n 10,100,1000

Prints time from create to ready (p50, p99, total), API requests per reconcile, writes during the resync,
the operator's peak RSS, and the total/floor ratio (target: <= 1.5 at N=1000; RSS < 200 MB).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "operator"))

from llm_operator import builders  # noqa: E402
from llm_operator._k8s import Kube, KubeError  # noqa: E402
from llm_operator.api import LLMDeployment  # noqa: E402
from llm_operator.dev import LocalCluster  # noqa: E402
from llm_operator.dev._cluster import free_port  # noqa: E402

RESYNC_SECONDS = 20.0


def spec(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "serving.llmops.dev/v1alpha1",
        "kind": "LLMDeployment",
        "metadata": {"name": name},
        "spec": {
            "model": {"name": "smollm2-135m", "uri": "hf://HuggingFaceTB/SmolLM2-135M-Instruct"},
            "runtime": {"backend": "python", "dtype": "float32"},
            "resources": {"cpu": "1", "memory": "1Gi", "sharedMemory": "256Mi"},
            "replicas": 1,
        },
    }


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def wait_all(kube: Kube, *, namespace: str, n: int, kind: str, ready: Any, started: dict[str, float],
             timeout: float) -> dict[str, float]:
    """Poll (one list per 0.25 s) until every object is ready; returns name -> seconds from its create."""
    done: dict[str, float] = {}
    api_version = "apps/v1" if kind == "Deployment" else "serving.llmops.dev/v1alpha1"
    deadline = time.monotonic() + timeout
    while len(done) < n and time.monotonic() < deadline:
        now = time.monotonic()
        for obj in kube.list(api_version=api_version, kind=kind, namespace=namespace):
            name = obj["metadata"]["name"]
            key = name if kind != "Deployment" else obj["metadata"]["labels"]["app.kubernetes.io/instance"]
            if key not in done and ready(obj):
                done[key] = now - started[key]
        time.sleep(0.25)
    if len(done) < n:
        raise SystemExit(f"only {len(done)}/{n} {kind}s ready after {timeout}s")
    return done


def deployment_ready(obj: dict[str, Any]) -> bool:
    st = obj.get("status") or {}
    return bool(st.get("readyReplicas", 0) >= obj["spec"].get("replicas", 1) and st.get("observedGeneration"))


def llmd_ready(obj: dict[str, Any]) -> bool:
    conds = (obj.get("status") or {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conds)


def make_namespace(kube: Kube, name: str) -> None:
    kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    # Pods are refused until the namespace's default ServiceAccount exists.
    while kube.get(api_version="v1", kind="ServiceAccount", namespace=name, name="default") is None:
        time.sleep(0.1)


def floor(kube: Kube, n: int) -> dict[str, Any]:
    ns = f"floor-{n}"
    make_namespace(kube, ns)
    started: dict[str, float] = {}
    t0 = time.monotonic()
    for i in range(n):
        name = f"m{i}"
        llmd = LLMDeployment.model_validate(spec(name))
        started[name] = time.monotonic()
        for child in builders.build_children(llmd, namespace=ns, owner_uid=None, monitoring_crds=False):
            kube.apply(child)
    applied = time.monotonic() - t0
    latencies = wait_all(kube, namespace=ns, n=n, kind="Deployment", ready=deployment_ready, started=started,
                         timeout=900)
    total = time.monotonic() - t0
    return {"total": total, "applied": applied, "lat": list(latencies.values()), "requests": 4 * n}


def scrape(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(("llmop_api_requests_total{", "llmop_reconcile_total{")):
            key, value = line.rsplit(" ", 1)
            out[key] = float(value)
    return out


def total(metrics: dict[str, float], prefix: str, verbs: tuple[str, ...] | None = None) -> float:
    return sum(v for k, v in metrics.items() if k.startswith(prefix) and (verbs is None or any(
        f'verb="{verb}"' in k for verb in verbs)))


def operator_run(kube: Kube, n: int, kubeconfig: str) -> dict[str, Any]:
    ns = f"op-{n}"
    make_namespace(kube, ns)
    port = free_port()
    env = {**os.environ, "KUBECONFIG": kubeconfig, "LLMOPS_RESYNC_SECONDS": str(RESYNC_SECONDS)}
    log = open(f"/tmp/bench-operator-{n}.log", "w")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "llm_operator.cli", "run", "-n", ns, "--metrics-port", str(port)],
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    peak = [0]
    stop = threading.Event()

    def sample() -> None:
        p = psutil.Process(proc.pid)
        while not stop.is_set():
            try:
                peak[0] = max(peak[0], p.memory_info().rss)
            except psutil.Error:
                return
            time.sleep(0.1)

    threading.Thread(target=sample, daemon=True).start()
    try:
        while True:  # operator ready when its metrics endpoint answers
            try:
                scrape(port)
                break
            except OSError:
                time.sleep(0.2)
        time.sleep(1.0)
        started: dict[str, float] = {}
        t0 = time.monotonic()
        for i in range(n):
            name = f"m{i}"
            body = spec(name)
            body["metadata"]["namespace"] = ns
            started[name] = time.monotonic()
            kube.create(body)
        created = time.monotonic() - t0
        latencies = wait_all(kube, namespace=ns, n=n, kind="LLMDeployment", ready=llmd_ready, started=started,
                             timeout=1200)
        total_s = time.monotonic() - t0
        time.sleep(2.0)  # let in-flight events settle
        before = scrape(port)
        time.sleep(RESYNC_SECONDS + 5.0)  # every object is resynced once in this window
        after = scrape(port)
        reconciles = total(before, "llmop_reconcile_total")
        requests = total(before, "llmop_api_requests_total")
        return {
            "total": total_s,
            "created": created,
            "lat": list(latencies.values()),
            "requests": requests,
            "reconciles": reconciles,
            "resync_reconciles": total(after, "llmop_reconcile_total") - reconciles,
            "resync_writes": total(after, "llmop_api_requests_total", ("POST", "PUT", "PATCH", "DELETE"))
            - total(before, "llmop_api_requests_total", ("POST", "PUT", "PATCH", "DELETE")),
            "rss_mb": peak[0] / 2**20,
        }
    finally:
        stop.set()
        proc.terminate()
        proc.wait(timeout=30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", default="10,100,1000", help="comma-separated object counts")
    args = parser.parse_args()
    sizes = [int(x) for x in args.n.split(",")]
    state = Path(tempfile.mkdtemp(prefix="bench-reconcile-"))
    cluster = LocalCluster(state_dir=state / "cluster", profile=ROOT / "bench" / "nodes.yaml",
                           log=lambda m: print(f"  {m}", file=sys.stderr))
    info = cluster.up(timeout=240)
    rows = []
    try:
        from kubernetes import config

        kube = Kube(config.new_client_from_config(config_file=info.kubeconfig))
        subprocess.run([str(Path(info.bin_dir) / "kubectl"), f"--kubeconfig={info.kubeconfig}", "apply",
                        "--server-side", "-f", str(ROOT / "crds")], check=True, capture_output=True)
        subprocess.run([str(Path(info.bin_dir) / "kubectl"), f"--kubeconfig={info.kubeconfig}", "wait",
                        "--for=condition=Established", "crd/llmdeployments.serving.llmops.dev"], check=True,
                       capture_output=True)
        for n in sizes:
            print(f"N={n}: floor ...", file=sys.stderr)
            f = floor(kube, n)
            print(f"N={n}: operator ...", file=sys.stderr)
            o = operator_run(kube, n, info.kubeconfig)
            rows.append((n, f, o))
            for ns in (f"floor-{n}", f"op-{n}"):
                with contextlib.suppress(KubeError):
                    kube.delete(api_version="v1", kind="Namespace", namespace=None, name=ns)
    finally:
        cluster.down()
    print()
    print("| N | floor total s | operator total s | ratio | operator p50 / p99 s | floor p50 / p99 s "
          "| API requests per reconcile | writes on resync (reconciles) | operator peak RSS MB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for n, f, o in rows:
        per = o["requests"] / max(o["reconciles"], 1)
        print(f"| {n} | {f['total']:.1f} | {o['total']:.1f} | {o['total'] / f['total']:.2f} "
              f"| {statistics.median(o['lat']):.2f} / {pct(o['lat'], 0.99):.2f} "
              f"| {statistics.median(f['lat']):.2f} / {pct(f['lat'], 0.99):.2f} "
              f"| {per:.1f} | {o['resync_writes']:.0f} ({o['resync_reconciles']:.0f}) | {o['rss_mb']:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
