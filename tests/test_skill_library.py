import json
import math
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from procmem.app import ConfigError, check_config, compose_config
from procmem.settings import SettingError
from procmem.skills.library import SkillLibrary, SkillLibraryError
from procmem.skills.library_file import SKILL_LIBRARY_FORMAT_VERSION

NO_KEY = {"has_key": False, "door_open": False}
HAS_KEY = {"has_key": True, "door_open": False}


def random_library(seed: int, size: int = 12, dim: int = 8) -> SkillLibrary:
    """Skills with random embeddings, preconditions and usage counts."""
    rng = np.random.default_rng(seed)
    library = SkillLibrary(embedding_dim=dim, merge_threshold=1.0)
    for i in range(size):
        flags = rng.integers(0, 2, size=2).astype(bool)
        preconditions = {"has_key": bool(flags[0]), "door_open": bool(flags[1])}
        library.add(f"skill_{i}", [i % 4, 1], preconditions, rng.normal(size=dim))
    uses = rng.integers(0, size, size=5 * size)
    library.record_use(uses, rng.random(uses.shape) < 0.5)
    return library


def test_add_normalises_embedding_and_starts_counters() -> None:
    library = SkillLibrary(embedding_dim=2)
    index, merged = library.add("acquire_key", [2, 2, 3], HAS_KEY, [3.0, 4.0])

    assert (index, merged) == (0, False)
    skill = library[0]
    assert skill.name == "acquire_key"
    assert skill.actions == (2, 2, 3)
    assert skill.preconditions == HAS_KEY
    assert skill.embedding == pytest.approx((0.6, 0.8))
    assert (skill.successes, skill.uses, skill.support) == (0, 0, 1)
    assert skill.success_rate == 0.0
    assert torch.allclose(library.embeddings.norm(dim=1), torch.ones(1))


def test_similar_skill_merges_into_existing_one() -> None:
    library = SkillLibrary(embedding_dim=2, merge_threshold=0.9)
    library.add("open_door_sequence", [5, 3], HAS_KEY, [1.0, 0.0])

    index, merged = library.add("open_door_again", [1, 1, 1], NO_KEY, [1.0, 0.1])

    assert (index, merged) == (0, True)
    assert len(library) == 1
    skill = library[0]
    assert skill.name == "open_door_sequence"
    assert skill.actions == (5, 3)
    assert skill.support == 2
    assert skill.embedding == pytest.approx((1.0, 0.0))
    assert library.stats()["merges"] == 1


def test_skill_below_threshold_is_added() -> None:
    library = SkillLibrary(embedding_dim=2, merge_threshold=0.9)
    library.add("a", [0], NO_KEY, [1.0, 0.0])

    index, merged = library.add("b", [1], NO_KEY, [2.0, 1.0])  # cosine 0.894

    assert (index, merged) == (1, False)
    assert len(library) == 2
    assert library[0].support == library[1].support == 1


@pytest.mark.parametrize(
    ("actions", "preconditions", "embedding", "message"),
    [
        ([], NO_KEY, [1.0, 0.0], "no actions"),
        ([2, -1], NO_KEY, [1.0, 0.0], r"actions\[1\]: -1 is out of range: must be >= 0"),
        ([1.5], NO_KEY, [1.0, 0.0], r"actions\[0\]: 1.5 is not an integer"),
        ([1], NO_KEY, [0.0, 0.0], "non-zero"),
        ([1], NO_KEY, [1.0, 0.0, 0.0], "shape"),
        ([1], {"has_key": True}, [1.0, 0.0], "missing keys \\['door_open'\\]"),
        ([1], {**NO_KEY, "at_goal": True}, [1.0, 0.0], "unexpected keys \\['at_goal'\\]"),
    ],
)
def test_add_rejects_invalid_skills(actions, preconditions, embedding, message) -> None:
    library = SkillLibrary(embedding_dim=2)
    with pytest.raises(ValueError, match=message):
        library.add("bad", actions, preconditions, embedding)
    assert len(library) == 0


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"embedding_dim": 0}, "embedding_dim"),
        ({"top_k": 0}, "top_k"),
        ({"merge_threshold": 1.5}, "merge_threshold"),
        ({"merge_threshold": -1.1}, "merge_threshold"),
        ({"precondition_keys": ()}, "precondition_keys"),
        ({"precondition_keys": ("has_key", "has_key")}, "precondition_keys"),
    ],
)
def test_constructor_validates_arguments(kwargs, name) -> None:
    with pytest.raises(SettingError) as info:
        SkillLibrary(**kwargs)
    assert info.value.key == name


def test_preconditions_filter_retrieval() -> None:
    library = SkillLibrary(embedding_dim=2, merge_threshold=1.0)
    library.add("acquire_key", [1], NO_KEY, [1.0, 0.0])
    library.add("open_door_sequence", [2], HAS_KEY, [1.0, 0.0])
    library.add("navigate_5_steps", [3] * 5, NO_KEY, [0.0, 1.0])

    state = torch.tensor([[False, False], [True, False], [True, True]])
    assert library.applicable(state).tolist() == [
        [True, False, True],
        [False, True, False],
        [False, False, False],
    ]
    indices, _ = library.retrieve(state, torch.tensor([[1.0, 0.0]] * 3), k=2)
    assert indices.tolist() == [[0, 2], [1, -1], [-1, -1]]


