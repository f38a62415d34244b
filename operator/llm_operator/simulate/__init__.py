"""`llmctl simulate`: replay a request trace against autoscaling policies and report SLO attainment and GPU-hours.

Pure: no cluster, no network, no clock but the simulated one. docs/simulate.md describes the model.

>>> from llm_operator.simulate import simulate, trace, policy, profile
>>> t = trace.load("burst:base=2,peak=20,duration=1h,seed=1")
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from llm_operator import api

from . import engine, oracle
from .hpa import HorizontalController
from .policy import Policy, PolicyError
from .profile import ProfileError, ServerProfile, Timing
from .result import PolicyResult
from .trace import Trace, TraceError

__all__ = ["Policy", "PolicyError", "PolicyResult", "ProfileError", "ServerProfile", "Simulation", "Timing",
           "Trace", "TraceError", "run_policy", "simulate"]


@dataclass(frozen=True, kw_only=True)
class Simulation:
    llmd_name: str
    trace_name: str
    requests: int
    duration: float
    slo: float
    profile: ServerProfile
    timing: Timing
    results: list[PolicyResult]

    def oracle(self) -> PolicyResult | None:
        return next((r for r in self.results if r.kind == "oracle"), None)

    def result(self, name: str) -> PolicyResult:
        return next(r for r in self.results if r.name == name)

    def profile_json(self) -> dict[str, Any]:
        return {_camel(k): v for k, v in asdict(self.profile).items()}

    def timing_json(self) -> dict[str, Any]:
        return {_camel(k): v for k, v in asdict(self.timing).items()}


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p.title() for p in rest)


def run_policy(
    policy: Policy, *, trace: Trace, profile: ServerProfile, timing: Timing, slo: float,
    initial: int | None = None,
) -> PolicyResult:
    """One policy over the trace. Autoscaled policies start warm at `initial` replicas (default: enough for the
    trace's first minute, see engine.initial_replicas), clamped to their min/max."""
    if policy.kind == "oracle":
        return oracle.run(trace=trace, profile=profile, timing=timing, slo=slo, floor=policy.floor,
                          name=policy.name, description=policy.description)
    if policy.kind == "fixed":
        assert policy.replicas is not None
        return engine.run(trace=trace, profile=profile, timing=timing, slo=slo, name=policy.name, kind="fixed",
                          description=policy.description, initial=policy.replicas)
    assert policy.hpa is not None
    lo, hi = policy.hpa.min_replicas, policy.hpa.max_replicas
    start = engine.initial_replicas(trace, profile, lo=lo, hi=hi) if initial is None else max(lo, min(hi, initial))
    controller = HorizontalController(
        spec=policy.hpa, tolerance=timing.tolerance, downscale_stabilization=timing.downscale_stabilization,
        cpu_initialization_period=timing.cpu_initialization_period,
        delay_of_initial_readiness_status=timing.initial_readiness_delay)
    return engine.run(trace=trace, profile=profile, timing=timing, slo=slo, name=policy.name, kind=policy.kind,
                      description=policy.description, initial=start, controller=controller, sources=policy.sources)


def simulate(
    *, llmd: api.LLMDeployment, trace: Trace, policies: Sequence[Policy], profile: ServerProfile, timing: Timing,
    slo: float, initial: int | None = None,
) -> Simulation:
    """Every policy over the same trace, profile and timing."""
    if slo <= 0:
        raise ValueError(f"the TTFT SLO must be > 0 seconds, got {slo}")
    results = [run_policy(p, trace=trace, profile=profile, timing=timing, slo=slo, initial=initial)
               for p in policies]
    return Simulation(llmd_name=llmd.name, trace_name=trace.name, requests=len(trace), duration=trace.duration,
                      slo=slo, profile=profile, timing=timing, results=results)
