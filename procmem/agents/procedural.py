"""The skill-library agent: explore, turn successful episodes into skills, reuse them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from procmem.agents.explorers import Explorer, make_explorer
from procmem.envs.gridworld import GridWorld
from procmem.envs.keydoor import FLAGS, SUBGOALS, position
from procmem.logging import MetricLogger
from procmem.memory.skill_library import SkillLibrary
from procmem.plots import SKILL_LIBRARY_PANELS, plot_curves

_TARGETS = [subgoal.target for subgoal in SUBGOALS]
_EVAL_SEED_OFFSET = 1_000_003


class StateEmbedding:
    """A fixed, seeded random projection of gridworld state features onto the unit sphere.

    Features: agent position, the two flags, and the key/door/goal offsets from the agent,
    all scaled by the grid size, plus a constant. The same seed gives the same embedding in
    every process.
    """

    def __init__(self, size: int, dim: int, seed: int, device: torch.device) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.num_features = 2 + 2 + 2 * len(_TARGETS) + 1
        self.projection = torch.randn(self.num_features, dim, generator=generator).to(device)
        self.scale = float(max(size - 1, 1))
        self.device = device

    def features(self, obs: np.ndarray) -> torch.Tensor:
        obs = torch.as_tensor(obs, dtype=torch.float32, device=self.device)
        agent = position(obs, "agent")
        offsets = [position(obs, name) - agent for name in _TARGETS]
        ones = torch.ones(len(obs), 1, device=self.device)
        return torch.cat([agent / self.scale, obs[:, FLAGS],
                          *(o / self.scale for o in offsets), ones], dim=1)

    def __call__(self, obs: np.ndarray) -> torch.Tensor:
        return torch.nn.functional.normalize(self.features(obs) @ self.projection, dim=1)


@dataclass
class _Stream:
    """Per-env state of an ongoing stream of episodes (current episode and skill plan)."""

    obs: np.ndarray
    trajectory_obs: np.ndarray  # [B, max_steps, obs_dim]: obs before each step
    trajectory_actions: np.ndarray  # [B, max_steps]
    length: np.ndarray  # steps taken in the current episode
    reward: np.ndarray  # return so far
    skill_steps: np.ndarray  # steps taken by executing skills
    plan: np.ndarray  # [B, L] actions of the skill being executed
    plan_length: np.ndarray  # 0 when no skill is running
    plan_position: np.ndarray
    plan_skill: np.ndarray  # index of the running skill, -1 for none
    failed: np.ndarray  # [B, N]: skills that failed earlier in the current episode
    finished: list[dict[str, float]] = field(default_factory=list)

    @classmethod
    def start(cls, env: GridWorld, seed: int, plan_width: int) -> _Stream:
        obs, _ = env.reset(seed=seed)
        b = env.num_envs
        return cls(
            obs=obs,
            trajectory_obs=np.zeros((b, env.max_steps, env.obs_dim), dtype=obs.dtype),
            trajectory_actions=np.zeros((b, env.max_steps), dtype=np.int64),
            length=np.zeros(b, dtype=np.int64),
            reward=np.zeros(b, dtype=np.float64),
            skill_steps=np.zeros(b, dtype=np.int64),
            plan=np.zeros((b, plan_width), dtype=np.int64),
            plan_length=np.zeros(b, dtype=np.int64),
            plan_position=np.zeros(b, dtype=np.int64),
            plan_skill=np.full(b, -1, dtype=np.int64),
            failed=np.zeros((b, 0), dtype=bool),
        )

    def state_dict(self) -> dict[str, Any]:
        return {k: (v.copy() if isinstance(v, np.ndarray) else list(v))
                for k, v in vars(self).items()}


class ProceduralMemoryAgent:
    """The original procedural-memory loop, batched over ``env.num_envs`` envs.

    Each step, an env with no running skill retrieves the ``top_k`` applicable skills for its
    state (cosine similarity of the state embedding to skill keys) and executes the whole
    action sequence of the best one scoring at least ``retrieval_threshold`` that has not
    already failed in this episode; without one it takes an exploration action. (The
    original retried a failed skill forever: an open-loop skill that leaves the state as it
    was would loop until the episode timed out.) When an episode succeeds in at least
    ``min_success_steps`` steps, its last (up to) ``skill_length`` transitions become a
    skill, keyed by the embedding of the state they started from. One iteration collects
    ``num_envs`` episodes.
    """

    def __init__(
        self,
        env: GridWorld,
        eval_env: GridWorld,
        memory: SkillLibrary | None,
        curriculum: Any,
        device: torch.device,
        seed: int,
        explorer: str = "random",
        skill_length: int = 5,
        min_success_steps: int = 3,
        retrieval_threshold: float = 0.9,
    ) -> None:
        self.env, self.eval_env, self.memory = env, eval_env, memory
        self.explorer_name = explorer
        self.explorer = make_explorer(explorer, env)
        self.skill_length = skill_length
        self.min_success_steps = min_success_steps
        self.retrieval_threshold = retrieval_threshold
        self.seed = seed
        dim = memory.embedding_dim if memory is not None else 1
        self.embed = StateEmbedding(env.size, dim, seed, device)
        self.rng = np.random.default_rng(seed)
        self.stream = _Stream.start(env, seed, skill_length)
        self.env_steps = 0
        self._skill_actions = np.zeros((0, skill_length), dtype=np.int64)
        self._skill_lengths = np.zeros(0, dtype=np.int64)

    # --- the algorithm protocol ---------------------------------------------------------------

    def train_iteration(self) -> dict[str, float]:
        """Collect ``num_envs`` episodes, learning skills from the successful ones."""
        episodes = self._collect(self.env, self.stream, self.explorer, self.rng,
                                 self.env.num_envs, learn=True)
        metrics = {
            "train/episode_reward": float(np.mean([e["reward"] for e in episodes])),
            "train/episode_steps": float(np.mean([e["steps"] for e in episodes])),
            "train/success": float(np.mean([e["success"] for e in episodes])),
            "train/env_steps": float(self.env_steps),
        }
        return {**metrics, **self._memory_metrics(episodes)}

    def evaluate(self, episodes: int) -> dict[str, float]:
        """Run ``episodes`` episodes on the eval env with a fixed seed; the library is untouched."""
        seed = self.seed + _EVAL_SEED_OFFSET
        stream = _Stream.start(self.eval_env, seed, self.skill_length)
        explorer = make_explorer(self.explorer_name, self.eval_env)
        done = self._collect(self.eval_env, stream, explorer, np.random.default_rng(seed),
                             episodes, learn=False)
        solved = [e["steps"] for e in done if e["success"]]
        metrics = {
            "eval/success_rate": float(np.mean([e["success"] for e in done])),
            "eval/mean_steps": float(np.mean([e["steps"] for e in done])),
            "eval/mean_reward": float(np.mean([e["reward"] for e in done])),
        }
        if solved:
            metrics["eval/mean_steps_solved"] = float(np.mean(solved))
        return {**metrics, **self._memory_metrics(done)}

    def state_dict(self) -> dict[str, Any]:
        return {
            "memory": None if self.memory is None else self.memory.state_dict(),
            "env": self.env.state_dict(),
            "stream": self.stream.state_dict(),
            "explorer": self.explorer.state_dict(),
            "rng": self.rng.bit_generator.state,
            "env_steps": self.env_steps,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if (state["memory"] is None) != (self.memory is None):
            raise ValueError("the checkpoint and this agent disagree on having a memory")
        if self.memory is not None:
            self.memory.load_state_dict(state["memory"])
        self.env.load_state_dict(state["env"])
        self.stream = _Stream(**{k: (np.array(v) if k != "finished" else list(v))
                                 for k, v in state["stream"].items()})
        self.explorer.load_state_dict(state["explorer"])
        self.rng.bit_generator.state = state["rng"]
        self.env_steps = int(state["env_steps"])
        self._skill_actions = self._skill_actions[:0]
        self._skill_lengths = self._skill_lengths[:0]

    def on_train_end(self, run_dir: Path, logger: MetricLogger) -> None:
        """Save ``skills.json``, log the skills table and draw ``plots/training.png``."""
        if self.memory is not None:
            self.memory.save(run_dir / "skills.json")
            logger.log_table("memory/skills_table", self.memory.to_records())
        figure = plot_curves(logger.rows, SKILL_LIBRARY_PANELS, run_dir / "plots" / "training.png",
                             title="Procedural memory: training")
        logger.log_image("plots/training", figure)

    # --- acting -------------------------------------------------------------------------------

    def _collect(self, env: GridWorld, stream: _Stream, explorer: Explorer,
                 rng: np.random.Generator, episodes: int, learn: bool) -> list[dict[str, float]]:
        """Step ``env`` until ``episodes`` episodes have finished; return their summaries."""
        while len(stream.finished) < episodes:
            self._step(env, stream, explorer, rng, learn)
        done, stream.finished = stream.finished[:episodes], stream.finished[episodes:]
        return done

    def _step(self, env: GridWorld, stream: _Stream, explorer: Explorer,
              rng: np.random.Generator, learn: bool) -> None:
        self._start_skills(stream)
        running = stream.plan_position < stream.plan_length
        rows = np.arange(env.num_envs)
        planned = stream.plan[rows, np.minimum(stream.plan_position, stream.plan.shape[1] - 1)]
        actions = np.where(running, planned, explorer.act(stream.obs, rng))

        stream.trajectory_obs[rows, stream.length] = stream.obs
        stream.trajectory_actions[rows, stream.length] = actions
        obs, reward, terminated, truncated, info = env.step(actions)
        if learn:
            self.env_steps += env.num_envs
        stream.length += 1
        stream.reward += reward
        stream.skill_steps += running
        stream.plan_position += running

        ended = terminated | truncated
        explorer.reset(ended)
        skill_over = running & ((stream.plan_position >= stream.plan_length) | ended)
        if self.memory is not None and skill_over.any():
            if learn:
                self.memory.record_use(stream.plan_skill[skill_over], info["success"][skill_over])
            failed = skill_over & ~info["success"]
            stream.failed[failed, stream.plan_skill[failed]] = True
        stream.plan_length[skill_over | ended] = 0
        stream.plan_skill[skill_over | ended] = -1

        for i in np.flatnonzero(ended):
            success = bool(info["success"][i])
            if learn and success:
                self._extract_skill(stream, i, info["final_obs"][i])
            stream.finished.append({
                "reward": float(stream.reward[i]),
                "steps": int(stream.length[i]),
                "success": float(success),
                "skill_steps": int(stream.skill_steps[i]),
            })
        stream.length[ended] = 0
        stream.reward[ended] = 0.0
        stream.skill_steps[ended] = 0
        stream.failed[ended] = False
        stream.obs = obs

    def _start_skills(self, stream: _Stream) -> None:
        """Envs with no running skill start the best usable one among the ``top_k`` retrieved."""
        idle = stream.plan_position >= stream.plan_length
        if self.memory is None or len(self.memory) == 0 or not idle.any():
            return
        grow = len(self.memory) - stream.failed.shape[1]
        stream.failed = np.pad(stream.failed, ((0, 0), (0, grow)))
        idle_rows = np.flatnonzero(idle)
        obs = stream.obs[idle_rows]
        indices, scores = self.memory.retrieve(obs[:, FLAGS].astype(bool), self.embed(obs))
        indices, scores = indices.cpu().numpy(), scores.cpu().numpy()
        failed = np.take_along_axis(stream.failed[idle_rows], np.maximum(indices, 0), axis=1)
        usable = (indices >= 0) & (scores >= self.retrieval_threshold) & ~failed
        use = usable.any(axis=1)
        if not use.any():
            return
        best = np.argmax(usable, axis=1)
        actions, lengths = self._padded_skill_actions()
        rows, chosen = idle_rows[use], indices[use, best[use]]
        stream.plan[rows] = actions[chosen]
        stream.plan_length[rows] = lengths[chosen]
        stream.plan_position[rows] = 0
        stream.plan_skill[rows] = chosen

    def _padded_skill_actions(self) -> tuple[np.ndarray, np.ndarray]:
        """All skills' actions as one ``[N, skill_length]`` array, extended as skills are added."""
        known = len(self._skill_lengths)
        if known < len(self.memory):
            new = [self.memory[i].actions[: self.skill_length]
                   for i in range(known, len(self.memory))]
            block = np.zeros((len(new), self.skill_length), dtype=np.int64)
            for row, actions in enumerate(new):
                block[row, : len(actions)] = actions
            self._skill_actions = np.concatenate([self._skill_actions, block])
            self._skill_lengths = np.concatenate([self._skill_lengths, [len(a) for a in new]])
        return self._skill_actions, self._skill_lengths

    def _extract_skill(self, stream: _Stream, env_index: int, final_obs: np.ndarray) -> None:
        """Store the last transitions of a successful episode as a skill."""
        length = int(stream.length[env_index])
        if self.memory is None or length < self.min_success_steps:
            return
        n = min(self.skill_length, length)
        start_obs = stream.trajectory_obs[env_index, length - n]
        actions = stream.trajectory_actions[env_index, length - n : length].tolist()
        has_key, door_open = (bool(start_obs[i]) for i in FLAGS)
        if final_obs[FLAGS[1]] and not door_open:
            name = "open_door_sequence"
        elif final_obs[FLAGS[0]] and not has_key:
            name = "acquire_key"
        else:
            name = f"navigate_{n}_steps"
        self.memory.add(name, actions, {"has_key": has_key, "door_open": door_open},
                        self.embed(start_obs[None])[0])

    def _memory_metrics(self, episodes: list[dict[str, float]]) -> dict[str, float]:
        if self.memory is None:
            return {}
        stats = self.memory.stats()
        steps = sum(e["steps"] for e in episodes)
        return {
            "memory/skills": float(stats["skills"]),
            "memory/skill_uses": float(stats["skill_uses"]),
            "memory/reuse_rate": sum(e["skill_steps"] for e in episodes) / max(steps, 1),
            "memory/avg_success_rate": float(stats["avg_success_rate"]),
            "memory/merges": float(stats["merges"]),
        }
