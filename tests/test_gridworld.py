import numpy as np
import pytest

from procmem.envs.gridworld import ACTION_NAMES, OBS_FIELDS, GridWorld

UP, DOWN, LEFT, RIGHT, PICKUP, OPEN = range(6)
OPTIMAL = [RIGHT, RIGHT, UP, UP, PICKUP, RIGHT, UP, OPEN, RIGHT, UP]


def field(obs: np.ndarray, name: str) -> np.ndarray:
    return obs[:, OBS_FIELDS.index(name)]


def run(env: GridWorld, actions: list[int]) -> list[tuple]:
    return [env.step(np.full(env.num_envs, a)) for a in actions]


def test_reset_obs_fixed_layout():
    env = GridWorld(num_envs=3)
    obs, info = env.reset(seed=0)
    assert obs.dtype == np.int64 and obs.shape == (3, env.obs_dim)
    assert env.num_actions == 6 and env.action_names == ACTION_NAMES
    np.testing.assert_array_equal(obs, np.tile([0, 0, 0, 0, 2, 2, 3, 3, 4, 4], (3, 1)))
    np.testing.assert_array_equal(env.box_pos, np.tile([1, 3], (3, 1)))
    assert not env.state_flags().any()


def test_goal_in_far_corner_for_larger_grid():
    obs, _ = GridWorld(size=7).reset()
    assert field(obs, "goal_x")[0] == 6 and field(obs, "goal_y")[0] == 6


def test_movement_and_clamping():
    env = GridWorld()
    env.reset()
    obs, reward, *_ = env.step(np.array([DOWN]))
    assert (field(obs, "x")[0], field(obs, "y")[0]) == (0, 0)
    np.testing.assert_allclose(reward, [-0.1])
    obs, *_ = env.step(np.array([LEFT]))
    assert (field(obs, "x")[0], field(obs, "y")[0]) == (0, 0)
    obs, *_ = env.step(np.array([UP]))
    assert (field(obs, "x")[0], field(obs, "y")[0]) == (0, 1)
    obs, *_ = env.step(np.array([RIGHT]))
    assert (field(obs, "x")[0], field(obs, "y")[0]) == (1, 1)
    for _ in range(6):
        obs, *_ = env.step(np.array([RIGHT]))
    assert field(obs, "x")[0] == 4
    for _ in range(6):
        obs, *_ = env.step(np.array([UP]))
    assert field(obs, "y")[0] == 4


def test_door_cell_is_not_an_obstacle():
    env = GridWorld()
    env.reset()
    steps = run(env, [RIGHT, RIGHT, RIGHT, UP, UP, UP])
    obs = steps[-1][0]
    assert (field(obs, "x")[0], field(obs, "y")[0]) == (3, 3)


def test_invalid_pickup_and_open_give_only_step_reward():
    env = GridWorld()
    env.reset()
    # pickup off the key cell, open without the key, open on the key cell
    for a in [PICKUP, OPEN]:
        _, reward, _, _, info = env.step(np.array([a]))
        np.testing.assert_allclose(reward, [-0.1])
        assert not info["key_picked"].any() and not info["door_opened"].any()
    run(env, [RIGHT, RIGHT, UP, UP])
    _, reward, *_ = env.step(np.array([OPEN]))
    np.testing.assert_allclose(reward, [-0.1])
    # open on the door cell without the key
    run(env, [RIGHT, UP])
    _, reward, *_ = env.step(np.array([OPEN]))
    np.testing.assert_allclose(reward, [-0.1])
    assert not env.state_flags().any()


def test_rewards_and_events_along_optimal_path():
    env = GridWorld()
    env.reset()
    steps = run(env, OPTIMAL)
    rewards = np.array([s[1][0] for s in steps])
    expected = [-0.1] * 4 + [0.9] + [-0.1] * 2 + [1.9] + [-0.1, 10.0]
    np.testing.assert_allclose(rewards, expected, rtol=1e-6)
    assert rewards.sum() == pytest.approx(12.1, abs=1e-5)
    assert all(s[1].dtype == np.float32 for s in steps)
    key_picked = [bool(s[4]["key_picked"][0]) for s in steps]
    door_opened = [bool(s[4]["door_opened"][0]) for s in steps]
    success = [bool(s[4]["success"][0]) for s in steps]
    terminated = [bool(s[2][0]) for s in steps]
    assert key_picked == [i == 4 for i in range(10)]
    assert door_opened == [i == 7 for i in range(10)]
    assert success == terminated == [i == 9 for i in range(10)]
    assert not any(s[3][0] for s in steps)
    assert [int(s[4]["episode_steps"][0]) for s in steps] == list(range(1, 11))


def test_second_pickup_and_open_give_no_bonus():
    env = GridWorld()
    env.reset()
    run(env, OPTIMAL[:5])
    _, reward, _, _, info = env.step(np.array([PICKUP]))
    np.testing.assert_allclose(reward, [-0.1])
    assert not info["key_picked"][0]
    run(env, [RIGHT, UP, OPEN])
    _, reward, _, _, info = env.step(np.array([OPEN]))
    np.testing.assert_allclose(reward, [-0.1])
    assert not info["door_opened"][0]
    np.testing.assert_array_equal(env.state_flags(), [[True, True]])


def test_goal_without_open_door_does_not_terminate():
    env = GridWorld()
    env.reset()
    steps = run(env, [RIGHT] * 4 + [UP] * 4)
    assert not any(s[2][0] for s in steps)
    np.testing.assert_allclose(steps[-1][1], [-0.1])


