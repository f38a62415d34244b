"""The GitOps example (examples/gitops/) is consistent: the Applications point at what exists, the waves order CRD,
operator and models, every autoscaled model that keeps replicas in Git has its ignoreDifferences rule, and the chart
renders with the Application's values. tests/e2e/test_gitops_example.py applies it to the dev cluster."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from llm_operator import api

from tests.unit.test_chart import CHART, KUBE_VERSION, helm, values_file

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "gitops"
WAVE = "argocd.argoproj.io/sync-wave"


def docs(path: Path) -> list[dict[str, Any]]:
    files = sorted(path.glob("*.yaml")) if path.is_dir() else [path]
    return [d for f in files for d in yaml.safe_load_all(f.read_text()) if d]


def apps() -> dict[str, dict[str, Any]]:
    return {a["metadata"]["name"]: a for a in docs(EXAMPLE / "apps")}


def test_the_root_application_syncs_the_operator_before_the_models() -> None:
    root = docs(EXAMPLE / "root-app.yaml")[0]
    assert root["kind"] == "Application" and root["spec"]["source"]["path"] == "examples/gitops/apps"
    waves = {name: int(app["metadata"]["annotations"][WAVE]) for name, app in apps().items()}
    assert waves == {"triton-llm-operator": 0, "llm-models": 1}
    for app in [root, *apps().values()]:
        assert app["apiVersion"] == "argoproj.io/v1alpha1" and app["metadata"]["namespace"] == "argocd"
        path = app["spec"]["source"]["path"]
        assert (ROOT / path).is_dir(), path


def test_the_chart_renders_with_the_applications_values_and_the_crd_goes_first(tmp_path: Path) -> None:
    source = apps()["triton-llm-operator"]["spec"]["source"]
    assert ROOT / source["path"] == CHART
    rendered = helm("template", source["helm"]["releaseName"], str(CHART), "--namespace", "llmops-system",
                    "--kube-version", KUBE_VERSION, "-f", str(values_file(source["helm"]["valuesObject"], tmp_path)),
                    home=tmp_path).stdout
    objs = [d for d in yaml.safe_load_all(rendered) if d]
    (crd,) = [o for o in objs if o["kind"] == "CustomResourceDefinition"]
    annotations = crd["metadata"]["annotations"]
    assert annotations[WAVE] == "-1" and annotations["argocd.argoproj.io/sync-options"] == "Prune=false"
    assert annotations["helm.sh/resource-policy"] == "keep"
    others = [o for o in objs if o["kind"] != "CustomResourceDefinition"]
    assert others and all(WAVE not in (o["metadata"].get("annotations") or {}) for o in others), "operator: wave 0"


def test_the_models_are_valid_and_come_after_their_route() -> None:
    models = docs(EXAMPLE / "models")
    llmds = [m for m in models if m["kind"] == "LLMDeployment"]
    assert {m["metadata"]["name"] for m in llmds} == {"chat", "qwen-7b"}
    for m in llmds:
        api.parse(m)
        assert "namespace" not in m["metadata"], "the Application's destination namespace applies"
        assert int(m["metadata"]["annotations"][WAVE]) == 1
    (route,) = [m for m in models if m["kind"] == "HTTPRoute"]
    assert int((route["metadata"].get("annotations") or {}).get(WAVE, "0")) == 0
    chat = next(m for m in llmds if m["metadata"]["name"] == "chat")
    assert chat["spec"]["rollout"]["canary"]["trafficRouting"]["gatewayAPI"]["httpRoute"] == route["metadata"]["name"]
    refs = {r["name"] for rule in route["spec"]["rules"] for r in rule["backendRefs"]}
    assert refs == {"chat-stable", "chat-canary"}


def test_ignore_differences_cover_exactly_what_others_write() -> None:
    app = apps()["llm-models"]
    options = set(app["spec"]["syncPolicy"]["syncOptions"])
    assert {"SkipDryRunOnMissingResource=true", "RespectIgnoreDifferences=true", "CreateNamespace=true"} <= options
    rules = app["spec"]["ignoreDifferences"]
    replicas = {r["name"] for r in rules
                if r["kind"] == "LLMDeployment" and r.get("jsonPointers") == ["/spec/replicas"]}
    # Every autoscaled model that keeps replicas in Git, and no other (a fixed model's replicas stay Git's).
    models = [m for m in docs(EXAMPLE / "models") if m["kind"] == "LLMDeployment"]
    autoscaled = {m["metadata"]["name"] for m in models if m["spec"].get("autoscaling") and "replicas" in m["spec"]}
    assert replicas == autoscaled
    assert replicas
    (route_rule,) = [r for r in rules if r["kind"] == "HTTPRoute"]
    assert route_rule["group"] == "gateway.networking.k8s.io"
    (expression,) = route_rule["jqPathExpressions"]
    assert '"chat-stable"' in expression and '"chat-canary"' in expression and expression.endswith("| .weight")
