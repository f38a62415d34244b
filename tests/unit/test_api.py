"""The pydantic models: defaults, aliases, and rejection of bad input with messages that name the field."""

from __future__ import annotations

import re
from typing import Any

import pytest
from invalid_specs import INVALID_SPECS, Case, build, valid_object
from llm_operator import api, builders
from llm_operator._crd import openapi_schema
from pydantic import ValidationError


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


@pytest.mark.parametrize("case", INVALID_SPECS, ids=[c.id for c in INVALID_SPECS])
def test_invalid_spec_rejected_locally_naming_the_field(case: Case) -> None:
    errors = _errors(build(case))
    text = "\n".join(f"{loc}: {msg}" for loc, msg in errors)
    if case.field == "<root>":
        assert any(loc == "" for loc, _ in errors) or case.expected in text, text
    else:
        assert any(loc == case.field or loc.startswith(case.field + ".") for loc, _ in errors), text


CEL_CASES = [c for c in INVALID_SPECS if "in body should" not in c.expected and ": " not in c.expected]


@pytest.mark.parametrize("case", CEL_CASES, ids=[c.id for c in CEL_CASES])
def test_cel_mirror_gives_the_api_server_message(case: Case) -> None:
    """Where the API server reports our CEL message, pydantic reports the same words."""
    assert any(case.expected in msg for _, msg in _errors(build(case)))


def test_invalid_table_is_large_and_unique() -> None:
    assert len(INVALID_SPECS) >= 15
    assert len({c.id for c in INVALID_SPECS}) == len(INVALID_SPECS)


def test_every_cel_rule_is_exercised_by_the_invalid_table() -> None:
    messages = {c.expected for c in INVALID_SPECS}
    rules = [
        rule
        for model in (
            api.PVCSource,
            api.ModelSpec,
            api.RuntimeSpec,
            api.ResourcesSpec,
            api.Toleration,
            api.PlacementSpec,
            api.AutoscalingSpec,
            api.CanarySpec,
            api.RolloutSpec,
            api.LLMDeploymentSpec,
            api.LLMDeployment,
        )
        for rule in model.__cel_rules__
    ]
    untested = [r.message for r in rules if not any(m in r.message for m in messages)]
    # Rules whose failure modes are covered elsewhere (parameter keys, capacity-type selector).
    allowed = {"parameters keys", "llmops.dev/capacity-type"}
    assert all(any(a in m for a in allowed) for m in untested), untested


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
    (triton,) = deployment["spec"]["template"]["spec"]["containers"]
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
    assert api.ResourcesSpec(memory="3000Mi", shared_memory="2Gi").memory == "3000Mi"
    with pytest.raises(ValidationError, match="sharedMemory must be smaller"):
        api.ResourcesSpec(memory="2000Mi", shared_memory="2Gi")
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
    (triton,) = deployment["spec"]["template"]["spec"]["containers"]
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
