"""The CRD generated from api.py: structure, descriptions, CEL rules, and the committed-file drift check."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from llm_operator import _crd, api, cli

REPO = Path(__file__).resolve().parents[2]
COMMITTED = REPO / _crd.CRD_PATH


def _walk(node: Any, path: str = "") -> Any:
    """Yield (path, schema node) for every schema node under `node`."""
    if not isinstance(node, dict):
        return
    yield path, node
    for name, sub in node.get("properties", {}).items():
        yield from _walk(sub, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from _walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _walk(node["additionalProperties"], f"{path}{{}}")


@pytest.fixture(scope="module")
def crd() -> dict[str, Any]:
    return _crd.crd_manifest()


@pytest.fixture(scope="module")
def schema(crd: dict[str, Any]) -> dict[str, Any]:
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def test_committed_crd_matches_models() -> None:
    assert COMMITTED.exists(), f"run `llmctl crd --output {_crd.CRD_PATH}`"
    assert COMMITTED.read_text() == _crd.crd_yaml(), (
        f"{_crd.CRD_PATH} is stale: regenerate it with `llmctl crd --output {_crd.CRD_PATH}`"
    )


def test_yaml_round_trips(crd: dict[str, Any]) -> None:
    assert yaml.safe_load(_crd.crd_yaml()) == crd


def test_names_scope_and_subresources(crd: dict[str, Any]) -> None:
    spec = crd["spec"]
    assert crd["metadata"]["name"] == "llmdeployments.serving.llmops.dev"
    assert spec["group"] == "serving.llmops.dev"
    assert spec["scope"] == "Namespaced"
    assert spec["names"]["kind"] == "LLMDeployment"
    assert spec["names"]["plural"] == "llmdeployments"
    assert spec["names"]["shortNames"] == ["llmd"]
    assert "all" in spec["names"]["categories"]
    (version,) = spec["versions"]
    assert version["name"] == "v1alpha1"
    assert version["served"]
    assert version["storage"]
    assert version["subresources"]["status"] == {}
    assert version["subresources"]["scale"] == {
        "specReplicasPath": ".spec.replicas",
        "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector",
    }


def test_scale_paths_point_at_fields_of_the_right_type(schema: dict[str, Any]) -> None:
    props = schema["properties"]
    assert props["spec"]["properties"]["replicas"]["type"] == "integer"
    assert props["status"]["properties"]["replicas"]["type"] == "integer"
    # HPA needs a *string* selector.
    assert props["status"]["properties"]["selector"]["type"] == "string"


def test_printer_columns_resolve_to_schema_fields(crd: dict[str, Any], schema: dict[str, Any]) -> None:
    columns = {c["name"]: c for c in crd["spec"]["versions"][0]["additionalPrinterColumns"]}
    assert list(columns)[:7] == ["Model", "Backend", "GPU", "Ready", "Reason", "Scaling", "Age"]
    for col in columns.values():
        path = col["jsonPath"]
        if path.startswith(".metadata") or "[?(" in path:
            continue
        node = schema
        for part in path.strip(".").split("."):
            node = node["properties"][part]
        assert node["type"] == col["type"] or col["type"] == "date", path


def test_structural_no_refs_no_forbidden_keywords(schema: dict[str, Any]) -> None:
    text = yaml.safe_dump(schema)
    for forbidden in (
        "$ref",
        "$defs",
        "title:",
        "const:",
        "patternProperties",
        "additionalProperties: false",
    ):
        assert forbidden not in text
    for path, node in _walk(schema):
        if node.get("x-kubernetes-int-or-string"):
            assert node["anyOf"] == [{"type": "integer"}, {"type": "string"}], path
            continue
        assert "type" in node, f"{path} has no type"
        assert "nullable" not in node, path
        if "properties" in node:
            assert "additionalProperties" not in node, path
        for key in ("anyOf", "allOf", "oneOf"):
            assert key not in node, f"{path}: {key} is only allowed for int-or-string"


def test_every_property_has_a_description(schema: dict[str, Any]) -> None:
    missing = []
    for path, node in _walk(schema):
        if path in ("", ".metadata") or path.endswith(("[]", "{}")):
            continue
        if not node.get("description"):
            missing.append(path)
    assert not missing, f"properties without a description: {missing}"


def test_every_string_list_and_map_is_bounded_for_cel_cost(schema: dict[str, Any]) -> None:
    unbounded = []
    for path, node in _walk(schema):
        if path.startswith(".metadata") or node.get("x-kubernetes-preserve-unknown-fields"):
            continue
        kind = node.get("type")
        if (
            kind == "string"
            and "maxLength" not in node
            and "enum" not in node
            and node.get("format") != "date-time"
            and path not in (".apiVersion", ".kind")
        ):
            unbounded.append(path)
        if kind == "array" and "maxItems" not in node:
            unbounded.append(path)
        if kind == "object" and "additionalProperties" in node and "maxProperties" not in node:
            unbounded.append(path)
    assert not unbounded, unbounded


def _rules(schema: dict[str, Any]) -> dict[str, list[str]]:
    return {
        path: [r["rule"] for r in node["x-kubernetes-validations"]]
        for path, node in _walk(schema)
        if "x-kubernetes-validations" in node
    }


def test_cel_rules_present_where_the_issue_asks(schema: dict[str, Any]) -> None:
    rules = _rules(schema)
    assert "has(self.uri) != has(self.pvc)" in rules[".spec.model"]
    assert "!has(self.minReplicas) || self.minReplicas <= self.maxReplicas" in rules[".spec.autoscaling"]
    assert any("% self.runtime.tensorParallelSize == 0" in r for r in rules[".spec"])
    assert "!(has(self.gpu) && has(self.mig))" in rules[".spec.resources"]
    assert "self.steps.filter(s, has(s.setWeight)).map(s, s.setWeight).isSorted()" in rules[".spec.rollout.canary"]
    weight = schema["properties"]["spec"]["properties"]["rollout"]["properties"]["canary"]["properties"]["steps"]
    assert (
        weight["items"]["properties"]["setWeight"]["minimum"],
        weight["items"]["properties"]["setWeight"]["maximum"],
    ) == (
        1,
        100,
    )


def test_every_cel_rule_has_a_message_and_valid_reason(schema: dict[str, Any]) -> None:
    for path, node in _walk(schema):
        for rule in node.get("x-kubernetes-validations", []):
            assert rule.get("message") or rule.get("messageExpression"), (path, rule)
            assert rule.get("reason", "FieldValueInvalid") in {
                "FieldValueInvalid",
                "FieldValueForbidden",
                "FieldValueRequired",
                "FieldValueDuplicate",
            }
            # Backslashes in single-quoted CEL strings are escape sequences; keep patterns free of them.
            assert "\\" not in rule["rule"], (path, rule["rule"])
            if "fieldPath" in rule:
                node_at = node
                for part in rule["fieldPath"].strip(".").split("."):
                    node_at = node_at["properties"][part]


def test_conditions_and_env_are_map_lists(schema: dict[str, Any]) -> None:
    conditions = schema["properties"]["status"]["properties"]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    assert set(conditions["items"]["required"]) == {
        "type",
        "status",
        "lastTransitionTime",
        "reason",
        "message",
    }
    env = schema["properties"]["spec"]["properties"]["runtime"]["properties"]["env"]
    assert env["x-kubernetes-list-map-keys"] == ["name"]
    assert env["items"]["required"] == ["name"]


def test_defaults_live_in_the_schema(schema: dict[str, Any]) -> None:
    spec = schema["properties"]["spec"]["properties"]
    assert spec["replicas"]["default"] == 1
    assert spec["runtime"]["default"] == {}
    assert spec["runtime"]["properties"]["backend"]["default"] == "python"
    assert spec["runtime"]["properties"]["backend"]["enum"] == ["python", "vllm", "tensorrtllm"]
    assert spec["placement"]["properties"]["capacityType"]["enum"] == ["OnDemand", "Spot", "PreferSpot"]
    assert spec["resources"]["properties"]["sharedMemory"]["default"] == "2Gi"
    # Optional sub-objects with required fields must not get a default, or every object would fail validation.
    assert "default" not in spec["autoscaling"]
    assert "default" not in spec["resources"]["properties"]["gpu"]


def test_defaults_are_valid_under_the_models() -> None:
    # The API server rejects a CRD whose defaults do not validate; pydantic is our stand-in offline.
    obj = api.parse({"metadata": {"name": "m"}, "spec": {"model": {"name": "m", "uri": "hf://a/b"}}})
    assert obj.spec.runtime.backend == "python"
    assert obj.spec.placement.capacity_type == "OnDemand"


def test_required_spec_and_model(schema: dict[str, Any]) -> None:
    assert schema["required"] == ["spec"]
    assert schema["properties"]["spec"]["required"] == ["model"]
    assert schema["properties"]["metadata"] == {"type": "object"}


def test_docs_field_reference_is_current() -> None:
    docs = REPO / _crd.DOCS_PATH
    text = docs.read_text()
    assert _crd.update_docs(text) == text, (
        'docs/api.md is stale: python -c \'from llm_operator import _crd; p="docs/api.md"; '
        'open(p,"w").write(_crd.update_docs(open(p).read()))\''
    )


def test_docs_reference_covers_every_spec_field(schema: dict[str, Any]) -> None:
    text = _crd.field_reference()
    for path, node in _walk(schema["properties"]["spec"], "spec"):
        if node.get("type") == "object" and node.get("properties"):
            assert f"### `{path}`" in text, path
            for name in node["properties"]:
                assert f"| `{name}` |" in text


# ------------------------------------------------------------------------------------- llmctl crd --check


def test_crd_check_passes_on_the_committed_file(monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(REPO)  # without -o, --check reads the committed path relative to the checkout
    assert cli.main(["crd", "--check"]) == 0
    assert cli.main(["crd", "--check", "-o", str(COMMITTED)]) == 0
    assert "is up to date" in capsys.readouterr().out


def test_crd_check_fails_on_a_stale_copy_and_leaves_it_alone(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    stale = tmp_path / "crd.yaml"
    text = COMMITTED.read_text().replace("shortNames:\n", "shortNames:\n    - llmdep\n", 1)
    assert text != COMMITTED.read_text()
    stale.write_text(text)
    assert cli.main(["crd", "--check", "-o", str(stale)]) == 1
    err = capsys.readouterr().err
    assert f"{stale} is out of date" in err
    assert f"llmctl crd -o {stale}" in err
    assert stale.read_text() == text  # --check reports; it never rewrites the file

    # A trailing newline is a difference too: the file must be byte-identical to the generator's output.
    stale.write_text(COMMITTED.read_text() + "\n")
    assert cli.main(["crd", "--check", "-o", str(stale)]) == 1


def test_crd_check_fails_when_the_file_is_missing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["crd", "--check", "-o", str(tmp_path / "absent.yaml")]) == 1
    assert "is out of date" in capsys.readouterr().err
    assert not (tmp_path / "absent.yaml").exists()
