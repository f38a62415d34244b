"""The canary analysis against real engines: its PromQL run by promtool (Prometheus's own engine) on the
shipped recording rules, and its HTTP client against a local server that answers like Prometheus, or fails.

The series: namespace `team`, a stable revision on the python backend (2 pods), a canary on vLLM (1 pod,
slower and with 20 % errors), an idle revision (pods, no requests), a hung one (requests running, no tokens), and
a python canary whose OpenAI front answers 30 % of the requests with a 5xx of its own (its Triton unreachable:
the model's counters never see those requests, only the front's `source="front"` counter does).
Counters grow by a constant amount every 15 s, so rate(...[1m]) is that amount / 15.
"""

from __future__ import annotations

import json
import math
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
import yaml
from llm_operator import api, metrics
from llm_operator.rollout._prometheus import PrometheusError, query
from llm_operator.rollout.analysis import measure, promql

STEPS = "x40"  # 10 minutes of samples


def series(name: str, pod: str, revision: str, per_step: float, gauge: bool = False, **labels: str) -> dict[str, str]:
    extra = "".join(f',{k}="{v}"' for k, v in labels.items())
    values = f"{per_step}+0{STEPS}" if gauge else f"0+{per_step}{STEPS}"
    return {"series": f'{name}{{namespace="team",pod="{pod}",revision="{revision}"{extra}}}', "values": values}


def python_pod(pod: str, revision: str, *, queue: float, running: float, tokens: float, ttft: dict[str, float],
               itl: tuple[float, float], finished: float, failed: float) -> list[dict[str, str]]:
    """Per-15 s increments of llm_runtime's series (runtime/llm_runtime/metrics.py)."""
    s = metrics.PythonSeries
    return [
        series(s.QUEUE_DEPTH, pod, revision, queue, gauge=True),
        series(s.RUNNING_REQUESTS, pod, revision, running, gauge=True),
        series(s.GENERATION_TOKENS, pod, revision, tokens),
        *(series(f"{s.TTFT}_bucket", pod, revision, n, le=le) for le, n in ttft.items()),
        series(f"{s.INTER_TOKEN_LATENCY}_sum", pod, revision, itl[0]),
        series(f"{s.INTER_TOKEN_LATENCY}_count", pod, revision, itl[1]),
        series(s.REQUESTS_FINISHED, pod, revision, finished),
        series(s.REQUESTS_REJECTED, pod, revision, 0),
        series(s.REQUESTS_FAILED, pod, revision, failed),
    ]


def front(pod: str, revision: str, *, failed: float, rejected: float = 0) -> list[dict[str, str]]:
    """Per-15 s increments of the OpenAI front's own counters (llm_runtime/front_metrics.py)."""
    s = metrics.FrontSeries
    return [
        series(s.REQUESTS_FAILED, pod, revision, failed, source=s.SOURCE),
        series(s.REQUESTS_REJECTED, pod, revision, rejected, source=s.SOURCE),
    ]


def vllm_pod(pod: str, revision: str, *, queue: float, running: float, tokens: float, ttft: dict[str, float],
             itl: tuple[float, float], stopped: float, errors: float) -> list[dict[str, str]]:
    s = metrics.VLLMSeries
    return [
        series(s.QUEUE_DEPTH, pod, revision, queue, gauge=True),
        series(s.RUNNING_REQUESTS, pod, revision, running, gauge=True),
        series(s.GENERATION_TOKENS, pod, revision, tokens),
        *(series(f"{s.TTFT}_bucket", pod, revision, n, le=le) for le, n in ttft.items()),
        series(f"{s.INTER_TOKEN_LATENCY}_sum", pod, revision, itl[0]),
        series(f"{s.INTER_TOKEN_LATENCY}_count", pod, revision, itl[1]),
        series(s.REQUEST_SUCCESS, pod, revision, stopped, finished_reason="stop"),
        series(s.REQUEST_SUCCESS, pod, revision, errors, finished_reason="error"),
    ]


# Stable, per pod and second: 1200 tokens, 1 request, 0.01 errors, ITL 0.75/15 = 0.05 s; TTFT buckets
# (cumulative per s) 0.25: 0.5, 0.5: 0.9, 1: 1. The revision's 2 pods sum to 1, 1.8, 2: p50 is rank 1, the top
# of the 0.25 bucket (0.25); p95 is rank 1.9, halfway through the 0.5-1 bucket (0.75).
STABLE = [pod for name in ("py-1", "py-2") for pod in python_pod(
    name, "rstable", queue=1, running=4, tokens=18000, ttft={"0.25": 7.5, "0.5": 13.5, "1": 15, "+Inf": 15},
    itl=(0.75, 15), finished=15, failed=0.15)]