def test_cosine_ranking_matches_hand_computed_scores() -> None:
    library = SkillLibrary(embedding_dim=2, merge_threshold=0.99)
    library.add("a", [0], NO_KEY, [1.0, 0.0])
    library.add("b", [1], NO_KEY, [1.0, 1.0])
    library.add("c", [2], NO_KEY, [0.0, 1.0])

    indices, scores = library.retrieve(torch.tensor([False, False]), torch.tensor([2.0, 1.0]))

    # cosines with (2, 1): a = 2/sqrt(5), b = 3/sqrt(10), c = 1/sqrt(5)
    assert indices.tolist() == [[1, 0, 2]]
    expected = [3 / math.sqrt(10), 2 / math.sqrt(5), 1 / math.sqrt(5)]
    assert scores[0].tolist() == pytest.approx(expected, abs=1e-6)


def test_success_rate_ranking_breaks_ties_by_support_then_index() -> None:
    library = SkillLibrary(embedding_dim=3, top_k=4, merge_threshold=0.9)
    library.add("rate_half", [0], NO_KEY, [1.0, 0.0, 0.0])
    library.add("rate_one", [1], NO_KEY, [0.0, 1.0, 0.0])
    library.add("rate_half_more_support", [2], NO_KEY, [0.0, 0.0, 1.0])
    library.add("rate_half_more_support_again", [2], NO_KEY, [0.0, 0.1, 1.0])  # merges into 2
    library.add("unused", [3], NO_KEY, [1.0, 1.0, 1.0])
    library.record_use([0, 0, 1, 2, 2], [True, False, True, True, False])

    indices, scores = library.retrieve(torch.tensor([False, False]))

    assert indices.tolist() == [[1, 2, 0, 3]]
    assert scores.tolist() == [[1.0, 0.5, 0.5, 0.0]]


def test_slots_without_applicable_skill_are_padded() -> None:
    library = SkillLibrary(embedding_dim=2, top_k=3, merge_threshold=1.0)
    library.add("a", [0], NO_KEY, [1.0, 0.0])
    library.add("b", [1], HAS_KEY, [0.0, 1.0])

    indices, scores = library.retrieve(torch.tensor([False, False]), k=5)

    assert indices.tolist() == [[0, -1, -1, -1, -1]]
    assert scores[0, 0] == 0.0
    assert torch.isneginf(scores[0, 1:]).all()


def test_empty_library_retrieves_nothing() -> None:
    library = SkillLibrary(embedding_dim=2)
    state = torch.zeros(4, 2, dtype=torch.bool)

    for query in (None, torch.ones(4, 2)):
        indices, scores = library.retrieve(state, query)
        assert indices.shape == scores.shape == (4, 3)
        assert (indices == -1).all()
        assert torch.isneginf(scores).all()


@pytest.mark.parametrize("with_query", [True, False])
def test_batched_retrieval_equals_per_row_retrieval(with_query: bool) -> None:
    library = random_library(seed=0)
    generator = torch.Generator().manual_seed(1)
    states = torch.randint(0, 2, (16, 2), generator=generator).bool()
    queries = torch.randn(16, 8, generator=generator) if with_query else None

    indices, scores = library.retrieve(states, queries, k=4)

    for row in range(16):
        query = queries[row : row + 1] if with_query else None
        row_indices, row_scores = library.retrieve(states[row], query, k=4)
        assert torch.equal(row_indices[0], indices[row])
        assert torch.allclose(row_scores[0], scores[row])


def test_record_use_counts_repeats_and_ignores_padding() -> None:
    library = SkillLibrary(embedding_dim=2, merge_threshold=1.0)
    library.add("a", [0], NO_KEY, [1.0, 0.0])
    library.add("b", [1], NO_KEY, [0.0, 1.0])

    library.record_use(torch.tensor([[0, 0, -1], [1, 0, -1]]), [[1, 0, 1], [1, 1, 1]])

    assert (library[0].uses, library[0].successes) == (3, 2)
    assert (library[1].uses, library[1].successes) == (1, 1)
    with pytest.raises(IndexError):
        library.record_use([2], [True])


def test_success_rate_stays_within_unit_interval_under_random_updates() -> None:
    library = SkillLibrary(embedding_dim=8)
    for i in range(6):
        library.add(f"skill_{i}", [i], NO_KEY, np.eye(8)[i])
    rng = np.random.default_rng(3)
    uses, successes = np.zeros(6, dtype=int), np.zeros(6, dtype=int)

    for _ in range(200):
        indices = rng.integers(-1, 6, size=rng.integers(1, 10))
        outcomes = rng.random(indices.shape) < 0.7
        library.record_use(indices, outcomes)
        np.add.at(uses, indices[indices >= 0], 1)
        np.add.at(successes, indices[indices >= 0], outcomes[indices >= 0])

    for i in range(6):
        skill = library[i]
        assert (skill.uses, skill.successes) == (uses[i], successes[i])
        assert 0.0 <= skill.success_rate <= 1.0
    _, rates = library.retrieve(torch.tensor([False, False]), k=6)
    assert ((rates >= 0) & (rates <= 1)).all()


