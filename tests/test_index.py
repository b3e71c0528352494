import math
import sys

import pytest
import torch

from procmem.skills.dedup import duplicate_targets
from procmem.skills.eviction import eviction_scores
from procmem.skills.index import ExactIndex, HNSWIndex, LabelFilter, make_index
from procmem.skills.library import SkillLibrary


def unit_rows(n: int, dim: int = 16, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(n, dim, generator=generator), dim=1)


def brute_force(vectors, queries, k, key_labels=None, query_labels=None):
    sims = queries @ vectors.T
    if key_labels is not None:
        sims = sims.masked_fill(key_labels[None, :] != query_labels[:, None], -math.inf)
    return sims.topk(k, dim=1)


@pytest.mark.parametrize("kind", ["exact", "hnsw"])
@pytest.mark.parametrize("num_queries", [20, 64])  # 5 or 16 queries per label
def test_search_matches_brute_force_with_and_without_labels(kind, num_queries) -> None:
    vectors, queries = unit_rows(300), unit_rows(num_queries, seed=1)
    key_labels = torch.randint(0, 4, (300,), generator=torch.Generator().manual_seed(2))
    query_labels = torch.arange(num_queries) % 4
    index = make_index(kind, 16)
    index.add(torch.arange(300), vectors)

    scores, keys = brute_force(vectors, queries, 5)
    found_keys, found_scores = index.search(queries, 5)
    assert torch.equal(found_keys, keys)
    assert torch.allclose(found_scores, scores, atol=1e-5)

    scores, keys = brute_force(vectors, queries, 5, key_labels, query_labels)
    found_keys, found_scores = index.search(queries, 5, LabelFilter(key_labels, query_labels))
    assert torch.equal(found_keys, keys)
    assert torch.allclose(found_scores, scores, atol=1e-5)


def overlap(a: torch.Tensor, b: torch.Tensor) -> float:
    """Share of the keys in ``b`` that ``a`` found too, row by row."""
    rows = zip(a.tolist(), b.tolist(), strict=True)
    return sum(len(set(x) & set(y)) for x, y in rows) / b.numel()


def test_hnsw_graph_search_has_high_recall_with_and_without_labels() -> None:
    vectors, queries = unit_rows(2000), unit_rows(50, seed=1)
    key_labels = torch.randint(0, 4, (2000,), generator=torch.Generator().manual_seed(2))
    query_labels = torch.arange(50) % 4
    index = HNSWIndex(16, exact_below=0)  # always search the graph
    index.add(torch.arange(2000), vectors)

    _, keys = brute_force(vectors, queries, 5)
    assert overlap(index.search(queries, 5)[0], keys) >= 0.9
    _, keys = brute_force(vectors, queries, 5, key_labels, query_labels)
    found, scores = index.search(queries, 5, LabelFilter(key_labels, query_labels))
    assert overlap(found, keys) >= 0.9
    assert (key_labels[found] == query_labels[:, None]).all()
    assert (scores.diff(dim=1) <= 0).all()


@pytest.mark.parametrize(
    "index", [ExactIndex(16), HNSWIndex(16, exact_below=0)], ids=["exact", "hnsw-graph"]
)
def test_rare_label_finds_every_allowed_key(index) -> None:
    vectors = unit_rows(500)
    key_labels = torch.zeros(500, dtype=torch.long)
    key_labels[[7, 123, 499]] = 1  # three keys out of 500 carry the query's label
    index.add(torch.arange(500), vectors)

    keys, scores = index.search(unit_rows(1, seed=3), 5, LabelFilter(key_labels, torch.ones(1)))

    assert sorted(keys[0, :3].tolist()) == [7, 123, 499]
    assert keys[0, 3:].tolist() == [-1, -1]
    assert torch.isneginf(scores[0, 3:]).all()


@pytest.mark.parametrize(
    "index",
    [ExactIndex(16), HNSWIndex(16), HNSWIndex(16, exact_below=0)],
    ids=["exact", "hnsw", "hnsw-graph"],
)
def test_removed_keys_are_never_returned_and_can_be_reused(index) -> None:
    vectors = unit_rows(50)
    index.add(torch.arange(50), vectors)

    index.remove(torch.tensor([3, 10]))
    keys, _ = index.search(vectors[[3, 10]], 50)

    assert len(index) == 48
    assert not ({3, 10} & set(keys.flatten().tolist()))
    assert (keys[:, -2:] == -1).all()
    index.add(torch.tensor([3]), vectors[20:21])
    assert index.nearest(vectors[20:21])[0].item() in (3, 20)
    assert torch.allclose(index.vectors(torch.tensor([3])), vectors[20:21])


@pytest.mark.parametrize("kind", ["exact", "hnsw"])
def test_empty_and_small_indexes_pad_results(kind) -> None:
    index = make_index(kind, 4)
    keys, scores = index.search(unit_rows(2, dim=4), 3)
    assert (keys == -1).all() and torch.isneginf(scores).all()

    index.add(torch.tensor([5]), unit_rows(1, dim=4))
    keys, scores = index.search(unit_rows(2, dim=4, seed=1), 3)
    assert keys.tolist() == [[5, -1, -1], [5, -1, -1]]
    assert torch.isneginf(scores[:, 1:]).all()


