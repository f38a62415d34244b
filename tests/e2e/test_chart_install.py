"""The Helm chart against the real local cluster: its manifests under a server-side dry run (Pod Security
`restricted` included), `helm install`, the real operator (`llmctl run` with the Deployment's own arguments) on the
chart's ServiceAccount token reconciling an LLMDeployment to Ready, `helm upgrade` and `helm uninstall` (what happens
to the CRD and to LLMDeployments), and a namespaced install on Roles.

kwok runs no container: the chart's operator pod is scheduled and Running but nothing executes in it, so the
operator runs here as a child process with exactly the credentials and arguments the pod would have.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import textwrap
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from llm_operator import _kinds as registry

from e2e.pytest_plugin import Cluster, OperatorProcess, denials, ensure_monitoring_crds, monitoring_crd, wait_for
from tests.e2e.test_operator import apply, get, llmd, wait_condition
from tests.unit.test_chart import CHART, VALUE_SETS, helm, lease_triples, registry_triples, template, triples

pytestmark = pytest.mark.cluster

CRD = "llmdeployments.serving.llmops.dev"


# ------------------------------------------------------------------------------------------------ helpers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def restricted(cluster: Cluster, namespace: str) -> None:
    """Pod Security `restricted` enforced (pods) and warned about (workloads such as Deployments)."""
    cluster.kubectl("label", "namespace", namespace, "--overwrite", "pod-security.kubernetes.io/enforce=restricted",
                    "pod-security.kubernetes.io/warn=restricted")


def service_account_kubeconfig(cluster: Cluster, namespace: str, name: str, path: Path) -> Path:
    """A kubeconfig for the cluster's server and CA that authenticates with a TokenRequest token of the account."""
    token = cluster.kubectl("create", "token", name, "-n", namespace, "--duration=1h").stdout.strip()
    server = yaml.safe_load(cluster.kubeconfig.read_text())["clusters"][0]["cluster"]
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "local", "cluster": server}],
        "users": [{"name": name, "user": {"token": token}}],
        "contexts": [{"name": name, "context": {"cluster": "local", "user": name}}],
        "current-context": name,
    }))
    whoami = json.loads(cluster.kubectl("auth", "whoami", f"--kubeconfig={path}", "-o", "json").stdout)
    assert whoami["status"]["userInfo"]["username"] == f"system:serviceaccount:{namespace}:{name}"
    return path


