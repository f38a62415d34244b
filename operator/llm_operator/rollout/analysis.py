"""Canary analysis: PromQL per check, a verdict per check, a measurement, and the status counters.

Everything here is pure except :func:`measure`, whose only I/O is the injected `query` (default: the HTTP
client in ``_prometheus``), so the outcome rules are tested without a Prometheus.

Outcome rule (docs/rollouts.md "Analysis"), between Argo Rollouts' and Flagger's (see the reference):
- a check is Failed when the canary breaks any bound it could be compared with, Inconclusive when some bound
  had no data (canary absent or NaN; for a ratio, stable absent, NaN, 0 or infinite), else Successful;
- a measurement is Error when Prometheus could not be queried, else the worst check (Failed > Inconclusive >
  Successful); no data never counts as success (Argo's unguarded default would), and never as failure either
  (Flagger's would), because a canary that got no requests in the window has done nothing wrong yet;
- the analysis is Failed (abort) once failed measurements exceed failureLimit, Inconclusive (pause for a
  person) once measurements without data in a row exceed inconclusiveLimit, Error (pause) while the last
  measurement could not be taken, else Running.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Final, Literal, Protocol

from llm_operator import api, metrics
from llm_operator.rollout import _prometheus
from llm_operator.rollout._prometheus import PrometheusError

CheckPhase = Literal["Successful", "Failed", "Inconclusive", "Error"]
AnalysisPhase = Literal["Pending", "Running", "Successful", "Failed", "Inconclusive", "Error"]

# A measurement is as bad as its worst check.
_SEVERITY: Final[dict[CheckPhase, int]] = {"Successful": 0, "Inconclusive": 1, "Failed": 2, "Error": 3}
_SECONDS: Final = frozenset({"ttftP95", "ttftP50", "interTokenLatency"})
_MESSAGE_MAX: Final = 512  # api.CheckResult.message

# Label values are spliced into PromQL strings: allow only what a namespace or a revision hash can be, so a
# value can never close the quotes.
_LABEL_VALUE: Final = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_PLACEHOLDER: Final = re.compile(r"\$(revision|namespace)\b")


# ------------------------------------------------------------------------------------------ PromQL


def promql(check: api.AnalysisCheck, *, namespace: str, revision: str) -> str:
    """The instant query giving `check`'s one number for `revision` in `namespace`.

    The per-revision recorded series carry a `backend` label. A revision runs one backend, so there is one
    series; aggregating anyway makes the answer one number even if that ever changes (max for quantiles and
    ratios, which cannot be summed: the worse backend decides).
    """
    for label, value in (("namespace", namespace), ("revision", revision)):
        if not _LABEL_VALUE.fullmatch(value):
            raise ValueError(f"{label} {value!r} is not a label value this analysis can quote ([a-z0-9-])")
    sel = f'{{namespace="{namespace}",revision="{revision}"}}'
    match check.metric:
        case "ttftP95":
            return f"max({metrics.REVISION_TTFT_P95}{sel})"
        case "ttftP50":
            return f"max({metrics.REVISION_TTFT_P50}{sel})"
        case "errorRate":
            # Errors as clients saw them: the model's refusals and failures plus the 5xx answers and refusals the
            # OpenAI front produced itself (llm_requests_*_total{source="front"}), each request counted once (see
            # the request_errors rules in metrics/recording_rules.yaml).
            return f"max({metrics.REVISION_REQUEST_ERROR_RATIO}{sel})"
        case "interTokenLatency":
            return f"max({metrics.REVISION_INTER_TOKEN_LATENCY_MEAN}{sel})"
        case "tokensPerSecondPerReplica":
            # 0 tokens/s from a revision that had no work in the window is no data, not a throughput of 0:
            # otherwise an idle canary under light load fails a minRatioToStable floor. A revision with requests
            # running or queued but no tokens (a hung engine) still measures 0 and fails.
            work = (f"sum({metrics.REVISION_REQUESTS_RATE}{sel}) > 0 or sum({metrics.REVISION_RUNNING_REQUESTS}{sel})"
                    f" > 0 or sum({metrics.REVISION_QUEUE_DEPTH}{sel}) > 0")
            return (f"sum({metrics.REVISION_GENERATION_TOKENS_RATE}{sel}) / sum({metrics.REVISION_PODS}{sel})"
                    f" and on () ({work})")
        case "custom":
            values = {"revision": revision, "namespace": namespace}
            # One pass, so a substituted value is never scanned again.
            return _PLACEHOLDER.sub(lambda m: values[m[1]], check.query or "")


# ------------------------------------------------------------------------------------------ verdicts


@dataclass(frozen=True)
class CheckVerdict:
    """One check's outcome at one measurement (becomes an ``api.CheckResult``)."""

    metric: str
    phase: CheckPhase
    message: str
    canary: float | None = None
    stable: float | None = None

    def to_status(self) -> dict[str, Any]:
        """The camelCase ``status.rollout.analysis.checks[]`` item."""
        item: dict[str, Any] = {"metric": self.metric, "phase": self.phase, "message": self.message[:_MESSAGE_MAX]}
        # NaN and infinities are not JSON numbers: the API server would refuse the whole status patch.
        for key, value in (("canary", self.canary), ("stable", self.stable)):
            if value is not None and math.isfinite(value):
                item[key] = value
        return item


