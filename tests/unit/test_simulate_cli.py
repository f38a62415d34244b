"""`llmctl simulate`: the command line, its outputs, and clear errors for bad input."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
from llm_operator.cli import main

REPO = Path(__file__).resolve().parents[2]
AUTOSCALED = str(REPO / "examples" / "qwen-7b-autoscaled.yaml")
PLAIN = str(REPO / "examples" / "llama-3.1-8b-1gpu.yaml")
STEP = str(REPO / "examples" / "traces" / "step-10m.csv")


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["simulate", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_table_has_a_row_per_policy_with_the_oracle_last(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "-f", AUTOSCALED, "--trace", STEP, "--policy", "fixed:2", "--policy", "cpu:70")
    assert code == 0, err
    rows = [line.split()[0] for line in out.splitlines()[3:7]]
    assert rows == ["spec", "fixed:2", "cpu:70", "oracle"]
    assert "SLO met" in out and "GPU-hours" in out and "vs oracle" in out and "2116 requests over 9.98 min" in out
    assert "  1.00x  " in out.splitlines()[6]
    assert "spec: HPA queueDepth 16, tokensPerSecond 1700; 2-6 replicas" in out


def test_json_output(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "-f", AUTOSCALED, "--trace", "poisson:rps=3,duration=10m,seed=1", "-o", "json",
                         "--slo-ttft", "500ms", "--timeline", "--policy", "hpa:queueDepth=2,tokensPerSecond=800")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["sloTtftSeconds"] == 0.5 and doc["llmDeployment"] == "qwen-7b"
    names = [p["name"] for p in doc["policies"]]
    assert names == ["spec", "hpa:queueDepth=2,tokensPerSecond=800", "oracle"]
    spec = doc["policies"][0]
    assert 0 <= spec["sloAttainment"] <= 1 and spec["gpuHours"] > 0 and spec["gpuHoursVsOracle"] >= 1
    assert {"ttftP50Seconds", "ttftP99Seconds", "scaleEvents", "maxQueue", "replicaChanges", "timeline"} <= set(spec)
    assert doc["profile"]["tokensPerSecond"] == 1208.0 and doc["timing"]["syncPeriod"] == 15.0
    assert doc["timing"]["scrapeInterval"] == 15.0  # the LLMDeployment's spec.monitoring.interval


def test_without_autoscaling_policies_must_be_given(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "-f", PLAIN, "--trace", STEP)
    assert code == 2
    assert "LLMDeployment llama-3-1-8b has no spec.autoscaling and no --policy was given" in err
    assert "--policy hpa:queueDepth=4,maxReplicas=8" in err
    # with one, it runs
    code, out, err = run(capsys, "-f", PLAIN, "--trace", STEP, "--policy", "hpa:queueDepth=4,maxReplicas=4",
                         "--no-oracle")
    assert code == 0, err
    assert [line.split()[0] for line in out.splitlines()[3:]][:1] == ["hpa:queueDepth=4,maxReplicas=4"]
    assert "oracle" not in out  # neither a row nor a "vs oracle" column


@pytest.mark.parametrize(("policy", "message"), [
    ("fastest", "unknown policy 'fastest': expected spec, oracle, fixed:N, cpu:PERCENT"),
    ("fixed:many", "fixed:many: expected fixed:N"),
    ("hpa:queueDepth=0", "hpa:queueDepth=0: spec.autoscaling: spec.autoscaling.metrics.queueDepth must be greater"),
    ("hpa:speed=3", "hpa:speed=3: unknown field 'speed'"),
    ("hpa:queueDepth=two", "hpa:queueDepth=two: queueDepth: not a number: 'two'"),
    ("hpa:up=pods:2", "up: 'pods:2': expected pods:N/PERIOD"),
    ("hpa:minReplicas=9", "minReplicas must be less than or equal to spec.autoscaling.maxReplicas"),
    ("cpu:70,replicas=3", "cpu:70,replicas=3: 'replicas=3': expected minReplicas=N or maxReplicas=N"),
    ("missing.yaml", "policy missing.yaml"),
])
def test_bad_policies_are_named(capsys: pytest.CaptureFixture[str], policy: str, message: str) -> None:
    code, _, err = run(capsys, "-f", AUTOSCALED, "--trace", STEP, "--policy", policy)
    assert code == 2
    assert message in err, err


def test_cpu_policy_without_autoscaling_needs_a_maximum(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "-f", PLAIN, "--trace", STEP, "--policy", "cpu:70")
    assert code == 2 and "cpu:70: maxReplicas is needed" in err and "cpu:70,maxReplicas=8" in err


def test_malformed_trace_names_line_and_field(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:00:00,10,5\n2023-11-16 18:00:01,ten,5\n")
    code, _, err = run(capsys, "-f", AUTOSCALED, "--trace", str(bad))
    assert code == 2 and f"{bad}: line 3: ContextTokens: not a number: 'ten'" in err
    code, _, err = run(capsys, "-f", AUTOSCALED, "--trace", "burst:base=2")
    assert code == 2 and "burst: missing field peak" in err


@pytest.mark.parametrize(("args", "message"), [
    (["--slo-ttft", "soon"], "--slo-ttft: not a duration: 'soon'"),
    (["--slo-ttft", "0s"], "--slo-ttft must be > 0"),
    (["--tokens-per-second", "0"], "tokensPerSecond must be > 0"),
    (["--sync-period", "0.5", "--step", "1"], "sync-period (0.5 s) must be at least the simulation step"),
    (["--initial-replicas", "0"], "--initial-replicas must be >= 1"),
])
def test_bad_flags_are_named(capsys: pytest.CaptureFixture[str], args: list[str], message: str) -> None:
    code, _, err = run(capsys, "-f", AUTOSCALED, "--trace", STEP, *args)
    assert code == 2 and message in err, err


def test_profile_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    good = tmp_path / "h100.yaml"
    good.write_text("tokensPerSecond: 2500\nbatchSlots: 64\nstartupSeconds: 30\n")
    code, out, err = run(capsys, "-f", AUTOSCALED, "--trace", STEP, "--profile", str(good), "-o", "json")
    assert code == 0, err
    profile = json.loads(out)["profile"]
    assert (profile["tokensPerSecond"], profile["batchSlots"], profile["startupSeconds"]) == (2500, 64, 30)
    bad = tmp_path / "bad.yaml"
    bad.write_text("tokensPerSecnd: 2500\n")
    code, _, err = run(capsys, "-f", AUTOSCALED, "--trace", STEP, "--profile", str(bad))
    assert code == 2 and "unknown field 'tokensPerSecnd'" in err


def test_file_with_several_llmdeployments_needs_a_name(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    both = tmp_path / "both.yaml"
    both.write_text(Path(AUTOSCALED).read_text() + "---\n" + Path(PLAIN).read_text())
    code, _, err = run(capsys, "-f", str(both), "--trace", STEP)
    assert code == 2 and "holds 2 LLMDeployments (qwen-7b, llama-3-1-8b): choose one with --name" in err
    code, _, err = run(capsys, "-f", str(both), "--trace", STEP, "--name", "llama-3-1-8b", "--policy", "fixed:1")
    assert code == 0, err


def test_plot_without_matplotlib_says_how_to_install_it(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    code, out, err = run(capsys, "-f", AUTOSCALED, "--trace", STEP, "--plot", str(tmp_path / "p.png"))
    assert code == 2 and out == ""
    assert "--plot needs matplotlib" in err and "pip install 'triton-llm-operator[bench]'" in err
    assert not (tmp_path / "p.png").exists()


def test_plot_writes_a_png_when_matplotlib_is_installed(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    # matplotlib is in the `bench` extra, not `dev`: without it this asserts the error path instead of skipping
    png = tmp_path / "p.png"
    code, _, err = run(capsys, "-f", AUTOSCALED, "--trace", STEP, "--plot", str(png))
    if importlib.util.find_spec("matplotlib") is None:
        assert code == 2 and "pip install 'triton-llm-operator[bench]'" in err
        return
    assert code == 0, err
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert f"wrote {png}" in err


def test_simulate_without_plot_never_imports_matplotlib(capsys: pytest.CaptureFixture[str],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    code, _, err = run(capsys, "-f", AUTOSCALED, "--trace", STEP)
    assert code == 0, err
