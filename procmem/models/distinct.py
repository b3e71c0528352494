"""Computing a function once per distinct row of a batch.

Imagined rollouts often coincide: staying and walking into a wall lead to the same frame,
the copy model imagines the input frame whatever the action, and from equal frames a
rollout policy takes equal actions. :func:`per_distinct_row` runs a row-wise function on one
row of each group of equal rows and spreads its output back; gradients flow back through
the spreading (each group's row gets the sum of its copies' gradients).

Rows are grouped by a 64-bit hash of their bits (:func:`row_hashes`: one pass over the
rows, where sorting rows that share most of their values is several times slower and does
not use a second core) and each row is then compared with its group's first, so grouping
stays exact: should two different rows ever share a hash, the rows are sorted instead."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

HASH_SEED = 0x5EED
_hash_weights: dict[tuple[int, torch.device], Tensor] = {}


def row_hashes(keys: Tensor) -> Tensor:
    """A 64-bit hash ``[N]`` of each row of float32 ``keys`` ``[N, D]``: the row's 32-bit
    words weighted by fixed random 64-bit integers and summed, wrapping around (rows equal
    bit for bit hash equally)."""
    width, device = keys.shape[1], keys.device
    weights = _hash_weights.get((width, device))
    if weights is None:
        generator = torch.Generator().manual_seed(HASH_SEED)
        weights = torch.randint(-2**62, 2**62, (width,), generator=generator).to(device)
        _hash_weights[width, device] = weights
    return (keys.contiguous().view(torch.int32).to(torch.int64) * weights).sum(1)


def distinct_rows(keys: Tensor) -> tuple[Tensor, Tensor] | None:
    """For rows ``keys`` ``[N, ...]``: the index ``[M]`` of one row per distinct value, and
    for every row the position of its value among those, ``[N]``; ``None`` when all rows
    differ. Rows are equal when their bits are (``keys`` float32)."""
    rows = keys.flatten(1)
    distinct, inverse = torch.unique(row_hashes(rows), return_inverse=True)
    if len(distinct) == len(rows):
        return None
    first = _first_of_groups(inverse, len(distinct))
    if not torch.equal(rows.index_select(0, first)[inverse], rows):  # two rows share a hash
        distinct, inverse = torch.unique(rows, dim=0, return_inverse=True)
        first = _first_of_groups(inverse, len(distinct))
    return first, inverse


def _first_of_groups(inverse: Tensor, groups: int) -> Tensor:
    """One row index ``[groups]`` per group of the group index ``inverse`` ``[N]``."""
    first = torch.empty(groups, dtype=torch.long, device=inverse.device)
    return first.scatter_(0, inverse, torch.arange(len(inverse), device=inverse.device))


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
