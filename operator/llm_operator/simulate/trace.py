"""Request traces: CSV files (the Azure LLM inference trace's format as is) and seeded synthetic generators.

A trace is three parallel arrays, one entry per request: arrival time (seconds from the trace's start, sorted),
prompt tokens and output tokens. Readers raise :class:`TraceError` naming the line and the field.
"""

from __future__ import annotations

import csv
import itertools
import math
import random
import re
from array import array
from bisect import bisect_left
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Final


class TraceError(ValueError):
    """A trace that cannot be read; the message names the file and line, or the generator's field."""


@dataclass(frozen=True)
class Trace:
    name: str
    times: array[float]
    prompt_tokens: array[float]
    output_tokens: array[float]
    duration: float

    def __post_init__(self) -> None:
        if not (len(self.times) == len(self.prompt_tokens) == len(self.output_tokens)):
            raise ValueError("times, prompt_tokens and output_tokens must have the same length")

    def __len__(self) -> int:
        return len(self.times)

    @property
    def mean_prompt(self) -> float:
        return sum(self.prompt_tokens) / len(self) if len(self) else 512.0

    @property
    def mean_output(self) -> float:
        return sum(self.output_tokens) / len(self) if len(self) else 256.0

    def rate(self, *, start: float, end: float) -> float:
        """Requests per second arriving in [start, end)."""
        if end <= start:
            return 0.0
        return (bisect_left(self.times, end) - bisect_left(self.times, start)) / (end - start)


# ------------------------------------------------------------------------------------------ CSV

# Column names accepted for each field (case-insensitive). The first names are the Azure LLM inference trace's
# (AzurePublicDataset, `TIMESTAMP,ContextTokens,GeneratedTokens`).
_COLUMNS: Final[Mapping[str, tuple[str, ...]]] = {
    "timestamp": ("timestamp", "time", "arrival_time", "t"),
    "prompt": ("contexttokens", "prompt_tokens", "prompttokens", "input_tokens", "prompt"),
    "output": ("generatedtokens", "output_tokens", "outputtokens", "completion_tokens", "output"),
}


def _column(header: list[str], field: str, path: Path) -> int:
    names = [h.strip().lower() for h in header]
    for alias in _COLUMNS[field]:
        if alias in names:
            return names.index(alias)
    raise TraceError(f"{path}: line 1: no {field} column; the header must name one of "
                     f"{', '.join(_COLUMNS[field])} (case-insensitive), got {','.join(header)!r}")


def _timestamp_parser(first: str) -> Callable[[str], float]:
    """Seconds as a number, or an ISO 8601 date-time (the Azure trace's `2023-11-16 18:15:46.6805900`;
    Python 3.11 reads any number of fractional digits)."""
    try:
        float(first)
    except ValueError:
        return lambda s: datetime.fromisoformat(s.strip()).timestamp()
    return float


def read_csv(path: str | Path) -> Trace:
    """Read a CSV trace with a header naming a timestamp, prompt-token and output-token column."""
    path = Path(path)
    try:
        handle = path.open(newline="", encoding="utf-8")
    except OSError as exc:
        raise TraceError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    times: list[float] = []
    prompts = array("d")
    outputs = array("d")
    with handle:
        reader = csv.reader(handle)
        try:
            header = next(reader)
        except StopIteration:
            raise TraceError(f"{path}: empty file; expected a header such as TIMESTAMP,ContextTokens,"
                             "GeneratedTokens") from None
        except (csv.Error, UnicodeDecodeError) as exc:
            raise TraceError(f"{path}: line 1: {exc}") from None
        ti, pi, oi = (_column(header, f, path) for f in ("timestamp", "prompt", "output"))
        width = max(ti, pi, oi) + 1
        parse_time: Callable[[str], float] | None = None
        line = 1
        try:
            for line, row in enumerate(reader, start=2):
                if not row or (len(row) == 1 and not row[0].strip()):
                    continue
                if len(row) < width:
                    raise TraceError(f"{path}: line {line}: expected {len(header)} fields, got {len(row)}: "
                                     f"{','.join(row)!r}")
                raw_t = row[ti]
                if parse_time is None:
                    parse_time = _timestamp_parser(raw_t)
                try:
                    t = parse_time(raw_t)
                except ValueError:
                    raise TraceError(f"{path}: line {line}: {header[ti].strip()}: not a time: {raw_t!r} "
                                     "(seconds, or an ISO 8601 date-time like 2023-11-16 18:15:46.68)") from None
                if not math.isfinite(t):
                    raise TraceError(f"{path}: line {line}: {header[ti].strip()}: not a finite time: {raw_t!r}")
                times.append(t)
                prompts.append(_tokens(row[pi], path=path, line=line, field=header[pi].strip(), least=0))
                # A request that generates nothing still waits for its first response; count it as one token.
                outputs.append(max(1.0, _tokens(row[oi], path=path, line=line, field=header[oi].strip(), least=0)))
        except csv.Error as exc:
            raise TraceError(f"{path}: line {line}: {exc}") from None
        except UnicodeDecodeError as exc:
            raise TraceError(f"{path}: line {line + 1}: not UTF-8 text: {exc.reason}") from None
    if not times:
        raise TraceError(f"{path}: no requests after the header")
    return _from_lists(path.name, times, prompts, outputs, duration=None)


