from collections import deque

import numpy as np
import pytest

from procmem.envs.gridworld import ACTION_NAMES, GridWorld
from procmem.envs.keydoor import BLOCKED, FIELD, FLAG_NAMES, NO_DIRECTION, OBS_FIELDS, position
from procmem.settings import SettingError
from procmem.skills.explorers import OracleExplorer

from helpers import fixed_gridworld

UP, DOWN, LEFT, RIGHT, PICKUP, OPEN = range(6)
OPTIMAL = [RIGHT, RIGHT, UP, UP, PICKUP, RIGHT, UP, OPEN, RIGHT, UP]
# Fixed 5x5 layout rows: x, y, dir, has_key, door_open, key, door, goal, blocked x+ x- y+ y-.
FIXED_START = [0, 0, NO_DIRECTION, 0, 0, 2, 2, 3, 3, 4, 4, 0, 1, 0, 1]
FIXED_SOLVED = [4, 4, NO_DIRECTION, 1, 1, 2, 2, 3, 3, 4, 4, 1, 0, 1, 0]
STEPS = {(1, 0): "xpos", (-1, 0): "xneg", (0, 1): "ypos", (0, -1): "yneg"}


def field(obs: np.ndarray, name: str) -> np.ndarray:
    return obs[:, FIELD[name]]


def run(env: GridWorld, actions: list[int]) -> list[tuple]:
    return [env.step(np.full(env.num_envs, a)) for a in actions]


def test_reset_obs_fixed_layout():
    env = fixed_gridworld(num_envs=3)
    obs, info = env.reset(seed=0)
    assert obs.dtype == np.int64 and obs.shape == (3, env.obs_dim)
    assert env.num_actions == 6 and env.action_names == ACTION_NAMES
    assert env.obs_dim == len(OBS_FIELDS) and env.flag_names == FLAG_NAMES
    np.testing.assert_array_equal(obs, np.tile(FIXED_START, (3, 1)))
    np.testing.assert_array_equal(env.box_pos, np.tile([1, 3], (3, 1)))
    assert not env.state_flags().any() and not env.walls.any()


def test_goal_in_far_corner_for_larger_grid():
    obs, _ = fixed_gridworld(size=7).reset()
    assert field(obs, "goal_x")[0] == 6 and field(obs, "goal_y")[0] == 6


def test_movement_and_clamping():
    env = fixed_gridworld()
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
    env = fixed_gridworld()
    env.reset()
    steps = run(env, [RIGHT, RIGHT, RIGHT, UP, UP, UP])
    obs = steps[-1][0]
    assert (field(obs, "x")[0], field(obs, "y")[0]) == (3, 3)


def test_invalid_pickup_and_open_give_only_step_reward():
    env = fixed_gridworld()
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
    env = fixed_gridworld()
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
    env = fixed_gridworld()
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
    env = fixed_gridworld()
    env.reset()
    steps = run(env, [RIGHT] * 4 + [UP] * 4)
    assert not any(s[2][0] for s in steps)
    np.testing.assert_allclose(steps[-1][1], [-0.1])


def test_auto_reset_with_final_obs():
    env = fixed_gridworld()
    env.reset()
    *_, (obs, _, terminated, _, info) = run(env, OPTIMAL)
    assert terminated[0]
    np.testing.assert_array_equal(info["final_obs"][0], FIXED_SOLVED)
    np.testing.assert_array_equal(obs[0], FIXED_START)
    assert not env.state_flags().any()
    _, _, _, _, info = env.step(np.array([UP]))
    assert info["episode_steps"][0] == 1


def test_truncation_at_max_steps():
    env = fixed_gridworld(max_steps=3)
    env.reset()
    steps = run(env, [UP, UP, UP, UP])
    assert [bool(s[3][0]) for s in steps] == [False, False, True, False]
    assert not any(s[2][0] for s in steps)
    obs, _, _, _, info = steps[2]
    assert info["episode_steps"][0] == 3
    np.testing.assert_array_equal(position(info["final_obs"], "agent")[0], [0, 3])
    np.testing.assert_array_equal(position(obs, "agent")[0], [0, 0])


def test_success_on_last_step_is_terminated_not_truncated():
    env = fixed_gridworld(max_steps=10)
    env.reset()
    _, _, terminated, truncated, _ = run(env, OPTIMAL)[-1]
    assert terminated[0] and not truncated[0]


