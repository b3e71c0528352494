"""Remembering a deterministic row-wise function's outputs between calls.

A frozen env model is asked about the same (frame, action) rows again and again: a real
step often lands on a frame that the previous step's rollouts imagined, and the rollouts
from it repeat theirs. In MiniPacman I2A training, about three of four distinct rows a call
predicts were predicted earlier in the same or the previous update. :class:`RowMemory`
keeps the outputs of the last ``rows`` rows it computed and computes only the others.

Rows are matched exactly: a 64-bit hash of each row's bits
(:func:`~procmem.models.distinct.row_hashes`) finds a candidate and the whole row is
compared, so a hash collision only costs a recomputation. The memory is a ring buffer on
the rows' device, searched through its hashes in sorted order.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable

import torch
from torch import Tensor, nn

from procmem.models.distinct import row_hashes


def weights_version(module: nn.Module) -> tuple[tuple, ...]:
    """The storage, version counter, device and dtype of each of ``module``'s parameters:
    a key (a :class:`RowMemory` ``version``) that changes with every in-place write (an
    optimizer step, ``load_state_dict``) and every move (``.to()``)."""
    return tuple((p.data_ptr(), p._version, p.device, p.dtype) for p in module.parameters())


class RowMemory:
    """The outputs of a row-wise function for the last ``rows`` input rows it computed,
    kept while its ``version`` stays the same (see the module docstring).

    ``memory(function, keys, *inputs, version=...)`` returns ``function(*inputs)`` (a tuple
    of tensors, row-wise in dim 0) for every row of ``keys`` ``[N, D]`` (float32, one per
    input row), calling ``function`` only on the rows not remembered. A different
    ``version`` (e.g. the model's weights changed) forgets everything first. ``hits`` and
    ``misses`` count the rows looked up since the memory was made."""

    def __init__(self, rows: int = 4096) -> None:
        if rows < 1:
            raise ValueError(f"rows must be >= 1, got {rows}")
        self.rows = rows
        self.hits = self.misses = 0
        self.version: Hashable = None
        self._clear()

    def _clear(self) -> None:
        self._keys: Tensor | None = None  # [rows, D]
        self._hashes: Tensor | None = None  # [rows], of the filled slots
        self._values: tuple[Tensor, ...] = ()  # each [rows, ...]
        self._filled = 0  # slots written, all told (the ring's next slot is this mod rows)
        self._sorted: Tensor | None = None  # the kept hashes, sorted
        self._order: Tensor | None = None  # their slots

    def __call__(self, function: Callable[..., tuple[Tensor, ...]], keys: Tensor,
                 *inputs: Tensor, version: Hashable) -> tuple[Tensor, ...]:
        if version != self.version:
            self._clear()
            self.version = version
        hashes = row_hashes(keys)
        found, slots = self._find(keys, hashes)
        hit_rows, missing_rows = found.nonzero().squeeze(1), (~found).nonzero().squeeze(1)
        self.hits += len(hit_rows)
        self.misses += len(missing_rows)
        if len(hit_rows) and not len(missing_rows):
            return tuple(kept.index_select(0, slots) for kept in self._values)
        computed = function(*(x.index_select(0, missing_rows) for x in inputs))
        outputs = computed
        if len(hit_rows):
            outputs = tuple(new.new_empty((len(keys), *new.shape[1:])) for new in computed)
            for output, new, kept in zip(outputs, computed, self._values, strict=True):
                output.index_copy_(0, missing_rows, new)
                output.index_copy_(0, hit_rows, kept.index_select(0, slots[hit_rows]))
        self._remember(keys[missing_rows], hashes[missing_rows], computed)
        return outputs

    def _find(self, keys: Tensor, hashes: Tensor) -> tuple[Tensor, Tensor]:
        """Which rows are remembered, and their slots (meaningless where not)."""
        if not self._filled or self._keys.shape[1:] != keys.shape[1:]:
            return torch.zeros(len(keys), dtype=torch.bool, device=keys.device), hashes
        position = torch.searchsorted(self._sorted, hashes).clamp_(max=len(self._sorted) - 1)
        slots = self._order[position]
        found = self._sorted[position] == hashes
        found &= (self._keys.index_select(0, slots) == keys).all(1)
        return found, slots

    def _remember(self, keys: Tensor, hashes: Tensor, values: tuple[Tensor, ...]) -> None:
        """Write new rows into the ring, over the oldest ones."""
        if not len(keys):
            return
        if self._keys is None or self._keys.shape[1:] != keys.shape[1:]:
            self._clear()
            self._keys = keys.new_empty((self.rows, *keys.shape[1:]))
            self._hashes = hashes.new_empty(self.rows)
            self._values = tuple(v.new_empty((self.rows, *v.shape[1:])) for v in values)
        keys, hashes = keys[-self.rows:], hashes[-self.rows:]
        values = tuple(v[-self.rows:] for v in values)
        slots = (self._filled + torch.arange(len(keys), device=keys.device)) % self.rows
        for kept, new in zip((self._keys, self._hashes, *self._values), (keys, hashes, *values),
                             strict=True):
            kept.index_copy_(0, slots, new)
        self._filled += len(keys)
        self._sorted, self._order = self._hashes[:min(self._filled, self.rows)].sort()
