"""Rollout storage: rows come back as they were added, in order, across the ring's wraparound,
on numpy and on torch; its state saves and loads."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from procmem.algorithms.rollouts import Field, RolloutStorage

FIELDS = {"obs": Field((2,), np.float32), "action": Field((), np.int64),
          "done": Field((), np.bool_)}


def rows(first: int, count: int) -> dict[str, np.ndarray]:
    """``count`` rows numbered from ``first``: obs ``[n, n + 0.5]``, action ``n``, done when
    ``n`` is odd."""
    n = np.arange(first, first + count)
    return {"obs": np.stack([n, n + 0.5], axis=1), "action": n, "done": n % 2 == 1}


def test_rows_come_back_in_order_across_the_wraparound():
    storage = RolloutStorage(5, FIELDS)
    storage.add(**rows(0, 3))
    assert (storage.size, storage.position) == (3, 3)
    assert storage.get("action").tolist() == [0, 1, 2]
    storage.add(**rows(3, 4))  # 7 rows into 5: rows 0 and 1 are overwritten
    assert (storage.size, storage.position) == (5, 2)
    assert storage["action"].tolist() == [5, 6, 2, 3, 4]  # where they lie in the ring
    assert storage.get("action").tolist() == [2, 3, 4, 5, 6]  # oldest first
    assert storage.get("obs").tolist() == rows(2, 5)["obs"].tolist()
    assert storage.get("done").tolist() == [False, True, False, True, False]
    assert storage["obs"].dtype == np.float32 and storage["done"].dtype == np.bool_


def test_a_batch_larger_than_the_ring_keeps_its_newest_rows():
    storage = RolloutStorage(4, FIELDS)
    storage.add(**rows(0, 3))
    storage.add(**rows(3, 10))
    assert (storage.size, storage.position) == (4, 1)
    assert storage.get("action").tolist() == [9, 10, 11, 12]


def test_a_ring_of_one_update_holds_its_steps_step_major_on_torch():
    """An on-policy rollout: ``n_steps * num_envs`` rows, refilled every update, read as
    ``[n_steps, num_envs]`` without a copy."""
    steps, envs = 3, 2
    storage = RolloutStorage(steps * envs, {"reward": Field((), np.float32),
                                            "logits": Field((4,), np.float32)},
                             torch.device("cpu"))
    for update in range(2):  # the second update overwrites the first
        added = [torch.arange(envs) + 0.1 * t + update for t in range(steps)]
        for t in range(steps):
            storage.add(reward=added[t].double(), logits=torch.full((envs, 4), float(t)))
        rewards = storage.get("reward").view(steps, envs)
        assert rewards.dtype == torch.float32 and torch.equal(rewards, torch.stack(added))
        assert rewards.data_ptr() == storage["reward"].data_ptr()
        assert storage.get("logits")[:, 0].tolist() == [0.0, 0.0, 1.0, 1.0, 2.0, 2.0]


def test_rows_without_every_field_and_empty_rings_are_refused():
    storage = RolloutStorage(4, FIELDS)
    with pytest.raises(KeyError, match="action"):
        storage.add(obs=np.zeros((1, 2)), done=np.zeros(1, dtype=bool))
    with pytest.raises(ValueError, match="at least 1 row"):
        RolloutStorage(0, FIELDS)


def test_samples_are_drawn_from_the_held_rows_only():
    storage = RolloutStorage(100, FIELDS)
    storage.add(**rows(0, 6))
    drawn = storage.sample(np.random.default_rng(0), 500)
    assert set(drawn.tolist()) == set(range(6))
    assert storage.rows(drawn[:3])["action"].tolist() == drawn[:3].tolist()


def test_the_saved_state_is_a_copy_and_loads_to_continue_identically():
    storage = RolloutStorage(5, FIELDS)
    storage.add(**rows(0, 7))
    state = storage.state_dict()
    assert set(state) == {"obs", "action", "done", "position", "size"}
    storage.add(**rows(7, 1))
    assert state["action"].tolist() == [5, 6, 2, 3, 4]  # unchanged by the later add
    restored = RolloutStorage(5, FIELDS)
    restored.load_state_dict(state)
    restored.add(**rows(7, 1))
    for name in FIELDS:
        assert np.array_equal(restored.get(name), storage.get(name))
    with pytest.raises(ValueError, match="holds 5 rows, more than the 4"):
        RolloutStorage(4, FIELDS).load_state_dict(state)
