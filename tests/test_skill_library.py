import json
import math

import numpy as np
import pytest
import torch

from procmem.memory.skill_library import (
    SKILL_LIBRARY_FORMAT_VERSION,
    SkillLibrary,
    SkillLibraryError,
)

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
    with pytest.raises(ValueError, match=name):
        SkillLibrary(**kwargs)


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
    assert library.stats() == {"skills": 0, "skill_uses": 0, "avg_success_rate": 0.0, "merges": 0}
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
    assert [a[i] for i in range(len(a))] == [b[i] for i in range(len(b))]


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
        ({"uses": torch.zeros(12, dtype=torch.long)}, "successes <= uses"),
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
        (lambda data: data.update(format_version=2), "format_version 2"),
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