def test_stats() -> None:
    library = SkillLibrary(embedding_dim=2, merge_threshold=0.9)
    assert library.stats() == {
        "skills": 0,
        "skill_uses": 0,
        "avg_success_rate": 0.0,
        "merges": 0,
        "evictions": 0,
        "retrievals": 0,
        "hits": 0,
        "hit_rate": 0.0,
    }
    library.add("a", [0], NO_KEY, [1.0, 0.0])
    library.add("a_again", [0], NO_KEY, [1.0, 0.01])
    library.add("b", [1], NO_KEY, [0.0, 1.0])
    library.add("c", [2], HAS_KEY, [-1.0, 0.0])
    library.record_use([0, 0, 0, 0, 1], [True, True, True, False, False])

    stats = library.stats()

    assert stats["skills"] == 3
    assert stats["skill_uses"] == 5
    assert stats["avg_success_rate"] == pytest.approx((0.75 + 0.0) / 2)
    assert stats["merges"] == 1


def assert_same_library(a: SkillLibrary, b: SkillLibrary) -> None:
    assert len(a) == len(b)
    assert a.stats() == b.stats()
    settings = ("embedding_dim", "top_k", "merge_threshold", "precondition_keys")
    assert [getattr(a, name) for name in settings] == [getattr(b, name) for name in settings]
    assert torch.allclose(a.embeddings, b.embeddings)
    assert torch.equal(a.indices, b.indices)
    assert [a[i] for i in a.indices.tolist()] == [b[i] for i in b.indices.tolist()]


def test_save_load_round_trip(tmp_path) -> None:
    library = random_library(seed=4)
    path = library.save(tmp_path / "skills.json")

    loaded = SkillLibrary.load(path)

    assert_same_library(library, loaded)
    states = torch.tensor([[False, False], [True, False], [False, True], [True, True]])
    assert torch.equal(library.retrieve(states)[0], loaded.retrieve(states)[0])
    saved = json.loads(path.read_text())
    assert saved["format_version"] == SKILL_LIBRARY_FORMAT_VERSION
    assert saved["skills"][0]["success_rate"] == library[0].success_rate


def test_save_load_empty_library(tmp_path) -> None:
    library = SkillLibrary(embedding_dim=4, top_k=2, precondition_keys=("at_goal",))
    loaded = SkillLibrary.load(library.save(tmp_path / "skills.json"))
    assert_same_library(library, loaded)


def test_state_dict_round_trip() -> None:
    library = random_library(seed=5)
    state = library.state_dict()
    restored = SkillLibrary(embedding_dim=8)

    restored.load_state_dict(state)
    library.record_use([0], [True])  # the saved state is a copy

    assert restored[0].uses == state["uses"][0]
    restored.record_use([0], [True])
    assert_same_library(library, restored)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"format_version": 99}, "format_version"),
        ({"embedding_dim": 4}, "embedding_dim"),
        ({"precondition_keys": ["door_open", "has_key"]}, "precondition_keys"),
        ({"uses": torch.zeros(12, dtype=torch.long)},
         r"^successes\[\d+\]: \d+ is out of range: must be <= uses \(0\)$"),
    ],
)
def test_load_state_dict_rejects_incompatible_state(change, message) -> None:
    state = {**random_library(seed=6).state_dict(), **change}
    with pytest.raises(SkillLibraryError, match=message):
        SkillLibrary(embedding_dim=8).load_state_dict(state)


def test_load_truncated_file_names_path(tmp_path) -> None:
    path = random_library(seed=7).save(tmp_path / "skills.json")
    path.write_text(path.read_text()[:100])

    with pytest.raises(SkillLibraryError, match="not valid JSON") as info:
        SkillLibrary.load(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda data: data.update(format_version=1), "format_version 1"),
        (lambda data: data.pop("format_version"), "format_version None"),
        (lambda data: data["skills"][0].pop("uses"), "missing field 'uses'"),
        (lambda data: data.pop("settings"), "missing field 'settings'"),
    ],
)
def test_load_invalid_file_names_path_and_problem(tmp_path, edit, message) -> None:
    path = random_library(seed=8).save(tmp_path / "skills.json")
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))

    with pytest.raises(SkillLibraryError, match=message) as info:
        SkillLibrary.load(path)
    assert str(path) in str(info.value)


def test_load_missing_file(tmp_path) -> None:
    with pytest.raises(FileNotFoundError):
        SkillLibrary.load(tmp_path / "absent.json")


def test_to_records() -> None:
    library = SkillLibrary(embedding_dim=2)
    library.add("acquire_key", [2, 3], NO_KEY, [1.0, 0.0])
    library.record_use([0, 0], [True, False])

    assert library.to_records() == [
        {
            "index": 0,
            "name": "acquire_key",
            "actions": [2, 3],
            "preconditions": NO_KEY,
            "successes": 1,
            "uses": 2,
            "support": 1,
            "success_rate": 0.5,
        }
    ]


