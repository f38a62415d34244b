"""Reconcile throughput of the operator against the floor, side by side, on the real local cluster.

For each N, repeated R times (the order of the two runs alternates: floor first, then operator first, ...):
  floor:    a pool of LLMOPS_WORKERS threads (the operator's own worker count) server-side-applies the very
            manifests `llmctl render` produces; each task applies one object's four children (ConfigMap,
            Service, Deployment, PDB) in order, waiting for each answer, as one operator reconcile does.
            With --children full also the HPA, the canary's two revision Services, and a read of the
            object's HTTPRoute (whose weights already say what they should).
            Done when every Deployment is ready.
  operator: one client creates N LLMDeployments; the operator (a separate `llmctl run` process with default
            settings and the same LLMOPS_WORKERS) builds the children. Done when every LLMDeployment reports
            Ready=True. Then a second operator process (LLMOPS_RESYNC_SECONDS=20) reconciles every object at
            start-up and again on its periodic resyncs; it must write nothing.
Each run gets its own namespace with one warm-up object made ready first (so the operator's start-up and the
clients' first connections are not timed); the namespace is deleted afterwards and the next run starts only
when it and every pod are gone. Readiness is seen through one watch per run, not by polling lists. The code
measured is a snapshot of --source (default HEAD), not the working tree.

    python bench/reconcile.py --n 10,100,1000 --repeat 3 --out bench/results/reconcile.json

Prints time from create to ready (p50, p99, total) and the operator/floor ratios as median (min-max) over the
repeats, the operator's API requests and reconciles per object (from its llmop_* counters), its writes on
restart and resync, its peak RSS; writes every run's figures as JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]
# The code under test is a snapshot of one commit (--source), so edits made in the checkout during an hour-long
# run cannot change what is measured half-way; the operator processes import it through PYTHONPATH.
SOURCE_ENV = "BENCH_RECONCILE_SOURCE"
SRC = Path(os.environ.get(SOURCE_ENV) or ROOT)
sys.path.insert(0, str(SRC / "operator"))

from llm_operator import builders  # noqa: E402
from llm_operator._k8s import WRITE_VERBS, Kube, KubeError, _path  # noqa: E402
from llm_operator.api import LLMDeployment  # noqa: E402
from llm_operator.dev import LocalCluster  # noqa: E402
from llm_operator.dev._cluster import free_port  # noqa: E402

RESYNC_SECONDS = 20.0
WARMUP = "warmup"
LABEL_INSTANCE = "app.kubernetes.io/instance"
ROUTE_API = "gateway.networking.k8s.io/v1"


# --children full adds what the autoscaling and canary features put next to every object: an HPA, and the canary's
# two revision Services behind a user's HTTPRoute (one per object, made before the clock starts in both runs).
CHILDREN = {"basic": False, "full": True}


def spec(name: str, namespace: str, *, full: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "serving.llmops.dev/v1alpha1",
        "kind": "LLMDeployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "model": {"name": "smollm2-135m", "uri": "hf://HuggingFaceTB/SmolLM2-135M-Instruct"},
            "runtime": {"backend": "python", "dtype": "float32"},
            "resources": {"cpu": "1", "memory": "1Gi", "sharedMemory": "256Mi"},
            "replicas": 1,
        },
    }
    if full:
        body["spec"]["autoscaling"] = {"minReplicas": 1, "maxReplicas": 3, "metrics": {"queueDepth": 16}}
        body["spec"]["rollout"] = {"strategy": "Canary", "canary": {
            "steps": [{"setWeight": 20}, {"pause": {}}], "trafficRouting": {"gatewayAPI": {"httpRoute": name}}}}
    return body


def http_route(name: str, namespace: str) -> dict[str, Any]:
    """The user's route: all traffic on the stable revision, as the operator leaves it between rollouts."""
    llmd = LLMDeployment.model_validate(spec(name, namespace, full=True))
    stable, canary = builders.revision_service_name(llmd, "stable"), builders.revision_service_name(llmd, "canary")
    return {"apiVersion": ROUTE_API, "kind": "HTTPRoute", "metadata": {"name": name, "namespace": namespace},
            "spec": {"parentRefs": [{"name": "public"}],
                     "rules": [{"backendRefs": [{"name": stable, "port": 8000, "weight": 100},
                                                {"name": canary, "port": 8000, "weight": 0}]}]}}


