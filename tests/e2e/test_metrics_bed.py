"""The metrics test bed, every box real: emulated model pods ── scrape ──► Prometheus ── recording rules ──►
prometheus-adapter ── custom.metrics.k8s.io (aggregation layer) ──► what an HPA reads.

The session cluster runs with ``metrics=True`` (e2e/pytest_plugin.py). Timing: a new series shows through the
API after the emulator's startup delay + one scrape (2 s) + one rule evaluation (2 s) + one adapter relist
(5 s); a known series is queried live. Every wait below is a poll on a condition, never a fixed sleep.
"""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import pytest
from kubernetes.utils import parse_quantity
from llm_operator.builders import REVISION_LABEL
from llm_operator.dev.traffic.client import TrafficClient
from llm_operator.metrics import (
    ADAPTER_GENERATION_TOKENS_PER_SECOND,
    ADAPTER_QUEUE_DEPTH,
    BACKENDS,
    REVISION_REQUEST_ERROR_RATIO,
    REVISION_TTFT_P95,
)

from e2e.pytest_plugin import Cluster, Operator, wait_for

pytestmark = pytest.mark.cluster

INSTANCE = "app.kubernetes.io/instance"
# The series each backend's own exporter uses for its queue: the emulator must speak each backend's names,
# so that the recording rules' mapping of every backend is what the API reads through.
NATIVE_QUEUE_SERIES = {
    "python": "llm_queue_depth{",
    "vllm": "vllm:num_requests_waiting{",
    "tensorrtllm": 'nv_trt_llm_request_metrics{',
}


def llmd(name: str, backend: str, replicas: int = 1) -> dict[str, Any]:
    return {
        "apiVersion": "serving.llmops.dev/v1alpha1",
        "kind": "LLMDeployment",
        "metadata": {"name": name},
        "spec": {
            "model": {"name": "tiny", "uri": "hf://HuggingFaceTB/SmolLM2-135M-Instruct"},
            "runtime": {"backend": backend},
            "resources": {"gpu": {"count": 1, "product": "NVIDIA-H100-80GB-HBM3"}},
            "replicas": replicas,
        },
    }


def apply(cluster: Cluster, namespace: str, *docs: dict[str, Any]) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input="\n---\n".join(json.dumps(d) for d in docs))


def traffic(cluster: Cluster) -> TrafficClient:
    assert cluster.traffic_url, "the session cluster runs without the metrics test bed (llmctl dev up --metrics)"
    return TrafficClient(cluster.traffic_url)


def ready_pods(cluster: Cluster, namespace: str, name: str) -> list[dict[str, Any]]:
    pods = cluster.kubectl_json("get", "pods", "-n", namespace, "-l", f"{INSTANCE}={name}")["items"]
    return [p for p in pods if not p["metadata"].get("deletionTimestamp") and any(
        c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))]


def wait_ready(cluster: Cluster, namespace: str, name: str, count: int) -> list[dict[str, Any]]:
    pods: list[dict[str, Any]] = wait_for(lambda: (ps := ready_pods(cluster, namespace, name)) and len(ps) == count
                                          and ps, timeout=90, what=f"{count} Ready pods of {name}")
    return pods


def custom_metric(cluster: Cluster, namespace: str, metric: str, *, version: str = "v1beta2",
                  selector: str | None = None) -> dict[str, float]:
    """pod name → value, read through the apiserver exactly as the HPA controller reads a Pods metric."""
    path = f"/apis/custom.metrics.k8s.io/{version}/namespaces/{namespace}/pods/*/{metric}"
    if selector:
        path += "?labelSelector=" + urllib.parse.quote(selector)
    proc = cluster.kubectl("get", "--raw", path, check=False)
    if proc.returncode != 0:  # "the server could not find the metric" until the adapter's relist saw it
        return {}
    items = json.loads(proc.stdout)["items"]
    return {i["describedObject"]["name"]: float(parse_quantity(i["value"])) for i in items}


def promql(cluster: Cluster, query: str) -> list[dict[str, Any]]:
    assert cluster.prometheus_url
    url = f"{cluster.prometheus_url}/api/v1/query?" + urllib.parse.urlencode({"query": query})
    with urllib.request.urlopen(url, timeout=10) as resp:
        body = json.loads(resp.read())
    assert body["status"] == "success", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def by_label(result: Iterable[dict[str, Any]], label: str) -> dict[str, float]:
    return {r["metric"][label]: float(r["value"][1]) for r in result}


def mean(values: Iterable[float]) -> float:
    vals = list(values)
    return sum(vals) / len(vals)


# ------------------------------------------------------------------------------------------------ tests


