"""The canary analysis rules, without a Prometheus: PromQL text, verdicts and their messages, measurements,
and the status counters. Every expected value here is worked out by hand; the PromQL is run by the real engine
in tests/unit/test_analysis_promql.py."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from llm_operator import api
from llm_operator.rollout._prometheus import PrometheusError
from llm_operator.rollout.analysis import (
    CheckVerdict,
    Measurement,
    advance,
    due,
    evaluate,
    measure,
    next_due,
    parse_duration,
    promql,
    summarize,
)

NOW = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)


def check(metric: api.AnalysisMetric = "ttftP95", **bounds: Any) -> api.AnalysisCheck:
    return api.AnalysisCheck(metric=metric, **bounds)


# ------------------------------------------------------------------------------------------ PromQL


SEL = '{namespace="team",revision="rabc"}'


@pytest.mark.parametrize(("metric", "expected"), [
    ("ttftP95", f"max(llmops:revision:ttft_seconds:p95{SEL})"),
    ("ttftP50", f"max(llmops:revision:ttft_seconds:p50{SEL})"),
    ("errorRate", f"max(llmops:revision:request_error_ratio:rate1m{SEL})"),
    ("interTokenLatency", f"max(llmops:revision:inter_token_latency_seconds:mean1m{SEL})"),
    ("tokensPerSecondPerReplica",
     f"sum(llmops:revision:generation_tokens:rate1m{SEL}) / sum(llmops:revision:pods{SEL}) and on () "
     f"(sum(llmops:revision:requests:rate1m{SEL}) > 0 or sum(llmops:revision:running_requests{SEL}) > 0 "
     f"or sum(llmops:revision:queue_depth{SEL}) > 0)"),
])
def test_builtin_queries(metric: api.AnalysisMetric, expected: str) -> None:
    assert promql(check(metric, max=1), namespace="team", revision="rabc") == expected


def test_custom_query_gets_revision_and_namespace() -> None:
    c = check("custom", query='sum(x{ns="$namespace",rev="$revision"}) / sum(y{rev="$revision",k="$revision_x"})',
              max=1)
    assert promql(c, namespace="team", revision="r1") == \
        'sum(x{ns="team",rev="r1"}) / sum(y{rev="r1",k="$revision_x"})'


@pytest.mark.parametrize("value", ['a"b', "A", "-a", "a-", "", "a b", "r1}"])
def test_label_values_that_could_break_the_quotes_are_refused(value: str) -> None:
    with pytest.raises(ValueError, match="label value"):
        promql(check(max=1), namespace="team", revision=value)
    with pytest.raises(ValueError, match="label value"):
        promql(check("custom", query="x", max=1), namespace=value, revision="r1")


# ------------------------------------------------------------------------------------------ verdicts


@pytest.mark.parametrize(("c", "canary", "stable", "phase", "message"), [
    # The three messages of the brief, to the character.
    (check(max_ratio_to_stable=1.3), 2.41, 0.82, "Failed", "ttftP95 canary 2.41s vs stable 0.82s, ratio 2.94 > 1.3"),
    (check("errorRate", max=0.01), 0.2, None, "Failed", "errorRate canary 0.2 > max 0.01"),
    (check("tokensPerSecondPerReplica", min_ratio_to_stable=0.8), 310, 1200, "Failed",
     "tokensPerSecondPerReplica canary 310 vs stable 1200, ratio 0.26 < 0.8"),
    # Passing: the same shape with the other operator.
    (check(max_ratio_to_stable=1.3), 0.9, 0.82, "Successful",
     "ttftP95 canary 0.9s vs stable 0.82s, ratio 1.1 <= 1.3"),
    (check("errorRate", max=0.01), 0.001, None, "Successful", "errorRate canary 0.001 <= max 0.01"),
    (check("tokensPerSecondPerReplica", min_ratio_to_stable=0.8), 1100, 1200, "Successful",
     "tokensPerSecondPerReplica canary 1100 vs stable 1200, ratio 0.92 >= 0.8"),
    (check("tokensPerSecondPerReplica", min=500), 310, None, "Failed",
     "tokensPerSecondPerReplica canary 310 < min 500"),
    (check("interTokenLatency", max=0.05), 0.04, None, "Successful", "interTokenLatency canary 0.04s <= max 0.05s"),
    (check("ttftP50", min_ratio_to_stable=0.5), 0.2, 0.5, "Failed",
     "ttftP50 canary 0.2s vs stable 0.5s, ratio 0.4 < 0.5"),
    # Bounds are inclusive.
    (check("errorRate", max=0.01), 0.01, None, "Successful", "errorRate canary 0.01 <= max 0.01"),
    (check(max_ratio_to_stable=1.5), 1.5, 1.0, "Successful", "ttftP95 canary 1.5s vs stable 1s, ratio 1.5 <= 1.5"),
    # Just beyond a bound prints enough digits to show it.
    (check(max=1.3), 1.304, None, "Failed", "ttftP95 canary 1.304s > max 1.3s"),
    (check(max_ratio_to_stable=1.3), 1.304, 1.0, "Failed", "ttftP95 canary 1.3s vs stable 1s, ratio 1.304 > 1.3"),
    # Every bound is judged; the failing ones are quoted, all of them.
    (check(max=3, max_ratio_to_stable=1.3), 2.41, 0.82, "Failed",
     "ttftP95 canary 2.41s vs stable 0.82s, ratio 2.94 > 1.3"),
    (check(max=2, max_ratio_to_stable=1.3), 2.41, 0.82, "Failed",
     "ttftP95 canary 2.41s > max 2s; ttftP95 canary 2.41s vs stable 0.82s, ratio 2.94 > 1.3"),
    (check("custom", query="x", min=1, max=5), 3, None, "Successful",
     "custom canary 3 <= max 5; custom canary 3 >= min 1"),
    (check("custom", query="x", min=1, max=5), 0.5, None, "Failed", "custom canary 0.5 < min 1"),
    (check("custom", query="x", max=1e-4), 1.23e-5, None, "Successful", "custom canary 0.0000123 <= max 0.0001"),
    # No data.
    (check(max_ratio_to_stable=1.3), None, 0.82, "Inconclusive", "ttftP95 no data for the canary"),
    (check("errorRate", max=0.01), math.nan, None, "Inconclusive", "errorRate no data for the canary"),
    (check(max_ratio_to_stable=1.3), 2.41, None, "Inconclusive", "ttftP95 no data for the stable revision"),
    (check(max_ratio_to_stable=1.3), 2.41, math.nan, "Inconclusive", "ttftP95 no data for the stable revision"),
    (check(max_ratio_to_stable=1.3), 2.41, 0.0, "Inconclusive", "ttftP95 stable is 0s, no ratio"),
    (check("tokensPerSecondPerReplica", min_ratio_to_stable=0.8), 300, 0, "Inconclusive",
     "tokensPerSecondPerReplica stable is 0, no ratio"),
    # A broken absolute bound is evidence even without a stable value; a kept one is not a success without it.
    (check(max=2, max_ratio_to_stable=1.3), 2.41, None, "Failed", "ttftP95 canary 2.41s > max 2s"),
    (check(max=3, max_ratio_to_stable=1.3), 2.41, None, "Inconclusive", "ttftP95 no data for the stable revision"),
    # Without a ratio bound the stable value does not matter.
    (check("errorRate", max=0.01), 0.001, math.nan, "Successful", "errorRate canary 0.001 <= max 0.01"),
])
def test_verdict(c: api.AnalysisCheck, canary: float | None, stable: float | None, phase: str, message: str) -> None:
    v = evaluate(c, canary=canary, stable=stable)
    assert (v.phase, v.message) == (phase, message)
    assert v.metric == c.metric


def test_verdict_keeps_the_values_for_status_and_drops_what_json_cannot_hold() -> None:
    v = evaluate(check(max_ratio_to_stable=1.3), canary=2.41, stable=0.82)
    assert (v.canary, v.stable) == (2.41, 0.82)
    item = v.to_status()
    assert item == {"metric": "ttftP95", "phase": "Failed", "canary": 2.41, "stable": 0.82,
                    "message": "ttftP95 canary 2.41s vs stable 0.82s, ratio 2.94 > 1.3"}
    assert api.CheckResult.model_validate(item).canary == 2.41
    nan = evaluate(check("errorRate", max=0.01), canary=math.nan, stable=math.nan)
    assert (nan.canary, nan.stable) == (None, None)
    inf = CheckVerdict("custom", "Failed", "x" * 600, math.inf, -math.inf).to_status()
    assert "canary" not in inf and "stable" not in inf and len(inf["message"]) == 512
    api.CheckResult.model_validate(inf)


# ------------------------------------------------------------------------------------------ measurement


def verdict(phase: Any, message: str = "") -> CheckVerdict:
    return CheckVerdict("ttftP95", phase, message or phase)


@pytest.mark.parametrize(("phases", "expected", "message"), [
    (["Successful", "Successful"], "Successful", "Successful"),
    (["Successful", "Inconclusive"], "Inconclusive", "Inconclusive"),
    (["Inconclusive", "Failed", "Successful"], "Failed", "Failed"),
    (["Failed", "Error"], "Error", "Error"),
    ([], "Inconclusive", "no checks"),
])
def test_a_measurement_is_its_worst_check(phases: list[str], expected: str, message: str) -> None:
    m = summarize([verdict(p) for p in phases])
    assert (m.phase, m.message) == (expected, message)


def test_the_measurement_message_quotes_every_deciding_check_once() -> None:
    m = summarize([verdict("Failed", "a"), verdict("Successful", "b"), verdict("Failed", "c"), verdict("Failed", "a")])
    assert m.message == "a; c"


class FakePrometheus:
    """Answers from a table keyed by (metric name in the query, revision); records the calls."""

    def __init__(self, values: dict[tuple[str, str], float | None], fail_on: str | None = None) -> None:
        self.values, self.fail_on = values, fail_on
        self.calls: list[tuple[str, str, float]] = []

    def __call__(self, address: str, query: str, /, *, timeout: float) -> float | None:
        self.calls.append((address, query, timeout))
        if self.fail_on and self.fail_on in query:
            raise PrometheusError("connection refused")
        for (name, revision), value in self.values.items():
            if name in query and f'revision="{revision}"' in query:
                return value
        return None


def analysis(*checks: api.AnalysisCheck, timeout: str = "10s") -> api.CanaryAnalysis:
    return api.CanaryAnalysis(prometheus=api.PrometheusSource(address="http://prom:9090", timeout=timeout),
                              checks=list(checks))


ISSUE_CHECKS = (check(max_ratio_to_stable=1.3), check("errorRate", max=0.01),
                check("tokensPerSecondPerReplica", min_ratio_to_stable=0.8))


def test_measure_queries_stable_only_for_ratio_bounds() -> None:
    prom = FakePrometheus({("ttft_seconds:p95", "rc"): 0.9, ("ttft_seconds:p95", "rs"): 0.82,
                           ("request_error_ratio", "rc"): 0.001, ("generation_tokens", "rc"): 1100,
                           ("generation_tokens", "rs"): 1200})
    m = measure(analysis(*ISSUE_CHECKS, timeout="1m30s"), namespace="team", canary_revision="rc",
                stable_revision="rs", query=prom)
    assert m.phase == "Successful"
    assert [v.phase for v in m.checks] == ["Successful"] * 3
    queried = [(q.split("{", 1)[0], 'revision="rs"' in q) for _, q, _ in prom.calls]
    assert queried == [("max(llmops:revision:ttft_seconds:p95", False), ("max(llmops:revision:ttft_seconds:p95", True),
                       ("max(llmops:revision:request_error_ratio:rate1m", False),
                       ("sum(llmops:revision:generation_tokens:rate1m", False),
                       ("sum(llmops:revision:generation_tokens:rate1m", True)]
    assert {(a, t) for a, _, t in prom.calls} == {("http://prom:9090", 90.0)}


def test_measure_fails_on_the_issues_faulty_and_slow_canaries() -> None:
    faulty = FakePrometheus({("ttft_seconds:p95", "rc"): 0.8, ("ttft_seconds:p95", "rs"): 0.8,
                             ("request_error_ratio", "rc"): 0.2, ("generation_tokens", "rc"): 1200,
                             ("generation_tokens", "rs"): 1200})
    m = measure(analysis(*ISSUE_CHECKS), namespace="team", canary_revision="rc", stable_revision="rs", query=faulty)
    assert (m.phase, m.message) == ("Failed", "errorRate canary 0.2 > max 0.01")
    slow = FakePrometheus({("ttft_seconds:p95", "rc"): 2.41, ("ttft_seconds:p95", "rs"): 0.82,
                           ("request_error_ratio", "rc"): 0.0, ("generation_tokens", "rc"): 1200,
                           ("generation_tokens", "rs"): 1200})
    m = measure(analysis(*ISSUE_CHECKS), namespace="team", canary_revision="rc", stable_revision="rs", query=slow)
    assert (m.phase, m.message) == ("Failed", "ttftP95 canary 2.41s vs stable 0.82s, ratio 2.94 > 1.3")


def test_measure_without_data_is_inconclusive() -> None:
    m = measure(analysis(*ISSUE_CHECKS), namespace="team", canary_revision="rc", stable_revision="rs",
                query=FakePrometheus({("request_error_ratio", "rc"): 0.0}))
    assert m.phase == "Inconclusive"
    assert m.message == ("ttftP95 no data for the canary; tokensPerSecondPerReplica no data for the canary")


@pytest.mark.parametrize(("fail_on", "role", "calls"), [
    ("request_error_ratio", "canary", 3),  # ttft canary + stable, then errorRate canary: and no more
    ('revision="rs"', "stable", 2),
])
def test_a_prometheus_error_makes_the_whole_measurement_an_error(fail_on: str, role: str, calls: int) -> None:
    prom = FakePrometheus({("ttft_seconds:p95", "rc"): 0.9, ("ttft_seconds:p95", "rs"): 0.82}, fail_on=fail_on)
    m = measure(analysis(*ISSUE_CHECKS), namespace="team", canary_revision="rc", stable_revision="rs", query=prom)
    metric = "errorRate" if role == "canary" else "ttftP95"
    expected = f"Prometheus at http://prom:9090 could not be queried ({metric}, {role}): connection refused"
    assert (m.phase, m.message) == ("Error", expected)
    assert [(v.metric, v.phase, v.canary) for v in m.checks] == [(c.metric, "Error", None) for c in ISSUE_CHECKS]
    assert len(prom.calls) == calls


# ------------------------------------------------------------------------------------------ status


def measurement(phase: Any) -> Measurement:
    return summarize([verdict(phase)])


def test_counters_and_phase_through_a_run() -> None:
    status: dict[str, Any] | None = None
    seen = []
    for i, phase in enumerate(["Successful", "Failed", "Inconclusive", "Inconclusive", "Error", "Inconclusive",
                               "Successful", "Error", "Error", "Failed", "Failed", "Successful"]):
        status = advance(status, measurement(phase), failure_limit=2, inconclusive_limit=1,
                         now=NOW + timedelta(minutes=i))
        seen.append((status["phase"], status["failed"], status["inconclusive"], status["errors"]))
    assert seen == [
        ("Running", 0, 0, 0),
        ("Running", 1, 0, 0),
        ("Running", 1, 1, 0),
        ("Inconclusive", 1, 2, 0),  # 2 in a row > limit 1
        ("Error", 1, 2, 1),  # an error neither ends nor extends the run without data
        ("Inconclusive", 1, 3, 0),
        ("Running", 1, 0, 0),
        ("Error", 1, 0, 1),
        ("Error", 1, 0, 2),
        ("Running", 2, 0, 0),  # failed counts in total, not in a row
        ("Failed", 3, 0, 0),  # 3 > failureLimit 2
        ("Failed", 3, 0, 0),  # and stays failed
    ]
    assert status is not None and status["measurements"] == 12
    assert status["lastMeasuredAt"] == "2025-03-01T12:11:00Z"


def test_status_has_the_api_shape() -> None:
    m = summarize([evaluate(check(max_ratio_to_stable=1.3), canary=2.41, stable=0.82)])
    status = advance(None, m, failure_limit=2, inconclusive_limit=3, now=NOW)
    assert status == {"phase": "Running", "measurements": 1, "failed": 1, "inconclusive": 0, "errors": 0,
                      "lastMeasuredAt": "2025-03-01T12:00:00Z",
                      "checks": [{"metric": "ttftP95", "phase": "Failed", "canary": 2.41, "stable": 0.82,
                                  "message": "ttftP95 canary 2.41s vs stable 0.82s, ratio 2.94 > 1.3"}]}
    parsed = api.AnalysisStatus.model_validate(status)
    assert parsed.model_dump(by_alias=True, exclude_none=True) == status


def test_failure_limit_zero_aborts_at_the_first_failure() -> None:
    status = advance(None, measurement("Failed"), failure_limit=0, inconclusive_limit=0, now=NOW)
    assert status["phase"] == "Failed"


@pytest.mark.parametrize("now", [
    datetime(2025, 3, 1, 12, 0, 0, 999999, tzinfo=UTC),
    datetime(2025, 3, 1, 14, 0, 0, tzinfo=timezone(timedelta(hours=2))),
    datetime(2025, 3, 1, 12, 0, 0),  # naive: UTC, as everywhere in the operator
])
def test_last_measured_at_is_rfc3339_utc(now: datetime) -> None:
    status = advance(None, measurement("Successful"), failure_limit=2, inconclusive_limit=3, now=now)
    assert status["lastMeasuredAt"] == "2025-03-01T12:00:00Z"


def test_due_at_once_then_every_interval() -> None:
    assert due(None, interval_seconds=60, now=NOW)
    assert due({}, interval_seconds=60, now=NOW)
    assert next_due(None, interval_seconds=60) is None
    status = advance(None, measurement("Successful"), failure_limit=2, inconclusive_limit=3, now=NOW)
    assert next_due(status, interval_seconds=60) == NOW + timedelta(minutes=1)
    assert not due(status, interval_seconds=60, now=NOW)
    assert not due(status, interval_seconds=60, now=NOW + timedelta(seconds=59.9))
    assert due(status, interval_seconds=60, now=NOW + timedelta(seconds=60))
    assert due(status, interval_seconds=60, now=datetime(2025, 3, 1, 14, 1, tzinfo=timezone(timedelta(hours=2))))


@pytest.mark.parametrize(("text", "seconds"), [
    ("10s", 10), ("1m", 60), ("1m30s", 90), ("500ms", 0.5), ("2h", 7200), ("1h1m1s", 3661), ("0s", 0)])
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "10", "1.5m", "1d", "m", "10s ", "-1s", "1m\n"])
def test_parse_duration_refuses_what_the_crd_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


# ------------------------------------------------------------------------------------------ properties

values = st.one_of(st.none(), st.just(math.nan), st.just(math.inf), st.floats(min_value=0, max_value=1e6))
bounds = st.one_of(st.none(), st.floats(min_value=0.001, max_value=1e4))
METRICS: list[api.AnalysisMetric] = ["ttftP95", "ttftP50", "errorRate", "tokensPerSecondPerReplica",
                                     "interTokenLatency", "custom"]


@st.composite
def checks(draw: st.DrawFn) -> api.AnalysisCheck:
    mx, mn, rmax, rmin = draw(bounds), draw(bounds), draw(bounds), draw(bounds)
    assume(any(b is not None for b in (mx, mn, rmax, rmin)))
    assume(mn is None or mx is None or mn <= mx)
    metric = draw(st.sampled_from(METRICS))
    return check(metric, query="x" if metric == "custom" else None, max=mx, min=mn, max_ratio_to_stable=rmax,
                 min_ratio_to_stable=rmin)


def broken(c: api.AnalysisCheck, canary: float | None, stable: float | None) -> bool | None:
    """An independent oracle: True if a bound is broken, None if none is but one lacked data."""
    if canary is None or math.isnan(canary):
        return None
    if (c.max is not None and canary > c.max) or (c.min is not None and canary < c.min):
        return True
    if c.max_ratio_to_stable is None and c.min_ratio_to_stable is None:
        return False
    if stable is None or math.isnan(stable) or stable in (0, math.inf):
        return None
    r = canary / stable
    return (c.max_ratio_to_stable is not None and r > c.max_ratio_to_stable) or \
        (c.min_ratio_to_stable is not None and r < c.min_ratio_to_stable)


@settings(max_examples=400, deadline=None)
@given(c=checks(), canary=values, stable=values)
def test_verdict_matches_the_oracle(c: api.AnalysisCheck, canary: float | None, stable: float | None) -> None:
    v = evaluate(c, canary=canary, stable=stable)
    expected = {True: "Failed", False: "Successful", None: "Inconclusive"}[broken(c, canary, stable)]
    assert v.phase == expected, v
    assert v.message.startswith(c.metric + " ")
    api.CheckResult.model_validate(v.to_status())


@settings(max_examples=300, deadline=None)
@given(data=st.lists(st.tuples(checks(), values, values), min_size=1, max_size=6), hole=st.integers(0, 5))
def test_a_measurement_with_a_missing_canary_value_is_never_successful(
        data: list[tuple[api.AnalysisCheck, float | None, float | None]], hole: int) -> None:
    data[hole % len(data)] = (data[hole % len(data)][0], None, data[hole % len(data)][2])
    m = summarize([evaluate(c, canary=cv, stable=sv) for c, cv, sv in data])
    assert m.phase != "Successful"
    assert m.phase in ("Failed", "Inconclusive")


@settings(max_examples=300, deadline=None)
@given(data=st.lists(st.tuples(checks(), values, values), min_size=1, max_size=6))
def test_a_successful_measurement_had_every_value_it_needed(
        data: list[tuple[api.AnalysisCheck, float | None, float | None]]) -> None:
    m = summarize([evaluate(c, canary=cv, stable=sv) for c, cv, sv in data])
    if m.phase == "Successful":
        for c, cv, sv in data:
            assert cv is not None and not math.isnan(cv)
            if c.max_ratio_to_stable is not None or c.min_ratio_to_stable is not None:
                assert sv is not None and math.isfinite(sv) and sv != 0


phases = st.sampled_from(["Successful", "Failed", "Inconclusive", "Error"])


@settings(max_examples=300, deadline=None)
@given(run=st.lists(phases, min_size=1, max_size=30), failure_limit=st.integers(0, 5),
       inconclusive_limit=st.integers(0, 5))
def test_counters_follow_the_run(run: list[str], failure_limit: int, inconclusive_limit: int) -> None:
    status: dict[str, Any] | None = None
    failed_before = 0
    for i, phase in enumerate(run):
        status = advance(status, measurement(phase), failure_limit=failure_limit,
                         inconclusive_limit=inconclusive_limit, now=NOW + timedelta(seconds=i))
        seen = run[: i + 1]
        assert status["measurements"] == i + 1
        assert status["failed"] >= failed_before  # monotone
        failed_before = status["failed"]
        assert status["failed"] == seen.count("Failed")
        assert (status["phase"] == "Failed") == (status["failed"] > failure_limit)
        trailing_errors = len(seen) - len("".join("E" if p == "Error" else "x" for p in seen).rstrip("E"))
        assert status["errors"] == trailing_errors
        with_data = [p for p in seen if p != "Error"]
        tail = "".join("I" if p == "Inconclusive" else "x" for p in with_data)
        assert status["inconclusive"] == len(tail) - len(tail.rstrip("I"))
        if status["phase"] != "Failed":
            assert (status["phase"] == "Error") == (phase == "Error")
            if phase != "Error":
                assert (status["phase"] == "Inconclusive") == (status["inconclusive"] > inconclusive_limit)
        assert status["phase"] != "Successful"  # only the step machine declares the analysis done
        api.AnalysisStatus.model_validate(status)