def _missing(value: float | None) -> bool:
    return value is None or math.isnan(value)


def _num(value: float, unit: str = "", *, apart_from: float | None = None) -> str:
    """3 significant digits, whole numbers from 100 up, never an exponent: `2.41s`, `0.01`, `1200`. More digits
    only where 3 would print `apart_from` (the bound) for a value on either side of it: `1.3s > max 1.3s` would
    read as a bug."""
    if not math.isfinite(value):
        return f"{value}{unit}"
    for digits in range(3, 18):
        text = str(round(value)) if digits == 3 and abs(value) >= 100 else f"{value:.{digits}g}"
        text = format(Decimal(text), "f")  # 1.23e-05 -> 0.0000123
        if apart_from is None or value == apart_from or float(text) != apart_from:
            break
    return text + unit


def _ratio(ratio: float, bound: float) -> str:
    """Two decimals (`2.94`, `0.26`), more only where two would print the bound itself (as in :func:`_num`)."""
    for decimals in range(2, 18):
        text = f"{ratio:.{decimals}f}".rstrip("0").rstrip(".")
        if float(text) != bound or ratio == bound:
            break
    return text


def _judge(value: float, bound: float, is_max: bool) -> tuple[bool, str]:
    """Bounds are inclusive (as Flagger's thresholdRange): only a value beyond the bound fails."""
    bad = value > bound if is_max else value < bound
    return bad, ((">" if bad else "<=") if is_max else ("<" if bad else ">="))


def evaluate(check: api.AnalysisCheck, *, canary: float | None, stable: float | None) -> CheckVerdict:
    """The verdict on one check from the canary's and the stable revision's values (None: no data)."""
    name, unit = check.metric, "s" if check.metric in _SECONDS else ""
    stable_kept = None if _missing(stable) else stable
    if canary is None or math.isnan(canary):
        return CheckVerdict(name, "Inconclusive", f"{name} no data for the canary", None, stable_kept)
    judged: list[tuple[bool, str]] = []
    for bound, is_max in ((check.max, True), (check.min, False)):
        if bound is not None:
            bad, op = _judge(canary, bound, is_max)
            judged.append((bad, f"{name} canary {_num(canary, unit, apart_from=bound)} {op} "
                                f"{'max' if is_max else 'min'} {_num(bound, unit)}"))
    no_ratio = ""
    ratio_bounds = [(b, m) for b, m in ((check.max_ratio_to_stable, True), (check.min_ratio_to_stable, False))
                    if b is not None]
    if ratio_bounds and stable_kept is None:
        no_ratio = f"{name} no data for the stable revision"
    elif ratio_bounds and stable_kept is not None and (stable_kept == 0 or math.isinf(stable_kept)):
        no_ratio = f"{name} stable is {_num(stable_kept, unit)}, no ratio"
    elif ratio_bounds and stable_kept is not None:
        ratio = canary / stable_kept
        for bound, is_max in ratio_bounds:
            bad, op = _judge(ratio, bound, is_max)
            judged.append((bad, f"{name} canary {_num(canary, unit)} vs stable {_num(stable_kept, unit)}, "
                                f"ratio {_ratio(ratio, bound)} {op} {_num(bound)}"))
    failed = [text for bad, text in judged if bad]
    # A broken bound is evidence even when another bound lacks data; a missing stable is not evidence of
    # anything, so it keeps an otherwise clean check from counting as a success.
    if failed:
        return CheckVerdict(name, "Failed", "; ".join(failed), canary, stable_kept)
    if no_ratio:
        return CheckVerdict(name, "Inconclusive", no_ratio, canary, stable_kept)
    return CheckVerdict(name, "Successful", "; ".join(text for _, text in judged), canary, stable_kept)


# ------------------------------------------------------------------------------------------ measurement


@dataclass(frozen=True)
class Measurement:
    """Every check's verdict at one moment, and the worst of them."""

    phase: CheckPhase
    checks: tuple[CheckVerdict, ...]
    message: str
    """The messages of the checks that decided the phase (for a condition or an Event)."""


def summarize(verdicts: Sequence[CheckVerdict]) -> Measurement:
    """The measurement of these verdicts: Error > Failed > Inconclusive > Successful."""
    if not verdicts:  # nothing measured is not a success either
        return Measurement("Inconclusive", (), "no checks")
    phase = max((v.phase for v in verdicts), key=_SEVERITY.__getitem__)
    # dict.fromkeys: the same Prometheus error on every check is said once.
    message = "; ".join(dict.fromkeys(v.message for v in verdicts if v.phase == phase))
    return Measurement(phase, tuple(verdicts), message)


