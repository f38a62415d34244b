"""Names (issue #13): every child name and label value the builders produce stays within Kubernetes' limits for
every LLMDeployment name the API accepts (the CRD caps metadata.name at 52 characters, a DNS-1035 label, so that
`NAME-rXXXXXXXXX`, `NAME-stable` and `NAME-canary` fit 63); names the API cannot serve are rejected with a message
(checked against the real API server in tests/e2e/test_names.py)."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from llm_operator import api, builders
from llm_operator.builders.traffic import ROLES, build_revision_service
from pydantic import ValidationError

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
QUALIFIED_KEY = re.compile(r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
                           r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
# A Deployment's pods are named NAME-<10-char ReplicaSet hash>-<5>; kubelet cuts a pod's hostname at 63, so a
# Deployment name of at most 63 keeps every generated name (ReplicaSet 74, pod 80) well under 253 and readable.
MAX_NAME = 63
NAME_MESSAGE = "metadata.name must be a DNS-1035 label"


def _docs() -> list[dict[str, Any]]:
    import yaml

    out = []
    for path in EXAMPLES:
        out += [d for d in yaml.safe_load_all(path.read_text()) if d and d.get("kind") == "LLMDeployment"]
    return out


DOCS = _docs()


def _labels(obj: dict[str, Any]) -> list[dict[str, str]]:
    found = [obj["metadata"].get("labels") or {}]
    template = ((obj.get("spec") or {}).get("template") or {}).get("metadata") or {}
    found.append(template.get("labels") or {})
    selector = (obj.get("spec") or {}).get("selector")
    if isinstance(selector, dict):
        found.append(selector.get("matchLabels", selector))
    return found


def check_children(doc: dict[str, Any], name: str) -> None:
    body = copy.deepcopy(doc)
    body["metadata"] = {**body["metadata"], "name": name, "namespace": "n" * 63}
    llmd = api.parse(body)
    children = builders.build_children(llmd, namespace="n" * 63, owner_uid="u", monitoring_crds=True)
    revision = builders.revision_hash(llmd)
    children += [build_revision_service(llmd, namespace="n" * 63, owner_uid="u", role=role, revision=revision)
                 for role in ROLES]
    for child in children:
        child_name = child["metadata"]["name"]
        assert len(child_name) <= MAX_NAME and DNS1035_LABEL.match(child_name), (child["kind"], child_name)
        for labels in _labels(child):
            for key, value in labels.items():
                assert QUALIFIED_KEY.match(key) and len(key.rpartition("/")[2]) <= 63, (child["kind"], key)
                assert len(str(value)) <= 63 and LABEL_VALUE.match(str(value)), (child["kind"], key, value)


@pytest.mark.parametrize("doc", DOCS, ids=[d["metadata"]["name"] for d in DOCS])
@pytest.mark.parametrize("name", ["a", "x" * 52, "l" + "-9" * 25 + "z"])
def test_longest_names_fit_every_child(doc: dict[str, Any], name: str) -> None:
    check_children(doc, name)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.from_regex(r"\A[a-z]([-a-z0-9]{0,50}[a-z0-9])?\Z"), which=st.integers(0, len(DOCS) - 1))
def test_every_accepted_name_fits_every_child(name: str, which: int) -> None:
    check_children(DOCS[which], name)


@pytest.mark.parametrize("name", ["x" * 53, "x" * 63, "llama.3", "Llama", "3llama", "llama_3", "llama-"])
def test_names_the_children_cannot_carry_are_rejected_with_a_message(name: str) -> None:
    body = copy.deepcopy(DOCS[0])
    body["metadata"]["name"] = name
    with pytest.raises(ValidationError, match=NAME_MESSAGE):
        api.parse(body)


def test_model_names_with_a_slash_are_rejected_with_a_message_and_unicode_annotations_work() -> None:
    body = copy.deepcopy(DOCS[0])
    body["spec"]["model"]["name"] = "meta-llama/Llama-3.1-8B-Instruct"
    with pytest.raises(ValidationError, match=r"spec\.model\.name"):
        api.parse(body)
    body = copy.deepcopy(DOCS[0])
    body["metadata"]["annotations"] = {"example.com/owner": "Zoë 🦙 ünïcödé"}
    body["spec"]["podAnnotations"] = {"example.com/team": "平台"}
    llmd = api.parse(body)
    (deploy,) = [c for c in builders.build_children(llmd, namespace="n", owner_uid="u", monitoring_crds=False)
                 if c["kind"] == "Deployment"]
    assert deploy["spec"]["template"]["metadata"]["annotations"]["example.com/team"] == "平台"
