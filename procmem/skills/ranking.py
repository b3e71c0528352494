"""Ranking of a skill library's applicable skills, batched over states.

Skills are ranked by their score (success rate, or cosine similarity to a query), then by
support (more first), then by skill index (lower first). A skill applies in a state when
its precondition code equals the state's code. Results are ``[B, k]`` storage slots and
scores, an empty place holding slot -1 and score -inf
(:func:`~procmem.skills.index.empty_results`).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from procmem.skills.index import empty_results


def success_rates(successes: Tensor, uses: Tensor) -> Tensor:
    """Success rate of each skill; 0.0 for skills never used."""
    return successes.float() / uses.clamp(min=1).float()


def rank_by_success(
    wanted: Tensor, k: int, slots: Tensor, codes: Tensor, rates: Tensor, support: Tensor
) -> tuple[Tensor, Tensor]:
    """Top-``k`` applicable skills by success rate for each state code in ``wanted`` ``[B]``,
    among the skills in storage ``slots`` ``[N]`` (in index order) with precondition
    ``codes``, success ``rates`` and ``support`` ``[N]``.

    One global order (rate, then support, then index) serves every state: each distinct
    state code takes the first ``k`` skills of that order whose code matches.
    """
    ranked, scores = empty_results(len(wanted), k, wanted.device)
    if not len(slots):
        return ranked, scores
    order = torch.argsort(support, descending=True, stable=True)
    order = order[torch.argsort(rates[order], descending=True, stable=True)]
    slots, codes, rates = slots[order], codes[order], rates[order]
    n, kept = len(slots), min(k, len(slots))
    distinct, inverse = torch.unique(wanted, return_inverse=True)
    match = codes.unsqueeze(0) == distinct.unsqueeze(1)
    position = torch.where(match, torch.arange(n, device=wanted.device), n)
    first = position.topk(kept, dim=1, largest=False).values[inverse]
    found = first < n
    first = first.clamp(max=n - 1)
    ranked[:, :kept] = slots[first].masked_fill(~found, -1)
    scores[:, :kept] = rates[first].masked_fill(~found, -math.inf)
    return ranked, scores


def break_ties(
    slots: Tensor, scores: Tensor, slot_index: Tensor, support: Tensor
) -> tuple[Tensor, Tensor]:
    """Order each row of ``slots`` ``[B, k]`` by score, then support (more first), then skill
    index, given per storage slot as ``slot_index`` and ``support``; empty places last."""
    if not (scores[:, 1:] == scores[:, :-1]).any():  # no ties: already in order
        return slots, scores
    safe = slots.clamp(min=0)
    order = torch.arange(slots.shape[1], device=slots.device).expand_as(slots)
    for key in (slot_index[safe], -support[safe], -scores):  # least significant first
        order = order.gather(1, torch.argsort(key.gather(1, order), dim=1, stable=True))
    return slots.gather(1, order), scores.gather(1, order)
