"""Rollout benchmark (issue #10): GPU-aware surge against swap, and how fast a bad canary is rolled back.

    .venv/bin/python bench/rollout.py [--repeat 3] [--parts rolling,canary,bad] [--ready-delay 5s] [--grace 3s]
                                      [--rps 20] [--source HEAD|worktree] [--out bench/results/rollout.json]
                                      [--plot docs/rollout-bench.png | --no-plot] [--from-json FILE]

One local cluster with the metrics test bed (`LocalCluster.up(metrics=True)`: kwok pods, the traffic emulator,
the real Prometheus with the shipped recording rules), the CRD, and the operator as users run it (`llmctl run`, a
child process). Its own node profile gives two GPU pools of different products, so that one model can fill its
pool while another has room:

* **full**: 1 node with 8 `NVIDIA-L40S` GPUs;
* **room**: 2 nodes with 8 `NVIDIA-H100-80GB-HBM3` GPUs each (16).

Every pod is a kwok pod annotated `kwok.llmops.dev/ready-delay` (a model load: Ready that long after it is bound)
and `kwok.llmops.dev/terminating-for` (a grace period: a deleted pod keeps its GPUs that long), e2e/kwok/stages.yaml.
The emulator serves a pod from the moment it is Ready (startup delay 0: the model load is the ready delay).

Parts, each repeated --repeat times, each in fresh namespaces (deleted, and every pod gone, before the next):

* **rolling**: two LLMDeployments of 8 replicas x 1 GPU, one per pool, `spec.rollout.strategy: RollingUpdate`,
  get a new image at the same moment. Measured per pool: the time from the PATCH of the spec to
  `status.rollout.phase` Healthy with the new revision stable and one Deployment left; to the last old pod gone and
  8 new ones Ready; the fewest serving pods (Ready and not deleting, every pod event seen through a watch, so exact)
  and the most GPUs held (bound pods, Terminating ones included); `status.rollout.surge` as it was while rolling.
* **canary**: the same with `strategy: Canary`, steps [setWeight 50, setWeight 100], no analysis.
* **bad**: three LLMDeployments of 4 replicas with a canary [setWeight 50, pause 10m] and analysis (interval 5s,
  failureLimit 1, one check: errorRate max 0.05; inconclusiveLimit 20 so that the first measurements, before the
  canary's 1-minute rates have data, do not pause the rollout), under 20 requests/s each from the emulator
  (64 output tokens, so no queue builds), get an image tag ending in `-faulty` (the emulator fails 20 % of its
  requests): on the room pool (1 GPU each, Surge), on the room pool with a Gateway API HTTPRoute, and on the full
  pool (2 GPUs each, 4 fill it: Swap). Measured per variant: the time from the PATCH to the first measurement whose
  errorRate check Failed (its `lastMeasuredAt` in `status.rollout.analysis`, 1 s resolution), from there to
  `abortedAt`, and to the full rollback (no canary pod left serving and 4 stable pods Ready, from the pod watch);
  the requests the bad revision finished, as a share of all the LLMDeployment's finished requests, from the PATCH to
  the full rollback: from the emulator's per-pod counters (GET /state every 0.5 s, grouped by the pod's revision)
  and, as a cross-check, from Prometheus (`sum by (revision) (increase(vllm:request_success_total[W]))`).

The emulator splits an LLMDeployment's load over its serving pods, whatever an HTTPRoute says (the dev cluster runs
no Gateway data plane). So the route variant's measured share is what the pods got; beside it, the share the route
*would* have given is the canary's weight in the HTTPRoute as the operator wrote it (read every 0.5 s), integrated
over the same window: the canary gets nothing from the moment the operator sets its weight to 0.

The code measured is a snapshot of --source (default HEAD: `git archive` of operator/, crds/, e2e/), so edits made
in the checkout during the run cannot change what is measured; `--source worktree` measures the checkout as is.
Writes --out (JSON: every run's figures and its compacted timelines) and --plot (serving pods per revision over
time, first repeat).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import functools
import itertools
import json
import math
import os
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SOURCE_ENV = "BENCH_ROLLOUT_SOURCE"
SRC = Path(os.environ.get(SOURCE_ENV) or ROOT)
sys.path.insert(0, str(SRC / "operator"))

from llm_operator.dev import ClusterInfo, LocalCluster  # noqa: E402
from llm_operator.dev.traffic.client import TrafficClient  # noqa: E402

FULL, ROOM = "full", "room"
PRODUCTS = {FULL: "NVIDIA-L40S", ROOM: "NVIDIA-H100-80GB-HBM3"}
POOL_NODES = {FULL: 1, ROOM: 2}
GPUS_PER_NODE = 8
POOL_TEXT = {FULL: "full: 8 GPUs (1 L40S node)", ROOM: "room: 16 GPUs (2 H100 nodes)"}
IMAGE = "nvcr.io/nvidia/tritonserver:25.01-vllm-python-py3"
REVISION_LABEL = "serving.llmops.dev/revision"
GROUP = "/apis/serving.llmops.dev/v1alpha1"
ROLL_REPLICAS = 8
BAD_REPLICAS = 4
OUTPUT_TOKENS = 64
INTERVAL = 5  # analysis interval, seconds
BAD_VARIANTS: dict[str, dict[str, Any]] = {
    "room": {"pool": ROOM, "gpus": 1, "route": False},
    "room-route": {"pool": ROOM, "gpus": 1, "route": True},
    "full": {"pool": FULL, "gpus": 2, "route": False},
}
BAD_TEXT = {"room": "room pool (4 x 1 GPU of 16), no traffic routing",
            "room-route": "room pool (4 x 1 GPU of 16), Gateway API HTTPRoute",
            "full": "full pool (4 x 2 GPUs fill its 8), no traffic routing"}
STRATEGY_TEXT = {"rolling": "RollingUpdate", "canary": "Canary [setWeight 50, setWeight 100], no analysis"}
NAME = "llm"
DASH, TIMES = "\u2013", "\u00d7"  # en dash and multiplication sign, for the markdown tables


def node_profile() -> dict[str, Any]:
    pools = []
    for pool in (FULL, ROOM):
        pools.append({
            "name": f"gpu-{pool}", "role": "gpu", "count": POOL_NODES[pool],
            "labels": {"nvidia.com/gpu.present": "true", "nvidia.com/gpu.product": PRODUCTS[pool],
                       "nvidia.com/gpu.count": str(GPUS_PER_NODE), "llmops.dev/capacity-type": "on-demand",
                       "karpenter.sh/capacity-type": "on-demand"},
            "taints": [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}],
            "allocatable": {"cpu": "192", "memory": "2048Gi", "ephemeral-storage": "7Ti", "pods": "110",
                            "nvidia.com/gpu": str(GPUS_PER_NODE)},
        })
    return {"pools": pools}


# ------------------------------------------------------------------------------------------ cluster access


class Api:
    """The apiserver over urllib with the admin client certificate: a kubectl process per poll would load a
    2-core machine as much as the cluster does."""

    def __init__(self, info: ClusterInfo) -> None:
        self.info = info
        pki = Path(info.state_dir) / "pki"
        self.tls = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        self.tls.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))

    def open(self, path: str, *, method: str = "GET", body: Any = None, content_type: str = "application/json",
             timeout: float = 10) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.info.server + path, data=data, method=method,
                                     headers={"Content-Type": content_type} if data is not None else {})
        return urllib.request.urlopen(req, context=self.tls, timeout=timeout)

    def call(self, method: str, path: str, body: Any = None, *, content_type: str = "application/json") -> Any:
        try:
            with self.open(path, method=method, body=body, content_type=content_type) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            if exc.code == 404 and method in ("GET", "DELETE"):
                return None
            raise RuntimeError(f"{method} {path}: {exc.code} {exc.read().decode(errors='replace')[:500]}") from None

    def get(self, path: str) -> Any:
        return self.call("GET", path)

    def merge_patch(self, path: str, body: Any) -> Any:
        return self.call("PATCH", path, body, content_type="application/merge-patch+json")

    def kubectl(self, *args: str) -> str:
        proc = subprocess.run([str(Path(self.info.bin_dir) / "kubectl"), f"--kubeconfig={self.info.kubeconfig}",
                               *args], capture_output=True, text=True, check=False, timeout=180)
        if proc.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)} failed: {proc.stderr}")
        return proc.stdout


def llmd_path(namespace: str) -> str:
    return f"{GROUP}/namespaces/{namespace}/llmdeployments/{NAME}"


def wait(check: Callable[[], Any], *, timeout: float, what: str, interval: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except (OSError, RuntimeError, ValueError, KeyError) as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}; last: {last!r}")


@contextlib.contextmanager
def operator_process(info: ClusterInfo, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    env = {**os.environ, "KUBECONFIG": info.kubeconfig}
    with log.open("wb") as out:
        proc = subprocess.Popen([str(Path(sys.executable).with_name("llmctl")), "run"], env=env, stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)

    def started() -> bool:
        if proc.poll() is not None:
            raise SystemExit(f"llmctl run exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        return "triton-llm-operator started" in log.read_text(errors="replace")

    try:
        wait(started, timeout=90, what="llmctl run to start")
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


def create_namespace(api: Api, namespace: str) -> None:
    api.call("POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    wait(lambda: api.get(f"/api/v1/namespaces/{namespace}/serviceaccounts/default"), timeout=60,
         what=f"the default ServiceAccount in {namespace}")


def delete_namespaces(api: Api, namespaces: list[str]) -> None:
    for ns in namespaces:
        api.call("DELETE", f"/api/v1/namespaces/{ns}")
    for ns in namespaces:  # their pods hold GPUs the next run needs
        wait(functools.partial(gone, api, f"/api/v1/namespaces/{ns}"), timeout=240, what=f"{ns} to go")


def gone(api: Api, path: str) -> bool:
    return api.get(path) is None


def llmdeployment(*, pool: str, gpus: int, replicas: int, rollout: dict[str, Any], ready_delay: str,
                  grace: str, image: str = IMAGE) -> dict[str, Any]:
    return {"apiVersion": "serving.llmops.dev/v1alpha1", "kind": "LLMDeployment", "metadata": {"name": NAME},
            "spec": {"model": {"name": "tiny", "uri": "hf://HuggingFaceTB/SmolLM2-135M-Instruct"},
                     "runtime": {"backend": "vllm", "image": image},
                     "resources": {"gpu": {"count": gpus, "product": PRODUCTS[pool]}},
                     "replicas": replicas,
                     "podAnnotations": {"kwok.llmops.dev/ready-delay": ready_delay,
                                        "kwok.llmops.dev/terminating-for": grace},
                     "rollout": rollout}}


def stable_and_ready(api: Api, namespace: str, replicas: int) -> bool:
    obj = api.get(llmd_path(namespace)) or {}
    status = obj.get("status") or {}
    return (status.get("readyReplicas") == replicas and (status.get("rollout") or {}).get("phase") == "Healthy"
            and status.get("observedGeneration") == obj["metadata"]["generation"])


def epoch(stamp: str | None) -> float | None:
    if not stamp:
        return None
    return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


# ------------------------------------------------------------------------------------------ observers


def _pod_facts(pod: Mapping[str, Any]) -> tuple[str, bool, bool, bool]:
    """(revision, serving: Ready and not deleting, live: not deleting, bound: holds its GPUs)."""
    meta = pod["metadata"]
    live = not meta.get("deletionTimestamp")
    ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                for c in (pod.get("status") or {}).get("conditions") or [])
    return (meta.get("labels", {}).get(REVISION_LABEL, "?"), live and ready, live, bool(pod["spec"].get("nodeName")))


class PodWatch:
    """Every pod event of one namespace, folded into counts per revision: serving, live and bound pods. The
    timeline has an entry per change, so the fewest serving pods is exact, not sampled."""

    def __init__(self, api: Api, namespace: str) -> None:
        self.api, self.namespace = api, namespace
        self.pods: dict[str, tuple[str, bool, bool, bool]] = {}
        self.timeline: list[dict[str, Any]] = []
        self.errors = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._listed = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"watch-{namespace}")

    def counts(self) -> dict[str, dict[str, int]]:
        with self._lock:
            return self._counts()

    def _counts(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {"serving": {}, "live": {}, "bound": {}}
        for rev, serving, live, bound in self.pods.values():
            for key, flag in (("serving", serving), ("live", live), ("bound", bound)):
                if flag:
                    out[key][rev] = out[key].get(rev, 0) + 1
        return out

    def _record(self) -> None:
        entry = {"t": time.time(), **self._counts()}
        last = self.timeline[-1] if self.timeline else None
        if last is None or any(last[k] != entry[k] for k in ("serving", "live", "bound")):
            self.timeline.append(entry)

    def _run(self) -> None:
        version: str | None = None
        base = f"/api/v1/namespaces/{self.namespace}/pods"
        while not self._stop.is_set():
            try:
                if version is None:
                    body = self.api.get(base)
                    with self._lock:
                        self.pods = {p["metadata"]["name"]: _pod_facts(p) for p in body["items"]}
                        self._record()
                    version = body["metadata"]["resourceVersion"]
                    self._listed.set()
                query = urllib.parse.urlencode({"watch": "1", "allowWatchBookmarks": "true", "timeoutSeconds": "5",
                                                "resourceVersion": version})
                with self.api.open(f"{base}?{query}", timeout=30) as resp:
                    for raw in resp:
                        event = json.loads(raw)
                        obj = event["object"]
                        if event["type"] == "ERROR":  # 410 Gone: list again
                            version = None
                            break
                        version = obj["metadata"]["resourceVersion"]
                        if event["type"] == "BOOKMARK":
                            continue
                        with self._lock:
                            if event["type"] == "DELETED":
                                self.pods.pop(obj["metadata"]["name"], None)
                            else:
                                self.pods[obj["metadata"]["name"]] = _pod_facts(obj)
                            self._record()
                        if self._stop.is_set():
                            break
            except (OSError, ValueError, KeyError, RuntimeError):
                self.errors += 1
                version = None
                self._stop.wait(0.5)

    def __enter__(self) -> PodWatch:
        self._thread.start()
        if not self._listed.wait(30):
            raise TimeoutError(f"pod watch of {self.namespace} did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def surge_shares(samples: list[dict[str, Any]], start: float, end: float | None) -> dict[str, float]:
    """How long status.rollout.surge said Surge or Swap while the rollout was not Healthy, as shares of that time
    (the samples are kept only on change, so each holds until the next)."""
    if end is None:
        return {}
    held: dict[str, float] = {}
    for s, nxt in itertools.pairwise([*samples, {"t": end}]):
        a, b = max(s["t"], start), min(nxt["t"], end)
        if b > a and s.get("surge") and s.get("phase") != "Healthy":
            held[s["surge"]] = held.get(s["surge"], 0.0) + b - a
    total = sum(held.values())
    return {k: v / total for k, v in sorted(held.items(), key=lambda kv: -kv[1])} if total else {}


def _modes_text(shares: list[dict[str, float]]) -> str:
    """Mean share of each mode over the repeats, the longest first: `Swap 96 %, Surge 4 %`."""
    modes = {m for s in shares for m in s}
    mean = {m: statistics.fmean(s.get(m, 0.0) for s in shares) for m in modes}
    return ", ".join(f"{m} {100 * v:.0f} %" for m, v in sorted(mean.items(), key=lambda kv: -kv[1])) or DASH


def _rollout_view(obj: Mapping[str, Any] | None) -> dict[str, Any]:
    status = (obj or {}).get("status") or {}
    r = status.get("rollout") or {}
    analysis = r.get("analysis") or {}
    return {
        "generation": ((obj or {}).get("metadata") or {}).get("generation"),
        "observedGeneration": status.get("observedGeneration"), "revision": status.get("revision"),
        "phase": r.get("phase"), "surge": r.get("surge"), "stableRevision": r.get("stableRevision"),
        "canaryRevision": r.get("canaryRevision"), "stepIndex": r.get("stepIndex"), "weight": r.get("weight"),
        "aborted": r.get("aborted"), "abortedAt": r.get("abortedAt"),
        "measurements": analysis.get("measurements"), "failed": analysis.get("failed"),
        "lastMeasuredAt": analysis.get("lastMeasuredAt"),
        "checks": [{k: c.get(k) for k in ("metric", "phase", "canary")} for c in analysis.get("checks") or []],
    }


class StatusSampler:
    """Every `every` s: the LLMDeployment's status.rollout, its Deployments, and the HTTPRoute's weights (when
    there is one). Only changes are kept."""

    def __init__(self, api: Api, namespace: str, *, every: float, route: str | None = None) -> None:
        self.api, self.namespace, self.every, self.route = api, namespace, every, route
        self.samples: list[dict[str, Any]] = []
        self.latest: dict[str, Any] = {}
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"status-{namespace}")

    def _sample(self) -> dict[str, Any]:
        obj = self.api.get(llmd_path(self.namespace))
        t = time.time()
        deps = self.api.get(f"/apis/apps/v1/namespaces/{self.namespace}/deployments") or {"items": []}
        sample = {"t": t, **_rollout_view(obj),
                  "deployments": {d["metadata"].get("labels", {}).get(REVISION_LABEL, "?"): d["spec"].get("replicas", 0)
                                  for d in deps["items"]}}
        if self.route:
            route = self.api.get(f"/apis/gateway.networking.k8s.io/v1/namespaces/{self.namespace}/httproutes/"
                                 f"{self.route}") or {}
            refs = (((route.get("spec") or {}).get("rules") or [{}])[0]).get("backendRefs") or []
            sample["weights"] = {ref["name"]: ref.get("weight", 1) for ref in refs}
        return sample

    def _run(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            try:
                sample = self._sample()
            except (OSError, ValueError, KeyError, RuntimeError):
                self.errors += 1
            else:
                self.latest = sample
                last = self.samples[-1] if self.samples else None
                if last is None or {k: v for k, v in last.items() if k != "t"} != {
                        k: v for k, v in sample.items() if k != "t"}:
                    self.samples.append(sample)
            next_at += self.every
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def __enter__(self) -> StatusSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=15)


class TrafficSampler:
    """GET /state every `every` s: each pod's finished and failed requests (the emulator's fluid counters) with its
    revision, for the namespaces asked for."""

    def __init__(self, traffic: TrafficClient, namespaces: list[str], *, every: float = 0.5) -> None:
        self.traffic, self.namespaces, self.every = traffic, set(namespaces), every
        self.samples: dict[str, list[tuple[float, dict[str, tuple[str, float, float]]]]] = {
            ns: [] for ns in namespaces}
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="traffic")

    def _run(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            try:
                state = self.traffic.state()
            except (OSError, ValueError, RuntimeError):
                self.errors += 1
            else:
                t = time.time()
                per: dict[str, dict[str, tuple[str, float, float]]] = {ns: {} for ns in self.namespaces}
                for p in state["pods"]:
                    if p["namespace"] in per:
                        per[p["namespace"]][p["pod"]] = (p["revision"], float(p["finished"]), float(p["failed"]))
                for ns, pods in per.items():
                    self.samples[ns].append((t, pods))
            next_at += self.every
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def served(self, namespace: str, start: float, end: float) -> dict[str, dict[str, float]]:
        """Requests finished (and failed) per revision within [start, end]: each pod's counter at its last sample
        up to `end`, less its value at the last sample up to `start` (0 for a pod that came later)."""
        before: dict[str, tuple[str, float, float]] = {}
        last: dict[str, tuple[str, float, float]] = {}
        for t, pods in self.samples[namespace]:
            if t <= start:
                before = pods
            if t <= end:
                last.update(pods)  # a pod that went keeps the last value seen
        out: dict[str, dict[str, float]] = {}
        for pod, (rev, finished, failed) in last.items():
            _, f0, e0 = before.get(pod, (rev, 0.0, 0.0))
            acc = out.setdefault(rev, {"finished": 0.0, "failed": 0.0})
            acc["finished"] += finished - f0
            acc["failed"] += failed - e0
        return out

    def __enter__(self) -> TrafficSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=15)


def prometheus_served(url: str, namespace: str, start: float, end: float) -> dict[str, dict[str, float]]:
    """The same window from Prometheus: increase() of the vLLM request counter per revision (all finish reasons,
    and finished_reason="error" for the failed ones)."""
    window = max(1, math.ceil(end - start))
    out: dict[str, dict[str, float]] = {}
    for key, selector in (("finished", f'namespace="{namespace}"'),
                          ("failed", f'namespace="{namespace}",finished_reason="error"')):
        query = f"sum by (revision) (increase(vllm:request_success_total{{{selector}}}[{window}s]))"
        params = urllib.parse.urlencode({"query": query, "time": f"{end:.3f}"})
        with urllib.request.urlopen(f"{url}/api/v1/query?{params}", timeout=10) as resp:
            doc = json.loads(resp.read())
        for row in doc["data"]["result"]:
            rev = row["metric"].get("revision", "?")
            out.setdefault(rev, {"finished": 0.0, "failed": 0.0})[key] = float(row["value"][1])
    return out


# ------------------------------------------------------------------------------------------ part 1: 8 replicas


def run_rollouts(kind: str, index: int, api: Api, args: argparse.Namespace, log: Callable[[str], None]
                 ) -> dict[str, Any]:
    """Both pools at once: the same new spec PATCHed into a model on the full pool and one on the room pool."""
    rollout: dict[str, Any] = ({"strategy": "RollingUpdate"} if kind == "rolling" else
                               {"strategy": "Canary", "canary": {"steps": [{"setWeight": 50}, {"setWeight": 100}]}})
    namespaces = {pool: f"rollout-{kind}-{pool}-r{index}" for pool in (FULL, ROOM)}
    for pool, ns in namespaces.items():
        create_namespace(api, ns)
        api.call("POST", f"{GROUP}/namespaces/{ns}/llmdeployments",
                 llmdeployment(pool=pool, gpus=1, replicas=ROLL_REPLICAS, rollout=rollout,
                               ready_delay=args.ready_delay, grace=args.grace))
    for pool, ns in namespaces.items():
        wait(functools.partial(stable_and_ready, api, ns, ROLL_REPLICAS), timeout=180,
             what=f"{kind}/{pool}: {ROLL_REPLICAS} ready replicas of the first revision")
    old = {pool: (api.get(llmd_path(ns)) or {})["status"]["revision"] for pool, ns in namespaces.items()}
    watches = {pool: PodWatch(api, ns) for pool, ns in namespaces.items()}
    samplers = {pool: StatusSampler(api, ns, every=0.25) for pool, ns in namespaces.items()}
    loads = [os.getloadavg()[0]]
    applied: dict[str, dict[str, Any]] = {}
    done: dict[str, float] = {}
    with contextlib.ExitStack() as stack:
        for pool in namespaces:
            stack.enter_context(watches[pool])
            stack.enter_context(samplers[pool])
        time.sleep(1.0)
        for pool, ns in namespaces.items():  # within milliseconds of each other
            t = time.time()
            obj = api.merge_patch(llmd_path(ns), {"spec": {"runtime": {"image": f"{IMAGE}-v{index + 1}"}}})
            applied[pool] = {"t": t, "generation": obj["metadata"]["generation"]}
        deadline = time.monotonic() + args.timeout
        while len(done) < len(namespaces) and time.monotonic() < deadline:
            for pool in namespaces:
                s = samplers[pool].latest
                if pool in done or not s:
                    continue
                if (s["t"] > applied[pool]["t"] and (s["observedGeneration"] or 0) >= applied[pool]["generation"]
                        and s["revision"] and s["revision"] != old[pool] and s["phase"] == "Healthy"
                        and s["stableRevision"] == s["revision"] and list(s["deployments"]) == [s["revision"]]):
                    done[pool] = s["t"]
                    log(f"{kind} r{index} {pool}: Healthy after {s['t'] - applied[pool]['t']:.1f}s")
            time.sleep(0.1)
            loads.append(os.getloadavg()[0])
        # The last old pod's grace period may still run: watch until every old pod is gone (or 30 s).
        settle = time.monotonic() + 30
        while time.monotonic() < settle and any(set(w.counts()["bound"]) - {s.latest.get("revision")}
                                                 for w, s in zip(watches.values(), samplers.values(), strict=True)):
            time.sleep(0.2)
        time.sleep(0.5)
    results = {}
    for pool, ns in namespaces.items():
        t0 = applied[pool]["t"]
        new = samplers[pool].latest.get("revision")
        timeline = [e for e in watches[pool].timeline if e["t"] >= t0 - 0.001]
        before = [e for e in watches[pool].timeline if e["t"] < t0]
        if before:
            timeline.insert(0, {**before[-1], "t": t0})
        end = done.get(pool)
        new_ready = next((e["t"] - t0 for e in timeline if e["serving"].get(new, 0) == ROLL_REPLICAS
                          and set(e["bound"]) == {new} and sum(e["bound"].values()) == ROLL_REPLICAS), None)
        settled = (t0 + new_ready) if new_ready is not None else end
        # Healthy can come before the last new pod is Ready (RollingUpdate: once no old revision is left): the
        # fewest serving pods and the most GPUs held are over the whole rollout, until both happened.
        last = max(end or 0.0, settled or 0.0) or None
        during = [e for e in timeline if last is None or e["t"] <= last]
        results[pool] = {
            "namespace": ns, "oldRevision": old[pool], "newRevision": new,
            "healthySeconds": (end - t0) if end is not None else None,
            "newReadyOldGoneSeconds": new_ready,
            "minServing": min((sum(e["serving"].values()) for e in during), default=None),
            "maxGPUsHeld": max((sum(e["bound"].values()) for e in during), default=None),
            "maxPodsLive": max((sum(e["live"].values()) for e in during), default=None),
            "surgeShares": surge_shares(samplers[pool].samples, t0, last),
            "watchErrors": watches[pool].errors, "sampleErrors": samplers[pool].errors,
            "pods": [{"t": round(e["t"] - t0, 3), **{k: e[k] for k in ("serving", "live", "bound")}}
                     for e in timeline],
            "status": [{**s, "t": round(s["t"] - t0, 3)} for s in samplers[pool].samples if s["t"] >= t0 - 1],
        }
    delete_namespaces(api, list(namespaces.values()))
    return {"kind": kind, "repeat": index, "loadavg1": {"mean": statistics.fmean(loads), "max": max(loads)},
            "pools": results}


# ------------------------------------------------------------------------------------------ part 2: bad canary


def http_route(name: str) -> dict[str, Any]:
    return {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": {"name": name},
            "spec": {"parentRefs": [{"name": "public"}], "rules": [{"backendRefs": [
                {"name": f"{NAME}-stable", "port": 8000, "weight": 100},
                {"name": f"{NAME}-canary", "port": 8000, "weight": 0}]}]}}


def rolled_back(counts: Mapping[str, Mapping[str, int]], stable: str, canary: str) -> bool:
    return counts["live"].get(canary, 0) == 0 and counts["serving"].get(stable, 0) == BAD_REPLICAS


def run_bad(index: int, info: ClusterInfo, api: Api, traffic: TrafficClient, args: argparse.Namespace,
            log: Callable[[str], None]) -> dict[str, Any]:
    namespaces = {v: f"rollout-bad-{v}-r{index}" for v in BAD_VARIANTS}
    assert info.prometheus_url is not None
    for variant, ns in namespaces.items():
        cfg = BAD_VARIANTS[variant]
        create_namespace(api, ns)
        canary: dict[str, Any] = {
            "steps": [{"setWeight": 50}, {"pause": {"duration": "10m"}}],
            "analysis": {"interval": f"{INTERVAL}s", "failureLimit": 1, "inconclusiveLimit": 20,
                         "prometheus": {"address": info.prometheus_url, "timeout": "3s"},
                         "checks": [{"metric": "errorRate", "max": 0.05}]}}
        if cfg["route"]:
            api.call("POST", f"/apis/gateway.networking.k8s.io/v1/namespaces/{ns}/httproutes", http_route("route"))
            canary["trafficRouting"] = {"gatewayAPI": {"httpRoute": "route"}}
        api.call("POST", f"{GROUP}/namespaces/{ns}/llmdeployments",
                 llmdeployment(pool=cfg["pool"], gpus=cfg["gpus"], replicas=BAD_REPLICAS,
                               rollout={"strategy": "Canary", "canary": canary}, ready_delay=args.ready_delay,
                               grace=args.grace))
    for variant, ns in namespaces.items():
        wait(functools.partial(stable_and_ready, api, ns, BAD_REPLICAS), timeout=180,
             what=f"bad/{variant}: {BAD_REPLICAS} ready replicas of the first revision")
        traffic.set_load(namespace=ns, name=NAME, rps=args.rps, output_tokens=OUTPUT_TOKENS)
    stable = {v: (api.get(llmd_path(ns)) or {})["status"]["revision"] for v, ns in namespaces.items()}
    watches = {v: PodWatch(api, ns) for v, ns in namespaces.items()}
    samplers = {v: StatusSampler(api, ns, every=0.5, route="route" if BAD_VARIANTS[v]["route"] else None)
                for v, ns in namespaces.items()}
    loads = [os.getloadavg()[0]]
    applied: dict[str, float] = {}
    ended: dict[str, float] = {}
    with contextlib.ExitStack() as stack:
        served = stack.enter_context(TrafficSampler(traffic, list(namespaces.values())))
        for v in namespaces:
            stack.enter_context(watches[v])
            stack.enter_context(samplers[v])
        time.sleep(args.warmup)  # the stable revision serves under load before the canary starts
        for v, ns in namespaces.items():
            applied[v] = time.time()
            api.merge_patch(llmd_path(ns), {"spec": {"runtime": {"image": f"{IMAGE}-faulty"}}})
        deadline = time.monotonic() + args.timeout
        while len(ended) < len(namespaces) and time.monotonic() < deadline:
            for v in namespaces:
                s = samplers[v].latest
                if v in ended or not s or not s.get("aborted") or not s.get("canaryRevision"):
                    continue
                if rolled_back(watches[v].counts(), stable[v], s["canaryRevision"]):
                    ended[v] = time.time()
                    log(f"bad r{index} {v}: rolled back {ended[v] - applied[v]:.1f}s after the PATCH")
            time.sleep(0.2)
            loads.append(os.getloadavg()[0])
        time.sleep(5.0)  # Prometheus scrapes every 2 s: let it see the end of the window
    for ns in namespaces.values():
        traffic.set_load(namespace=ns, name=NAME, rps=0)
    results = {}
    for v, ns in namespaces.items():
        results[v] = analyse_bad(v, ns, applied[v], stable[v], watches[v], samplers[v], served, info.prometheus_url)
    delete_namespaces(api, list(namespaces.values()))
    return {"kind": "bad", "repeat": index, "loadavg1": {"mean": statistics.fmean(loads), "max": max(loads)},
            "variants": results}


def analyse_bad(variant: str, ns: str, t0: float, stable: str, watch: PodWatch, sampler: StatusSampler,
                served: TrafficSampler, prometheus: str) -> dict[str, Any]:
    samples = [s for s in sampler.samples if s["t"] >= t0]
    canary = next((s["canaryRevision"] for s in samples if s.get("canaryRevision")), None)
    first_bad = next((s for s in samples if any(c["metric"] == "errorRate" and c["phase"] == "Failed"
                                                for c in s["checks"])), None)
    aborted = next((s for s in samples if s.get("aborted")), None)
    first_measured = next((s for s in samples if s.get("measurements")), None)
    timeline = [e for e in watch.timeline if e["t"] >= t0]
    canary_seen = next((e["t"] for e in timeline if canary and e["live"].get(canary, 0) > 0), None)
    back = next((e["t"] for e in timeline if canary and canary_seen is not None and e["t"] > canary_seen
                 and rolled_back(e, stable, canary)), None)
    gpus_back = next((e["t"] for e in timeline if canary and back is not None and e["t"] >= back
                      and e["bound"].get(canary, 0) == 0), None)
    bad_at = epoch(first_bad["lastMeasuredAt"]) if first_bad else None
    abort_at = epoch(aborted["abortedAt"]) if aborted else None
    result: dict[str, Any] = {
        "namespace": ns, "stableRevision": stable, "canaryRevision": canary,
        "firstMeasurementSeconds": (epoch(first_measured["lastMeasuredAt"]) or 0) - t0 if first_measured else None,
        "firstBadSeconds": bad_at - t0 if bad_at is not None else None,
        "firstBadSeenSeconds": first_bad["t"] - t0 if first_bad else None,
        "firstBadCanaryErrorRate": next((c["canary"] for c in first_bad["checks"] if c["metric"] == "errorRate"),
                                        None) if first_bad else None,
        "abortSeconds": abort_at - t0 if abort_at is not None else None,
        "abortSeenSeconds": aborted["t"] - t0 if aborted else None,
        "measurementsAtAbort": aborted.get("measurements") if aborted else None,
        "rolledBackSeconds": back - t0 if back is not None else None,
        "canaryGPUsFreeSeconds": gpus_back - t0 if gpus_back is not None else None,
        "firstBadToAbortSeconds": abort_at - bad_at if abort_at is not None and bad_at is not None else None,
        "firstBadToRollbackSeconds": back - bad_at if back is not None and bad_at is not None else None,
        "minServing": min((sum(e["serving"].values()) for e in timeline if back is None or e["t"] <= back),
                          default=None),
        "surgeShares": surge_shares(samples, t0, back),
        "watchErrors": watch.errors, "sampleErrors": sampler.errors, "trafficErrors": served.errors,
    }
    if back is not None and canary:
        emu = served.served(ns, t0, back)
        total = sum(r["finished"] for r in emu.values())
        bad = emu.get(canary, {"finished": 0.0, "failed": 0.0})
        result["emulator"] = {"perRevision": emu, "total": total, "canaryFinished": bad["finished"],
                              "canaryFailed": bad["failed"],
                              "canaryShare": bad["finished"] / total if total else None}
        try:
            prom = prometheus_served(prometheus, ns, t0, back)
        except (OSError, ValueError, KeyError) as exc:
            result["prometheus"] = {"error": repr(exc)}
        else:
            ptotal = sum(r["finished"] for r in prom.values())
            pbad = prom.get(canary, {"finished": 0.0, "failed": 0.0})
            result["prometheus"] = {"perRevision": prom, "total": ptotal, "canaryFinished": pbad["finished"],
                                    "canaryFailed": pbad["failed"],
                                    "canaryShare": pbad["finished"] / ptotal if ptotal else None}
        if sampler.route:
            result["routed"] = routed_share(samples, t0, back, abort_at)
    result["pods"] = [{"t": round(e["t"] - t0, 3), **{k: e[k] for k in ("serving", "live", "bound")}}
                      for e in timeline]
    result["status"] = [{**s, "t": round(s["t"] - t0, 3)} for s in samples]
    return result


def routed_share(samples: list[dict[str, Any]], t0: float, end: float, abort_at: float | None) -> dict[str, Any]:
    """The canary's share had a Gateway honoured the route: its weight as written, integrated over [t0, end]."""
    area = 0.0
    points = [(s["t"], s.get("weights") or {}) for s in samples if s["t"] <= end]
    zero_at = None
    for (t, w), nxt in zip(points, [*points[1:], (end, {})], strict=True):
        c, s_ = w.get(f"{NAME}-canary", 0) or 0, w.get(f"{NAME}-stable", 0) or 0
        share = c / (c + s_) if c + s_ else 0.0
        area += share * (nxt[0] - max(t, t0))
        if abort_at is not None and zero_at is None and t >= abort_at and c == 0:
            zero_at = t
    return {"canaryShare": area / (end - t0), "weightZeroSeenSeconds": zero_at - t0 if zero_at else None,
            "maxCanaryWeight": max(((w.get(f"{NAME}-canary") or 0) for _, w in points), default=0)}


