"""A2C: returns against a hand computation, learning, evaluation and checkpoints."""

import copy
from functools import partial

import numpy as np
import pytest
import torch

from procmem.algorithms.a2c import A2C, n_step_returns
from procmem.envs.gridworld import GridWorld
from procmem.envs.toolenv import ToolEnv
from procmem.models.networks import KeyDoorMLPPolicy, ToolGRUPolicy
from procmem.runtime import NonFiniteLossError
from procmem.settings import SettingError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CPU = torch.device("cpu")


# The tool-use settings: the step count is in the observation, so no bootstrapping at the cut.
TOOL_USE = {"n_steps": 7, "gamma": 1.0, "optimizer": "adam", "max_grad_norm": 1.0,
            "bootstrap_truncated": False}


def make_a2c(seed: int = 0, num_envs: int = 64, **kwargs) -> A2C:
    settings = {**TOOL_USE, "lr": 3e-3, "entropy_coef": 0.01, **kwargs}
    return A2C(ToolEnv(num_envs=num_envs, stages=(0,)), ToolEnv(num_envs=num_envs, stages=(0,)),
               CPU, seed, partial(ToolGRUPolicy, hidden=32), **settings)


def test_n_step_returns_match_a_hand_computed_case():
    # Two envs, three steps; env 0's episode ends at t=1, env 1 runs on.
    rewards = torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.5, 1.0]])
    dones = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 0.0]])
    bootstrap = torch.tensor([10.0, 4.0])
    gamma = 0.5
    expected = torch.tensor([
        [1.0 + 0.5 * 2.0, 0.0 + 0.5 * (0.0 + 0.5 * (1.0 + 0.5 * 4.0))],
        [2.0, 0.0 + 0.5 * (1.0 + 0.5 * 4.0)],
        [0.5 + 0.5 * 10.0, 1.0 + 0.5 * 4.0],
    ])
    assert torch.allclose(n_step_returns(rewards, dones, bootstrap, gamma), expected)


@pytest.mark.slow
def test_a_short_run_learns_stage_zero():
    agent = make_a2c()
    before = agent.evaluate(128)["eval/success_rate_stage0"]
    for _ in range(60):
        metrics = agent.train_iteration()
    after = agent.evaluate(128)["eval/success_rate_stage0"]
    assert before < 0.3
    assert after > 0.9, after
    assert metrics["train/env_steps"] == 60 * 7 * 64
    # Every episode lasts 1 to 7 steps: each env finished between 60 and 420 of them.
    assert 60 * 64 <= metrics["train/episodes"] <= 60 * 7 * 64
    assert {"train/loss_policy", "train/loss_value", "train/entropy", "perf/sps"} <= metrics.keys()


def without_timing(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if not k.startswith("perf/")}


def test_evaluate_is_repeatable_and_changes_nothing():
    agent = make_a2c()
    for _ in range(5):
        agent.train_iteration()
    twin = make_a2c()
    twin.load_state_dict(copy.deepcopy(agent.state_dict()))
    assert agent.evaluate(100) == agent.evaluate(100)
    assert without_timing(agent.train_iteration()) == without_timing(twin.train_iteration())


def make_gridworld_a2c(seed: int) -> A2C:
    """A2C with the feed-forward key/door/goal net on random 5x5 gridworlds."""
    def env() -> GridWorld:
        return GridWorld(num_envs=16, size=5, max_steps=50, layout="random")

    return A2C(env(), env(), CPU, seed, partial(KeyDoorMLPPolicy, hidden=32), n_steps=8,
               gamma=0.99, lr=3e-3)


@pytest.mark.parametrize("make", [make_a2c, make_gridworld_a2c], ids=["toolenv", "gridworld"])
def test_state_dict_round_trip_continues_identically(make):
    agent = make(seed=3)
    for _ in range(4):
        agent.train_iteration()
    restored = make(seed=99)
    restored.load_state_dict(copy.deepcopy(agent.state_dict()))
    for _ in range(3):
        assert without_timing(restored.train_iteration()) == without_timing(
            agent.train_iteration())


