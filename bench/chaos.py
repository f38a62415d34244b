"""Chaos on the real local cluster (issue #13): the operator killed, the apiserver and etcd restarted, a same-named
object recreated while the operator is down; then, with no more chaos, everything must converge to what the specs
say. Bounded and self-stopping: a fixed number of kills, fixed outages, one deadline per wait.

    python bench/chaos.py                       # 100 SIGKILLs during a storm over 50 LLMDeployments, then the
                                                # apiserver and etcd restarts and the stale-state case
    python bench/chaos.py --kills 10 --objects 10 --out /tmp/chaos.json

Scenarios (each in its own namespace, one `llmctl run -n NS --metrics-port P` process at a time):
  kills      a storm of creates, spec changes (model revision -> rollout, Canary on/off), scales (spec.replicas
             and the scale subresource) and deletes, while the operator is SIGKILLed at a random moment of each
             life and restarted at once. After the last kill the storm stops; convergence time is from then until
             `check` reports nothing wrong.
  kube-apiserver / etcd
             a smaller storm, the component stopped for --outage seconds and started again with the same flags
             and data. The operator's llmop_api_requests_total and llmop_watch_requests_total (its child caches'
             lists and watch attempts) are scraped every 0.5 s: the request rate while the
             component is down must stay bounded (its work queue backs off; no hot loop). One change made just
             before the stop and one just after the start must both be reconciled (watches re-established).
  stale-state
             an LLMDeployment deleted and created again under the same name while the operator is down: its
             children must carry the new uid only, and none of the old children may survive (by uid).

`check` (the convergence criteria) counts, in the namespace: children whose controlling owner is not a live
LLMDeployment (orphaned; those of a deleted name counted apart), LLMDeployments with more than one Deployment
(duplicate revisions), live objects whose status.observedGeneration differs from metadata.generation or that have
no conditions (lost status), children that differ from what the builders render for the live spec and uid (the
in-process equivalent of `llmctl render`), and objects not Ready or with a rollout still in progress.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]
# The code under test is a snapshot (--source, default HEAD), so edits made in the checkout during the run cannot
# change it half-way (a builder changed under a running bench changes every revision hash); the operator
# processes import it through PYTHONPATH. Imported by tests/e2e/test_chaos.py, it is the checkout as is.
SOURCE_ENV = "BENCH_CHAOS_SOURCE"
SRC = Path(os.environ.get(SOURCE_ENV) or ROOT)
if str(SRC / "operator") not in sys.path:
    sys.path.insert(0, str(SRC / "operator"))

from llm_operator import api  # noqa: E402
from llm_operator._diff import contains  # noqa: E402
from llm_operator._k8s import Kube, KubeError  # noqa: E402
from llm_operator.builders import MANAGER, REVISION_LABEL, build_children, revision_hash  # noqa: E402
from llm_operator.dev import LocalCluster  # noqa: E402
from llm_operator.dev._cluster import free_port  # noqa: E402

LLMD = {"api_version": api.API_VERSION, "kind": api.KIND}
INSTANCE = "app.kubernetes.io/instance"
MANAGED_BY = "app.kubernetes.io/managed-by"
CHILD_KINDS = (("v1", "ConfigMap"), ("v1", "Service"), ("apps/v1", "Deployment"),
               ("policy/v1", "PodDisruptionBudget"), ("autoscaling/v2", "HorizontalPodAutoscaler"))
MODEL_REVISIONS = ("main", "v1", "v2", "v3")
CANARY = {"strategy": "Canary", "canary": {"steps": [{"setWeight": 50}, {"pause": {"duration": "1s"}}]}}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def body(name: str, rng: random.Random) -> dict[str, Any]:
    """A small CPU model (kwok makes its pods Ready), monitoring off so no optional CRD changes the children."""
    spec: dict[str, Any] = {
        "model": {"name": "smollm2-135m", "uri": "hf://HuggingFaceTB/SmolLM2-135M-Instruct",
                  "revision": rng.choice(MODEL_REVISIONS)},
        "runtime": {"backend": "python", "dtype": "float32"},
        "resources": {"cpu": "100m", "memory": "256Mi", "sharedMemory": "64Mi"},
        "replicas": rng.randint(1, 3),
        "monitoring": {"enabled": False},
    }
    if rng.random() < 0.2:
        spec["rollout"] = CANARY
    return {"apiVersion": api.API_VERSION, "kind": api.KIND, "metadata": {"name": name}, "spec": spec}


def kube_for(kubeconfig: str | Path) -> Kube:
    from kubernetes import config

    return Kube(config.new_client_from_config(config_file=str(kubeconfig)))


# ------------------------------------------------------------------------------------------------ the operator


def scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("llmop_") and " " in line:
            key, value = line.rsplit(" ", 1)
            out[key] = float(value)
    return out


def api_requests(metrics: dict[str, float]) -> float:
    """The reconciler's requests and the child caches' lists and watch attempts (kopf's own are not counted)."""
    return sum(v for k, v in metrics.items()
               if k.startswith(("llmop_api_requests_total{", "llmop_watch_requests_total{")))


class Operator:
    """`llmctl run -n NS --metrics-port P` in its own process group, restarted by `start` after a `kill`."""

    def __init__(self, *, namespace: str, kubeconfig: str | Path, log_path: Path) -> None:
        self.namespace, self.kubeconfig, self.log_path = namespace, str(kubeconfig), log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.starts = 0

    def start(self, timeout: float = 60.0) -> float:
        """Start and wait for the start-up line; returns the seconds it took."""
        assert self.proc is None or self.proc.poll() is not None
        began = time.monotonic()
        self.port = free_port()
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        env = {**os.environ, "KUBECONFIG": self.kubeconfig, "LLMOPS_RESYNC_SECONDS": "300"}
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "llm_operator.cli", "run", "-n", self.namespace, "--metrics-port",
                 str(self.port)], stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                start_new_session=True)
        self.starts += 1
        deadline = began + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"llmctl run exited with {self.proc.returncode}; see {self.log_path}")
            with self.log_path.open("rb") as fh:
                fh.seek(offset)
                if b"triton-llm-operator started" in fh.read():
                    return time.monotonic() - began
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"llmctl run did not start in {timeout:.0f}s; see {self.log_path}")

    def kill(self) -> None:
        """SIGKILL, as the kernel's OOM killer or a node loss would: no cleanup, no graceful anything."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()

    def cpu_seconds(self) -> float:
        assert self.proc is not None
        times = psutil.Process(self.proc.pid).cpu_times()
        return float(times.user + times.system)

    def crashes(self) -> list[str]:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return [line for line in text.splitlines() if " crashed" in line]


# ------------------------------------------------------------------------------------------------ the storm


@dataclass
class Storm:
    """Random creates, spec changes, scales and deletes over `names`, from its own thread, until stopped."""

    kube: Kube
    namespace: str
    names: list[str]
    rng: random.Random
    interval: float = 0.1
    ops: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Storm:
        self._thread = threading.Thread(target=self._run, name="storm", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)

    def _run(self) -> None:
        while not self._stop.is_set():
            name = self.rng.choice(self.names)
            try:
                self.ops[self.step(name)] += 1
            except (KubeError, OSError) as exc:  # the apiserver or etcd may be down: counted, not fatal
                self.errors[str(getattr(exc, "status", 0))] += 1
            self._stop.wait(self.rng.uniform(0.5, 1.5) * self.interval)

    def step(self, name: str) -> str:
        kube, ns, rng = self.kube, self.namespace, self.rng
        live = kube.get(**LLMD, namespace=ns, name=name)
        if live is None or live["metadata"].get("deletionTimestamp"):
            obj = body(name, rng)
            obj["metadata"]["namespace"] = ns
            try:
                kube.create(obj)
            except KubeError as exc:
                if exc.status != 409:  # still terminating
                    raise
                return "create-conflict"
            return "create"
        op = rng.choices(["revision", "scale", "replicas", "canary", "delete"], weights=[30, 20, 20, 12, 18])[0]
        if op == "revision":
            patch: dict[str, Any] = {"spec": {"model": {"revision": rng.choice(MODEL_REVISIONS)}}}
        elif op == "replicas":
            patch = {"spec": {"replicas": rng.randint(1, 3)}}
        elif op == "canary":
            patch = {"spec": {"rollout": None if live["spec"].get("rollout") else CANARY}}
        elif op == "scale":
            kube.patch(**LLMD, namespace=ns, name=name, subresource="scale",
                       body={"spec": {"replicas": rng.randint(1, 3)}})
            return op
        else:
            kube.delete(**LLMD, namespace=ns, name=name)
            return op
        kube.patch(**LLMD, namespace=ns, name=name, body=patch)
        return op


# ------------------------------------------------------------------------------------------------ convergence


def _owner_uid(obj: dict[str, Any]) -> str | None:
    for ref in obj["metadata"].get("ownerReferences") or []:
        if ref.get("kind") == api.KIND and ref.get("controller"):
            return str(ref.get("uid"))
    return None


def _condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c.get("type") == type_), {})


def check(kube: Kube, namespace: str) -> dict[str, list[str]]:
    """What is not yet as the specs say, by criterion (empty lists: converged)."""
    live = kube.list(**LLMD, namespace=namespace)
    by_uid = {o["metadata"]["uid"]: o for o in live if not o["metadata"].get("deletionTimestamp")}
    names = {o["metadata"]["name"] for o in by_uid.values()}
    children: dict[tuple[str, str], dict[str, Any]] = {}
    deployments: Counter[str] = Counter()
    problems: dict[str, list[str]] = {k: [] for k in (
        "orphaned", "children_of_deleted", "duplicate_revisions", "lost_status", "render_mismatch", "not_ready")}
    for api_version, kind in CHILD_KINDS:
        for obj in kube.list(api_version=api_version, kind=kind, namespace=namespace,
                             label_selector=f"{MANAGED_BY}={MANAGER}"):
            meta = obj["metadata"]
            where = f"{kind}/{meta['name']}"
            if meta.get("deletionTimestamp"):
                continue  # on its way out (foreground deletion of pods)
            owner = _owner_uid(obj)
            if owner not in by_uid:
                instance = (meta.get("labels") or {}).get(INSTANCE, "")
                problems["children_of_deleted" if instance not in names else "orphaned"].append(
                    f"{where} (owner uid {owner})")
                continue
            children[(kind, meta["name"])] = obj
            if kind == "Deployment":
                deployments[owner] += 1
    for uid, obj in by_uid.items():
        name, meta = obj["metadata"]["name"], obj["metadata"]
        status = obj.get("status") or {}
        if status.get("observedGeneration") != meta.get("generation") or not status.get("conditions"):
            problems["lost_status"].append(
                f"{name}: observedGeneration {status.get('observedGeneration')} of {meta.get('generation')}, "
                f"{len(status.get('conditions') or [])} conditions")
        if deployments[uid] > 1:
            problems["duplicate_revisions"].append(f"{name}: {deployments[uid]} Deployments")
        ready = _condition(obj, "Ready")
        phase = (status.get("rollout") or {}).get("phase")
        if ready.get("status") != "True" or ready.get("observedGeneration") != meta.get("generation") or \
                phase not in (None, "Healthy"):
            problems["not_ready"].append(f"{name}: Ready={ready.get('status')} ({ready.get('reason')}), "
                                         f"rollout {phase}")
        llmd = api.parse({"apiVersion": api.API_VERSION, "kind": api.KIND, "metadata": meta, "spec": obj["spec"]})
        if status.get("revision") != revision_hash(llmd):
            problems["render_mismatch"].append(f"{name}: status.revision {status.get('revision')}")
        for child in build_children(llmd, namespace=namespace, owner_uid=uid, monitoring_crds=False):
            have = children.get((child["kind"], child["metadata"]["name"]))
            if have is None or not contains(child, have):
                problems["render_mismatch"].append(
                    f"{name}: {child['kind']}/{child['metadata']['name']} " + ("missing" if have is None else
                                                                              "differs from its rendering"))
    return problems


def summary(problems: dict[str, list[str]]) -> dict[str, int]:
    return {k: len(v) for k, v in problems.items()}


def converge(kube: Kube, namespace: str, timeout: float, since: float | None = None) -> tuple[float, dict[str, Any]]:
    """Poll `check` until it finds nothing; (seconds since `since`, last counts). Raises after `timeout`."""
    since = time.monotonic() if since is None else since
    deadline = time.monotonic() + timeout
    last: dict[str, list[str]] = {}
    next_log = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            last = check(kube, namespace)
        except (KubeError, OSError) as exc:
            last = {"check_error": [str(exc)]}
        if not any(last.values()):
            return time.monotonic() - since, summary(last)
        if time.monotonic() >= next_log:  # what is still pending, for a slow convergence's story
            log(f"  not yet converged after {time.monotonic() - since:.0f}s: "
                + json.dumps({k: v[:2] for k, v in last.items() if v}))
            next_log = time.monotonic() + 10
        time.sleep(0.5)
    detail = {k: v[:5] for k, v in last.items() if v}
    raise AssertionError(f"not converged after {timeout:.0f}s: {summary(last)}; e.g. {json.dumps(detail)}")


def make_namespace(kube: Kube, name: str) -> None:
    kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    deadline = time.monotonic() + 60
    while kube.get(api_version="v1", kind="ServiceAccount", namespace=name, name="default") is None:
        if time.monotonic() > deadline:
            raise RuntimeError(f"no default ServiceAccount in {name}")
        time.sleep(0.1)


def wait_gc_watches_llmdeployments(kube: Kube, namespace: str, timeout: float = 90.0) -> float:
    """Wait until the garbage collector deletes the dependents of a deleted LLMDeployment; returns the wait.

    kube-controller-manager's GC starts watching a new CRD's kind only at its next discovery resync (every 30 s).
    An LLMDeployment deleted before then is never seen going, and its children stay forever: the first run of
    this bench, 4 s after the CRD was applied, left 6 such orphans. So every scenario starts after this probe:
    an LLMDeployment with one owned ConfigMap, deleted, until the ConfigMap goes within 5 s.
    """
    began = time.monotonic()
    for attempt in range(1000):
        name = f"gc-probe-{attempt}"
        obj = body(name, random.Random(0))
        obj["metadata"]["namespace"] = namespace
        uid = kube.create(obj)["metadata"]["uid"]
        ref = {"apiVersion": api.API_VERSION, "kind": api.KIND, "name": name, "uid": uid, "controller": True}
        kube.create({"apiVersion": "v1", "kind": "ConfigMap",
                     "metadata": {"name": name, "namespace": namespace, "ownerReferences": [ref]}})
        kube.delete(**LLMD, namespace=namespace, name=name)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if kube.get(api_version="v1", kind="ConfigMap", namespace=namespace, name=name) is None:
                return time.monotonic() - began
            time.sleep(0.1)
        kube.delete(api_version="v1", kind="ConfigMap", namespace=namespace, name=name)
        if time.monotonic() - began > timeout:
            break
    raise RuntimeError(f"the garbage collector did not collect an LLMDeployment's dependents in {timeout:.0f}s")


# ------------------------------------------------------------------------------------------------ scenarios


def operator_kills(kube: Kube, op: Operator, namespace: str, *, objects: int, kills: int, rng: random.Random,
                   max_life: float = 2.5, interval: float = 0.1, timeout: float = 300.0) -> dict[str, Any]:
    """`kills` SIGKILLs, each at a random moment (0 to `max_life` s) after the operator said it started, during a
    storm over `objects` names; then no more kills, the storm stops, and convergence is timed."""
    names = [f"chaos-{i}" for i in range(objects)]
    storm = Storm(kube, namespace, names, rng, interval=interval)
    for name in names[: max(1, objects * 3 // 4)]:  # most exist before the first kill
        storm.step(name)
    op.start()
    storm.start()
    startup: list[float] = []
    began = time.monotonic()
    deleted_while_down: list[str] = []
    try:
        for kill in range(kills):
            time.sleep(rng.uniform(0.0, max_life))
            op.kill()
            if kill == kills - 1:
                # The last restart finds a fifth of the objects deleted while it was down: their children must go.
                storm.stop()
                for name in rng.sample(names, max(1, objects // 5)):
                    with contextlib.suppress(KubeError):
                        if kube.delete(**LLMD, namespace=namespace, name=name):
                            deleted_while_down.append(name)
            startup.append(op.start())
    finally:
        storm.stop()
    chaos_s = time.monotonic() - began
    settled, counts = converge(kube, namespace, timeout)
    live = kube.list(**LLMD, namespace=namespace)
    result = {"kills": kills, "objects": objects, "chaos_s": round(chaos_s, 1), "convergence_s": round(settled, 2),
              "ops": dict(storm.ops), "storm_errors": dict(storm.errors), "live_at_end": len(live),
              "deleted_while_down_at_the_end": len(deleted_while_down),
              "deleted_at_end": objects - len(live), "startup_s_median": round(sorted(startup)[len(startup) // 2], 2),
              "final": counts, "crashed_reconciles": len(op.crashes())}
    log(f"kills: {json.dumps(result)}")
    return result


def component_restart(kube: Kube, op: Operator, cluster: LocalCluster, namespace: str, component: str, *,
                      objects: int, outage: float, rng: random.Random, timeout: float = 180.0) -> dict[str, Any]:
    """`component` SIGKILLed mid-storm, right after every object's spec changed (so reconciles are due while it
    is down), kept down `outage` s while the operator runs on, started again with the same flags and data; a
    change made just after the start. Reports the operator's API request rate and CPU during the outage and the
    time until everything, both changes included, converged."""
    names = [f"restart-{i}" for i in range(objects)]  # the same objects for both components when run in a row
    creator = Storm(kube, namespace, names, rng)
    for name in names:
        if kube.get(**LLMD, namespace=namespace, name=name) is None:
            creator.step(name)
    # Mid-storm: random operations on other objects from 2 s before the crash until 2 s after the restart (its
    # writes fail while the component is down, counted in storm_errors).
    storm = Storm(kube, namespace, [f"storm-{i}" for i in range(objects)], rng, interval=0.1)
    if op.proc is None or op.proc.poll() is not None:
        op.start()
    converge(kube, namespace, timeout)
    samples: list[tuple[float, float]] = []  # (monotonic, llmop_api_requests_total)
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.is_set():
            with contextlib.suppress(OSError):
                samples.append((time.monotonic(), api_requests(scrape(op.port))))
            sampling.wait(0.5)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    storm.start()
    try:
        time.sleep(2.0)
        wanted = {}
        for name in names:  # a change to every object just before the crash: reconciles in flight and due
            wanted[name] = rng.randint(1, 3)
            kube.patch(**LLMD, namespace=namespace, name=name, body={"spec": {"replicas": wanted[name],
                                                                              "podAnnotations": {"chaos": component}}})
        cpu0 = op.cpu_seconds()
        down_at = time.monotonic()
        cluster.stop_component(component, kill=True)
        time.sleep(outage)
        up_at = time.monotonic()
        cpu_down = op.cpu_seconds() - cpu0
        cluster.start_component(component, timeout=120)
        healthy_at = time.monotonic()
        # A change made just after the outage: the operator's watches must have re-established to see it.
        after_name, new_revision = names[-1], f"after-{component}"
        generation = kube.patch(**LLMD, namespace=namespace, name=after_name,
                                body={"spec": {"model": {"revision": new_revision}}})["metadata"]["generation"]
        changed_at = time.monotonic()
        time.sleep(2.0)
    finally:
        storm.stop()
    deadline = changed_at + timeout
    while ((kube.get(**LLMD, namespace=namespace, name=after_name) or {}).get("status") or {}).get(
            "observedGeneration") != generation:  # the operator has seen the change and written its status
        assert time.monotonic() < deadline, f"the operator never reconciled {after_name} after the restart"
        time.sleep(0.1)
    seen_at = time.monotonic()
    settled, counts = converge(kube, namespace, timeout, since=changed_at)
    sampling.set()
    sampler.join(timeout=5)
    live = {o["metadata"]["name"]: o for o in kube.list(**LLMD, namespace=namespace)}
    after = live[after_name]
    deploys = kube.list(api_version="apps/v1", kind="Deployment", namespace=namespace,
                        label_selector=f"{INSTANCE}={after_name}")
    seen = [d["metadata"]["labels"].get(REVISION_LABEL) for d in deploys] == [after["status"]["revision"]] and \
        after["status"]["observedGeneration"] == after["metadata"]["generation"]
    kept = all(live[n]["status"].get("replicas") == wanted[n] for n in names)
    in_outage = [(t, n) for t, n in samples if down_at <= t <= up_at]
    before = [(t, n) for t, n in samples if t < down_at]
    requests = in_outage[-1][1] - in_outage[0][1] if len(in_outage) > 1 else 0.0
    window = in_outage[-1][0] - in_outage[0][0] if len(in_outage) > 1 else 0.0
    rates = [(n2 - n1) / (t2 - t1) for (t1, n1), (t2, n2) in itertools.pairwise(in_outage) if t2 > t1]
    result = {"component": component, "objects": objects, "outage_s": round(up_at - down_at, 1),
              "back_healthy_s": round(healthy_at - down_at, 1),
              "requests_for_the_changes_before": before[-1][1] - before[0][1] if len(before) > 1 else 0.0,
              "requests_during_outage": requests, "request_rate_per_s": round(requests / window, 2) if window else 0,
              "peak_rate_per_s_0.5s_window": round(max(rates, default=0.0), 1),
              "operator_cpu_during_outage_s": round(cpu_down, 2),
              "after_change_status_written_s": round(seen_at - changed_at, 2),
              "after_change_reconciled_s": round(settled, 2),
              "storm_ops": dict(storm.ops), "storm_errors": dict(storm.errors),
              "changes_before_outage_applied": kept, "change_after_outage_seen": bool(seen), "final": counts,
              "crashed_reconciles": len(op.crashes())}
    log(f"{component} restart: {json.dumps(result)}")
    return result


def stale_state(kube: Kube, op: Operator, namespace: str, *, rng: random.Random, timeout: float = 120.0,
                late_gc: LocalCluster | None = None) -> dict[str, Any]:
    """Delete and recreate an LLMDeployment under the same name while the operator is down.

    With `late_gc` the recreated object has the very same spec (so every child has the same name as an old one)
    and kube-controller-manager is stopped from before the delete until the operator has reconciled the new
    object: the operator meets the old uid's children, as it would when the garbage collector lags behind."""
    name = "stale-late-gc" if late_gc is not None else "stale"
    obj = body(name, rng)
    obj["metadata"]["namespace"] = namespace
    obj["spec"].pop("rollout", None)
    if op.proc is None or op.proc.poll() is not None:
        op.start()
    old_uid = kube.create(json.loads(json.dumps(obj)))["metadata"]["uid"]
    converge(kube, namespace, timeout)
    old_children = {o["metadata"]["uid"] for api_version, kind in CHILD_KINDS for o in kube.list(
        api_version=api_version, kind=kind, namespace=namespace, label_selector=f"{INSTANCE}={name}")}
    op.kill()
    if late_gc is not None:
        late_gc.stop_component("kube-controller-manager")
    try:
        kube.delete(**LLMD, namespace=namespace, name=name)
        deadline = time.monotonic() + 60
        while kube.get(**LLMD, namespace=namespace, name=name) is not None:
            assert time.monotonic() < deadline, "the LLMDeployment was not deleted"
            time.sleep(0.05)
        if late_gc is None:
            obj = body(name, random.Random(0))  # a different spec (replicas, revision) than the old one, usually
            obj["metadata"]["namespace"] = namespace
            obj["spec"].pop("rollout", None)
        new_uid = kube.create(obj)["metadata"]["uid"]
        restarted = time.monotonic()
        op.start()
        if late_gc is not None:  # the operator has written the new object's status: it has seen the old children
            deadline = time.monotonic() + 60
            while (((kube.get(**LLMD, namespace=namespace, name=name) or {}).get("status") or {})
                   .get("observedGeneration")) != 1:
                assert time.monotonic() < deadline, "the operator did not reconcile the recreated object"
                time.sleep(0.1)
            time.sleep(1.0)
    finally:
        if late_gc is not None:
            late_gc.start_component("kube-controller-manager")
    settled, counts = converge(kube, namespace, timeout, since=restarted)
    now = [o for api_version, kind in CHILD_KINDS for o in kube.list(
        api_version=api_version, kind=kind, namespace=namespace, label_selector=f"{INSTANCE}={name}")]
    adopted = sorted(f"{o['kind']}/{o['metadata']['name']}" for o in now if o["metadata"]["uid"] in old_children)
    wrong_owner = sorted(f"{o['kind']}/{o['metadata']['name']}" for o in now if _owner_uid(o) != new_uid)
    result = {"gc": "stopped until the operator reconciled" if late_gc is not None else "running",
              "old_uid": old_uid, "new_uid": new_uid, "children": len(now), "old_children_adopted": adopted,
              "children_not_owned_by_new_uid": wrong_owner, "converged_s": round(settled, 2), "final": counts}
    log(f"stale state: {json.dumps(result)}")
    return result