class QueryFn(Protocol):
    def __call__(self, address: str, promql: str, /, *, timeout: float) -> float | None: ...


def measure(analysis: api.CanaryAnalysis, *, namespace: str, canary_revision: str, stable_revision: str,
            query: QueryFn = _prometheus.query) -> Measurement:
    """Run every check once against Prometheus. The stable revision is queried only for ratio bounds."""
    address = analysis.prometheus.address
    timeout = parse_duration(analysis.prometheus.timeout)
    verdicts: list[CheckVerdict] = []
    for check in analysis.checks:
        role = "canary"
        try:
            canary = query(address, promql(check, namespace=namespace, revision=canary_revision), timeout=timeout)
            stable = None
            if check.max_ratio_to_stable is not None or check.min_ratio_to_stable is not None:
                role = "stable"
                stable = query(address, promql(check, namespace=namespace, revision=stable_revision),
                               timeout=timeout)
        except PrometheusError as e:
            # Stop at the first error: an unreachable Prometheus would otherwise cost one timeout per check.
            # Values already read are dropped, since a measurement with a hole in it must not be judged.
            message = f"Prometheus at {address} could not be queried ({check.metric}, {role}): {e}"
            return summarize([CheckVerdict(c.metric, "Error", message) for c in analysis.checks])
        verdicts.append(evaluate(check, canary=canary, stable=stable))
    return summarize(verdicts)


# ------------------------------------------------------------------------------------------ status


def _utc(now: datetime) -> datetime:
    # A naive `now` is taken as UTC, as everywhere in this operator; astimezone() would take it as local time.
    return now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)


def _rfc3339(now: datetime) -> str:
    return _utc(now).strftime("%Y-%m-%dT%H:%M:%SZ")


def advance(previous: Mapping[str, Any] | None, measurement: Measurement, *, failure_limit: int,
            inconclusive_limit: int, now: datetime) -> dict[str, Any]:
    """The new ``status.rollout.analysis`` (camelCase ``api.AnalysisStatus``) after `measurement`.

    `failed` counts failed measurements in total (as Argo's failureLimit: a flapping canary is still
    aborted). `inconclusive` and `errors` count in a row: they pause the rollout, and a gap in the data or in
    Prometheus that heals should not. A measurement with data (Successful or Failed) ends an inconclusive run;
    an Error neither extends nor ends it (it says nothing about the data). Any non-Error ends an error run.
    """
    prev = previous or {}
    phase = measurement.phase
    failed = int(prev.get("failed", 0)) + (phase == "Failed")
    inconclusive = int(prev.get("inconclusive", 0))
    if phase == "Inconclusive":
        inconclusive += 1
    elif phase != "Error":
        inconclusive = 0
    errors = int(prev.get("errors", 0)) + 1 if phase == "Error" else 0
    overall: AnalysisPhase
    if failed > failure_limit:  # first: abort is final, and failed never decreases
        overall = "Failed"
    elif phase == "Error":
        overall = "Error"
    elif inconclusive > inconclusive_limit:
        overall = "Inconclusive"
    else:
        overall = "Running"
    return {
        "phase": overall,
        "measurements": int(prev.get("measurements", 0)) + 1,
        "failed": failed,
        "inconclusive": inconclusive,
        "errors": errors,
        "lastMeasuredAt": _rfc3339(now),
        "checks": [v.to_status() for v in measurement.checks],
    }


def next_due(previous: Mapping[str, Any] | None, *, interval_seconds: float) -> datetime | None:
    """When the next measurement is due; None: at once (nothing measured yet). For the caller's requeue."""
    last = (previous or {}).get("lastMeasuredAt")
    if not last:
        return None
    return _utc(datetime.fromisoformat(str(last).replace("Z", "+00:00"))) + timedelta(seconds=interval_seconds)


def due(previous: Mapping[str, Any] | None, *, interval_seconds: float, now: datetime) -> bool:
    """Whether to measure now: the first measurement at once, then one every interval. The time lives in
    status, so an operator restart neither skips nor repeats a measurement."""
    at = next_due(previous, interval_seconds=interval_seconds)
    return at is None or _utc(now) >= at


_DURATION_PART: Final = re.compile(r"([0-9]+)(ms|s|m|h)")
_UNIT_SECONDS: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """Seconds in an ``api.DURATION_PATTERN`` string (`10s`, `1m30s`, `500ms`).

    simulate/profile.py has a looser one (it also takes plain numbers), but importing it would load the
    simulator into the operator; this one accepts exactly what the CRD admits.
    """
    if not re.fullmatch(api.DURATION_PATTERN, text):
        raise ValueError(f"not a duration: {text!r} (e.g. 10s, 1m30s, 500ms)")
    return sum(int(n) * _UNIT_SECONDS[unit] for n, unit in _DURATION_PART.findall(text))