def pod_args(deploy: dict[str, Any]) -> tuple[list[str], str, str]:
    """The operator container's `llmctl run` arguments, with its listen addresses moved to free loopback ports
    (the pod binds 0.0.0.0; a test never does); and the liveness and metrics URLs the probes and the Service use."""
    (container,) = deploy["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["llmctl"] and container["args"][0] == "run"
    probe = container["livenessProbe"]["httpGet"]
    health, metrics = free_port(), free_port()
    liveness = f"http://127.0.0.1:{health}{probe['path']}"
    args = []
    for arg in container["args"][1:]:
        if arg.startswith("--liveness="):
            # The probe's port and path are the ones the argument serves.
            ports = {p["name"]: p["containerPort"] for p in container["ports"]}
            assert arg == f"--liveness=http://0.0.0.0:{ports[probe['port']]}{probe['path']}", arg
            arg = f"--liveness={liveness}"
        elif arg.startswith("--metrics-port="):
            arg = f"--metrics-port={metrics}"
        elif arg == "--metrics-address=0.0.0.0":
            arg = "--metrics-address=127.0.0.1"
        args.append(arg)
    return args, liveness, f"http://127.0.0.1:{metrics}/metrics"


def http_get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as resp:
        assert resp.status == 200
        return str(resp.read().decode())


def granted(cluster: Cluster, namespace: str, name: str) -> dict[str | None, set[tuple[str, str, str]]]:
    """Every rule bound to the ServiceAccount in the live cluster, by namespace (None: cluster-wide)."""
    subject = {"kind": "ServiceAccount", "name": name, "namespace": namespace}
    out: dict[str | None, set[tuple[str, str, str]]] = {}
    for kind in ("clusterrolebindings", "rolebindings"):
        for binding in cluster.kubectl_json("get", kind, "-A")["items"]:
            if subject not in (binding.get("subjects") or []):
                continue
            ns = binding["metadata"].get("namespace")
            ref = binding["roleRef"]
            if ref["kind"] == "ClusterRole":
                role = cluster.kubectl_json("get", "clusterrole", ref["name"])
            else:
                role = cluster.kubectl_json("get", "role", ref["name"], "-n", ns)
            out.setdefault(ns, set()).update(triples(role["rules"]))
    return out


def can(cluster: Cluster, sa: str, verb: str, resource: str, namespace: str | None) -> bool:
    where = [f"--namespace={namespace}"] if namespace else ["--all-namespaces"]
    return cluster.kubectl("auth", "can-i", verb, resource, f"--as={sa}", *where, check=False).stdout.strip() == "yes"


def adopt_crd(cluster: Cluster, release: str, namespace: str) -> None:
    """Let the release own the CRD the session installed with `kubectl apply` (Helm adopts an existing object
    that carries its ownership metadata: the same step moves a kubectl-apply install to Helm)."""
    cluster.kubectl("label", "crd", CRD, "--overwrite", "app.kubernetes.io/managed-by=Helm")
    cluster.kubectl("annotate", "crd", CRD, "--overwrite", f"meta.helm.sh/release-name={release}",
                    f"meta.helm.sh/release-namespace={namespace}")


# ------------------------------------------------------------------------------------------------- tests


def test_rendered_value_sets_pass_a_server_side_dry_run(cluster: Cluster, namespace: str, tmp_path: Path) -> None:
    ensure_monitoring_crds(cluster)  # ServiceMonitor (schema-less stand-ins; promtool checks the rules' content)
    rule_crd = monitoring_crd("PrometheusRule")
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(rule_crd))
    cluster.kubectl("wait", "--for=condition=Established", f"crd/{rule_crd['metadata']['name']}", "--timeout=30s")
    restricted(cluster, namespace)
    value_sets = {**VALUE_SETS, "namespaced": {**VALUE_SETS["namespaced"],
                                               "watch": {"namespaces": [namespace, "default"]}}}
    for name, values in value_sets.items():
        manifests = template(values, tmp_path, namespace=namespace, release=f"dry-{name}").stdout
        kinds = sorted({d["kind"] for d in yaml.safe_load_all(manifests) if d})
        proc = cluster.kubectl("apply", "--server-side", "--dry-run=server", "--field-manager=chart-dry-run",
                               "-f", "-", input=manifests, check=False)
        assert proc.returncode == 0, f"{name}: {proc.stderr}"
        assert "would violate PodSecurity" not in proc.stderr, f"{name}: {proc.stderr}"
        assert proc.stdout.count("(server dry run)") == manifests.count("\nkind: "), (name, proc.stdout)
        assert {"CustomResourceDefinition", "ClusterRole", "Deployment", "ServiceAccount"} <= set(kinds), kinds
        if name == "monitoring":
            assert {"ServiceMonitor", "PrometheusRule", "ConfigMap"} <= set(kinds), kinds
        if name == "namespaced":
            # one per watched namespace, and leader election's in the release namespace
            assert kinds.count("Role") == 1 and manifests.count("\nkind: Role\n") == 3, kinds
    assert get(cluster, namespace, "deployment", "dry-default-triton-llm-operator") is None  # nothing was created


