"""Generate the LLMDeployment CRD from the pydantic models in `api.py`.

pydantic emits JSON Schema (draft 2020-12); the API server wants a *structural* OpenAPI v3.0 schema. The
differences handled here: `$ref`/`$defs` are inlined; `anyOf: [X, null]` becomes plain X (optional fields are
simply absent from `required`; we do not mark them `nullable`, so an explicit `null` is pruned instead of
reaching CEL rules that would then fail on it); JSON-Schema-only keywords (`title`, `propertyNames`,
`additionalProperties: false`, `const`) are dropped or translated; free-form objects get
`x-kubernetes-preserve-unknown-fields`. The CEL rules come from `api.CelRule`s via `json_schema_extra`.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import yaml

from . import api

CRD_NAME = f"{api.PLURAL}.{api.GROUP}"
CRD_PATH = f"crds/{CRD_NAME}.yaml"

_DROP_KEYS = frozenset({"title", "propertyNames", "examples", "discriminator", "$defs"})

PRINTER_COLUMNS: list[dict[str, Any]] = [
    {"name": "Model", "type": "string", "jsonPath": ".spec.model.name", "description": "Served model name."},
    {
        "name": "Backend",
        "type": "string",
        "jsonPath": ".spec.runtime.backend",
        "description": "Triton backend.",
    },
    {"name": "GPU", "type": "string", "jsonPath": ".status.gpu", "description": "GPUs per replica."},
    {
        "name": "Ready",
        "type": "string",
        "jsonPath": ".status.readyText",
        "description": "Ready/desired replicas.",
    },
    {
        "name": "Reason",
        "type": "string",
        "jsonPath": '.status.conditions[?(@.type=="Ready")].reason',
        "description": "Reason of the Ready condition.",
    },
    {
        "name": "Scaling",
        "type": "string",
        "jsonPath": ".status.autoscaling.summary",
        "description": "Autoscaling: desired vs current replicas, or what limits scaling.",
    },
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    {
        "name": "Revision",
        "type": "string",
        "jsonPath": ".status.revision",
        "priority": 1,
        "description": "Current pod template revision.",
    },
    {
        "name": "Endpoint",
        "type": "string",
        "jsonPath": ".status.endpoints.http",
        "priority": 1,
        "description": "In-cluster HTTP URL.",
    },
]


def _resolve(node: Any, defs: dict[str, Any]) -> Any:
    """Inline `$ref`s and collapse `anyOf: [X, null]`, keeping the referring node's own keys (description,
    default) on top of the referenced definition's."""
    if isinstance(node, list):
        return [_resolve(n, defs) for n in node]
    if not isinstance(node, dict):
        return node
    node = dict(node)
    if "$ref" in node:
        ref = node.pop("$ref")
        target = copy.deepcopy(defs[ref.rsplit("/", 1)[-1]])
        node = {**target, **node}
        return _resolve(node, defs)
    if "anyOf" in node:
        branches = [b for b in node["anyOf"] if b != {"type": "null"}]
        if len(branches) != len(node["anyOf"]):
            node.pop("anyOf")
            if node.get("default", ...) is None:
                node.pop("default")
            if len(branches) == 1:
                node = {**branches[0], **node}
                return _resolve(node, defs)
            node["anyOf"] = branches
    return {k: _resolve(v, defs) for k, v in node.items()}


_KEY_ORDER = ("type", "description", "default", "enum", "format")


def _ordered(node: dict[str, Any]) -> dict[str, Any]:
    """type and description first, x-kubernetes-* last: stable and readable in the committed YAML."""

    def rank(key: str) -> tuple[int, str]:
        if key in _KEY_ORDER:
            return (_KEY_ORDER.index(key), "")
        if key.startswith("x-kubernetes"):
            return (len(_KEY_ORDER) + 2, key)
        if key in ("properties", "required", "items"):
            return (len(_KEY_ORDER) + 1, key)
        return (len(_KEY_ORDER), key)

    return {k: node[k] for k in sorted(node, key=rank)}


def _description(text: str) -> str:
    # Docstrings are wrapped at the source's line length; kubectl explain re-wraps, so keep paragraphs only.
    return "\n\n".join(" ".join(p.split()) for p in text.split("\n\n"))


