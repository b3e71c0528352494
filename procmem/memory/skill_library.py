"""A library of reusable skills extracted from successful trajectories.

All skills live in a few tensors (embeddings ``[N, d]``, preconditions ``[N, P]``, counters
``[N]``), so applicability, ranking and counter updates are batched tensor operations with no
Python loop over skills or queries.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from procmem.io import atomic_write_json

SKILL_LIBRARY_FORMAT_VERSION = 1

_INITIAL_CAPACITY = 16


class SkillLibraryError(ValueError):
    """A skill library file or state that is corrupt or of an unsupported format."""


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

    @property
    def success_rate(self) -> float:
        """Fraction of uses that succeeded; 0.0 for a skill never used."""
        return self.successes / self.uses if self.uses else 0.0


def _grow(tensor: Tensor, capacity: int) -> Tensor:
    """Return ``tensor`` copied into a zero tensor with ``capacity`` rows."""
    grown = tensor.new_zeros((capacity, *tensor.shape[1:]))
    grown[: tensor.shape[0]] = tensor
    return grown


class SkillLibrary:
    """Skills with preconditions, retrieved by cosine similarity or by success rate.

    Adding a skill whose embedding is closer than ``merge_threshold`` (cosine similarity) to an
    existing one merges it into that skill instead: the existing skill's support goes up by one
    and its actions and embedding stay.
    """

    def __init__(
        self,
        embedding_dim: int = 8,
        top_k: int = 3,
        merge_threshold: float = 0.9,
        precondition_keys: Sequence[str] = ("has_key", "door_open"),
        device: str | torch.device = "cpu",
    ) -> None:
        if embedding_dim < 1:
            raise ValueError(f"embedding_dim must be >= 1, got {embedding_dim}")
        _check_search_settings(top_k, merge_threshold)
        keys = tuple(precondition_keys)
        if not keys:
            raise ValueError("precondition_keys must not be empty")
        if len(set(keys)) != len(keys):
            raise ValueError(f"precondition_keys must be unique, got {list(keys)}")

        self.embedding_dim = embedding_dim
        self.top_k = top_k
        self.merge_threshold = merge_threshold
        self.precondition_keys = keys
        self.device = torch.device(device)

        self._names: list[str] = []
        self._actions: list[tuple[int, ...]] = []
        self._merges = 0
        self._size = 0
        self._embeddings = torch.zeros(_INITIAL_CAPACITY, embedding_dim, device=self.device)
        self._preconditions = torch.zeros(
            _INITIAL_CAPACITY, len(keys), dtype=torch.bool, device=self.device
        )
        self._successes = torch.zeros(_INITIAL_CAPACITY, dtype=torch.long, device=self.device)
        self._uses = torch.zeros_like(self._successes)
        self._support = torch.zeros_like(self._successes)

    def __len__(self) -> int:
        return self._size

    def __getitem__(self, index: int) -> Skill:
        if not -self._size <= index < self._size:
            raise IndexError(f"skill index {index} out of range for {self._size} skills")
        index %= self._size
        return self._snapshots(slice(index, index + 1))[0]

    @property
    def embeddings(self) -> Tensor:
        """Unit-norm skill embeddings ``[N, d]`` (a view of the storage; do not modify)."""
        return self._embeddings[: self._size]

    def add(
        self,
        name: str,
        actions: Sequence[int],
        preconditions: Mapping[str, bool],
        embedding: Tensor | np.ndarray | Sequence[float],
    ) -> tuple[int, bool]:
        """Add a skill or merge it into a near-duplicate; return ``(index, merged)``."""
        actions = tuple(int(a) for a in actions)
        if not actions:
            raise ValueError(f"skill {name!r} has no actions")
        flags = self._precondition_row(preconditions)
        vector = self._unit_embedding(embedding)

        if self._size:
            similarity, nearest = (self.embeddings @ vector).max(dim=0)
            if similarity.item() > self.merge_threshold:
                self._support[nearest] += 1
                self._merges += 1
                return int(nearest), True

        self._reserve(self._size + 1)
        index = self._size
        self._embeddings[index] = vector
        self._preconditions[index] = flags
        self._support[index] = 1
        self._names.append(name)
        self._actions.append(actions)
        self._size += 1
        return index, False

    def applicable(self, state: Tensor | np.ndarray) -> Tensor:
        """Which skills apply in each state: ``[B, P]`` (or ``[P]``) flags -> ``[B, N]`` bool."""
        states = self._state_rows(state)
        stored = self._preconditions[: self._size]
        return (stored.unsqueeze(0) == states.unsqueeze(1)).all(dim=-1)

    def retrieve(
        self,
        state: Tensor | np.ndarray,
        query: Tensor | np.ndarray | None = None,
        k: int | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Best ``k`` applicable skills per state, as ``(indices [B, k], scores [B, k])``.

        Scores are cosine similarities to ``query`` (``[B, d]``), or success rates when no query
        is given. Ties go to the skill with more support, then to the lower index. Slots without
        an applicable skill hold index -1 and score -inf.
        """
        k = self.top_k if k is None else k
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        mask = self.applicable(state)
        batch = mask.shape[0]
        if query is None:
            scores = self._success_rates().expand(batch, -1)
        else:
            scores = self._query_rows(query, batch) @ self.embeddings.T
        scores = scores.masked_fill(~mask, -math.inf)

        by_support = torch.argsort(self._support[: self._size], descending=True, stable=True)
        ranked, order = torch.sort(scores[:, by_support], dim=1, descending=True, stable=True)
        kept = min(k, self._size)
        indices = torch.full((batch, k), -1, dtype=torch.long, device=self.device)
        values = torch.full((batch, k), -math.inf, device=self.device)
        indices[:, :kept] = by_support[order[:, :kept]]
        values[:, :kept] = ranked[:, :kept]
        indices[values == -math.inf] = -1
        return indices, values

    def record_use(
        self,
        indices: Tensor | np.ndarray | Sequence[int],
        successes: Tensor | np.ndarray | Sequence[bool],
    ) -> None:
        """Count one use per index (repeats count each time); index -1 is ignored."""
        indices = torch.as_tensor(indices, dtype=torch.long, device=self.device).reshape(-1)
        outcomes = torch.as_tensor(successes, dtype=torch.bool, device=self.device).reshape(-1)
        if indices.shape != outcomes.shape:
            raise ValueError(
                f"indices and successes differ in size: {indices.numel()} vs {outcomes.numel()}"
            )
        used = indices != -1
        indices, outcomes = indices[used], outcomes[used]
        if ((indices < 0) | (indices >= self._size)).any():
            raise IndexError(f"skill indices out of range for {self._size} skills")
        self._uses.index_add_(0, indices, torch.ones_like(indices))
        self._successes.index_add_(0, indices, outcomes.long())

    def stats(self) -> dict[str, float]:
        """Library size, total uses, mean success rate of used skills, and merges so far."""
        uses = self._uses[: self._size]
        used = uses > 0
        avg_rate = self._success_rates()[used].mean().item() if used.any() else 0.0
        return {
            "skills": self._size,
            "skill_uses": int(uses.sum()),
            "avg_success_rate": avg_rate,
            "merges": self._merges,
        }

    def to_records(self) -> list[dict[str, Any]]:
        """One plain dict per skill, e.g. for a results table."""
        return [_skill_record(skill) for skill in self._snapshots()]

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to restore this library exactly (tensors on cpu)."""
        n = self._size
        return {
            "format_version": SKILL_LIBRARY_FORMAT_VERSION,
            "embedding_dim": self.embedding_dim,
            "top_k": self.top_k,
            "merge_threshold": self.merge_threshold,
            "precondition_keys": list(self.precondition_keys),
            "names": list(self._names),
            "actions": [list(a) for a in self._actions],
            "embeddings": self._embeddings[:n].cpu().clone(),
            "preconditions": self._preconditions[:n].cpu().clone(),
            "successes": self._successes[:n].cpu().clone(),
            "uses": self._uses[:n].cpu().clone(),
            "support": self._support[:n].cpu().clone(),
            "merges": self._merges,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Replace all skills and search settings with those of ``state``.

        Raises :class:`SkillLibraryError` for an unsupported format version, a different
        embedding size or precondition keys, and missing or inconsistent fields.
        """
        try:
            _check_format_version(state.get("format_version"))
            if state["embedding_dim"] != self.embedding_dim:
                raise SkillLibraryError(
                    f"embedding_dim {state['embedding_dim']} does not match {self.embedding_dim}"
                )
            if tuple(state["precondition_keys"]) != self.precondition_keys:
                raise SkillLibraryError(
                    f"precondition_keys {list(state['precondition_keys'])} do not match "
                    f"{list(self.precondition_keys)}"
                )
            top_k, merge_threshold = int(state["top_k"]), float(state["merge_threshold"])
            _check_search_settings(top_k, merge_threshold)
            names = [str(name) for name in state["names"]]
            actions = [tuple(int(a) for a in seq) for seq in state["actions"]]
            if len(actions) != len(names) or not all(actions):
                raise SkillLibraryError("every skill needs a non-empty action list")
            tensors = self._checked_tensors(state, len(names))
            merges = int(state["merges"])
        except SkillLibraryError:
            raise
        except (KeyError, TypeError, ValueError) as err:
            raise SkillLibraryError(_describe(err)) from err

        n = len(names)
        self.top_k, self.merge_threshold = top_k, merge_threshold
        self._names, self._actions, self._merges = names, actions, merges
        self._reserve(n)
        self._size = n
        self._embeddings[:n] = tensors["embeddings"]
        self._preconditions[:n] = tensors["preconditions"]
        self._successes[:n] = tensors["successes"]
        self._uses[:n] = tensors["uses"]
        self._support[:n] = tensors["support"]

    def save(self, path: str | os.PathLike) -> Path:
        """Write the library as human-readable JSON, atomically."""
        skills = [
            {**_skill_record(skill), "embedding": list(skill.embedding)}
            for skill in self._snapshots()
        ]
        return atomic_write_json(
            path,
            {
                "format_version": SKILL_LIBRARY_FORMAT_VERSION,
                "settings": {
                    "embedding_dim": self.embedding_dim,
                    "top_k": self.top_k,
                    "merge_threshold": self.merge_threshold,
                    "precondition_keys": list(self.precondition_keys),
                },
                "merges": self._merges,
                "skills": skills,
            },
        )

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device = "cpu") -> SkillLibrary:
        """Read a library written by :meth:`save`.

        A missing file raises ``FileNotFoundError``; unreadable JSON, an unsupported format
        version or missing fields raise :class:`SkillLibraryError` naming the file.
        """
        path = Path(path)
        try:
            return cls._from_json(json.loads(path.read_text(encoding="utf-8")), device)
        except json.JSONDecodeError as err:
            raise SkillLibraryError(f"{path}: not valid JSON ({err})") from err
        except (KeyError, TypeError, ValueError) as err:
            raise SkillLibraryError(f"{path}: {_describe(err)}") from err

    @classmethod
    def _from_json(cls, data: Any, device: str | torch.device) -> SkillLibrary:
        if not isinstance(data, dict):
            raise SkillLibraryError("expected a JSON object at the top level")
        _check_format_version(data.get("format_version"))
        settings, skills = data["settings"], data["skills"]
        keys = settings["precondition_keys"]
        library = cls(
            embedding_dim=settings["embedding_dim"],
            top_k=settings["top_k"],
            merge_threshold=settings["merge_threshold"],
            precondition_keys=keys,
            device=device,
        )
        library.load_state_dict(
            {
                "format_version": data["format_version"],
                **settings,
                "names": [skill["name"] for skill in skills],
                "actions": [skill["actions"] for skill in skills],
                "embeddings": [skill["embedding"] for skill in skills],
                "preconditions": [[skill["preconditions"][k] for k in keys] for skill in skills],
                "successes": [skill["successes"] for skill in skills],
                "uses": [skill["uses"] for skill in skills],
                "support": [skill["support"] for skill in skills],
                "merges": data["merges"],
            }
        )
        return library

    def _reserve(self, size: int) -> None:
        """Make room for ``size`` skills, doubling the capacity as needed."""
        capacity = self._embeddings.shape[0]
        if size <= capacity:
            return
        while capacity < size:
            capacity *= 2
        self._embeddings = _grow(self._embeddings, capacity)
        self._preconditions = _grow(self._preconditions, capacity)
        self._successes = _grow(self._successes, capacity)
        self._uses = _grow(self._uses, capacity)
        self._support = _grow(self._support, capacity)

    def _snapshots(self, rows: slice = slice(None)) -> list[Skill]:
        """Snapshots of the skills in ``rows``, read from the tensors in one transfer each."""
        rows = slice(*rows.indices(self._size))
        columns = zip(
            self._names[rows],
            self._actions[rows],
            self._preconditions[rows].tolist(),
            self._embeddings[rows].tolist(),
            self._successes[rows].tolist(),
            self._uses[rows].tolist(),
            self._support[rows].tolist(),
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
            )
            for name, actions, flags, embedding, successes, uses, support in columns
        ]

    def _checked_tensors(self, state: Mapping[str, Any], n: int) -> dict[str, Tensor]:
        """The skill tensors of ``state`` on this device, checked for shape and consistency."""
        layout = {
            "embeddings": (torch.float32, (n, self.embedding_dim)),
            "preconditions": (torch.bool, (n, len(self.precondition_keys))),
            "successes": (torch.long, (n,)),
            "uses": (torch.long, (n,)),
            "support": (torch.long, (n,)),
        }
        tensors = {}
        for key, (dtype, shape) in layout.items():
            tensors[key] = torch.as_tensor(state[key], dtype=dtype).to(self.device)
            if n == 0 and tensors[key].numel() == 0:
                tensors[key] = tensors[key].reshape(shape)  # an empty list has no row shape
            if tensors[key].shape != shape:
                raise SkillLibraryError(
                    f"{key} has shape {list(tensors[key].shape)}, expected {list(shape)}"
                )
        if not torch.isfinite(tensors["embeddings"]).all():
            raise SkillLibraryError("embeddings must be finite")
        successes, uses = tensors["successes"], tensors["uses"]
        if (successes < 0).any() or (successes > uses).any() or (tensors["support"] < 1).any():
            raise SkillLibraryError("counters must satisfy 0 <= successes <= uses, support >= 1")
        return tensors

    def _success_rates(self) -> Tensor:
        """Success rate per skill ``[N]``; 0.0 for skills never used."""
        uses = self._uses[: self._size]
        return self._successes[: self._size].float() / uses.clamp(min=1).float()

    def _precondition_row(self, preconditions: Mapping[str, bool]) -> Tensor:
        missing = [key for key in self.precondition_keys if key not in preconditions]
        extra = [key for key in preconditions if key not in self.precondition_keys]
        if missing or extra:
            raise ValueError(f"preconditions: missing keys {missing}, unexpected keys {extra}")
        flags = [bool(preconditions[key]) for key in self.precondition_keys]
        return torch.tensor(flags, dtype=torch.bool, device=self.device)

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

    def _state_rows(self, state: Tensor | np.ndarray) -> Tensor:
        states = torch.as_tensor(state, device=self.device).bool()
        if states.dim() == 1:
            states = states.unsqueeze(0)
        if states.dim() != 2 or states.shape[1] != len(self.precondition_keys):
            raise ValueError(
                f"state must have shape [B, {len(self.precondition_keys)}], "
                f"got {list(states.shape)}"
            )
        return states

    def _query_rows(self, query: Tensor | np.ndarray, batch: int) -> Tensor:
        queries = torch.as_tensor(query, dtype=torch.float32, device=self.device)
        if queries.dim() == 1:
            queries = queries.unsqueeze(0)
        if queries.shape != (batch, self.embedding_dim):
            raise ValueError(
                f"query must have shape [{batch}, {self.embedding_dim}], got {list(queries.shape)}"
            )
        return torch.nn.functional.normalize(queries, dim=1)


def _check_search_settings(top_k: int, merge_threshold: float) -> None:
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    if not -1.0 <= merge_threshold <= 1.0:
        raise ValueError(f"merge_threshold must be in [-1, 1], got {merge_threshold}")


def _check_format_version(version: Any) -> None:
    if version != SKILL_LIBRARY_FORMAT_VERSION:
        raise SkillLibraryError(
            f"unsupported format_version {version!r} (expected {SKILL_LIBRARY_FORMAT_VERSION})"
        )


def _describe(err: Exception) -> str:
    return f"missing field {err}" if isinstance(err, KeyError) else str(err)


def _skill_record(skill: Skill) -> dict[str, Any]:
    return {
        "name": skill.name,
        "actions": list(skill.actions),
        "preconditions": dict(skill.preconditions),
        "successes": skill.successes,
        "uses": skill.uses,
        "support": skill.support,
        "success_rate": skill.success_rate,
    }