def _tokens(raw: str, *, path: Path, line: int, field: str, least: int) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise TraceError(f"{path}: line {line}: {field}: not a number: {raw!r}") from None
    if not math.isfinite(value) or value < least or value != int(value):
        raise TraceError(f"{path}: line {line}: {field}: expected a whole number >= {least}, got {raw!r}")
    return value


def _from_lists(name: str, times: list[float], prompts: array[float], outputs: array[float],
                *, duration: float | None) -> Trace:
    unsorted = any(b < a for a, b in itertools.pairwise(times))
    order = sorted(range(len(times)), key=times.__getitem__) if unsorted else None
    t0 = min(times) if times else 0.0
    if order is not None:
        times = [times[i] for i in order]
        prompts = array("d", (prompts[i] for i in order))
        outputs = array("d", (outputs[i] for i in order))
    rel = array("d", (t - t0 for t in times))
    end = rel[-1] if rel else 0.0
    # A recorded trace ends with its last request; one more second so that it is inside the simulated span.
    return Trace(name, rel, prompts, outputs, duration if duration is not None else math.floor(end) + 1.0)


# ------------------------------------------------------------------------------------------ synthetic

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(text: str, *, field: str = "duration") -> float:
    """`90`, `90s`, `10m`, `1.5h`, `1d` -> seconds."""
    m = _DURATION.match(text)
    if not m:
        raise TraceError(f"{field}: not a duration: {text!r} (e.g. 90s, 10m, 24h)")
    return float(m.group(1)) * _UNITS[m.group(2)]


@dataclass(frozen=True)
class _Param:
    kind: str  # "float" | "duration" | "int" | "choice" | "levels"
    default: object
    help: str
    required: bool = False


_COMMON: Final[dict[str, _Param]] = {
    "duration": _Param("duration", None, "how long the trace runs"),
    "seed": _Param("int", 0, "random seed"),
    "prompt": _Param("float", 512.0, "mean prompt tokens"),
    "output": _Param("float", 256.0, "mean output tokens"),
    "spread": _Param("float", 0.0, "log-normal sigma of token counts (0: every request has the mean)"),
    "arrivals": _Param("choice", "poisson", "poisson (random) or uniform (evenly spaced) arrivals"),
}
GENERATORS: Final[dict[str, dict[str, _Param]]] = {
    "poisson": {"rps": _Param("float", None, "requests per second", True), **_COMMON,
                "duration": _Param("duration", 3600.0, "how long the trace runs")},
    "diurnal": {"low": _Param("float", None, "rps at the trough", True),
                "high": _Param("float", None, "rps at the peak", True),
                "period": _Param("duration", 86400.0, "length of one cycle"),
                "peak": _Param("duration", None, "time of the peak within a cycle (default: half the period)"),
                **_COMMON, "duration": _Param("duration", None, "how long the trace runs (default: one period)")},
    "burst": {"base": _Param("float", None, "rps between bursts", True),
              "peak": _Param("float", None, "rps in a burst", True),
              "every": _Param("duration", 600.0, "time from one burst's start to the next"),
              "length": _Param("duration", 60.0, "how long a burst lasts"),
              "start": _Param("duration", None, "when the first burst starts (default: one `every`)"),
              **_COMMON, "duration": _Param("duration", 3600.0, "how long the trace runs")},
    "step": {"levels": _Param("levels", None, "T:RPS/T:RPS/...: from time T on, RPS requests per second", True),
             **_COMMON, "duration": _Param("duration", None, "how long the trace runs (default: last T + 60 s)")},
}


