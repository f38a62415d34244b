"""The canonical metric vocabulary: the recording rules and the adapter config that ship with the operator,
checked by the real promtool (syntax, and the mapping evaluated on input series of every backend)."""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from collections import defaultdict
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import yaml
from llm_operator import metrics
from llm_runtime import metrics as runtime_metrics

REPO = Path(__file__).resolve().parents[2]
PROMTOOL_TESTS = Path(__file__).with_name("promtool") / "rules_test.yaml"


def promtool() -> str:
    path = shutil.which("promtool")
    assert path, "promtool is missing: apt-get install -y --no-install-recommends prometheus"
    return path


def rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(metrics.RULES_PATH.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def adapter_rules() -> list[dict[str, Any]]:
    rules_: list[dict[str, Any]] = yaml.safe_load(metrics.ADAPTER_CONFIG_PATH.read_text())["rules"]
    return rules_


def test_files_ship_as_package_data() -> None:
    package = resources.files("llm_operator.metrics")
    assert package.joinpath("recording_rules.yaml").read_text() == metrics.RULES_PATH.read_text()
    assert package.joinpath("adapter.yaml").read_text() == metrics.ADAPTER_CONFIG_PATH.read_text()
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "*.yaml" in config["tool"]["setuptools"]["package-data"]["*"]


def test_promtool_accepts_the_rules() -> None:
    result = subprocess.run([promtool(), "check", "rules", str(metrics.RULES_PATH)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules())} rules found" in result.stdout


def test_every_per_pod_series_has_exactly_one_rule_per_backend() -> None:
    by_name: dict[str, list[str]] = defaultdict(list)
    for rule in rules():
        by_name[rule["record"]].append((rule.get("labels") or {}).get(metrics.BACKEND_LABEL, ""))
    for name in metrics.PER_BACKEND:
        assert sorted(by_name[name]) == sorted(metrics.BACKENDS), name
    for name in (*metrics.DERIVED_PER_POD, *metrics.PER_REVISION):
        assert name in by_name, name
    # Quantiles are per backend at the revision level too (buckets cannot be averaged across pods).
    for name in (metrics.REVISION_TTFT_P50, metrics.REVISION_TTFT_P95):
        assert sorted(by_name[name]) == sorted(metrics.BACKENDS), name
    assert set(by_name) == {*metrics.PER_POD, *metrics.PER_REVISION}


def test_rules_keep_the_pod_and_revision_labels() -> None:
    for rule in rules():
        name, expr = rule["record"], " ".join(rule["expr"].split())
        groupings = re.findall(r"\bby \(([^)]*)\)", expr)
        if name in metrics.PER_BACKEND:
            wanted = set(metrics.POD_LABELS)
        elif name in metrics.PER_REVISION and groupings:
            wanted = set(metrics.REVISION_LABELS)
        else:
            continue
        assert groupings, name
        for group in groupings:
            labels = {label.strip() for label in group.split(",")}
            assert wanted <= labels, (name, group)
            assert labels - {"le", metrics.BACKEND_LABEL} == wanted, (name, group)


def test_rules_read_each_backends_source_series_and_nothing_else() -> None:
    exprs: dict[str, str] = defaultdict(str)
    for rule in rules():
        backend = (rule.get("labels") or {}).get(metrics.BACKEND_LABEL)
        if backend:
            exprs[backend] += " " + rule["expr"]
    for backend, names in metrics.SOURCE_SERIES.items():
        for name in names:
            assert re.search(rf"{re.escape(name)}(_bucket|_sum|_count)?\b", exprs[backend]), (backend, name)
        # Every metric name a backend's rules read is one of its declared source series (or a histogram part).
        used = set(re.findall(r"\b([a-z0-9_:]+?)(?:_bucket|_sum|_count)?(?=[\[{)\s])", exprs[backend]))
        read = {u for u in used if u.startswith(("llm_", "vllm:", "nv_"))}
        assert read, backend
        assert read <= set(names), (backend, read - set(names))


def test_python_source_names_are_the_runtimes() -> None:
    exported = set(runtime_metrics.ALL_METRICS)
    python = set(metrics.SOURCE_SERIES["python"])
    # Every series the python rules read is one llm_runtime really exports.
    assert python - exported == set()
    assert metrics.PythonSeries.REQUESTS_FAILED in exported


def test_front_series_are_what_the_openai_front_serves() -> None:
    """The OpenAI front's own counters (its /metrics) carry the canonical names and the source label the rules
    select, and every backend's request and error rules add them."""
    from llm_runtime import front_metrics

    guard = front_metrics.FrontGuard(model="m")
    text = guard.render()
    for name in (metrics.FrontSeries.REQUESTS_FAILED, metrics.FrontSeries.REQUESTS_REJECTED):
        assert f'{name}{{model="m",version="1",{metrics.FrontSeries.SOURCE_LABEL}="{metrics.FrontSeries.SOURCE}"}} 0' \
            in text
    assert (front_metrics.SOURCE_LABEL, front_metrics.SOURCE_FRONT) == (metrics.FrontSeries.SOURCE_LABEL,
                                                                         metrics.FrontSeries.SOURCE)
    for rule in rules():
        if rule["record"] in (metrics.REQUESTS_RATE, metrics.REQUEST_ERRORS_RATE):
            for name in (metrics.FrontSeries.REQUESTS_FAILED, metrics.FrontSeries.REQUESTS_REJECTED):
                assert f'{name}{{source="front"}}' in rule["expr"], (rule["record"], rule["labels"], name)


def test_adapter_exposes_recorded_per_pod_series() -> None:
    recorded = {rule["record"] for rule in rules()}
    exposed = {}
    for rule in adapter_rules():
        match = re.fullmatch(r'\{__name__="([^"]+)",namespace!="",pod!=""\}', rule["seriesQuery"])
        assert match, rule["seriesQuery"]
        series = match.group(1)
        assert series in recorded and series in metrics.PER_POD, series
        assert rule["resources"] == {"overrides": {"namespace": {"resource": "namespace"},
                                                   "pod": {"resource": "pod"}}}
        assert re.fullmatch(rule["name"]["matches"], series)
        for part in ("<<.Series>>", "<<.LabelMatchers>>", "<<.GroupBy>>"):
            assert part in rule["metricsQuery"]
        exposed[rule["name"]["as"]] = series
    assert exposed == metrics.ADAPTER_METRICS


def test_adapter_queries_are_valid_promql(tmp_path: Path) -> None:
    """The adapter's templates, filled in as the adapter fills them, parse in Prometheus (the values are checked
    against a live Prometheus in test_traffic_prometheus.py)."""
    records = []
    for i, rule in enumerate(adapter_rules()):
        series = rule["seriesQuery"].split('__name__="', 1)[1].split('"', 1)[0]
        expr = (rule["metricsQuery"].replace("<<.Series>>", series)
                .replace("<<.LabelMatchers>>", 'namespace="team",pod=~"a|b"').replace("<<.GroupBy>>", "pod"))
        records.append({"record": f"adapter_check_{i}", "expr": expr})
    path = tmp_path / "adapter_queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "adapter", "rules": records}]}))
    result = subprocess.run([promtool(), "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_evaluates_the_mapping_for_every_backend() -> None:
    result = subprocess.run([promtool(), "test", "rules", str(PROMTOOL_TESTS)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
    # The unit tests cover every canonical series.
    text = PROMTOOL_TESTS.read_text()
    for name in (*metrics.PER_POD, *metrics.PER_REVISION):
        if name in (metrics.ITL_SUM_RATE, metrics.ITL_COUNT_RATE, metrics.REVISION_ITL_SUM_RATE,
                    metrics.REVISION_ITL_COUNT_RATE):
            continue  # intermediates, checked through the means built from them
        assert f"expr: {name}\n" in text, name


@pytest.mark.parametrize(
    ("wrong", "right"),
    [
        ('nv_trt_llm_request_metrics{request_type="waiting"})\n',
         'nv_trt_llm_request_metrics{request_type="active"})\n'),
        ("rate(vllm:generation_tokens_total[1m])", "rate(vllm:prompt_tokens_total[1m])"),
        ("max by (namespace, pod, revision) (llm_kv_cache_usage_ratio)",
         "avg by (namespace, pod) (llm_kv_cache_usage_ratio)"),
        ('rate(llm_requests_failed_total{source="front"}[1m])', 'rate(llm_requests_failed_total{source="x"}[1m])'),
    ],
    ids=["trt-queue-reads-active", "vllm-generation-reads-prompt", "python-kv-drops-revision",
         "python-requests-miss-the-front"],
)
def test_the_promtool_tests_catch_a_wrong_mapping(tmp_path: Path, wrong: str, right: str) -> None:
    original = metrics.RULES_PATH.read_text()
    assert wrong in original
    broken = tmp_path / "rules.yaml"
    broken.write_text(original.replace(wrong, right, 1))
    tests = yaml.safe_load(PROMTOOL_TESTS.read_text())
    tests["rule_files"] = [str(broken)]
    test_file = tmp_path / "rules_test.yaml"
    test_file.write_text(yaml.safe_dump(tests))
    result = subprocess.run([promtool(), "test", "rules", str(test_file)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode != 0
    assert "FAILED" in result.stdout + result.stderr
