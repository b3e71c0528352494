import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from procmem.algorithms.procedural import ProceduralMemoryAgent, StateEmbedding
from procmem.envs.gridworld import GridWorld
from procmem.envs.keydoor import FIELD
from procmem.skills.library import SkillLibrary

from helpers import checkpoint_round_trip, fixed_gridworld

REPO_ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_torch_thread")

CPU = torch.device("cpu")


def make_agent(
    *,
    seed: int = 0,
    explorer: str = "oracle",
    memory: bool = True,
    num_envs: int = 1,
    max_steps: int = 50,
    min_success_steps: int = 3,
    retrieval_threshold: float = -1.0,
) -> ProceduralMemoryAgent:
    return ProceduralMemoryAgent(
        env=fixed_gridworld(num_envs=num_envs, max_steps=max_steps),
        eval_env=fixed_gridworld(max_steps=max_steps),
        memory=SkillLibrary() if memory else None,
        device=CPU,
        seed=seed,
        explorer=explorer,
        extraction="last_transitions",
        skill_kind="open_loop",
        skill_length=5,
        min_success_steps=min_success_steps,
        retrieval_threshold=retrieval_threshold,
    )


def make_learning_agent(seed: int = 0) -> ProceduralMemoryAgent:
    """Random explorer with a library on the fixed layout; it learns and reuses skills."""
    return make_agent(seed=seed, explorer="random", num_envs=2, max_steps=150,
                      retrieval_threshold=0.5)


def assert_states_equal(a, b, path: str = "state") -> None:
    """Deep equality of nested dicts/lists of tensors, arrays and plain values."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), path
        for key in a:
            assert_states_equal(a[key], b[key], f"{path}[{key!r}]")
    elif isinstance(a, list | tuple):
        assert isinstance(b, list | tuple) and len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_states_equal(x, y, f"{path}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b), path
    elif isinstance(a, np.ndarray):
        np.testing.assert_array_equal(a, b, err_msg=path)
    else:
        assert a == b, path


def some_observations() -> np.ndarray:
    """A batch of gridworld observations covering different positions and flags."""
    env = fixed_gridworld(num_envs=6)
    obs, _ = env.reset(seed=0)
    rng = np.random.default_rng(1)
    for _ in range(7):
        obs, *_ = env.step(rng.integers(env.num_actions, size=env.num_envs))
    obs = obs.copy()
    obs[:, FIELD["has_key"]] = [0, 1, 1, 0, 1, 0]
    obs[:, FIELD["door_open"]] = [0, 0, 1, 0, 1, 1]
    return obs


# --- 1. reproduction of the original experiment --------------------------------------------


def test_oracle_reproduces_original_single_open_door_skill():
    agent = make_agent()
    iterations = 20
    history = [agent.train_iteration() for _ in range(iterations)]

    for i, m in enumerate(history):
        assert m["train/episode_steps"] == 10.0
        assert m["train/episode_return"] == pytest.approx(12.1, abs=1e-5)
        assert m["train/success_rate"] == 1.0
        assert m["train/env_steps"] == 10.0 * (i + 1)
        assert m["memory/skills"] == 1.0
        assert 0.0 <= m["memory/avg_success_rate"] <= 1.0
        assert m["memory/skill_uses"] == float(i)
        assert m["memory/merges"] == float(i)
    assert history[0]["memory/reuse_rate"] == 0.0
    assert all(m["memory/reuse_rate"] == 0.5 for m in history[1:])
    assert all(m["memory/avg_success_rate"] == 1.0 for m in history[1:])

    stat_keys = {f"memory/{key}" for key in agent.memory.stats()}
    assert {k for k in history[-1] if k.startswith("memory/")} == stat_keys | {"memory/reuse_rate"}

    assert len(agent.memory) == 1
    skill = agent.memory[0]
    assert skill.name == "open_door_sequence"
    assert skill.preconditions == {"has_key": True, "door_open": False}
    assert skill.actions == (3, 0, 5, 3, 0)  # right, up, open_door, right, up
    assert skill.uses == iterations - 1
    assert skill.successes == iterations - 1
    assert skill.success_rate == 1.0
    assert skill.support == iterations

    evaluation = agent.evaluate(3)
    assert evaluation["eval/success_rate"] == 1.0
    assert evaluation["eval/episode_steps"] == 10.0
    assert evaluation["eval/solved_steps"] == 10.0
    assert evaluation["eval/episode_return"] == pytest.approx(12.1, abs=1e-5)
    assert evaluation["eval/reuse_rate"] == 0.5
    assert {k for k in evaluation if k.startswith("memory/")} == stat_keys
    assert evaluation["memory/skills"] == 1.0


# --- 2. deterministic embeddings -------------------------------------------------------------

_EMBED_SCRIPT = """
import json, sys
import numpy as np, torch
from procmem.algorithms.procedural import ProceduralMemoryAgent
from procmem.envs.gridworld import GridWorld
from procmem.skills.library import SkillLibrary
obs = np.array(json.loads(sys.argv[1]), dtype=np.int64)
env = GridWorld(layout="fixed", size=5, max_steps=50)
agent = ProceduralMemoryAgent(env=env, eval_env=env, memory=SkillLibrary(),
    device=torch.device("cpu"), seed=0, explorer="oracle",
    extraction="last_transitions", skill_kind="open_loop", skill_length=5, min_success_steps=3,
    retrieval_threshold=-1.0)
