"""Vector indexes that rank stored unit vectors by cosine similarity to unit queries.

Keys are non-negative integers chosen by the caller (the skill library uses its storage
slots). Two backends share one interface:

* :class:`ExactIndex` keeps one ``[capacity, d]`` tensor on any device; a search is a
  blockwise matmul and top-k, so its results are exact.
* :class:`HNSWIndex` keeps a usearch HNSW graph on the CPU; searches are approximate, adds
  cost ``O(log n)`` and removed keys are gone from the graph.

A search may take a :class:`LabelFilter`: a query may only return keys carrying its label
(the skill library labels skills and states with their precondition code). The exact
index scores the queries of each distinct label together against only the keys that carry
it, block by block; it copies those keys' vectors out once per label and keeps them until
its keys change. The HNSW index asks the graph for
``k * oversample`` candidates, keeps the allowed ones, and doubles the candidate count for
the queries still short of ``k`` allowed keys; once the count reaches the index size the
round is an exact scan, so a query gets fewer than ``k`` keys only when fewer are allowed.
A rare label costs more rounds.

An index holds nothing but its vectors: checkpoints store the vectors and rebuild the index
on load.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

INDEX_KINDS = ("exact", "hnsw")

_BLOCK_ELEMENTS = 1 << 24  # scores per matmul block: 64 MiB of float32
_INITIAL_CAPACITY = 16

_Label = int | float | None  # a key or query label; None stands for "no filter"
# The candidates of a label: keys [m], their vectors [m, d] and a mask [m] of the rows to skip
# (removed keys; None when there are none)
_Candidates = tuple[Tensor, Tensor, Tensor | None]


def empty_results(batch: int, k: int, device: torch.device | str) -> tuple[Tensor, Tensor]:
    """Search results ``[batch, k]`` with every slot empty: key -1, score -inf."""
    keys = torch.full((batch, k), -1, dtype=torch.long, device=device)
    return keys, torch.full((batch, k), -math.inf, device=device)


@dataclass(frozen=True)
class LabelFilter:
    """Query ``b`` may return key ``j`` only when ``key_labels[j] == query_labels[b]``.

    ``key_labels`` is indexed by key and covers every stored key; ``query_labels`` is ``[B]``.
    A stored key's label must not change in place until the key is removed: the exact index
    caches the keys of each label until its next ``add``, ``remove`` or ``clear``, or until it
    is searched with another ``key_labels`` tensor.
    """

    key_labels: Tensor
    query_labels: Tensor


class VectorIndex(ABC):
    """Unit vectors stored under integer keys, searched by cosine similarity."""

    dim: int

    @abstractmethod
    def __len__(self) -> int:
        """Number of stored keys."""

    @abstractmethod
    def add(self, keys: Tensor, vectors: Tensor) -> None:
        """Store unit ``vectors`` ``[n, d]`` under ``keys`` ``[n]`` (keys not stored now)."""

    @abstractmethod
    def remove(self, keys: Tensor) -> None:
        """Forget stored ``keys``."""

    @abstractmethod
    def clear(self) -> None:
        """Forget every key."""

    @abstractmethod
    def vectors(self, keys: Tensor) -> Tensor:
        """The stored vectors of ``keys``, ``[n, d]`` float32."""

    @abstractmethod
    def search(
        self, queries: Tensor, k: int, allowed: LabelFilter | None = None
    ) -> tuple[Tensor, Tensor]:
        """The ``k`` most similar allowed keys per unit query ``[B, d]``.

        Returns ``(keys [B, k], scores [B, k])``, best first; empty slots hold key -1 and
        score -inf.
        """

    def nearest(self, vectors: Tensor) -> tuple[Tensor, Tensor]:
        """The most similar stored key to each vector and its similarity (-1, -inf if none)."""
        keys, scores = self.search(vectors, 1)
        return keys[:, 0], scores[:, 0]


class ExactIndex(VectorIndex):
    """Brute-force cosine search over one ``[capacity, d]`` tensor, on CPU or CUDA.

    A search scores each query only against its candidates: the stored keys carrying its
    label (with a copy of their vectors), or without a filter every row of the storage, the
    rows of removed keys masked. They are cached per label until the next ``add``, ``remove``
    or ``clear``, or a search with another ``key_labels`` tensor.
    """

    def __init__(
        self, dim: int, device: str | torch.device = "cpu", block_elements: int = _BLOCK_ELEMENTS
    ) -> None:
        self.dim = dim
        self.device = torch.device(device)
        self.block_elements = block_elements
        self.clear()

    def __len__(self) -> int:
        return self._count

    def add(self, keys: Tensor, vectors: Tensor) -> None:
        keys = keys.to(self.device)
        if not len(keys):
            return
        end = int(keys.max()) + 1
        self._reserve(end)
        self._vectors[keys] = vectors.to(self.device, torch.float32)
        self._stored[keys] = True
        self._end = max(self._end, end)
        self._count += len(keys)
        self._candidates.clear()

    def remove(self, keys: Tensor) -> None:
        self._stored[keys.to(self.device)] = False
        self._count -= len(keys)
        self._candidates.clear()

    def clear(self) -> None:
        self._vectors = torch.zeros(_INITIAL_CAPACITY, self.dim, device=self.device)
        self._stored = torch.zeros(_INITIAL_CAPACITY, dtype=torch.bool, device=self.device)
        self._end = 0  # one past the highest key ever stored
        self._count = 0
        self._candidates: dict[_Label, _Candidates] = {}
        self._key_labels: Tensor | None = None  # the key labels the candidates were found with

    def vectors(self, keys: Tensor) -> Tensor:
        return self._vectors[keys.to(self.device)]

    def search(
        self, queries: Tensor, k: int, allowed: LabelFilter | None = None
    ) -> tuple[Tensor, Tensor]:
        queries = queries.to(self.device, torch.float32)
        keys, scores = empty_results(len(queries), k, self.device)
        for label, rows in self._query_groups(queries, allowed):
            candidates = self._candidates_of(label, allowed)
            if len(candidates[0]):
                found, sims = self._top_k(queries[rows], k, *candidates)
                keys[rows, : found.shape[1]], scores[rows, : sims.shape[1]] = found, sims
        return keys.masked_fill(torch.isneginf(scores), -1), scores

    def _query_groups(
        self, queries: Tensor, allowed: LabelFilter | None
    ) -> list[tuple[_Label, Tensor | slice]]:
        """Each distinct query label (None without a filter) and the rows of its queries."""
        if allowed is None:
            return [(None, slice(None))]
        labels = allowed.query_labels.to(self.device)
        if len(queries) == 1:
            return [(labels[0].item(), slice(None))]
        order = torch.argsort(labels, stable=True)
        distinct, counts = torch.unique_consecutive(labels[order], return_counts=True)
        return list(zip(distinct.tolist(), order.split(counts.tolist()), strict=True))

    def _candidates_of(self, label: _Label, allowed: LabelFilter | None) -> _Candidates:
        """The candidates of queries with ``label``, cached until the keys or labels change."""
        if allowed is not None and allowed.key_labels is not self._key_labels:
            self._candidates.clear()
            self._key_labels = allowed.key_labels
        if label not in self._candidates:
            end = self._end
            if label is None:  # every row, masking those of removed keys
                removed = ~self._stored[:end] if self._count < end else None
                keys = torch.arange(end, device=self.device)
                self._candidates[label] = keys, self._vectors[:end], removed
            else:
                same = allowed.key_labels[:end].to(self.device) == label
                keys = torch.nonzero(self._stored[:end] & same).squeeze(1)
                self._candidates[label] = keys, self._vectors.index_select(0, keys), None
        return self._candidates[label]

    def _top_k(
        self, queries: Tensor, k: int, keys: Tensor, vectors: Tensor, excluded: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        """The (at most) ``k`` candidates most similar to each query, scored block by block:
        ``(keys [R, k'], scores [R, k'])``, best first, excluded candidates scoring -inf."""
        block = max(1, self.block_elements // max(len(queries), 1))
        found, scores = [], []
        for start in range(0, len(keys), block):
            rows = slice(start, start + block)
            sims = queries @ vectors[rows].T
            if excluded is not None:
                sims.masked_fill_(excluded[rows], -math.inf)
            top, arg = sims.topk(min(k, sims.shape[1]), dim=1)
            found.append(keys[rows][arg])
            scores.append(top)
        if len(found) == 1:
            return found[0], scores[0]
        top, pick = torch.cat(scores, dim=1).topk(min(k, len(keys)), dim=1)
        return torch.cat(found, dim=1).gather(1, pick), top

    def _reserve(self, size: int) -> None:
        capacity = self._vectors.shape[0]
        if size <= capacity:
            return
        capacity = max(size, 2 * capacity)
        vectors = self._vectors.new_zeros(capacity, self.dim)
        vectors[: self._vectors.shape[0]] = self._vectors
        stored = self._stored.new_zeros(capacity)
        stored[: self._stored.shape[0]] = self._stored
        self._vectors, self._stored = vectors, stored


def _usearch_index() -> type:
    try:
        from usearch.index import Index
    except ImportError as error:
        raise ImportError(
            "memory.index=hnsw needs the usearch package: install the hnsw extra "
            "(pip install 'procmem[hnsw]') or use memory.index=exact"
        ) from error
    return Index


class HNSWIndex(VectorIndex):
    """Approximate cosine search in a usearch HNSW graph (CPU; results on the CPU).

    ``connectivity`` and ``expansion_add`` set graph quality against build time,
    ``expansion_search`` recall against search time; ``oversample`` is the first filtered
    round's candidate count per wanted key. An index of at most ``exact_below`` keys is
    scanned exactly, which is as fast as the graph at that size.
    """

    def __init__(
        self,
        dim: int,
        connectivity: int = 8,
        expansion_add: int = 32,
        expansion_search: int = 64,
        oversample: int = 8,
        exact_below: int = 1024,
        threads: int = 0,
    ) -> None:
        self.dim = dim
        self.connectivity = connectivity
        self.expansion_add = expansion_add
        self.expansion_search = expansion_search
        self.oversample = oversample
        self.exact_below = exact_below
        self.threads = threads
        self._index_class = _usearch_index()
        self.clear()

    def __len__(self) -> int:
        return len(self._index)

    def add(self, keys: Tensor, vectors: Tensor) -> None:
        if len(keys):
            self._index.add(
                keys.cpu().numpy().astype(np.uint64),
                vectors.detach().cpu().float().numpy(),
                threads=self.threads,
            )

    def remove(self, keys: Tensor) -> None:
        if len(keys):
            self._index.remove(keys.cpu().numpy().astype(np.uint64))

    def clear(self) -> None:
        self._index = self._index_class(
            ndim=self.dim,
            metric="cos",
            dtype="f32",
            connectivity=self.connectivity,
            expansion_add=self.expansion_add,
            expansion_search=self.expansion_search,
        )

    def vectors(self, keys: Tensor) -> Tensor:
        if not len(keys):
            return torch.zeros(0, self.dim)
        found = self._index.get(keys.cpu().numpy().astype(np.uint64))
        return torch.from_numpy(np.stack(found).astype(np.float32, copy=False))

    def search(
        self, queries: Tensor, k: int, allowed: LabelFilter | None = None
    ) -> tuple[Tensor, Tensor]:
        queries_np = queries.detach().cpu().float().numpy()
        keys, scores = empty_results(len(queries_np), k, "cpu")
        size = len(self)
        pending = torch.arange(len(queries_np))
        count = k if allowed is None else k * self.oversample
        if allowed is not None:
            key_labels, query_labels = allowed.key_labels.cpu(), allowed.query_labels.cpu()
        while size and len(pending):
            exhaustive = count >= size or size <= self.exact_below
            count = size if exhaustive else count
            found, sims = self._candidates(queries_np[pending.numpy()], count, exhaustive)
            ok = found >= 0
            if allowed is not None:
                ok &= key_labels[found.clamp(min=0)] == query_labels[pending].unsqueeze(1)
            done = exhaustive | (ok.sum(dim=1) >= k)
            # the first k allowed candidates of each row, in rank order
            position = torch.where(ok, torch.arange(count), count).sort(dim=1).values[:, :k]
            taken = position < count
            position = position.clamp(max=count - 1)
            row_keys = found.gather(1, position).masked_fill(~taken, -1)
            row_scores = sims.gather(1, position).masked_fill(~taken, -math.inf)
            width = row_keys.shape[1]
            keys[pending[done], :width] = row_keys[done]
            scores[pending[done], :width] = row_scores[done]
            pending, count = pending[~done], 2 * count
        return keys, scores

    def _candidates(
        self, queries: np.ndarray, count: int, exact: bool
    ) -> tuple[Tensor, Tensor]:
        """Graph (or, with ``exact``, brute-force) top-``count`` as ``[R, count]`` tensors."""
        matches = self._index.search(queries, count, exact=exact, threads=self.threads)
        # usearch returns one query's matches unbatched, holding only the keys it found
        found = np.atleast_2d(matches.keys).astype(np.int64)
        distances = np.atleast_2d(matches.distances).astype(np.float32)
        counts = getattr(matches, "counts", np.array([found.shape[1]]))
        padded = np.full((len(queries), count), -1, dtype=np.int64)
        padded[:, : found.shape[1]] = found
        sims = np.full((len(queries), count), -np.inf, dtype=np.float32)
        sims[:, : found.shape[1]] = 1.0 - distances
        missing = np.arange(count)[None, :] >= np.asarray(counts)[:, None]
        padded[missing], sims[missing] = -1, -np.inf
        return torch.from_numpy(padded), torch.from_numpy(sims)


def make_index(kind: str, dim: int, device: str | torch.device = "cpu") -> VectorIndex:
    """The index backend named ``kind`` (one of :data:`INDEX_KINDS`)."""
    if kind == "exact":
        return ExactIndex(dim, device)
    if kind == "hnsw":
        return HNSWIndex(dim)
    raise ValueError(f"index must be one of {INDEX_KINDS}, got {kind!r}")