def test_helm_install_upgrade_uninstall_with_the_operator_on_the_charts_service_account(
    cluster: Cluster, operator_process: OperatorProcess, namespace: str, tmp_path: Path
) -> None:
    release = "chart-e2e"
    fullname = f"{release}-triton-llm-operator"
    sa = f"system:serviceaccount:{namespace}:{fullname}"
    ensure_monitoring_crds(cluster)
    restricted(cluster, namespace)  # the operator's pod and the model pods must pass Pod Security `restricted`
    adopt_crd(cluster, release, namespace)
    crd_uid = cluster.kubectl_json("get", "crd", CRD)["metadata"]["uid"]

    install = helm("install", release, str(CHART), "--namespace", namespace, "--set",
                   "metrics.serviceMonitor.enabled=true", home=tmp_path, kubeconfig=cluster.kubeconfig)
    assert f"kubectl -n {namespace} rollout status deployment/{fullname}" in install.stdout  # NOTES
    assert "It watches LLMDeployments in all namespaces." in install.stdout
    example = re.search(r"<<'YAML'\n(.*?)\n\s*YAML\n", install.stdout, re.S)
    assert example, install.stdout
    cluster.kubectl("apply", "--dry-run=server", "-n", namespace, "-f", "-",  # the API server accepts it
                    input=textwrap.dedent(example[1]))

    crd = cluster.kubectl_json("get", "crd", CRD)
    assert crd["metadata"]["uid"] == crd_uid  # adopted, not recreated
    assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert crd["metadata"]["labels"]["app.kubernetes.io/instance"] == release
    for kind in ("serviceaccount", "deployment", "service", "servicemonitor"):
        assert get(cluster, namespace, kind, fullname if kind != "service" else f"{fullname}-metrics"), kind
    # kwok schedules the operator pod and marks it Running: Pod Security `restricted` admitted it.
    wait_for(lambda: any(p["status"].get("phase") == "Running" for p in cluster.kubectl_json(
        "get", "pods", "-n", namespace, "-l", f"app.kubernetes.io/instance={release}")["items"]),
        timeout=60, what="the operator pod Running")

    # What the ServiceAccount may do is exactly what the kind registry derives, nothing more.
    assert granted(cluster, namespace, fullname) == {None: registry_triples(), namespace: lease_triples()}
    for verb, resource in [("update", "llmdeployments.serving.llmops.dev"), ("delete", "llmdeployments.serving"
                           ".llmops.dev"), ("list", "secrets"), ("create", "pods"), ("patch", "nodes"),
                           ("create", "clusterrolebindings.rbac.authorization.k8s.io")]:
        assert not can(cluster, sa, verb, resource, "default"), f"{verb} {resource} should be denied"

    # The real operator with the pod's credentials and arguments.
    deploy = cluster.kubectl_json("get", "deployment", fullname, "-n", namespace)
    args, liveness, metrics_url = pod_args(deploy)
    kubeconfig = service_account_kubeconfig(cluster, namespace, fullname, tmp_path / "sa.kubeconfig")
    operator_process.start(*args, kubeconfig=kubeconfig)
    apply(cluster, namespace, llmd("chart-model", replicas=2))
    ready = wait_condition(cluster, namespace, "chart-model", "Ready", "True", "AllReplicasReady", timeout=90)
    wait_for(lambda: get(cluster, namespace, "podmonitor", "chart-model"), what="the PodMonitor")
    assert json.loads(http_get(liveness)) is not None  # kopf's health endpoint, at the probe's path
    wait_for(lambda: re.search(r'llmop_llmdeployment_condition\{[^}]*llmdeployment="chart-model"[^}]*'
                               r'reason="AllReplicasReady"[^}]*type="Ready"\} 1\.0', http_get(metrics_url)),
             what="the Ready condition on the metrics endpoint")
    assert not denials(operator_process.log), "\n".join(denials(operator_process.log)[:20])

    # helm upgrade to a newer chart (its CRD changed) with changed values: the Deployment rolls, the CRD is patched
    # in place (same object, new spec), LLMDeployments stay.
    newer = tmp_path / "newer-chart"
    shutil.copytree(CHART, newer)
    crd_template = next((newer / "templates" / "crds").glob("*.yaml"))
    crd_template.write_text(crd_template.read_text().replace("Served model name.", "Served model name (newer)."))
    helm("upgrade", release, str(newer), "--namespace", namespace, "--reuse-values", "--set", "logLevel=debug",
         "--set", "crds.annotations.llmops\\.dev/upgraded=yes", home=tmp_path, kubeconfig=cluster.kubeconfig)
    deploy = cluster.kubectl_json("get", "deployment", fullname, "-n", namespace)
    assert "--log-level=debug" in deploy["spec"]["template"]["spec"]["containers"][0]["args"]
    crd = cluster.kubectl_json("get", "crd", CRD)
    assert crd["metadata"]["uid"] == crd_uid and crd["metadata"]["annotations"]["llmops.dev/upgraded"] == "yes"
    assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    columns = crd["spec"]["versions"][0]["additionalPrinterColumns"]
    assert columns[0]["description"] == "Served model name (newer)."
    after = wait_condition(cluster, namespace, "chart-model", "Ready", "True", "AllReplicasReady")
    assert after["metadata"]["uid"] == ready["metadata"]["uid"]
    helm("upgrade", release, str(CHART), "--namespace", namespace, "--reuse-values", home=tmp_path,
         kubeconfig=cluster.kubeconfig)  # and back: the session's other tests use this CRD
    columns = cluster.kubectl_json("get", "crd", CRD)["spec"]["versions"][0]["additionalPrinterColumns"]
    assert columns[0]["description"] == "Served model name."

    # helm uninstall: the operator's objects go; the CRD stays (keep), so LLMDeployments and their pods stay.
    operator_process.stop()
    assert not denials(operator_process.log), "\n".join(denials(operator_process.log)[:20])
    uninstall = helm("uninstall", release, "--namespace", namespace, "--wait", home=tmp_path,
                     kubeconfig=cluster.kubeconfig)
    assert f"[CustomResourceDefinition] {CRD}" in uninstall.stdout, uninstall.stdout  # "kept due to the policy"
    assert cluster.kubectl_json("get", "crd", CRD)["metadata"]["uid"] == crd_uid
    kept = get(cluster, namespace, "llmd", "chart-model")
    assert kept is not None and kept["metadata"]["uid"] == ready["metadata"]["uid"]
    assert cluster.kubectl_json("get", "deployments", "-n", namespace, "-l",
                                "app.kubernetes.io/instance=chart-model")["items"], "the model's Deployment is gone"
    for kind, name in (("deployment", fullname), ("serviceaccount", fullname), ("service", f"{fullname}-metrics")):
        assert get(cluster, namespace, kind, name) is None, kind
    assert cluster.kubectl("get", "clusterrole", fullname, check=False).returncode != 0
    assert cluster.kubectl("get", "clusterrolebinding", fullname, check=False).returncode != 0