def _structural(node: Any, *, path: str) -> Any:
    if isinstance(node, list):
        return [_structural(n, path=path) for n in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP_KEYS:
            continue
        if key == "const":
            out["enum"] = [value]
            continue
        if key == "description":
            out[key] = _description(value)
            continue
        if key == "patternProperties":
            raise ValueError(f"{path}: patternProperties is not allowed in CRD schemas; constrain keys with CEL")
        if key == "additionalProperties":
            if value is False:
                continue
            if value is True or value == {}:
                out["x-kubernetes-preserve-unknown-fields"] = True
                continue
        if key in ("exclusiveMinimum", "exclusiveMaximum"):
            # OpenAPI v3.0 (what the API server speaks) has boolean exclusive bounds; draft 2020 numeric ones
            # would be silently misread. api.py only uses ge/le.
            raise ValueError(f"{path}: use ge/le instead of gt/lt in api.py")
        if key == "properties":
            out[key] = {name: _structural(sub, path=f"{path}.{name}") for name, sub in value.items()}
            continue
        out[key] = _structural(value, path=f"{path}[{key}]" if key == "items" else path)
    if out.get("type") == "object" and "properties" in out:
        required = set(out.get("required", []))
        raw_props = node["properties"]
        for name, sub in out["properties"].items():
            # A non-optional nested model with all-defaultable fields (pydantic default_factory): default it
            # to {} so the API server fills in nested defaults and `kubectl get -o yaml` shows them.
            if (
                name not in required
                and sub.get("type") == "object"
                and "default" not in sub
                and "properties" in sub
                and not sub.get("required")
                and raw_props[name].get("_non_nullable_model")
            ):
                sub["default"] = {}
            sub.pop("_non_nullable_model", None)
            out["properties"][name] = _ordered(sub)
    out.pop("_non_nullable_model", None)
    return _ordered(out)


def _mark_default_factories(schema: dict[str, Any]) -> None:
    """pydantic omits `default` for `default_factory` fields; mark the nested-model ones so `_structural` can
    add `default: {}`. A `$ref` with no `anyOf` and no default is exactly such a field (or a required one)."""

    def visit(node: Any) -> None:
        if isinstance(node, dict):
            for name, sub in node.get("properties", {}).items():
                if isinstance(sub, dict) and "$ref" in sub and "default" not in sub:
                    sub["_non_nullable_model"] = name not in node.get("required", [])
            for v in node.values():
                visit(v)
        elif isinstance(node, list):
            for v in node:
                visit(v)

    visit(schema)


def openapi_schema() -> dict[str, Any]:
    """The structural openAPIV3Schema of the LLMDeployment CRD."""
    raw = api.LLMDeployment.model_json_schema(by_alias=True, mode="validation")
    _mark_default_factories(raw)
    defs = raw.get("$defs", {})
    schema = _structural(_resolve({k: v for k, v in raw.items() if k != "$defs"}, defs), path="")
    props = schema["properties"]
    # apiVersion/kind/metadata are the API server's business: no enums (they would break version
    # conversion later), and metadata must be a bare object.
    props["apiVersion"] = {"type": "string", "description": props["apiVersion"]["description"]}
    props["kind"] = {"type": "string", "description": props["kind"]["description"]}
    props["metadata"] = {"type": "object"}
    schema["required"] = ["spec"]
    return schema


def crd_manifest() -> dict[str, Any]:
    """The CustomResourceDefinition for LLMDeployment, as a dict ready to apply."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": CRD_NAME,
            "labels": {
                "app.kubernetes.io/name": "triton-llm-operator",
                "app.kubernetes.io/part-of": "llmops",
            },
        },
        "spec": {
            "group": api.GROUP,
            "scope": "Namespaced",
            "names": {
                "plural": api.PLURAL,
                "singular": api.SINGULAR,
                "kind": api.KIND,
                "listKind": f"{api.KIND}List",
                "shortNames": list(api.SHORT_NAMES),
                "categories": ["all", "llmops"],
            },
            "versions": [
                {
                    "name": api.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {
                        "status": {},
                        "scale": {
                            "specReplicasPath": ".spec.replicas",
                            "statusReplicasPath": ".status.replicas",
                            "labelSelectorPath": ".status.selector",
                        },
                    },
                    "additionalPrinterColumns": copy.deepcopy(PRINTER_COLUMNS),
                    "schema": {"openAPIV3Schema": openapi_schema()},
                }
            ],
        },
    }


class _Dumper(yaml.SafeDumper):
    """Block style, no aliases, multi-line strings as `|` so the committed file diffs readably."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _str_representer(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    if "\n" in data:
        return dumper.represent_scalar("tag:yaml.org,2002:str", data, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", data)


_Dumper.add_representer(str, _str_representer)


def dump_yaml(obj: Any) -> str:
    return yaml.dump(obj, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=100)


def crd_yaml() -> str:
    """The CRD as YAML: exactly what is committed at `crds/llmdeployments.serving.llmops.dev.yaml`."""
    header = (
        "# Generated from operator/llm_operator/api.py by `llmctl crd`; do not edit by hand.\n"
        "# tests/unit/test_crd.py fails when this file and the models disagree.\n"
    )
    return header + dump_yaml(crd_manifest())


# ------------------------------------------------------------------------------------- reference docs

DOCS_PATH = "docs/api.md"
DOCS_BEGIN = "<!-- BEGIN GENERATED FIELD REFERENCE (llm_operator._crd.field_reference) -->"
DOCS_END = "<!-- END GENERATED FIELD REFERENCE -->"


def _type_of(node: dict[str, Any]) -> str:
    if node.get("x-kubernetes-int-or-string"):
        return "quantity"
    kind = str(node.get("type", "any"))
    if kind == "array":
        return f"[]{_type_of(node.get('items', {}))}"
    if kind == "object" and isinstance(node.get("additionalProperties"), dict):
        return f"map[string]{_type_of(node['additionalProperties'])}"
    return kind


def _constraints(node: dict[str, Any]) -> str:
    parts = []
    if "enum" in node:
        parts.append("one of " + ", ".join(f"`{v}`" for v in node["enum"]))
    if "minimum" in node or "maximum" in node:
        parts.append(f"{node.get('minimum', '')}..{node.get('maximum', '')}")
    if "maxLength" in node:
        parts.append(f"≤{node['maxLength']} chars")
    if "maxItems" in node:
        parts.append(f"≤{node['maxItems']} items")
    if "maxProperties" in node:
        parts.append(f"≤{node['maxProperties']} entries")
    if "pattern" in node and not node.get("x-kubernetes-int-or-string"):
        parts.append(f"pattern `{node['pattern']}`")
    return "; ".join(parts)


def field_reference() -> str:
    """Markdown tables of every spec/status field, generated from the CRD schema (docs/api.md embeds it)."""
    schema = openapi_schema()
    lines: list[str] = []

    def section(title: str, node: dict[str, Any], path: str) -> None:
        props = node.get("properties", {})
        if not props:
            return
        required = set(node.get("required", []))
        lines.extend([f"### `{path}`", "", _description(node.get("description", "")), ""])
        for rule in node.get("x-kubernetes-validations", []):
            lines.append(f"- Rule: {rule['message']}")
        if node.get("x-kubernetes-validations"):
            lines.append("")
        lines.extend(["| Field | Type | Default | Constraints | Description |", "|---|---|---|---|---|"])
        nested: list[tuple[str, dict[str, Any]]] = []
        for name, sub in props.items():
            default = json.dumps(sub["default"]) if "default" in sub else ("required" if name in required else "")
            desc = sub.get("description", "").replace("|", "\\|").replace("\n\n", "<br>")
            cons = _constraints(sub).replace("|", "\\|")
            lines.append(f"| `{name}` | {_type_of(sub)} | {default} | {cons} | {desc} |")
            target = sub.get("items", sub) if sub.get("type") == "array" else sub
            if target.get("properties"):
                nested.append((f"{path}.{name}" + ("[]" if sub.get("type") == "array" else ""), target))
        lines.append("")
        for sub_path, sub in nested:
            section(sub_path, sub, sub_path)

    section("spec", schema["properties"]["spec"], "spec")
    section("status", schema["properties"]["status"], "status")
    return "\n".join(lines).rstrip() + "\n"


def update_docs(text: str) -> str:
    """`text` (docs/api.md) with the generated field reference replaced (or appended) between the markers."""
    block = f"{DOCS_BEGIN}\n\n{field_reference()}\n{DOCS_END}\n"
    if DOCS_BEGIN in text and DOCS_END in text:
        head, rest = text.split(DOCS_BEGIN, 1)
        tail = rest.split(DOCS_END, 1)[1].lstrip("\n")
        return head + block + tail
    return text.rstrip("\n") + "\n\n" + block
