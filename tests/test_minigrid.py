"""The MiniGrid adapter: obs read from the env state in the keydoor layout, events, same-step
auto-reset, seeding, batching and exact state round trips."""

from __future__ import annotations

import copy
import sys
import warnings
from collections import deque

import numpy as np
import pytest
import torch

pytest.importorskip("minigrid")

from procmem.envs.keydoor import FIELD, OBS_FIELDS  # noqa: E402
from procmem.envs.minigrid import MISSING_EXTRA, MiniGridEnv  # noqa: E402
from procmem.safe_load import load_data_file  # noqa: E402
from procmem.settings import SettingError  # noqa: E402

from helpers import checkpoint_round_trip  # noqa: E402  (the state as a checkpoint holds it)

DOORKEY = "MiniGrid-DoorKey-5x5-v0"
LEFT, RIGHT, FORWARD, PICKUP, TOGGLE = 0, 1, 2, 3, 5
STEP = {0: (1, 0), 1: (0, 1), 2: (-1, 0), 3: (0, -1)}  # MiniGrid agent_dir -> (dx, dy)


def _cells(state) -> dict[str, tuple[int, int]]:
    cells = {}
    for j in range(state.grid.height):
        for i in range(state.grid.width):
            cell = state.grid.get(i, j)
            if cell is not None and cell.type in ("key", "door", "goal"):
                cells.setdefault(cell.type, (i, j))
    return cells


def _free(state, x: int, y: int) -> bool:
    if not (0 <= x < state.grid.width and 0 <= y < state.grid.height):
        return False
    cell = state.grid.get(x, y)
    return cell is None or cell.type == "goal" or (cell.type == "door" and cell.is_open)


def expected_row(state, start_cells: dict[str, tuple[int, int]]) -> np.ndarray:
    """The obs row of an unwrapped MiniGrid env, built independently of the adapter."""
    x, y = (int(v) for v in state.agent_pos)
    door = state.grid.get(*start_cells["door"]) if "door" in start_cells else None
    values = {
        "x": x, "y": y, "dir": int(state.agent_dir),
        "has_key": state.carrying is not None and state.carrying.type == "key",
        "door_open": door is not None and door.is_open,
        "blocked_xpos": not _free(state, x + 1, y), "blocked_xneg": not _free(state, x - 1, y),
        "blocked_ypos": not _free(state, x, y + 1), "blocked_yneg": not _free(state, x, y - 1),
    }
    for name in ("key", "door", "goal"):
        values[f"{name}_x"], values[f"{name}_y"] = start_cells.get(name, (-1, -1))
    return np.array([values[field] for field in OBS_FIELDS], dtype=np.int64)


def plan(state, target: tuple[int, int], onto: bool) -> list[int]:
    """Shortest left/right/forward sequence to face ``target`` (or step onto it)."""
    start = (*(int(v) for v in state.agent_pos), int(state.agent_dir))
    parents = {start: None}
    queue = deque([start])
    while queue:
        x, y, d = node = queue.popleft()
        dx, dy = STEP[d]
        if (x, y) == target if onto else (x + dx, y + dy) == target:
            actions = []
            while parents[node] is not None:
                node, action = parents[node]
                actions.append(action)
            return actions[::-1]
        moves = [((x, y, (d - 1) % 4), LEFT), ((x, y, (d + 1) % 4), RIGHT)]
        if _free(state, x + dx, y + dy):
            moves.append(((x + dx, y + dy, d), FORWARD))
        for nxt, action in moves:
            if nxt not in parents:
                parents[nxt] = (node, action)
                queue.append(nxt)
    raise AssertionError(f"no path to {target}")


def random_actions(env: MiniGridEnv, steps: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(env.num_actions, size=(steps, env.num_envs))


def rollout(env: MiniGridEnv, actions: np.ndarray) -> list:
    return [env.step(a) for a in actions]


def assert_same(a: list, b: list) -> None:
    for (obs_a, r_a, te_a, tr_a, info_a), (obs_b, r_b, te_b, tr_b, info_b) in zip(a, b,
                                                                                 strict=True):
        for x, y in ((obs_a, obs_b), (r_a, r_b), (te_a, te_b), (tr_a, tr_b)):
            np.testing.assert_array_equal(x, y)
        assert info_a.keys() == info_b.keys()
        for key in info_a:
            np.testing.assert_array_equal(info_a[key], info_b[key])


def test_interface():
    env = MiniGridEnv(env_id=DOORKEY, num_envs=2, max_steps=30)
    assert (env.num_envs, env.size, env.max_steps, env.obs_dim) == (2, 5, 30, len(OBS_FIELDS))
    assert env.num_actions == len(env.action_names) == 7
    assert env.action_names[FORWARD] == "forward" and env.flag_names == ("has_key", "door_open")
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.zeros(2, dtype=np.int64))
    obs, info = env.reset(seed=0)
    assert obs.dtype == np.int64 and obs.shape == (2, env.obs_dim) and info == {}
    assert not env.state_flags().any()
    with pytest.raises(ValueError):
        env.step(np.array([0, 7]))
    obs, reward, terminated, truncated, info = env.step(np.array([FORWARD, LEFT]))
    assert reward.dtype == np.float32 and terminated.dtype == truncated.dtype == bool
    for key in ("key_picked", "door_opened", "success"):
        assert info[key].dtype == bool and info[key].shape == (2,)
    np.testing.assert_array_equal(info["episode_steps"], [1, 1])