def test_namespaced_install_runs_the_operator_on_roles(
    cluster: Cluster, operator_process: OperatorProcess, namespace: str, tmp_path: Path
) -> None:
    release = "chart-ns"
    fullname = f"{release}-triton-llm-operator"
    sa = f"system:serviceaccount:{namespace}:{fullname}"
    watched = namespace  # the operator's own namespace; `default` stands for every other one
    install = helm("install", release, str(CHART), "--namespace", namespace, "--set", "crds.install=false",
                   "--set", f"watch.namespaces={{{watched}}}", "--set", "rbac.aggregateToDefaultRoles=false",
                   home=tmp_path, kubeconfig=cluster.kubeconfig)
    assert f"It watches LLMDeployments in: {watched}." in install.stdout
    assert "crds.install=false" in install.stdout

    assert granted(cluster, namespace, fullname) == {None: registry_triples(namespaced=False),
                                                     watched: registry_triples(namespaced=True) | lease_triples()}
    assert can(cluster, sa, "list", "nodes", None)
    assert can(cluster, sa, "watch", "customresourcedefinitions.apiextensions.k8s.io", None)
    assert can(cluster, sa, "watch", "llmdeployments.serving.llmops.dev", watched)
    assert not can(cluster, sa, "list", "llmdeployments.serving.llmops.dev", None)  # not cluster-wide
    assert not can(cluster, sa, "create", "deployments.apps", "default")  # nor in a namespace it does not watch
    assert not can(cluster, sa, "get", "secrets", "default")
    assert not can(cluster, sa, "list", "pods", None)

    deploy = cluster.kubectl_json("get", "deployment", fullname, "-n", namespace)
    args, liveness, _ = pod_args(deploy)
    assert f"--namespace={watched}" in args
    kubeconfig = service_account_kubeconfig(cluster, namespace, fullname, tmp_path / "sa.kubeconfig")
    operator_process.start(*args, kubeconfig=kubeconfig)
    apply(cluster, watched, llmd("ns-model"))
    wait_condition(cluster, watched, "ns-model", "Ready", "True", "AllReplicasReady", timeout=90)
    http_get(liveness)
    operator_process.stop()
    assert not denials(operator_process.log), "\n".join(denials(operator_process.log)[:20])
    helm("uninstall", release, "--namespace", namespace, "--wait", home=tmp_path, kubeconfig=cluster.kubeconfig)
    assert cluster.kubectl("get", "role", fullname, "-n", watched, check=False).returncode != 0
    assert {k.plural for k in registry.KINDS if not k.namespaced} == {"nodes", "namespaces",
                                                                      "customresourcedefinitions"}
