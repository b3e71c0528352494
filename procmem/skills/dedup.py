"""Find near-duplicate vectors in one blockwise pass, for merging them."""

from __future__ import annotations

import math

import torch
from torch import Tensor

_BLOCK_ELEMENTS = 1 << 24  # similarities per matmul block: 64 MiB of float32


def duplicate_targets(
    vectors: Tensor, threshold: float, block_elements: int = _BLOCK_ELEMENTS
) -> Tensor:
    """Which row each row of ``vectors`` should merge into, or -1, as ``[N]`` long.

    ``vectors`` are unit rows ordered strongest first. Row ``i`` merges into the first
    (strongest) earlier row ``j < i`` with cosine similarity above ``threshold``, provided
    ``j`` itself merges into nothing (so no merge chains form; a later pass catches what is
    left). Only the lower triangle of the similarity matrix is computed, ``block_elements``
    entries at a time.
    """
    n = vectors.shape[0]
    target = torch.full((n,), -1, dtype=torch.long, device=vectors.device)
    block = max(1, block_elements // max(n, 1))
    for start in range(1, n, block):
        stop = min(n, start + block)
        sims = vectors[start:stop] @ vectors[:stop].T
        own = torch.arange(start, stop, device=vectors.device)
        sims[:, start:].masked_fill_(own.unsqueeze(0) >= own.unsqueeze(1), -math.inf)
        rows = torch.nonzero(sims.max(dim=1).values > threshold).squeeze(1)  # usually few
        first = (sims[rows] > threshold).max(dim=1).indices  # max picks the first True
        target[start + rows] = first
    keeps = target[target.clamp(min=0)] < 0
    return torch.where((target >= 0) & keeps, target, -1)