def test_auto_reset_with_final_obs():
    env = GridWorld()
    env.reset()
    *_, (obs, _, terminated, _, info) = run(env, OPTIMAL)
    assert terminated[0]
    np.testing.assert_array_equal(info["final_obs"][0], [4, 4, 1, 1, 2, 2, 3, 3, 4, 4])
    np.testing.assert_array_equal(obs[0], [0, 0, 0, 0, 2, 2, 3, 3, 4, 4])
    assert not env.state_flags().any()
    _, _, _, _, info = env.step(np.array([UP]))
    assert info["episode_steps"][0] == 1


def test_truncation_at_max_steps():
    env = GridWorld(max_steps=3)
    env.reset()
    steps = run(env, [UP, UP, UP, UP])
    assert [bool(s[3][0]) for s in steps] == [False, False, True, False]
    assert not any(s[2][0] for s in steps)
    obs, _, _, _, info = steps[2]
    assert info["episode_steps"][0] == 3
    np.testing.assert_array_equal(info["final_obs"][0, :2], [0, 3])
    np.testing.assert_array_equal(obs[0, :2], [0, 0])


def test_success_on_last_step_is_terminated_not_truncated():
    env = GridWorld(max_steps=10)
    env.reset()
    _, _, terminated, truncated, _ = run(env, OPTIMAL)[-1]
    assert terminated[0] and not truncated[0]


def test_mixed_batch_final_obs_rows_match_obs_for_running_envs():
    env = GridWorld(num_envs=2)
    env.reset()
    for a in OPTIMAL[:-1]:
        env.step(np.array([a, a]))
    obs, reward, terminated, _, info = env.step(np.array([UP, DOWN]))
    np.testing.assert_array_equal(terminated, [True, False])
    np.testing.assert_allclose(reward, [10.0, -0.1])
    np.testing.assert_array_equal(info["final_obs"][1], obs[1])
    np.testing.assert_array_equal(info["success"], [True, False])
    np.testing.assert_array_equal(info["episode_steps"], [10, 10])
    np.testing.assert_array_equal(env.steps, [0, 10])


def test_batch_equals_separate_single_envs():
    rng = np.random.default_rng(1)
    b, t = 4, 200
    actions = rng.integers(6, size=(t, b))
    # env 0 plays the optimal path so that successes are compared too, not only truncations
    actions[: len(OPTIMAL) * 3, 0] = OPTIMAL * 3
    batch = GridWorld(num_envs=b, max_steps=15)
    singles = [GridWorld(max_steps=15) for _ in range(b)]
    batch.reset(seed=0)
    for s in singles:
        s.reset(seed=0)
    for step_actions in actions:
        out = batch.step(step_actions)
        for i, single in enumerate(singles):
            one = single.step(step_actions[i : i + 1])
            for got, want in zip(out[:4], one[:4], strict=True):
                np.testing.assert_array_equal(got[i : i + 1], want)
            for key, want in one[4].items():
                np.testing.assert_array_equal(out[4][key][i : i + 1], want)


def test_state_dict_round_trip_continues_identically():
    rng = np.random.default_rng(2)
    actions = rng.integers(6, size=(60, 3))
    env = GridWorld(num_envs=3, max_steps=20)
    env.reset(seed=5)
    for a in actions[:25]:
        env.step(a)
    state = env.state_dict()
    first = [env.step(a) for a in actions[25:]]
    first_rng_draw = env._rng.random()

    other = GridWorld(num_envs=3, max_steps=20)
    other.load_state_dict(state)
    second = [other.step(a) for a in actions[25:]]
    assert other._rng.random() == first_rng_draw
    for a, b in zip(first, second, strict=True):
        for got, want in zip(a[:4], b[:4], strict=True):
            np.testing.assert_array_equal(got, want)
        for key in a[4]:
            np.testing.assert_array_equal(a[4][key], b[4][key])


def test_state_dict_is_a_deep_copy():
    env = GridWorld(num_envs=2)
    env.reset(seed=0)
    state = env.state_dict()
    env.step(np.array([UP, UP]))
    np.testing.assert_array_equal(state["agent_pos"], [[0, 0], [0, 0]])
    env.load_state_dict(state)
    state["agent_pos"][:] = 3
    np.testing.assert_array_equal(env.agent_pos, [[0, 0], [0, 0]])


def test_load_state_dict_rejects_other_batch_size():
    state = GridWorld(num_envs=2).state_dict()
    with pytest.raises(ValueError, match="agent_pos"):
        GridWorld(num_envs=3).load_state_dict(state)


def test_reset_seed_is_reproducible():
    a, b = GridWorld(), GridWorld()
    a.reset(seed=3)
    b.reset(seed=3)
    assert a._rng.random() == b._rng.random()


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"num_envs": 0}, "num_envs"),
        ({"size": 2}, "size"),
        ({"size": 4}, "size"),
        ({"max_steps": 0}, "max_steps"),
        ({"layout": "maze"}, "layout"),
    ],
)
def test_constructor_validation(kwargs, name):
    with pytest.raises(ValueError, match=name):
        GridWorld(**kwargs)


def test_step_validation():
    env = GridWorld(num_envs=2)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.array([0, 0]))
    env.reset()
    with pytest.raises(ValueError, match="shape"):
        env.step(np.array([0]))
    with pytest.raises(ValueError, match=r"\[0, 6\)"):
        env.step(np.array([0, 6]))
    with pytest.raises(ValueError, match=r"\[0, 6\)"):
        env.step(np.array([-1, 0]))
    with pytest.raises(ValueError, match="integers"):
        env.step(np.array([0.0, 1.0]))
