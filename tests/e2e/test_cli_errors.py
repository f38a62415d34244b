"""`llmctl render -f` reports every mistake the real API server reports for the same file (issue #13)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from llm_operator import api

from e2e.pytest_plugin import Cluster

pytestmark = pytest.mark.cluster

MANY = """\
apiVersion: serving.llmops.dev/v1alpha1
kind: LLMDeployment
metadata: {name: many}
spec:
  model: {name: a, uri: "ftp://x", revision: v1}
  resources: {gpu: {count: 1}, memory: 1Gi, sharedMemory: 2Gi}
  autoscaling: {minReplicas: 5, maxReplicas: 2, metrics: {queueDepth: 10}}
"""


def _cel_messages() -> set[str]:
    messages = set()
    for cls in vars(api).values():
        for rule in getattr(cls, "__cel_rules__", ()) if isinstance(cls, type) else ():
            messages.add(rule.message)
    return messages


def test_render_reports_every_cel_rule_the_api_server_reports(cluster: Cluster, crd: str, tmp_path: Path) -> None:
    path = tmp_path / "many.yaml"
    path.write_text(MANY)
    # A server-side dry run creates nothing: the default namespace will do.
    server = cluster.kubectl("apply", "--dry-run=server", "-n", "default", "-f", str(path), check=False)
    assert server.returncode != 0
    by_server = {m for m in _cel_messages() if m in server.stderr}
    assert len(by_server) >= 4, server.stderr  # uri, revision, sharedMemory, minReplicas
    proc = subprocess.run([str(Path(sys.executable).with_name("llmctl")), "render", "-f", str(path)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 1 and proc.stdout == ""
    missing = [m for m in by_server if m not in proc.stderr]
    assert not missing, f"the API server reports, llmctl render does not: {missing}\n{proc.stderr}"