# Canary: 310 tokens/s, 1 request/s of which 0.2 errors, ITL 1.5/15 = 0.1 s; TTFT buckets 1: 0, 2: 0.5, 4: 1:
# p50 is rank 0.5, the top of the 1-2 bucket (2); p95 is rank 0.95, 90 % through the 2-4 bucket (3.8).
CANARY = vllm_pod("vllm-1", "rcanary", queue=2, running=6, tokens=4650,
                  ttft={"1": 0, "2": 7.5, "4": 15, "+Inf": 15}, itl=(1.5, 15), stopped=12, errors=3)
IDLE = python_pod("py-idle", "ridle", queue=0, running=0, tokens=0, ttft={"0.25": 0, "+Inf": 0}, itl=(0, 0),
                  finished=0, failed=0)
# 1 request/s: 0.7 answered by the model, 0.3 answered 503 by the front itself (Triton unreachable).
FRONT_DOWN = [*python_pod("py-front", "rfront", queue=0, running=1, tokens=100, ttft={"0.25": 10.5, "+Inf": 10.5},
                          itl=(0.5, 10.5), finished=10.5, failed=0),
              *front("py-front", "rfront", failed=4.5)]
HUNG = python_pod("py-hung", "rhung", queue=3, running=4, tokens=0, ttft={"0.25": 0, "+Inf": 0}, itl=(0, 0),
                  finished=0, failed=0)

RUNNING = api.AnalysisCheck(metric="custom", query='sum(llmops:revision:running_requests{namespace="$namespace",'
                                                   'revision="$revision"})', max=100)


def builtin(metric: api.AnalysisMetric) -> api.AnalysisCheck:
    return api.AnalysisCheck(metric=metric, max=1)


# Hand-computed from the series above. promtool compares exactly, so the two values that carry float rounding
# (rates of 13.5/15 and 0.15/15) are written as the engine computes them.
EXPECTED: list[tuple[api.AnalysisCheck, str, float | None]] = [
    (builtin("ttftP95"), "rstable", 0.7499999999999998),  # 0.75
    (builtin("ttftP95"), "rcanary", 3.8),
    (builtin("ttftP95"), "ridle", None),
    (builtin("ttftP50"), "rstable", 0.25),
    (builtin("ttftP50"), "rcanary", 2),
    (builtin("errorRate"), "rstable", 0.009999999999999993),  # 0.01
    (builtin("errorRate"), "rcanary", 0.2),
    (builtin("errorRate"), "ridle", None),  # no request ended: no ratio, not 0
    (builtin("errorRate"), "rfront", 0.3),  # what clients saw: the front's own 5xx count
    (builtin("interTokenLatency"), "rstable", 0.05),
    (builtin("interTokenLatency"), "rcanary", 0.1),
    (builtin("interTokenLatency"), "ridle", None),
    (builtin("tokensPerSecondPerReplica"), "rstable", 1200),
    (builtin("tokensPerSecondPerReplica"), "rcanary", 310),
    (builtin("tokensPerSecondPerReplica"), "ridle", None),  # no work: no data, so no false throughput failure
    (builtin("tokensPerSecondPerReplica"), "rhung", 0),  # work but no tokens: a real 0
    (builtin("tokensPerSecondPerReplica"), "rmissing", None),
    (RUNNING, "rstable", 8),
    (RUNNING, "rcanary", 6),
]


def promtool() -> str:
    path = shutil.which("promtool")
    assert path, "promtool is missing: apt-get install -y --no-install-recommends prometheus"
    return path


def test_the_analysis_queries_on_the_shipped_rules(tmp_path: Path) -> None:
    tests = [{"expr": promql(check, namespace="team", revision=revision), "eval_time": "5m",
              "exp_samples": [] if value is None else [{"labels": "{}", "value": value}]}
             for check, revision, value in EXPECTED]
    doc = {"rule_files": [str(metrics.RULES_PATH)], "evaluation_interval": "15s",
           "tests": [{"name": "canary analysis", "interval": "15s",
                      "input_series": STABLE + CANARY + IDLE + HUNG + FRONT_DOWN,
                      "promql_expr_test": tests}]}
    path = tmp_path / "analysis_test.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    result = subprocess.run([promtool(), "test", "rules", str(path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


# ------------------------------------------------------------------------------------------ HTTP client

VECTOR_ONE = {"status": "success", "data": {"resultType": "vector", "result": [
    {"metric": {}, "value": [1700000000.0, "0.25"]}]}}
