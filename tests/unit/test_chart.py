"""The Helm chart, with no cluster: the real `helm` renders and lints it, `promtool` checks its rules, and every
generated part is checked against its one source (CRD, RBAC rules, metrics files, dashboard, values, docs).

The cluster half (server-side dry runs, install, the operator on the chart's ServiceAccount, upgrade, uninstall) is
tests/e2e/test_chart.py.
"""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml
from llm_operator import __version__, _chart, _crd, cli, metrics
from llm_operator import _kinds as registry

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / _chart.CHART
KUBE_VERSION = "1.36.3"  # the dev cluster's; this helm build's own default (v1.20) predates the chart's kubeVersion
RELEASE, NAMESPACE = "triton-llm-operator", "llmops-system"

# The value sets the chart is tested with (here and, against the real API server, in tests/e2e/test_chart.py).
VALUE_SETS: dict[str, dict[str, Any]] = {
    "default": {},
    "namespaced": {"watch": {"namespaces": ["team-a", "team-b"]}, "logLevel": "debug"},
    "monitoring": {
        "metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}}},
        "prometheusRule": {"enabled": True, "labels": {"release": "prometheus"}},
        "recordingRules": {"enabled": True},
        "prometheusAdapterRules": {"enabled": True},
        "dashboards": {"enabled": True},
    },
}


# ------------------------------------------------------------------------------------------------ helpers


@functools.cache
def helm_binary() -> Path:
    """helm from the project's binaries (e2e/build-binaries.sh builds it beside kubectl; LLMCTL_BIN_DIR or
    KUBEBUILDER_ASSETS name another folder)."""
    from llm_operator.dev import resolve_bin_dir

    path = resolve_bin_dir() / "helm"
    assert os.access(path, os.X_OK), f"no helm in {path.parent}: run `make binaries` (e2e/build-binaries.sh)"
    return path