def test_storage_grows_past_initial_capacity() -> None:
    library = SkillLibrary(embedding_dim=64, merge_threshold=0.99)
    vectors = torch.eye(64)
    for i in range(64):
        assert library.add(f"skill_{i}", [i], NO_KEY, vectors[i]) == (i, False)

    assert len(library) == 64
    assert torch.equal(library.embeddings, vectors)
    assert library[-1].name == "skill_63"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_library_on_cuda_accepts_cpu_and_numpy_inputs() -> None:
    library = SkillLibrary(embedding_dim=2, device="cuda")
    library.add("a", [0], NO_KEY, np.array([1.0, 0.0]))
    library.add("b", [1], NO_KEY, torch.tensor([0.0, 1.0]))

    indices, scores = library.retrieve(np.zeros((1, 2), dtype=bool), np.array([[0.0, 1.0]]))
    library.record_use(indices.cpu().numpy(), np.ones(indices.shape, dtype=bool))

    assert indices.device.type == "cuda" and scores.device.type == "cuda"
    assert indices.tolist() == [[1, 0, -1]]
    assert all(t.device.type == "cpu" for t in library.state_dict().values() if torch.is_tensor(t))
    assert library[1].uses == 1


# --- library at scale and library management --------------------------------------------------

BACKENDS = ["exact", "hnsw"]
BOTH = {"has_key": True, "door_open": True}


def flag_dict(code: int) -> dict[str, bool]:
    return {"has_key": bool(code & 1), "door_open": bool(code & 2)}


def unit_rows(n: int, dim: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(n, dim, generator=generator), dim=1)


def filled(index: str, n: int = 200, dim: int = 16, **kwargs) -> SkillLibrary:
    """``n`` random skills over the four precondition patterns, with some uses recorded."""
    library = SkillLibrary(embedding_dim=dim, index=index, **{"merge_threshold": 1.0, **kwargs})
    for i, vector in enumerate(unit_rows(n, dim, seed=0)):
        library.add(f"skill_{i}", [i % 4, 1], flag_dict(i % 4), vector)
    rng = np.random.default_rng(1)
    uses = rng.integers(0, library.next_index, size=3 * n)
    library.record_use(uses, rng.random(uses.shape) < 0.5)
    return library


def test_backends_agree_on_filtered_top_k() -> None:
    exact, hnsw = filled("exact"), filled("hnsw")
    generator = torch.Generator().manual_seed(2)
    states = torch.randint(0, 2, (32, 2), generator=generator).bool()
    queries = torch.randn(32, 16, generator=generator)

    for k in (1, 5, 60):
        exact_indices, exact_scores = exact.retrieve(states, queries, k=k)
        hnsw_indices, hnsw_scores = hnsw.retrieve(states, queries, k=k)
        assert torch.equal(exact_indices, hnsw_indices)
        assert torch.allclose(exact_scores, hnsw_scores, atol=1e-5)
    applicable = exact.applicable(states)
    chosen = exact_indices.clamp(min=0)
    assert (applicable.gather(1, chosen) | (exact_indices < 0)).all()


@pytest.mark.parametrize("index", BACKENDS)
def test_merge_on_add_finds_near_duplicates(index) -> None:
    library = filled(index, n=500, merge_threshold=0.95)
    sources = torch.arange(0, 500, 10)
    noise = 0.01 * unit_rows(len(sources), 16, seed=5)

    for source, vector in zip(sources.tolist(), library.embeddings[sources] + noise, strict=True):
        assert library.add("again", [0], NO_KEY, vector) == (source, True)
    assert len(library) == 500
    assert library.stats()["merges"] == len(sources)
    assert library[0].support == 2


def assert_retrieval_matches_brute_force(library: SkillLibrary) -> None:
    """Top-5 for one state and for a batch of every pattern, against scoring every skill."""
    states = torch.tensor([[False, False], [True, False], [False, True], [True, True]] * 3)
    queries = torch.randn(12, 16, generator=torch.Generator().manual_seed(6))
    for rows in (slice(0, 1), slice(None)):
        applicable = library.applicable(states[rows])[:, library.indices]
        sims = torch.nn.functional.normalize(queries[rows], dim=1) @ library.embeddings.T
        scores, order = sims.masked_fill(~applicable, -math.inf).topk(5, dim=1)
        indices, found_scores = library.retrieve(states[rows], queries[rows], k=5)
        assert torch.equal(indices, library.indices[order])
        assert torch.allclose(found_scores, scores, atol=1e-5)


def test_exact_retrieval_follows_adds_evictions_merges_and_loads() -> None:
    library = filled("exact", n=200, capacity=220)
    assert_retrieval_matches_brute_force(library)
    for i, vector in enumerate(unit_rows(40, 16, seed=3)):  # the last 20 evict
        library.add(f"new_{i}", [0], flag_dict(i % 4), vector)
    assert library.stats()["evictions"] == 20
    assert_retrieval_matches_brute_force(library)
    for source in (1, 2, 3):  # near-duplicates, merged away by the sweep
        library.add("again", [0], flag_dict(source % 4), library.embeddings[source] + 0.01)
    library.merge_threshold = 0.99
    assert library.merge_duplicates() == 3
    assert_retrieval_matches_brute_force(library)
    library.load_state_dict(filled("exact", n=120).state_dict())
    assert_retrieval_matches_brute_force(library)


