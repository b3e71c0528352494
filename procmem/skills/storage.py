"""Where a skill library keeps its skills: storage slots and the map from skill index to slot.

Every stored skill sits in a slot: a row of a few slot-indexed tensors (precondition code,
counters, skill index) and of two lists (name, actions), beside its embedding in a vector
index under the same slot. Slots are reused: a removed skill's slot is free, and the lowest
free slot is taken first. The skill with index ``i`` is found through the ascending indices
of the stored skills (a binary search), so storage is sized by the stored skills, never by
the highest index.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from procmem.skills.index import VectorIndex
from procmem.skills.library_checks import CheckedState

_INITIAL_CAPACITY = 16
_COLUMNS = ("_codes", "_successes", "_uses", "_support", "_last_active")


@dataclass(frozen=True)
class Skill:
    """A read-only snapshot of one stored skill."""

    name: str
    actions: tuple[int, ...]
    preconditions: dict[str, bool]
    embedding: tuple[float, ...]
    successes: int
    uses: int
    support: int
    index: int
    last_active: int

    @property
    def success_rate(self) -> float:
        """Fraction of uses that succeeded; 0.0 for a skill never used."""
        return self.successes / self.uses if self.uses else 0.0


def skill_record(skill: Skill) -> dict[str, Any]:
    """A skill as a plain dict, e.g. a row of a results table."""
    return {
        "index": skill.index,
        "name": skill.name,
        "actions": list(skill.actions),
        "preconditions": dict(skill.preconditions),
        "successes": skill.successes,
        "uses": skill.uses,
        "support": skill.support,
        "success_rate": skill.success_rate,
    }


def _grow(tensor: Tensor, capacity: int, fill: int = 0) -> Tensor:
    """Return ``tensor`` copied into a ``fill`` tensor with ``capacity`` rows."""
    grown = tensor.new_full((capacity, *tensor.shape[1:]), fill)
    grown[: tensor.shape[0]] = tensor
    return grown


class SkillStorage:
    """Skills in storage slots on ``device``, their embeddings in ``vector_index``; a
    precondition code packs the flags of ``precondition_keys`` into one int64 (see the module
    docstring)."""

    def __init__(self, device: torch.device, vector_index: VectorIndex,
                 precondition_keys: tuple[str, ...]) -> None:
        self.device = device
        self.precondition_keys = precondition_keys
        self._vector_index = vector_index
        self._bits = 1 << torch.arange(len(precondition_keys), device=device)
        self._clear_slots()

    def _clear_slots(self) -> None:
        """Empty storage."""
        self._vector_index.clear()
        self._names: list[str] = [""] * _INITIAL_CAPACITY
        self._actions: list[tuple[int, ...]] = [()] * _INITIAL_CAPACITY
        long = {"dtype": torch.long, "device": self.device}
        self._codes = torch.zeros(_INITIAL_CAPACITY, **long)
        self._successes = torch.zeros(_INITIAL_CAPACITY, **long)
        self._uses = torch.zeros(_INITIAL_CAPACITY, **long)
        self._support = torch.zeros(_INITIAL_CAPACITY, **long)
        self._last_active = torch.zeros(_INITIAL_CAPACITY, **long)
        self._slot_index = torch.full((_INITIAL_CAPACITY,), -1, **long)  # -1: free slot
        # Entries in index order: ascending skill indices and their slots (-1: removed since
        # the last compaction); _entries of each are in use
        self._sorted_indices = torch.zeros(_INITIAL_CAPACITY, **long)
        self._sorted_slots = torch.zeros(_INITIAL_CAPACITY, **long)
        self._entries = 0
        self._free: list[int] = []  # a heap of freed slots below _slots_used
        self._slots_used = self._size = 0

    def _live_slots(self) -> Tensor:
        """Slots of the stored skills, in index order."""
        slots = self._sorted_slots[: self._entries]
        return slots[slots >= 0]

    def _slots_of(self, indices: Tensor) -> Tensor:
        """The slot of the skill with each index, -1 where no stored skill has it."""
        if not self._entries:
            return torch.full_like(indices, -1)
        stored = self._sorted_indices[: self._entries]
        position = torch.searchsorted(stored, indices).clamp(max=self._entries - 1)
        found = stored[position] == indices
        return self._sorted_slots[position].masked_fill(~found, -1)

    def _insert(self, index: int, name: str, actions: tuple[int, ...], code: int,
                vector: Tensor, clock: int) -> None:
        """Store a new skill with ``index``, above all stored ones: unit embedding
        ``vector``, no uses yet, support 1, last active at ``clock``."""
        slot = self._free_slot()
        self._vector_index.add(torch.tensor([slot]), vector.unsqueeze(0))
        self._codes[slot] = code
        self._successes[slot] = self._uses[slot] = 0
        self._support[slot] = 1
        self._last_active[slot] = clock
        self._slot_index[slot] = index
        self._append_entry(index, slot)
        self._names[slot], self._actions[slot] = name, actions
        self._size += 1

    def _append_entry(self, index: int, slot: int) -> None:
        """Enter a new skill, whose index is above all others; when the entries are full,
        first drop the removed ones and make room for as many again as stay."""
        if self._entries == len(self._sorted_indices):
            slots = self._live_slots()
            capacity = max(2 * len(slots), _INITIAL_CAPACITY)
            self._sorted_indices = _grow(self._slot_index[slots], capacity)
            self._sorted_slots = _grow(slots, capacity)
            self._entries = len(slots)
        self._sorted_indices[self._entries], self._sorted_slots[self._entries] = index, slot
        self._entries += 1

    def _free_slot(self) -> int:
        """A free slot (the lowest freed one first), growing the storage when none is free."""
        if self._free:
            return heapq.heappop(self._free)
        self._slots_used += 1
        self._reserve_slots(self._slots_used)
        return self._slots_used - 1

    def _remove(self, slots: Tensor) -> None:
        """Drop the skills in ``slots``; their indices die and the slots become free."""
        self._vector_index.remove(slots)
        stored = self._sorted_indices[: self._entries]
        self._sorted_slots[torch.searchsorted(stored, self._slot_index[slots])] = -1
        self._slot_index[slots] = -1
        self._free.extend(slots.tolist())
        heapq.heapify(self._free)
        self._size -= len(slots)

    def _reserve_slots(self, size: int) -> None:
        """Make room for ``size`` slots, doubling the capacity as needed."""
        capacity = len(self._names)
        if size <= capacity:
            return
        while capacity < size:
            capacity *= 2
        grow = capacity - len(self._names)
        self._names += [""] * grow
        self._actions += [()] * grow
        for name in _COLUMNS:
            setattr(self, name, _grow(getattr(self, name), capacity))
        self._slot_index = _grow(self._slot_index, capacity, fill=-1)

    def _fill_slots(self, state: CheckedState) -> None:
        """Store the skills of a checked state in the first slots of empty storage."""
        n = len(state.names)
        slots = torch.arange(n, device=self.device)
        self._reserve_slots(n)
        self._slots_used = self._size = n
        self._names[:n], self._actions[:n] = state.names, state.actions
        self._codes[:n] = self._pack(state.preconditions.to(self.device))
        self._successes[:n] = state.successes
        self._uses[:n] = state.uses
        self._support[:n] = state.support
        self._last_active[:n] = state.last_active
        self._slot_index[:n] = state.indices
        self._sorted_indices = state.indices.to(self.device, copy=True)
        self._sorted_slots = slots.clone()
        self._entries = n
        self._vector_index.add(slots, state.embeddings)

    def _snapshots(self, slots: Tensor) -> list[Skill]:
        """Snapshots of the skills in ``slots``, read from the tensors in one transfer each."""
        slot_list = slots.tolist()
        columns = zip(
            [self._names[s] for s in slot_list],
            [self._actions[s] for s in slot_list],
            self._flags(self._codes[slots]).tolist(),
            self._vector_index.vectors(slots).tolist(),
            self._successes[slots].tolist(),
            self._uses[slots].tolist(),
            self._support[slots].tolist(),
            self._slot_index[slots].tolist(),
            self._last_active[slots].tolist(),
            strict=True,
        )
        return [
            Skill(
                name=name,
                actions=actions,
                preconditions=dict(zip(self.precondition_keys, flags, strict=True)),
                embedding=tuple(embedding),
                successes=successes,
                uses=uses,
                support=support,
                index=index,
                last_active=last_active,
            )
            for name, actions, flags, embedding, successes, uses, support, index, last_active
            in columns
        ]

    def _pack(self, flags: Tensor) -> Tensor:
        """Precondition flags ``[..., P]`` -> one int64 code each."""
        return (flags.long() * self._bits).sum(dim=-1)

    def _flags(self, codes: Tensor) -> Tensor:
        """Codes ``[...]`` -> precondition flags ``[..., P]``."""
        return (codes.unsqueeze(-1) & self._bits) != 0
