"""Autoscaling benchmark (issue #8): our HPA rules against "CPU at 70 %", side by side on the real closed loop.

    .venv/bin/python bench/autoscale.py [--repeats 2] [--slo 2.0] [--startup-delay 10] [--profile AT:RPS,...]
                                        [--duration 420] [--min-replicas 1] [--out bench/results/autoscale.json]
                                        [--plot docs/autoscaling-bench.png | --no-plot] [--from-json FILE]

One local cluster with the metrics test bed (`LocalCluster.up(metrics=True)`: traffic emulator -> Prometheus ->
prometheus-adapter -> custom.metrics.k8s.io -> the real HPA controller), the CRD, and the operator as users run
it (`llmctl run`, a child process). Each repeat creates two namespaces with one vllm LLMDeployment `chat` each
(1 H100 per replica), and plays the same load profile through the emulator into both at the same time:

* **ours**: `spec.autoscaling` {minReplicas 1, maxReplicas 8, queueDepth 4, tokensPerSecond 2000}, default
  behavior; the operator writes the HPA.
* **cpu70**: no `spec.autoscaling`; the bench creates a plain autoscaling/v2 HPA on the LLMDeployment's scale
  subresource, Pods metric `llm_emulator_cpu_utilization` (the emulator's busy batch slots / batch slots, the
  stand-in for CPU on fake pods, served by the dev cluster's adapter only) at averageValue 700m, with the same
  min/max and a copy of the behavior the operator wrote for ours: only the signal differs.

The emulated pod (the emulator's default capacity) makes 2500 tokens/s at a full batch of 32; with 512 prompt and
256 output tokens per request it serves 9.77 requests/s before a queue builds, and a request's TTFT is about
0.04 s plus 0.1 s per request queued ahead of it on its pod. 2000 tokens/s is 80 % of that capacity, the share
at which "CPU" (busy slots) reads 70 % in this model, so both rules aim at the same utilisation.

Measured per policy, over the profile (t = 0 is the first step, after a warm-up at the base load):

* SLO: the share of requests (arrived at the LLMDeployment) admitted with an emulated TTFT <= --slo, from the
  emulator's per-LLMDeployment tally (counted over the latency spread the TTFT histograms get; requests refused,
  unserved or still queued at the end count as misses);
* replica-seconds: the integral of spec.replicas (what the HPA asked for: kwok schedules the pods, so their GPUs
  are held, at once), sampled every second; ready-replica-seconds beside it;
* scale events: changes of spec.replicas;
* reaction per load increase: the time from the step to the first scale-up, and to serving capacity (serving
  pods x 9.77 requests/s) >= the offered load, each within the step ("-": not before the next step).

Writes --out (JSON, every sample) and --plot (load, replicas and worst per-pod TTFT over time, first repeat).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import itertools
import json
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
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "operator"))

from llm_operator.dev import ClusterInfo, LocalCluster  # noqa: E402
from llm_operator.dev.traffic._exposition import EMULATED_CPU_UTILIZATION  # noqa: E402
from llm_operator.dev.traffic.client import TrafficClient  # noqa: E402

CRD = ROOT / "crds" / "llmdeployments.serving.llmops.dev.yaml"
NAME = "chat"
POLICIES = ("ours", "cpu70")
MIN_REPLICAS, MAX_REPLICAS = 1, 8  # both policies; --min-replicas changes the minimum of both
QUEUE_TARGET, TOKENS_TARGET = 4, 2000
CPU_TARGET = "700m"
PROMPT_TOKENS, OUTPUT_TOKENS = 512, 256
POD_TOKENS_PER_SECOND = 2500.0  # the emulator's default capacity
POD_RPS = POD_TOKENS_PER_SECOND / OUTPUT_TOKENS  # 9.77 requests/s per pod before a queue builds
# (seconds from the start, requests/s): a base of 0.6 pod's worth (6 requests/s) and three 45-second spikes every
# 2 minutes: to 2 pods' worth (20) from one replica (cold), to 2.9 pods' worth (28) and to 2 pods' worth again,
# while the replicas of the first are still there (the default 5-minute scale-down window keeps them warm).
DEFAULT_PROFILE = "0:6,30:20,75:6,150:28,195:6,270:20,315:6"
DEFAULT_DURATION = 420.0
WARMUP = 60.0  # base load before t = 0: the 1-minute token rates reach their steady state
SAMPLE_EVERY = 1.0


def parse_profile(text: str) -> list[tuple[float, float]]:
    steps = []
    for part in text.split(","):
        at, _, rps = part.partition(":")
        steps.append((float(at), float(rps)))
    if [a for a, _ in steps] != sorted(a for a, _ in steps) or steps[0][0] != 0:
        raise argparse.ArgumentTypeError(f"profile times must start at 0 and not decrease: {text}")
    return steps


# ------------------------------------------------------------------------------------------ cluster access


class Api:
    """GETs on the apiserver with the admin client certificate (a kubectl process per poll would load a 2-core
    machine as much as the cluster does); kubectl for the few writes."""

    def __init__(self, info: ClusterInfo) -> None:
        self.info = info
        pki = Path(info.state_dir) / "pki"
        self.tls = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        self.tls.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))

    def get(self, path: str) -> dict[str, Any] | None:
        try:
            with urllib.request.urlopen(self.info.server + path, context=self.tls, timeout=10) as resp:
                doc: dict[str, Any] = json.loads(resp.read())
                return doc
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise

    def kubectl(self, *args: str, stdin: str | None = None, check: bool = True) -> str:
        proc = subprocess.run([str(Path(self.info.bin_dir) / "kubectl"), f"--kubeconfig={self.info.kubeconfig}",
                               *args], input=stdin, capture_output=True, text=True, check=False, timeout=180)
        if check and proc.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)} failed: {proc.stderr}")
        return proc.stdout

    def apply(self, namespace: str, doc: dict[str, Any]) -> None:
        self.kubectl("apply", "-n", namespace, "-f", "-", stdin=json.dumps(doc))


def llmd_path(namespace: str) -> str:
    return f"/apis/serving.llmops.dev/v1alpha1/namespaces/{namespace}/llmdeployments/{NAME}"


def hpa_path(namespace: str, name: str) -> str:
    return f"/apis/autoscaling/v2/namespaces/{namespace}/horizontalpodautoscalers/{name}"


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
    raise SystemExit(f"timed out after {timeout:.0f}s waiting for {what}; last: {last!r}")


def llmdeployment(autoscaling: dict[str, Any] | None, *, min_replicas: int) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "model": {"name": "chat-8b", "uri": "hf://HuggingFaceTB/SmolLM2-135M-Instruct"},
        "runtime": {"backend": "vllm"},
        "resources": {"gpu": {"count": 1, "product": "NVIDIA-H100-80GB-HBM3"}},
    }
    if autoscaling is None:
        spec["replicas"] = min_replicas  # the bench's HPA owns it from then on
    else:
        spec["autoscaling"] = autoscaling
    return {"apiVersion": "serving.llmops.dev/v1alpha1", "kind": "LLMDeployment", "metadata": {"name": NAME},
            "spec": spec}


def cpu_hpa(behavior: dict[str, Any], *, min_replicas: int) -> dict[str, Any]:
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": f"{NAME}-cpu70"},
        "spec": {
            "scaleTargetRef": {"apiVersion": "serving.llmops.dev/v1alpha1", "kind": "LLMDeployment", "name": NAME},
            "minReplicas": min_replicas,
            "maxReplicas": MAX_REPLICAS,
            "metrics": [{"type": "Pods", "pods": {"metric": {"name": EMULATED_CPU_UTILIZATION},
                                                  "target": {"type": "AverageValue", "averageValue": CPU_TARGET}}}],
            "behavior": behavior,
        },
    }


def ready_replicas_are(api: Api, namespace: str, replicas: int) -> bool:
    return ((api.get(llmd_path(namespace)) or {}).get("status") or {}).get("readyReplicas") == replicas


def gone(api: Api, path: str) -> bool:
    return api.get(path) is None


def hpa_active(api: Api, path: str) -> bool:
    hpa = api.get(path)
    conditions = ((hpa or {}).get("status") or {}).get("conditions") or []
    return any(c["type"] == "ScalingActive" and c["status"] == "True" for c in conditions) and bool(
        (hpa or {}).get("status", {}).get("currentMetrics"))


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


# ------------------------------------------------------------------------------------------ one repeat


@dataclass
class Sample:
    t: float
    rps: float
    replicas: dict[str, int] = field(default_factory=dict)
    ready: dict[str, int] = field(default_factory=dict)
    serving: dict[str, int] = field(default_factory=dict)
    queue: dict[str, float] = field(default_factory=dict)
    worst_ttft: dict[str, float] = field(default_factory=dict)
    hpa: dict[str, list[float]] = field(default_factory=dict)  # the HPA's current metric values


class Sampler:
    """Every SAMPLE_EVERY s: spec/ready replicas, the HPAs' current metrics, and the emulator's pods."""

    def __init__(self, api: Api, traffic: TrafficClient, namespaces: dict[str, str], hpas: dict[str, str]) -> None:
        self.api, self.traffic, self.namespaces, self.hpas = api, traffic, namespaces, hpas
        self.samples: list[Sample] = []
        self.rps = 0.0
        self.t0 = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.errors = 0

    def _sample(self) -> Sample:
        s = Sample(t=time.monotonic() - self.t0, rps=self.rps)
        state = self.traffic.state()
        for policy, ns in self.namespaces.items():
            obj = self.api.get(llmd_path(ns)) or {}
            s.replicas[policy] = int((obj.get("spec") or {}).get("replicas") or 0)
            s.ready[policy] = int((obj.get("status") or {}).get("readyReplicas") or 0)
            pods = [p for p in state["pods"] if p["namespace"] == ns and p["llmdeployment"] == NAME]
            s.serving[policy] = sum(1 for p in pods if p["serving"])
            s.queue[policy] = sum(p["queueDepth"] for p in pods)
            s.worst_ttft[policy] = max((p["ttftSeconds"] for p in pods if p["serving"]), default=0.0)
            hpa = self.api.get(hpa_path(ns, self.hpas[policy])) or {}
            values = []
            for m in (hpa.get("status") or {}).get("currentMetrics") or []:
                with contextlib.suppress(KeyError, TypeError, ValueError):
                    values.append(_quantity(m["pods"]["current"]["averageValue"]))
            s.hpa[policy] = values
        return s

    def _run(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            try:
                self.samples.append(self._sample())
            except (OSError, ValueError, KeyError, RuntimeError):
                self.errors += 1  # a slow poll on a loaded machine: the next one covers it
            next_at += SAMPLE_EVERY
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def start(self, t0: float) -> None:
        self.t0 = t0
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def _quantity(text: str) -> float:
    from kubernetes.utils import parse_quantity

    return float(parse_quantity(text))


def run_repeat(index: int, info: ClusterInfo, api: Api, traffic: TrafficClient, args: argparse.Namespace,
               log: Callable[[str], None]) -> dict[str, Any]:
    namespaces = {policy: f"autoscale-{policy}-r{index}" for policy in POLICIES}
    hpas = {"ours": NAME, "cpu70": f"{NAME}-cpu70"}
    profile: list[tuple[float, float]] = args.profile
    base = profile[0][1]
    for ns in namespaces.values():
        api.kubectl("create", "namespace", ns)
        wait(functools.partial(api.get, f"/api/v1/namespaces/{ns}/serviceaccounts/default"), timeout=60,
             what=f"the default ServiceAccount in {ns}")
    low = args.min_replicas
    api.apply(namespaces["ours"], llmdeployment({
        "minReplicas": low, "maxReplicas": MAX_REPLICAS,
        "metrics": {"queueDepth": QUEUE_TARGET, "tokensPerSecond": TOKENS_TARGET},
    }, min_replicas=low))
    api.apply(namespaces["cpu70"], llmdeployment(None, min_replicas=low))
    ours_hpa = wait(lambda: api.get(hpa_path(namespaces["ours"], NAME)), timeout=120, what="the operator's HPA")
    # The same behavior, field for field, as the operator wrote for ours (its defaults).
    api.apply(namespaces["cpu70"], cpu_hpa(ours_hpa["spec"]["behavior"], min_replicas=low))
    for policy, ns in namespaces.items():
        wait(functools.partial(ready_replicas_are, api, ns, low), timeout=120,
             what=f"{policy}: {low} ready replica(s)")
        traffic.set_load(namespace=ns, name=NAME, rps=base, prompt_tokens=PROMPT_TOKENS, output_tokens=OUTPUT_TOKENS)
    warm_from = time.monotonic()
    for policy, ns in namespaces.items():
        wait(functools.partial(hpa_active, api, hpa_path(ns, hpas[policy])), timeout=180,
             what=f"{policy}: its HPA reading metrics")
    time.sleep(max(0.0, WARMUP - (time.monotonic() - warm_from)))
    before = {p: int((api.get(llmd_path(ns)) or {})["spec"]["replicas"]) for p, ns in namespaces.items()}
    if any(v != low for v in before.values()):
        log(f"warning: replicas before the profile {before} (the base load should need no more than {low})")

    sampler = Sampler(api, traffic, namespaces, hpas)
    sampler.rps = base
    loadavg = [os.getloadavg()[0]]
    t0 = time.monotonic()
    for ns in namespaces.values():  # a fresh tally for each from t = 0
        traffic.set_slo(namespace=ns, name=NAME, ttft_seconds=args.slo)
    sampler.start(t0)
    try:
        for at, rps in profile:
            while (left := t0 + at - time.monotonic()) > 0:
                time.sleep(min(left, 15.0))
                loadavg.append(os.getloadavg()[0])
            for ns in namespaces.values():  # both within a millisecond or two
                traffic.set_load(namespace=ns, name=NAME, rps=rps)
            sampler.rps = rps
            log(f"repeat {index}: t={time.monotonic() - t0:6.1f}s load {rps:g} requests/s")
        while (left := t0 + args.duration - time.monotonic()) > 0:
            time.sleep(min(left, 15.0))
            loadavg.append(os.getloadavg()[0])
        tallies = {t["namespace"]: t for t in traffic.state()["llmdeployments"]}
    finally:
        sampler.stop()
    for ns in namespaces.values():
        traffic.set_load(namespace=ns, name=NAME, rps=0)
    result = {
        "repeat": index,
        "namespaces": namespaces,
        "loadavg1": {"mean": statistics.fmean(loadavg), "max": max(loadavg)},
        "sampleErrors": sampler.errors,
        "policies": {p: analyse(p, sampler.samples, tallies[ns], profile, args.duration)
                     for p, ns in namespaces.items()},
        "samples": [vars(s) for s in sampler.samples],
    }
    for ns in namespaces.values():
        api.kubectl("delete", "namespace", ns, "--wait=false")
    for ns in namespaces.values():  # their pods hold GPUs the next repeat needs
        wait(functools.partial(gone, api, f"/api/v1/namespaces/{ns}"), timeout=180, what=f"{ns} to go")
    return result


# ------------------------------------------------------------------------------------------ analysis


def analyse(policy: str, samples: list[Sample], tally: dict[str, Any], profile: list[tuple[float, float]],
            duration: float) -> dict[str, Any]:
    inside = [s for s in samples if s.t <= duration]
    replica_seconds = ready_seconds = 0.0
    for a, b in zip(inside, [*inside[1:], None], strict=True):
        dt = (b.t if b is not None else duration) - a.t
        replica_seconds += a.replicas[policy] * dt
        ready_seconds += a.ready[policy] * dt
    values = [s.replicas[policy] for s in inside]
    changes = [b - a for a, b in itertools.pairwise(values) if b != a]
    reactions = []
    ends = [at for at, _ in profile[2:]] + [duration]
    for (at, rps), (_, previous), end in zip(profile[1:], profile[:-1], ends, strict=True):
        if rps <= previous:
            continue
        # Within this step only: a later step's scale-up is not a reaction to this one.
        during = [s for s in inside if at <= s.t < end]
        if not during:
            continue
        start = during[0]
        first_up = next((s.t - at for s in during if s.replicas[policy] > start.replicas[policy]), None)
        enough = next((s.t - at for s in during if s.serving[policy] * POD_RPS >= rps), None)
        reactions.append({"at": at, "rps": rps, "replicasAtStep": start.replicas[policy],
                          "firstScaleUpSeconds": first_up, "capacitySeconds": enough})
    arrived = float(tally["arrived"])
    return {
        "sloShare": float(tally["ttftMet"]) / arrived if arrived else None,
        "requests": arrived,
        "requestsWithinSlo": float(tally["ttftMet"]),
        "unserved": float(tally["unserved"]),
        "rejected": float(tally["rejected"]),
        "replicaSeconds": replica_seconds,
        "readyReplicaSeconds": ready_seconds,
        "scaleEvents": len(changes),
        "scaleUps": sum(1 for c in changes if c > 0),
        "scaleDowns": sum(1 for c in changes if c < 0),
        "maxReplicas": max(values, default=0),
        "finalReplicas": values[-1] if values else 0,
        "reactions": reactions,
        "worstTtftSeconds": max((s.worst_ttft[policy] for s in inside), default=0.0),
        "queueAtEnd": inside[-1].queue[policy] if inside else 0.0,
    }


def _fmt(values: list[float], spec: str) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return format(values[0], spec)
    return f"{format(statistics.median(values), spec)} ({format(min(values), spec)} to {format(max(values), spec)})"


def _reaction(values: list[float | None]) -> str:
    """Seconds over the repeats; "-" for a repeat where it did not happen within the step."""
    seen = [v for v in values if v is not None]
    text = _fmt(seen, ".0f")
    missing = len(values) - len(seen)
    return text if not missing else ("-" if not seen else f"{text}, - in {missing}")


def table(results: list[dict[str, Any]], slo: float) -> str:
    """Markdown: one row per policy; with several repeats the median and (min to max)."""
    rows = [f"| policy | requests with TTFT ≤ {slo:g} s | replica-seconds (spec) | ready replica-seconds | "
            "scale events (up/down per repeat) | max replicas | first scale-up after each load step, s | "
            "serving capacity ≥ load after, s | worst pod TTFT, s |",
            "|---|---|---|---|---|---|---|---|---|"]
    for policy in POLICIES:
        per = [r["policies"][policy] for r in results]
        share = [100 * p["sloShare"] for p in per if p["sloShare"] is not None]
        events = [float(p["scaleEvents"]) for p in per]
        ups = ", ".join(f"{p['scaleUps']}/{p['scaleDowns']}" for p in per)
        steps = len(per[0]["reactions"])
        first = "; ".join(_reaction([r["reactions"][i]["firstScaleUpSeconds"] for r in per]) for i in range(steps))
        cap = "; ".join(_reaction([r["reactions"][i]["capacitySeconds"] for r in per]) for i in range(steps))
        label = {"ours": f"ours (queueDepth {QUEUE_TARGET}, tokensPerSecond {TOKENS_TARGET})",
                 "cpu70": "CPU at 70 % (busy slots, 700m)"}[policy]
        rows.append(f"| {label} | {_fmt(share, '.1f')} % | {_fmt([p['replicaSeconds'] for p in per], '.0f')} | "
                    f"{_fmt([p['readyReplicaSeconds'] for p in per], '.0f')} | {_fmt(events, '.0f')} ({ups}) | "
                    f"{_fmt([float(p['maxReplicas']) for p in per], '.0f')} | {first} | {cap} | "
                    f"{_fmt([p['worstTtftSeconds'] for p in per], '.1f')} |")
    return "\n".join(rows)


def plot(result: dict[str, Any], path: Path, slo: float, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = result["samples"]
    t = [s["t"] for s in samples]
    fig, (ax_load, ax_rep, ax_ttft) = plt.subplots(3, 1, figsize=(10, 8.5), sharex=True,
                                                   gridspec_kw={"height_ratios": [1, 1.4, 1]})
    ax_load.step(t, [s["rps"] for s in samples], where="post", color="black", label="offered load (both)")
    ax_load.set_ylabel("requests/s")
    ax_load.set_title(title, fontsize=10)
    ax_load.legend(loc="upper right", fontsize=8)
    colors = {"ours": "tab:blue", "cpu70": "tab:orange"}
    labels = {"ours": f"ours: queueDepth {QUEUE_TARGET} + tokensPerSecond {TOKENS_TARGET}",
              "cpu70": "CPU at 70 % (busy slots)"}
    ax_rep.step(t, [s["rps"] / POD_RPS for s in samples], where="post", color="gray", linestyle=":",
                label="replicas the load needs (load / 9.77 requests/s)")
    for policy in POLICIES:
        ax_rep.step(t, [s["replicas"][policy] for s in samples], where="post", color=colors[policy],
                    label=f"{labels[policy]}: spec.replicas")
        ax_rep.step(t, [s["serving"][policy] for s in samples], where="post", color=colors[policy], alpha=0.45,
                    linestyle="--", label=f"{labels[policy]}: serving pods")
        ttft = [max(s["worst_ttft"][policy], 0.01) for s in samples]
        ax_ttft.plot(t, ttft, color=colors[policy], label=labels[policy])
    ax_rep.set_ylabel("replicas")
    ax_rep.set_ylim(0, max(max(max(x["replicas"].values()) for x in samples) + 2.5, 4))
    ax_rep.legend(loc="upper right", fontsize=7, ncol=2)
    ax_ttft.axhline(slo, color="red", linestyle="--", linewidth=1, label=f"SLO {slo:g} s")
    ax_ttft.set_yscale("log")
    ax_ttft.set_ylabel("worst pod's TTFT, s")
    ax_ttft.set_xlabel("seconds since the profile started")
    ax_ttft.legend(loc="upper right", fontsize=7)
    for ax in (ax_load, ax_rep, ax_ttft):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ------------------------------------------------------------------------------------------ main


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 3)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


def dump(doc: dict[str, Any]) -> str:
    """JSON with floats to 3 decimals and one line per sample, so the results file stays small and diffable."""
    doc = _rounded(doc)
    samples = {r["repeat"]: r.pop("samples") for r in doc["repeats"]}
    text = json.dumps(doc, indent=1, ensure_ascii=False)
    for index, rows in samples.items():
        marker = f'"repeat": {index},'
        lines = ",\n".join("    " + json.dumps(row, separators=(",", ":")) for row in rows)
        text = text.replace(marker, f'{marker}\n   "samples": [\n{lines}\n   ],', 1)
    json.loads(text)  # still one valid document
    return text + "\n"


def measure(args: argparse.Namespace, log: Callable[[str], None]) -> dict[str, Any]:
    started = time.monotonic()
    loadavg_start = os.getloadavg()
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="autoscale-bench-") as tmp:
        cluster = LocalCluster(state_dir=Path(tmp) / "state", log=log)
        try:
            info = cluster.up(timeout=300, metrics=True, traffic_startup_delay=args.startup_delay)
            log(f"cluster up in {info.ready_seconds:.1f}s")
            api = Api(info)
            api.kubectl("apply", "--server-side", "-f", str(CRD))
            api.kubectl("wait", "--for=condition=Established", "crd/llmdeployments.serving.llmops.dev",
                        "--timeout=60s")
            assert info.traffic_url is not None
            traffic = TrafficClient(info.traffic_url)
            with operator_process(info, Path(tmp) / "operator.log"):
                for index in range(1, args.repeats + 1):
                    results.append(run_repeat(index, info, api, traffic, args, log))
                    log(f"repeat {index} done: " + json.dumps(
                        {p: {k: v for k, v in r.items() if k != "reactions"}
                         for p, r in results[-1]["policies"].items()}))
        finally:
            cluster.down()
    return {
        "command": " ".join(["bench/autoscale.py", *sys.argv[1:]]),
        "config": {
            "profile": [{"at": a, "rps": r} for a, r in args.profile], "durationSeconds": args.duration,
            "warmupSeconds": WARMUP, "promptTokens": PROMPT_TOKENS, "outputTokens": OUTPUT_TOKENS,
            "podTokensPerSecond": POD_TOKENS_PER_SECOND, "podRequestsPerSecond": POD_RPS,
            "ttftSloSeconds": args.slo, "startupDelaySeconds": args.startup_delay,
            "minReplicas": args.min_replicas, "maxReplicas": MAX_REPLICAS,
            "ours": {"queueDepth": QUEUE_TARGET, "tokensPerSecond": TOKENS_TARGET},
            "cpu70": {"metric": EMULATED_CPU_UTILIZATION, "averageValue": CPU_TARGET},
        },
        "machine": {"cpus": os.cpu_count(), "loadavgAtStart": loadavg_start, "loadavgAtEnd": os.getloadavg()},
        "elapsedSeconds": time.monotonic() - started,
        "repeats": results,
    }


def report(doc: dict[str, Any], plot_path: Path | None) -> None:
    config, results = doc["config"], doc["repeats"]
    slo = config["ttftSloSeconds"]
    print(table(results, slo))
    load = [r["loadavg1"]["mean"] for r in results]
    print(f"\n{len(results)} repeat(s), minReplicas {config['minReplicas']}; 1-min load average during the profiles "
          f"{_fmt(load, '.1f')} on {doc['machine']['cpus']} CPUs; whole run {doc['elapsedSeconds'] / 60:.1f} min")
    if results and plot_path is not None:
        plot(results[0], plot_path, slo,
             f"bench/autoscale.py, repeat 1 of {len(results)}: vllm, {config['promptTokens']:g}/"
             f"{config['outputTokens']:g} tokens, TTFT SLO {slo:g} s, model load {config['startupDelaySeconds']:g} s,"
             f" replicas {config['minReplicas']}-{config['maxReplicas']}, default behavior for both")
        print(f"plot: {plot_path}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=2, help="profiles played one after another (default 2)")
    parser.add_argument("--slo", type=float, default=2.0, help="TTFT SLO in seconds (default 2)")
    parser.add_argument("--startup-delay", type=float, default=10.0,
                        help="emulated model load: a Ready pod serves after this many seconds (default 10)")
    parser.add_argument("--profile", type=parse_profile, default=parse_profile(DEFAULT_PROFILE),
                        help=f"load steps AT:RPS,... (default {DEFAULT_PROFILE})")
    parser.add_argument("--duration", type=float, default=DEFAULT_DURATION,
                        help=f"seconds measured from the first step (default {DEFAULT_DURATION:g})")
    parser.add_argument("--min-replicas", type=int, default=MIN_REPLICAS,
                        help=f"minReplicas of both policies (default {MIN_REPLICAS}; max is {MAX_REPLICAS})")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "autoscale.json")
    parser.add_argument("--plot", type=Path, default=ROOT / "docs" / "autoscaling-bench.png")
    parser.add_argument("--no-plot", action="store_true", help="write no plot")
    parser.add_argument("--from-json", type=Path, metavar="FILE",
                        help="measure nothing: print the table and draw the plot from a results file")
    args = parser.parse_args()

    def log(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    if args.from_json is not None:
        doc = json.loads(args.from_json.read_text())
    else:
        doc = measure(args, log)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(dump(doc))
        print(f"results: {args.out}")
    report(doc, None if args.no_plot else args.plot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