def test_mixed_batch_final_obs_rows_match_obs_for_running_envs():
    env = fixed_gridworld(num_envs=2)
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
    batch = fixed_gridworld(num_envs=b, max_steps=15)
    singles = [fixed_gridworld(max_steps=15) for _ in range(b)]
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
    env = fixed_gridworld(num_envs=3, max_steps=20)
    env.reset(seed=5)
    for a in actions[:25]:
        env.step(a)
    state = env.state_dict()
    first = [env.step(a) for a in actions[25:]]
    first_rng_draw = env._rng.random()

    other = fixed_gridworld(num_envs=3, max_steps=20)
    other.load_state_dict(state)
    second = [other.step(a) for a in actions[25:]]
    assert other._rng.random() == first_rng_draw
    for a, b in zip(first, second, strict=True):
        for got, want in zip(a[:4], b[:4], strict=True):
            np.testing.assert_array_equal(got, want)
        for key in a[4]:
            np.testing.assert_array_equal(a[4][key], b[4][key])


def test_state_dict_is_a_deep_copy():
    env = fixed_gridworld(num_envs=2)
    env.reset(seed=0)
    state = env.state_dict()
    env.step(np.array([UP, UP]))
    np.testing.assert_array_equal(state["agent_pos"], [[0, 0], [0, 0]])
    env.load_state_dict(state)
    state["agent_pos"][:] = 3
    np.testing.assert_array_equal(env.agent_pos, [[0, 0], [0, 0]])


def test_load_state_dict_rejects_other_batch_size():
    state = fixed_gridworld(num_envs=2).state_dict()
    with pytest.raises(ValueError, match="agent_pos"):
        fixed_gridworld(num_envs=3).load_state_dict(state)


def test_reset_seed_is_reproducible():
    a, b = fixed_gridworld(), fixed_gridworld()
    a.reset(seed=3)
    b.reset(seed=3)
    assert a._rng.random() == b._rng.random()


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"num_envs": 0}, "num_envs"),
        ({"size": 2}, "size"),
        ({"layout": "fixed", "size": 4}, "size"),
        ({"max_steps": 0}, "max_steps"),
        ({"layout": "maze"}, "layout"),
        ({"layout": "random", "size": 17}, "size"),
        ({"layout": "random", "walls": 0.5}, "walls"),
        ({"layout": "random", "walls": -0.1}, "walls"),
        ({"layout": "fixed", "walls": 0.2}, "walls"),
        ({"size": 7.5}, "size"),
    ],
)
def test_constructor_validation_names_the_setting(kwargs, name):
    with pytest.raises(SettingError) as info:
        GridWorld(**kwargs)
    assert info.value.key == name


def test_step_validation():
    env = fixed_gridworld(num_envs=2)
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


# --- observation layout ------------------------------------------------------------------------


def expected_blocked(env: GridWorld) -> np.ndarray:
    """blocked_* of every env, cell by cell: outside the grid or a wall."""
    rows = []
    for b, (x, y) in enumerate(env.agent_pos):
        row = []
        for dx, dy in STEPS:
            nx, ny = x + dx, y + dy
            inside = 0 <= nx < env.size and 0 <= ny < env.size
            row.append(int(not inside or env.walls[b, nx, ny]))
        rows.append(row)
    return np.array(rows)


def test_blocked_fields_order_matches_keydoor():
    assert [OBS_FIELDS[i] for i in BLOCKED] == [f"blocked_{d}" for d in STEPS.values()]


def test_obs_fields_follow_the_state_along_random_rollouts():
    env = GridWorld(num_envs=8, size=7, max_steps=20, layout="random", walls=0.3)
    obs, _ = env.reset(seed=0)
    rng = np.random.default_rng(0)
    for _ in range(60):
        np.testing.assert_array_equal(field(obs, "dir"), NO_DIRECTION)
        np.testing.assert_array_equal(position(obs, "agent"), env.agent_pos)
        np.testing.assert_array_equal(position(obs, "key"), env.key_pos)
        np.testing.assert_array_equal(position(obs, "door"), env.door_pos)
        np.testing.assert_array_equal(position(obs, "goal"), env.goal_pos)
        np.testing.assert_array_equal(obs[:, [FIELD[f] for f in FLAG_NAMES]], env.state_flags())
        np.testing.assert_array_equal(obs[:, BLOCKED], expected_blocked(env))
        obs, *_ = env.step(rng.integers(6, size=env.num_envs))


# --- random layouts ------------------------------------------------------------------------


def layout_cells(env: GridWorld) -> np.ndarray:
    """Start (the current agent cell, right after a reset), key, door, goal: [B, 4, 2]."""
    return np.stack([env.agent_pos, env.key_pos, env.door_pos, env.goal_pos], axis=1)


def connected(free: np.ndarray, start: tuple[int, int]) -> set[tuple[int, int]]:
    """Cells reachable from ``start`` through ``free`` cells, by breadth-first search."""
    seen, queue = {start}, deque([start])
    while queue:
        x, y = queue.popleft()
        for dx, dy in STEPS:
            nx, ny = x + dx, y + dy
            if (0 <= nx < len(free) and 0 <= ny < len(free) and free[nx, ny]
                    and (nx, ny) not in seen):
                seen.add((nx, ny))
                queue.append((nx, ny))
    return seen


