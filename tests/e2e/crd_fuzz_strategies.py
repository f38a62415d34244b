"""Hypothesis strategies generated from the LLMDeployment CRD's OpenAPI v3 schema (issue #13).

Nothing here knows a field of LLMDeployment by name: `SchemaFuzzer` walks the committed CRD's
`openAPIV3Schema` (type, properties, required, enum, pattern, minimum/maximum, minLength/maxLength,
minItems/maxItems, maxProperties, items, additionalProperties, x-kubernetes-int-or-string,
x-kubernetes-preserve-unknown-fields, x-kubernetes-list-type map, nullable, default) and builds strategies that
produce mostly *near-valid* specs, so that they get past the structural schema and exercise the CEL rules and the
operator, plus a share with one *mutation* that breaks one keyword of one node (a wrong type, a bound, a pattern,
an enum, a missing required property, an unknown property, a duplicate map-list key, a null).

To reach the CEL rules, string fields also draw from *hints* mined from the rules themselves: every quoted
literal of an `x-kubernetes-validations` rule that mentions `self.<property>` (e.g. `'pvc://'`, `'KEDA'`,
`'serving.llmops.dev/'`, `'--model-repository'`) becomes a candidate value or prefix for that property's
strings (map keys and list items included), and the regular expression of a `self.<property>.matches('...')`
becomes a generator for them.

Used by tests/e2e/test_schema_fuzz.py and bench/fuzz_specs.py.
"""

from __future__ import annotations

import copy
import json
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

ROOT = Path(__file__).resolve().parents[2]
CRD_FILE = ROOT / "crds" / "llmdeployments.serving.llmops.dev.yaml"

INT32 = (-(2**31), 2**31 - 1)
INT64 = (-(2**63), 2**63 - 1)
# Generated collections and free text stay small: the point is the shapes, not the bulk (bounds are tested by the
# mutations that cross them, at the exact bound).
MAX_ITEMS = 3
MAX_TEXT = 24

_LITERAL = re.compile(r"'((?:[^'\\]|\\.)*)'")
_MATCHES = re.compile(r"\.matches\('((?:[^'\\]|\\.)*)'\)")


def load_crd_schema(path: Path = CRD_FILE) -> dict[str, Any]:
    """The served version's openAPIV3Schema from the committed CRD."""
    crd = yaml.safe_load(path.read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v.get("served") and v.get("storage")]
    return dict(version["schema"]["openAPIV3Schema"])


@dataclass(frozen=True)
class Hints:
    """Values mined from the CEL rules that mention a property: literals (used whole or as a prefix) and
    regular expressions (from `.matches('...')`)."""

    literals: tuple[str, ...] = ()
    regexes: tuple[str, ...] = ()

    def __add__(self, other: Hints) -> Hints:
        return Hints(tuple(dict.fromkeys(self.literals + other.literals)),
                     tuple(dict.fromkeys(self.regexes + other.regexes)))


def rule_hints(schema: Mapping[str, Any]) -> dict[str, Hints]:
    """For each property of an object schema, the hints of the CEL rules (of this node) that mention it."""
    out: dict[str, Hints] = {}
    rules = [v.get("rule", "") for v in schema.get("x-kubernetes-validations") or []]
    for prop in schema.get("properties") or {}:
        mention = re.compile(rf"\bself\.{re.escape(prop)}\b")
        found = Hints()
        for rule in rules:
            if not mention.search(rule):
                continue
            regexes = tuple(m.group(1) for m in _MATCHES.finditer(rule))
            literals = tuple(m.group(1) for m in _LITERAL.finditer(rule) if m.group(1) not in regexes)
            found = found + Hints(literals, regexes)
        if found.literals or found.regexes:
            out[prop] = found
    return out


_EXCLUSIVE = re.compile(r"has\(self\.(\w+)\) != has\(self\.(\w+)\)")
_ANY = re.compile(r"has\(self\.(\w+)\)(?: \|\| has\(self\.\w+\))+")
_IMPLIED = re.compile(r"\(self\.(\w+) == '([^']*)'\) == has\(self\.(\w+)\)")


