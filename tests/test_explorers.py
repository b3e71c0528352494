import numpy as np
import pytest
import torch

from procmem.agents.explorers import (
    CountExplorer,
    Explorer,
    OracleExplorer,
    RandomExplorer,
    make_explorer,
)
from procmem.agents.procedural import ProceduralMemoryAgent
from procmem.curriculum import FixedCurriculum
from procmem.envs.gridworld import GridWorld
from procmem.envs.keydoor import FIELD, NO_DIRECTION, position


def rollout(env: GridWorld, explorer: Explorer, steps: int, seed: int = 0) -> list[tuple]:
    rng = np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed)
    out = []
    for _ in range(steps):
        actions = explorer.act(obs, rng)
        obs, reward, terminated, truncated, info = env.step(actions)
        explorer.reset(terminated | truncated)
        out.append((actions, reward, terminated, truncated, info))
    return out


def obs_row(x: int, y: int, has_key: int, door_open: int) -> list[int]:
    """A fixed 5x5 layout observation (key (2, 2), door (3, 3), goal (4, 4))."""
    blocked = [x == 4, x == 0, y == 4, y == 0]
    return [x, y, NO_DIRECTION, has_key, door_open, 2, 2, 3, 3, 4, 4, *map(int, blocked)]


def test_oracle_solves_fixed_layout_in_ten_steps():
    env = GridWorld(num_envs=8)
    steps = rollout(env, OracleExplorer(), 10)
    returns = np.sum([s[1] for s in steps], axis=0)
    np.testing.assert_allclose(returns, np.full(8, 12.1), rtol=1e-5)
    assert not any(s[2].any() for s in steps[:-1])
    assert steps[-1][2].all() and steps[-1][4]["success"].all()
    np.testing.assert_array_equal(steps[-1][4]["episode_steps"], np.full(8, 10))
    assert all(s[0].dtype == np.int64 and s[0].shape == (8,) for s in steps)


def test_oracle_action_sequence_from_start():
    steps = rollout(GridWorld(), OracleExplorer(), 10)
    names = [GridWorld.action_names[int(s[0][0])] for s in steps]
    assert names == [
        "move_right",
        "move_right",
        "move_up",
        "move_up",
        "pickup_key",
        "move_right",
        "move_up",
        "open_door",
        "move_right",
        "move_up",
    ]


def test_oracle_walks_back_to_targets():
    # agent at (4, 0) with the key: walks left to the door column, then up
    obs = np.array([obs_row(4, 0, 1, 0), obs_row(1, 4, 0, 0)])
    actions = OracleExplorer().act(obs, np.random.default_rng(0))
    np.testing.assert_array_equal(actions, [2, 3])


def test_oracle_keeps_solving_after_auto_reset():
    env = GridWorld(num_envs=3)
    steps = rollout(env, OracleExplorer(), 30)
    assert sum(int(s[2].sum()) for s in steps) == 9


def test_random_explorer_uses_all_actions():
    obs, _ = GridWorld(num_envs=64).reset()
    actions = RandomExplorer().act(obs, np.random.default_rng(0))
    assert actions.dtype == np.int64 and actions.shape == (64,)
    assert set(actions.tolist()) == set(range(6))


def test_random_explorer_is_reproducible():
    env = GridWorld(num_envs=16)
    first = rollout(env, RandomExplorer(), 40, seed=7)
    second = rollout(env, RandomExplorer(), 40, seed=7)
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
    other = rollout(env, RandomExplorer(), 40, seed=8)
    assert any((a[0] != b[0]).any() for a, b in zip(first, other, strict=True))


def test_random_explorer_validation():
    with pytest.raises(ValueError, match="num_actions"):
        RandomExplorer(num_actions=0)


def test_stateless_explorers_follow_the_protocol():
    for explorer in (RandomExplorer(), OracleExplorer()):
        explorer.reset(np.array([True, False]))
        assert explorer.state_dict() == {}
        explorer.load_state_dict({})


