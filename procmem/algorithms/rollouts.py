"""Rollout storage: the env steps a learner keeps, one row per env per step.

:class:`RolloutStorage` is a ring of ``capacity`` rows of named fields, appended a batch of
rows at a time (a whole batched env step) with array writes, never a loop over envs. An
on-policy learner (A2C, I2A) sizes it to one update, ``n_steps * num_envs`` rows, so it
always holds the update's steps in order, step-major; a replay (the env-model trainer's)
sizes it to its buffer and samples rows from it, the oldest overwritten once it is full.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

Array = np.ndarray | Tensor


class Field(NamedTuple):
    """One field of a row: its ``shape`` and numpy ``dtype`` (the matching torch dtype in a
    storage on a device)."""

    shape: tuple[int, ...]
    dtype: Any


class RolloutStorage:
    """A ring of ``capacity`` rows of ``fields``: numpy arrays, or torch tensors on
    ``device`` when one is given.

    :meth:`add` appends a batch of rows, overwriting the oldest once ``capacity`` rows are
    held; ``storage[name]`` is a field's whole array (rows where they lie in the ring) and
    :meth:`get` its held rows oldest first. ``position`` is where the next row goes and
    ``size`` how many rows are held.
    """

    def __init__(self, capacity: int, fields: Mapping[str, Field],
                 device: torch.device | None = None) -> None:
        if capacity < 1:
            raise ValueError(f"a rollout storage holds at least 1 row, not {capacity}")
        self.capacity, self.device = capacity, device
        self.data: dict[str, Array] = {
            name: self._zeros((capacity, *field.shape), field.dtype)
            for name, field in fields.items()}
        self.position = 0
        self.size = 0

    def __getitem__(self, name: str) -> Array:
        return self.data[name]

    def add(self, **batch: Any) -> None:
        """Append ``n`` rows: ``batch[name]`` holds ``[n, *shape]`` values of every field
        (arrays, tensors or anything array-like). When more than ``capacity`` come at once,
        only the newest ``capacity`` of them are kept."""
        if batch.keys() != self.data.keys():
            raise KeyError(f"a row has the fields {sorted(self.data)}, not {sorted(batch)}")
        n = len(next(iter(batch.values())))
        skip = max(n - self.capacity, 0)
        start, count = (self.position + skip) % self.capacity, n - skip
        first = min(count, self.capacity - start)  # rows up to the end of the ring
        for name, values in batch.items():
            array = self.data[name]
            values = self._convert(values)[skip:]
            array[start:start + first] = values[:first]
            if count > first:  # the rest wraps around to the start
                array[:count - first] = values[first:]
        self.position = (self.position + n) % self.capacity
        self.size = min(self.size + n, self.capacity)

    def get(self, name: str) -> Array:
        """The held rows of field ``name``, oldest first: a view of the storage where they
        lie in order (later :meth:`add` calls change it), else a copy."""
        array = self.data[name]
        if self.size < self.capacity or self.position == 0:
            return array[:self.size]
        if isinstance(array, Tensor):
            return torch.cat([array[self.position:], array[:self.position]])
        return np.concatenate([array[self.position:], array[:self.position]])

    def sample(self, rng: np.random.Generator, count: int) -> np.ndarray:
        """Indices of ``count`` held rows drawn uniformly with replacement from ``rng``."""
        return rng.integers(0, self.size, size=count)

    def rows(self, indices: np.ndarray) -> dict[str, Array]:
        """The rows at ``indices`` of every field."""
        return {name: array[indices] for name, array in self.data.items()}

    def state_dict(self) -> dict[str, Any]:
        """Copies of the held rows of every field (as they lie in the ring), ``position`` and
        ``size``."""
        held = {name: array[:self.size] for name, array in self.data.items()}
        return {**{name: (array.detach().clone() if isinstance(array, Tensor)
                          else array.copy()) for name, array in held.items()},
                "position": self.position, "size": self.size}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved; ``ValueError`` when it holds more rows than
        ``capacity``."""
        size = int(state["size"])
        if size > self.capacity:
            raise ValueError(f"the saved rollout holds {size} rows, more than the "
                             f"{self.capacity} this one holds")
        for name, array in self.data.items():
            array[:size] = self._convert(state[name])
        self.size, self.position = size, int(state["position"]) % self.capacity

    def _zeros(self, shape: tuple[int, ...], dtype: Any) -> Array:
        if self.device is None:
            return np.zeros(shape, dtype=dtype)
        return torch.zeros(shape, dtype=_torch_dtype(dtype), device=self.device)

    def _convert(self, values: Any) -> Array:
        if self.device is None:
            return np.asarray(values)
        return torch.as_tensor(values, device=self.device)


def _torch_dtype(dtype: Any) -> torch.dtype:
    """The torch dtype of a numpy dtype."""
    return torch.from_numpy(np.zeros(0, dtype=dtype)).dtype