def near_duplicate_state() -> dict:
    """Skills 0 (a) and 2 (close to a, more support), with 1 (b) far from both."""
    library = SkillLibrary(embedding_dim=4, merge_threshold=1.0)
    library.add("a", [0], NO_KEY, [1.0, 0.0, 0.0, 0.0])
    library.add("b", [1], NO_KEY, [0.0, 1.0, 0.0, 0.0])
    library.add("a2", [2], HAS_KEY, [1.0, 0.1, 0.0, 0.0])
    library.record_use([2, 2, 0], [True, True, False])
    return {**library.state_dict(), "support": torch.tensor([1, 1, 3])}


@pytest.mark.parametrize("index", BACKENDS)
def test_merge_duplicates_keeps_the_better_supported_skill(index) -> None:
    library = SkillLibrary(embedding_dim=4, index=index)
    library.load_state_dict(near_duplicate_state())
    library.merge_threshold = 0.9

    assert library.merge_duplicates() == 1

    assert len(library) == 2
    assert library.is_alive([0, 1, 2, -1, 7]).tolist() == [False, True, True, False, False]
    kept = library[2]
    assert (kept.name, kept.successes, kept.uses, kept.support) == ("a2", 2, 3, 4)
    assert kept.last_active == 6
    assert library.stats()["merges"] == 1
    with pytest.raises(IndexError, match="evicted or merged away"):
        library[0]
    library.record_use([0, 2], [True, True])  # the dead index is ignored
    assert library[2].uses == 4
    indices, _ = library.retrieve(torch.tensor([False, False]), torch.tensor([1.0, 0, 0, 0]), k=3)
    assert indices.tolist() == [[1, -1, -1]]
    assert library.merge_duplicates() == 0


@pytest.mark.parametrize("index", BACKENDS)
def test_merge_every_sweeps_before_the_next_add(index) -> None:
    library = SkillLibrary(embedding_dim=4, merge_threshold=1.0, merge_every=2, index=index)
    library.add("a", [0], NO_KEY, [1.0, 0.0, 0.0, 0.0])
    library.add("a2", [1], NO_KEY, [1.0, 0.1, 0.0, 0.0])
    library.merge_threshold = 0.9
    assert len(library) == 2

    assert library.add("c", [2], NO_KEY, [0.0, 0.0, 1.0, 0.0]) == (2, False)

    assert library.indices.tolist() == [0, 2]
    assert library[0].support == 2
    assert library.stats()["merges"] == 1


def used_three_skills(**kwargs) -> SkillLibrary:
    """A full library of 3: skill 0 oldest and 2/3 successful, 1 failed once, 2 never used."""
    library = SkillLibrary(embedding_dim=4, capacity=3, **kwargs)
    for i in range(3):
        library.add(f"skill_{i}", [i], NO_KEY, np.eye(4)[i])
    library.record_use([0, 0, 0], [True, True, False])
    library.record_use([1], [False])
    return library


@pytest.mark.parametrize(("eviction", "victim"), [("fifo", 0), ("lru", 2), ("utility", 1)])
def test_full_library_evicts_by_policy(eviction, victim) -> None:
    library = used_three_skills(eviction=eviction)

    assert library.add("new", [3], NO_KEY, np.eye(4)[3]) == (3, False)

    assert len(library) == 3
    assert library.next_index == 4
    assert set(library.indices.tolist()) == {0, 1, 2, 3} - {victim}
    assert not library.is_alive([victim]).item()
    assert library.stats()["evictions"] == 1
    with pytest.raises(IndexError):
        library[victim]


def test_utility_eviction_forgets_stale_skills() -> None:
    # with a short half-life the never-used skill 2, idle longest, goes first
    library = used_three_skills(eviction="utility", recency_halflife=1.0)
    library.add("new", [3], NO_KEY, np.eye(4)[3])
    assert library.indices.tolist() == [0, 1, 3]


def test_merging_add_into_a_full_library_evicts_nothing() -> None:
    library = used_three_skills()
    assert library.add("again", [3], NO_KEY, [1.0, 0.01, 0.0, 0.0]) == (0, True)
    assert library.stats()["evictions"] == 0


def test_evicted_indices_are_never_reused() -> None:
    library = SkillLibrary(embedding_dim=8, capacity=2, eviction="fifo")
    returned = [library.add(f"s{i}", [i], NO_KEY, np.eye(8)[i])[0] for i in range(5)]

    assert returned == [0, 1, 2, 3, 4]
    assert library.indices.tolist() == [3, 4]
    assert library.applicable(torch.tensor([False, False])).tolist() == [[False] * 3 + [True] * 2]
    assert [record["index"] for record in library.to_records()] == [3, 4]
    assert torch.equal(library.embeddings, torch.eye(8)[3:5])