def test_each_backend_reads_back_through_the_custom_metrics_api(cluster: Cluster, operator: Operator,
                                                                  namespace: str) -> None:
    for version in ("v1beta1", "v1beta2"):
        svc = cluster.kubectl_json("get", "apiservice", f"{version}.custom.metrics.k8s.io")
        available = [c for c in svc["status"]["conditions"] if c["type"] == "Available"]
        assert available and available[0]["status"] == "True", svc["status"]
        assert svc["spec"]["service"]["namespace"] == "llmops-monitoring" and not svc["spec"].get(
            "insecureSkipTLSVerify"), svc["spec"]
    backend_service = cluster.kubectl_json("get", "service", "prometheus-adapter", "-n", "llmops-monitoring")
    assert backend_service["spec"]["type"] == "ExternalName"
    assert backend_service["spec"]["externalName"] == "localhost"

    client = traffic(cluster)
    # Far more requests than a pod drains, against a bounded queue: each pod's queue sits exactly at its bound,
    # a different one per backend so that no backend's value can pass for another's.
    bounds = {backend: 3 + 2 * i for i, backend in enumerate(BACKENDS)}
    for backend in BACKENDS:
        apply(cluster, namespace, llmd(f"q-{backend}", backend))
        client.set_capacity(namespace=namespace, name=f"q-{backend}", max_queue=bounds[backend])
        client.set_load(namespace=namespace, name=f"q-{backend}", rps=200, output_tokens=100)
    pods = {backend: wait_ready(cluster, namespace, f"q-{backend}", 1)[0]["metadata"]["name"] for backend in BACKENDS}

    state = wait_for(lambda: (s := client.state()) and {p["pod"]: p for p in s["pods"]
                                                       if p["namespace"] == namespace and p["exporting"]}
                     .keys() >= set(pods.values()) and s, what="the emulator to export every pod")
    emulated = {p["pod"]: p for p in state["pods"] if p["namespace"] == namespace}
    exposition = client.metrics()
    for backend, pod in pods.items():
        assert emulated[pod]["backend"] == backend
        own = [line for line in exposition.splitlines() if f'pod="{pod}"' in line and not line.startswith("#")]
        assert any(line.startswith(NATIVE_QUEUE_SERIES[backend]) for line in own), (backend, own[:5])

    want = {pods[backend]: float(bounds[backend]) for backend in BACKENDS}
    got = wait_for(lambda: (v := custom_metric(cluster, namespace, ADAPTER_QUEUE_DEPTH)) == want and v,
                   timeout=90, what=f"{ADAPTER_QUEUE_DEPTH} = {want} through custom.metrics.k8s.io")
    assert got == want
    assert {p["pod"]: p["queueDepth"] for p in client.state()["pods"] if p["namespace"] == namespace} == want
    # The older API version serves the same values, and discovery lists the metric for pods.
    assert custom_metric(cluster, namespace, ADAPTER_QUEUE_DEPTH, version="v1beta1") == want
    discovery = json.loads(cluster.kubectl("get", "--raw", "/apis/custom.metrics.k8s.io/v1beta2").stdout)
    assert f"pods/{ADAPTER_QUEUE_DEPTH}" in {r["name"] for r in discovery["resources"]}


def test_more_load_raises_and_more_pods_lower_the_per_pod_values(cluster: Cluster, operator: Operator,
                                                                   namespace: str) -> None:
    client = traffic(cluster)
    name = "scale"
    # One pod decodes at most 5000 tokens/s, so it drains 50 requests/s of 100 output tokens. 60 requests/s
    # overload one pod (the queue fills up to its bound); split over 3 pods, 20 each (2000 tokens/s) do not.
    capacity, output, high_rps, replicas = 5000.0, 100, 60, 3
    share = high_rps * output / replicas
    apply(cluster, namespace, llmd(name, "vllm"))
    client.set_capacity(namespace=namespace, name=name, tokens_per_second=capacity, max_queue=40)
    client.set_load(namespace=namespace, name=name, rps=2, output_tokens=output)
    (pod,) = [p["metadata"]["name"] for p in wait_ready(cluster, namespace, name, 1)]
    selector = f"{INSTANCE}={name}"

    def values(metric: str) -> dict[str, float]:
        return custom_metric(cluster, namespace, metric, selector=selector)

    low_tokens = wait_for(lambda: (t := values(ADAPTER_GENERATION_TOKENS_PER_SECOND).get(pod, 0)) > 0 and t,
                          timeout=90, what="tokens/s under the low load")
    # Each metric's series is listed by its own adapter relist: one may show a few seconds before the other.
    low_queue = wait_for(lambda: (v := values(ADAPTER_QUEUE_DEPTH)) and pod in v and (v[pod],), timeout=30,
                         what="the queue depth under the low load")[0]
    assert low_tokens < share / 2 and low_queue < 5, "2 requests/s on a pod that drains 50 neither queue nor saturate"

    client.set_load(namespace=namespace, name=name, rps=high_rps, output_tokens=output)
    high_queue = wait_for(lambda: (q := values(ADAPTER_QUEUE_DEPTH).get(pod, 0)) >= 30 and q, timeout=60,
                          what="the queue to fill under more load than the pod drains")
    # tokens/s is a rate over 1 min: it climbs towards the pod's capacity while the window fills.
    high_tokens = wait_for(lambda: (t := values(ADAPTER_GENERATION_TOKENS_PER_SECOND)[pod]) >= 1.3 * share
                           and t, timeout=90, what="tokens/s to rise with the load")
    assert high_queue > low_queue + 25 and high_tokens > 2 * low_tokens

    # The HPA averages a Pods metric over the pods: both averages must fall once the load is split.
    cluster.kubectl("scale", "llmd", name, "-n", namespace, f"--replicas={replicas}")
    wait_ready(cluster, namespace, name, replicas)
    queues = wait_for(lambda: len(v := values(ADAPTER_QUEUE_DEPTH)) == replicas
                      and mean(v.values()) < high_queue / 2 and v, timeout=90,
                      what=f"the per-pod queue to drain across {replicas} pods")
    assert pod in queues
    tokens = wait_for(lambda: len(v := values(ADAPTER_GENERATION_TOKENS_PER_SECOND)) == replicas
                      and mean(v.values()) < high_tokens and v, timeout=90,
                      what=f"tokens/s per pod to fall across {replicas} pods")
    assert all(value < high_tokens for p, value in tokens.items() if p != pod), tokens