def parse_spec(text: str) -> tuple[str, dict[str, object]]:
    """`poisson:rps=5,duration=1h,seed=2` -> ("poisson", {...}) with every field checked and defaulted."""
    kind, _, rest = text.partition(":")
    kind = kind.strip().lower()
    if kind not in GENERATORS:
        raise TraceError(f"unknown trace generator {kind!r}: expected a CSV file or one of "
                         f"{', '.join(f'{k}:...' for k in GENERATORS)}")
    params = GENERATORS[kind]
    values: dict[str, object] = {}
    for item in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, raw = item.partition("=")
        key = key.strip()
        if not eq:
            raise TraceError(f"{kind}: {item!r}: expected KEY=VALUE")
        if key not in params:
            raise TraceError(f"{kind}: unknown field {key!r}; fields: {', '.join(params)}")
        values[key] = _convert(kind, key, params[key], raw.strip())
    for key, param in params.items():
        if key not in values:
            if param.required:
                raise TraceError(f"{kind}: missing field {key} ({param.help})")
            values[key] = param.default
    return kind, values


def _convert(kind: str, key: str, param: _Param, raw: str) -> object:
    where = f"{kind}: {key}"
    if param.kind == "duration":
        try:
            value = parse_duration(raw, field=where)
        except TraceError:
            raise
        if value <= 0:
            raise TraceError(f"{where}: must be > 0, got {raw!r}")
        return value
    if param.kind == "int":
        try:
            return int(raw)
        except ValueError:
            raise TraceError(f"{where}: not a whole number: {raw!r}") from None
    if param.kind == "choice":
        if raw not in ("poisson", "uniform"):
            raise TraceError(f"{where}: expected poisson or uniform, got {raw!r}")
        return raw
    if param.kind == "levels":
        levels: list[tuple[float, float]] = []
        for part in raw.split("/"):
            at, colon, rps = part.partition(":")
            if not colon:
                raise TraceError(f"{where}: {part!r}: expected T:RPS (e.g. 0:2/60:20/180:2)")
            t = parse_duration(at, field=where)
            try:
                r = float(rps)
            except ValueError:
                raise TraceError(f"{where}: {part!r}: rps is not a number") from None
            if not (r >= 0 and math.isfinite(r)):
                raise TraceError(f"{where}: {part!r}: rps must be >= 0")
            if levels and t <= levels[-1][0]:
                raise TraceError(f"{where}: times must increase, got {at} after {levels[-1][0]:g}")
            levels.append((t, r))
        return levels
    try:
        value = float(raw)
    except ValueError:
        raise TraceError(f"{where}: not a number: {raw!r}") from None
    if not math.isfinite(value) or value < 0:
        raise TraceError(f"{where}: must be a number >= 0, got {raw!r}")
    if key in ("prompt", "output") and value < 1:
        raise TraceError(f"{where}: must be >= 1, got {raw!r}")
    return value


def rate_function(kind: str, p: Mapping[str, object]) -> tuple[Callable[[float], float], float]:
    """The generator's arrival rate (rps) as a function of time, and the trace's duration."""
    if kind == "poisson":
        rps = float(p["rps"])  # type: ignore[arg-type]
        return (lambda t: rps), float(p["duration"])  # type: ignore[arg-type]
    if kind == "diurnal":
        low, high, period = (float(p[k]) for k in ("low", "high", "period"))  # type: ignore[arg-type]
        if high < low:
            raise TraceError(f"diurnal: high ({high:g}) must be >= low ({low:g})")
        peak = float(p["peak"]) if p["peak"] is not None else period / 2  # type: ignore[arg-type]
        duration = float(p["duration"]) if p["duration"] is not None else period  # type: ignore[arg-type]
        return (lambda t: low + (high - low) * (1 + math.cos(2 * math.pi * (t - peak) / period)) / 2), duration
    if kind == "burst":
        base, peak, every, length = (float(p[k]) for k in ("base", "peak", "every", "length"))  # type: ignore[arg-type]
        if length > every:
            raise TraceError(f"burst: length ({length:g} s) must not exceed every ({every:g} s)")
        start = float(p["start"]) if p["start"] is not None else every  # type: ignore[arg-type]

        def burst(t: float) -> float:
            return peak if t >= start and (t - start) % every < length else base

        return burst, float(p["duration"])  # type: ignore[arg-type]
    levels: list[tuple[float, float]] = p["levels"]  # type: ignore[assignment]
    duration = float(p["duration"]) if p["duration"] is not None else levels[-1][0] + 60.0  # type: ignore[arg-type]

    def step(t: float) -> float:
        current = 0.0
        for at, rps in levels:
            if t >= at:
                current = rps
        return current

    return step, duration