def test_the_learning_rate_decays_to_zero_and_carries_on_after_a_resume():
    agent = make_a2c(num_envs=8, lr=1e-3, lr_decay_iterations=4)
    rates = [agent.train_iteration()["train/lr"] for _ in range(2)]
    resumed = make_a2c(num_envs=8, lr=1e-3, lr_decay_iterations=4)
    resumed.load_state_dict(copy.deepcopy(agent.state_dict()))
    rates += [resumed.train_iteration()["train/lr"] for _ in range(3)]
    assert rates == pytest.approx([1e-3, 7.5e-4, 5e-4, 2.5e-4, 0.0])
    weights = copy.deepcopy(resumed.net.state_dict())
    resumed.train_iteration()  # at a rate of 0 the network no longer changes
    assert all(torch.equal(value, resumed.net.state_dict()[name])
               for name, value in weights.items())
    assert {make_a2c(num_envs=8).train_iteration()["train/lr"] for _ in range(2)} == {3e-3}


def test_a2c_refuses_unknown_optimizers_naming_the_setting():
    with pytest.raises(SettingError, match="^optimizer: 'sgd' is not one of: adam, rmsprop$"):
        make_a2c(optimizer="sgd")


def test_explain_spells_out_greedy_episodes_per_stage():
    agent = A2C(ToolEnv(num_envs=8), ToolEnv(num_envs=8), CPU, 0,
                partial(ToolGRUPolicy, hidden=16))
    records = agent.explain(2)
    assert [r["stage"] for r in records] == [0, 0, 1, 1, 2, 2]
    for record in records:
        assert set(record) == {"stage", "expression", "operands", "target", "program",
                               "answer", "correct", "reward"}
        assert record["correct"] == (record["program"].endswith("ANS")
                                     and record["answer"] == record["target"])
        assert set(record["program"].split()) <= {"MUL", "ADD", "SUB", "STO", "RCL", "ANS"}


def eval_actions(agent: A2C, episodes: int) -> tuple[dict[str, float], np.ndarray]:
    """The metrics of ``agent.evaluate(episodes)`` and every action its eval env was sent."""
    sent, step = [], agent.eval_env.step
    agent.eval_env.step = lambda actions: sent.append(np.array(actions)) or step(actions)
    metrics = agent.evaluate(episodes)
    agent.eval_env.step = step
    return metrics, np.concatenate(sent)


def test_eval_policy_greedy_takes_the_argmax_and_sample_draws_repeatably():
    """With a policy whose logits all tie, greedy evaluation always takes action 0, sampled
    evaluation takes them all; a sampled evaluation repeats exactly and leaves training's
    draws alone."""
    def agent(eval_policy: str) -> A2C:
        a2c = A2C(GridWorld(num_envs=4, max_steps=30), GridWorld(num_envs=4, max_steps=30),
                  CPU, 0, partial(KeyDoorMLPPolicy, hidden=8), eval_policy=eval_policy)
        torch.nn.init.zeros_(a2c.net.policy.weight)
        torch.nn.init.zeros_(a2c.net.policy.bias)
        return a2c

    _, greedy = eval_actions(agent("greedy"), 4)
    assert (greedy == 0).all()
    sampled = agent("sample")
    before = sampled.generator.get_state()
    first, actions = eval_actions(sampled, 4)
    assert set(actions.tolist()) == set(range(sampled.eval_env.num_actions))
    again, repeated = eval_actions(sampled, 4)
    assert again == first and np.array_equal(repeated, actions)
    assert torch.equal(sampled.generator.get_state(), before)
    with pytest.raises(SettingError) as info:
        agent("softmax")
    assert info.value.key == "eval_policy"


def test_stages_only_evaluated_are_reported_but_left_out_of_the_mean():
    agent = A2C(ToolEnv(num_envs=8, stages=(0, 1)),
                ToolEnv(num_envs=8, stages=(0, 1), eval_stages=(0, 1, 2)), CPU, 0,
                partial(ToolGRUPolicy, hidden=16))
    metrics = agent.evaluate(16)
    per_stage = [metrics[f"eval/success_rate_stage{stage}"] for stage in (0, 1, 2)]
    assert metrics["eval/success_rate"] == pytest.approx(np.mean(per_stage[:2]))
    assert [r["stage"] for r in agent.explain(1)] == [0, 1, 2]