def test_random_layout_is_reproducible_by_seed_and_differs_across_seeds():
    def rollout(seed: int) -> list[np.ndarray]:
        env = GridWorld(num_envs=4, size=8, max_steps=5, layout="random", walls=0.2)
        obs, _ = env.reset(seed=seed)
        out = [obs, env.walls.copy()]
        for _ in range(12):  # two auto-resets
            out += [env.step(np.full(4, UP))[0], env.walls.copy()]
        return out

    first, again, other = rollout(3), rollout(3), rollout(4)
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, b) for a, b in zip(first, other, strict=True))


@pytest.mark.parametrize(("size", "walls"), [(3, 0.0), (5, 0.3), (8, 0.0), (8, 0.45), (16, 0.3)])
def test_random_layouts_place_objects_on_distinct_free_cells(size, walls):
    env = GridWorld(num_envs=300, size=size, layout="random", walls=walls)
    env.reset(seed=size)
    cells = layout_cells(env)
    assert ((cells >= 0) & (cells < size)).all()
    flat = cells[..., 0] * size + cells[..., 1]
    assert all(len(set(row)) == 4 for row in flat.tolist())
    b = np.arange(env.num_envs)[:, None]
    assert not env.walls[b, cells[..., 0], cells[..., 1]].any()
    np.testing.assert_array_equal(env.box_pos, -1)
    # The layouts really vary across envs.
    assert len({tuple(row) for row in flat.tolist()}) > 0.9 * env.num_envs


@pytest.mark.parametrize(("size", "walls"), [(5, 0.3), (8, 0.45), (12, 0.25), (16, 0.49)])
def test_walls_cover_the_fraction_of_interior_cells_and_layouts_are_solvable(size, walls):
    env = GridWorld(num_envs=100, size=size, max_steps=3, layout="random", walls=walls)
    env.reset(seed=1)
    expected = round(walls * (size - 2) ** 2)
    for _ in range(3):  # the first layouts and those of one auto-reset
        np.testing.assert_array_equal(env.walls.sum(axis=(1, 2)), expected)
        border = env.walls.copy()
        border[:, 1:-1, 1:-1] = False
        assert not border.any()
        for b, cells in enumerate(layout_cells(env).tolist()):
            reach = connected(~env.walls[b], tuple(cells[0]))
            assert all(tuple(cell) in reach for cell in cells[1:])
        env.step(np.full(env.num_envs, PICKUP))


def test_moves_into_walls_and_off_the_grid_leave_the_agent_in_place():
    env = GridWorld(size=5, layout="random", walls=0.2)
    env.reset(seed=0)
    env.walls[:] = False
    env.walls[0, 2, 1] = True
    env.agent_pos[:] = [1, 1]
    obs, reward, *_ = env.step(np.array([RIGHT]))
    np.testing.assert_array_equal(position(obs, "agent"), [[1, 1]])
    np.testing.assert_allclose(reward, [-0.1])
    assert field(obs, "blocked_xpos")[0] == 1 and field(obs, "blocked_xneg")[0] == 0
    obs, *_ = env.step(np.array([UP]))
    np.testing.assert_array_equal(position(obs, "agent"), [[1, 2]])
    obs, *_ = env.step(np.array([RIGHT]))
    np.testing.assert_array_equal(position(obs, "agent"), [[2, 2]])
    assert field(obs, "blocked_yneg")[0] == 1
    obs, *_ = env.step(np.array([DOWN]))
    np.testing.assert_array_equal(position(obs, "agent"), [[2, 2]])


def test_auto_reset_draws_a_new_layout():
    env = GridWorld(num_envs=50, size=8, max_steps=2, layout="random", walls=0.2)
    env.reset(seed=0)
    before_cells, before_walls = layout_cells(env), env.walls.copy()
    env.step(np.full(50, PICKUP))
    _, _, _, truncated, info = env.step(np.full(50, PICKUP))
    assert truncated.all()
    # The terminal obs still shows the old layout; the new one differs in (nearly) every env.
    np.testing.assert_array_equal(position(info["final_obs"], "goal"), before_cells[:, 3])
    changed = (layout_cells(env) != before_cells).any(axis=(1, 2)) | (
        env.walls != before_walls).any(axis=(1, 2))
    assert changed.all()
    np.testing.assert_array_equal(env.steps, 0)


def copy_env_row(batch: GridWorld, single: GridWorld, i: int) -> None:
    """Give ``single`` env ``i`` of ``batch`` (its layout and state), keeping its own generator."""
    row = {k: v[i : i + 1] for k, v in batch.state_dict().items() if isinstance(v, np.ndarray)}
    single.load_state_dict({**single.state_dict(), **row})


