"""Skills as options for A2C: the options' returns, masking, and what a run with them does."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from procmem.algorithms.a2c import A2C
from procmem.algorithms.option_rollouts import choose, masked_logits
from procmem.algorithms.skill_kit import POLICY_DEFAULTS, SkillKit
from procmem.algorithms.skill_options import NUM_SKILL_ACTIONS, SkillOptions, option_returns
from procmem.envs.gridworld import GridWorld
from procmem.models.networks import KeyDoorMLPPolicy
from procmem.skills.library import SkillLibrary

CPU = torch.device("cpu")
GAMMA = 0.9
# The fixed layout's key is at (2, 2), the agent starts at (0, 0): right, right, up, up, pickup.
TO_THE_KEY = [3, 3, 0, 0, 4]


def test_option_returns_match_a_hand_computed_example():
    # env 0: a primitive (G=1), a 3-step skill (rewards 0, 0, 2), a 2-step skill ending its
    # episode (G=5), then a primitive in the next episode, cut there (bootstrap 10).
    # env 1: one 4-step skill (G=3), cut after it (bootstrap 4); its second row is padding.
    rewards = torch.tensor([[1.0, 3.0], [GAMMA ** 2 * 2, 0.0], [5.0, 0.0], [0.5, 0.0]])
    discounts = torch.tensor([[GAMMA, GAMMA ** 4], [GAMMA ** 3, 1.0], [GAMMA ** 2, 1.0],
                              [GAMMA, 1.0]])
    dones = torch.tensor([[0.0, 0.0], [0.0, 0.0], [1.0, 0.0], [0.0, 0.0]])
    valid = torch.tensor([[True, True], [True, False], [True, False], [True, False]])
    returns = option_returns(rewards, discounts, dones, valid, torch.tensor([10.0, 4.0]))
    r3 = 0.5 + GAMMA * 10.0  # bootstrap at the cut, one step on
    r2 = 5.0  # the episode ended inside the skill: nothing after it counts
    r1 = GAMMA ** 2 * 2 + GAMMA ** 3 * r2
    r0 = 1.0 + GAMMA * r1
    assert returns[:, 0].tolist() == pytest.approx([r0, r1, r2, r3])
    assert returns[0, 1].item() == pytest.approx(3.0 + GAMMA ** 4 * 4.0)


def _options(skill_kind: str = "open_loop", num_envs: int = 2) -> tuple[SkillOptions, GridWorld]:
    env = GridWorld(num_envs=num_envs, layout="fixed", size=5)
    library = SkillLibrary(embedding_dim=32)
    kit = SkillKit(library, env, CPU, 0, closed_loop=skill_kind == "closed_loop",
                   **POLICY_DEFAULTS)
    return SkillOptions(kit, env, GAMMA, step_budget=20, learn=True), env


def test_a_skill_is_one_decision_whose_gain_discounts_every_step_of_it():
    options, env = _options()
    obs, _ = env.reset(seed=0)
    options.kit.memory.add("acquire_key", TO_THE_KEY, {"has_key": False, "door_open": False},
                           options.kit.embed(obs[:1], np.array([0]))[0])
    rows = np.arange(2)
    mask = options.masks(obs, rows)
    primitive = env.num_actions
    assert mask[:, :primitive].all()
    assert mask[:, primitive].all() and not mask[:, primitive + 1:].any()
    options.begin(rows, np.array([primitive, 1]))  # env 0 runs the skill, env 1 moves down

    twin = GridWorld(num_envs=1, layout="fixed", size=5)  # the same steps, for the rewards
    twin.reset(seed=0)
    expected_rewards = [twin.step(np.array([a]))[1][0] for a in TO_THE_KEY]
    outcomes = []
    for _ in TO_THE_KEY:
        obs, outcome, _ = options.step(obs)
        outcomes.append(outcome)
        if options.idle()[1]:
            options.masks(obs[1:], np.array([1]))
            options.begin(np.array([1]), np.array([1]))
    assert [o.ended[0] for o in outcomes] == [False] * 4 + [True]
    assert all(o.ended[1] for o in outcomes)  # a primitive is a one-step decision
    assert outcomes[-1].steps[0] == 5
    assert outcomes[-1].gain[0] == pytest.approx(
        sum(GAMMA ** i * r for i, r in enumerate(expected_rewards)))
    assert obs[0, 3] == 1  # has_key: the skill reached its subgoal
    assert options.kit.memory.stats()["skill_uses"] == 1


def test_an_episode_end_inside_a_skill_ends_the_decision():
    options, env = _options(num_envs=1)
    env.max_steps = 3  # the episode is cut two steps short of the key
    obs, _ = env.reset(seed=0)
    options.kit.memory.add("acquire_key", TO_THE_KEY, {"has_key": False, "door_open": False},
                           options.kit.embed(obs, np.array([0]))[0])
    options.masks(obs, np.array([0]))
    options.begin(np.array([0]), np.array([env.num_actions]))
    ended = []
    for _ in range(3):
        obs, outcome, _ = options.step(obs)
        ended.append((bool(outcome.ended[0]), bool(outcome.episode_end[0]),
                      bool(outcome.truncated[0])))
    assert ended == [(False, False, False), (False, False, False), (True, True, True)]
    assert options.idle()[0]
    assert options.finished[0]["skill_steps"] == 3


def test_a_masked_action_is_never_drawn_and_has_no_probability_or_gradient():
    logits = torch.zeros(4096, 9, requires_grad=True)
    mask = torch.ones(4096, 9, dtype=torch.bool)
    mask[:, 6:] = False
    mask[::2, 7] = True  # skill 1 available in every other row
    drawn = choose(masked_logits(logits, mask), True, torch.Generator().manual_seed(0))
    assert mask[torch.arange(4096), torch.as_tensor(drawn)].all()
    assert (drawn == 7).any()
    dist = torch.distributions.Categorical(logits=masked_logits(logits, mask))
    assert (dist.probs[~mask] == 0).all()
    assert torch.isfinite(dist.entropy()).all()
    (dist.log_prob(torch.as_tensor(drawn)).sum() + dist.entropy().sum()).backward()
    assert (logits.grad[~mask] == 0).all()


def test_choosing_a_skill_where_none_is_available_is_refused():
    options, env = _options()
    obs, _ = env.reset(seed=0)
    options.masks(obs, np.arange(2))  # an empty library: no skill anywhere
    with pytest.raises(ValueError, match="no skill was available"):
        options.begin(np.arange(2), np.array([env.num_actions, 0]))


def _a2c(memory: SkillLibrary | None, seed: int = 0) -> A2C:
    env, eval_env = (GridWorld(num_envs=n, size=5, max_steps=60) for n in (8, 4))
    return A2C(env, eval_env, CPU, seed, KeyDoorMLPPolicy, memory, n_steps=4)


def test_a2c_with_skills_chooses_among_actions_and_skills_and_grows_its_library():
    agent = _a2c(SkillLibrary(embedding_dim=32))
    assert agent.net.policy.out_features == agent.env.num_actions + NUM_SKILL_ACTIONS
    history = [agent.train_iteration() for _ in range(30)]
    assert history[-1]["memory/skills"] > 0
    assert any(m["memory/skill_decision_share"] > 0 for m in history)
    assert {"memory/reuse_rate", "memory/hit_rate", "memory/skill_uses", "memory/merges",
            "memory/evictions", "memory/avg_success_rate"} <= history[-1].keys()
    # every update has at least n_steps decisions of each env, and skills take several steps
    assert all(m["train/env_steps"] >= (i + 1) * 4 * 8 for i, m in enumerate(history))
    evaluation = agent.evaluate(4)
    assert {"eval/success_rate", "eval/reuse_rate", "eval/skill_decision_share"} <= \
        evaluation.keys()


def test_a2c_with_skills_resumes_from_its_state_to_the_same_metrics():
    original = _a2c(SkillLibrary(embedding_dim=32))
    for _ in range(25):
        original.train_iteration()
    state = original.state_dict()
    expected = [original.train_iteration() for _ in range(5)]
    resumed = _a2c(SkillLibrary(embedding_dim=32))
    resumed.load_state_dict(state)
    got = [resumed.train_iteration() for _ in range(5)]
    drop = ("perf/sps",)
    assert [{k: v for k, v in m.items() if k not in drop} for m in got] == \
        [{k: v for k, v in m.items() if k not in drop} for m in expected]


def test_a2c_without_a_memory_is_unchanged_by_the_options():
    agent = _a2c(None)
    assert agent.kit is None and agent.net.policy.out_features == agent.env.num_actions
    assert not any(k.startswith("memory/") for k in agent.train_iteration())


@pytest.mark.parametrize("scale", [1.0, 0.5])
def test_a_rollout_of_decisions_discounts_each_env_s_chain_by_its_skills_lengths(scale):
    env, eval_env = (GridWorld(num_envs=4, layout="fixed", size=5) for _ in range(2))
    agent = A2C(env, eval_env, CPU, 0, KeyDoorMLPPolicy, SkillLibrary(embedding_dim=32),
                n_steps=2, gamma=GAMMA, skill_kind="open_loop", reward_scale=scale)
    kit = agent.kit
    kit.memory.add("acquire_key", TO_THE_KEY, {"has_key": False, "door_open": False},
                   kit.embed(agent.obs[:1], np.array([0]))[0])
    kit.memory.frozen = True  # the one skill above stays the only one
    with torch.no_grad():
        agent.net.policy.bias[env.num_actions] = 50.0  # the skill, wherever it is available
    batch, steps = agent.collector.collect(agent)
    twin = GridWorld(num_envs=1, layout="fixed", size=5)
    twin.reset(seed=0)
    gain = sum(GAMMA ** i * twin.step(np.array([a]))[1][0] for i, a in enumerate(TO_THE_KEY))
    assert steps == 6 * 4  # a 5-step skill, then one primitive, in every env
    assert batch.actions[:4].tolist() == [env.num_actions] * 4  # the skills end first
    assert (batch.actions[4:] < env.num_actions).all()
    # R(skill) = G + gamma^5 R(next decision): the next decision is discounted by its length
    # (the loss sees rewards times reward_scale)
    assert batch.returns[:4].tolist() == pytest.approx(
        (scale * gain + GAMMA ** 5 * batch.returns[4:]).tolist(), rel=1e-5)