# ------------------------------------------------------------------------------------------ report


def _fmt(values: list[float], spec: str = ".1f") -> str:
    if not values:
        return DASH
    if len(values) == 1:
        return format(values[0], spec)
    return (f"{format(statistics.median(values), spec)} ({format(min(values), spec)}{DASH}"
            f"{format(max(values), spec)})")


def _values(rows: list[dict[str, Any]], key: str, scale: float = 1.0) -> list[float]:
    return [float(r[key]) * scale for r in rows if r.get(key) is not None]


def tables(doc: dict[str, Any]) -> str:
    runs = doc["runs"]
    out = []
    roll = [r for r in runs if r["kind"] in ("rolling", "canary")]
    if roll:
        out.append(f"Rollout of {ROLL_REPLICAS} replicas x 1 GPU, model load {doc['config']['readyDelay']}, grace "
                   f"{doc['config']['grace']}; median (min{DASH}max) of {doc['config']['repeat']}:\n")
        out.append(f"| strategy | pool | status.rollout.surge while rolling (share of the time) | PATCH → Healthy, s "
                   f"| PATCH → {ROLL_REPLICAS} new pods Ready and old ones gone, s | faster than the full pool "
                   "(paired: Healthy; all Ready) | fewest Ready pods | most GPUs held |")
        out.append("|---|---|---|---|---|---|---|---|")
        for kind in ("rolling", "canary"):
            mine = [r for r in roll if r["kind"] == kind]
            if not mine:
                continue
            for pool in (FULL, ROOM):
                rows = [r["pools"][pool] for r in mine]
                ratio = DASH
                if pool == ROOM:
                    parts = []
                    for key in ("healthySeconds", "newReadyOldGoneSeconds"):
                        pairs = [r["pools"][FULL][key] / r["pools"][ROOM][key] for r in mine
                                 if r["pools"][FULL][key] and r["pools"][ROOM][key]]
                        parts.append(_fmt(pairs, ".1f") + TIMES if pairs else DASH)
                    ratio = "; ".join(parts)
                missing = sum(1 for row in rows if row["healthySeconds"] is None)
                healthy = _fmt(_values(rows, "healthySeconds")) + (f", timed out in {missing}" if missing else "")
                out.append(f"| {STRATEGY_TEXT[kind]} | {POOL_TEXT[pool]} | "
                           f"{_modes_text([row['surgeShares'] for row in rows])} | {healthy} | "
                           f"{_fmt(_values(rows, 'newReadyOldGoneSeconds'))} | {ratio} | "
                           f"{_fmt(_values(rows, 'minServing'), '.0f')} | "
                           f"{_fmt(_values(rows, 'maxGPUsHeld'), '.0f')} |")
    bad = [r for r in runs if r["kind"] == "bad"]
    if bad:
        out.append(f"\nBad canary (`-faulty`: 20 % of requests fail), {BAD_REPLICAS} replicas, steps [setWeight 50, "
                   f"pause 10m], analysis every {INTERVAL} s (failureLimit 1, errorRate max 0.05), "
                   f"{doc['config']['rps']:g} requests/s; median (min{DASH}max) of {len(bad)}:\n")
        out.append("| variant | PATCH → first bad measurement, s | first bad → abort, s | first bad → full rollback, "
                   "s | bad revision's share of requests, PATCH → rollback (emulator / Prometheus) | as routed | "
                   "failed requests | fewest Ready pods |")
        out.append("|---|---|---|---|---|---|---|---|")
        for v in BAD_VARIANTS:
            rows = [r["variants"][v] for r in bad]
            emu = [100 * row["emulator"]["canaryShare"] for row in rows if (row.get("emulator") or {}).get(
                "canaryShare") is not None]
            prom = [100 * row["prometheus"]["canaryShare"] for row in rows if (row.get("prometheus") or {}).get(
                "canaryShare") is not None]
            routed = [100 * row["routed"]["canaryShare"] for row in rows if row.get("routed")]
            failed = [row["emulator"]["canaryFailed"] for row in rows if row.get("emulator")]
            missing = sum(1 for row in rows if row.get("rolledBackSeconds") is None)
            label = f"{BAD_TEXT[v]}; surge field {_modes_text([row['surgeShares'] for row in rows])}"
            back = _fmt(_values(rows, "firstBadToRollbackSeconds")) + (
                f", not rolled back in {missing}" if missing else "")
            out.append(f"| {label} | {_fmt(_values(rows, 'firstBadSeconds'))} | "
                       f"{_fmt(_values(rows, 'firstBadToAbortSeconds'))} | {back} | "
                       f"{_fmt(emu)} % / {_fmt(prom)} % | {(_fmt(routed) + ' %') if routed else DASH} | "
                       f"{_fmt(failed, '.0f')} | {_fmt(_values(rows, 'minServing'), '.0f')} |")
    return "\n".join(out)


