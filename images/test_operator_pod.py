"""The operator image runs: the chart's operator Deployment under `podman kube play`, against the dev cluster.

helm installs the chart into the real local cluster (its ServiceAccount, RBAC, Deployment: kwok "runs" that pod,
nothing executes). The same Deployment, read back from the API server, is then played by podman with the image
`make images` built, on the ServiceAccount's TokenRequest token, and must reconcile an LLMDeployment to Ready.
Part of `make test` (and of `make images-test`, which runs only the podman tests).

What the kubelet would do and podman does not, done here by hand (docs/images.md):
* the projected ServiceAccount volume: token, ca.crt and namespace in a folder mounted at
  /var/run/secrets/kubernetes.io/serviceaccount, and KUBERNETES_SERVICE_HOST/PORT pointing at the API server;
* host networking, since the dev cluster's API server listens on 127.0.0.1 only; the health and metrics
  listeners are moved from 0.0.0.0 to free loopback ports (no server here listens on a public address), and
  the container's `ports` are dropped (podman refuses port mappings with host networking);
* `POD_NAMESPACE` from `fieldRef: metadata.namespace` (unsupported by podman 4.3) becomes its value;
* the /tmp emptyDir becomes a hostPath on a mode-1777 folder (podman's emptyDir is root-owned 0755).
"""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from llm_operator import images

from e2e.pytest_plugin import Cluster, denials
from tests.e2e.test_chart_install import CHART, adopt_crd, http_get, pod_args
from tests.e2e.test_operator import apply, llmd, wait_condition
from tests.unit.test_chart import helm

# On the second cluster's worker (e2e/pytest_plugin.py), beside the model-pod tests of images/test_pods.py.
pytestmark = [pytest.mark.cluster]

SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


def podman(*args: str, check: bool = True) -> str:
    import subprocess

    out = subprocess.run(["podman", *args], env=images.podman_env(), text=True, capture_output=True, check=False,
                         timeout=180)
    if check and out.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)}: {out.stderr}{out.stdout}")
    return out.stdout + out.stderr


def _service_account_folder(cluster: Cluster, namespace: str, name: str, folder: Path) -> tuple[str, str]:
    """What the kubelet projects into the pod; returns the API server's host and port."""
    token = cluster.kubectl("create", "token", name, "-n", namespace, "--duration=1h").stdout.strip()
    server = yaml.safe_load(cluster.kubeconfig.read_text())["clusters"][0]["cluster"]
    if "certificate-authority-data" in server:
        ca = base64.b64decode(server["certificate-authority-data"]).decode()
    else:
        ca = Path(server["certificate-authority"]).read_text()
    folder.mkdir()
    (folder / "token").write_text(token)
    (folder / "ca.crt").write_text(ca)
    (folder / "namespace").write_text(namespace)
    folder.chmod(0o755)
    for f in folder.iterdir():
        f.chmod(0o644)  # the image's user (65532) reads them; the kubelet's files are readable by the pod's user
    host, port = server["server"].removeprefix("https://").rsplit(":", 1)
    assert host == "127.0.0.1", server["server"]
    return host, port


def _podman_deployment(deploy: dict[str, Any], args: list[str], sa_folder: Path, host: str, port: str,
                       tmp: Path) -> dict[str, Any]:
    template = json.loads(json.dumps(deploy["spec"]["template"]))
    spec = template["spec"]
    (container,) = spec["containers"]
    container["args"] = ["run", *args]
    for env in container.get("env", []):
        # podman 4.3 refuses `fieldRef: metadata.namespace` ("not valid or not supported"): the value it would have.
        if env.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.namespace":
            env.pop("valueFrom")
            env["value"] = deploy["metadata"]["namespace"]
    container.setdefault("env", []).extend([
        {"name": "KUBERNETES_SERVICE_HOST", "value": host},
        {"name": "KUBERNETES_SERVICE_PORT", "value": port},
    ])
    container.setdefault("volumeMounts", []).append({"name": "sa", "mountPath": SA_DIR, "readOnly": True})
    spec["hostNetwork"] = True
    # podman refuses containerPorts with host networking ("PortMappings can only be used with Bridge or
    # slirp4netns networking"); with it they mean nothing anyway.
    container.pop("ports", None)
    for volume in spec["volumes"]:
        if "emptyDir" in volume:
            folder = tmp / f"emptydir-{volume['name']}"
            folder.mkdir()
            folder.chmod(0o1777)
            volume.pop("emptyDir")
            volume["hostPath"] = {"path": str(folder), "type": "Directory"}
    spec["volumes"].append({"name": "sa", "hostPath": {"path": str(sa_folder), "type": "Directory"}})
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": deploy["metadata"]["name"], "labels": deploy["metadata"].get("labels", {})},
        "spec": {"replicas": 1, "selector": deploy["spec"]["selector"], "template": template},
    }


def test_chart_operator_deployment_under_kube_play_reconciles_to_ready(
    cluster: Cluster, crd: str, namespace: str, tmp_path: Path
) -> None:
    images.build_all(["operator"], log=False)
    release = "img"
    fullname = f"{release}-triton-llm-operator"
    adopt_crd(cluster, release, namespace)
    helm("install", release, str(CHART), "--namespace", namespace, home=tmp_path, kubeconfig=cluster.kubeconfig)
    kube = tmp_path / "operator.yaml"
    try:
        deploy = cluster.kubectl_json("get", "deployment", fullname, "-n", namespace)
        assert deploy["spec"]["template"]["spec"]["containers"][0]["image"] == images.OPERATOR_IMAGE
        args, liveness, metrics_url = pod_args(deploy)
        host, port = _service_account_folder(cluster, namespace, fullname, tmp_path / "sa")
        kube.write_text(yaml.safe_dump(
            _podman_deployment(deploy, args, tmp_path / "sa", host, port, tmp_path), sort_keys=False))
        started = time.monotonic()
        print("\nkube play said:", podman("kube", "play", str(kube)).strip())
        container = f"{fullname}-pod-0-operator"
        deadline = time.monotonic() + 90
        while True:
            try:
                http_get(liveness)
                break
            except OSError:
                assert time.monotonic() < deadline, podman("logs", container, check=False)[-3000:]
                time.sleep(0.5)
        print(f"FIGURE operator pod: kube play to liveness answering {time.monotonic() - started:.1f}s")
        user = podman("exec", container, "python3", "-c", "import os; print(os.getuid(), os.getgid())").split()
        assert user == ["65532", "65532"]
        apply(cluster, namespace, llmd("image-model", replicas=1))
        wait_condition(cluster, namespace, "image-model", "Ready", "True", "AllReplicasReady", timeout=120)
        print(f"FIGURE operator pod: kube play to LLMDeployment Ready {time.monotonic() - started:.1f}s")
        assert "llmop_" in http_get(metrics_url)
        logs = podman("logs", container, check=False)
        assert not denials(logs), "\n".join(denials(logs)[:20])
    finally:
        podman("kube", "down", str(kube), check=False)
        helm("uninstall", release, "--namespace", namespace, home=tmp_path, kubeconfig=cluster.kubeconfig,
             check=False)