@pytest.mark.parametrize("env_id", [DOORKEY, "MiniGrid-DoorKey-8x8-v0"])
def test_obs_matches_env_state(env_id):
    env = MiniGridEnv(env_id=env_id, num_envs=4)
    obs, _ = env.reset(seed=3)
    starts = [_cells(e.unwrapped) for e in env.envs]
    for i, e in enumerate(env.envs):
        assert {"key", "door", "goal"} <= starts[i].keys()
        np.testing.assert_array_equal(obs[i], expected_row(e.unwrapped, starts[i]))
    for actions in random_actions(env, 40, seed=1):
        obs, _, terminated, truncated, _ = env.step(actions)
        assert not (terminated | truncated).any()
        for i, e in enumerate(env.envs):
            np.testing.assert_array_equal(obs[i], expected_row(e.unwrapped, starts[i]))
            np.testing.assert_array_equal(env.state_flags()[i], obs[i, [FIELD["has_key"],
                                                                         FIELD["door_open"]]])


def test_scripted_solve_fires_events_in_order_and_auto_resets():
    env = MiniGridEnv(env_id=DOORKEY)
    obs, _ = env.reset(seed=5)
    state = env.envs[0].unwrapped
    cells = _cells(state)
    phases = [(cells["key"], False, PICKUP), (cells["door"], False, TOGGLE),
              (cells["goal"], True, None)]
    events, steps = [], 0
    for target, onto, last in phases:
        actions = plan(state, target, onto) + ([last] if last is not None else [])
        for action in actions:
            obs, reward, terminated, truncated, info = env.step(np.array([action]))
            steps += 1
            events += [(steps, k) for k in ("key_picked", "door_opened", "success") if info[k][0]]
    assert [k for _, k in events] == ["key_picked", "door_opened", "success"]
    assert events[-1][0] == steps
    assert terminated[0] and not truncated[0]
    assert reward[0] == pytest.approx(1 - 0.9 * steps / env.max_steps)
    assert info["episode_steps"][0] == steps
    final = info["final_obs"][0]
    assert (final[FIELD["x"]], final[FIELD["y"]]) == cells["goal"]
    assert final[FIELD["has_key"]] == final[FIELD["door_open"]] == 1
    # The returned row is the next episode's first obs, drawn from the continuing generator.
    assert state.step_count == 0
    np.testing.assert_array_equal(obs[0], expected_row(state, _cells(state)))
    assert not env.state_flags().any()


def test_truncation_auto_resets_with_final_obs():
    env = MiniGridEnv(env_id=DOORKEY, num_envs=2, max_steps=5)
    start, _ = env.reset(seed=0)
    for _ in range(5):
        obs, reward, terminated, truncated, info = env.step(np.full(2, LEFT))
    assert truncated.all() and not terminated.any() and not info["success"].any()
    assert not reward.any()
    np.testing.assert_array_equal(info["episode_steps"], [5, 5])
    np.testing.assert_array_equal(info["final_obs"][:, FIELD["dir"]],
                                  (start[:, FIELD["dir"]] - 5) % 4)
    for i, e in enumerate(env.envs):
        assert e.unwrapped.step_count == 0
        np.testing.assert_array_equal(obs[i], expected_row(e.unwrapped, _cells(e.unwrapped)))


def test_batch_equals_single_adapters_seeded_s_plus_i():
    batch = MiniGridEnv(env_id=DOORKEY, num_envs=3, max_steps=12)
    singles = [MiniGridEnv(env_id=DOORKEY, num_envs=1, max_steps=12) for _ in range(3)]
    obs, _ = batch.reset(seed=7)
    for i, single in enumerate(singles):
        np.testing.assert_array_equal(obs[i:i + 1], single.reset(seed=7 + i)[0])
    actions = random_actions(batch, 60, seed=2)
    together = rollout(batch, actions)
    apart = [rollout(single, actions[:, i:i + 1]) for i, single in enumerate(singles)]
    for t, (obs, reward, terminated, truncated, info) in enumerate(together):
        for i in range(3):
            s_obs, s_reward, s_term, s_trunc, s_info = apart[i][t]
            np.testing.assert_array_equal(obs[i:i + 1], s_obs)
            np.testing.assert_array_equal(reward[i:i + 1], s_reward)
            np.testing.assert_array_equal(terminated[i:i + 1], s_term)
            np.testing.assert_array_equal(truncated[i:i + 1], s_trunc)
            for key in info:
                np.testing.assert_array_equal(info[key][i:i + 1], s_info[key])
    assert sum(t[3].sum() for t in together) >= 3  # auto-resets happened