print(json.dumps(agent.embed(obs).tolist()))
"""


def test_embeddings_are_seeded_unit_norm_and_deterministic():
    obs = some_observations()
    first, second = make_agent(seed=0), make_agent(seed=0)
    e1, e2 = first.embed(obs), second.embed(obs)
    assert e1.shape == (len(obs), first.memory.embedding_dim)
    assert torch.equal(e1, e2)
    torch.testing.assert_close(e1.norm(dim=1), torch.ones(len(obs)))

    other = make_agent(seed=1)
    assert not torch.equal(first.embed.projection, other.embed.projection)
    assert not torch.allclose(other.embed(obs), e1)

    # Different observations map to different embeddings.
    assert len({tuple(row) for row in e1.tolist()}) == len(obs)

    # Identical in a fresh process with a different hash seed.
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", _EMBED_SCRIPT, json.dumps(obs.tolist())],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, check=True, timeout=60,
    )
    remote = torch.tensor(json.loads(out.stdout), dtype=torch.float32)
    assert torch.equal(remote, e1)


def test_state_embedding_direct_construction_matches_agent():
    agent = make_agent(seed=3)
    embed = StateEmbedding(size=5, dim=agent.memory.embedding_dim, seed=3, device=CPU)
    obs = some_observations()
    assert torch.equal(embed(obs), agent.embed(obs))


# --- 3. no memory ----------------------------------------------------------------------------


def test_agent_without_memory_trains_and_evaluates():
    agent = make_agent(memory=False)
    for i in range(3):
        metrics = agent.train_iteration()
        assert not any(k.startswith("memory/") for k in metrics)
        assert metrics["train/episode_steps"] == 10.0
        assert metrics["train/success_rate"] == 1.0
        assert metrics["train/env_steps"] == 10.0 * (i + 1)
    evaluation = agent.evaluate(2)
    assert not any(k.startswith("memory/") for k in evaluation)
    assert "eval/reuse_rate" not in evaluation
    assert evaluation["eval/success_rate"] == 1.0
    assert evaluation["eval/episode_steps"] == 10.0
    assert agent.state_dict()["memory"] is None


# --- 4. batched envs ---------------------------------------------------------------------


def count_env_steps(agent: ProceduralMemoryAgent) -> dict[str, int]:
    """Wrap ``agent.env.step`` to count batched calls and ended episodes."""
    counts = {"calls": 0, "ended": 0}
    step = agent.env.step

    def counted(actions):
        out = step(actions)
        counts["calls"] += 1
        counts["ended"] += int((out[2] | out[3]).sum())
        return out

    agent.env.step = counted
    return counts


def test_batched_oracle_collects_num_envs_episodes_per_iteration():
    agent = make_agent(num_envs=4)
    for i in range(1, 4):
        m = agent.train_iteration()
        assert m["train/episode_steps"] == 10.0
        assert m["train/env_steps"] == 40.0 * i
        # 4 successful episodes per iteration: 1 skill, every later one merged into it,
        # and the skill runs once per episode from the second iteration on.
        assert m["memory/skills"] == 1.0
        assert m["memory/merges"] == 4.0 * i - 1
        assert m["memory/skill_uses"] == 4.0 * (i - 1)


def test_batched_env_steps_count_steps_actually_taken():
    agent = make_agent(explorer="random", num_envs=4, max_steps=40, retrieval_threshold=0.5)
    counts = count_env_steps(agent)
    previous = 0.0
    for i in range(1, 6):
        m = agent.train_iteration()
        assert m["train/env_steps"] - previous == 4 * counts["calls"]
        previous = m["train/env_steps"]
        counts["calls"] = 0
        # Episodes are carried over between iterations, never dropped or double counted.
        assert 4 * i <= counts["ended"] <= 4 * i + 3
    steps_before = agent.env_steps
    agent.evaluate(2)
    assert agent.env_steps == steps_before


# --- 5. evaluate leaves training untouched -----------------------------------------------


def test_evaluate_changes_neither_library_nor_training_stream():
    evaluated, control = make_learning_agent(), make_learning_agent()
    for _ in range(4):
        assert evaluated.train_iteration() == control.train_iteration()
    assert len(evaluated.memory) > 0, "the setup should have learned a skill"

    library_before = evaluated.memory.state_dict()
    stats_before = evaluated.memory.stats()
    agent_before = evaluated.state_dict()
    evaluation = evaluated.evaluate(3)
    assert evaluation["eval/reuse_rate"] > 0, "evaluation should have used skills"
    assert evaluated.memory.stats() == stats_before
    assert_states_equal(evaluated.memory.state_dict(), library_before)
    assert_states_equal(evaluated.state_dict(), agent_before)

    for _ in range(3):
        assert evaluated.train_iteration() == control.train_iteration()
    assert_states_equal(evaluated.memory.state_dict(), control.memory.state_dict())


def test_evaluate_is_repeatable():
    agent = make_learning_agent()
    for _ in range(3):
        agent.train_iteration()
    assert agent.evaluate(3) == agent.evaluate(3)


# --- 6. checkpoint / restore ----------------------------------------------------------------


def test_restored_agent_continues_identically():
    original = make_learning_agent()
    for _ in range(4):
        original.train_iteration()
    assert len(original.memory) > 0, "the setup should have learned a skill"

    state = original.state_dict()
    restored = make_learning_agent()
    restored.load_state_dict(state)
    assert_states_equal(restored.state_dict(), original.state_dict())

    for _ in range(4):
        assert restored.train_iteration() == original.train_iteration()
    assert_states_equal(restored.state_dict(), original.state_dict())
    assert restored.evaluate(2) == original.evaluate(2)


def test_state_dict_is_a_snapshot():
    agent = make_learning_agent()
    agent.train_iteration()
    state = agent.state_dict()
    for _ in range(2):
        agent.train_iteration()
    fresh = make_learning_agent()
    fresh.load_state_dict(state)
    replay = make_learning_agent()
    replay.train_iteration()
    assert_states_equal(fresh.state_dict(), replay.state_dict())


def test_load_state_dict_rejects_memory_mismatch():
    with pytest.raises(ValueError, match="memory"):
        make_agent(memory=False).load_state_dict(make_agent().state_dict())


# --- 7. skill extraction --------------------------------------------------------------------


def test_short_successful_episodes_yield_no_skill():
    agent = make_agent(min_success_steps=11)
    for _ in range(5):
        m = agent.train_iteration()
        assert m["train/success_rate"] == 1.0 and m["train/episode_steps"] == 10.0
        assert m["memory/skills"] == 0.0 and m["memory/reuse_rate"] == 0.0
    assert len(agent.memory) == 0


def test_episode_of_exactly_min_success_steps_yields_a_skill():
    agent = make_agent(min_success_steps=10)
    agent.train_iteration()
    assert len(agent.memory) == 1
    assert agent.memory[0].name == "open_door_sequence"


def test_unknown_explorer_is_rejected():
    with pytest.raises(ValueError, match="explorer"):
        make_agent(explorer="greedy")


def test_a_skill_that_failed_is_not_retried_in_the_same_episode():
    """A skill that walks back to where it started must not loop until the time limit."""
    agent = make_agent(explorer="random", retrieval_threshold=0.9)
    # at (2, 4) with the key and the door open; only the cell above (y + 1) is blocked
    start = np.array([[2, 4, -1, 1, 1, 2, 2, 3, 3, 4, 4, 0, 0, 1, 0]])
    # left, up (clamped), up (clamped), pickup (no-op), right: back at (2, 4).
    agent.memory.add("navigate_5_steps", [2, 0, 0, 4, 3], {"has_key": True, "door_open": True},
                     agent.embed(start)[0])
    agent.env.agent_pos[:] = [2, 4]
    agent.env.has_key[:] = True
    agent.env.door_open[:] = True
    agent.stream.obs = start.copy()

    metrics = agent.train_iteration()

    assert agent.memory[0].uses == 1 and agent.memory[0].successes == 0
    assert metrics["memory/reuse_rate"] < 1.0


# --- 8. subgoal skills on random layouts -------------------------------------------------------

PICKUP_KEY, OPEN_DOOR = GridWorld.interaction_actions
SUBGOAL_PRECONDITIONS = {
    "acquire_key": {"has_key": False, "door_open": False},
    "open_door": {"has_key": True, "door_open": False},
    "reach_goal": {"has_key": True, "door_open": True},
}


def make_subgoal_agent(
    *,
    seed: int = 0,
    num_envs: int = 2,
    extraction: str = "subgoals",
    skill_kind: str = "closed_loop",
    memory: bool = True,
    **kwargs,
) -> ProceduralMemoryAgent:
    """The default agent (count explorer, subgoal skills) on random 8x8 layouts."""

    def env() -> GridWorld:
        return GridWorld(num_envs=num_envs, size=8, layout="random", max_steps=300)

    return ProceduralMemoryAgent(
        env=env(),
        eval_env=env(),
        memory=SkillLibrary(embedding_dim=64) if memory else None,
        device=CPU,
        seed=seed,
        explorer="count",
        extraction=extraction,
        skill_kind=skill_kind,
        **kwargs,
    )


def count_events(env: GridWorld) -> dict[str, int]:
    """Wrap ``env.step`` to count subgoal events."""
    counts = dict.fromkeys(("key_picked", "door_opened", "success"), 0)
    step = env.step

    def counted(actions):
        out = step(actions)
        for name in counts:
            counts[name] += int(out[4][name].sum())
        return out

    env.step = counted
    return counts


def skills(agent: ProceduralMemoryAgent) -> list:
    return [agent.memory[int(i)] for i in agent.memory.indices]


def test_subgoal_extraction_stores_one_skill_per_subgoal_reached():
    agent = make_subgoal_agent(num_envs=1, skill_kind="open_loop")
    events = count_events(agent.env)
    for _ in range(3):  # one whole episode per iteration with a single env
        agent.train_iteration()
    assert events["success"] >= 1, "the setup should have solved an episode"

    stored = skills(agent)
    assert {skill.name for skill in stored} == set(SUBGOAL_PRECONDITIONS)
    for skill in stored:
        assert skill.preconditions == SUBGOAL_PRECONDITIONS[skill.name], skill.name
    moves = [0, 1, 2, 3]
    last_action = {"acquire_key": [PICKUP_KEY], "open_door": [OPEN_DOOR], "reach_goal": moves}
    for skill in stored:
        assert skill.actions[-1] in last_action[skill.name], skill
    # Every subgoal event of every episode gave one skill, new or merged into a stored one.
    assert len(agent.memory) + agent.memory.stats()["merges"] == sum(events.values())


@pytest.mark.slow
def test_closed_loop_skills_learn_to_solve_random_layouts():
    """Measured over seeds 0-7 (40 iterations of 2 episodes): over the last 10 iterations
    success 0.95-1.0, reuse 0.69-0.92, mean steps 0.33-0.58 of the first 10 iterations'
    and 0.15-0.29 of exploring without memory (~260 steps); on 10 held-out layouts
    success 1.0, reuse 0.36-1.0."""
    agent = make_subgoal_agent(seed=0)
    history = [agent.train_iteration() for _ in range(40)]
    first = np.mean([m["train/episode_steps"] for m in history[:10]])
    last = np.mean([m["train/episode_steps"] for m in history[-10:]])
    assert np.mean([m["train/success_rate"] for m in history[-10:]]) >= 0.8
    assert last <= 0.7 * first, (first, last)
    assert np.mean([m["memory/reuse_rate"] for m in history[-10:]]) > 0.5

    explorer_only = make_subgoal_agent(seed=0, memory=False)
    baseline = np.mean([explorer_only.train_iteration()["train/episode_steps"]
                        for _ in range(5)])
    assert last <= 0.5 * baseline, (last, baseline)

    stat_keys = {f"memory/{key}" for key in agent.memory.stats()}
    bc_keys = {f"memory/bc_loss_{name}" for name in SUBGOAL_PRECONDITIONS}
    assert {k for k in history[-1] if k.startswith("memory/")} == (
        stat_keys | bc_keys | {"memory/reuse_rate"})

    evaluation = agent.evaluate(10)  # layouts never trained on
    assert evaluation["eval/success_rate"] >= 0.8
    assert evaluation["eval/reuse_rate"] > 0.2


def test_open_loop_subgoal_skills_replay_stored_actions():
    agent = make_subgoal_agent(skill_kind="open_loop")
    history = [agent.train_iteration() for _ in range(4)]
    assert history[0]["memory/reuse_rate"] < history[-1]["memory/reuse_rate"]
    assert history[-1]["memory/reuse_rate"] > 0
    assert agent.policies is None
    assert not any(k.startswith("memory/bc_loss") for k in history[-1])
    assert agent.memory.stats()["skill_uses"] > 0


def stand_at_origin_with_door_open(agent: ProceduralMemoryAgent) -> np.ndarray:
    """Put the single env at (0, 0) with the key and the door open, the goal at (7, 7)."""
    env = agent.env
    env.walls[:] = False
    env.agent_pos[:] = [0, 0]
    env.key_pos[:], env.door_pos[:], env.goal_pos[:] = [3, 3], [5, 5], [7, 7]
    env.has_key[:] = env.door_open[:] = True
    agent.stream.obs = env._obs()
    return agent.stream.obs


@pytest.mark.parametrize("skill_kind", ["open_loop", "closed_loop"])
def test_a_failed_subgoal_skill_is_not_retried_in_the_same_episode(skill_kind):
    agent = make_subgoal_agent(num_envs=1, skill_kind=skill_kind, skill_step_budget=4)
    start = stand_at_origin_with_door_open(agent)
    # move_down, move_left at (0, 0): bumps into the border twice, far from the goal
    agent.memory.add("reach_goal", [1, 2], SUBGOAL_PRECONDITIONS["reach_goal"],
                     agent.embed(start, np.array([2]))[0])
    taken = []
    step = agent.env.step

    def recorded(actions):
        taken.append(int(actions[0]))
        return step(actions)

    agent.env.step = recorded

    metrics = agent.train_iteration()

    skill = agent.memory[0]
    assert skill.uses == 1 and skill.successes == 0
    used = 2 if skill_kind == "open_loop" else 4
    assert metrics["memory/reuse_rate"] == pytest.approx(used / len(taken))
    if skill_kind == "open_loop":
        assert taken[:2] == [1, 2]  # the stored actions, replayed


def test_agent_without_memory_explores_with_counts_only():
    agent = make_subgoal_agent(memory=False)
    assert agent.policies is None
    explored = {"rows": 0}
    act = agent.explorer.act

    def counted(obs, rng, envs=None):
        explored["rows"] += len(obs)
        return act(obs, rng, envs)

    agent.explorer.act = counted
    for _ in range(3):
        metrics = agent.train_iteration()
        assert not any(k.startswith("memory/") for k in metrics)
    # Every action of every env came from the explorer.
    assert explored["rows"] == agent.env_steps
    evaluation = agent.evaluate(2)
    assert not any(k.startswith("memory/") for k in evaluation)
    assert "eval/reuse_rate" not in evaluation
    state = agent.state_dict()
    assert state["memory"] is None and state["policies"] is None


def test_restored_closed_loop_agent_continues_identically(tmp_path):
    original = make_subgoal_agent(seed=0)
    for _ in range(3):
        original.train_iteration()
    restored = make_subgoal_agent(seed=0)
    restored.load_state_dict(checkpoint_round_trip(original.state_dict(), tmp_path / "state.pt"))
    assert_states_equal(restored.state_dict(), original.state_dict())
    for _ in range(3):
        expected = original.train_iteration()
        assert {f"memory/bc_loss_{name}" for name in SUBGOAL_PRECONDITIONS} <= expected.keys()
        assert restored.train_iteration() == expected
    assert_states_equal(restored.state_dict(), original.state_dict())


def test_closed_loop_state_dict_is_a_snapshot():
    agent = make_subgoal_agent(seed=0)
    agent.train_iteration()
    state = agent.state_dict()
    saved = copy.deepcopy(state)
    agent.train_iteration()
    assert_states_equal(state, saved)


def test_resumed_agent_reports_the_same_cloning_losses(tmp_path):
    original = make_subgoal_agent(seed=0, num_envs=1)
    for _ in range(5):
        if "memory/bc_loss_acquire_key" in original.train_iteration():
            break
    assert original.policies.trained(0), "the setup should have cloned a policy"
    restored = make_subgoal_agent(seed=0, num_envs=1)
    restored.load_state_dict(checkpoint_round_trip(original.state_dict(), tmp_path / "state.pt"))
    for agent in (original, restored):
        agent.env.max_steps = 1  # the next episode reaches no subgoal, so nothing is cloned
    assert restored.train_iteration() == original.train_iteration()


def test_evaluate_on_held_out_layouts_changes_nothing_learned():
    evaluated = make_subgoal_agent(seed=1)
    for _ in range(4):
        evaluated.train_iteration()
    before = copy.deepcopy(evaluated.state_dict())
    control = make_subgoal_agent(seed=1)
    control.load_state_dict(copy.deepcopy(before))
    first_layouts = []
    reset = evaluated.eval_env.reset

    def recorded(seed=None):
        obs, info = reset(seed=seed)
        first_layouts.append(obs.copy())
        return obs, info

    evaluated.eval_env.reset = recorded

    evaluation = evaluated.evaluate(3)

    assert 0.0 <= evaluation["eval/success_rate"] <= 1.0
    assert evaluation["eval/reuse_rate"] > 0, "evaluation should have used skills"
    assert {k for k in evaluation if k.startswith("memory/")} == {
        f"memory/{key}" for key in evaluated.memory.stats()}
    # Held out: evaluation starts from other layouts than training did.
    train_layouts, _ = GridWorld(num_envs=2, size=8, layout="random").reset(seed=1)
    objects = [FIELD[f"{name}_{axis}"] for name in ("key", "door", "goal") for axis in "xy"]
    assert len(first_layouts) == 1
    assert not np.array_equal(first_layouts[0][:, objects], train_layouts[:, objects])

    assert_states_equal(evaluated.state_dict(), before)
    assert evaluated.evaluate(3) == evaluation
    evaluated.train_iteration()
    control.train_iteration()
    assert_states_equal(evaluated.state_dict(), control.state_dict())


def test_closed_loop_skills_need_subgoal_extraction():
    with pytest.raises(ValueError, match="extraction"):
        make_subgoal_agent(extraction="last_transitions", skill_kind="closed_loop")
    with pytest.raises(ValueError, match="extraction"):
        make_subgoal_agent(extraction="episodes")
    with pytest.raises(ValueError, match="skill_kind"):
        make_subgoal_agent(skill_kind="scripted")