def plot(doc: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    first = {r["kind"]: r for r in doc["runs"] if r["repeat"] == 1}
    short = {"rolling": "RollingUpdate", "canary": "Canary [setWeight 50, setWeight 100]"}
    rows: list[list[tuple[str, dict[str, Any], str]]] = []
    for kind in ("rolling", "canary"):
        if kind in first:
            rows.append([(f"{short[kind]}, {POOL_TEXT[p]}", first[kind]["pools"][p], "new") for p in (FULL, ROOM)])
    if "bad" in first:
        rows.append([(f"bad canary, {BAD_TEXT[v]}", first["bad"]["variants"][v], "bad") for v in ("room", "full")])
    if not rows:
        return
    fig, axes = plt.subplots(len(rows), 2, figsize=(11, 2.9 * len(rows)), squeeze=False)
    for row, ax_row in zip(rows, axes, strict=True):
        t_max = 0.0
        for ax, (title, run, what) in zip(ax_row, row, strict=True):
            pods = run["pods"]
            if not pods:
                continue
            old = run.get("oldRevision") or run.get("stableRevision")
            new = run.get("newRevision") or run.get("canaryRevision")
            t = [p["t"] for p in pods]
            end = (max(run.get("healthySeconds") or 0, run.get("newReadyOldGoneSeconds") or 0) if what == "new"
                   else run.get("rolledBackSeconds")) or t[-1]
            t_end = max(t[-1], end) + 2
            t_max = max(t_max, t_end)
            new_label = "new revision" if what == "new" else "bad canary"
            for rev, color, label in ((old, "tab:blue", "old / stable revision"),
                                      (new, "tab:orange" if what == "new" else "tab:red", new_label)):
                ax.step([*t, t_end], [p["serving"].get(rev, 0) for p in pods] + [pods[-1]["serving"].get(rev, 0)],
                        where="post", color=color, label=f"{label}: Ready pods")
            ax.step([*t, t_end], [sum(p["bound"].values()) for p in pods] + [sum(pods[-1]["bound"].values())],
                    where="post", color="gray", linestyle=":", label="pods holding GPUs (Terminating too)")
            if what == "new":
                if run.get("healthySeconds") is not None:
                    ax.axvline(run["healthySeconds"], color="green", linestyle="--", linewidth=1,
                               label="status.rollout Healthy")
            else:
                for key, color, label in (("firstBadSeconds", "red", "first bad measurement"),
                                          ("abortSeconds", "purple", "abortedAt"),
                                          ("rolledBackSeconds", "green", "rolled back")):
                    if run.get(key) is not None:
                        ax.axvline(run[key], color=color, linestyle="--", linewidth=1, label=label)
            ax.set_title(title, fontsize=9)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=6, loc="center right")
            ax.set_xlabel("seconds since the PATCH", fontsize=8)
            ax.set_ylabel("pods", fontsize=8)
        for ax in ax_row:  # the same time scale across a row, so the two pools compare at a glance
            ax.set_xlim(0, t_max)
    fig.suptitle(f"bench/rollout.py, repeat 1: model load {doc['config']['readyDelay']}, grace "
                 f"{doc['config']['grace']}", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 3)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