def test_seeding_is_reproducible():
    a, b, c = (MiniGridEnv(env_id=DOORKEY, num_envs=4, max_steps=10) for _ in range(3))
    actions = random_actions(a, 40, seed=0)
    first = a.reset(seed=11)[0]
    np.testing.assert_array_equal(first, b.reset(seed=11)[0])
    assert_same(rollout(a, actions), rollout(b, actions))
    first_c = c.reset(seed=12)[0]
    assert not np.array_equal(first, first_c)


@pytest.mark.parametrize("env_id", [DOORKEY, "MiniGrid-MultiRoom-N2-S4-v0",
                                    "MiniGrid-KeyCorridorS3R1-v0"])
def test_state_dict_round_trip_continues_identically(env_id, tmp_path):
    """Through a checkpoint file, also for tasks holding objects of their own (MultiRoom's
    rooms, KeyCorridor's room grid): the state is plain data."""
    env = MiniGridEnv(env_id=env_id, num_envs=3, max_steps=9)
    env.reset(seed=4)
    rollout(env, random_actions(env, 13, seed=5))  # episodes begun at a seeded and an auto reset
    state = checkpoint_round_trip(env.state_dict(), tmp_path / "env.pt")
    actions = random_actions(env, 40, seed=6)
    expected = rollout(env, actions)

    restored = MiniGridEnv(env_id=env_id, num_envs=3, max_steps=9)
    restored.load_state_dict(state)
    assert_same(rollout(restored, actions), expected)
    with pytest.raises(ValueError, match="envs"):
        MiniGridEnv(env_id=env_id, num_envs=2).load_state_dict(state)


# What the unwrapped env's attributes held that were not episode state, in earlier versions.
EARLIER_STATIC = frozenset({"action_space", "observation_space", "spec", "window", "clock"})


def test_a_state_of_an_earlier_version_still_loads_and_continues_identically(tmp_path):
    env = MiniGridEnv(env_id=DOORKEY, num_envs=3, max_steps=9)
    env.reset(seed=4)
    rollout(env, random_actions(env, 13, seed=5))
    earlier = {"envs": [copy.deepcopy({k: v for k, v in vars(e.unwrapped).items()
                                       if k not in EARLIER_STATIC}) for e in env.envs],
               "obs": env.state_dict()["obs"], "needs_reset": False}
    torch.save(earlier, tmp_path / "earlier.pt")
    actions = random_actions(env, 3, seed=6)  # within the episodes in progress
    expected = rollout(env, actions)

    restored = MiniGridEnv(env_id=DOORKEY, num_envs=3, max_steps=9)
    restored.load_state_dict(load_data_file(tmp_path / "earlier.pt"))
    assert_same(rollout(restored, actions), expected)
    # Episodes that began before that checkpoint cannot be replayed: they restart.
    with pytest.warns(UserWarning, match=r"envs \[0, 1, 2\] continued from a checkpoint of an "
                                         "earlier version"):
        MiniGridEnv(env_id=DOORKEY, num_envs=3, max_steps=9).load_state_dict(
            restored.state_dict())
    rollout(restored, random_actions(env, 9, seed=7))  # every episode ended and began again
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        MiniGridEnv(env_id=DOORKEY, num_envs=3, max_steps=9).load_state_dict(
            restored.state_dict())


def test_task_without_key_or_door():
    env = MiniGridEnv(env_id="MiniGrid-Empty-5x5-v0", num_envs=2)
    obs, _ = env.reset(seed=0)
    for name in ("key_x", "key_y", "door_x", "door_y"):
        assert (obs[:, FIELD[name]] == -1).all()
    assert (obs[:, FIELD["goal_x"]] >= 0).all()
    for actions in random_actions(env, 30, seed=0):
        obs, *_, info = env.step(actions)
        assert not env.state_flags().any()
        assert not (info["key_picked"] | info["door_opened"]).any()
        for i, e in enumerate(env.envs):
            np.testing.assert_array_equal(obs[i], expected_row(e.unwrapped, _cells(e.unwrapped)))


def test_missing_minigrid_raises_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "minigrid", None)  # makes `import minigrid` fail
    with pytest.raises(ImportError) as info:
        MiniGridEnv(env_id=DOORKEY)
    assert str(info.value) == MISSING_EXTRA
    assert "pip install -e '.[minigrid]'" in MISSING_EXTRA


@pytest.mark.parametrize(("values", "key"), [
    ({"env_id": "CartPole-v1"}, "env_id"),
    ({"env_id": ""}, "env_id"),
    ({"num_envs": 0}, "num_envs"),
    ({"max_steps": 0}, "max_steps"),
])
def test_bad_settings_name_the_setting_before_minigrid_is_touched(values, key):
    with pytest.raises(SettingError) as info:
        MiniGridEnv(**values)
    assert info.value.key == key
