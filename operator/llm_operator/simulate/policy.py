"""Policies to compare: ours from the LLMDeployment's spec.autoscaling (through the operator's own HPA builder,
so what is simulated is what the operator deploys), variants of it, the CPU-70 % rule, a fixed count, the oracle.

`--policy` grammar (repeatable):

    spec                                  the LLMDeployment's spec.autoscaling (the default)
    hpa:KEY=VALUE,...                     spec.autoscaling with these fields changed (or, without one, built from them)
    hpa:{YAML}                            the same, as a YAML flow mapping merged into spec.autoscaling
    cpu:PERCENT[,minReplicas=N,maxReplicas=N]   an HPA on average CPU utilization (no behavior: upstream defaults)
    fixed:N                               N replicas, no autoscaler
    oracle                                perfect foresight (see oracle.py)
    FILE.yaml                             another LLMDeployment's spec.autoscaling

KEY for `hpa:`: queueDepth, tokensPerSecond, kvCacheUtilization (a number, or `none` to drop it), minReplicas,
maxReplicas, upWindow / downWindow (stabilization seconds), up / down (rate policies such as
`pods:2/60s+percent:100/60s`), upSelect / downSelect (Max, Min, Disabled).
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pydantic
import yaml

from llm_operator import api
from llm_operator.builders import autoscaling as hpa_builder

from .engine import Source
from .hpa import Behavior, HPASpec, PodsMetric, ResourceMetric, ScalingPolicy, ScalingRules
from .trace import parse_duration

# The adapter's metric name -> what the simulated chain serves for it.
_SOURCES: dict[str, Source] = {
    hpa_builder.METRICS["queueDepth"][0]: "queue",
    hpa_builder.METRICS["tokensPerSecond"][0]: "tokens",
    hpa_builder.METRICS["kvCacheUtilization"][0]: "kv",
}
CPU_METRIC = "cpu"


class PolicyError(ValueError):
    """A policy that cannot be simulated; the message names the policy and the field."""


@dataclass(frozen=True, kw_only=True)
class Policy:
    name: str
    kind: Literal["hpa", "cpu", "fixed", "oracle"]
    description: str
    hpa: HPASpec | None = None
    sources: dict[str, Source] = field(default_factory=dict)
    replicas: int | None = None  # fixed
    floor: int = 1  # oracle: the fewest replicas it keeps


def milli(quantity: str) -> int:
    """Quantity.MilliValue() of the plain forms the builder writes (`4`, `1500`, `800m`)."""
    if quantity.endswith("m"):
        return int(quantity[:-1])
    return round(float(quantity) * 1000)


def hpa_from_manifest(manifest: dict[str, Any]) -> tuple[HPASpec, dict[str, Source]]:
    """The HPA port's spec from an autoscaling/v2 HorizontalPodAutoscaler manifest (what `build_hpa` writes)."""
    spec = manifest["spec"]
    metrics: list[PodsMetric | ResourceMetric] = []
    sources: dict[str, Source] = {}
    for m in spec["metrics"]:
        if m["type"] == "Pods":
            name = m["pods"]["metric"]["name"]
            metrics.append(PodsMetric(name=name, target_milli=milli(str(m["pods"]["target"]["averageValue"]))))
            sources[name] = _SOURCES[name]
        elif m["type"] == "Resource" and m["resource"]["name"] == "cpu":
            metrics.append(ResourceMetric(name=CPU_METRIC, target_utilization=int(m["resource"]["target"]
                                                                                   ["averageUtilization"])))
            sources[CPU_METRIC] = "cpu"
        else:
            raise PolicyError(f"metric type {m['type']} is not simulated (Pods and Resource cpu are)")
    behavior = None
    if spec.get("behavior") is not None:
        behavior = Behavior(scale_up=_rules(spec["behavior"].get("scaleUp")),
                            scale_down=_rules(spec["behavior"].get("scaleDown")))
    return HPASpec(min_replicas=int(spec.get("minReplicas", 1)), max_replicas=int(spec["maxReplicas"]),
                   metrics=tuple(metrics), behavior=behavior), sources


def _rules(raw: dict[str, Any] | None) -> ScalingRules | None:
    if raw is None:
        return None
    policies = raw.get("policies")
    return ScalingRules(
        stabilization_window_seconds=raw.get("stabilizationWindowSeconds"),
        select_policy=raw.get("selectPolicy"),
        policies=None if policies is None else tuple(
            ScalingPolicy(type=p["type"], value=int(p["value"]), period_seconds=int(p["periodSeconds"]))
            for p in policies),
        tolerance=None if raw.get("tolerance") is None else float(raw["tolerance"]),
    )