def test_a_pod_exports_nothing_before_its_startup_delay(cluster: Cluster, operator: Operator,
                                                        namespace: str) -> None:
    client = traffic(cluster)
    delay = float(client.state()["startupDelaySeconds"])
    assert delay >= 1, "the session's emulator must have a startup delay to observe"
    name = "loading"
    client.set_load(namespace=namespace, name=name, rps=5, output_tokens=100)
    apply(cluster, namespace, llmd(name, "python"))

    # Tight polling of the emulator itself; each record is stamped *after* the answer came back, so a record
    # stamped before ready+delay was answered before it too.
    records: list[tuple[float, bool, bool]] = []  # (time, Ready per the emulator, exported)

    def started() -> str | None:
        pods = [p for p in client.state()["pods"] if p["namespace"] == namespace]
        exposition = client.metrics()
        now = time.time()
        for pod in pods:
            records.append((now, pod["ready"], f'pod="{pod["pod"]}"' in exposition))
            if pod["exporting"] and f'pod="{pod["pod"]}"' in exposition:
                return str(pod["pod"])
        return None

    pod = wait_for(started, timeout=90, interval=0.05, what="the pod to finish its emulated model load")
    obj = cluster.kubectl_json("get", "pod", pod, "-n", namespace)
    ready = next(c for c in obj["status"]["conditions"] if c["type"] == "Ready")
    ready_since = datetime.fromisoformat(ready["lastTransitionTime"]).timestamp()
    early = [r for r in records if r[0] < ready_since + delay]
    assert any(is_ready for _, is_ready, _ in early), "never saw the pod Ready but still loading"
    assert not any(exported for _, _, exported in early), f"exported before {delay}s after Ready"

    # Through Prometheus: the pod's first sample of any series is no older than the end of the delay.
    series = wait_for(lambda: promql(cluster, f'{{namespace="{namespace}",pod="{pod}"}}[5m]'), timeout=30,
                      what="the pod's series in Prometheus")
    first = min(float(s["values"][0][0]) for s in series)
    # A scrape is stamped when it starts, a few ms before the emulator answers it.
    assert first >= ready_since + delay - 0.5, (first, ready_since, delay)


def test_slow_and_faulty_revisions_show_in_promql(cluster: Cluster, operator: Operator, namespace: str) -> None:
    client = traffic(cluster)
    names = {"normal": "rev-normal", "slow": "rev-slow", "faulty": "rev-faulty"}
    for name in names.values():
        apply(cluster, namespace, llmd(name, "vllm"))
        client.set_load(namespace=namespace, name=name, rps=10, output_tokens=50)
    revisions: dict[str, str] = {}
    for behaviour, name in names.items():
        (pod,) = wait_ready(cluster, namespace, name, 1)
        revisions[behaviour] = pod["metadata"]["labels"][REVISION_LABEL]
        if behaviour != "normal":
            client.set_behaviour(revision=revisions[behaviour], behaviour=behaviour)
    assert len(set(revisions.values())) == 3

    def per_revision(series: str) -> dict[str, float]:
        return by_label(promql(cluster, f'{series}{{namespace="{namespace}"}}'), "revision")

    wait_for(lambda: len(per_revision(REVISION_TTFT_P95)) == 3, timeout=90, what="p95 TTFT for every revision")
    # The emulator's slow behaviour triples observed TTFT; histogram buckets blur the exact factor.
    ttft = wait_for(lambda: (v := per_revision(REVISION_TTFT_P95))[revisions["slow"]]
                    >= 2 * v[revisions["normal"]] and v, timeout=60, what="the slow revision's p95 TTFT")
    assert ttft[revisions["faulty"]] < 2 * ttft[revisions["normal"]]
    errors = wait_for(lambda: (v := per_revision(REVISION_REQUEST_ERROR_RATIO)).get(revisions["faulty"], 0) > 0.1
                      and v, timeout=90, what="the faulty revision's error ratio")
    assert errors[revisions["faulty"]] < 0.35  # it fails 20 % of requests
    assert errors.get(revisions["normal"], 0.0) == 0.0 and errors.get(revisions["slow"], 0.0) == 0.0