@pytest.mark.parametrize("index", BACKENDS)
def test_hit_rate_counts_recorded_states_that_got_a_skill(index) -> None:
    library = SkillLibrary(embedding_dim=2, index=index)
    library.add("a", [0], NO_KEY, [1.0, 0.0])
    library.add("b", [1], HAS_KEY, [0.0, 1.0])
    states = torch.tensor([[False, False], [True, False], [True, True]])
    queries = torch.tensor([[1.0, 0.0]] * 3)

    indices, _ = library.retrieve(states, queries, k=2, record=True)
    assert indices.tolist() == [[0, -1], [1, -1], [-1, -1]]
    indices, scores = library.retrieve(states, queries, k=2, min_score=0.5, record=True)
    assert indices.tolist() == [[0, -1], [-1, -1], [-1, -1]]
    assert scores[0, 0] == pytest.approx(1.0)
    assert torch.isneginf(scores[1:]).all()
    library.retrieve(states[:1], k=1, min_score=0.5, record=True)  # rate 0.0 < 0.5: a miss
    library.retrieve(states, queries)  # not recorded (e.g. evaluation)

    stats = library.stats()
    assert (stats["retrievals"], stats["hits"]) == (7, 3)
    assert stats["hit_rate"] == pytest.approx(3 / 7)


@pytest.mark.parametrize("index", BACKENDS)
def test_save_load_round_trip_with_evicted_skills(tmp_path, index) -> None:
    library = filled(index, n=40, capacity=24, merge_every=7)
    assert library.stats()["evictions"] == 16

    loaded = SkillLibrary.load(library.save(tmp_path / "skills.json"))
    restored = SkillLibrary(embedding_dim=16, index=index, capacity=24, merge_every=7)
    restored.load_state_dict(library.state_dict())

    states = torch.tensor([[False, False], [True, False], [False, True], [True, True]])
    queries = unit_rows(4, 16, seed=9)
    for other in (loaded, restored):
        assert_same_library(library, other)
        assert (other.index, other.capacity, other.merge_every) == (index, 24, 7)
    for other in (loaded, restored):
        assert torch.equal(library.retrieve(states, queries)[0], other.retrieve(states, queries)[0])
        assert torch.equal(library.retrieve(states)[0], other.retrieve(states)[0])
    for other in (library, loaded, restored):  # the same next index and the same victim
        assert other.add("next", [0], BOTH, unit_rows(1, 16, seed=10)[0]) == (40, False)
    assert torch.equal(library.indices, loaded.indices)
    assert torch.equal(library.indices, restored.indices)


def test_state_from_one_backend_loads_into_the_other() -> None:
    exact = filled("exact", n=60)
    hnsw = SkillLibrary(embedding_dim=16, index="hnsw")
    hnsw.load_state_dict(exact.state_dict())

    states = torch.randint(0, 2, (8, 2), generator=torch.Generator().manual_seed(3)).bool()
    queries = unit_rows(8, 16, seed=4)
    assert torch.equal(exact.retrieve(states, queries)[0], hnsw.retrieve(states, queries)[0])


def test_load_state_dict_rejects_more_skills_than_capacity() -> None:
    state = random_library(seed=9).state_dict()
    with pytest.raises(SkillLibraryError, match="capacity of 5"):
        SkillLibrary(embedding_dim=8, capacity=5).load_state_dict(state)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"index": "faiss"}, "index"),
        ({"capacity": 0}, "capacity"),
        ({"eviction": "random"}, "eviction"),
        ({"recency_halflife": 0.0}, "recency_halflife"),
        ({"merge_every": -1}, "merge_every"),
    ],
)
def test_constructor_validates_management_arguments(kwargs, name) -> None:
    with pytest.raises(SettingError) as info:
        SkillLibrary(**kwargs)
    assert info.value.key == name


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("memory.index=faiss", "memory.index: 'faiss' is not one of: exact, hnsw"),
        ("memory.capacity=0", "memory.capacity: 0 is out of range"),
        ("memory.eviction=lfu", "memory.eviction: 'lfu' is not one of: utility, lru, fifo"),
        ("memory.recency_halflife=0.0", "memory.recency_halflife: 0.0 is out of range"),
        ("memory.merge_every=-1", "memory.merge_every: -1 is out of range"),
    ],
)
def test_config_checks_management_settings(change, message) -> None:
    check_config(compose_config(["memory.capacity=null"]))
    with pytest.raises(ConfigError, match=re.escape(message)):
        check_config(compose_config([change]))


@pytest.mark.slow
def test_scale_benchmark_quick_run() -> None:
    root = Path(__file__).resolve().parents[1]
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, str(root / "benchmarks" / "library_scale.py"), "--quick"],
        cwd=root, capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert time.perf_counter() - start < 30
    for backend in ("python-loop", "exact", "hnsw", "raw-topk"):
        assert backend in result.stdout
    assert "recall@5" in result.stdout


# --- checks of saved libraries ------------------------------------------------------------------


def known_library() -> SkillLibrary:
    """4 skills: uses [2, 1, 0, 1], successes [1, 1, 0, 1], clock 8, 1 retrieval and 1 hit."""
    library = SkillLibrary(embedding_dim=4, merge_threshold=1.0)
    for i in range(4):
        library.add(f"skill_{i}", [i, 1], HAS_KEY if i % 2 else NO_KEY, np.eye(4)[i])
    library.record_use([0, 0, 1, 3], [True, False, True, True])
    library.retrieve(torch.tensor([False, False]), record=True)
    return library


def skill_edit(row: int, **fields):
    return lambda data: data["skills"][row].update(fields)


def counter_edit(**fields):
    return lambda data: data["counters"].update(fields)