def _slots(rate: Callable[[float], float], duration: float, slot: float) -> Iterator[tuple[float, float, float]]:
    """(start, end, rate) of each slot; the rate is taken at the slot's middle (exact for piecewise-constant
    profiles whose changes fall on slot boundaries, and within 0.01 % for a 24 h sine at 1 s slots)."""
    t = 0.0
    while t < duration:
        end = min(duration, t + slot)
        yield t, end, max(0.0, rate((t + end) / 2))
        t = end


def generate(text: str) -> Trace:
    """A synthetic trace from a spec such as `diurnal:low=1,high=10,period=24h,seed=3`."""
    kind, p = parse_spec(text)
    rate, duration = rate_function(kind, p)
    rng = random.Random(int(p["seed"]))  # type: ignore[call-overload]
    uniform = p["arrivals"] == "uniform"
    # Arrivals by time rescaling: the k-th arrival is where the integrated rate reaches S_k, with S_k a sum of
    # Exp(1) draws (a Poisson process) or k - 1/2 (evenly spaced). Exact for any rate profile.
    times = array("d")
    target = 0.5 if uniform else rng.expovariate(1.0)
    acc = 0.0
    for start, end, r in _slots(rate, duration, 1.0):
        mass = r * (end - start)
        while acc + mass >= target and r > 0:
            times.append(start + (target - acc) / r)
            target += 1.0 if uniform else rng.expovariate(1.0)
        acc += mass
    prompt, output, spread = (float(p[k]) for k in ("prompt", "output", "spread"))  # type: ignore[arg-type]
    prompts = _token_counts(rng, prompt, spread, len(times))
    outputs = _token_counts(rng, output, spread, len(times))
    return Trace(text, times, prompts, outputs, duration)


def _token_counts(rng: random.Random, mean: float, sigma: float, n: int) -> array[float]:
    if sigma <= 0:
        return array("d", [float(round(mean))]) * n
    mu = math.log(mean) - sigma * sigma / 2  # a log-normal with this mean
    return array("d", (max(1.0, float(round(rng.lognormvariate(mu, sigma)))) for _ in range(n)))


def write_csv(t: Trace, path: str | Path, *, start: datetime) -> None:
    """Write `t` in the Azure LLM inference trace's format (`TIMESTAMP,ContextTokens,GeneratedTokens`, the
    timestamp with 7 fractional digits as in that trace), so synthetic traces can be shared as files."""
    from datetime import timedelta

    with Path(path).open("w", newline="", encoding="utf-8") as handle:
        out = csv.writer(handle, lineterminator="\n")
        out.writerow(["TIMESTAMP", "ContextTokens", "GeneratedTokens"])
        for at, prompt, output in zip(t.times, t.prompt_tokens, t.output_tokens, strict=True):
            stamp = (start + timedelta(seconds=at)).strftime("%Y-%m-%d %H:%M:%S.%f") + "0"
            out.writerow([stamp, int(prompt), int(output)])


def load(text: str) -> Trace:
    """`--trace`: a generator spec (`poisson:...`, `diurnal:...`, `burst:...`, `step:...`) or a CSV file."""
    head = text.partition(":")[0].strip().lower()
    if head in GENERATORS and not Path(text).exists():
        return generate(text)
    path = Path(text)
    if not path.exists():
        raise TraceError(f"{text}: no such file, and not a generator spec (poisson:rps=5,duration=1h | "
                         "diurnal:low=1,high=10 | burst:base=2,peak=20 | step:levels=0:2/60:20)")
    return read_csv(path)