def cel_presence_rules(schema: Mapping[str, Any]) -> tuple[list[tuple[str, ...]], list[tuple[str, str, str]]]:
    """The presence idioms among an object's CEL rules: `has(self.a) != has(self.b)` (exactly one of a, b),
    `has(self.a) || has(self.b) || ...` (at least one: generated as exactly one) and `(self.a == 'L') ==
    has(self.b)` (b present exactly when a is L)."""
    props = schema.get("properties") or {}
    exclusive: list[tuple[str, ...]] = []
    implied: list[tuple[str, str, str]] = []
    for validation in schema.get("x-kubernetes-validations") or []:
        rule = validation.get("rule", "").strip()
        if (m := _EXCLUSIVE.fullmatch(rule)) and {m.group(1), m.group(2)} <= set(props):
            exclusive.append((m.group(1), m.group(2)))
        elif _ANY.fullmatch(rule) and set(names := re.findall(r"self\.(\w+)", rule)) <= set(props):
            exclusive.append(tuple(names))
        elif (m := _IMPLIED.fullmatch(rule)) and {m.group(1), m.group(3)} <= set(props):
            implied.append((m.group(1), m.group(2), m.group(3)))
    return exclusive, implied


_GUARD = re.compile(r"!has\(self\.(\w+)\) \|\|")
_LOWER = re.compile(r"self\.(\w+) (>=?) (-?[0-9]+(?:\.[0-9]*)?)")


def cel_guarded(schema: Mapping[str, Any]) -> set[str]:
    """Properties that a rule `!has(self.x) || <condition>` constrains: present, they must meet the condition."""
    props = set(schema.get("properties") or ())
    rules = [v.get("rule", "") for v in schema.get("x-kubernetes-validations") or []]
    return {m.group(1) for rule in rules for m in _GUARD.finditer(rule) if m.group(1) in props}


def cel_lower_bounds(schema: Mapping[str, Any]) -> dict[str, tuple[float, bool]]:
    """`self.x > N` / `self.x >= N` in the rules of an object, for number and integer properties: N and
    whether it is exclusive."""
    props = schema.get("properties") or {}
    out: dict[str, tuple[float, bool]] = {}
    for validation in schema.get("x-kubernetes-validations") or []:
        for m in _LOWER.finditer(validation.get("rule", "")):
            if m.group(1) in props and props[m.group(1)].get("type") in ("number", "integer"):
                out[m.group(1)] = (float(m.group(3)), m.group(2) == ">")
    return out


@dataclass
class FuzzCase:
    """One generated LLMDeployment body and what was broken on purpose (None: generated to be near-valid)."""

    body: dict[str, Any]
    mutation: str | None = None

    def __repr__(self) -> str:  # what hypothesis prints for a falsifying example: a spec one can paste
        return f"FuzzCase(mutation={self.mutation!r}, body={json.dumps(self.body, ensure_ascii=False)})"


@dataclass
class _Node:
    """A value in a generated document with the schema node it was generated from."""

    path: tuple[str | int, ...]
    schema: Mapping[str, Any]


def _types(schema: Mapping[str, Any]) -> set[str]:
    if schema.get("x-kubernetes-int-or-string"):
        return {"integer", "string"}
    if "type" in schema:
        return {schema["type"]}
    if schema.get("anyOf"):
        return {t for alt in schema["anyOf"] for t in _types(alt)}
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return {"object"}
    return set()


def _fits(text: str, schema: Mapping[str, Any]) -> bool:
    return schema.get("minLength", 0) <= len(text) <= schema.get("maxLength", math.inf)


def _int_bounds(schema: Mapping[str, Any]) -> tuple[int, int]:
    lo, hi = INT32 if schema.get("format") == "int32" else INT64
    if "minimum" in schema:
        lo = max(lo, math.ceil(schema["minimum"]))
    if "maximum" in schema:
        hi = min(hi, math.floor(schema["maximum"]))
    return lo, hi