@pytest.mark.parametrize("num_queries", [9, 30])  # 3 or 10 queries per label
def test_exact_blocks_give_the_same_results_as_one_block(num_queries) -> None:
    vectors, queries = unit_rows(257), unit_rows(num_queries, seed=1)
    labels, query_labels = torch.arange(257) % 3, torch.arange(num_queries) % 3
    whole, blocked = ExactIndex(16), ExactIndex(16, block_elements=num_queries * 10)
    for index in (whole, blocked):
        index.add(torch.arange(257), vectors)
        index.remove(torch.tensor([0, 100, 256]))

    for allowed in (None, LabelFilter(labels, query_labels)):
        expected, got = whole.search(queries, 7, allowed), blocked.search(queries, 7, allowed)
        assert torch.equal(expected[0], got[0])
        assert torch.allclose(expected[1], got[1])


def test_exact_search_follows_adds_removes_clears_and_new_labels() -> None:
    """Cached per-label candidates never outlive the keys or the key labels they came from."""
    vectors, queries = unit_rows(400), unit_rows(12, seed=1)
    labels, query_labels = torch.arange(400) % 3, torch.arange(12) % 3
    stored = torch.zeros(400, dtype=torch.bool)
    index = ExactIndex(16)

    def check() -> None:
        for rows in (slice(0, 1), slice(None)):  # one query, and a batch of every label
            for allowed in (None, LabelFilter(labels, query_labels[rows])):
                sims = (queries[rows] @ vectors.T).masked_fill(~stored, -math.inf)
                if allowed is not None:
                    sims = sims.masked_fill(labels != query_labels[rows, None], -math.inf)
                scores, keys = sims.topk(5, dim=1)
                found_keys, found_scores = index.search(queries[rows], 5, allowed)
                assert torch.equal(found_keys, keys.masked_fill(torch.isneginf(scores), -1))
                assert torch.allclose(found_scores, scores, atol=1e-5)

    index.add(torch.arange(200), vectors[:200])
    stored[:200] = True
    check()
    index.add(torch.arange(200, 400), vectors[200:])
    stored[200:] = True
    check()
    gone = torch.tensor([0, 4, 5, 7, 399])
    index.remove(gone)
    stored[gone] = False
    check()
    vectors[5] = unit_rows(1, seed=7)[0]
    index.add(torch.tensor([5]), vectors[5:6])
    stored[5] = True
    check()
    labels = (labels + 1) % 3  # another key labels tensor
    check()
    index.clear()
    stored[:] = False
    check()


def test_hnsw_without_usearch_names_the_setting_and_extra(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "usearch.index", None)  # makes the import fail

    with pytest.raises(ImportError, match=r"memory\.index=hnsw.*procmem\[hnsw\]"):
        HNSWIndex(8)
    with pytest.raises(ImportError, match=r"memory\.index=hnsw"):
        SkillLibrary(embedding_dim=8, index="hnsw")


def test_unknown_index_kind() -> None:
    with pytest.raises(ValueError, match="index must be one of"):
        make_index("annoy", 8)


def test_duplicate_targets_merge_into_the_strongest_unmerged_row() -> None:
    a, b = torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0])
    near_a = torch.nn.functional.normalize(torch.tensor([1.0, 0.1, 0.0]), dim=0)
    vectors = torch.stack([a, b, near_a, near_a, torch.tensor([0.0, 0.0, 1.0])])

    targets = duplicate_targets(vectors, threshold=0.9)

    assert targets.tolist() == [-1, -1, 0, 0, -1]


def test_duplicate_targets_leave_chains_for_a_later_pass() -> None:
    # row 1 is close to row 0 and to row 2, but rows 0 and 2 are not close to each other
    angles = torch.tensor([0.0, 0.4, 0.8])
    vectors = torch.stack([angles.cos(), angles.sin()], dim=1)

    targets = duplicate_targets(vectors, threshold=0.9)

    assert targets.tolist() == [-1, 0, -1]


def test_duplicate_targets_blockwise_equals_one_block() -> None:
    vectors = torch.nn.functional.normalize(unit_rows(200, dim=3) + 0.0, dim=1)
    expected = duplicate_targets(vectors, 0.99)
    assert torch.equal(duplicate_targets(vectors, 0.99, block_elements=200 * 7), expected)
    assert (expected >= 0).any()


def test_eviction_scores() -> None:
    successes, uses = torch.tensor([3, 0, 0]), torch.tensor([3, 3, 0])
    last_active, indices = torch.tensor([10, 20, 0]), torch.tensor([5, 2, 9])

    utility = eviction_scores("utility", successes, uses, last_active, indices, 20, 10.0)

    expected = [0.8 * 0.5, 0.2 * 1.0, 0.5 * 0.25]  # (s+1)/(u+2) x 0.5 ** (age / 10)
    assert utility.tolist() == pytest.approx(expected)
    lru = eviction_scores("lru", successes, uses, last_active, indices, 20, 10.0)
    assert lru.argmin() == 2
    assert eviction_scores("fifo", successes, uses, last_active, indices, 20, 10.0).argmin() == 1
    with pytest.raises(ValueError, match="eviction"):
        eviction_scores("random", successes, uses, last_active, indices, 20, 10.0)
