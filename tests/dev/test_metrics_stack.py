"""The Prometheus configuration `dev up --metrics` writes is one the real Prometheus accepts, rules included."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml
from llm_operator.dev import _metrics_stack as ms


def test_promtool_accepts_the_generated_config_and_its_rule_file(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool missing: install Debian's prometheus package (README quick start)"
    rules, _ = ms.contract_paths()
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump(ms.prometheus_config(traffic_port=9400, rules_path=rules)))
    proc = subprocess.run([promtool, "check", "config", str(config)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # promtool followed rule_files: the recording rules were parsed as part of this config.
    assert f"Checking {rules}" in proc.stdout and "SUCCESS" in proc.stdout, proc.stdout


def test_promtool_rejects_a_config_whose_rule_file_is_missing(tmp_path: Path) -> None:
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump(ms.prometheus_config(traffic_port=9400, rules_path=tmp_path / "nope.yaml")))
    proc = subprocess.run([str(shutil.which("promtool")), "check", "config", str(config)], capture_output=True,
                          text=True, check=False)
    assert proc.returncode != 0


def test_the_dev_adapter_serves_the_shipped_rules_plus_the_emulated_cpu(tmp_path: Path) -> None:
    _, shipped = ms.contract_paths()
    kubeconfig = tmp_path / "prometheus-adapter.kubeconfig"
    args = ms.adapter_args(port=6443, kubeconfig=kubeconfig, pki=tmp_path / "pki", prometheus_port=9090,
                           config=shipped)
    (config_flag,) = [a for a in args if a.startswith("--config=")]
    written = Path(config_flag.removeprefix("--config="))
    assert written == tmp_path / ms.DEV_ADAPTER_CONFIG
    rules = yaml.safe_load(written.read_text())["rules"]
    shipped_rules = yaml.safe_load(shipped.read_text())["rules"]
    # The shipped rules come first and unchanged; the dev rule is only in the dev config.
    assert rules == [*shipped_rules, *ms.DEV_ADAPTER_RULES]
    names = [r["name"]["as"] for r in rules]
    assert len(names) == len(set(names))
    assert "llm_emulator_cpu_utilization" in names
    assert "llm_emulator_cpu_utilization" not in shipped.read_text()
    (dev,) = ms.DEV_ADAPTER_RULES
    assert dev["resources"] == shipped_rules[0]["resources"]  # a Pods metric, mapped like the shipped ones