# JSON text: mostly printable ASCII, some of all of Unicode (no lone surrogates, which JSON cannot carry as UTF-8).
_ASCII = st.characters(min_codepoint=0x20, max_codepoint=0x7E)
_UNICODE = st.characters(codec="utf-8", exclude_categories=("Cs",))


def _text(min_size: int = 0, max_size: int = MAX_TEXT) -> SearchStrategy[str]:
    return st.one_of(st.text(_ASCII, min_size=min_size, max_size=max_size),
                     st.text(_UNICODE, min_size=min_size, max_size=max_size))


def _json_scalars() -> SearchStrategy[Any]:
    return st.one_of(st.none(), st.booleans(), st.integers(-(2**40), 2**40),
                     st.floats(allow_nan=False, allow_infinity=False, width=32), _text(max_size=8))


def _free_json(depth: int = 2) -> SearchStrategy[Any]:
    """Any JSON value (for x-kubernetes-preserve-unknown-fields nodes)."""
    keys = st.one_of(st.from_regex(r"[a-z][a-zA-Z]{0,10}", fullmatch=True), _text(1, 8))
    return st.recursive(_json_scalars(),
                        lambda inner: st.one_of(st.lists(inner, max_size=MAX_ITEMS),
                                                st.dictionaries(keys, inner, max_size=MAX_ITEMS)),
                        max_leaves=6 if depth > 1 else 2)