def helm(*args: str, home: Path, kubeconfig: Path | None = None, check: bool = True,
         timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run helm with its config, cache and data folders under ``home`` (never the user's)."""
    env = {**os.environ, "HELM_CONFIG_HOME": str(home / "config"), "HELM_CACHE_HOME": str(home / "cache"),
           "HELM_DATA_HOME": str(home / "data")}
    if kubeconfig is not None:
        env["KUBECONFIG"] = str(kubeconfig)
    proc = subprocess.run([str(helm_binary()), *args], capture_output=True, text=True, env=env, check=False,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}{proc.stdout}")
    return proc


def values_file(values: dict[str, Any], directory: Path, name: str = "values.yaml") -> Path:
    path = directory / name
    path.write_text(yaml.safe_dump(values))
    return path


def template(values: dict[str, Any] | None, home: Path, *extra: str, namespace: str = NAMESPACE,
             release: str = RELEASE, check: bool = True) -> subprocess.CompletedProcess[str]:
    return helm("template", release, str(CHART), "--namespace", namespace, "--kube-version", KUBE_VERSION,
                "-f", str(values_file(values or {}, home)), *extra, home=home, check=check)


_rendered: dict[str, str] = {}


def render(values: dict[str, Any] | None, home: Path, *extra: str, namespace: str = NAMESPACE,
           release: str = RELEASE) -> list[dict[str, Any]]:
    """The documents `helm template` renders (each distinct rendering runs helm once per test process)."""
    key = json.dumps([values, extra, namespace, release], sort_keys=True)
    if key not in _rendered:
        _rendered[key] = template(values, home, *extra, namespace=namespace, release=release).stdout
    return [d for d in yaml.safe_load_all(_rendered[key]) if d]


def one(docs: Iterable[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"{len(found)} {kind} {name or ''} in {[(d['kind'], d['metadata']['name']) for d in docs]}"
    return found[0]


def triples(rules: Sequence[dict[str, Any]]) -> set[tuple[str, str, str]]:
    return {(g, r, v) for rule in rules for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}


def bound_rules(docs: list[dict[str, Any]], sa_namespace: str, sa_name: str) -> dict[str | None, set[Any]]:
    """What the ServiceAccount may do, by namespace (None: cluster-wide), from the rendered roles and bindings."""
    roles = {(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]): d for d in docs
             if d["kind"] in ("ClusterRole", "Role")}
    out: dict[str | None, set[Any]] = {}
    for binding in (d for d in docs if d["kind"] in ("ClusterRoleBinding", "RoleBinding")):
        if {"kind": "ServiceAccount", "name": sa_name, "namespace": sa_namespace} not in binding["subjects"]:
            continue
        ns = binding["metadata"].get("namespace") if binding["kind"] == "RoleBinding" else None
        ref = binding["roleRef"]
        role = roles[(ref["kind"], ns if ref["kind"] == "Role" else None, ref["name"])]
        out.setdefault(ns, set()).update(triples(role["rules"]))
    return out


def registry_triples(namespaced: bool | None = None) -> set[tuple[str, str, str]]:
    kinds = [k for k in registry.KINDS if not k.own_namespace and (namespaced is None or k.namespaced == namespaced)]
    return triples(registry.cluster_role_rules(kinds))


def lease_triples() -> set[tuple[str, str, str]]:
    """Leader election's rules: a Role in the release namespace, never cluster-wide."""
    return triples(registry.own_namespace_rules())


def promtool() -> str:
    from tests.unit.test_metrics_vocabulary import promtool as find

    return find()


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path


# ------------------------------------------------------------------------------------- generated = source


def test_generated_files_are_up_to_date() -> None:
    stale = _chart.stale(ROOT)
    assert not stale, f"stale generated files {[str(p) for p in stale]}: run `llmctl chart` (or `make crd`)"


def test_check_command_reports_a_stale_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / _chart.SCHEMA_PATH).parent.mkdir(parents=True)
    (tmp_path / _chart.SCHEMA_PATH).write_text((ROOT / _chart.SCHEMA_PATH).read_text())
    assert cli.main(["chart", "--root", str(tmp_path)]) == 0
    assert cli.main(["chart", "--check", "--root", str(tmp_path)]) == 0
    (tmp_path / _chart.RBAC_DOC).write_text("# edited by hand\n")
    assert cli.main(["chart", "--check", "--root", str(tmp_path)]) == 1
    assert "docs/rbac.yaml is out of date; regenerate it with: llmctl chart" in capsys.readouterr().err


def test_chart_crd_is_the_crd_of_crds_folder(home: Path) -> None:
    committed = yaml.safe_load((ROOT / _crd.CRD_PATH).read_text())
    crd = one(render(None, home), "CustomResourceDefinition")
    assert crd["spec"] == committed["spec"] == _crd.crd_manifest()["spec"]
    assert crd["metadata"]["name"] == committed["metadata"]["name"]
    assert committed["metadata"]["labels"].items() <= crd["metadata"]["labels"].items()
    assert crd["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
    assert not any(d["kind"] == "CustomResourceDefinition" for d in render({"crds": {"install": False}}, home))
    no_keep = one(render({"crds": {"keep": False, "annotations": {"a": "b"}}}, home), "CustomResourceDefinition")
    assert no_keep["metadata"]["annotations"] == {"a": "b"}
    assert "annotations" not in one(render({"crds": {"keep": False}}, home), "CustomResourceDefinition")["metadata"]


def test_chart_crd_fits_client_side_apply() -> None:
    """Argo CD's default (client-side) apply stores the object in an annotation, limited to 256 KiB."""
    assert len(json.dumps(_crd.crd_manifest())) < 262144 * 0.8


def test_cluster_wide_rbac_is_exactly_the_registry(home: Path) -> None:
    docs = render(None, home)
    assert bound_rules(docs, NAMESPACE, RELEASE) == {None: registry_triples(), NAMESPACE: lease_triples()}
    assert lease_triples() == {("coordination.k8s.io", "leases", v) for v in ("get", "create", "update")}
    role = one(docs, "ClusterRole", RELEASE)
    assert [(d["kind"], d["metadata"]["namespace"]) for d in docs if d["kind"] in ("Role", "RoleBinding")] == [
        ("Role", NAMESPACE), ("RoleBinding", NAMESPACE)]  # only leader election's
    shipped = list(yaml.safe_load_all((ROOT / "docs/rbac.yaml").read_text()))
    docs_role = next(d for d in shipped if d["kind"] == "ClusterRole")
    assert triples(role["rules"]) == triples(docs_role["rules"])  # the kubectl-apply install grants the same
    assert triples(next(d for d in shipped if d["kind"] == "Role")["rules"]) == lease_triples()
    off = render({"leaderElection": {"enabled": False}, "replicaCount": 1}, home)
    assert bound_rules(off, NAMESPACE, RELEASE) == {None: registry_triples()}


def test_namespaced_rbac_grants_cluster_wide_only_cluster_scoped_kinds(home: Path) -> None:
    docs = render(VALUE_SETS["namespaced"], home)
    granted = bound_rules(docs, NAMESPACE, RELEASE)
    assert granted == {
        None: registry_triples(namespaced=False),  # nodes, namespaces, CRDs
        "team-a": registry_triples(namespaced=True),
        "team-b": registry_triples(namespaced=True),
        NAMESPACE: lease_triples(),  # the leader Lease, in the release namespace
    }
    assert registry_triples(namespaced=False) | registry_triples(namespaced=True) == registry_triples()
    assert {r for _, r, _ in registry_triples(namespaced=False)} == {"nodes", "namespaces",
                                                                     "customresourcedefinitions"}


def test_aggregated_roles_are_for_people_not_the_operator(home: Path) -> None:
    docs = render(None, home)
    view, edit = one(docs, "ClusterRole", f"{RELEASE}-view"), one(docs, "ClusterRole", f"{RELEASE}-edit")
    assert view["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"] == "true"
    assert edit["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-edit"] == "true"
    assert "rbac.authorization.k8s.io/aggregate-to-view" not in edit["metadata"]["labels"]
    assert {v for _, _, v in triples(view["rules"])} == {"get", "list", "watch"}
    off = render({"rbac": {"aggregateToDefaultRoles": False}}, home)
    assert [d["metadata"]["name"] for d in off if d["kind"] == "ClusterRole"] == [RELEASE]
    assert not any(d["kind"].endswith("Role") or d["kind"].endswith("Binding")
                   for d in render({"rbac": {"create": False, "aggregateToDefaultRoles": False}}, home))


# ------------------------------------------------------------------------------------------- lint, schema


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_helm_lint_strict(name: str, home: Path) -> None:
    proc = helm("lint", "--strict", str(CHART), "--kube-version", KUBE_VERSION, "--namespace", NAMESPACE,
                "-f", str(values_file(VALUE_SETS[name], home)), home=home)
    assert "1 chart(s) linted, 0 chart(s) failed" in proc.stdout, proc.stdout
    assert "[WARNING]" not in proc.stdout and "[ERROR]" not in proc.stdout, proc.stdout


@pytest.mark.parametrize(("values", "words"), [
    ({"imag": {"tag": "x"}}, ["additional properties", "'imag'"]),  # a typo at the root
    ({"metrics": {"serviceMonitor": {"enable": True}}}, ["/metrics/serviceMonitor", "'enable'"]),  # in a section
    ({"prometheusRule": {"alerts": {"degraded": {"enabled": True, "for": "10m", "severity": "x", "fr": "1m"}}}},
     ["/prometheusRule/alerts/degraded", "'fr'"]),
    ({"replicaCount": "one"}, ["/replicaCount", "got string, want integer"]),  # a wrong type
    ({"replicaCount": -1}, ["/replicaCount", "minimum"]),
    ({"leaderElection": {"lease": 15}}, ["/leaderElection", "'lease'"]),
    ({"logLevel": "verbose"}, ["/logLevel", "value must be one of 'debug', 'info', 'warning', 'error'"]),
    ({"watch": {"namespaces": ["team-*"]}}, ["/watch/namespaces/0", "does not match pattern"]),
    ({"metrics": {"port": 70000}}, ["/metrics/port", "maximum"]),
    ({"prometheusRule": {"alerts": {"degraded": {"enabled": True, "for": "ten minutes", "severity": "x"}}}},
     ["/prometheusRule/alerts/degraded/for", "does not match pattern"]),
    ({"image": {"digest": "latest"}}, ["/image/digest", "does not match pattern"]),
])
def test_schema_rejects_typos_and_wrong_types_with_the_path(values: dict[str, Any], words: list[str],
                                                            home: Path) -> None:
    proc = template(values, home, check=False)
    assert proc.returncode != 0, proc.stdout[:500]
    message = proc.stderr
    assert "values don't meet the specifications of the schema" in message, message
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"


def test_schema_accepts_what_a_parent_chart_and_kubernetes_fields_bring(home: Path) -> None:
    docs = render({
        "global": {"imageRegistry": "r.example", "anything": {"nested": True}},  # Helm passes global to subcharts
        "enabled": True,  # a parent's dependency condition
        "resources": {"requests": {"cpu": "1", "nvidia.com/gpu": "0"}},  # free-form Kubernetes fields stay open
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["system"]}]}]}}},
        "podAnnotations": {"example.com/x": "v"},
    }, home)
    assert one(docs, "Deployment")["spec"]["template"]["metadata"]["annotations"] == {"example.com/x": "v"}


