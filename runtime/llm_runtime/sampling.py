"""Per-request sampling parameters, their validation, and token selection."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from llm_runtime.errors import BadRequestError

if TYPE_CHECKING:
    import torch

MAX_STOP_STRINGS = 8
MAX_STOP_LENGTH = 256
MAX_SEED = 2**63 - 1


@dataclass(frozen=True)
class SamplingParams:
    """What to generate. ``max_tokens=None`` means until EOS or the context window is full."""

    max_tokens: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    stop: tuple[str, ...] = field(default_factory=tuple)
    seed: int | None = None
    ignore_eos: bool = False

    def validate(self) -> None:
        """Raise BadRequestError naming the field and the accepted range."""
        if self.max_tokens is not None and self.max_tokens < 1:
            raise BadRequestError(f"max_tokens must be a positive integer, got {self.max_tokens}")
        if not math.isfinite(self.temperature) or not 0.0 <= self.temperature <= 100.0:
            raise BadRequestError(f"temperature must be between 0 and 100 (0 = greedy), got {self.temperature}")
        if not math.isfinite(self.top_p) or not 0.0 < self.top_p <= 1.0:
            raise BadRequestError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise BadRequestError(f"top_k must be >= 0 (0 disables top-k), got {self.top_k}")
        if len(self.stop) > MAX_STOP_STRINGS:
            raise BadRequestError(f"stop accepts at most {MAX_STOP_STRINGS} strings, got {len(self.stop)}")
        for s in self.stop:
            if not s or len(s) > MAX_STOP_LENGTH:
                raise BadRequestError(f"each stop string must be 1..{MAX_STOP_LENGTH} characters long, got {len(s)}")
        if self.seed is not None and not 0 <= self.seed <= MAX_SEED:
            raise BadRequestError(f"seed must be between 0 and {MAX_SEED}, got {self.seed}")


def sample_batch(
    logits: torch.Tensor, *, params: list[SamplingParams], generators: list[torch.Generator | None]
) -> list[int]:
    """Pick one token per row of ``logits`` [B, V], each row with its own parameters and generator.

    Vectorised over the batch; only the one uniform draw per row comes from the row's own generator,
    which is what makes a seeded request reproducible whatever else shares its batch.
    """
    import torch

    v = logits.shape[-1]
    logits = logits.float()
    temps = torch.tensor([p.temperature for p in params], dtype=torch.float32)
    greedy = temps == 0.0
    if bool(greedy.all()):
        return [int(t) for t in torch.argmax(logits, dim=-1).tolist()]
    scores = logits / temps.clamp(min=1e-5)[:, None]
    ks = torch.tensor([p.top_k if 0 < p.top_k < v else v for p in params], dtype=torch.long)
    top_ps = torch.tensor([p.top_p for p in params], dtype=torch.float32)
    if bool((ks < v).any()) or bool((top_ps < 1.0).any()):
        sorted_scores, idx = torch.sort(scores, dim=-1, descending=True)
        ranks = torch.arange(v)[None, :]
        drop = ranks >= ks[:, None]
        probs = torch.softmax(sorted_scores.masked_fill(drop, float("-inf")), dim=-1)
        # Keep the smallest prefix whose mass reaches top_p (always at least the best token).
        drop |= (probs.cumsum(dim=-1) - probs) >= top_ps[:, None]
        sorted_scores = sorted_scores.masked_fill(drop, float("-inf"))
        scores = torch.full_like(scores, float("-inf")).scatter(1, idx, sorted_scores)
    probs = torch.softmax(scores, dim=-1)
    draws = torch.stack([torch.rand((), generator=g) for g in generators])
    cdf = probs.cumsum(dim=-1)
    sampled = torch.searchsorted(cdf, draws[:, None] * cdf[:, -1:]).squeeze(1).clamp(max=v - 1)
    tokens = torch.where(greedy, torch.argmax(logits, dim=-1), sampled)
    return [int(t) for t in tokens.tolist()]