def make_routes(kube: Kube, ns: str, names: list[str]) -> None:
    with ThreadPoolExecutor(max_workers=8, thread_name_prefix="routes") as pool:
        list(pool.map(lambda name: kube.create(http_route(name, ns)), names))


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def spread(values: list[float]) -> dict[str, float]:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def deployment_ready(obj: dict[str, Any]) -> bool:
    st = obj.get("status") or {}
    generation = obj["metadata"].get("generation", 0)
    return bool(st.get("readyReplicas", 0) >= obj["spec"].get("replicas", 1)
                and st.get("observedGeneration", 0) >= generation)


def llmd_ready(obj: dict[str, Any]) -> bool:
    conds = (obj.get("status") or {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conds)


class ReadyWatch:
    """Records when each expected object is first seen ready, from one watch stream.

    Polling a list of 1000 Deployments four times a second costs the 2-core machine more than the thing
    being measured, and costs the floor (large Deployments) more than the operator (small LLMDeployments).
    """

    def __init__(self, api_client: Any, *, api_version: str, kind: str, namespace: str, expected: set[str],
                 key: Callable[[dict[str, Any]], str], ready: Callable[[dict[str, Any]], bool]) -> None:
        self._api = api_client
        self._path = _path(api_version, kind, namespace, None, None)
        self.expected = set(expected)
        self._key, self._ready = key, ready
        self.ready_at: dict[str, float] = {}
        self.done = threading.Event()
        self._stop = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"watch-{kind}", daemon=True)

    def start(self) -> ReadyWatch:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=40)

    def wait(self, timeout: float) -> None:
        if not self.done.wait(timeout) or self.error is not None:
            missing = sorted(self.expected - set(self.ready_at))
            raise SystemExit(f"{len(missing)} of {len(self.expected)} not ready after {timeout:.0f}s "
                             f"(e.g. {missing[:3]}); watch error: {self.error!r}")

    def _events(self, resource_version: str | None) -> Iterator[dict[str, Any]]:
        query = [("watch", "true"), ("timeoutSeconds", "30"), ("allowWatchBookmarks", "true")]
        if resource_version:
            query.append(("resourceVersion", resource_version))
        for event in Kube(self._api).stream(self._path, query=query, read_timeout=60):
            yield event
            if self._stop.is_set():
                return

    def _run(self) -> None:
        # Without a resourceVersion the server first sends every existing object as ADDED, so a restart
        # (timeout, or 410 Gone) never misses a readiness that happened in between.
        rv: str | None = None
        try:
            while not self._stop.is_set() and not self.done.is_set():
                for event in self._events(rv):
                    obj = event["object"]
                    if event["type"] == "ERROR":
                        rv = None
                        break
                    rv = obj["metadata"].get("resourceVersion") or rv
                    if event["type"] in ("ADDED", "MODIFIED") and self._ready(obj):
                        name = self._key(obj)
                        if name in self.expected and name not in self.ready_at:
                            self.ready_at[name] = time.monotonic()
                            if len(self.ready_at) == len(self.expected):
                                self.done.set()
                                return
        except BaseException as exc:  # surfaced by wait(); a silent watcher would look like a slow cluster
            self.error = exc
            self.done.set()


def deployment_watch(api_client: Any, namespace: str, expected: set[str]) -> ReadyWatch:
    return ReadyWatch(api_client, api_version="apps/v1", kind="Deployment", namespace=namespace, expected=expected,
                      key=lambda o: (o["metadata"].get("labels") or {}).get(LABEL_INSTANCE, ""),
                      ready=deployment_ready)


def llmd_watch(api_client: Any, namespace: str, expected: set[str]) -> ReadyWatch:
    return ReadyWatch(api_client, api_version="serving.llmops.dev/v1alpha1", kind="LLMDeployment",
                      namespace=namespace, expected=expected, key=lambda o: o["metadata"]["name"], ready=llmd_ready)


def make_namespace(kube: Kube, name: str) -> None:
    kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    # Pods are refused until the namespace's default ServiceAccount exists.
    while kube.get(api_version="v1", kind="ServiceAccount", namespace=name, name="default") is None:
        time.sleep(0.1)