def test_the_chart_works_as_a_subchart(home: Path) -> None:
    """A parent chart passes `global` and its dependency condition key; the schema must take both."""
    import shutil

    parent = home / "parent"
    (parent / "charts").mkdir(parents=True)
    shutil.copytree(CHART, parent / "charts" / "triton-llm-operator")
    (parent / "Chart.yaml").write_text(yaml.safe_dump({
        "apiVersion": "v2", "name": "platform", "version": "1.0.0",
        "dependencies": [{"name": "triton-llm-operator", "version": "0.1.0",
                          "condition": "triton-llm-operator.enabled"}]}))
    (parent / "values.yaml").write_text(yaml.safe_dump({
        "global": {"imageRegistry": "r.example"},
        "triton-llm-operator": {"enabled": True, "logLevel": "debug"}}))
    out = helm("template", "p", str(parent), "--kube-version", KUBE_VERSION, home=home).stdout
    assert "--log-level=debug" in out and "kind: CustomResourceDefinition" in out
    typo = helm("template", "p", str(parent), "--kube-version", KUBE_VERSION, "--set",
                "triton-llm-operator.loglevel=debug", home=home, check=False)
    assert typo.returncode != 0 and "'loglevel'" in typo.stderr, typo.stderr
    off = helm("template", "p", str(parent), "--kube-version", KUBE_VERSION, "--set",
               "triton-llm-operator.enabled=false", home=home).stdout
    assert "kind: Deployment" not in off


def test_values_yaml_holds_every_schema_default() -> None:
    schema = _chart.load_schema(ROOT)
    values = yaml.safe_load((CHART / "values.yaml").read_text())

    def check(props: dict[str, Any], have: dict[str, Any], path: str) -> None:
        for key, raw in props.items():
            node = _chart._resolve(raw, schema)
            if "properties" in node and "default" not in node:
                check(node["properties"], have[key], f"{path}{key}.")
            elif "default" in node:
                assert have[key] == node["default"], f"{path}{key}"
            else:
                assert key not in have, f"{path}{key} is accepted but set by nobody"

    check(schema["properties"], values, "")
    assert set(values) <= set(schema["properties"])


