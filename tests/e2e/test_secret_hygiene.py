"""No secret value ever appears in what the operator writes or logs (issue #13): a canary token in the model's
Secret, then a scan of the LLMDeployment (status), every Event, every child, the operator's debug log, its metrics
and `llmctl render` output of a file holding the Secret and the LLMDeployment."""

from __future__ import annotations

import base64
import json
import socket
import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path

import pytest
import yaml

from e2e.pytest_plugin import Cluster, OperatorProcess
from tests.e2e.test_operator import llmd, wait_condition

pytestmark = pytest.mark.cluster


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_canary_token_in_the_secret_never_leaves_it(cluster: Cluster, operator_process: OperatorProcess,
                                                      namespace: str, tmp_path: Path) -> None:
    canary = f"hf_CANARY{uuid.uuid4().hex}"
    forms = [canary, base64.b64encode(canary.encode()).decode()]
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "hf-token"}, "type": "Opaque",
              "stringData": {"token": canary, "HF_TOKEN": canary}}
    body = llmd("secretive", model={"name": "tiny", "uri": "hf://HuggingFaceTB/SmolLM2-135M-Instruct",
                                    "secretRef": {"name": "hf-token"}})
    manifest = tmp_path / "with-secret.yaml"
    manifest.write_text(yaml.safe_dump_all([secret, body]))

    port = _free_port()
    operator_process.start("-n", namespace, "--log-level=debug", "--metrics-port", str(port),
                           kubeconfig=cluster.kubeconfig)
    cluster.kubectl("apply", "-n", namespace, "-f", str(manifest))
    wait_condition(cluster, namespace, "secretive", "Ready", "True", timeout=90)
    # A second generation (a spec change) and a Degraded round (the Secret removed, then back) so that more
    # status, Events and log lines are written.
    cluster.kubectl("patch", "llmd", "secretive", "-n", namespace, "--type=merge", "-p", '{"spec":{"replicas":2}}')
    wait_condition(cluster, namespace, "secretive", "Ready", "True", timeout=90)
    # Secrets are not watched: a spec change makes the operator look again.
    cluster.kubectl("delete", "secret", "hf-token", "-n", namespace)
    cluster.kubectl("patch", "llmd", "secretive", "-n", namespace, "--type=merge", "-p", '{"spec":{"replicas":1}}')
    wait_condition(cluster, namespace, "secretive", "Degraded", "True", "SecretNotFound", timeout=60)
    cluster.kubectl("apply", "-n", namespace, "-f", str(manifest))  # the Secret back, and replicas: 1 as written
    cluster.kubectl("patch", "llmd", "secretive", "-n", namespace, "--type=merge", "-p", '{"spec":{"replicas":2}}')
    wait_condition(cluster, namespace, "secretive", "Ready", "True", timeout=90)

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        metrics = resp.read().decode()
    rendered = subprocess.run([str(Path(sys.executable).with_name("llmctl")), "render", "-f", str(manifest)],
                              capture_output=True, text=True, timeout=60, check=True).stdout
    written = {
        "the LLMDeployment (status)": json.dumps(cluster.kubectl_json("get", "llmd", "secretive", "-n", namespace)),
        "Events": json.dumps(cluster.kubectl_json("get", "events", "-n", namespace)),
        "children": json.dumps(cluster.kubectl_json(
            "get", "configmaps,deployments,services,poddisruptionbudgets,horizontalpodautoscalers,pods",
            "-n", namespace, "-l", "app.kubernetes.io/managed-by=triton-llm-operator")),
        "the operator's log": operator_process.log,
        "the operator's metrics": metrics,
        "llmctl render": rendered,
    }
    assert "hf-token" in written["children"]  # the pods take the Secret by name (envFrom), as they should
    assert "reconcile" in written["the operator's log"].lower() or len(written["the operator's log"]) > 1000
    leaks = [f"{where}: {form[:12]}…" for where, text in written.items() for form in forms if form in text]
    assert not leaks, f"the canary token leaked into: {leaks}"
