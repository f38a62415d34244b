"""The pydantic models: defaults, aliases, and rejection of bad input with messages that name the field."""

from __future__ import annotations

import re
from typing import Any

import pytest
from invalid_specs import INVALID_SPECS, ROOT, Case, build, invalid_items, pydantic_path, valid_object
from llm_operator import api, builders
from llm_operator._crd import openapi_schema
from pydantic import BaseModel, ValidationError


def _errors(obj: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(ValidationError) as info:
        api.parse(obj)
    return [(".".join(str(p) for p in e["loc"]), e["msg"]) for e in info.value.errors()]


def test_minimal_object_gets_documented_defaults() -> None:
    llmd = api.parse(
        {
            "metadata": {"name": "m"},
            "spec": {"model": {"name": "m", "uri": "hf://HuggingFaceTB/SmolLM2-135M"}},
        }
    )
    spec = llmd.spec
    assert spec.replicas == 1
    assert spec.runtime.backend == "python"
    assert spec.runtime.tensor_parallel_size == 1
    assert spec.runtime.exit_timeout_seconds == 300
    assert spec.resources.gpu is None
    assert spec.resources.mig is None
    assert spec.resources.shared_memory == "2Gi"
    assert spec.placement.capacity_type == "OnDemand"
    assert spec.service.type == "ClusterIP"
    assert spec.monitoring.enabled is True
    assert spec.autoscaling is None
    assert spec.rollout is None
    assert llmd.api_version == "serving.llmops.dev/v1alpha1"
    assert llmd.kind == "LLMDeployment"


def test_pydantic_defaults_equal_schema_defaults() -> None:
    """The API server applies the schema's defaults, pydantic its own: they must agree or the revision hash
    computed by `llmctl render` would differ from the operator's for the same object."""
    schema = openapi_schema()
    llmd = api.parse({"metadata": {"name": "m"}, "spec": {"model": {"name": "m", "uri": "hf://a/b"}}})
    dumped = llmd.to_k8s()

    def check(node: dict[str, Any], value: Any, path: str) -> None:
        for name, sub in node.get("properties", {}).items():
            if "default" in sub and sub["default"] != {}:
                assert isinstance(value, dict), path
                assert value.get(name) == sub["default"], f"{path}.{name}"
            if isinstance(value, dict) and isinstance(value.get(name), dict):
                check(sub, value[name], f"{path}.{name}")

    check(schema["properties"]["spec"], dumped["spec"], "spec")


def test_camel_case_aliases_and_snake_case_names_both_accepted() -> None:
    by_alias = api.RuntimeSpec.model_validate({"tensorParallelSize": 2, "exitTimeoutSeconds": 5})
    by_name = api.RuntimeSpec.model_validate({"tensor_parallel_size": 2, "exit_timeout_seconds": 5})
    assert by_alias == by_name
    assert by_alias.to_k8s()["tensorParallelSize"] == 2


def test_unknown_fields_are_rejected_with_their_path() -> None:
    obj = valid_object()
    obj["spec"]["model"]["url"] = "hf://typo/field"
    assert ("spec.model.url", "Extra inputs are not permitted") in _errors(obj)


def test_status_tolerates_fields_from_newer_operators() -> None:
    obj = valid_object()
    obj["status"] = {"readyReplicas": 1, "somethingNew": True}
    assert api.parse(obj).status is not None


def _all_cel_rules() -> list[tuple[type[BaseModel], api.CelRule]]:
    """Every CelRule declared in api.py, found by walking its models rather than listing them by hand."""
    models = [m for m in vars(api).values() if isinstance(m, type) and issubclass(m, BaseModel)]
    return [(m, rule) for m in models for rule in vars(m).get("__cel_rules__", ())]


def _rule_for(case: Case) -> api.CelRule | None:
    matching = [rule for _, rule in _all_cel_rules() if case.expected in rule.message]
    assert len(matching) <= 1, f"{case.id}: {case.expected!r} matches several rules"
    return matching[0] if matching else None


@pytest.mark.parametrize("case", INVALID_SPECS, ids=[c.id for c in INVALID_SPECS])
def test_invalid_spec_rejected_locally_naming_the_field(case: Case) -> None:
    errors = _errors(build(case))
    text = "\n".join(f"{loc}: {msg}" for loc, msg in errors)
    field = pydantic_path(case.field)
    rule = _rule_for(case)
    if rule is not None:
        # The API server names the rule's node plus its fieldPath; pydantic names the model holding the rule.
        suffix = pydantic_path(rule.field_path or "")
        assert any(case.expected in msg and ".".join(filter(None, [loc, suffix.lstrip(".")])) == field
                   for loc, msg in errors), text
    else:
        # Schema errors: pydantic points at the same field, or at its parent with a message naming the field.
        unindexed = re.sub(r"\[\d+\]$", "", case.field)
        assert any(loc == field or (field.startswith(loc + ".") and unindexed in msg) for loc, msg in errors), text


CEL_CASES = [c for c in INVALID_SPECS if "in body should" not in c.expected and ": " not in c.expected]


@pytest.mark.parametrize("case", CEL_CASES, ids=[c.id for c in CEL_CASES])
def test_cel_mirror_gives_the_api_server_message(case: Case) -> None:
    """Where the API server reports our CEL message, pydantic reports the same words."""
    assert _rule_for(case) is not None, f"{case.id}: {case.expected!r} is not the message of any CelRule"
    assert any(case.expected in msg for _, msg in _errors(build(case)))


def test_invalid_table_ids_are_unique() -> None:
    assert len({c.id for c in INVALID_SPECS}) == len(INVALID_SPECS)


def test_the_rule_walk_finds_every_rule_in_the_crd() -> None:
    def count(node: Any) -> int:
        if isinstance(node, dict):
            return len(node.get("x-kubernetes-validations", [])) + sum(count(v) for v in node.values())
        if isinstance(node, list):
            return sum(count(v) for v in node)
        return 0

    assert len(_all_cel_rules()) == count(openapi_schema()) > 0


def _rule_id(model: type[BaseModel], rule: api.CelRule) -> str:
    return f"{model.__name__}-" + re.sub(r"\W+", "-", rule.message[:40]).strip("-")


@pytest.mark.parametrize(("model", "rule"), [pytest.param(m, r, id=_rule_id(m, r)) for m, r in _all_cel_rules()])
def test_every_cel_rule_is_exercised_by_the_invalid_table(model: type[BaseModel], rule: api.CelRule) -> None:
    """Each rule has a case that trips it (pydantic reports the rule's message) and whose expected text is that
    message, so the cluster test proves the API server enforces the same rule."""
    cases = [c for c in INVALID_SPECS if c.expected in rule.message]
    assert cases, f"{model.__name__}: no invalid case for {rule.message!r}"
    assert any(rule.message in msg for c in cases for _, msg in _errors(build(c))), rule.message


def test_api_server_error_items_are_parsed() -> None:
    one = (
        'The LLMDeployment "bad-3" is invalid: spec.model.uri: Invalid value: spec.model.uri: a pvc:// URI must '
        "be pvc://<claim-name>/<path>"
    )
    assert invalid_items(one) == [("spec.model.uri", "Invalid value: spec.model.uri: a pvc:// URI must be "
                                                     "pvc://<claim-name>/<path>")]
    several = (
        'The LLMDeployment "bad-9" is invalid: \n'
        '* spec.runtime.backend: Unsupported value: "onnxruntime": supported values: "python"\n'
        "* <nil>: Invalid value: null: some validation rules were not checked because the object was invalid"
    )
    assert [f for f, _ in invalid_items(several)] == ["spec.runtime.backend", ROOT]
    assert invalid_items("error: the server doesn't have a resource type") == []


@pytest.mark.parametrize(
    ("uri", "claim", "path"),
    [
        ("pvc://models/meta/llama-3", "models", "meta/llama-3"),
        ("pvc://models", "models", ""),
        ("pvc://models/", "models", ""),
    ],
)
def test_pvc_uri_is_shorthand_for_pvc_source(uri: str, claim: str, path: str) -> None:
    model = api.ModelSpec(name="m", uri=uri)
    source = model.pvc_source()
    assert source is not None
    assert (source.claim_name, source.path) == (claim, path)
    assert model.scheme == "pvc"


def test_remote_uri_has_no_pvc_source() -> None:
    assert api.ModelSpec(name="m", uri="s3://bucket/x").pvc_source() is None


@pytest.mark.parametrize(
    ("quantity", "cores"), [("8", 8), ("500m", 0.5), ("64Gi", 64 * 2**30), ("1.5", 1.5), (8, 8), ("1e3", 1000)]
)
def test_quantities_accepted(quantity: str | int, cores: float) -> None:
    """A quantity pydantic accepts is one the API server's schema accepts too, and it reaches the pod as the
    same amount."""
    obj = valid_object()
    obj["spec"]["resources"]["cpu"] = quantity
    llmd = api.parse(obj)
    schema = openapi_schema()["properties"]["spec"]["properties"]["resources"]["properties"]["cpu"]
    assert re.fullmatch(schema["pattern"], str(quantity))
    assert api.quantity_value(llmd.spec.resources.cpu or 0) == pytest.approx(cores)
    deployment = builders.build_deployment(llmd, namespace="ns", revision="r", owner_uid=None)
    triton, _front = deployment["spec"]["template"]["spec"]["containers"]
    # The container API takes quantities as strings; an integer from the spec is sent as its string form.
    assert triton["resources"]["limits"]["cpu"] == triton["resources"]["requests"]["cpu"] == str(quantity)


@pytest.mark.parametrize("quantity", ["eight", "64GB", "-", "1.2.3"])
def test_bad_quantities_name_the_field(quantity: str) -> None:
    with pytest.raises(ValidationError, match="is not a Kubernetes quantity") as info:
        api.ResourcesSpec(memory=quantity)
    assert info.value.errors()[0]["loc"] == ("memory",)


@pytest.mark.parametrize(
    ("quantity", "value"),
    [("2Gi", 2 * 2**30), ("64Gi", 64 * 2**30), ("500m", 0.5), ("1e3", 1000.0), (8, 8.0), ("1.5G", 1.5e9)],
)
def test_quantity_value(quantity: str | int, value: float) -> None:
    assert api.quantity_value(quantity) == pytest.approx(value)


def test_shared_memory_compared_across_units() -> None:
    # 2Gi is 2048Mi: the comparison is by value, so one Mi above is fine and equal (in other units) is not.
    api.ResourcesSpec(memory="2049Mi", shared_memory="2Gi")
    for memory in ("2048Mi", "2000Mi", "2147483648"):
        with pytest.raises(ValidationError, match="sharedMemory must be smaller"):
            api.ResourcesSpec(memory=memory, shared_memory="2Gi")
    # Without a memory limit there is nothing to compare against.
    assert api.ResourcesSpec(shared_memory="64Gi").memory is None


def test_pvc_rejects_secret_even_via_structured_source() -> None:
    with pytest.raises(ValidationError, match="secretRef is only used to download remote models"):
        api.ModelSpec.model_validate({"name": "m", "pvc": {"claimName": "c"}, "secretRef": {"name": "s"}})


def test_runtime_args_may_carry_other_flags() -> None:
    """Flags the operator does not own (even ones sharing a prefix with a reserved one) pass both the pydantic
    mirror and the CEL rule's reserved list, and are appended after the operator's own flags."""
    extra = ["--log-verbose=1", "--model-load-thread-count=2", "--model-control-mode=none"]
    assert not any(a.startswith(api.RESERVED_TRITON_FLAGS) for a in extra)
    obj = valid_object()
    obj["spec"]["runtime"]["args"] = extra
    llmd = api.parse(obj)
    deployment = builders.build_deployment(llmd, namespace="ns", revision="r", owner_uid=None)
    triton, _front = deployment["spec"]["template"]["spec"]["containers"]
    assert triton["args"][-len(extra):] == extra
    assert triton["args"][0] == "tritonserver"
    operator_flags = triton["args"][1 : -len(extra)]
    assert {a.split("=")[0] for a in operator_flags} >= {"--model-repository", "--http-port", "--exit-timeout-secs"}


def test_parameter_keys_are_restricted() -> None:
    with pytest.raises(ValidationError, match="parameters keys may only contain"):
        api.RuntimeSpec(parameters={"bad key": "1"})


def test_name_over_52_characters_rejected() -> None:
    obj = valid_object(name="a" * 53)
    assert any("metadata.name must be a DNS-1035 label" in msg for _, msg in _errors(obj))
    assert api.parse(valid_object(name="a" * 52)).name == "a" * 52