class TimeLimited:
    """Two envs, reward 0, truncated every second step; final observations are 5s."""

    num_envs, num_actions = 2, 2

    def reset(self, seed: int | None = None) -> tuple[np.ndarray, dict]:
        self.t = 0
        return np.zeros((2, 1), dtype=np.float32), {}

    def step(self, actions: np.ndarray) -> tuple:
        self.t += 1
        cut = np.full(2, self.t % 2 == 0)
        info = {"final_obs": np.full((2, 1), 5.0, dtype=np.float32)}
        obs, zeros = np.zeros((2, 1), dtype=np.float32), np.zeros(2, dtype=np.float32)
        return obs, zeros, np.zeros(2, dtype=bool), cut, info


class ValueOfInput(torch.nn.Module):
    """Uniform policy; value = the observation + 1 (1 before the cut, 6 at the final obs)."""

    def __init__(self, env) -> None:
        super().__init__()
        self.offset = torch.nn.Parameter(torch.ones(1))

    def initial_state(self, batch: int) -> torch.Tensor:
        return torch.zeros(batch, 0)

    def forward(self, obs, state):
        return torch.zeros(len(obs), 2), obs[:, 0] + self.offset, state


@pytest.mark.parametrize(("bootstrap", "expected"), [(False, 1.0), (True, 2.125)])
def test_truncation_bootstraps_from_the_final_observation_only_when_asked(bootstrap, expected):
    """gamma 0.5, two steps, truncated at the second: returns are (0, 0) when truncation ends
    the episode, (0.5 * 0.5 * 6, 0.5 * 6) = (1.5, 3) when it bootstraps V(final obs) = 6;
    values are 1, so the value loss is mean((R - 1)^2): 1.0 or (0.25 + 4) / 2 = 2.125."""
    agent = A2C(TimeLimited(), TimeLimited(), CPU, 0, ValueOfInput, n_steps=2, gamma=0.5,
                bootstrap_truncated=bootstrap)
    assert agent.train_iteration()["train/loss_value"] == pytest.approx(expected)


class Rewarding(TimeLimited):
    """:class:`TimeLimited` with a reward of 2 on every step."""

    def step(self, actions: np.ndarray) -> tuple:
        obs, zeros, terminated, cut, info = super().step(actions)
        return obs, zeros + 2.0, terminated, cut, info


@pytest.mark.parametrize(("scale", "expected"), [(1.0, 2.5), (0.5, 0.125)])
def test_the_loss_sees_scaled_rewards_and_the_log_the_envs(scale, expected):
    """gamma 0.5, rewards 2, two steps ending the episode: returns (3, 2) scaled to (1.5, 1)
    with ``reward_scale=0.5``; values are 1, so the value loss is (4 + 1) / 2 = 2.5 or
    (0.25 + 0) / 2 = 0.125. The logged return is the env's: 2 + 2."""
    agent = A2C(Rewarding(), Rewarding(), CPU, 0, ValueOfInput, n_steps=2, gamma=0.5,
                bootstrap_truncated=False, reward_scale=scale)
    metrics = agent.train_iteration()
    assert metrics["train/loss_value"] == pytest.approx(expected)
    assert metrics["train/episode_return"] == 4.0


def test_envs_without_success_get_no_success_metrics():
    agent = A2C(TimeLimited(), TimeLimited(), CPU, 0, ValueOfInput, n_steps=2)
    metrics = agent.train_iteration()
    assert metrics["train/episode_return"] == 0.0 and "train/success_rate" not in metrics
    assert agent.evaluate(4) == {"eval/episode_return": 0.0, "eval/episode_steps": 2.0}


def test_a_nan_loss_raises_before_any_parameter_changes():
    agent = make_a2c(num_envs=4)
    agent.train_iteration()
    with torch.no_grad():
        agent.net.value.bias.fill_(float("nan"))  # a diverged value head
    before = [p.detach().clone() for p in agent.net.parameters()]
    with pytest.raises(NonFiniteLossError, match="the A2C loss is nan"):
        agent.train_iteration()
    for old, new in zip(before, agent.net.parameters(), strict=True):
        assert torch.allclose(old, new, rtol=0, atol=0, equal_nan=True)


def test_an_inf_gradient_raises_before_any_parameter_changes():
    agent = make_a2c(num_envs=4)
    agent.train_iteration()
    agent.net.value.bias.register_hook(lambda grad: grad * float("inf"))  # finite loss
    before = [p.detach().clone() for p in agent.net.parameters()]
    with pytest.raises(NonFiniteLossError, match="the A2C gradient norm is (inf|nan)"):
        agent.train_iteration()
    for old, new in zip(before, agent.net.parameters(), strict=True):
        assert torch.equal(old, new)