ANSWERS: dict[str, tuple[int, Any]] = {
    "one": (200, VECTOR_ONE),
    "empty": (200, {"status": "success", "data": {"resultType": "vector", "result": []}}),
    "nan": (200, {"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": {}, "value": [1700000000.0, "NaN"]}]}}),
    "scalar": (200, {"status": "success", "data": {"resultType": "scalar", "result": [1700000000.0, "3"]}}),
    "two": (200, {"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": {"pod": "a"}, "value": [1, "1"]}, {"metric": {"pod": "b"}, "value": [1, "2"]}]}}),
    "matrix": (200, {"status": "success", "data": {"resultType": "matrix", "result": []}}),
    "bad": (400, {"status": "error", "errorType": "bad_data", "error": "1:5: parse error: unexpected <EOF>"}),
    "boom": (500, "oops"),
    "notjson": (200, "<html>hello</html>"),
    "malformed": (200, {"status": "success", "data": {"resultType": "vector", "result": [{"metric": {}}]}}),
}


class FakePrometheus(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.requests: list[tuple[str, dict[str, list[str]]]] = []
        self.release = threading.Event()

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class Handler(BaseHTTPRequestHandler):
    server: FakePrometheus

    def do_GET(self) -> None:
        url = urlparse(self.path)
        params = parse_qs(url.query)
        self.server.requests.append((url.path, params))
        promql = params["query"][0]
        if promql == "slow":
            self.server.release.wait(10)
        status, body = ANSWERS.get(promql, (200, VECTOR_ONE))
        data = (body if isinstance(body, str) else json.dumps(body)).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass


@pytest.fixture
def prometheus() -> Iterator[FakePrometheus]:
    server = FakePrometheus()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.release.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_a_value_comes_back_from_api_v1_query(prometheus: FakePrometheus) -> None:
    assert query(prometheus.address + "/", "one", timeout=2) == 0.25
    assert prometheus.requests == [("/api/v1/query", {"query": ["one"], "timeout": ["2"]})]


@pytest.mark.parametrize(("promql", "value"), [("empty", None), ("scalar", 3.0)])
def test_empty_and_scalar_answers(prometheus: FakePrometheus, promql: str, value: float | None) -> None:
    assert query(prometheus.address, promql, timeout=2) == value


def test_nan_comes_back_as_nan(prometheus: FakePrometheus) -> None:
    value = query(prometheus.address, "nan", timeout=2)
    assert value is not None and math.isnan(value)


@pytest.mark.parametrize(("promql", "message"), [
    ("two", "the query returned 2 series, a check needs one number (aggregate it, e.g. with sum or max): two"),
    ("matrix", "the query returned a matrix, a check needs one number: matrix"),
    ("bad", "HTTP 400 Bad Request: bad_data: 1:5: parse error: unexpected <EOF>"),
    ("boom", "HTTP 500 Internal Server Error: oops"),
    ("notjson", "the answer is not JSON (is the address a Prometheus?)"),
    ("malformed", 'malformed answer: {"status": "success", "data": {"resultType": "vector", "result": [{"metric": '
                  '{}}]}}'),
])
def test_answers_that_are_not_one_number_are_errors(prometheus: FakePrometheus, promql: str, message: str) -> None:
    with pytest.raises(PrometheusError) as e:
        query(prometheus.address, promql, timeout=2)
    assert str(e.value) == message


def test_a_slow_prometheus_times_out(prometheus: FakePrometheus) -> None:
    with pytest.raises(PrometheusError) as e:
        query(prometheus.address, "slow", timeout=0.3)
    assert str(e.value) == "timed out after 0.3s"


def test_a_refused_connection() -> None:
    with socket.socket() as s:  # a port that was free a moment ago, and has no listener now
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(PrometheusError) as e:
        query(f"http://127.0.0.1:{port}", "one", timeout=2)
    assert str(e.value) == "connection refused"


def test_measure_through_http(prometheus: FakePrometheus) -> None:
    def analysis(*queries: str) -> api.CanaryAnalysis:
        return api.CanaryAnalysis(
            prometheus=api.PrometheusSource(address=prometheus.address, timeout="2s"),
            checks=[api.AnalysisCheck(metric="custom", query=q, max_ratio_to_stable=1.3) for q in queries])

    ok = measure(analysis("one"), namespace="team", canary_revision="rc", stable_revision="rs")
    assert (ok.phase, ok.message) == ("Successful", "custom canary 0.25 vs stable 0.25, ratio 1 <= 1.3")
    failed = measure(analysis("one", "boom"), namespace="team", canary_revision="rc", stable_revision="rs")
    assert failed.phase == "Error"
    assert failed.message == (f"Prometheus at {prometheus.address} could not be queried (custom, canary): "
                              "HTTP 500 Internal Server Error: oops")