def test_make_explorer_builds_each_kind_for_the_env():
    env = GridWorld(num_envs=3, size=7, layout="random")
    assert isinstance(make_explorer("random", env), RandomExplorer)
    assert isinstance(make_explorer("oracle", env), OracleExplorer)
    count = make_explorer("count", env)
    assert isinstance(count, CountExplorer) and count.counts.shape == (3, 7, 7, 4)
    with pytest.raises(ValueError, match="explorer"):
        make_explorer("psychic", env)


# --- count-based explorer ---------------------------------------------------------------------


def count_explorer(env: GridWorld, **kwargs) -> CountExplorer:
    return CountExplorer(env.num_envs, env.size, env.num_actions, **kwargs)


def cells_visited(explorer_of, seed: int, steps: int = 64, size: int = 8) -> float:
    """Mean number of distinct cells the agent stands on in ``steps`` steps of an empty grid."""
    env = GridWorld(num_envs=16, size=size, max_steps=1000, layout="random")
    explorer, rng = explorer_of(env), np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed)
    seen = np.zeros((env.num_envs, size, size), dtype=bool)
    for _ in range(steps):
        cell = position(obs, "agent")
        seen[np.arange(env.num_envs), cell[:, 0], cell[:, 1]] = True
        obs, *_ = env.step(explorer.act(obs, rng))
    return float(seen.sum(axis=(1, 2)).mean())


def test_count_explorer_covers_an_empty_grid_much_faster_than_random():
    seeds = range(4)
    count = np.mean([cells_visited(count_explorer, s) for s in seeds])
    random = np.mean([cells_visited(lambda env: RandomExplorer(), s) for s in seeds])
    assert count > 2 * random, (count, random)


# blocked_* column that each move (up, down, left, right) runs into
MOVE_BLOCKED = np.array([FIELD[f"blocked_{d}"] for d in ("ypos", "yneg", "xneg", "xpos")])


def test_count_explorer_never_moves_into_blocked_cells():
    env = GridWorld(num_envs=32, size=8, max_steps=40, layout="random", walls=0.4)
    explorer, rng = count_explorer(env), np.random.default_rng(0)
    obs, _ = env.reset(seed=0)
    for _ in range(200):
        actions = explorer.act(obs, rng)
        assert actions.dtype == np.int64 and ((actions >= 0) & (actions < 6)).all()
        moving = actions < 4
        toward = MOVE_BLOCKED[np.minimum(actions, 3)]
        assert not obs[np.arange(len(obs)), toward][moving].any()
        obs, _, terminated, truncated, _ = env.step(actions)
        explorer.reset(terminated | truncated)


def test_count_explorer_interacts_at_the_given_rate():
    env = GridWorld(num_envs=2000, size=8, layout="random")
    obs, _ = env.reset(seed=0)
    actions = count_explorer(env, interact_prob=0.3).act(obs, np.random.default_rng(0))
    assert abs((actions >= 4).mean() - 0.3) < 0.03
    assert set(actions[actions >= 4].tolist()) == {4, 5}
    never = count_explorer(env, interact_prob=0.0).act(obs, np.random.default_rng(0))
    assert (never < 4).all()


def test_count_explorer_counts_per_episode_and_resets_per_env():
    env = GridWorld(num_envs=3, size=6, layout="random")
    explorer, rng = count_explorer(env), np.random.default_rng(0)
    obs, _ = env.reset(seed=0)
    for _ in range(5):
        obs, *_ = env.step(explorer.act(obs, rng))
    np.testing.assert_array_equal(explorer.counts.sum(axis=(1, 2, 3)), [5, 5, 5])
    kept = explorer.counts[[0, 2]].copy()
    explorer.reset(np.array([False, True, False]))
    assert explorer.counts[1].sum() == 0
    np.testing.assert_array_equal(explorer.counts[[0, 2]], kept)


