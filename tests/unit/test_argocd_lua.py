"""The Argo CD customizations for LLMDeployment (gitops/argocd/resource_customizations/serving.llmops.dev/
LLMDeployment) run in Argo CD's own Lua VM: every case of health_test.yaml and actions/action_test.yaml through
gitops/argocd/harness (gopher-lua v1.1.2 set up as Argo CD v3.6.1 sets it up; built once and cached), the files
against the oracle taken from `kubectl llm` (llm_operator.dev.argocd), and the sandbox: a script that needs a library
Argo CD withholds fails here."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from llm_operator import api
from llm_operator.dev import argocd

DIRECTORY = argocd.customization_dir()
HEALTH = yaml.safe_load((DIRECTORY / "health_test.yaml").read_text())["tests"]
ACTIONS = yaml.safe_load((DIRECTORY / "actions" / "action_test.yaml").read_text())


def _case_names() -> list[str]:
    names = []
    for case in HEALTH:
        names += [f"health/{case['inputPath']} (openLibs={flag})" for flag in ("true", "false")]
    for case in ACTIONS["discoveryTests"]:
        names += [f"discovery/{case['inputPath']} (openLibs={flag})" for flag in ("false", "true")]
    names += [f"actions/{case['action']}/{case['inputPath']}" for case in ACTIONS["actionTests"]]
    return names


@pytest.fixture(scope="module")
def harness() -> argocd.Harness:
    return argocd.Harness()


@pytest.fixture(scope="module")
def results(harness: argocd.Harness) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in harness.test()}


@pytest.mark.parametrize("name", _case_names())
def test_case_passes_in_argo_cds_lua_vm(results: dict[str, dict[str, Any]], name: str) -> None:
    assert name in results, f"the harness did not run {name}"
    assert results[name]["ok"], results[name].get("detail")


def test_the_harness_ran_exactly_the_cases_in_the_files(results: dict[str, dict[str, Any]]) -> None:
    assert sorted(results) == sorted(_case_names())


def _load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict)
    return data


# ------------------------------------------------------------------------------------------------ layout


def test_upstream_layout() -> None:
    assert (DIRECTORY / "health.lua").is_file() and (DIRECTORY / "actions" / "discovery.lua").is_file()
    assert sorted(p.parent.name for p in (DIRECTORY / "actions").glob("*/action.lua")) == sorted(argocd.ACTIONS)
    assert {p.name for p in (DIRECTORY / "actions").iterdir() if p.is_dir()} == {*argocd.ACTIONS, "testdata"}
    assert DIRECTORY.parts[-3:] == ("resource_customizations", "serving.llmops.dev", "LLMDeployment")


def test_every_testdata_file_is_used_and_every_state_is_covered() -> None:
    health_inputs = {case["inputPath"] for case in HEALTH}
    assert health_inputs == {f"testdata/{p.name}" for p in (DIRECTORY / "testdata").glob("*.yaml")}
    statuses = {case["healthStatus"]["status"] for case in HEALTH}
    assert statuses == {"Healthy", "Progressing", "Suspended", "Degraded"}
    for case in HEALTH:
        assert case["healthStatus"]["status"] == argocd.expected_status(Path(case["inputPath"])), case
        assert case["healthStatus"]["message"], case
    reasons = {c["reason"] for case in HEALTH for c in (_load(DIRECTORY / case["inputPath"]).get("status") or {})
               .get("conditions", []) if c["type"] == "Degraded" and c["status"] == "True"}
    assert reasons >= {"GPUProductUnavailable", "SecretNotFound", "PVCNotFound", "MIGProfileUnavailable",
                       "Unschedulable", "ApplyFailed", "InvalidSpec", "CanaryAnalysisFailed", "RolloutAborted",
                       "TrafficRoutingFailed"}, reasons
    paused = {(_load(DIRECTORY / case["inputPath"])["status"].get("rollout") or {}).get("pausedReason")
              for case in HEALTH if case["healthStatus"]["status"] == "Suspended"}
    assert paused == {"PauseStep", "UserPause", "PrometheusUnreachable"}

    inputs = {f"testdata/{p.name}" for p in argocd.action_inputs(DIRECTORY)}
    assert {case["inputPath"] for case in ACTIONS["discoveryTests"]} == inputs
    outputs = {case["expectedOutputPath"] for case in ACTIONS["actionTests"] if "expectedOutputPath" in case}
    assert outputs == {f"testdata/{p.name}" for p in (DIRECTORY / "actions" / "testdata").glob(
        f"*{argocd.OUTPUT_MARK}*.yaml")}
    for action in argocd.ACTIONS:
        ran = [c for c in ACTIONS["actionTests"] if c["action"] == action]
        assert any("expectedOutputPath" in c for c in ran), f"no case where {action} applies"
        assert any("expectedErrorMessage" in c for c in ran), f"no case where {action} is refused"


def test_testdata_are_live_objects_as_the_api_server_returned_them() -> None:
    for path in [*(DIRECTORY / "testdata").glob("*.yaml"), *argocd.action_inputs(DIRECTORY)]:
        obj = _load(path)
        meta = obj["metadata"]
        assert meta.get("uid") and meta.get("resourceVersion") and meta.get("creationTimestamp"), path.name
        assert "managedFields" not in meta and argocd.LAST_APPLIED not in (meta.get("annotations") or {}), path.name
        if path.name != "degraded_invalidSpec.yaml":  # stored under an older CRD on purpose
            api.parse(obj)
        if path.parent.name == "testdata" and path.parent.parent.name == "actions":
            assert obj == _load(DIRECTORY / "testdata" / path.name), f"{path.name}: the same capture in both folders"


# ------------------------------------------------------------------------------------------------ the oracle


def test_discovery_offers_what_kubectl_llm_allows() -> None:
    for case in ACTIONS["discoveryTests"]:
        assert case["result"] == argocd.expected_discovery(_load(DIRECTORY / "actions" / case["inputPath"])), case


def test_actions_run_exactly_where_kubectl_llm_would_and_write_its_annotations(harness: argocd.Harness) -> None:
    for case in ACTIONS["actionTests"]:
        obj = _load(DIRECTORY / "actions" / case["inputPath"])
        refused = argocd.refusal(case["action"], obj)
        if "expectedErrorMessage" in case:
            assert refused is not None, case
            continue
        assert refused is None, case
        assert _load(DIRECTORY / "actions" / case["expectedOutputPath"]) == argocd.expected_after(case["action"], obj)
        _, patch = harness.action(obj, case["action"])
        # What Argo CD's API server sends: a merge patch of annotations only, never spec or status.
        assert set(patch) == {"metadata"} and set(patch["metadata"]) == {"annotations"}, patch
        annotations = patch["metadata"]["annotations"]
        if case["action"] == "restart":
            assert list(annotations) == [argocd.RESTARTED_AT]
        elif case["action"] in ("promote", "promote-full", "abort", "retry"):
            value = annotations["serving.llmops.dev/rollout-request"]
            assert value == f"{case['action']}/argocd-rv{obj['metadata']['resourceVersion']}"
            from llm_operator.rollout import requests

            assert requests.parse(value).valid, "the operator accepts Argo CD's request value"


def test_the_request_id_changes_with_every_write(harness: argocd.Harness) -> None:
    obj = _load(DIRECTORY / "actions" / "testdata" / "suspended_pauseStep.yaml")
    first, _ = harness.action(obj, "promote")
    # The write itself gives the object a new resourceVersion: the next click is a new request.
    first["metadata"]["resourceVersion"] = str(int(obj["metadata"]["resourceVersion"]) + 1)
    second, _ = harness.action(first, "promote")
    key = "serving.llmops.dev/rollout-request"
    assert first["metadata"]["annotations"][key] != second["metadata"]["annotations"][key]


# ------------------------------------------------------------------------------------------------ the sandbox


@pytest.mark.parametrize(("script", "failing"), [
    ("health.lua", "health/"),
    ("actions/discovery.lua", "discovery/"),
    ("actions/pause/action.lua", "actions/pause/"),
])
def test_a_script_that_needs_the_string_library_fails(harness: argocd.Harness, tmp_path: Path, script: str,
                                                      failing: str) -> None:
    """Argo CD runs argocd-cm health scripts, discovery and actions without Lua's string library (built-in health
    scripts get it): a script that uses it must fail the cases that run the way the server does, although full
    Lua runs it fine."""
    copy = tmp_path / "LLMDeployment"
    shutil.copytree(DIRECTORY, copy)
    path = copy / script
    path.write_text('local probe = string.format("%s", "sandbox")\n' + path.read_text())
    results = harness.test(copy)
    failed = {r["name"] for r in results if not r["ok"]}
    sandboxed = {r["name"] for r in results if r["name"].startswith(failing)
                 and (failing == "actions/pause/" or "(openLibs=false)" in r["name"])}
    assert failed == sandboxed and failed, (failed, sandboxed)
    open_libs = [r for r in results if r["name"].startswith(failing) and "(openLibs=true)" in r["name"]]
    assert all(r["ok"] for r in open_libs), "with the standard libraries the script runs"


def test_health_copes_with_a_sparse_status(harness: argocd.Harness) -> None:
    obj = _load(DIRECTORY / "testdata" / "healthy_ready.yaml")
    obj["status"]["conditions"] = [{"type": "Ready", "status": "True"}]  # no message, no reason
    assert harness.health(obj) == {"status": "Healthy", "message": ""}
    obj["status"] = {"observedGeneration": obj["metadata"]["generation"]}
    assert harness.health(obj) == {"status": "Progressing", "message": "Waiting for the Ready condition"}


# ------------------------------------------------------------------------------------------------ install file


def test_the_argocd_cm_patch_is_generated_from_the_scripts() -> None:
    committed = _load(argocd.checkout_root() / argocd.ARGOCD_CM_PATCH)
    assert committed == argocd.argocd_cm()
    actions = yaml.safe_load(committed["data"]["resource.customizations.actions.serving.llmops.dev_LLMDeployment"])
    assert sorted(d["name"] for d in actions["definitions"]) == sorted(argocd.ACTIONS)
    assert json.dumps(committed)  # plain data, nothing YAML-specific