def compact_dump(doc: dict[str, Any]) -> str:
    doc = _rounded(doc)
    timelines: dict[str, list[Any]] = {}
    for run in doc["runs"]:
        for key in ("pools", "variants"):
            for name, res in (run.get(key) or {}).items():
                for series in ("pods", "status"):
                    marker = f"@@{run['kind']}/{run['repeat']}/{name}/{series}@@"
                    timelines[marker] = res[series]
                    res[series] = marker
    text = json.dumps(doc, indent=1, ensure_ascii=False)
    for marker, rows in timelines.items():
        inner = ",\n".join("      " + json.dumps(row, separators=(",", ":"), ensure_ascii=False) for row in rows)
        text = text.replace(f'"{marker}"', f"[\n{inner}\n     ]" if rows else "[]", 1)
    json.loads(text)  # still one valid document
    return text + "\n"


# ------------------------------------------------------------------------------------------ main


def git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
    return done.stdout.strip()


def pin_source(rev: str) -> None:
    """Re-run this script against a snapshot of `rev` (operator, CRDs, e2e stages)."""
    commit = git("rev-parse", "--verify", f"{rev}^{{commit}}")
    if not commit:
        raise SystemExit(f"--source {rev}: not a commit")
    dest = Path(tempfile.mkdtemp(prefix="bench-rollout-src-"))
    archive = subprocess.run(["git", "archive", commit, "operator", "crds", "e2e", "pyproject.toml"], cwd=ROOT,
                             capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    env = {**os.environ, SOURCE_ENV: str(dest), "BENCH_ROLLOUT_COMMIT": commit,
           "PYTHONPATH": os.pathsep.join(filter(None, [str(dest / "operator"), os.environ.get("PYTHONPATH")]))}
    print(f"measuring {commit[:12]} (snapshot in {dest})", file=sys.stderr)
    os.execve(sys.executable, [sys.executable, *sys.argv], env)


def check_imports_from(src: Path) -> None:
    where = subprocess.run([sys.executable, "-c", "import llm_operator; print(llm_operator.__file__)"],
                           capture_output=True, text=True, check=True).stdout.strip()
    if not Path(where).resolve().is_relative_to(src.resolve()):
        raise SystemExit(f"the operator would import {where}, not the snapshot in {src}")


def measure(args: argparse.Namespace, log: Callable[[str], None]) -> dict[str, Any]:
    import yaml

    started = time.monotonic()
    loadavg_start = os.getloadavg()
    runs: list[dict[str, Any]] = []
    if SRC == ROOT:
        source: dict[str, Any] = {"commit": git("rev-parse", "HEAD"), "uncommitted": git(
            "status", "--porcelain", "--", "crds", "e2e", "operator").splitlines()}
    else:
        source = {"commit": os.environ.get("BENCH_ROLLOUT_COMMIT", ""), "uncommitted": []}
    with tempfile.TemporaryDirectory(prefix="rollout-bench-") as tmp:
        profile = Path(tmp) / "nodes.yaml"
        profile.write_text(yaml.safe_dump(node_profile(), sort_keys=False))
        cluster = LocalCluster(state_dir=Path(tmp) / "state", profile=profile, log=log)
        try:
            info = cluster.up(timeout=300, metrics=True, traffic_startup_delay=0)
            log(f"cluster up in {info.ready_seconds:.1f}s")
            api = Api(info)
            api.kubectl("apply", "--server-side", "-f", str(SRC / "crds" / "llmdeployments.serving.llmops.dev.yaml"))
            api.kubectl("wait", "--for=condition=Established", "crd/llmdeployments.serving.llmops.dev",
                        "--timeout=60s")
            assert info.traffic_url is not None
            traffic = TrafficClient(info.traffic_url)
            with operator_process(info, Path(tmp) / "operator.log"):
                for index in range(1, args.repeat + 1):
                    for part in args.parts:
                        log(f"repeat {index}: {part}")
                        try:
                            if part == "bad":
                                runs.append(run_bad(index, info, api, traffic, args, log))
                            else:
                                runs.append(run_rollouts(part, index, api, args, log))
                        except TimeoutError as exc:
                            log(f"repeat {index} {part}: {exc}")
                            runs.append({"kind": part, "repeat": index, "error": str(exc)})
        finally:
            oplog = Path(tmp) / "operator.log"
            crashed = [line for line in oplog.read_text(errors="replace").splitlines()
                       if "crashed" in line or "Traceback" in line] if oplog.exists() else []
            cluster.down()
    return {
        "command": " ".join([".venv/bin/python bench/rollout.py", *sys.argv[1:]]),
        "source": source,
        "config": {"repeat": args.repeat, "parts": args.parts, "readyDelay": args.ready_delay, "grace": args.grace,
                   "rps": args.rps, "outputTokens": OUTPUT_TOKENS, "warmupSeconds": args.warmup,
                   "analysisInterval": INTERVAL, "nodeProfile": node_profile(), "image": IMAGE},
        "machine": {"cpus": os.cpu_count(), "loadavgAtStart": loadavg_start, "loadavgAtEnd": os.getloadavg()},
        "operatorLogProblems": crashed[:20],
        "elapsedSeconds": time.monotonic() - started,
        "runs": [r for r in runs if "error" not in r],
        "errors": [r for r in runs if "error" in r],
    }


def report(doc: dict[str, Any], plot_path: Path | None) -> None:
    print(tables(doc))
    loads = [r["loadavg1"]["mean"] for r in doc["runs"]]
    print(f"\n1-min load average during the runs {_fmt(loads)} on {doc['machine']['cpus']} CPUs; whole run "
          f"{doc['elapsedSeconds'] / 60:.1f} min; measured {doc['source']['commit'][:12]}"
          + (f" with uncommitted changes {doc['source']['uncommitted']}" if doc['source']['uncommitted'] else ""))
    for err in doc.get("errors") or []:
        print(f"ERROR in repeat {err['repeat']} {err['kind']}: {err['error']}")
    if doc.get("operatorLogProblems"):
        print("operator log: " + "; ".join(doc["operatorLogProblems"][:5]))
    if plot_path is not None and doc["runs"]:
        plot(doc, plot_path)
        print(f"plot: {plot_path}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3, help="repeats of every part (default 3)")
    parser.add_argument("--parts", type=lambda s: [p for p in s.split(",") if p], default=["rolling", "canary", "bad"],
                        help="comma-separated: rolling, canary, bad (default all, in that order per repeat)")
    parser.add_argument("--ready-delay", default="5s", help="kwok.llmops.dev/ready-delay: the model load (5s)")
    parser.add_argument("--grace", default="3s", help="kwok.llmops.dev/terminating-for: the grace period (3s)")
    parser.add_argument("--rps", type=float, default=20.0, help="emulated load on each bad-canary model (20)")
    parser.add_argument("--warmup", type=float, default=10.0,
                        help="seconds the stable revision serves under load before the bad canary (10)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for one rollout (300)")
    parser.add_argument("--source", default="HEAD",
                        help="commit whose operator is measured (default HEAD); 'worktree' for the checkout as is")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "rollout.json")
    parser.add_argument("--plot", type=Path, default=ROOT / "docs" / "rollout-bench.png")
    parser.add_argument("--no-plot", action="store_true", help="write no plot")
    parser.add_argument("--from-json", type=Path, metavar="FILE",
                        help="measure nothing: print the tables and draw the plot from a results file")
    args = parser.parse_args()
    unknown = set(args.parts) - {"rolling", "canary", "bad"}
    if unknown:
        parser.error(f"unknown parts: {sorted(unknown)}")

    def log(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    if args.from_json is not None:
        doc = json.loads(args.from_json.read_text())
    else:
        if args.source != "worktree" and SOURCE_ENV not in os.environ:
            pin_source(args.source)  # does not return
        # Without this, `kill` of a run in the background (SIGINT ignored) would leave the cluster running.
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
        check_imports_from(SRC)
        doc = measure(args, log)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(compact_dump(doc))
        print(f"results: {args.out}")
    report(doc, None if args.no_plot else args.plot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