def test_values_reference_documents_every_key() -> None:
    schema = _chart.load_schema(ROOT)
    doc = (ROOT / _chart.VALUES_DOC).read_text()

    def paths(props: dict[str, Any], prefix: str) -> Iterable[str]:
        for key, raw in props.items():
            node = _chart._resolve(raw, schema)
            yield prefix + key
            if "properties" in node and "default" not in node:
                yield from paths(node["properties"], f"{prefix}{key}.")

    for path in paths(schema["properties"], ""):
        node = _chart._resolve(schema["properties"][path], schema) if "." not in path else {}
        if "properties" in node and "default" not in node:
            assert f"## `{path}`" in doc, path  # a top-level section: its own table
        else:
            assert f"| `{path}` |" in doc, path
    assert "one of `\"debug\"`, `\"info\"`, `\"warning\"`, `\"error\"`" in doc


# ------------------------------------------------------------------------------------------ the Deployment


def test_deployment_runs_llmctl_with_probes_on_kopfs_health_endpoint(home: Path) -> None:
    deploy = one(render(None, home), "Deployment")
    pod = deploy["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == f"ghcr.io/llmops-dev/triton-llm-operator:{__version__}"  # appVersion
    assert container["command"] == ["llmctl"]
    args = cli.build_parser().parse_args(container["args"])  # llmctl itself accepts them
    assert args.func is cli._run and args.namespace is None and args.log_level == "info"
    assert args.metrics_port == 8080 and args.metrics_address == "0.0.0.0"
    assert args.liveness == "http://0.0.0.0:8081/healthz"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"health": 8081, "metrics": 8080}
    for probe in (container["livenessProbe"], container["startupProbe"]):
        assert probe["httpGet"] == {"path": "/healthz", "port": "health"}
    assert "readinessProbe" not in container
    # Two replicas with leader election by default: a rolling update hands the Lease over.
    assert deploy["spec"]["replicas"] == 2 and deploy["spec"]["strategy"] == {
        "type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}
    assert args.leader_elect and args.leader_election_namespace == NAMESPACE
    assert args.leader_election_id == "triton-llm-operator"
    assert (args.lease_duration, args.renew_deadline, args.retry_period) == (15, 10, 2)
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    assert env == {"LLMOPS_WORKERS": "8", "LLMOPS_RESYNC_SECONDS": "300"}
    refs = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in container["env"] if "valueFrom" in e}
    assert refs == {"POD_NAME": "metadata.name", "POD_NAMESPACE": "metadata.namespace"}
    assert pod["serviceAccountName"] == RELEASE and pod["automountServiceAccountToken"] is True


