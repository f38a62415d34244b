"""The emulator scraped by a real Prometheus on 127.0.0.1 that evaluates the shipped recording rules, and the
adapter's queries run against it: the whole mapping of docs/metrics.md with the real engine, no cluster."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from llm_operator import metrics
from llm_operator.api import Backend
from llm_operator.dev._metrics_stack import DEV_ADAPTER_RULES
from llm_operator.dev.traffic import Emulator, Load, PodInfo, TrafficModel, TrafficServer

NS = "team"
WARMUP = 300.0  # seconds of model time before the first scrape: counters and gauges are in steady state
PODS = {
    # pod: (backend, llmdeployment, revision, image)
    "py-0": ("python", "py", "rpy", "reg/runtime:1.0"),
    "py-1": ("python", "py", "rpy", "reg/runtime:1.0"),
    "vllm-stable": ("vllm", "vl", "rvl1", "reg/vllm:1.0"),
    "vllm-canary": ("vllm", "vl", "rvl2", "reg/vllm:1.1-slow"),
    "trt-stable": ("tensorrtllm", "trt", "rtrt1", "reg/trt:1.0"),
    "trt-canary": ("tensorrtllm", "trt", "rtrt2", "reg/trt:1.1-faulty"),
}


class StaticSource:
    def __init__(self, pods: list[PodInfo]) -> None:
        self._pods = pods

    def pods(self) -> list[PodInfo]:
        return self._pods


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.loads(resp.read())


class Prom:
    def __init__(self, url: str) -> None:
        self.url = url

    def query(self, expr: str) -> list[tuple[dict[str, str], float]]:
        doc = _get(f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}")
        assert doc["status"] == "success", doc
        return [(r["metric"], float(r["value"][1])) for r in doc["data"]["result"]]

    def by(self, expr: str, label: str) -> dict[str, float]:
        out: dict[str, float] = {}
        for labels, value in self.query(expr):
            assert labels[label] not in out, f"{expr}: two series for {label}={labels[label]}"
            out[labels[label]] = value
        return out


@pytest.fixture(scope="module")
def emulator() -> Iterator[tuple[Emulator, str]]:
    start = time.time() - WARMUP
    pods = [
        PodInfo(namespace=NS, name=name, llmdeployment=llmd, revision=rev, backend=backend,  # type: ignore[arg-type]
                image=image, model="m", ready=True, ready_since=start)
        for name, (backend, llmd, rev, image) in PODS.items()
    ]
    model = TrafficModel(start=start)
    # py: 24 requests/s over 2 pods that serve 10/s each: both at a full batch and a full admission queue (64),
    # refusing 2/s each. vl and trt: 6 requests/s over 2 pods, well under capacity.
    model.set_load(namespace=NS, name="py", load=Load(rps=24, prompt_tokens=500, output_tokens=250))
    model.set_load(namespace=NS, name="vl", load=Load(rps=6, prompt_tokens=500, output_tokens=250))
    model.set_load(namespace=NS, name="trt", load=Load(rps=6, prompt_tokens=500, output_tokens=250))
    emu = Emulator(model=model, source=StaticSource(pods), clock=time.time)
    with TrafficServer(emulator=emu, host="127.0.0.1", port=0, tick_seconds=0.5) as server:
        yield emu, server.url


@pytest.fixture(scope="module")
def prom(emulator: tuple[Emulator, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prom]:
    binary = shutil.which("prometheus")
    assert binary, "prometheus is not installed: apt-get install -y --no-install-recommends prometheus"
    _, url = emulator
    work = tmp_path_factory.mktemp("prom")
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(metrics.RULES_PATH)],
        "scrape_configs": [{
            "job_name": "traffic",
            "honor_labels": True,
            "static_configs": [{"targets": [urllib.parse.urlparse(url).netloc]}],
        }],
    }
    (work / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = _free_port()
    log = (work / "prometheus.log").open("w")
    proc = subprocess.Popen(
        [binary, f"--config.file={work / 'prometheus.yml'}", f"--storage.tsdb.path={work / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, (work / "prometheus.log").read_text()
            try:
                with urllib.request.urlopen(f"{base}/-/ready", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "prometheus did not become ready"
            time.sleep(0.2)
        p = Prom(base)
        # Rates need two scrapes; the per-revision rules one more evaluation.
        deadline = time.monotonic() + 40
        while len(p.query("llmops:revision:ttft_seconds:p95")) < 5 or len(p.query(metrics.REQUEST_ERROR_RATIO)) < 6:
            assert time.monotonic() < deadline, "the recording rules produced nothing within 40 s"
            time.sleep(0.5)
        yield p
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def test_scrape_is_healthy_and_every_pod_gets_each_canonical_series_once(prom: Prom) -> None:
    assert prom.by('up{job="traffic"}', "job") == {"traffic": 1.0}
    for name in metrics.PER_POD:
        series = prom.query(name)
        pods = sorted(labels["pod"] for labels, _ in series)
        assert pods == sorted(PODS), name
        for labels, _ in series:
            backend, _, revision, _ = PODS[labels["pod"]]
            assert labels["backend"] == backend and labels["revision"] == revision and labels["namespace"] == NS


def test_canonical_values_match_the_model(prom: Prom, emulator: tuple[Emulator, str]) -> None:
    emu, _ = emulator
    state = {p["pod"]: p for p in emu.state()["pods"]}
    queue = prom.by(metrics.QUEUE_DEPTH, "pod")
    # python: a full admission queue, exactly 64, and 2 refusals/s per pod; the others have no queue.
    assert queue == {"py-0": 64, "py-1": 64, "vllm-stable": 0, "vllm-canary": 0, "trt-stable": 0, "trt-canary": 0}
    running = prom.by(metrics.RUNNING_REQUESTS, "pod")
    for pod in PODS:
        assert running[pod] == pytest.approx(state[pod]["runningRequests"], rel=0.01), pod
    # The series are seconds old while rate() divides by its whole 1m window, so every rate here is scaled by
    # one common factor (all series started at the same scrape); rules_test.yaml pins absolute rates. Ratios
    # between rates are exact: against vllm-stable's 3 requests/s * 250 tokens.
    gen = prom.by(metrics.GENERATION_TOKENS_RATE, "pod")
    prompt = prom.by(metrics.PROMPT_TOKENS_RATE, "pod")
    scale = gen["vllm-stable"] / (3 * 250)
    assert scale > 0
    for pod in ("py-0", "py-1"):
        assert gen[pod] / scale == pytest.approx(2500, rel=0.02)  # a full batch makes C tokens/s
        assert prompt[pod] / scale == pytest.approx(10 * 500, rel=0.02)
    for pod in ("vllm-canary", "trt-stable", "trt-canary"):
        assert gen[pod] / scale == pytest.approx(3 * 250, rel=0.02)
    for pod in ("vllm-stable", "vllm-canary", "trt-stable", "trt-canary"):
        assert prompt[pod] / scale == pytest.approx(3 * 500, rel=0.02)
    errors = prom.by(metrics.REQUEST_ERRORS_RATE, "pod")
    assert errors["py-0"] / scale == pytest.approx(2.0, rel=0.02)
    assert errors["trt-canary"] / scale == pytest.approx(3 * 0.2, rel=0.02)
    kv = prom.by(metrics.KV_CACHE_UTILIZATION, "pod")
    for pod in PODS:
        assert kv[pod] == pytest.approx(state[pod]["kvCacheUtilization"], rel=0.01), pod
    itl = prom.by(metrics.INTER_TOKEN_LATENCY_MEAN, "pod")
    for pod in PODS:
        # Histogram means of spread observations: the model's ITL within the spread's rounding.
        assert itl[pod] == pytest.approx(state[pod]["interTokenLatencySeconds"], rel=0.03), pod
    ttft = prom.by(metrics.TTFT_P50, "pod")
    assert ttft["trt-stable"] == pytest.approx(state["trt-stable"]["ttftSeconds"], rel=0.3)
    assert ttft["py-0"] > 5  # 64 queued requests ahead at 10/s


def test_revision_behaviours_show_up_by_revision(prom: Prom) -> None:
    p95 = prom.by(metrics.REVISION_TTFT_P95, "revision")
    assert 2.0 < p95["rvl2"] / p95["rvl1"] < 4.5  # "-slow": 3x TTFT, through histogram buckets
    ratio = prom.by(metrics.REVISION_REQUEST_ERROR_RATIO, "revision")
    assert ratio["rtrt2"] == pytest.approx(0.2, rel=0.02)  # "-faulty": 20% errors
    assert ratio["rtrt1"] == 0
    assert ratio["rvl1"] == ratio["rvl2"] == 0
    assert ratio["rpy"] == pytest.approx(4 / 24, rel=0.03)  # refusals: 2 of the 12 requests/s per pod
    assert prom.by(metrics.REVISION_PODS, "revision") == {"rpy": 2, "rvl1": 1, "rvl2": 1, "rtrt1": 1, "rtrt2": 1}
    assert prom.by(metrics.REVISION_QUEUE_DEPTH, "revision")["rpy"] == 128
    gen = prom.by(metrics.REVISION_GENERATION_TOKENS_RATE, "revision")
    assert gen["rpy"] / gen["rvl1"] == pytest.approx(5000 / 750, rel=0.02)


def test_adapter_queries_return_one_value_per_pod(prom: Prom) -> None:
    """The adapter's metricsQuery, templated the way prometheus-adapter does for a Pods metric request on
    namespace `team` and two pods, reads the per-pod canonical series."""
    rules = yaml.safe_load(metrics.ADAPTER_CONFIG_PATH.read_text())["rules"]
    assert rules
    for rule in rules:
        series = rule["seriesQuery"].split('__name__="', 1)[1].split('"', 1)[0]
        query = (rule["metricsQuery"].replace("<<.Series>>", series)
                 .replace("<<.LabelMatchers>>", 'namespace="team",pod=~"py-0|trt-canary"')
                 .replace("<<.GroupBy>>", "pod"))
        values = prom.by(query, "pod")
        recorded = prom.by(series, "pod")
        assert values == {p: recorded[p] for p in ("py-0", "trt-canary")}, rule["name"]["as"]


def test_backend_label_is_the_pods_backend(prom: Prom) -> None:
    backends: dict[str, Backend] = {pod: spec[0] for pod, spec in PODS.items()}  # type: ignore[misc]
    assert {labels["pod"]: labels["backend"] for labels, _ in prom.query(metrics.QUEUE_DEPTH)} == backends


def test_dev_adapter_rule_reads_the_emulated_cpu_of_each_pod(prom: Prom, emulator: tuple[Emulator, str]) -> None:
    """The dev cluster's extra adapter rule (emulated CPU, for bench/autoscale.py), templated as the adapter does,
    returns each pod's busy-slot ratio as the emulator has it."""
    emu, _ = emulator
    state = {p["pod"]: p for p in emu.state()["pods"]}
    (rule,) = DEV_ADAPTER_RULES
    series = rule["seriesQuery"].split('__name__="', 1)[1].split('"', 1)[0]
    query = (rule["metricsQuery"].replace("<<.Series>>", series)
             .replace("<<.LabelMatchers>>", 'namespace="team",pod=~"py-0|vllm-stable"')
             .replace("<<.GroupBy>>", "pod"))
    values = prom.by(query, "pod")
    assert set(values) == {"py-0", "vllm-stable"}
    assert values["py-0"] == 1.0  # a full batch: 24 requests/s over two pods that serve 10/s each
    # vllm-stable at 3 requests/s: a third of its slots or so, equal to the model's (a steady state).
    assert 0.1 < values["vllm-stable"] < 0.5
    assert values["vllm-stable"] == pytest.approx(state["vllm-stable"]["cpuUtilization"], rel=0.01)
