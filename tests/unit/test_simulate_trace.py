"""Traces: the Azure CSV as is, our own column names, the seeded generators, and errors that name line and field."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from llm_operator.simulate import trace
from llm_operator.simulate.trace import TraceError

REPO = Path(__file__).resolve().parents[2]
AZURE_HEADER = "TIMESTAMP,ContextTokens,GeneratedTokens\n"


def write(tmp_path: Path, text: str, name: str = "t.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_azure_format_is_read_as_is(tmp_path: Path) -> None:
    path = write(tmp_path, AZURE_HEADER + "2023-11-16 18:15:46.6805900,374,44\n"
                 "2023-11-16 18:15:50.9951690,396,109\n2023-11-16 18:15:51.2000000,879,0\n")
    t = trace.read_csv(path)
    assert len(t) == 3
    assert [round(x, 4) for x in t.times] == [0.0, 4.3146, 4.5194]
    assert list(t.prompt_tokens) == [374, 396, 879]
    assert list(t.output_tokens) == [44, 109, 1]  # 0 generated tokens still wait for a first response
    assert t.duration == 5.0


def test_shipped_example_traces_read(tmp_path: Path) -> None:
    shipped = sorted((REPO / "examples" / "traces").glob("*.csv"))
    assert shipped, "examples/traces/ has no CSV trace"
    for path in shipped:
        t = trace.read_csv(path)
        assert len(t) > 100 and t.duration > 60, path
        assert all(b >= a for a, b in zip(t.times, t.times[1:], strict=False)), path


def test_seconds_and_other_column_names_and_unsorted_rows(tmp_path: Path) -> None:
    path = write(tmp_path, "prompt_tokens,timestamp,output_tokens\n100,10.5,7\n200,3.0,8\n\n300,4,9\n")
    t = trace.read_csv(path)
    assert list(t.times) == [0.0, 1.0, 7.5]
    assert list(t.prompt_tokens) == [200, 300, 100]
    assert list(t.output_tokens) == [8, 9, 7]


@pytest.mark.parametrize(("text", "where"), [
    (AZURE_HEADER + "2023-11-16 18:15:46,374,44\n2023-11-16 18:15:47,abc,44\n", "line 3: ContextTokens: not a number"),
    (AZURE_HEADER + "2023-11-16 18:15:46,374,44\nyesterday,1,1\n", "line 3: TIMESTAMP: not a time"),
    (AZURE_HEADER + "2023-11-16 18:15:46,374,44\n2023-11-16 18:15:47,12\n", "line 3: expected 3 fields, got 2"),
    (AZURE_HEADER + "2023-11-16 18:15:46,374,-4\n", "line 2: GeneratedTokens: expected a whole number >= 0"),
    (AZURE_HEADER + "2023-11-16 18:15:46,37.5,4\n", "line 2: ContextTokens: expected a whole number"),
    ("TIMESTAMP,Input,GeneratedTokens\n1,2,3\n", "line 1: no prompt column"),
    (AZURE_HEADER, "no requests after the header"),
    ("", "empty file"),
])
def test_malformed_csv_names_the_line_and_field(tmp_path: Path, text: str, where: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(TraceError) as exc:
        trace.read_csv(path)
    assert str(path) in str(exc.value) and where in str(exc.value)


def test_missing_file_says_what_a_trace_can_be() -> None:
    with pytest.raises(TraceError, match="no such file, and not a generator spec"):
        trace.load("nope.csv")


def test_generators_are_seeded_and_follow_their_rate() -> None:
    a = trace.load("poisson:rps=5,duration=1h,seed=7")
    b = trace.load("poisson:rps=5,duration=1h,seed=7")
    c = trace.load("poisson:rps=5,duration=1h,seed=8")
    assert list(a.times) == list(b.times) and list(a.times) != list(c.times)
    assert abs(len(a) - 18000) < 4 * math.sqrt(18000)  # Poisson: mean 18000, sd 134
    assert a.duration == 3600.0 and max(a.times) < 3600.0

    uniform = trace.load("step:levels=0:2/60:10/120:0,duration=180,arrivals=uniform")
    assert len(uniform) == 120 + 600  # 2/s for 60 s, 10/s for 60 s, nothing after
    assert uniform.rate(start=0, end=60) == 2 and uniform.rate(start=60, end=120) == 10
    assert uniform.rate(start=120, end=180) == 0

    day = trace.load("diurnal:low=1,high=9,period=24h,seed=1")
    assert day.duration == 86400
    assert abs(day.rate(start=42000, end=44400) - 9) < 0.3  # the peak is at half the period
    assert abs(day.rate(start=0, end=1800) - 1) < 0.2

    bursts = trace.load("burst:base=1,peak=20,every=10m,length=1m,duration=1h,arrivals=uniform")
    assert bursts.rate(start=600, end=660) == 20 and bursts.rate(start=660, end=1200) == 1
    assert bursts.rate(start=0, end=600) == 1


def test_token_counts_constant_or_log_normal() -> None:
    same = trace.load("poisson:rps=2,duration=10m,prompt=300,output=100")
    assert set(same.prompt_tokens) == {300} and set(same.output_tokens) == {100}
    spread = trace.load("poisson:rps=20,duration=30m,prompt=300,output=100,spread=0.6,seed=3")
    assert len(set(spread.output_tokens)) > 50
    assert abs(spread.mean_output - 100) < 3 and abs(spread.mean_prompt - 300) < 8


@pytest.mark.parametrize(("spec", "message"), [
    ("poisson:duration=1h", "poisson: missing field rps"),
    ("poisson:rps=fast", "poisson: rps: not a number: 'fast'"),
    ("poisson:rps=2,colour=red", "poisson: unknown field 'colour'"),
    ("poisson:rps=2,duration=0", "poisson: duration: must be > 0"),
    ("poisson:rps=2,duration=soon", "poisson: duration: not a duration"),
    ("poisson:rps=2,arrivals=bursty", "poisson: arrivals: expected poisson or uniform"),
    ("poisson:rps=2,output=0", "poisson: output: must be >= 1"),
    ("step:levels=0:2/60", "step: levels: '60': expected T:RPS"),
    ("step:levels=60:2/30:5", "step: levels: times must increase"),
    ("diurnal:low=5,high=1", "diurnal: high (1) must be >= low (5)"),
    ("burst:base=1,peak=5,every=1m,length=2m", "burst: length (120 s) must not exceed every (60 s)"),
    ("poisson:rps", "poisson: 'rps': expected KEY=VALUE"),
])
def test_bad_generator_specs_name_the_field(spec: str, message: str) -> None:
    with pytest.raises(TraceError) as exc:
        trace.load(spec)
    assert message in str(exc.value)
