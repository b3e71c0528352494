"""A library of reusable skills extracted from successful trajectories.

Skills live in storage slots (:mod:`procmem.skills.storage`): a few slot-indexed tensors
(precondition codes, counters) next to a vector index holding their embeddings
(:mod:`procmem.skills.index`), so applicability, ranking (:mod:`procmem.skills.ranking`),
eviction, merging and counter updates are batched tensor operations with no Python loop over
skills or queries.

Skill indices: ``add`` gives every new skill the next index (0, 1, 2, ...) and never hands
out an index twice. A skill leaves the library when a full library evicts it or the
periodic sweep merges it into a near-duplicate; its index is then dead for good:
``retrieve`` never returns it, ``lib[i]`` raises ``IndexError``, ``record_use`` ignores it
and ``is_alive`` says ``False``. Callers that keep per-skill data by index (arrays sized by
``next_index``) must check ``is_alive`` rather than cache a skill past its removal. With
``capacity=None`` and ``merge_every=0`` no skill ever leaves and the indices are exactly
``0 .. len(lib) - 1``.

Storage is sized by the stored skills, never by ``next_index``, so a long-lived library
whose indices run far ahead of its size costs no more than a new one. Loading a state or a
file (:mod:`procmem.skills.library_file`) checks every field first
(:mod:`procmem.skills.library_checks`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
from torch import Tensor

from procmem.envs.protocols import SubgoalEnv
from procmem.settings import (
    Above,
    AtLeast,
    AtMost,
    NonEmpty,
    OneOf,
    SettingError,
    configurable,
    settings_of,
)
from procmem.skills.dedup import duplicate_targets
from procmem.skills.eviction import EVICTION_POLICIES, eviction_scores
from procmem.skills.index import INDEX_KINDS, LabelFilter, make_index
from procmem.skills.library_checks import (
    COUNTERS,
    CheckedState,
    FieldName,
    SkillLibraryError,
    check_actions,
    check_state,
    state_field,
)
from procmem.skills.library_file import (
    SKILL_LIBRARY_FORMAT_VERSION,
    check_format_version,
    describe,
    file_errors,
    file_field,
    file_header,
    file_state,
    read_library_file,
    write_library_file,
)
from procmem.skills.ranking import break_ties, rank_by_success, success_rates
from procmem.skills.storage import Skill, SkillStorage, skill_record

_MAX_PRECONDITION_KEYS = 63  # preconditions are packed into one int64 code per skill
MAX_EMBEDDING_DIM = 1 << 16  # bounds what even an empty library file makes the index allocate
LIBRARY_FILE = "skills.json"  # a library's file in a run dir


@configurable
class SkillLibrary(SkillStorage):
    """Skills with preconditions, retrieved by cosine similarity or by success rate.

    Adding a skill whose embedding is more similar than ``merge_threshold`` (cosine) to its
    nearest stored one merges it into that skill instead: the stored skill's support goes up
    by one and its actions and embedding stay. ``index`` picks the vector index ("exact" or
    the approximate "hnsw", see :mod:`procmem.skills.index`). Before every
    ``merge_every``-th further add (0 = never), :meth:`merge_duplicates` sweeps the whole
    library exactly, catching near-duplicates an approximate probe missed. With a
    ``capacity``, adding a new skill to a full library first evicts the skill ranked lowest
    by ``eviction`` (see :func:`~procmem.skills.eviction.eviction_scores`).

    ``load`` (a run dir or a library file) starts the library with the skills and counters
    of a saved one (its embedding size and precondition keys must match; this library's
    own settings stay), recorded in :attr:`loaded_from`. A ``frozen`` library is used as
    it is: :meth:`add` and :meth:`merge_duplicates` change nothing (uses are still counted).
    """

    env_needs = (SubgoalEnv,)  # its keys and preconditions are those of subgoal situations
    unsaved_settings = ("load", "frozen")  # how a run uses a library, not saved with it

    def __init__(
        self,
        device: str | torch.device = "cpu",
        *,
        embedding_dim: Annotated[int, AtLeast(1), AtMost(MAX_EMBEDDING_DIM)] = 64,
        top_k: Annotated[int, AtLeast(1)] = 3,
        merge_threshold: Annotated[float, AtLeast(-1.0), AtMost(1.0)] = 0.9,
        precondition_keys: Annotated[Sequence[str], NonEmpty()] = ("has_key", "door_open"),
        index: Annotated[str, OneOf(INDEX_KINDS)] = "exact",
        capacity: Annotated[int, AtLeast(1)] | None = None,
        eviction: Annotated[str, OneOf(EVICTION_POLICIES)] = "utility",
        recency_halflife: Annotated[float, Above(0.0)] = 1000.0,
        merge_every: Annotated[int, AtLeast(0)] = 0,
        load: str | None = None,
        frozen: bool = False,
    ) -> None:
        keys = tuple(precondition_keys)
        if len(set(keys)) != len(keys):
            raise SettingError("precondition_keys", f"{list(keys)} must be unique")
        if len(keys) > _MAX_PRECONDITION_KEYS:
            raise SettingError("precondition_keys",
                               f"at most {_MAX_PRECONDITION_KEYS} keys, got {len(keys)}")

        self.embedding_dim = embedding_dim
        self.top_k = top_k
        self.merge_threshold = merge_threshold
        self.index = index
        self.capacity = capacity
        self.eviction = eviction
        self.recency_halflife = float(recency_halflife)
        self.merge_every = merge_every
        device = torch.device(device)
        super().__init__(device, make_index(index, embedding_dim, device), keys)
        self._zero_counters()
        self.frozen = frozen
        self.loaded_from: Path | None = None
        self.loaded_skills = 0
        if load:
            self._take_skills_of(library_file(load))

    def __len__(self) -> int:
        return self._size

    def __getitem__(self, index: int) -> Skill:
        if not -self._next_index <= index < self._next_index:
            raise IndexError(f"skill index {index} out of range for {self._next_index} indices")
        index %= self._next_index
        slot = self._slots_of(torch.tensor([index], device=self.device))
        if slot.item() < 0:
            raise IndexError(f"skill {index} was evicted or merged away")
        return self._snapshots(slot)[0]

    @property
    def next_index(self) -> int:
        """The index the next new skill gets: per-index arrays need this many rows."""
        return self._next_index

    @property
    def indices(self) -> Tensor:
        """Indices of the stored skills, ascending ``[N]``."""
        return self._slot_index[self._live_slots()]

    @property
    def embeddings(self) -> Tensor:
        """Unit-norm embeddings of the stored skills in index order ``[N, d]`` (a copy)."""
        return self._vector_index.vectors(self._live_slots()).to(self.device)

    def is_alive(self, indices: Tensor | np.ndarray | Sequence[int]) -> Tensor:
        """Which ``indices`` name a stored skill (-1, dead and unknown indices are ``False``)."""
        return self._slots_of(torch.as_tensor(indices, dtype=torch.long, device=self.device)) >= 0

    def add(
        self,
        name: str,
        actions: Sequence[int],
        preconditions: Mapping[str, bool],
        embedding: Tensor | np.ndarray | Sequence[float],
    ) -> tuple[int, bool]:
        """Add a skill or merge it into a near-duplicate; return ``(index, merged)``.

        The returned index is alive: a due sweep runs before the skill is added, and an
        eviction only removes other skills.
        """
        if self.frozen:
            return -1, False
        actions = check_actions(actions, "actions")
        code = self._precondition_code(preconditions)
        vector = self._unit_embedding(embedding)

        if self.merge_every and self._adds and self._adds % self.merge_every == 0:
            self.merge_duplicates()
        self._adds += 1
        self._clock += 1
        if self._size:
            nearest, similarity = self._vector_index.nearest(vector.unsqueeze(0))
            if similarity.item() > self.merge_threshold:
                slot = int(nearest.item())
                self._support[slot] += 1
                self._last_active[slot] = self._clock
                self._merges += 1
                return int(self._slot_index[slot]), True

        if self.capacity is not None and self._size >= self.capacity:
            self._evict()
        index = self._next_index
        self._next_index += 1
        self._insert(index, name, actions, code, vector, self._clock)
        return index, False

    def merge_duplicates(self) -> int:
        """Merge near-duplicates (cosine above ``merge_threshold``) in one exact, blockwise pass.

        Of each merged pair the skill with more support (then the lower index) stays and
        takes the other's counters. Returns how many skills merged away.
        """
        slots = self._live_slots()
        if len(slots) < 2 or self.frozen:
            return 0
        slots = slots[torch.argsort(self._support[slots], descending=True, stable=True)]
        vectors = self._vector_index.vectors(slots).to(self.device)
        targets = duplicate_targets(vectors, self.merge_threshold)
        merging = torch.nonzero(targets >= 0).squeeze(1)
        gone, kept = slots[merging], slots[targets[merging]]
        for counter in (self._successes, self._uses, self._support):
            counter.index_add_(0, kept, counter[gone])
        self._last_active.scatter_reduce_(0, kept, self._last_active[gone], "amax")
        self._remove(gone)
        self._merges += len(gone)
        return len(gone)

    def applicable(self, state: Tensor | np.ndarray) -> Tensor:
        """Which skills apply in each state: ``[B, P]`` (or ``[P]``) flags -> ``[B, next_index]``
        bool, indexed by skill index (dead indices are ``False``)."""
        wanted = self._state_codes(state)
        slots = self._live_slots()
        codes = torch.full((self._next_index,), -1, dtype=torch.long, device=self.device)
        codes[self._slot_index[slots]] = self._codes[slots]  # -1 matches no state
        return codes.unsqueeze(0) == wanted.unsqueeze(1)

    def retrieve(
        self,
        state: Tensor | np.ndarray,
        query: Tensor | np.ndarray | None = None,
        k: int | None = None,
        min_score: float | None = None,
        record: bool = False,
    ) -> tuple[Tensor, Tensor]:
        """Best ``k`` applicable skills per state, as ``(indices [B, k], scores [B, k])``.

        Scores are cosine similarities to ``query`` (``[B, d]``; approximate with the hnsw
        index), or success rates when no query is given. Ties go to the skill with more
        support, then to the lower index (for similarities, among the ``k`` the index
        returned). Slots without an applicable skill scoring at least ``min_score`` hold
        index -1 and score -inf. With ``record`` (training, not evaluation) each state
        counts as one retrieval, and as a hit when it gets at least one skill.
        """
        k = self.top_k if k is None else k
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        wanted = self._state_codes(state)
        if query is None:
            live = self._live_slots()
            slots, scores = rank_by_success(wanted, k, live, self._codes[live],
                                            self._success_rates(live), self._support[live])
        else:
            queries = self._query_rows(query, len(wanted))
            allowed = LabelFilter(key_labels=self._codes, query_labels=wanted)
            slots, scores = self._vector_index.search(queries, k, allowed)
            slots, scores = break_ties(slots.to(self.device), scores.to(self.device),
                                       self._slot_index, self._support)
        if min_score is not None:
            low = scores < min_score
            slots, scores = slots.masked_fill(low, -1), scores.masked_fill(low, -math.inf)
        if record:
            self._retrievals += len(wanted)
            self._hits += int((slots[:, 0] >= 0).sum())
        indices = self._slot_index[slots.clamp(min=0)].masked_fill(slots < 0, -1)
        return indices, scores

    def record_use(
        self,
        indices: Tensor | np.ndarray | Sequence[int],
        successes: Tensor | np.ndarray | Sequence[bool],
    ) -> None:
        """Count one use per index (repeats count each time); -1 and dead indices are ignored."""
        indices = torch.as_tensor(indices, dtype=torch.long, device=self.device).reshape(-1)
        outcomes = torch.as_tensor(successes, dtype=torch.bool, device=self.device).reshape(-1)
        if indices.shape != outcomes.shape:
            raise ValueError(
                f"indices and successes differ in size: {indices.numel()} vs {outcomes.numel()}"
            )
        used = indices != -1
        indices, outcomes = indices[used], outcomes[used]
        if ((indices < 0) | (indices >= self._next_index)).any():
            raise IndexError(f"skill indices out of range for {self._next_index} indices")
        slots = self._slots_of(indices)
        alive = slots >= 0
        slots, outcomes = slots[alive], outcomes[alive]
        self._uses.index_add_(0, slots, torch.ones_like(slots))
        self._successes.index_add_(0, slots, outcomes.long())
        self._clock += len(slots)
        self._skill_uses += len(slots)
        self._last_active[slots] = self._clock

    def stats(self) -> dict[str, float]:
        """Size, uses recorded so far, mean success rate of used skills, merges, evictions,
        retrievals, hits and the hit rate (hits / retrievals)."""
        slots = self._live_slots()
        used = self._uses[slots] > 0
        rates = self._success_rates(slots)
        return {
            "skills": self._size,
            "skill_uses": self._skill_uses,
            "avg_success_rate": rates[used].mean().item() if used.any() else 0.0,
            "merges": self._merges,
            "evictions": self._evictions,
            "retrievals": self._retrievals,
            "hits": self._hits,
            "hit_rate": self._hits / self._retrievals if self._retrievals else 0.0,
        }

    def names(self) -> list[str]:
        """The names of the stored skills, in index order."""
        return [self._names[slot] for slot in self._live_slots().tolist()]

    def name_of(self, index: int) -> str:
        """The name of skill ``index`` (``IndexError`` for a dead or unknown one)."""
        slot = int(self._slots_of(torch.tensor([index], device=self.device)).item())
        if slot < 0:
            raise IndexError(f"skill {index} is not stored")
        return self._names[slot]

    def to_records(self) -> list[dict[str, Any]]:
        """One plain dict per stored skill, in index order, e.g. for a results table."""
        return [skill_record(skill) for skill in self._snapshots(self._live_slots())]

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to restore this library exactly (tensors on cpu).

        The vector index is not part of it: loading rebuilds the index from the embeddings.
        """
        slots = self._live_slots()
        slot_list = slots.tolist()
        return {
            "format_version": SKILL_LIBRARY_FORMAT_VERSION,
            **self._settings(),
            "names": [self._names[s] for s in slot_list],
            "actions": [list(self._actions[s]) for s in slot_list],
            "indices": self._slot_index[slots].cpu(),
            "embeddings": self._vector_index.vectors(slots).cpu().clone(),
            "preconditions": self._flags(self._codes[slots]).cpu(),
            "successes": self._successes[slots].cpu(),
            "uses": self._uses[slots].cpu(),
            "support": self._support[slots].cpu(),
            "last_active": self._last_active[slots].cpu(),
            **self._counters(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Replace all skills, counters and search settings with those of ``state``.

        The index backend, capacity, eviction policy, recency half-life and sweep interval
        stay as constructed. Every field is checked before anything changes: an unsupported
        format version, a different embedding size or precondition keys, more skills than
        the capacity, and missing, mistyped, out-of-range or inconsistent fields raise
        :class:`SkillLibraryError` naming the field.
        """
        self._load(state, state_field)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the library as human-readable JSON, atomically
        (:mod:`procmem.skills.library_file`)."""
        return write_library_file(path, self._settings(), self._counters(),
                                  self._snapshots(self._live_slots()))

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device = "cpu") -> SkillLibrary:
        """Read a library written by :meth:`save`, with the settings it was saved with.

        A missing file raises ``FileNotFoundError``. Every field is checked before anything
        is allocated, and what is allocated is sized by the skills the file holds; unreadable
        JSON, an unsupported format version and missing, mistyped, out-of-range or
        inconsistent fields raise a one-line :class:`SkillLibraryError` naming the file and
        the field, e.g. ``skills.json: skills[3].uses: -2 is out of range: must be >= 0``.
        """
        path = Path(path)
        with file_errors(path):
            data = read_library_file(path)
            settings, counters = file_header(data, cls)
            library = cls(**settings, device=device)
            library._load(file_state(data, settings, counters), file_field)
        return library

    def _take_skills_of(self, path: Path) -> None:
        """Start with the skills and counters of the library file ``path``; this library's
        search settings stay."""
        top_k, merge_threshold = self.top_k, self.merge_threshold
        with file_errors(path):
            data = read_library_file(path)
            settings, counters = file_header(data, type(self))
            self._load(file_state(data, settings, counters), file_field)
        self.top_k, self.merge_threshold = top_k, merge_threshold
        self.loaded_from, self.loaded_skills = path, len(self)

    def _load(self, state: Mapping[str, Any], field: FieldName) -> None:
        """Check every field of ``state`` (named by ``field``), then replace the contents."""
        try:
            check_format_version(state.get("format_version"))
            if state["embedding_dim"] != self.embedding_dim:
                raise SkillLibraryError(
                    f"embedding_dim {state['embedding_dim']} does not match {self.embedding_dim}"
                )
            if tuple(state["precondition_keys"]) != self.precondition_keys:
                raise SkillLibraryError(
                    f"precondition_keys {list(state['precondition_keys'])} do not match "
                    f"{list(self.precondition_keys)}"
                )
            top_k, merge_threshold = state["top_k"], state["merge_threshold"]
            _check_search_settings(top_k, merge_threshold)
            checked = check_state(state, self.embedding_dim, self.precondition_keys, field)
        except SkillLibraryError:
            raise
        except (KeyError, TypeError, ValueError) as err:
            raise SkillLibraryError(describe(err)) from err
        n = len(checked.names)
        if self.capacity is not None and n > self.capacity:
            raise SkillLibraryError(f"{n} skills do not fit the capacity of {self.capacity}")
        self.top_k, self.merge_threshold = top_k, float(merge_threshold)
        self._restore(checked)

    def _restore(self, state: CheckedState) -> None:
        """Replace all skills and counters with those of a checked state."""
        self._clear_slots()
        self._zero_counters()
        for name, value in state.counters.items():
            setattr(self, f"_{name}", value)
        self._fill_slots(state)

    def _evict(self) -> None:
        """Remove the stored skill ranked lowest by the eviction policy."""
        used = slice(0, self._slots_used)
        scores = eviction_scores(
            self.eviction,
            self._successes[used],
            self._uses[used],
            self._last_active[used],
            self._slot_index[used],
            self._clock,
            self.recency_halflife,
        )
        victim = scores.masked_fill(self._slot_index[used] < 0, math.inf).argmin()
        self._remove(victim.unsqueeze(0))
        self._evictions += 1

    def _success_rates(self, slots: Tensor) -> Tensor:
        """Success rate of the skill in each slot; 0.0 for skills never used."""
        return success_rates(self._successes[slots], self._uses[slots])

    # --- conversions and checks ---------------------------------------------------------------

    def _settings(self) -> dict[str, Any]:
        return {
            "embedding_dim": self.embedding_dim,
            "top_k": self.top_k,
            "merge_threshold": self.merge_threshold,
            "precondition_keys": list(self.precondition_keys),
            "index": self.index,
            "capacity": self.capacity,
            "eviction": self.eviction,
            "recency_halflife": self.recency_halflife,
            "merge_every": self.merge_every,
        }

    def _counters(self) -> dict[str, int]:
        return {name: getattr(self, f"_{name}") for name in COUNTERS}

    def _zero_counters(self) -> None:
        for name in COUNTERS:
            setattr(self, f"_{name}", 0)

    def _precondition_code(self, preconditions: Mapping[str, bool]) -> int:
        missing = [key for key in self.precondition_keys if key not in preconditions]
        extra = [key for key in preconditions if key not in self.precondition_keys]
        if missing or extra:
            raise ValueError(f"preconditions: missing keys {missing}, unexpected keys {extra}")
        return sum(1 << i for i, key in enumerate(self.precondition_keys) if preconditions[key])

    def _unit_embedding(self, embedding: Tensor | np.ndarray | Sequence[float]) -> Tensor:
        vector = torch.as_tensor(embedding, dtype=torch.float32, device=self.device)
        if vector.shape != (self.embedding_dim,):
            raise ValueError(
                f"embedding must have shape [{self.embedding_dim}], got {list(vector.shape)}"
            )
        norm = vector.norm()
        if not torch.isfinite(norm) or norm == 0:
            raise ValueError("embedding must be finite and non-zero")
        return vector / norm

    def _state_codes(self, state: Tensor | np.ndarray) -> Tensor:
        """Precondition flags ``[B, P]`` (or ``[P]``) of each state -> codes ``[B]``."""
        states = torch.as_tensor(state, device=self.device).bool()
        if states.dim() == 1:
            states = states.unsqueeze(0)
        if states.dim() != 2 or states.shape[1] != len(self.precondition_keys):
            raise ValueError(
                f"state must have shape [B, {len(self.precondition_keys)}], "
                f"got {list(states.shape)}"
            )
        return self._pack(states)

    def _query_rows(self, query: Tensor | np.ndarray, batch: int) -> Tensor:
        queries = torch.as_tensor(query, dtype=torch.float32, device=self.device)
        if queries.dim() == 1:
            queries = queries.unsqueeze(0)
        if queries.shape != (batch, self.embedding_dim):
            raise ValueError(
                f"query must have shape [{batch}, {self.embedding_dim}], got {list(queries.shape)}"
            )
        return torch.nn.functional.normalize(queries, dim=1)


def library_file(load: str | os.PathLike) -> Path:
    """The library file ``memory.load`` names: the file itself, or ``skills.json`` in the run
    dir it names; ``FileNotFoundError`` naming it where there is none."""
    path = Path(load).expanduser()
    if path.is_dir():
        path = path / LIBRARY_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{load}: no skill library there (a run dir holding "
                                f"{LIBRARY_FILE}, or the file itself)")
    return path.resolve()


def _check_search_settings(top_k: int, merge_threshold: float) -> None:
    """Search settings read from a saved state, checked as the constructor checks them."""
    declared = settings_of(SkillLibrary)
    declared["top_k"].check(top_k)
    declared["merge_threshold"].check(merge_threshold)