def test_random_batch_steps_like_separate_single_envs():
    """Layouts are drawn batch-wide, so each single env is handed its batch row's layout
    whenever that row starts an episode; everything in between must agree exactly."""
    b, t = 6, 300
    batch = GridWorld(num_envs=b, size=5, max_steps=20, layout="random", walls=0.2)
    singles = [GridWorld(size=5, max_steps=20, layout="random", walls=0.2) for _ in range(b)]
    obs, _ = batch.reset(seed=0)
    for i, single in enumerate(singles):
        single.reset(seed=100 + i)
        copy_env_row(batch, single, i)
    oracle, rng, successes = OracleExplorer(), np.random.default_rng(1), 0
    for _ in range(t):
        # even envs follow the oracle (so successes are compared too), odd envs act at random
        actions = np.where(np.arange(b) % 2 == 0, oracle.act(obs, rng), rng.integers(6, size=b))
        out = batch.step(actions)
        obs, ended = out[0], out[2] | out[3]
        successes += int(out[4]["success"].sum())
        for i, single in enumerate(singles):
            one = single.step(actions[i : i + 1])
            for got, want in zip(out[1:4], one[1:4], strict=True):
                np.testing.assert_array_equal(got[i : i + 1], want)
            for key, want in one[4].items():
                np.testing.assert_array_equal(out[4][key][i : i + 1], want)
            if ended[i]:
                copy_env_row(batch, single, i)
            else:
                np.testing.assert_array_equal(obs[i : i + 1], one[0])
    assert successes > 0


def test_random_layout_distribution_does_not_depend_on_batch_size():
    n, size = 2000, 6
    batch = GridWorld(num_envs=n, size=size, layout="random", walls=0.3)
    batch.reset(seed=0)
    singles = []
    for seed in range(n):
        single = GridWorld(size=size, layout="random", walls=0.3)
        single.reset(seed=seed)
        singles.append((layout_cells(single)[0], single.walls[0]))
    stats = {
        "batch": (layout_cells(batch), batch.walls),
        "singles": (np.stack([c for c, _ in singles]), np.stack([w for _, w in singles])),
    }
    summaries = {}
    for name, (cells, walls) in stats.items():
        distance = np.abs(cells[:, 0] - cells[:, 3]).sum(axis=1)  # start to goal
        summaries[name] = np.concatenate([cells.reshape(n, -1), distance[:, None],
                                          walls[:, 1:-1, 1:-1].reshape(n, -1)], axis=1)
    a, b = summaries["batch"], summaries["singles"]
    stderr = np.sqrt((a.var(axis=0) + b.var(axis=0)) / n)
    assert (np.abs(a.mean(axis=0) - b.mean(axis=0)) <= 4 * stderr + 1e-9).all()


def test_random_state_dict_round_trip_restores_walls_and_continues_identically():
    rng = np.random.default_rng(2)
    actions = rng.integers(6, size=(60, 3))
    env = GridWorld(num_envs=3, size=8, max_steps=10, layout="random", walls=0.3)
    env.reset(seed=5)
    for a in actions[:25]:
        env.step(a)
    state = env.state_dict()
    assert state["walls"].shape == (3, 8, 8) and state["walls"].any()
    first = [(env.step(a), env.walls.copy()) for a in actions[25:]]

    other = GridWorld(num_envs=3, size=8, max_steps=10, layout="random", walls=0.3)
    other.load_state_dict(state)
    np.testing.assert_array_equal(other.walls, state["walls"])
    second = [(other.step(a), other.walls.copy()) for a in actions[25:]]
    for (a, walls_a), (b, walls_b) in zip(first, second, strict=True):
        np.testing.assert_array_equal(walls_a, walls_b)
        for got, want in zip(a[:4], b[:4], strict=True):
            np.testing.assert_array_equal(got, want)
        for key in a[4]:
            np.testing.assert_array_equal(a[4][key], b[4][key])


def test_load_state_dict_rejects_other_size():
    state = GridWorld(size=6, layout="random").state_dict()
    with pytest.raises(ValueError, match="walls"):
        GridWorld(size=5, layout="random").load_state_dict(state)


# --- settings -----------------------------------------------------------------------------------


def test_the_default_is_a_random_8x8_layout_and_the_settings_are_recorded():
    env = GridWorld(walls=0.3)
    assert (env.layout, env.size, env.max_steps) == ("random", 8, 300)
    assert env.settings == {"num_envs": 1, "size": 8, "max_steps": 300, "layout": "random",
                            "walls": 0.3, "step_reward": -0.1, "key_reward": 1.0,
                            "door_reward": 2.0, "goal_reward": 10.0}