def test_deployment_values_reach_the_pod(home: Path) -> None:
    toleration = {"key": "dedicated", "operator": "Equal", "value": "system", "effect": "NoSchedule"}
    deploy = one(render({
        "image": {"tag": "0.2.0-rc1", "pullPolicy": "Always"},
        "watch": {"namespaces": ["team-a", "team-b"]},
        "logLevel": "warning",
        "metrics": {"port": 9100},
        "health": {"port": 9101},
        "operator": {"workers": 2, "resyncSeconds": 60, "skipNodeCheck": True},
        "extraArgs": ["--verbose"],
        "extraEnv": [{"name": "HTTPS_PROXY", "value": "http://proxy:3128"}],
        "nodeSelector": {"pool": "system"},
        "tolerations": [toleration],
        "affinity": {"podAntiAffinity": {}},
        "priorityClassName": "system-cluster-critical",
        "imagePullSecrets": [{"name": "ghcr"}],
        "extraVolumes": [{"name": "ca", "configMap": {"name": "ca"}}],
        "extraVolumeMounts": [{"name": "ca", "mountPath": "/etc/ca"}],
        "resources": {"limits": {"cpu": "1", "memory": "1Gi"}},
    }, home), "Deployment")
    pod = deploy["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["image"] == "ghcr.io/llmops-dev/triton-llm-operator:0.2.0-rc1" and c["imagePullPolicy"] == "Always"
    args = cli.build_parser().parse_args(c["args"])
    assert args.namespace == ["team-a", "team-b"] and args.log_level == "warning" and args.verbose
    assert args.metrics_port == 9100 and args.liveness == "http://0.0.0.0:9101/healthz"
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"health": 9101, "metrics": 9100}
    env = {e["name"]: e["value"] for e in c["env"] if "value" in e}
    assert env == {"LLMOPS_WORKERS": "2", "LLMOPS_RESYNC_SECONDS": "60", "LLMOPS_SKIP_NODE_CHECK": "1",
                   "HTTPS_PROXY": "http://proxy:3128"}
    assert pod["nodeSelector"] == {"pool": "system"} and pod["tolerations"] == [toleration]
    assert pod["affinity"] == {"podAntiAffinity": {}} and pod["priorityClassName"] == "system-cluster-critical"
    assert pod["imagePullSecrets"] == [{"name": "ghcr"}]
    assert {"name": "ca", "mountPath": "/etc/ca"} in c["volumeMounts"]
    assert {"name": "ca", "configMap": {"name": "ca"}} in pod["volumes"]
    # Helm merges maps with the defaults: the default requests stay unless set to null.
    assert c["resources"] == {"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "100m", "memory": "256Mi"}}

    pinned = one(render({"image": {"digest": "sha256:" + "a" * 64, "tag": "ignored"}}, home), "Deployment")
    assert pinned["spec"]["template"]["spec"]["containers"][0]["image"] == (
        "ghcr.io/llmops-dev/triton-llm-operator@sha256:" + "a" * 64)
    off = render({"metrics": {"enabled": False}, "replicaCount": 0}, home)
    (c,) = one(off, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert "--metrics-port" not in " ".join(c["args"]) and [p["name"] for p in c["ports"]] == ["health"]
    assert not any(d["kind"] == "Service" for d in off) and one(off, "Deployment")["spec"]["replicas"] == 0


def test_leader_election_values_and_the_pod_disruption_budget(home: Path) -> None:
    docs = render(None, home)
    pdb = one(docs, "PodDisruptionBudget")
    assert pdb["spec"] == {"minAvailable": 1, "selector": one(docs, "Deployment")["spec"]["selector"]}
    assert pdb["metadata"]["namespace"] == NAMESPACE
    tuned = one(render({"replicaCount": 3, "podDisruptionBudget": {"minAvailable": 2}, "leaderElection": {
        "leaseName": "ops", "leaseDuration": 30, "renewDeadline": 20, "retryPeriod": 4}}, home), "Deployment")
    args = cli.build_parser().parse_args(tuned["spec"]["template"]["spec"]["containers"][0]["args"])
    assert (args.leader_election_id, args.lease_duration, args.renew_deadline, args.retry_period) == ("ops", 30, 20, 4)
    assert tuned["spec"]["replicas"] == 3
    # One replica: no PDB (it would block every drain). No election: one replica, Recreate, no Lease, no Role.
    assert not any(d["kind"] == "PodDisruptionBudget" for d in render({"replicaCount": 1}, home))
    single = render({"replicaCount": 1, "leaderElection": {"enabled": False}}, home)
    deploy = one(single, "Deployment")
    assert deploy["spec"]["strategy"] == {"type": "Recreate"}
    assert "--leader-elect" not in deploy["spec"]["template"]["spec"]["containers"][0]["args"]
    assert not any(d["kind"] in ("Role", "PodDisruptionBudget") for d in single)
    # Two writers without a leader are refused at render time.
    proc = template({"replicaCount": 2, "leaderElection": {"enabled": False}}, home, check=False)
    assert proc.returncode != 0 and "replicaCount > 1 needs leaderElection.enabled" in proc.stderr


def test_security_context_is_restricted(home: Path) -> None:
    """Pod Security 'restricted' (checked for real by the API server in tests/e2e/test_chart.py)."""
    pod = one(render(None, home), "Deployment")["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert c["securityContext"] == {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
                                    "readOnlyRootFilesystem": True}
    assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]  # writable scratch on a read-only root


def test_the_kubectl_apply_install_renders_only_the_deployment_for_docs_rbac(home: Path) -> None:
    """README 'Install with kubectl apply': docs/rbac.yaml's ServiceAccount runs the chart's Deployment."""
    sa = next(d for d in yaml.safe_load_all((ROOT / "docs/rbac.yaml").read_text()) if d["kind"] == "ServiceAccount")
    docs = render({"crds": {"install": False}, "rbac": {"create": False, "aggregateToDefaultRoles": False},
                   "serviceAccount": {"create": False, "name": sa["metadata"]["name"]}}, home,
                  "--show-only", "templates/deployment.yaml", namespace=sa["metadata"]["namespace"])
    (deploy,) = docs
    assert deploy["spec"]["template"]["spec"]["serviceAccountName"] == sa["metadata"]["name"]
    assert deploy["metadata"]["namespace"] == sa["metadata"]["namespace"]


# --------------------------------------------------------------------------------------- hygiene, labels


def test_templates_use_no_lookup_randomness_or_time() -> None:
    """Argo CD renders with `helm template`: lookup is always empty and anything random or dated is a diff."""
    forbidden = re.compile(r"\b(lookup|randAlphaNum|randAlpha|randNumeric|randAscii|randInt|randBytes|uuidv4|now|"
                           r"date|dateInZone|unixEpoch|genCA|genPrivateKey|genSelfSignedCert|genSignedCert|"
                           r"derivePassword|htpasswd)\b")
    for path in sorted((CHART / "templates").rglob("*")):
        if path.is_file():
            for action in re.findall(r"\{\{(.*?)\}\}", path.read_text(), re.S):
                code = re.sub(r'"(?:[^"\\]|\\.)*"|`[^`]*`', '""', action)  # words in string literals are text
                assert not forbidden.search(code), f"{path.relative_to(ROOT)}: {{{{{action}}}}}"


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_rendering_is_deterministic_and_labelled(name: str, home: Path) -> None:
    first = template(VALUE_SETS[name], home).stdout
    assert template(VALUE_SETS[name], home).stdout == first
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    for doc in (d for d in yaml.safe_load_all(first) if d):
        labels = doc["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "triton-llm-operator", doc["metadata"]["name"]
        assert labels["app.kubernetes.io/instance"] == RELEASE
        assert labels["app.kubernetes.io/version"] == chart["appVersion"] == __version__
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["helm.sh/chart"] == f"triton-llm-operator-{chart['version']}"
    for doc in yaml.safe_load_all(first):
        if doc and doc["kind"] in ("Deployment",):
            assert doc["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/name": "triton-llm-operator",
                                                              "app.kubernetes.io/instance": RELEASE}


def test_names_follow_the_release(home: Path) -> None:
    docs = render(None, home, release="ops")
    assert one(docs, "Deployment")["metadata"]["name"] == "ops-triton-llm-operator"
    assert one(docs, "Service")["metadata"]["name"] == "ops-triton-llm-operator-metrics"
    assert one(render({"fullnameOverride": "llm-op"}, home), "Deployment")["metadata"]["name"] == "llm-op"


def test_notes_tell_what_to_do_next() -> None:
    notes = (CHART / "templates" / "NOTES.txt").read_text()
    for words in ("rollout status deployment/", "kubectl get llmd", "helm.sh/resource-policy: keep",
                  "rules.existing="):
        assert words in notes, words


# ------------------------------------------------------------------------------------------ observability


def test_service_monitor_scrapes_the_metrics_service(home: Path) -> None:
    docs = render(VALUE_SETS["monitoring"], home)
    service, monitor = one(docs, "Service"), one(docs, "ServiceMonitor")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == service["spec"]["ports"][0]["name"] == "metrics"
    assert endpoint["honorLabels"] is True  # llmop_llmdeployment_*{namespace} is the LLMDeployment's
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"
    assert service["spec"]["selector"].items() <= one(docs, "Deployment")["spec"]["template"]["metadata"][
        "labels"].items()
    assert not any(d["kind"] == "ServiceMonitor" for d in render(None, home))


def test_recording_rules_and_adapter_config_are_the_shipped_files(home: Path) -> None:
    docs = render(VALUE_SETS["monitoring"], home)
    recording = one(docs, "PrometheusRule", f"{RELEASE}-recording-rules")
    assert recording["spec"] == yaml.safe_load(metrics.RULES_PATH.read_text())
    adapter = one(docs, "ConfigMap", f"{RELEASE}-adapter-rules")
    assert yaml.safe_load(adapter["data"]["config.yaml"]) == yaml.safe_load(metrics.ADAPTER_CONFIG_PATH.read_text())
    moved = render({"prometheusAdapterRules": {"enabled": True, "namespace": "monitoring"}}, home)
    assert one(moved, "ConfigMap", f"{RELEASE}-adapter-rules")["metadata"]["namespace"] == "monitoring"


def _alert_rules(home: Path, values: dict[str, Any] | None = None) -> dict[str, Any]:
    docs = render(values or VALUE_SETS["monitoring"], home)
    spec: dict[str, Any] = one(docs, "PrometheusRule", f"{RELEASE}-alerts")["spec"]
    return spec


def test_promtool_accepts_the_alerts(home: Path) -> None:
    rules = home / "alerts.yaml"
    spec = _alert_rules(home)
    rules.write_text(yaml.safe_dump(spec))
    proc = subprocess.run([promtool(), "check", "rules", str(rules)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    names = [r["alert"] for g in spec["groups"] for r in g["rules"]]
    assert names == ["LLMDeploymentDegraded", "LLMDeploymentCanaryAborted", "LLMDeploymentScalingLimitedByGPU",
                     "LLMDeploymentTTFTBudgetBurnFast", "LLMDeploymentTTFTBudgetBurnSlow", "TritonLLMOperatorDown",
                     "TritonLLMOperatorReconcileErrors"]


def test_alerts_can_be_turned_off_one_by_one(home: Path) -> None:
    off = {name: {"enabled": False, "for": "1m", "severity": "info"} for name in
           ("degraded", "canaryAborted", "scalingLimitedByGPU", "ttftSLOBurnFast", "ttftSLOBurnSlow")}
    spec = _alert_rules(home, {"prometheusRule": {"enabled": True, "alerts": off}})
    # operatorDown needs the ServiceMonitor (its job label): only the reconcile-error alert is left.
    assert [r["alert"] for g in spec["groups"] for r in g["rules"]] == ["TritonLLMOperatorReconcileErrors"]


def test_alerts_fire_on_the_series_they_are_for(home: Path) -> None:
    """promtool evaluates the rendered alerts (annotations left out: promtool compares them verbatim) on the
    series the operator exports (llmop_llmdeployment_condition, _revision_info) and the recording rules make."""
    spec = _alert_rules(home, {**VALUE_SETS["monitoring"], "prometheusRule": {"enabled": True,
                                                                                "ttftSLOSeconds": 2}})
    for group in spec["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    (home / "alerts.yaml").write_text(yaml.safe_dump(spec))
    op = 'job="triton-llm-operator-metrics",instance="10.0.0.1:8080"'

    def cond(name: str, type_: str, reason: str, value: int) -> dict[str, str]:
        return {"series": f'llmop_llmdeployment_condition{{{op},namespace="team",llmdeployment="{name}",'
                          f'type="{type_}",reason="{reason}"}}', "values": f"{value}x120"}

    def alert(severity: str, **labels: str) -> dict[str, Any]:
        return {"exp_labels": {"severity": severity, **labels}}

    tests = {
        "rule_files": ["alerts.yaml"],
        "evaluation_interval": "1m",
        "tests": [{
            "interval": "1m",
            "input_series": [
                cond("sick", "Degraded", "SecretNotFound", 1),
                cond("fine", "Degraded", "AsExpected", 0),
                cond("canary", "Degraded", "CanaryAnalysisFailed", 1),
                cond("full", "ScalingLimited", "InsufficientGPU", 1),
                cond("capped", "ScalingLimited", "TooManyReplicas", 1),
                {"series": f'llmop_llmdeployment_revision_info{{{op},namespace="team",llmdeployment="slow",'
                           'revision="rslow"}', "values": "1x120"},
                # median 3 s > 2 s: fast burn, named through the revision info
                {"series": 'llmops:revision:ttft_seconds:p50{namespace="team",revision="rslow",backend="vllm"}',
                 "values": "3x120"},
                # no revision info (operator not scraped): still fires, without the name
                {"series": 'llmops:revision:ttft_seconds:p50{namespace="team",revision="rorphan",backend="vllm"}',
                 "values": "3x120"},
                {"series": 'llmops:revision:ttft_seconds:p50{namespace="team",revision="rfast",backend="vllm"}',
                 "values": "0.5x120"},
                # p95 above the objective for good vs once back under it within the hour
                {"series": 'llmops:revision:ttft_seconds:p95{namespace="team",revision="rslow",backend="vllm"}',
                 "values": "2.5x120"},
                {"series": 'llmops:revision:ttft_seconds:p95{namespace="team",revision="rdip",backend="vllm"}',
                 "values": "2.5x30 1.5 2.5x89"},
                {"series": 'up{job="triton-llm-operator-metrics",namespace="llmops-system"}',
                 "values": "1x5 0x115"},
                {"series": 'llmop_reconcile_total{job="j",namespace="llmops-system",result="error"}',
                 "values": "0+2x120"},
                {"series": 'llmop_reconcile_total{job="j",namespace="llmops-system",result="success"}',
                 "values": "0+100x120"},
            ],
            "alert_rule_test": [
                {"eval_time": "5m", "alertname": "LLMDeploymentDegraded", "exp_alerts": []},  # for: 10m
                {"eval_time": "15m", "alertname": "LLMDeploymentDegraded", "exp_alerts": [
                    alert("warning", namespace="team", llmdeployment="sick", reason="SecretNotFound")]},
                {"eval_time": "1m", "alertname": "LLMDeploymentCanaryAborted", "exp_alerts": [
                    alert("warning", namespace="team", llmdeployment="canary", reason="CanaryAnalysisFailed")]},
                {"eval_time": "20m", "alertname": "LLMDeploymentScalingLimitedByGPU", "exp_alerts": [
                    alert("warning", namespace="team", llmdeployment="full")]},
                {"eval_time": "20m", "alertname": "LLMDeploymentTTFTBudgetBurnFast", "exp_alerts": [
                    alert("critical", slo="ttft", namespace="team", llmdeployment="slow", revision="rslow",
                          backend="vllm"),
                    alert("critical", slo="ttft", namespace="team", revision="rorphan", backend="vllm")]},
                {"eval_time": "80m", "alertname": "LLMDeploymentTTFTBudgetBurnSlow", "exp_alerts": [
                    alert("warning", slo="ttft", namespace="team", llmdeployment="slow", revision="rslow",
                          backend="vllm")]},
                {"eval_time": "20m", "alertname": "TritonLLMOperatorDown", "exp_alerts": [
                    alert("critical", job="triton-llm-operator-metrics", namespace="llmops-system")]},
                {"eval_time": "30m", "alertname": "TritonLLMOperatorReconcileErrors", "exp_alerts": [
                    alert("warning", job="j", namespace="llmops-system")]},
            ],
        }, {
            "interval": "1m",  # the operator was never scraped at all
            "input_series": [{"series": 'up{job="other",namespace="x"}', "values": "1x20"}],
            "alert_rule_test": [{"eval_time": "10m", "alertname": "TritonLLMOperatorDown", "exp_alerts": [
                alert("critical", job="triton-llm-operator-metrics", namespace="llmops-system")]}],
        }],
    }
    test_file = home / "alerts_test.yaml"
    test_file.write_text(yaml.safe_dump(tests, sort_keys=False))
    proc = subprocess.run([promtool(), "test", "rules", str(test_file)], capture_output=True, text=True,
                          timeout=60, cwd=home)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_dashboard_queries_parse_and_read_series_that_exist(home: Path) -> None:
    docs = render(VALUE_SETS["monitoring"], home)
    cm = one(docs, "ConfigMap", f"{RELEASE}-dashboard")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    board = json.loads(cm["data"]["triton-llm-serving.json"])
    assert board == _chart.dashboard()
    titles = " | ".join(p["title"] for p in board["panels"])
    for words in ("Time to first token", "tokens/s", "Queue depth", "Replicas", "Canary weight"):
        assert words in titles, words
    exprs = list(_chart.dashboard_exprs(board))
    substituted = [e.replace("$namespace", ".*").replace("$llmdeployment", ".*") for e in exprs]
    rules = {"groups": [{"name": "dashboard", "rules": [{"record": f"dashboard:query{i}", "expr": e}
                                                        for i, e in enumerate(substituted)]}]}
    (home / "dashboard_rules.yaml").write_text(yaml.safe_dump(rules))
    proc = subprocess.run([promtool(), "check", "rules", str(home / "dashboard_rules.yaml")], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    recorded = {r["record"] for g in yaml.safe_load(metrics.RULES_PATH.read_text())["groups"] for r in g["rules"]}
    import llm_operator._controller  # noqa: F401  (registers the operator's metrics)
    from prometheus_client import REGISTRY
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
    exported = {m.name + suffix for m in REGISTRY.collect() for suffix in suffixes.get(m.type, ("",))}
    for expr in exprs:
        for name in re.findall(r"\b(llmops?:[a-z0-9_:]+|llmop_[a-z0-9_]+)", expr):
            assert name in recorded or name in exported, f"{name} (in {expr}) is neither recorded nor exported"
    moved = render({"dashboards": {"enabled": True, "namespace": "grafana", "label": "dash", "labelValue": "yes",
                                   "annotations": {"grafana_folder": "LLM"}}}, home)
    cm = one(moved, "ConfigMap", f"{RELEASE}-dashboard")
    assert cm["metadata"]["namespace"] == "grafana" and cm["metadata"]["labels"]["dash"] == "yes"
    assert cm["metadata"]["annotations"] == {"grafana_folder": "LLM"}


# ------------------------------------------------------------------------------------ the operator image


def test_containerfile_builds_what_the_chart_runs(home: Path) -> None:
    text = (ROOT / "operator" / "Containerfile").read_text()
    pod = one(render(None, home), "Deployment")["spec"]["template"]["spec"]
    user = re.search(r"^USER (\d+):(\d+)$", text, re.M)
    assert user, "numeric USER uid:gid"
    assert int(user[1]) == pod["securityContext"]["runAsUser"] and int(user[2]) == pod["securityContext"]["runAsGroup"]
    assert re.search(r'^ENTRYPOINT \["llmctl"\]$', text, re.M)
    assert pod["containers"][0]["command"] == ["llmctl"]
    for source in re.findall(r"^COPY (?!--from)(.+) \S+$", text, re.M):
        for path in source.split():
            assert (ROOT / path).exists(), path
    base = re.search(r"python:(\d+)\.(\d+)", text)
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert base and requires == ">=3.11" and (int(base[1]), int(base[2])) >= (3, 11)
    # Only the operator's dependencies: the model runtime's (torch, tritonclient) stay out of the image.
    assert re.search(r"pip install [^\n]*/src$", text, re.M) and "[runtime]" not in text
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".venv" in ignored and "operator" not in ignored and "runtime" not in ignored


def test_one_value_moves_both_images_and_the_runtime_image_reaches_the_model_pods(home: Path) -> None:
    from llm_operator import builders

    def images(values: dict[str, Any] | None) -> tuple[str, str]:
        (c,) = one(render(values, home), "Deployment")["spec"]["template"]["spec"]["containers"]
        args = cli.build_parser().parse_args(c["args"])
        return c["image"], args.runtime_image

    operator_image, runtime_image = images(None)
    # The defaults are what `make images` tags, and what the operator uses without the flag.
    assert runtime_image == builders.DEFAULT_IMAGES["python"]
    tag = runtime_image.split(":")[-1]
    assert operator_image == f"ghcr.io/llmops-dev/triton-llm-operator:{tag}"
    moved = images({"imageRegistry": "registry.example.com/llmops"})
    assert moved == (f"registry.example.com/llmops/triton-llm-operator:{tag}",
                     f"registry.example.com/llmops/triton-llm-runtime:{tag}")
    pinned = images({"runtimeImage": {"digest": "sha256:" + "b" * 64}})
    assert pinned[1] == "ghcr.io/llmops-dev/triton-llm-runtime@sha256:" + "b" * 64
    with pytest.raises(AssertionError, match="/imageRegistry"):
        render({"imageRegistry": "has space"}, home)


def test_the_runtime_image_flag_sets_the_python_image_and_every_front(tmp_path: Path) -> None:
    from llm_operator import builders

    src = tmp_path / "m.yaml"
    src.write_text(yaml.safe_dump({
        "apiVersion": "serving.llmops.dev/v1alpha1", "kind": "LLMDeployment", "metadata": {"name": "m"},
        "spec": {"model": {"name": "m", "uri": "hf://org/m"}, "runtime": {"backend": "vllm"},
                 "resources": {"gpu": {"count": 1}}},
    }))
    # A child process: the setting is process-wide, for the operator's whole life.
    out = subprocess.run([sys.executable, "-m", "llm_operator.cli", "render", "-f", str(src),
                          "--runtime-image=registry.example.com/llmops/triton-llm-runtime:9"],
                         capture_output=True, text=True, check=True).stdout
    assert builders.DEFAULT_IMAGES["python"] != "registry.example.com/llmops/triton-llm-runtime:9"
    deploy = next(d for d in yaml.safe_load_all(out) if d and d["kind"] == "Deployment")
    triton, front = deploy["spec"]["template"]["spec"]["containers"]
    assert front["image"] == "registry.example.com/llmops/triton-llm-runtime:9"
    assert triton["image"].startswith("nvcr.io/nvidia/tritonserver:")
    bad = subprocess.run([sys.executable, "-m", "llm_operator.cli", "render", "-f", str(src), "--runtime-image=a b"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "--runtime-image must be an image reference" in bad.stderr
