"""Computing a function once per distinct row of a batch.

Imagined rollouts often coincide: staying and walking into a wall lead to the same frame,
the copy model imagines the input frame whatever the action, and from equal frames a
rollout policy takes equal actions. :func:`per_distinct_row` runs a row-wise function on one
row of each group of equal rows and spreads its output back; gradients flow back through
the spreading (each group's row gets the sum of its copies' gradients)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


def distinct_rows(keys: Tensor) -> tuple[Tensor, Tensor] | None:
    """For rows ``keys`` ``[N, ...]``: the index ``[M]`` of one row per distinct value, and
    for every row the position of its value among those, ``[N]``; ``None`` when all rows
    differ."""
    distinct, inverse = torch.unique(keys.flatten(1), dim=0, return_inverse=True)
    if len(distinct) == len(keys):
        return None
    first = torch.empty(len(distinct), dtype=torch.long, device=keys.device)
    first.scatter_(0, inverse, torch.arange(len(keys), device=keys.device))
    return first, inverse


def per_distinct_row(function: Callable[..., Tensor | tuple[Tensor, ...]], keys: Tensor,
                     *inputs: Tensor, dim: int = 0) -> Tensor | tuple[Tensor, ...]:
    """``function(*inputs)``, whose outputs are row-wise in the rows of ``inputs`` along
    ``dim`` (the outputs' dim 0), computed on one row of each group of equal ``keys``
    ``[N, ...]`` and given to every row of the group."""
    rows = distinct_rows(keys)
    if rows is None:
        return function(*inputs)
    first, inverse = rows
    outputs = function(*(x.index_select(dim, first) for x in inputs))
    if isinstance(outputs, tuple):
        return tuple(output[inverse] for output in outputs)
    return outputs[inverse]