BIG = 10**30
BAD_FILES = {
    # counts: not integers (NaN, inf, 1e30, 1.5, a bool) or out of range
    "nan_count": (skill_edit(1, uses=math.nan), "skills[1].uses: nan is not an integer"),
    "inf_counter": (counter_edit(merges=math.inf), "counters.merges: inf is not an integer"),
    "1e30_counter": (counter_edit(clock=1e30), "counters.clock: 1e+30 is not an integer"),
    "1e12_next_index": (counter_edit(next_index=1e12),
                        "counters.next_index: 1000000000000.0 is not an integer"),
    "fractional_count": (skill_edit(0, support=1.5), "skills[0].support: 1.5 is not an integer"),
    "bool_count": (skill_edit(2, last_active=True),
                   "skills[2].last_active: True is not an integer"),
    "huge_counter": (counter_edit(adds=BIG),
                     f"counters.adds: {BIG} is out of range: must be <= {2**53}"),
    "huge_count": (skill_edit(0, uses=BIG),
                   f"skills[0].uses: {BIG} is out of range: must be <= {2**53}"),
    "negative_uses": (skill_edit(3, uses=-2), "skills[3].uses: -2 is out of range: must be >= 0"),
    "negative_successes": (skill_edit(1, successes=-1),
                           "skills[1].successes: -1 is out of range: must be >= 0"),
    "negative_hits": (counter_edit(hits=-1), "counters.hits: -1 is out of range: must be >= 0"),
    "zero_support": (skill_edit(2, support=0),
                     "skills[2].support: 0 is out of range: must be >= 1"),
    # counts inconsistent with each other
    "successes_above_uses": (skill_edit(0, successes=3),
                             "skills[0].successes: 3 is out of range: must be <= uses (2)"),
    "hits_above_retrievals": (counter_edit(hits=2),
                              "counters.hits: 2 is out of range: must be <= retrievals (1)"),
    "active_after_clock": (skill_edit(1, last_active=9),
                           "skills[1].last_active: 9 is out of range: must be <= clock (8)"),
    # indices
    "next_index_not_above_indices": (
        counter_edit(next_index=3),
        "counters.next_index: 3 is out of range: must be > the largest skill index (3)"),
    "indices_not_increasing": (
        skill_edit(2, index=1),
        "skills[2].index: 1 is out of range: must be > the previous skill's index (1)"),
    "negative_index": (skill_edit(0, index=-1),
                       "skills[0].index: -1 is out of range: must be >= 0"),
    # actions
    "negative_action": (skill_edit(1, actions=[1, -3]),
                        "skills[1].actions[1]: -3 is out of range: must be >= 0"),
    "float_action": (skill_edit(1, actions=[2.0]), "skills[1].actions[0]: 2.0 is not an integer"),
    "huge_action": (skill_edit(1, actions=[10**9]),
                    "skills[1].actions[0]: 1000000000 is out of range: must be <= 65535"),
    "no_actions": (skill_edit(1, actions=[]),
                   "skills[1].actions: no actions: a skill needs at least one"),
    "actions_not_a_list": (skill_edit(1, actions="left"),
                           "skills[1].actions: 'left' is not a list"),
    # embeddings, preconditions, names
    "short_embedding": (skill_edit(2, embedding=[1.0, 0.0]),
                        "skills[2].embedding: [1.0, 0.0] is not a list of 4 numbers"),
    "text_in_embedding": (skill_edit(2, embedding=[1.0, 0.0, "0", 0.0]),
                          "skills[2].embedding: [1.0, 0.0, '0', 0.0] is not a list of 4 numbers"),
    "nan_embedding": (skill_edit(2, embedding=[0.0, math.nan, 1.0, 0.0]),
                      "skills[2].embedding: nan is not finite"),
    "long_embedding": (skill_edit(2, embedding=[2.0, 0.0, 0.0, 0.0]),
                       "skills[2].embedding: norm 2 is out of range: must be 1 (within 0.001)"),
    "number_precondition": (
        skill_edit(0, preconditions={"has_key": 1, "door_open": False}),
        "skills[0].preconditions: {'has_key': 1, 'door_open': False} is not 2 true/false flags"),
    "missing_precondition": (
        skill_edit(0, preconditions={"has_key": True}),
        "skills[0].preconditions: keys ['has_key'] do not match ['has_key', 'door_open']"),
    "number_name": (skill_edit(0, name=7), "skills[0].name: 7 is not a string"),
    # structure and settings
    "skill_not_an_object": (lambda data: data["skills"].__setitem__(2, 5),
                            "skills[2]: 5 is not an object"),
    "missing_counter": (lambda data: data["counters"].pop("clock"),
                        "missing field 'counters.clock'"),
    "huge_embedding_dim": (lambda data: data["settings"].update(embedding_dim=10**9),
                           "settings.embedding_dim: 1000000000 is out of range: must be <= 65536"),
    "fractional_top_k": (lambda data: data["settings"].update(top_k=1.5),
                         "settings.top_k: 1.5 is not an int"),
}


@pytest.mark.parametrize(("edit", "message"), BAD_FILES.values(), ids=BAD_FILES.keys())
def test_load_refuses_a_bad_value_naming_the_file_and_field(tmp_path, edit, message) -> None:
    path = known_library().save(tmp_path / "skills.json")
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))

    with pytest.raises(SkillLibraryError) as info:
        SkillLibrary.load(path)
    assert str(info.value) == f"{path}: {message}"