# ------------------------------------------------------------------------------------------------ main


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False).stdout.strip()


def pin_source(rev: str) -> None:
    """Re-run this script against a snapshot of `rev` (operator, CRDs, e2e stages, node profile)."""
    commit = git("rev-parse", "--verify", f"{rev}^{{commit}}")
    if not commit:
        raise SystemExit(f"--source {rev}: not a commit")
    dest = Path(tempfile.mkdtemp(prefix="bench-chaos-src-"))
    paths = ["operator", "crds", "e2e", "bench/nodes.yaml", "pyproject.toml"]
    archive = subprocess.run(["git", "archive", commit, *paths], cwd=ROOT, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    env = {**os.environ, SOURCE_ENV: str(dest), "BENCH_CHAOS_COMMIT": commit, "LLMCTL_E2E_DIR": str(dest / "e2e"),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(dest / "operator"), os.environ.get("PYTHONPATH")]))}
    log(f"testing {commit[:12]} (snapshot in {dest})")
    os.execve(sys.executable, [sys.executable, *sys.argv], env)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=100)
    parser.add_argument("--objects", type=int, default=50)
    parser.add_argument("--restart-objects", type=int, default=20, help="objects for the apiserver/etcd runs")
    parser.add_argument("--outage", type=float, default=10.0, help="seconds the apiserver/etcd stay down")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "chaos.json"))
    parser.add_argument("--source", default="HEAD",
                        help="commit whose operator is tested (default HEAD); 'worktree' for the checkout as is")
    parser.add_argument("--only", default="", help="comma-separated scenarios to run (default: all): "
                        "kills, kube-apiserver, etcd, stale-state, stale-state-late-gc")
    args = parser.parse_args()
    if args.source != "worktree" and SOURCE_ENV not in os.environ:
        pin_source(args.source)  # does not return
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so `kill` still stops the cluster (finally:)
    rng = random.Random(args.seed)
    state = Path(tempfile.mkdtemp(prefix="bench-chaos-"))
    cluster = LocalCluster(state_dir=state / "cluster", profile=SRC / "bench" / "nodes.yaml",
                           log=lambda m: log(f"  {m}"))
    results: dict[str, Any] = {"command": " ".join(["python", "bench/chaos.py", *sys.argv[1:]]), "seed": args.seed,
                               "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                               "commit": os.environ.get("BENCH_CHAOS_COMMIT") or git("rev-parse", "HEAD") + "+worktree",
                               "cpus": os.cpu_count()}
    ops: list[Operator] = []
    try:
        info = cluster.up(timeout=240)
        kubectl = [str(Path(info.bin_dir) / "kubectl"), f"--kubeconfig={info.kubeconfig}"]
        subprocess.run([*kubectl, "apply", "--server-side", "-f", str(SRC / "crds")], check=True, capture_output=True)
        subprocess.run([*kubectl, "wait", "--for=condition=Established", "crd/llmdeployments.serving.llmops.dev"],
                       check=True, capture_output=True)
        kube = kube_for(info.kubeconfig)
        log(f"garbage collector watching LLMDeployments after {wait_gc_watches_llmdeployments(kube, 'default'):.1f}s")

        @contextlib.contextmanager
        def scenario(ns: str) -> Iterator[Operator]:
            make_namespace(kube, ns)
            op = Operator(namespace=ns, kubeconfig=info.kubeconfig, log_path=state / f"operator-{ns}.log")
            ops.append(op)
            try:
                yield op
            finally:
                op.stop()

        runs: list[tuple[str, str, Callable[[Operator, str], dict[str, Any]]]] = [
            ("kills", "chaos-kills", lambda op, ns: operator_kills(
                kube, op, ns, objects=args.objects, kills=args.kills, rng=rng, timeout=600)),
            ("kube-apiserver", "chaos-apiserver", lambda op, ns: component_restart(
                kube, op, cluster, ns, "kube-apiserver", objects=args.restart_objects, outage=args.outage, rng=rng)),
            ("etcd", "chaos-etcd", lambda op, ns: component_restart(
                kube, op, cluster, ns, "etcd", objects=args.restart_objects, outage=args.outage, rng=rng)),
            ("stale-state", "chaos-stale", lambda op, ns: stale_state(kube, op, ns, rng=rng)),
            ("stale-state-late-gc", "chaos-stale-gc", lambda op, ns: stale_state(kube, op, ns, rng=rng,
                                                                                 late_gc=cluster)),
        ]
        only = set(filter(None, args.only.split(",")))
        for key, ns, run in [r for r in runs if not only or r[0] in only]:
            with scenario(ns) as op:
                log(f"scenario {key} ...")
                results[key] = run(op, ns)
    finally:
        for op in ops:
            op.stop()
        cluster.down(keep_logs=True)  # the components' logs stay in the state folder for a failed run's story
        results["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
        print(json.dumps(results, indent=2))
    problems = failures(results)
    for problem in problems:
        log(f"FAILED: {problem}")
    return 1 if problems else 0


def failures(results: dict[str, Any]) -> list[str]:
    """What a run's figures say went wrong (empty: every criterion held)."""
    out = []
    for key, res in results.items():
        if not isinstance(res, dict):
            continue
        out += [f"{key}: {k} = {v}" for k, v in (res.get("final") or {}).items() if v]
        for k in ("crashed_reconciles", "old_children_adopted", "children_not_owned_by_new_uid"):
            if res.get(k):
                out.append(f"{key}: {k} = {res[k]}")
        for k in ("changes_before_outage_applied", "change_after_outage_seen"):
            if k in res and not res[k]:
                out.append(f"{key}: {k} is false")
    return out


if __name__ == "__main__":
    sys.exit(main())