class SchemaFuzzer:
    """Strategies for instances of an OpenAPI v3 (structural) schema, and for one-keyword mutations of them."""

    def __init__(self, root: Mapping[str, Any], *, max_items: int = MAX_ITEMS, max_text: int = MAX_TEXT) -> None:
        self.root = root
        self.max_items = max_items
        self.max_text = max_text

    # ------------------------------------------------------------------ near-valid values

    def valid(self, schema: Mapping[str, Any], hints: Hints = Hints()) -> SearchStrategy[Any]:
        base = self._valid(schema, hints)
        if "default" in schema:  # the default spelled out is a value users write
            base = st.one_of(base, st.just(copy.deepcopy(schema["default"])))
        if schema.get("nullable"):
            base = st.one_of(st.none(), base)
        return base

    def _valid(self, schema: Mapping[str, Any], hints: Hints) -> SearchStrategy[Any]:
        if "enum" in schema:
            return st.sampled_from(list(schema["enum"]))
        types = _types(schema)
        if types == {"integer", "string"}:
            return st.one_of(self._integer(schema), self._string(schema, hints))
        if schema.get("x-kubernetes-preserve-unknown-fields") and not schema.get("properties"):
            if schema.get("type") == "object":
                return st.dictionaries(st.from_regex(r"[a-z][a-zA-Z]{0,10}", fullmatch=True), _free_json(),
                                       max_size=self.max_items)
            return _free_json()
        kind = next(iter(types)) if len(types) == 1 else None
        if kind == "object":
            return self._object(schema, hints)
        if kind == "array":
            return self._array(schema, hints)
        if kind == "string":
            return self._string(schema, hints)
        if kind == "integer":
            return self._integer(schema)
        if kind == "number":
            return self._number(schema)
        if kind == "boolean":
            return st.booleans()
        return _free_json()

    def _object(self, schema: Mapping[str, Any], hints: Hints) -> SearchStrategy[Any]:
        props: Mapping[str, Any] = schema.get("properties") or {}
        if not props and isinstance(schema.get("additionalProperties"), Mapping):
            values = self.valid(schema["additionalProperties"], hints)
            keys = self._string({"minLength": 1, "maxLength": 253}, hints)
            return st.dictionaries(keys, values, max_size=min(schema.get("maxProperties", self.max_items),
                                                              self.max_items))
        # A property's hints are those of the rules of its own object (a map's keys and values and a list's items
        # inherit them: `self.podAnnotations.all(k, ...)`), not those of its grandparents.
        mined = rule_hints(schema)
        required = set(schema.get("required") or ())
        bounds = cel_lower_bounds(schema)
        strategies = {}
        for name, sub in props.items():
            strategy = self.valid(sub, mined.get(name, Hints()))
            if name in bounds:  # `self.x > 0.0`: mostly generate what the rule accepts
                low, strict = bounds[name]
                within = self.valid({**sub, "minimum": max(low, sub.get("minimum", low))}, mined.get(name, Hints()))
                strategy = st.one_of(within.filter(lambda v, low=low, strict=strict: not strict or v > low), strategy)
            strategies[name] = strategy
        exclusive, implied = cel_presence_rules(schema)
        guarded = cel_guarded(schema)
        # An optional property is present about a third of the time (a sixth when a rule `!has(self.x) || ...`
        # guards it): sparse objects meet fewer cross-field rules at once, so more specs get past CEL to the
        # operator. Absent is the first choice, where shrinking goes.
        present, rarely = st.sampled_from([False, False, True]), st.sampled_from([False] * 5 + [True])

        @st.composite
        def obj(draw: st.DrawFn) -> dict[str, Any]:
            # Most of the time, honour the presence idioms of the CEL rules; otherwise leave them to chance.
            honour = draw(st.sampled_from([True, True, True, False]), label="honour CEL presence rules?")
            has = {name: name in required or draw(rarely if honour and name in guarded else present,
                                                  label=f"has {name}?") for name in strategies}
            if honour:
                for group in exclusive:
                    if sum(has[name] for name in group) != 1:
                        keep = draw(st.sampled_from(group), label=f"one of {group}")
                        has.update({name: name == keep for name in group})
            out: dict[str, Any] = {}
            later = {b for _, _, b in implied} if honour else set()
            for name, strategy in strategies.items():
                if has[name] and name not in later:
                    out[name] = draw(strategy, label=name)
            for name in later:
                has[name] = any(out.get(a, props[a].get("default")) == literal
                                for a, literal, b in implied if b == name)
                if has[name] or name in required:
                    out[name] = draw(strategies[name], label=name)
            return {name: out[name] for name in strategies if name in out}

        return obj()

    def _array(self, schema: Mapping[str, Any], hints: Hints) -> SearchStrategy[Any]:
        items = self.valid(schema.get("items") or {}, hints)
        lo = schema.get("minItems", 0)
        hi = max(lo, min(schema.get("maxItems", self.max_items), self.max_items))
        keys = schema.get("x-kubernetes-list-map-keys") if schema.get("x-kubernetes-list-type") == "map" else None
        if keys:
            return st.lists(items, min_size=lo, max_size=hi,
                            unique_by=lambda item: tuple(json.dumps(item.get(k)) for k in keys))
        return st.lists(items, min_size=lo, max_size=hi)

    def _string(self, schema: Mapping[str, Any], hints: Hints) -> SearchStrategy[str]:
        lo = schema.get("minLength", 0)
        hi = schema.get("maxLength", 10**6)
        size = max(lo, min(hi, self.max_text))
        if "pattern" in schema:
            base: SearchStrategy[str] = st.from_regex(schema["pattern"], fullmatch=True)
        else:
            base = _text(lo, size)
        # one_of draws its first branch most: a rule's own regex (what the rule accepts) first, then the field's
        # pattern or free text, then the rule's literals whole and as prefixes.
        if "pattern" in schema:  # a field's own pattern wins over the rules' hints
            hints = Hints(tuple(x for x in hints.literals if re.fullmatch(schema["pattern"], x)))
        options = [st.from_regex(regex, fullmatch=True) for regex in hints.regexes]
        options.append(base)
        if hints.literals:
            literal = st.sampled_from(hints.literals)
            options.append(literal)
            options.append(st.builds(lambda a, b: a + b, literal, base))
        if hi <= 4 * self.max_text and "pattern" not in schema:
            options.append(st.text(_ASCII, min_size=hi, max_size=hi))  # exactly at the length bound
        return st.one_of(options).filter(lambda s: _fits(s, schema) or "pattern" not in schema)

    def _integer(self, schema: Mapping[str, Any]) -> SearchStrategy[int]:
        lo, hi = _int_bounds(schema)
        return st.integers(lo, hi)

    def _number(self, schema: Mapping[str, Any]) -> SearchStrategy[float | int]:
        lo, hi = schema.get("minimum"), schema.get("maximum")
        floats = st.floats(min_value=lo, max_value=hi, allow_nan=False, allow_infinity=False)
        ints = st.integers(math.ceil(lo) if lo is not None else -(2**40), math.floor(hi) if hi is not None else 2**40)
        return st.one_of(floats, ints)

    # ------------------------------------------------------------------ mutations

    def nodes(self, value: Any, schema: Mapping[str, Any], path: tuple[str | int, ...] = ()) -> Iterator[_Node]:
        """Every value of a generated document with its schema node."""
        yield _Node(path, schema)
        if isinstance(value, dict):
            props: Mapping[str, Any] = schema.get("properties") or {}
            extra = schema.get("additionalProperties")
            for key, sub in value.items():
                sub_schema = props.get(key) or (extra if isinstance(extra, Mapping) else None)
                if sub_schema is not None:
                    yield from self.nodes(sub, sub_schema, (*path, key))
        elif isinstance(value, list) and isinstance(schema.get("items"), Mapping):
            for i, item in enumerate(value):
                yield from self.nodes(item, schema["items"], (*path, i))

    def mutations(self, node: _Node, current: Any) -> list[tuple[str, SearchStrategy[Any]]]:
        """(description, strategy of the replacement value) for each keyword of ``node`` one can break;
        the value ``REMOVE`` deletes the property."""
        s = node.schema
        out: list[tuple[str, SearchStrategy[Any]]] = []
        types = _types(s)
        wrong = {
            "string": st.one_of(st.integers(-5, 5), st.booleans()),
            "integer": st.one_of(st.sampled_from(["1", "0", "true"]), st.floats(0.5, 9.5).map(lambda f: f)),
            "number": st.one_of(st.sampled_from(["1.5", "0"]), st.booleans()),
            "boolean": st.one_of(st.sampled_from(["true", "false", "yes"]), st.integers(0, 1)),
            "object": st.one_of(st.just([]), st.just("x"), st.integers(0, 1)),
            "array": st.one_of(st.just({}), st.just("x")),
        }
        for t in sorted(types):
            if t in wrong and not (types == {"integer", "string"} and t == "string"):
                out.append((f"wrong type for {t}", wrong[t].filter(lambda v, ts=types: _json_type(v) not in ts)))
        out.append(("null", st.none()))
        if "enum" in s:
            enum = [e for e in s["enum"] if isinstance(e, str)]
            out.append(("not in enum", st.one_of(st.sampled_from([e.lower() for e in enum] + [e.upper() for e in enum]
                                                                 + [e + " " for e in enum]),
                                                 _text(0, 8)).filter(lambda v: v not in s["enum"])))
        if "string" in types and isinstance(current, str):
            if "maxLength" in s:
                n = s["maxLength"] + 1
                out.append(("longer than maxLength", st.just((current * (n // max(len(current), 1) + 1) or "x" * n)[:n]
                                                             if current else "x" * n)))
            if s.get("minLength", 0) > 0:
                out.append(("shorter than minLength", st.just("")))
            if "pattern" in s:
                out.append(("pattern violated", _text(0, 12).filter(lambda v: re.fullmatch(s["pattern"], v) is None)))
            # Characters that regular-expression engines disagree about at the end of a string.
            endings = st.sampled_from(["\n", " ", "\t", "\r\n"])
            out.append(("trailing newline/space", endings.map(lambda c: current + c)))
        if "integer" in types:
            lo, hi = _int_bounds(s)
            if "minimum" in s or s.get("format") in ("int32", "int64"):
                out.append(("below minimum", st.just(lo - 1)))
            if "maximum" in s or s.get("format") in ("int32", "int64"):
                out.append(("above maximum", st.just(hi + 1)))
            out.append(("integral float", st.just(float(current if isinstance(current, int) else 1))))
        if "number" in types:
            if "minimum" in s:
                out.append(("below minimum", st.sampled_from([s["minimum"] - 1e-9, s["minimum"] - 1, -1e308])))
            if "maximum" in s:
                out.append(("above maximum", st.sampled_from([s["maximum"] + 1e-6, s["maximum"] + 1, 1e308])))
        if "array" in types and isinstance(current, list) and current:
            if "maxItems" in s:
                out.append(("more than maxItems", st.just((current * (s["maxItems"] + 1))[: s["maxItems"] + 1])))
            if s.get("minItems", 0) > 0:
                out.append(("fewer than minItems", st.just([])))
            if s.get("x-kubernetes-list-type") == "map":
                out.append(("duplicate map-list key", st.just([*current, copy.deepcopy(current[0])])))
        if "object" in types and isinstance(current, dict):
            if s.get("properties") and not s.get("x-kubernetes-preserve-unknown-fields"):
                out.append(("unknown property", st.just({**current, "fuzzUnknownField": 1})))
                for req in s.get("required") or ():
                    if req in current:
                        out.append((f"required {req!r} missing",
                                    st.just({k: v for k, v in current.items() if k != req})))
            if "maxProperties" in s:
                n = s["maxProperties"] + 1
                out.append(("more than maxProperties", st.just({f"k{i}.example.com/x": "v" for i in range(n)})))
        return out


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _set(doc: Any, path: tuple[str | int, ...], value: Any) -> Any:
    if not path:
        return value
    target = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return doc


def _show(path: tuple[str | int, ...]) -> str:
    out = ""
    for key in path:
        out += f"[{key}]" if isinstance(key, int) else f".{key}"
    return out.lstrip(".")


def llmdeployments(schema: Mapping[str, Any] | None = None, *, name: str = "fuzz",
                   mutate: float = 1 / 6) -> SearchStrategy[FuzzCase]:
    """LLMDeployment bodies whose `spec` is generated from the CRD schema; a share ``mutate`` has one keyword of
    one node broken on purpose (FuzzCase.mutation says which)."""
    root = schema if schema is not None else load_crd_schema()
    spec_schema = root["properties"]["spec"]
    fuzzer = SchemaFuzzer(root)

    spec_strategy = fuzzer.valid(spec_schema)  # built once: building strategies costs more than drawing them

    @st.composite
    def build(draw: st.DrawFn) -> FuzzCase:
        spec = draw(spec_strategy, label="spec")
        body = {"apiVersion": "serving.llmops.dev/v1alpha1", "kind": "LLMDeployment", "metadata": {"name": name},
                "spec": spec}
        # False (where shrinking goes) keeps the spec as generated.
        # (hypothesis draws the first of a sampled_from list more often than its share: twice the share asked for.)
        every = max(round(1 / mutate), 2) if mutate > 0 else 0
        if not every or not draw(st.sampled_from([False] * (every - 2) + [True] * 2), label="mutate?"):
            return FuzzCase(body)
        candidates = [(node, choice) for node in fuzzer.nodes(spec, spec_schema, ("spec",))
                      for choice in fuzzer.mutations(node, _get(body, node.path))]
        if not candidates:
            return FuzzCase(body)
        node, (what, replacement) = draw(st.sampled_from(candidates), label="mutation")
        value = draw(replacement, label="mutated value")
        _set(body, node.path, value)
        return FuzzCase(body, f"{_show(node.path)}: {what}")

    return build()


def _get(doc: Any, path: tuple[str | int, ...]) -> Any:
    for key in path:
        doc = doc[key]
    return doc
