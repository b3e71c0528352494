"""Which skill a full library evicts: a score per skill, the lowest goes first."""

from __future__ import annotations

import torch
from torch import Tensor

EVICTION_POLICIES = ("utility", "lru", "fifo")


def eviction_scores(
    policy: str,
    successes: Tensor,
    uses: Tensor,
    last_active: Tensor,
    indices: Tensor,
    clock: int,
    recency_halflife: float,
) -> Tensor:
    """Keep-worthiness per skill (float64, lower is evicted first).

    * ``utility``: smoothed success rate ``(successes + 1) / (uses + 2)`` times recency
      ``0.5 ** (age / recency_halflife)``, where ``age = clock - last_active`` counts the adds
      and uses since the skill was last added, merged into or used;
    * ``lru``: ``last_active`` (least recently added or used first);
    * ``fifo``: the skill index (oldest first; indices grow with every new skill).
    """
    if policy == "utility":
        rate = (successes.double() + 1) / (uses.double() + 2)
        age = clock - last_active.double()
        return rate * torch.exp2(-age / recency_halflife)
    if policy == "lru":
        return last_active.double()
    if policy == "fifo":
        return indices.double()
    raise ValueError(f"eviction must be one of {EVICTION_POLICIES}, got {policy!r}")