BAD_STATES = {
    "float_counts": ({"uses": torch.tensor([2.0, 1.0, 0.0, 1.0])},
                     "uses: torch.float32 values are not integers"),
    "negative_count": ({"uses": torch.tensor([2, 1, 0, -2])},
                       "uses[3]: -2 is out of range: must be >= 0"),
    "nan_counter": ({"next_index": math.nan}, "next_index: nan is not an integer"),
    "hits_above_retrievals": ({"hits": 5}, "hits: 5 is out of range: must be <= retrievals (1)"),
    "negative_action": ({"actions": [[0, 1], [-1], [2, 1], [3, 1]]},
                        "actions[1][0]: -1 is out of range: must be >= 0"),
    "nan_embedding": ({"embeddings": torch.eye(4).index_fill(1, torch.tensor([3]), math.nan)},
                      "embeddings[0]: nan is not finite"),
    "embedding_size": ({"embeddings": torch.eye(4)[:, :3]},
                       "embeddings: shape [4, 3], expected [4, 4]"),
    "fewer_names": ({"names": ["a", "b", "c"]}, "indices: shape [4], expected [3]"),
    "number_flags": ({"preconditions": torch.zeros(4, 2, dtype=torch.long)},
                     "preconditions: torch.int64 values are not booleans"),
    "fractional_top_k": ({"top_k": 2.5}, "top_k: 2.5 is not an int"),
}


@pytest.mark.parametrize(("change", "message"), BAD_STATES.values(), ids=BAD_STATES.keys())
def test_load_state_dict_refuses_a_bad_value_naming_the_field(change, message) -> None:
    library = random_library(seed=3, dim=4)

    with pytest.raises(SkillLibraryError) as info:
        library.load_state_dict({**known_library().state_dict(), **change})
    assert str(info.value) == message
    assert_same_library(library, random_library(seed=3, dim=4))  # nothing changed


def tensor_rows(library: SkillLibrary) -> int:
    """The most rows of any tensor the library or its vector index holds."""
    tensors = [t for owner in (library, library._vector_index) for t in vars(owner).values()
               if isinstance(t, torch.Tensor)]
    return max(t.shape[0] for t in tensors)


def test_a_far_next_index_allocates_by_the_skills_held(tmp_path) -> None:
    far = 600_000_000
    path = known_library().save(tmp_path / "skills.json")
    data = json.loads(path.read_text())
    data["counters"]["next_index"] = far
    for skill, index in zip(data["skills"], [7, 5_000, 9_000_000, far - 1], strict=True):
        skill["index"] = index
    path.write_text(json.dumps(data))

    loaded = SkillLibrary.load(path)

    assert tensor_rows(loaded) <= 16  # the initial capacity, not next_index
    assert loaded.indices.tolist() == [7, 5_000, 9_000_000, far - 1]
    assert loaded.is_alive([7, 8, far - 1, far]).tolist() == [True, False, True, False]
    assert loaded[far - 1].name == "skill_3" and loaded[-1].name == "skill_3"
    indices, _ = loaded.retrieve(torch.tensor([True, False]), torch.tensor([0.0, 0.0, 0.0, 1.0]))
    assert indices.tolist() == [[far - 1, 5_000, -1]]
    loaded.record_use([far - 1, 8], [True, True])  # the dead index 8 is ignored
    assert (loaded[far - 1].uses, loaded[far - 1].successes) == (2, 2)
    assert loaded.add("new", [1], NO_KEY, [1.0, 1.0, 0.0, 0.0]) == (far, False)
    assert loaded.next_index == far + 1 and tensor_rows(loaded) <= 16
    restored = SkillLibrary(embedding_dim=4)
    restored.load_state_dict(loaded.state_dict())
    assert_same_library(loaded, restored)


def test_file_round_trip_is_exact(tmp_path) -> None:
    library = filled("exact", n=40, capacity=24, merge_every=7)
    first = library.save(tmp_path / "first.json")
    second = SkillLibrary.load(first).save(tmp_path / "second.json")

    assert first.read_text() == second.read_text()
    assert_same_library(library, SkillLibrary.load(second))


def test_indices_map_to_skills_through_adds_evictions_and_sweeps() -> None:
    library = SkillLibrary(embedding_dim=8, capacity=6, merge_threshold=0.97)
    rng = np.random.default_rng(11)
    for i in range(60):
        if i % 10 == 9:  # a sweep at a lower threshold merges several skills away at once
            library.merge_threshold = 0.3
            library.merge_duplicates()
            library.merge_threshold = 0.97
        library.add(f"s{i}", [i % 7], NO_KEY, rng.normal(size=8))
        alive = library.indices.tolist()
        assert library.is_alive(range(-1, library.next_index + 1)).tolist() == [
            j in alive for j in range(-1, library.next_index + 1)]
        assert [library[j].index for j in alive] == alive
        assert [record["name"] for record in library.to_records()] == [f"s{j}" for j in alive]
    stats = library.stats()
    assert stats["evictions"] > 10 and stats["merges"] > 5
    assert tensor_rows(library) <= 16  # sized by the 6 skills held, not by 60 indices
