"""The emulator's HTTP server and client on 127.0.0.1, with a fake pod source and a fake clock."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from llm_operator.api import Backend
from llm_operator.dev.traffic import ControlFile, Emulator, PodInfo, TrafficModel, TrafficServer
from llm_operator.dev.traffic._exposition import EMULATED_CPU_UTILIZATION
from llm_operator.dev.traffic.client import Step, TrafficClient, TrafficClientError
from llm_operator.metrics import SOURCE_SERIES, PythonSeries, TensorRTLLMSeries, TritonSeries, VLLMSeries
from prometheus_client.parser import text_string_to_metric_families

NS = "team"

TRITON_CORE = {
    TritonSeries.REQUEST_SUCCESS,
    TritonSeries.REQUEST_FAILURE,
    "nv_inference_count",
    TritonSeries.REQUEST_DURATION_US,
    TritonSeries.PENDING_REQUESTS,
    TritonSeries.FIRST_RESPONSE_MS,
}
# What each backend's pod exports: its own series plus tritonserver's (prometheus_client's parser names a
# counter family without its _total suffix), plus the emulator's own stand-in for CPU utilisation.
EMULATED = {EMULATED_CPU_UTILIZATION}
# Every model pod's OpenAI front (source="front"); the python backend's families already carry these names.
FRONT = {"llm_requests_failed", "llm_requests_rejected"}
EXPECTED_FAMILIES: dict[Backend, set[str]] = {
    "python": {
        "llm_queue_depth", "llm_running_requests", "llm_kv_cache_usage_ratio", "llm_prompt_tokens",
        "llm_generation_tokens", "llm_requests_rejected", "llm_requests_finished", "llm_requests_failed",
        "llm_time_to_first_token_seconds", "llm_inter_token_latency_seconds", *TRITON_CORE, *EMULATED,
    },
    "vllm": {
        "vllm:num_requests_waiting", "vllm:num_requests_running", "vllm:kv_cache_usage_perc", "vllm:prompt_tokens",
        "vllm:generation_tokens", "vllm:request_success", "vllm:time_to_first_token_seconds",
        "vllm:inter_token_latency_seconds", "vllm:e2e_request_latency_seconds", *TRITON_CORE, *EMULATED, *FRONT,
    },
    "tensorrtllm": {
        "nv_trt_llm_request_metrics", "nv_trt_llm_kv_cache_block_metrics", "nv_llm_input_token_len",
        "nv_llm_output_token_len", *TRITON_CORE, *EMULATED, *FRONT,
    },
}


class FakeSource:
    def __init__(self, pods: list[PodInfo]) -> None:
        self.current = pods

    def pods(self) -> list[PodInfo]:
        return list(self.current)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def pod(name: str, backend: Backend, *, llmd: str = "llama", revision: str = "r1", image: str = "img:1.0",
        ready_since: float = 0.0) -> PodInfo:
    return PodInfo(namespace=NS, name=name, llmdeployment=llmd, revision=revision, backend=backend, image=image,
                   model="llama-8b", ready=True, ready_since=ready_since)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def source() -> FakeSource:
    return FakeSource([pod("py-0", "python", llmd="py"), pod("vllm-0", "vllm", llmd="vl"),
                       pod("trt-0", "tensorrtllm", llmd="trt")])


@pytest.fixture
def server(clock: Clock, source: FakeSource) -> Iterator[TrafficServer]:
    model = TrafficModel(start=clock(), startup_delay=30.0)
    emulator = Emulator(model=model, source=source, clock=clock)
    # A tick far away: only requests advance the fake clock's model, so every value is deterministic.
    with TrafficServer(emulator=emulator, host="127.0.0.1", port=0, tick_seconds=3600) as srv:
        yield srv


@pytest.fixture
def client(server: TrafficServer) -> TrafficClient:
    return TrafficClient(server.url)


def scrape(client: TrafficClient) -> dict[str, dict[str, list[tuple[str, dict[str, str], float]]]]:
    """pod -> family -> samples."""
    out: dict[str, dict[str, list[tuple[str, dict[str, str], float]]]] = {}
    for fam in text_string_to_metric_families(client.metrics()):
        for sample in fam.samples:
            out.setdefault(sample.labels["pod"], {}).setdefault(fam.name, []).append(
                (sample.name, sample.labels, sample.value))
    return out


def test_each_pod_exports_its_backends_series_with_pod_labels(client: TrafficClient, clock: Clock) -> None:
    assert client.healthy()
    for llmd in ("py", "vl", "trt"):
        client.set_load(namespace=NS, name=llmd, rps=4, prompt_tokens=400, output_tokens=200)
    clock.now += 60
    pods = scrape(client)
    assert set(pods) == {"py-0", "vllm-0", "trt-0"}
    for name, backend in (("py-0", "python"), ("vllm-0", "vllm"), ("trt-0", "tensorrtllm")):
        assert set(pods[name]) == EXPECTED_FAMILIES[backend], name
        for samples in pods[name].values():
            for _, labels, _ in samples:
                assert labels["namespace"] == NS and labels["revision"] == "r1"
        # Every source series the recording rules read for this backend is exported (but the deprecated vLLM
        # fallbacks, which a current vLLM no longer has).
        exported = {s for fam in pods[name].values() for s, _, _ in fam}
        for source_name in SOURCE_SERIES[backend]:
            if source_name in (VLLMSeries.INTER_TOKEN_LATENCY_DEPRECATED, VLLMSeries.KV_CACHE_USAGE_DEPRECATED):
                continue
            assert any(s == source_name or s.startswith(f"{source_name}_") for s in exported), (name, source_name)

    py = pods["py-0"]
    assert py["llm_queue_depth"][0][1]["model"] == "llama-8b"
    vl = pods["vllm-0"]
    assert vl["vllm:num_requests_running"][0][1]["model_name"] == "llama-8b"
    reasons = {labels["finished_reason"] for _, labels, _ in vl["vllm:request_success"]}
    assert reasons == {"stop", "length", "abort", "error"}
    trt = {labels["request_type"]: v for _, labels, v in pods["trt-0"]["nv_trt_llm_request_metrics"]}
    assert trt["max"] == 32

    # The values are the model's: a lightly loaded pod generates 4 requests/s * 200 tokens.
    state = {p["pod"]: p for p in client.state()["pods"]}
    gen = next(v for s, _, v in py["llm_generation_tokens"] if s == PythonSeries.GENERATION_TOKENS)
    assert gen == pytest.approx(4 * 200 * 60, rel=0.03)
    running = vl["vllm:num_requests_running"][0][2]
    assert running == pytest.approx(state["vllm-0"]["runningRequests"])
    out_tokens = next(v for s, _, v in pods["trt-0"]["nv_llm_output_token_len"]
                      if s == f"{TensorRTLLMSeries.OUTPUT_TOKEN_LEN}_sum")
    assert out_tokens == pytest.approx(4 * 200 * 60, rel=0.03)
    ttft_ms = {labels["le"]: v for s, labels, v in pods["trt-0"][TritonSeries.FIRST_RESPONSE_MS]
               if s.endswith("_bucket")}
    assert "1000.0" in ttft_ms  # Triton's histogram is in milliseconds
    # The emulated CPU utilisation: busy slots over the 32 slots, with only the pod labels.
    for name in ("py-0", "vllm-0", "trt-0"):
        ((_, labels, cpu),) = pods[name][EMULATED_CPU_UTILIZATION]
        assert set(labels) == {"namespace", "pod", "revision"}
        assert cpu == pytest.approx(state[name]["runningRequests"] / 32) and cpu == state[name]["cpuUtilization"]


def test_pod_exports_nothing_until_its_startup_delay_has_passed(client: TrafficClient, clock: Clock,
                                                                 source: FakeSource) -> None:
    source.current = [*source.current, pod("py-1", "python", llmd="py", ready_since=clock.now)]
    client.set_load(namespace=NS, name="py", rps=10)
    clock.now += 29
    assert "py-1" not in scrape(client)
    assert {p["pod"]: p["exporting"] for p in client.state()["pods"]}["py-1"] is False
    clock.now += 1
    assert "py-1" in scrape(client)
    clock.now += 10
    arrivals = {p["pod"]: p["arrivalRps"] for p in client.state()["pods"]}
    assert arrivals["py-0"] == arrivals["py-1"] == 5


def test_behaviours_through_the_api(client: TrafficClient, clock: Clock, source: FakeSource) -> None:
    source.current = [pod("a", "vllm", revision="r1"), pod("b", "vllm", revision="r2", image="reg/img:1.1-slow")]
    client.set_load(namespace=NS, name="llama", rps=4)
    assert {p["pod"]: p["behaviour"] for p in client.state()["pods"]} == {"a": "normal", "b": "slow"}
    result = client.set_behaviour(revision="r1", behaviour={"name": "broken", "errorRatio": 0.5})
    assert result["definition"] == {"ttftFactor": 1.0, "itlFactor": 1.0, "errorRatio": 0.5}
    client.set_behaviour(image_tag_suffix="-slow", behaviour="faulty")
    assert {p["pod"]: p["behaviour"] for p in client.state()["pods"]} == {"a": "broken", "b": "faulty"}
    clock.now += 120
    pods = scrape(client)
    errors = {p: {lbl["finished_reason"]: v for _, lbl, v in fams["vllm:request_success"]} for p, fams in pods.items()}
    assert errors["a"]["error"] / (errors["a"]["error"] + errors["a"]["stop"]) == pytest.approx(0.5)
    assert errors["b"]["error"] / (errors["b"]["error"] + errors["b"]["stop"]) == pytest.approx(0.2)
    client.set_behaviour(revision="r1", behaviour=None)
    assert client.state()["revisionBehaviours"] == {}


def test_control_api_refuses_bad_requests_with_the_reason(client: TrafficClient) -> None:
    cases = [
        ("/load", {"namespace": NS, "name": "x", "rps": -1}, "rps must be a finite number >= 0"),
        ("/load", {"namespace": NS, "name": "x", "rps": 1, "qps": 2}, "unknown field(s) qps"),
        ("/load", {"name": "x", "rps": 1}, "namespace must be a non-empty string"),
        ("/load", {"namespace": NS, "name": "x", "rps": "many"}, "rps must be a number"),
        ("/capacity", {"namespace": NS, "name": "x", "batchSlots": 2.5}, "batchSlots must be an integer"),
        ("/behaviour", {"revision": "r1", "behaviour": "sluggish"}, "unknown behaviour 'sluggish'"),
        ("/behaviour", {"behaviour": "slow"}, "exactly one of revision and imageTagSuffix"),
        ("/behaviour", {"revision": "r1", "behaviour": {"errorRatio": 2}}, "errorRatio must be within 0..1"),
        ("/slo", {"namespace": NS, "name": "x"}, "ttftSeconds is required"),
        ("/slo", {"namespace": NS, "name": "x", "ttftSeconds": 0}, "ttftSeconds must be a finite number > 0"),
        ("/slo", {"namespace": NS, "name": "x", "ttft": 2}, "unknown field(s) ttft"),
    ]
    for path, body, message in cases:
        with pytest.raises(TrafficClientError, match=re.escape(message)):
            client._put(path, body)
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(f"{client.base_url}/nope", timeout=5)
    assert info.value.code == 404
    req = urllib.request.Request(f"{client.base_url}/load", data=b"{not json", method="PUT")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(req, timeout=5)
    assert info.value.code == 400


def test_capacity_and_load_read_back_in_state(client: TrafficClient) -> None:
    client.set_capacity(namespace=NS, name="py", tokens_per_second=5000, batch_slots=64, max_queue=10)
    client.set_load(namespace=NS, name="py", rps=3)
    client.set_load(namespace=NS, name="py", rps=5)  # keeps the token means it had
    state = client.state()
    assert state["loads"] == [{"namespace": NS, "name": "py", "rps": 5.0, "promptTokens": 512.0,
                               "outputTokens": 256.0}]
    assert state["capacities"][0]["batchSlots"] == 64 and state["capacities"][0]["maxQueue"] == 10
    assert state["startupDelaySeconds"] == 30.0


def test_ttft_slo_tally_through_the_api(client: TrafficClient, clock: Clock, source: FakeSource) -> None:
    assert client.set_slo(namespace=NS, name="vl", ttft_seconds=2.0) == {"namespace": NS, "name": "vl",
                                                                         "ttftSeconds": 2.0}
    client.set_load(namespace=NS, name="vl", rps=4)
    clock.now += 60
    tallies = {t["name"]: t for t in client.state()["llmdeployments"]}
    vl = tallies["vl"]
    assert vl["ttftSloSeconds"] == 2.0
    assert vl["arrived"] == pytest.approx(240) and vl["admitted"] == pytest.approx(240, rel=1e-6)
    assert vl["ttftMet"] == pytest.approx(240, rel=1e-6) and vl["ttftMetShare"] == pytest.approx(1.0)
    assert vl["unserved"] == 0 and vl["rejected"] == 0
    assert tallies["py"]["ttftSloSeconds"] is None and tallies["py"]["ttftMetShare"] is None
    # Overload, then the pod goes: its counters go with it, the tally stays and counts the unserved requests.
    client.set_load(namespace=NS, name="vl", rps=30)
    clock.now += 60
    client.state()  # the model advances at each request, with the pods the source lists then
    source.current = [p for p in source.current if p.llmdeployment != "vl"]
    clock.now += 10
    vl = next(t for t in client.state()["llmdeployments"] if t["name"] == "vl")
    assert vl["arrived"] == pytest.approx(240 + 1800 + 300)
    assert vl["unserved"] == pytest.approx(300)
    assert vl["ttftMetShare"] < (240 + 100) / vl["arrived"]  # ~10/s served, nearly all of them late


def test_client_plays_a_profile(client: TrafficClient) -> None:
    now = [0.0]
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        now[0] += seconds

    steps = [Step(at=0, namespace=NS, name="py", rps=1), Step(at=30, namespace=NS, name="py", rps=8),
             Step(at=90, namespace=NS, name="py", rps=2, output_tokens=64)]
    client.play(steps, clock=lambda: now[0], sleep=sleep)
    assert sleeps == [30, 60]
    assert client.state()["loads"][0] == {"namespace": NS, "name": "py", "rps": 2.0, "promptTokens": 512.0,
                                          "outputTokens": 64.0}


def test_control_file_is_applied_and_reapplied_when_it_changes(tmp_path: Path, clock: Clock,
                                                                source: FakeSource) -> None:
    emulator = Emulator(model=TrafficModel(start=clock()), source=source, clock=clock)
    path = tmp_path / "traffic.yaml"
    path.write_text(
        "loads: [{namespace: team, name: py, rps: 3}]\n"
        "capacities: [{namespace: team, name: py, tokensPerSecond: 4000}]\n"
        "behaviours: [{imageTagSuffix: '-canary', behaviour: slow}]\n"
        "slos: [{namespace: team, name: py, ttftSeconds: 1.5}]\n"
    )
    control = ControlFile(path)
    assert control.poll(emulator)
    assert not control.poll(emulator)
    assert emulator.model.load_of(namespace=NS, name="py").rps == 3
    assert emulator.model.capacity_of(namespace=NS, name="py").tokens_per_second == 4000
    assert emulator.model.image_tag_suffixes["-canary"] == "slow"
    assert emulator.model.tally_of(namespace=NS, name="py").ttft_slo_seconds == 1.5
    path.write_text("loads: [{namespace: team, name: py, rps: 7}]\n")
    os.utime(path, (time.time() + 5, time.time() + 5))
    assert control.poll(emulator)
    assert emulator.model.load_of(namespace=NS, name="py").rps == 7


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_command_line_contract_serves_and_stops_cleanly(tmp_path: Path) -> None:
    """`python -m llm_operator.dev.traffic --kubeconfig KC --listen 127.0.0.1:PORT --startup-delay S` is what
    `llmctl dev up --metrics` runs. With an API server that is not there yet it still serves, and SIGTERM stops
    it with exit 0 and nothing left listening."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1", "insecure-skip-tls-verify": True}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
    }))
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "llm_operator.dev.traffic", "--kubeconfig", str(kubeconfig),
         "--listen", f"127.0.0.1:{port}", "--startup-delay", "5"],
        stderr=subprocess.PIPE, text=True,
    )
    try:
        client = TrafficClient(f"http://127.0.0.1:{port}", timeout=2)
        deadline = time.monotonic() + 30
        while not client.healthy():
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "the emulator did not answer /healthz within 30 s"
            time.sleep(0.2)
        assert client.metrics() == ""
        assert client.state()["startupDelaySeconds"] == 5.0
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err = proc.stderr.read() if proc.stderr else ""
    assert f"serving http://127.0.0.1:{port}/metrics" in err
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0
    bad = subprocess.run([sys.executable, "-m", "llm_operator.dev.traffic", "--listen", "localhost"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--listen must be HOST:PORT" in bad.stderr