def remove_namespace(kube: Kube, name: str, timeout: float = 1200) -> float:
    """Delete the namespace and wait until it and every pod in the cluster are gone; returns the seconds taken.

    The garbage collector and the namespace controller deleting 1000 pods would otherwise run during the
    next measurement.
    """
    t0 = time.monotonic()
    with contextlib.suppress(KubeError):
        kube.delete(api_version="v1", kind="Namespace", namespace=None, name=name)
    while time.monotonic() - t0 < timeout:
        gone = kube.get(api_version="v1", kind="Namespace", namespace=None, name=name) is None
        if gone and not kube.list(api_version="v1", kind="Pod", namespace=None):
            return time.monotonic() - t0
        time.sleep(1.0)
    raise SystemExit(f"namespace {name} still there after {timeout:.0f}s")


def latency_figures(started: dict[str, float], watch: ReadyWatch) -> dict[str, float]:
    lat = [watch.ready_at[k] - started[k] for k in started]
    return {"p50": statistics.median(lat), "p90": pct(lat, 0.90), "p99": pct(lat, 0.99), "max": max(lat),
            "min": min(lat), "mean": statistics.fmean(lat)}


def floor_run(kube_factory: Callable[[], Any], n: int, ns: str, workers: int, timeout: float, *,
              full: bool = False) -> dict[str, Any]:
    admin = Kube(kube_factory())
    make_namespace(admin, ns)
    kube = Kube(kube_factory())

    def apply_children(name: str) -> None:
        llmd = LLMDeployment.model_validate(spec(name, ns, full=full))
        for child in builders.build_children(llmd, namespace=ns, owner_uid=None, monitoring_crds=False):
            kube.apply(child)
        if full:
            # What a canary's reconcile does beyond the children: its two revision Services, then the route's
            # weights, set only where they differ (they do not: the route already sends everything to stable).
            revision = builders.revision_hash(llmd)
            for role in ("stable", "canary"):
                kube.apply(builders.build_revision_service(llmd, namespace=ns, owner_uid=None, role=role,
                                                           revision=revision))
            route = kube.get(api_version=ROUTE_API, kind="HTTPRoute", namespace=ns, name=name)
            body = builders.route_weights(route or {}, stable_service=builders.revision_service_name(llmd, "stable"),
                                          canary_service=builders.revision_service_name(llmd, "canary"),
                                          canary_weight=0)
            if body is not None:
                kube.apply(body)

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="floor") as pool:
        names = [f"m{i}" for i in range(n)]
        if full:
            make_routes(admin, ns, [WARMUP, *names])
        warm = deployment_watch(kube_factory(), ns, {WARMUP}).start()
        pool.submit(apply_children, WARMUP).result()
        warm.wait(timeout=120)
        warm.stop()
        before = sum(kube.requests.values())
        watch = deployment_watch(kube_factory(), ns, set(names)).start()
        started: dict[str, float] = {}
        futures = []
        t0 = time.monotonic()
        for name in names:
            started[name] = time.monotonic()
            futures.append(pool.submit(apply_children, name))
        for fut in futures:
            fut.result()
        applied = time.monotonic() - t0
        try:
            watch.wait(timeout)
        finally:
            watch.stop()
    total_s = max(watch.ready_at.values()) - t0
    return {"total": total_s, "applied": applied, "lat": latency_figures(started, watch),
            "requests_per_object": (sum(kube.requests.values()) - before) / n}


