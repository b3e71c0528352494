"""A2C with the feed-forward key/door/goal actor-critic: shapes on the gridworld and MiniGrid,
learning on the vectorised gridworld and evaluation without stages (checkpoints: test_a2c)."""

from functools import partial

import pytest
import torch

from procmem.algorithms.a2c import A2C
from procmem.envs.gridworld import GridWorld
from procmem.models.networks import KeyDoorMLPPolicy
from procmem.models.observations import as_tensors

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CPU = torch.device("cpu")


def gridworld(num_envs: int = 16, **kwargs) -> GridWorld:
    return GridWorld(num_envs=num_envs, **{"size": 5, "max_steps": 50, "layout": "random",
                                           **kwargs})


def make_a2c(seed: int = 0, num_envs: int = 16, env: dict | None = None, **kwargs) -> A2C:
    settings = {"n_steps": 8, "gamma": 0.99, "lr": 3e-3, "entropy_coef": 0.01,
                "optimizer": "adam", "max_grad_norm": 1.0, "bootstrap_truncated": False, **kwargs}
    return A2C(gridworld(num_envs, **(env or {})), gridworld(num_envs, **(env or {})), CPU, seed,
               partial(KeyDoorMLPPolicy, hidden=32), **settings)


def check_outputs(env, batch: int) -> None:
    net = KeyDoorMLPPolicy(env, hidden=16)
    obs, _ = env.reset(seed=0)
    state = net.initial_state(batch)
    logits, values, next_state = net(as_tensors(obs, CPU), state)
    assert logits.shape == (batch, env.num_actions)
    assert values.shape == (batch,)
    assert next_state.shape[0] == batch
    assert torch.isfinite(logits).all() and torch.isfinite(values).all()
    # What A2C does to a state where episodes end works on the feed-forward net's state.
    assert (next_state * torch.ones(batch, 1)).shape == next_state.shape


def test_outputs_on_the_gridworld():
    check_outputs(gridworld(num_envs=5), 5)


def test_outputs_on_minigrid():
    pytest.importorskip("minigrid")
    from procmem.envs.minigrid import MiniGridEnv

    check_outputs(MiniGridEnv(num_envs=3), 3)


def test_features_put_offsets_in_the_agents_frame():
    """MiniGrid headings: 0 +x, 1 +y, 2 -x, 3 -y; right of heading d is heading d + 1."""
    env = gridworld(num_envs=1)
    net = KeyDoorMLPPolicy(env, hidden=8)
    # Agent at (1, 1) facing +y; key at (1, 3): two cells ahead. Door (3, 1): to the left.
    obs = torch.tensor([[1, 1, 1, 0, 0, 1, 3, 3, 1, 4, 4, 0, 0, 0, 0]])
    features = net.features(obs)[0]
    key, door = features[12:19], features[19:26]
    assert key.tolist() == pytest.approx([1.0, 0.25, 0.75, 0.0, 0.5, 0.5, 0.0])
    assert door.tolist() == pytest.approx([1.0, 0.75, 0.25, 0.5, 0.0, 0.0, -0.5])
    # Without a heading (absolute moves) the heading one-hot and the frame offsets are zero.
    obs[0, 2] = -1
    features = net.features(obs)[0]
    assert features[2:6].abs().sum() == 0
    assert features[17:19].abs().sum() == 0 and features[24:26].abs().sum() == 0


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_short_run_learns_the_fixed_gridworld(seed):
    """The original layout, rewards for key (1), door (2) and goal (10) and no step penalty:
    a random policy almost never finishes in 50 steps; A2C soon solves nearly every episode
    it samples (success over the last 100 finished episodes)."""
    agent = make_a2c(seed=seed, num_envs=64, env={"layout": "fixed", "step_reward": 0.0})
    for _ in range(13):  # 104 steps: every env has ended two 50-step episodes, 128 in all
        early = agent.train_iteration()
    assert early["train/success_rate"] < 0.3, early
    for _ in range(600):
        metrics = agent.train_iteration()
        if metrics["train/success_rate"] >= 0.9:
            break
    assert metrics["train/success_rate"] >= 0.9, metrics
    assert metrics["train/episode_return"] > 10.0, metrics
    assert metrics["train/env_steps"] % (8 * 64) == 0


def test_evaluate_without_stages_reports_success_reward_and_steps():
    agent = make_a2c()
    metrics = agent.evaluate(20)
    assert set(metrics) == {"eval/success_rate", "eval/episode_return", "eval/episode_steps"}
    assert metrics["eval/success_rate"] == 0.0  # untrained: no solved episode to count
    assert 0.0 <= metrics["eval/success_rate"] <= 1.0
    assert 1 <= metrics["eval/episode_steps"] <= 50
    # Rewards: -0.1 a step, +1 key, +2 door, 10 on reaching the goal.
    assert -0.1 * 50 <= metrics["eval/episode_return"] <= 1.0 + 2.0 + 10.0
    assert agent.evaluate(20) == metrics


@pytest.mark.slow
@pytest.mark.parametrize(("bootstrap", "learns"), [(False, False), (True, True)])
def test_with_a_step_penalty_learning_needs_bootstrapped_truncation(bootstrap, learns):
    """The fixed gridworld with its -0.1 step penalty: the observation does not show the time
    left, so cutting returns at the 50-step limit makes timing out look like a good end; A2C
    then never learns. Bootstrapping V(final obs) at truncation, it solves the task."""
    agent = make_a2c(seed=0, num_envs=64, env={"layout": "fixed"}, bootstrap_truncated=bootstrap)
    best = 0.0
    for _ in range(400):
        best = max(best, agent.train_iteration().get("train/success_rate", 0.0))
    assert (best >= 0.9) == learns, best


@pytest.mark.slow
def test_evaluate_reports_the_steps_of_the_solved_episodes():
    agent = make_a2c(num_envs=64, env={"layout": "fixed"}, bootstrap_truncated=True)
    for _ in range(400):
        agent.train_iteration()
    metrics = agent.evaluate(64)
    assert metrics["eval/success_rate"] > 0.5
    assert 10 <= metrics["eval/solved_steps"] <= metrics["eval/episode_steps"]
