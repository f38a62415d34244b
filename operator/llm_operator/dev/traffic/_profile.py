"""Scripted load profiles: a list of timed load changes, played against any clock."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class Step:
    """At ``at`` seconds after the profile starts, set this LLMDeployment's load."""

    at: float
    namespace: str
    name: str
    rps: float
    prompt_tokens: float | None = None
    output_tokens: float | None = None


def step_profile(
    *,
    namespace: str,
    name: str,
    levels: Sequence[tuple[float, float]],
    prompt_tokens: float | None = None,
    output_tokens: float | None = None,
) -> list[Step]:
    """A step (or trace) profile from ``(at_seconds, rps)`` pairs, e.g. ``[(0, 2), (60, 20), (180, 2)]``."""
    ats = [at for at, _ in levels]
    if ats != sorted(ats):
        raise ValueError(f"profile times must not decrease: {ats}")
    return [
        Step(at=at, namespace=namespace, name=name, rps=rps, prompt_tokens=prompt_tokens,
             output_tokens=output_tokens)
        for at, rps in levels
    ]


def play(
    steps: Iterable[Step],
    *,
    apply: Callable[[Step], None],
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Apply each step when its time has come. With a fake ``clock``/``sleep`` a test plays a profile against
    the model without waiting; with the defaults the client plays it against a running emulator."""
    start = clock()
    for step in sorted(steps, key=lambda s: s.at):
        wait = start + step.at - clock()
        if wait > 0:
            sleep(wait)
        apply(step)