def scrape(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(("llmop_api_requests_total{", "llmop_reconcile_total{", "llmop_watch_requests_total{",
                            "llmop_cache_objects{")):
            key, value = line.rsplit(" ", 1)
            out[key] = float(value)
    return out


def counted(metrics: dict[str, float], prefix: str, verbs: frozenset[str] | None = None) -> float:
    return sum(v for k, v in metrics.items() if k.startswith(prefix) and (verbs is None or any(
        f'verb="{verb}"' in k for verb in verbs)))


def by_verb(metrics: dict[str, float]) -> dict[str, float]:
    return {k.split('verb="', 1)[1].split('"', 1)[0]: v for k, v in metrics.items()
            if k.startswith("llmop_api_requests_total{")}


class OperatorProcess:
    """`llmctl run -n NS --metrics-port P` in its own process, with its peak RSS sampled every 0.1 s."""

    def __init__(self, *, ns: str, kubeconfig: str, env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        self._log = open(log, "a")  # noqa: SIM115 - handed to the child, closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "llm_operator.cli", "run", "-n", ns, "--metrics-port", str(self.port)],
            env={**os.environ, "KUBECONFIG": kubeconfig, **env}, stdout=self._log, stderr=subprocess.STDOUT)
        self.peak_rss = 0
        self._stop = threading.Event()
        threading.Thread(target=self._sample, daemon=True).start()
        deadline = time.monotonic() + 60
        while True:
            try:
                scrape(self.port)
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise SystemExit(f"operator did not start; see {log}") from None
                time.sleep(0.2)

    def _sample(self) -> None:
        p = psutil.Process(self.proc.pid)
        while not self._stop.is_set():
            try:
                self.peak_rss = max(self.peak_rss, p.memory_info().rss)
            except psutil.Error:
                return
            time.sleep(0.1)

    def quiet(self, *, still: float = 2.0, timeout: float = 60.0) -> dict[str, float]:
        """Counters once they have not moved for `still` seconds: in-flight reconciles and their echoes done."""
        last, since, deadline = scrape(self.port), time.monotonic(), time.monotonic() + timeout
        while time.monotonic() < deadline:
            time.sleep(0.5)
            now = scrape(self.port)
            if now != last:
                last, since = now, time.monotonic()
            elif time.monotonic() - since >= still:
                break
        return last

    def stop(self) -> None:
        self._stop.set()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


def operator_run(kube_factory: Callable[[], Any], n: int, ns: str, workers: int, timeout: float,
                 kubeconfig: str, logdir: Path, unrelated: int = 0, full: bool = False) -> dict[str, Any]:
    kube = Kube(kube_factory())
    make_namespace(kube, ns)
    log = logdir / f"operator-{ns}.log"
    op = OperatorProcess(ns=ns, kubeconfig=kubeconfig, env={"LLMOPS_WORKERS": str(workers)}, log=log)
    try:
        names = [f"m{i}" for i in range(n)]
        if full:
            make_routes(kube, ns, [WARMUP, *names])
        # The warm-up object proves kopf's watches and the work queue are running before the clock starts.
        warm = llmd_watch(kube_factory(), ns, {WARMUP}).start()
        kube.create(spec(WARMUP, ns, full=full))
        warm.wait(timeout=120)
        warm.stop()
        base = op.quiet()
        watch = llmd_watch(kube_factory(), ns, set(names)).start()
        started: dict[str, float] = {}
        t0 = time.monotonic()
        for name in names:
            started[name] = time.monotonic()
            kube.create(spec(name, ns, full=full))
        created = time.monotonic() - t0
        try:
            watch.wait(timeout)
        finally:
            watch.stop()
        total_s = max(watch.ready_at.values()) - t0
        at_ready = scrape(op.port)
        settled = op.quiet()
    finally:
        op.stop()
    verbs = {v: (c - by_verb(base).get(v, 0.0)) / n for v, c in by_verb(settled).items()}
    result: dict[str, Any] = {
        "total": total_s,
        "created": created,
        "lat": latency_figures(started, watch),
        # Everything the operator did for these N objects, including reconciles that its own status writes
        # and child events set off after the last object turned Ready.
        "requests_per_object": (counted(settled, "llmop_api_requests_total")
                                - counted(base, "llmop_api_requests_total")) / n,
        "requests_per_object_by_verb": verbs,
        "reconciles_per_object": (counted(settled, "llmop_reconcile_total")
                                  - counted(base, "llmop_reconcile_total")) / n,
        "reconciles_per_object_until_ready": (counted(at_ready, "llmop_reconcile_total")
                                              - counted(base, "llmop_reconcile_total")) / n,
        "rss_mb": op.peak_rss / 2**20,
    }
    result.update(steady_check(n + 1, ns, kubeconfig, workers, log))
    # The same with glibc's default malloc arenas (8 per core; `llmctl run` caps them at 2 unless
    # MALLOC_ARENA_MAX is set), side by side: what the cap saves.
    result["steady_rss_mb_default_arenas"] = steady_check(
        n + 1, ns, kubeconfig, workers, log, env={"MALLOC_ARENA_MAX": str(8 * (os.cpu_count() or 1))}
    )["steady_rss_mb"]
    if unrelated:
        # Objects the operator has nothing to do with, in the very namespace it watches: its memory must not
        # grow with them (its child caches select by label on the server).
        make_unrelated(kube, ns, unrelated)
        result["unrelated_objects"] = unrelated
        result.update({f"{k}_unrelated": v for k, v in
                       steady_check(n + 1, ns, kubeconfig, workers, log).items()})
    return result


def make_unrelated(kube: Kube, ns: str, count: int) -> None:
    """``count`` ConfigMaps of about 2 KiB each, not labelled as the operator's, created by 8 threads."""
    payload = "x" * 2048

    def create(i: int) -> None:
        kube.create({"apiVersion": "v1", "kind": "ConfigMap",
                     "metadata": {"name": f"unrelated-{i}", "namespace": ns, "labels": {"app": "unrelated"}},
                     "data": {"blob": payload}})

    with ThreadPoolExecutor(max_workers=8, thread_name_prefix="unrelated") as pool:
        list(pool.map(create, range(count)))


def steady_check(objects: int, ns: str, kubeconfig: str, workers: int, log: Path,
                 env: dict[str, str] | None = None) -> dict[str, Any]:
    """A fresh operator reconciles every (unchanged) object at start-up and again on its periodic resync."""
    op = OperatorProcess(ns=ns, kubeconfig=kubeconfig, log=log,
                         env={"LLMOPS_WORKERS": str(workers), "LLMOPS_RESYNC_SECONDS": str(RESYNC_SECONDS),
                              **(env or {})})
    try:
        deadline = time.monotonic() + 600
        while counted(scrape(op.port), "llmop_reconcile_total") < objects and time.monotonic() < deadline:
            time.sleep(0.5)
        # The last start-up reconcile happened just now, so every object's resync falls inside this window.
        time.sleep(RESYNC_SECONDS + 5.0)
        end = op.quiet()
    finally:
        op.stop()
    return {"steady_reconciles": counted(end, "llmop_reconcile_total"),
            "steady_writes": counted(end, "llmop_api_requests_total", WRITE_VERBS),
            # Every request of the reconciler, reads included (the child caches' own lists and watches are
            # counted apart: steady_watch_requests).
            "steady_requests": counted(end, "llmop_api_requests_total"),
            "steady_watch_requests": counted(end, "llmop_watch_requests_total"),
            "steady_errors": end.get('llmop_reconcile_total{result="error"}', 0.0),
            "steady_rss_mb": op.peak_rss / 2**20}


def fmt(values: list[float], digits: int = 2) -> str:
    s = spread(values)
    if len(values) == 1:
        return f"{s['median']:.{digits}f}"
    return f"{s['median']:.{digits}f} ({s['min']:.{digits}f}-{s['max']:.{digits}f})"


def report(runs: list[dict[str, Any]]) -> tuple[str, dict[str, Any]]:
    lines = [
        "| N | runs | floor total s | operator total s | **ratio** total | floor p50 / p99 s | operator p50 / p99 s "
        "| ratio p50 / p99 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    cost = [
        "| N | API requests per object (operator; floor) | reconciles per object (until all Ready; settled) "
        "| writes on restart + resync (reconciles) | operator peak RSS MB |",
        "|---|---|---|---|---|",
    ]
    summary: dict[str, Any] = {}
    for n in sorted({r["n"] for r in runs}):
        rs = [r for r in runs if r["n"] == n]
        f = [r["floor"] for r in rs]
        o = [r["operator"] for r in rs]
        ratio = [b["total"] / a["total"] for a, b in zip(f, o, strict=True)]
        r50 = [b["lat"]["p50"] / a["lat"]["p50"] for a, b in zip(f, o, strict=True)]
        r99 = [b["lat"]["p99"] / a["lat"]["p99"] for a, b in zip(f, o, strict=True)]
        summary[str(n)] = {
            "runs": len(rs),
            "ratio_total": spread(ratio), "ratio_p50": spread(r50), "ratio_p99": spread(r99),
            "floor_total": spread([x["total"] for x in f]), "operator_total": spread([x["total"] for x in o]),
            "floor_p50": spread([x["lat"]["p50"] for x in f]), "floor_p99": spread([x["lat"]["p99"] for x in f]),
            "operator_p50": spread([x["lat"]["p50"] for x in o]),
            "operator_p99": spread([x["lat"]["p99"] for x in o]),
            "operator_requests_per_object": spread([x["requests_per_object"] for x in o]),
            "floor_requests_per_object": spread([x["requests_per_object"] for x in f]),
            "reconciles_per_object": spread([x["reconciles_per_object"] for x in o]),
            "reconciles_per_object_until_ready": spread([x["reconciles_per_object_until_ready"] for x in o]),
            "steady_writes": max(x["steady_writes"] for x in o),
            "rss_mb": spread([x["rss_mb"] for x in o]),
        }
        lines.append(
            f"| {n} | {len(rs)} | {fmt([x['total'] for x in f], 1)} | {fmt([x['total'] for x in o], 1)} "
            f"| **{fmt(ratio)}** | {fmt([x['lat']['p50'] for x in f])} / {fmt([x['lat']['p99'] for x in f])} "
            f"| {fmt([x['lat']['p50'] for x in o])} / {fmt([x['lat']['p99'] for x in o])} "
            f"| {fmt(r50)} / {fmt(r99)} |")
        writes = "/".join(f"{x['steady_writes']:.0f}" for x in o)
        recs = "/".join(f"{x['steady_reconciles']:.0f}" for x in o)
        verbs = sorted({v for x in o for v in x["requests_per_object_by_verb"]})
        split = ", ".join(f"{v} {statistics.median([x['requests_per_object_by_verb'].get(v, 0.0) for x in o]):.1f}"
                          for v in verbs)
        cost.append(
            f"| {n} | {fmt([x['requests_per_object'] for x in o], 1)} ({split}); "
            f"{fmt([x['requests_per_object'] for x in f], 0)} "
            f"| {fmt([x['reconciles_per_object_until_ready'] for x in o])}; "
            f"{fmt([x['reconciles_per_object'] for x in o])} "
            f"| {writes} ({recs}) | {fmt([x['rss_mb'] for x in o], 0)} |")
    steady = [
        "| N | API requests per steady-state reconcile (requests / reconciles) | writes | cache list+watch requests "
        "| operator peak RSS MB, steady | the same with unrelated ConfigMaps in its namespace |",
        "|---|---|---|---|---|---|",
    ]
    for n in sorted({r["n"] for r in runs}):
        for x in (r["operator"] for r in runs if r["n"] == n):
            per = x["steady_requests"] / max(x["steady_reconciles"], 1)
            extra = (f"{x['steady_rss_mb_unrelated']:.0f} MB with {x['unrelated_objects']} "
                     f"({x['steady_requests_unrelated'] / max(x['steady_reconciles_unrelated'], 1):.3f} requests "
                     "per reconcile)" if "unrelated_objects" in x else "not measured")
            steady.append(f"| {n} | **{per:.3f}** ({x['steady_requests']:.0f} / {x['steady_reconciles']:.0f}) "
                          f"| {x['steady_writes']:.0f} | {x['steady_watch_requests']:.0f} "
                          f"| {x['steady_rss_mb']:.0f} | {extra} |")
    return "\n".join(lines) + "\n\n" + "\n".join(cost) + "\n\n" + "\n".join(steady), summary


def git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
    return done.stdout.strip()


def pin_source(rev: str) -> None:
    """Re-run this script against a snapshot of `rev` (operator, CRDs, e2e stages, node profile)."""
    commit = git("rev-parse", "--verify", f"{rev}^{{commit}}")
    if not commit:
        raise SystemExit(f"--source {rev}: not a commit")
    dest = Path(tempfile.mkdtemp(prefix="bench-reconcile-src-"))
    paths = ["operator", "crds", "e2e", "bench/nodes.yaml", "pyproject.toml"]
    archive = subprocess.run(["git", "archive", commit, *paths], cwd=ROOT, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    env = {**os.environ, SOURCE_ENV: str(dest), "BENCH_RECONCILE_COMMIT": commit,
           "PYTHONPATH": os.pathsep.join(filter(None, [str(dest / "operator"), os.environ.get("PYTHONPATH")]))}
    print(f"measuring {commit[:12]} (snapshot in {dest})", file=sys.stderr)
    os.execve(sys.executable, [sys.executable, *sys.argv], env)


def check_imports_from(src: Path) -> None:
    where = subprocess.run([sys.executable, "-c", "import llm_operator; print(llm_operator.__file__)"],
                           capture_output=True, text=True, check=True).stdout.strip()
    if not Path(where).resolve().is_relative_to(src.resolve()):
        raise SystemExit(f"the operator would import {where}, not the snapshot in {src}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", default="10,100,1000", help="comma-separated object counts")
    parser.add_argument("--repeat", default="3",
                        help="runs of each kind per N: one number, or one per N (e.g. 3,3,2)")
    parser.add_argument("--workers", type=int, default=int(os.environ.get("LLMOPS_WORKERS", "8")),
                        help="the operator's LLMOPS_WORKERS, and the floor's thread count (default 8)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds to wait for one run to be ready")
    parser.add_argument("--source", default="HEAD",
                        help="commit whose operator is measured (default HEAD); 'worktree' for the checkout as is")
    parser.add_argument("--unrelated", type=int, default=0, metavar="K",
                        help="after the operator's run, add K unrelated ConfigMaps to its namespace and measure a "
                             "fresh operator's steady state again (RSS, requests)")
    parser.add_argument("--children", choices=sorted(CHILDREN), default="basic",
                        help="basic: ConfigMap, Service, Deployment, PDB per object; full: also an HPA and a canary "
                             "with two revision Services behind a (pre-made) HTTPRoute")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "reconcile.json"),
                        help="where to write every run's figures (JSON)")
    args = parser.parse_args()
    sizes = [int(x) for x in args.n.split(",")]
    repeats = [int(x) for x in args.repeat.split(",")]
    if len(repeats) == 1:
        repeats *= len(sizes)
    if len(repeats) != len(sizes):
        parser.error("--repeat takes one number, or one per --n")
    if args.source != "worktree" and SOURCE_ENV not in os.environ:
        pin_source(args.source)  # does not return
    # Without this, `kill` of a run in the background (where SIGINT is ignored) would leave the cluster running.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    check_imports_from(SRC)
    command = " ".join(["python", os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]])
    state = Path(tempfile.mkdtemp(prefix="bench-reconcile-"))
    cluster = LocalCluster(state_dir=state / "cluster", profile=SRC / "bench" / "nodes.yaml",
                           log=lambda m: print(f"  {m}", file=sys.stderr))
    runs: list[dict[str, Any]] = []
    started_at = dt.datetime.now(dt.UTC)
    if SRC == ROOT:
        source: dict[str, Any] = {"commit": git("rev-parse", "HEAD"), "uncommitted": git(
            "status", "--porcelain", "--", "bench/nodes.yaml", "crds", "e2e", "operator").splitlines()}
    else:
        source = {"commit": os.environ.get("BENCH_RECONCILE_COMMIT", ""), "uncommitted": []}
    try:
        info = cluster.up(timeout=240)
        from kubernetes import config

        def kube_factory() -> Any:
            return config.new_client_from_config(config_file=info.kubeconfig)

        kubectl = [str(Path(info.bin_dir) / "kubectl"), f"--kubeconfig={info.kubeconfig}"]
        subprocess.run([*kubectl, "apply", "--server-side", "-f", str(SRC / "crds")], check=True,
                       capture_output=True)
        subprocess.run([*kubectl, "wait", "--for=condition=Established", "crd/llmdeployments.serving.llmops.dev"],
                       check=True, capture_output=True)
        admin = Kube(kube_factory())
        for n, repeat in zip(sizes, repeats, strict=True):
            for r in range(repeat):
                order = ("floor", "operator") if r % 2 == 0 else ("operator", "floor")
                row: dict[str, Any] = {"n": n, "repeat": r, "order": list(order)}
                for kind in order:
                    ns = f"{kind}-{n}-{r}"
                    print(f"N={n} repeat {r + 1}/{repeat}: {kind} ...", file=sys.stderr)
                    load = os.getloadavg()[0]
                    if kind == "floor":
                        res = floor_run(kube_factory, n, ns, args.workers, args.timeout,
                                        full=CHILDREN[args.children])
                    else:
                        res = operator_run(kube_factory, n, ns, args.workers, args.timeout, info.kubeconfig, state,
                                           unrelated=args.unrelated, full=CHILDREN[args.children])
                    res["loadavg_1m_before"] = load
                    res["cleanup_s"] = remove_namespace(admin, ns)
                    row[kind] = res
                    print(f"  total {res['total']:.1f}s p50 {res['lat']['p50']:.2f}s p99 {res['lat']['p99']:.2f}s "
                          f"(namespace gone in {res['cleanup_s']:.0f}s)", file=sys.stderr)
                runs.append(row)
    finally:
        cluster.down()
        if runs:
            table, summary = report(runs)
            out = {
                "command": command,
                "started": started_at.isoformat(timespec="seconds"),
                "finished": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                "machine": {"cpus": os.cpu_count(), "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
                            "platform": platform.platform(), "python": platform.python_version()},
                "workers": args.workers,
                "children": args.children,
                "source": source,
                "summary": summary,
                "runs": runs,
            }
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
            print(f"\n{table}\n\nwrote {args.out}; operator logs in {state}")
        if SRC != ROOT:
            shutil.rmtree(SRC, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