def test_count_explorer_ignores_object_positions():
    env = GridWorld(num_envs=16, size=8, max_steps=30, layout="random", walls=0.2)
    seeing, blind = count_explorer(env), count_explorer(env)
    rng_a, rng_b, scramble = (np.random.default_rng(s) for s in (1, 1, 2))
    objects = [FIELD[f"{name}_{axis}"] for name in ("key", "door", "goal") for axis in "xy"]
    obs, _ = env.reset(seed=0)
    for _ in range(100):
        scrambled = obs.copy()
        scrambled[:, objects] = scramble.integers(-5, 20, size=(len(obs), len(objects)))
        actions = seeing.act(obs, rng_a)
        np.testing.assert_array_equal(blind.act(scrambled, rng_b), actions)
        obs, _, terminated, truncated, _ = env.step(actions)
        for explorer in (seeing, blind):
            explorer.reset(terminated | truncated)


def test_count_explorer_state_dict_round_trip_continues_identically():
    env = GridWorld(num_envs=4, size=8, max_steps=15, layout="random", walls=0.2)
    explorer, rng = count_explorer(env), np.random.default_rng(0)
    obs, _ = env.reset(seed=0)
    for _ in range(20):
        obs, _, terminated, truncated, _ = env.step(explorer.act(obs, rng))
        explorer.reset(terminated | truncated)
    state, env_state, rng_state = explorer.state_dict(), env.state_dict(), rng.bit_generator.state

    def play(explorer: CountExplorer, env: GridWorld, obs: np.ndarray,
             rng: np.random.Generator) -> list[np.ndarray]:
        actions = []
        for _ in range(30):
            actions.append(explorer.act(obs, rng))
            obs, _, terminated, truncated, _ = env.step(actions[-1])
            explorer.reset(terminated | truncated)
        return actions

    saved = state["counts"].copy()
    first = play(explorer, env, obs.copy(), rng)
    np.testing.assert_array_equal(state["counts"], saved)  # a snapshot, not a view
    restored, other_env = count_explorer(env), GridWorld(num_envs=4, size=8, max_steps=15,
                                                         layout="random", walls=0.2)
    restored.load_state_dict(state)
    other_env.load_state_dict(env_state)
    other_rng = np.random.default_rng()
    other_rng.bit_generator.state = rng_state
    second = play(restored, other_env, obs.copy(), other_rng)
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(restored.counts, explorer.counts)
    with pytest.raises(ValueError, match="counts"):
        CountExplorer(2, 8).load_state_dict(state)


def test_count_explorer_validation():
    with pytest.raises(ValueError, match="num_envs"):
        CountExplorer(0, 5)
    with pytest.raises(ValueError, match="size"):
        CountExplorer(1, 0)
    with pytest.raises(ValueError, match="num_actions"):
        CountExplorer(1, 5, num_actions=4)
    with pytest.raises(ValueError, match="interact_prob"):
        CountExplorer(1, 5, interact_prob=1.5)


def count_agent(seed: int = 0) -> ProceduralMemoryAgent:
    def env() -> GridWorld:
        return GridWorld(num_envs=3, size=6, max_steps=30, layout="random", walls=0.2)

    return ProceduralMemoryAgent(
        env=env(), eval_env=env(), memory=None, curriculum=FixedCurriculum(0),
        device=torch.device("cpu"), seed=seed, explorer="count", skill_length=5,
        min_success_steps=3, retrieval_threshold=0.9,
    )


def test_agent_resets_counts_per_episode_and_resumes_the_count_explorer():
    agent = count_agent()
    for _ in range(2):
        agent.train_iteration()
        # the counts cover exactly the steps of each env's current episode
        np.testing.assert_array_equal(agent.explorer.counts.sum(axis=(1, 2, 3)),
                                      agent.stream.length)
    state = agent.state_dict()
    np.testing.assert_array_equal(state["explorer"]["counts"], agent.explorer.counts)
    restored = count_agent()
    restored.load_state_dict(state)
    for _ in range(2):
        assert restored.train_iteration() == agent.train_iteration()
    np.testing.assert_array_equal(restored.explorer.counts, agent.explorer.counts)
    before = agent.explorer.counts.copy()
    assert agent.evaluate(2) == agent.evaluate(2)
    np.testing.assert_array_equal(agent.explorer.counts, before)