def _validation_message(exc: pydantic.ValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"])
        msg = str(err["msg"]).removeprefix("Value error, ")
        parts.append(f"{where}: {msg}" if where and not msg.startswith("spec.") else msg)
    return "; ".join(parts)


def from_autoscaling(llmd: api.LLMDeployment, autoscaling: api.AutoscalingSpec, *, name: str,
                     description: str) -> Policy:
    """Our policy: the HPA the operator's builder writes for this autoscaling block."""
    if autoscaling.provider != "HPA":
        raise PolicyError(f"{name}: provider {autoscaling.provider} is not simulated: KEDA's HPA reads External "
                          "metrics, which the HPA port leaves out; simulate provider HPA with the same targets")
    candidate = llmd.model_copy(update={"spec": llmd.spec.model_copy(update={"autoscaling": autoscaling})})
    manifest = hpa_builder.build_hpa(candidate, namespace="default", owner_uid=None)
    spec, sources = hpa_from_manifest(manifest)
    return Policy(name=name, kind="hpa", description=description, hpa=spec, sources=sources,
                  floor=autoscaling.min_replicas)


def _describe(autoscaling: api.AutoscalingSpec) -> str:
    targets = ", ".join(f"{k} {v:g}" for k, v in hpa_builder.targets(autoscaling).items())
    return f"HPA {targets}; {autoscaling.min_replicas}-{autoscaling.max_replicas} replicas"


_SHORT_KEYS = {
    "queueDepth": ("metrics", "queueDepth"),
    "tokensPerSecond": ("metrics", "tokensPerSecond"),
    "kvCacheUtilization": ("metrics", "kvCacheUtilization"),
    "minReplicas": ("minReplicas",),
    "maxReplicas": ("maxReplicas",),
    "upWindow": ("behavior", "scaleUp", "stabilizationWindowSeconds"),
    "downWindow": ("behavior", "scaleDown", "stabilizationWindowSeconds"),
    "up": ("behavior", "scaleUp", "policies"),
    "down": ("behavior", "scaleDown", "policies"),
    "upSelect": ("behavior", "scaleUp", "selectPolicy"),
    "downSelect": ("behavior", "scaleDown", "selectPolicy"),
}
_RATE = re.compile(r"^(pods|percent):(\d+)/(\S+)$", re.IGNORECASE)


def _short_value(text: str, key: str, raw: str) -> Any:
    raw = raw.strip()
    if key in ("up", "down"):
        policies = []
        for part in raw.split("+"):
            m = _RATE.match(part.strip())
            if not m:
                raise PolicyError(f"{text}: {key}: {part!r}: expected pods:N/PERIOD or percent:N/PERIOD "
                                  "(e.g. pods:2/60s+percent:100/60s)")
            period = parse_duration(m.group(3), field=f"{key} period")
            policies.append({"type": m.group(1).title(), "value": int(m.group(2)), "periodSeconds": int(period)})
        return policies
    if key in ("upSelect", "downSelect"):
        return raw
    if raw.lower() == "none" and key in ("queueDepth", "tokensPerSecond", "kvCacheUtilization"):
        return None
    if key in ("upWindow", "downWindow"):
        return int(parse_duration(raw, field=key))
    try:
        number = float(raw)
    except ValueError:
        raise PolicyError(f"{text}: {key}: not a number: {raw!r}") from None
    if key in ("minReplicas", "maxReplicas"):
        if number != int(number):
            raise PolicyError(f"{text}: {key}: expected a whole number, got {raw!r}")
        return int(number)
    return number


def _deep_merge(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        elif value is None:
            out.pop(key, None)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _overlay(text: str, body: str) -> dict[str, Any]:
    if body.lstrip().startswith("{"):
        try:
            data = yaml.safe_load(body)
        except yaml.YAMLError as exc:
            raise PolicyError(f"{text}: not a YAML mapping: {exc}") from None
        if not isinstance(data, dict):
            raise PolicyError(f"{text}: expected a YAML mapping such as {{metrics: {{queueDepth: 2}}}}")
        return data
    overlay: dict[str, Any] = {}
    for item in filter(None, (p.strip() for p in body.split(","))):
        key, eq, raw = item.partition("=")
        key = key.strip()
        if not eq:
            raise PolicyError(f"{text}: {item!r}: expected KEY=VALUE")
        if key not in _SHORT_KEYS:
            raise PolicyError(f"{text}: unknown field {key!r}; fields: {', '.join(_SHORT_KEYS)}")
        node = overlay
        path = _SHORT_KEYS[key]
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = _short_value(text, key, raw)
    return overlay


def _autoscaling_dict(llmd: api.LLMDeployment) -> dict[str, Any]:
    """spec.autoscaling as written: a default computed from other fields (minReplicas from maxReplicas) is
    computed again after the overlay, so `hpa:maxReplicas=1` on a spec without minReplicas stays valid."""
    if llmd.spec.autoscaling is None:
        return {}
    return llmd.spec.autoscaling.model_dump(by_alias=True, exclude_none=True, exclude_unset=True)


def parse(text: str, *, llmd: api.LLMDeployment, source: str) -> Policy:
    """One `--policy` value. `source` names the LLMDeployment file, for messages."""
    text = text.strip()
    head, _, body = text.partition(":")
    head_l = head.lower()
    if text == "spec":
        if llmd.spec.autoscaling is None:
            raise PolicyError(f"{source}: LLMDeployment {llmd.name} has no spec.autoscaling: add one, or compare "
                              "policies with --policy (e.g. --policy hpa:queueDepth=4,maxReplicas=8 --policy fixed:4)")
        return from_autoscaling(llmd, llmd.spec.autoscaling, name="spec", description=_describe(llmd.spec.autoscaling))
    if text == "oracle":
        floor = llmd.spec.autoscaling.min_replicas if llmd.spec.autoscaling is not None else 1
        return Policy(name="oracle", kind="oracle", description="perfect foresight, no start-up wait",
                      floor=max(1, floor))
    m = re.fullmatch(r"fixed[:=](\d+)", text)
    if m:
        n = int(m.group(1))
        if n < 1:
            raise PolicyError(f"{text}: a fixed policy needs at least 1 replica")
        return Policy(name=text, kind="fixed", description=f"{n} replicas, no autoscaler", replicas=n)
    if head_l == "fixed":
        raise PolicyError(f"{text}: expected fixed:N with N a whole number of replicas")
    m = re.fullmatch(r"cpu[:=-]?(\d+)%?(?:,(.*))?", text, re.IGNORECASE)
    if m:
        return _cpu_policy(text, int(m.group(1)), m.group(2) or "", llmd)
    if head_l == "hpa":
        merged = _deep_merge(_autoscaling_dict(llmd), _overlay(text, body))
        try:
            autoscaling = api.AutoscalingSpec.model_validate(merged)
        except pydantic.ValidationError as exc:
            raise PolicyError(f"{text}: spec.autoscaling: {_validation_message(exc)}") from None
        return from_autoscaling(llmd, autoscaling, name=text, description=_describe(autoscaling))
    path = Path(text)
    if path.suffix in (".yaml", ".yml", ".json") or path.exists():
        return _from_file(text, path)
    raise PolicyError(f"unknown policy {text!r}: expected spec, oracle, fixed:N, cpu:PERCENT, hpa:KEY=VALUE,..., "
                      "hpa:{YAML} or an LLMDeployment file")


def _from_file(text: str, path: Path) -> Policy:
    from llm_operator.builders.render import RenderError, load_file

    try:
        found = load_file(path)
    except (RenderError, OSError) as exc:
        raise PolicyError(f"policy {text}: {exc}") from None
    except pydantic.ValidationError as exc:
        raise PolicyError(f"policy {text}: {_validation_message(exc)}") from None
    if not found:
        raise PolicyError(f"policy {text}: no LLMDeployment in the file")
    other = found[0]
    if other.spec.autoscaling is None:
        raise PolicyError(f"policy {text}: LLMDeployment {other.name} has no spec.autoscaling")
    return from_autoscaling(other, other.spec.autoscaling, name=path.name,
                            description=_describe(other.spec.autoscaling))


def _cpu_policy(text: str, percent: int, rest: str, llmd: api.LLMDeployment) -> Policy:
    """Seed 003's rule: scale when the average CPU utilization exceeds the target (70 %), an HPA with a Resource
    metric and no behavior, so the upstream defaults apply (scale up to double or +4 per sync, scale down to the
    highest recommendation of the last 5 minutes at once)."""
    if not 1 <= percent <= 1000:
        raise PolicyError(f"{text}: the CPU target must be 1-1000 %, got {percent}")
    lo = llmd.spec.autoscaling.min_replicas if llmd.spec.autoscaling is not None else 1
    hi: int | None = llmd.spec.autoscaling.max_replicas if llmd.spec.autoscaling is not None else None
    for item in filter(None, (p.strip() for p in rest.split(","))):
        key, _, raw = item.partition("=")
        if key not in ("minReplicas", "maxReplicas") or not raw.strip().isdigit():
            raise PolicyError(f"{text}: {item!r}: expected minReplicas=N or maxReplicas=N")
        if key == "minReplicas":
            lo = int(raw)
        else:
            hi = int(raw)
    if hi is None:
        raise PolicyError(f"{text}: maxReplicas is needed (the LLMDeployment has no spec.autoscaling to take it "
                          f"from), e.g. {text.split(',')[0]},maxReplicas=8")
    if not 1 <= lo <= hi:
        raise PolicyError(f"{text}: need 1 <= minReplicas <= maxReplicas, got {lo} and {hi}")
    manifest = {"spec": {"minReplicas": lo, "maxReplicas": hi, "metrics": [
        {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization",
                                                                    "averageUtilization": percent}}}]}}
    spec, sources = hpa_from_manifest(manifest)
    return Policy(name=text, kind="cpu", description=f"HPA CPU {percent}% (no behavior); {lo}-{hi} replicas",
                  hpa=spec, sources=sources, floor=lo)
