"""The skill-library agent: explore, turn experience into skills, reuse them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Annotated, Any

import numpy as np
import torch

from procmem.algorithms.evaluation import episode_metrics
from procmem.algorithms.protocols import Artifact, require_env
from procmem.algorithms.skill_kit import (
    EVENTS,
    POLICIES_FILE,
    POLICY_DEFAULTS,
    SKILL_KINDS,
    SUBGOAL_OF_NAME,
    CloningBatch,
    CloningRate,
    CloningSteps,
    DemoBuffer,
    Hidden,
    KeyLengthscale,
    SkillFeatures,
    SkillKit,
    check_saved_kit,
    library_metrics,
    preconditions,
)
from procmem.envs.keydoor import FLAGS, SUBGOALS
from procmem.envs.protocols import SubgoalEnv
from procmem.settings import AtLeast, AtMost, OneOf, SettingError, configurable
from procmem.skills.explorers import EXPLORERS, Explorer, make_explorer
from procmem.skills.features import SituationEmbedding, StateEmbedding, next_subgoal
from procmem.skills.library import LIBRARY_FILE, SkillLibrary

EXTRACTIONS = ("last_transitions", "subgoals")
_SUCCESS = EVENTS.index("success")
_EVAL_SEED_OFFSET = 1_000_003


@dataclass
class _Stream:
    """Per-env state of an ongoing stream of episodes: the current episode and running skill.

    Not a :class:`~procmem.algorithms.rollouts.RolloutStorage`: each env's trajectory is
    written at that env's own step of its current episode and read back whole, one episode
    at a time, when it ends (skills are cut from it), beside the running skill's plan.
    """

    obs: np.ndarray
    trajectory_obs: np.ndarray  # [B, T, obs_dim]: obs before each step
    trajectory_actions: np.ndarray  # [B, T]
    trajectory_events: np.ndarray  # [B, T, len(EVENTS)]
    length: np.ndarray  # steps taken in the current episode
    reward: np.ndarray  # return so far
    skill_steps: np.ndarray  # steps taken by skills
    plan: np.ndarray  # [B, T] actions of the running open-loop skill
    plan_length: np.ndarray  # steps the running skill may take; 0 when none runs
    plan_position: np.ndarray
    plan_skill: np.ndarray  # library index of the running skill, -1 for none
    plan_event: np.ndarray  # index into EVENTS of what the running skill must achieve
    plan_policy: np.ndarray  # subgoal whose policy acts for a closed-loop skill, else -1
    failed_skills: np.ndarray  # [B, N] skills that failed earlier in this episode
    failed_policies: np.ndarray  # [B, len(SUBGOALS)] policies that failed in this episode
    finished: list[dict[str, float]] = field(default_factory=list)

    @classmethod
    def start(cls, env: Any, seed: int) -> _Stream:
        obs, _ = env.reset(seed=seed)
        b, t = env.num_envs, env.max_steps
        none = np.full(b, -1, dtype=np.int64)
        return cls(
            obs=obs,
            trajectory_obs=np.zeros((b, t, env.obs_dim), dtype=obs.dtype),
            trajectory_actions=np.zeros((b, t), dtype=np.int64),
            trajectory_events=np.zeros((b, t, len(EVENTS)), dtype=bool),
            length=np.zeros(b, dtype=np.int64),
            reward=np.zeros(b, dtype=np.float64),
            skill_steps=np.zeros(b, dtype=np.int64),
            plan=np.zeros((b, t), dtype=np.int64),
            plan_length=np.zeros(b, dtype=np.int64),
            plan_position=np.zeros(b, dtype=np.int64),
            plan_skill=none.copy(),
            plan_event=none.copy(),
            plan_policy=none.copy(),
            failed_skills=np.zeros((b, 0), dtype=bool),
            failed_policies=np.zeros((b, len(SUBGOALS)), dtype=bool),
        )

    def state_dict(self) -> dict[str, Any]:
        return {f.name: (getattr(self, f.name).copy() if f.name != "finished"
                         else list(self.finished)) for f in fields(self)}

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> _Stream:
        return cls(**{k: (np.array(v) if k != "finished" else list(v)) for k, v in state.items()})

    def end_episodes(self, ended: np.ndarray) -> None:
        """Clear the per-episode state of the envs in ``ended``."""
        for name in ("length", "reward", "skill_steps", "plan_length"):
            getattr(self, name)[ended] = 0
        for name in ("plan_skill", "plan_event", "plan_policy"):
            getattr(self, name)[ended] = -1
        self.failed_skills[ended] = False
        self.failed_policies[ended] = False


@configurable
class ProceduralMemoryAgent:
    """Procedural memory over a batch of ``env.num_envs`` key/door/goal envs.

    Each step, an env with no running skill retrieves the ``top_k`` applicable skills
    (preconditions equal its flags) by cosine similarity of its situation to the skill keys,
    and runs the best one scoring at least ``retrieval_threshold`` that has not failed
    earlier in the episode; without one it explores. A skill runs until it achieves what it
    is for, runs out of steps, or the episode ends; its use counts as a success when it
    achieved it.

    ``extraction="last_transitions"`` is the original: after a successful episode of at
    least ``min_success_steps`` steps, its last (up to) ``skill_length`` transitions become a
    skill keyed on the absolute state it started from, to be replayed until the goal.
    ``extraction="subgoals"`` cuts every episode into one segment per subgoal reached (key
    picked up, door opened, goal reached), shortens it to the shortest path through the
    transitions the episode experienced, and keys it on the situation relative to the
    subgoal's target, so it transfers across layouts. ``skill_kind="open_loop"`` replays a
    skill's actions; ``"closed_loop"`` runs its subgoal's policy, cloned from all the
    demonstrations of that subgoal, for up to ``skill_step_budget`` steps (0: four times the
    grid size). A failed open-loop skill, or a failed subgoal policy, is not retried in the
    same episode (the original retried forever). One iteration collects ``num_envs`` episodes.

    ``explorer`` picks the exploration policy (:data:`~procmem.skills.explorers.EXPLORERS`);
    ``key_lengthscale`` is the distance in cells over which subgoal keys stay similar; the
    ``bc_*`` settings shape and train the closed-loop policies (hidden units, Adam learning
    rate, cloning steps after each batch of episodes, batch size, transitions kept per
    subgoal) and ``skill_features`` what they read of the target (``"direction"``: no
    distance, so they carry to larger grids). The ``train/...`` episode metrics are means
    over the iteration's episodes, or with ``stats_window`` over the last that many
    training episodes, as A2C reports them.
    Without a memory (``memory=None``) the agent only explores.
    """

    env_needs = (SubgoalEnv,)
    artifacts = (Artifact(LIBRARY_FILE, lambda agent, path: None if agent.memory is None
                          else agent.memory.save(path), only_with="memory"),
                 Artifact(POLICIES_FILE, lambda agent, path: None if agent.kit is None
                          else agent.kit.save_policies(path), only_with="memory"))

    def __init__(
        self,
        env: SubgoalEnv,
        eval_env: SubgoalEnv,
        memory: SkillLibrary | None,
        device: torch.device,
        seed: int,
        *,
        explorer: Annotated[str, OneOf(EXPLORERS)] = "count",
        extraction: Annotated[str, OneOf(EXTRACTIONS)] = "subgoals",
        skill_kind: Annotated[str, OneOf(SKILL_KINDS)] = "closed_loop",
        skill_length: Annotated[int, AtLeast(1)] = 5,
        min_success_steps: Annotated[int, AtLeast(1)] = 3,
        retrieval_threshold: Annotated[float, AtLeast(-1.0), AtMost(1.0)] = -1.0,
        skill_step_budget: Annotated[int, AtLeast(0)] = 0,
        key_lengthscale: KeyLengthscale = POLICY_DEFAULTS["key_lengthscale"],
        bc_hidden: Hidden = POLICY_DEFAULTS["bc_hidden"],
        bc_lr: CloningRate = POLICY_DEFAULTS["bc_lr"],
        bc_steps: CloningSteps = POLICY_DEFAULTS["bc_steps"],
        bc_batch_size: CloningBatch = POLICY_DEFAULTS["bc_batch_size"],
        bc_buffer_size: DemoBuffer = POLICY_DEFAULTS["bc_buffer_size"],
        stats_window: Annotated[int, AtLeast(1)] | None = None,
        skill_features: SkillFeatures = "offset",
    ) -> None:
        require_env(self, env)
        if skill_kind == "closed_loop" and extraction != "subgoals":
            raise SettingError("skill_kind", "closed_loop learns one policy per subgoal: it "
                                             "needs extraction=subgoals")
        self.env, self.eval_env, self.memory = env, eval_env, memory
        self.explorer_name = explorer
        self.explorer = make_explorer(explorer, env)
        self.extraction, self.skill_kind = extraction, skill_kind
        self.skill_length = skill_length
        self.min_success_steps = min_success_steps
        self.retrieval_threshold = retrieval_threshold
        self.skill_step_budget = skill_step_budget or 4 * env.size
        self.seed = seed
        dim = memory.embedding_dim if memory is not None else 16
        self.kit = (SkillKit(memory, env, device, seed, closed_loop=skill_kind == "closed_loop",
                             key_lengthscale=key_lengthscale, bc_hidden=bc_hidden, bc_lr=bc_lr,
                             bc_steps=bc_steps, bc_batch_size=bc_batch_size,
                             bc_buffer_size=bc_buffer_size, skill_features=skill_features)
                    if memory is not None and extraction == "subgoals" else None)
        self.embed = (StateEmbedding(env.size, dim, seed, device) if extraction == EXTRACTIONS[0]
                      else self.kit.embed if self.kit is not None
                      else SituationEmbedding(dim, seed, device, key_lengthscale))
        self.policies = None if self.kit is None else self.kit.policies
        self.rng = np.random.default_rng(seed)
        self.stream = _Stream.start(env, seed)
        self.env_steps = 0
        self.stats_window = stats_window
        self.recent: list[dict[str, float]] = []  # the last stats_window training episodes
        self.episodes = 0
        self._learning_metrics: dict[str, float] = {}

    # --- the algorithm protocol ---------------------------------------------------------------

    def train_iteration(self) -> dict[str, float]:
        """Collect ``num_envs`` episodes, turning what they achieved into skills."""
        episodes = self._collect(self.env, self.stream, self.explorer, self.rng,
                                 self.env.num_envs, learn=True)
        self.episodes += len(episodes)
        if self.stats_window is not None:
            self.recent = (self.recent + episodes)[-self.stats_window:]
        metrics = {**episode_metrics("train", episodes if self.stats_window is None
                                     else self.recent),
                   "train/env_steps": float(self.env_steps),
                   "train/episodes": float(self.episodes)}
        if self.memory is not None:
            metrics["memory/reuse_rate"] = _reuse_rate(episodes)
            metrics.update(self._library_metrics())
            metrics.update(self._learning_metrics)
        return metrics

    def evaluate(self, episodes: int) -> dict[str, float]:
        """Run ``episodes`` episodes on the eval env (its own seed, so unseen random layouts);
        nothing learned changes."""
        seed = self.seed + _EVAL_SEED_OFFSET
        stream = _Stream.start(self.eval_env, seed)
        explorer = make_explorer(self.explorer_name, self.eval_env)
        done = self._collect(self.eval_env, stream, explorer, np.random.default_rng(seed),
                             episodes, learn=False)
        metrics = episode_metrics("eval", done)
        if self.memory is not None:
            metrics["eval/reuse_rate"] = _reuse_rate(done)
            metrics.update(self._library_metrics())
        return metrics

    def tables(self) -> dict[str, list[dict[str, Any]]]:
        """The skill library as the table ``media/skills`` (none without a memory)."""
        return {} if self.memory is None else {"media/skills": self.memory.to_records()}

    @classmethod
    def check_config(cls, run: Mapping[str, Any]) -> None:
        """Subgoal keys need room in the memory's embeddings (``memory.embedding_dim``); a
        loaded library (``memory.load``) holds subgoal skills this run can use."""
        memory, min_dim = run.get("memory") or {}, SituationEmbedding.MIN_DIM
        agent = run["agent"]
        if (agent.get("extraction") == "subgoals"
                and memory.get("embedding_dim", min_dim) < min_dim):
            raise SettingError("memory.embedding_dim", f"{memory['embedding_dim']} is too "
                               f"small: agent.extraction=subgoals needs >= {min_dim}")
        if memory.get("load") and agent.get("extraction") == "last_transitions":
            raise SettingError("memory.load", "a saved library starts runs that key skills on "
                                              "situations: set agent.extraction=subgoals")
        check_saved_kit(run, agent.get("skill_kind", "closed_loop"))

    def state_dict(self) -> dict[str, Any]:
        return {
            "memory": None if self.memory is None else self.memory.state_dict(),
            "policies": None if self.kit is None else self.kit.state_dict(),
            "env": self.env.state_dict(),
            "stream": self.stream.state_dict(),
            "explorer": self.explorer.state_dict(),
            "rng": self.rng.bit_generator.state,
            "env_steps": self.env_steps,
            "recent": list(self.recent),
            "episodes": self.episodes,
            "learning_metrics": dict(self._learning_metrics),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if (state["memory"] is None) != (self.memory is None):
            raise ValueError("the checkpoint and this agent disagree on having a memory")
        if self.memory is not None:
            self.memory.load_state_dict(state["memory"])
        if self.kit is not None:
            self.kit.load_state_dict(state["policies"])
        self.env.load_state_dict(state["env"])
        self.stream = _Stream.from_state_dict(state["stream"])
        self.explorer.load_state_dict(state["explorer"])
        self.rng.bit_generator.state = state["rng"]
        self.env_steps = int(state["env_steps"])
        self.recent, self.episodes = list(state["recent"]), int(state["episodes"])
        self._learning_metrics = dict(state["learning_metrics"])

    # --- acting -------------------------------------------------------------------------------

    def _collect(self, env: Any, stream: _Stream, explorer: Explorer, rng: np.random.Generator,
                 episodes: int, learn: bool) -> list[dict[str, float]]:
        """Step ``env`` until ``episodes`` episodes have finished; return their summaries."""
        while len(stream.finished) < episodes:
            self._step(env, stream, explorer, rng, learn)
        done, stream.finished = stream.finished[:episodes], stream.finished[episodes:]
        return done

    def _step(self, env: Any, stream: _Stream, explorer: Explorer, rng: np.random.Generator,
              learn: bool) -> None:
        self._start_skills(stream, learn)
        rows = np.arange(env.num_envs)
        running = stream.plan_position < stream.plan_length
        actions = np.zeros(env.num_envs, dtype=np.int64)
        if (~running).any():
            idle = rows[~running]
            actions[idle] = explorer.act(stream.obs[idle], rng, idle)
        replay = running & (stream.plan_policy < 0)
        actions[replay] = stream.plan[replay, stream.plan_position[replay]]
        policy = running & (stream.plan_policy >= 0)
        if policy.any():
            actions[policy] = self.policies.act(stream.obs[policy], stream.plan_policy[policy])

        stream.trajectory_obs[rows, stream.length] = stream.obs
        stream.trajectory_actions[rows, stream.length] = actions
        obs, reward, terminated, truncated, info = env.step(actions)
        events = np.stack([info[name] for name in EVENTS], axis=1)
        stream.trajectory_events[rows, stream.length] = events
        if learn:
            self.env_steps += env.num_envs
        stream.length += 1
        stream.reward += reward
        stream.skill_steps += running
        stream.plan_position += running

        ended = terminated | truncated
        achieved = events[rows, np.maximum(stream.plan_event, 0)]
        over = running & (achieved | (stream.plan_position >= stream.plan_length) | ended)
        if over.any():
            self._finish_skills(stream, over, achieved, learn)

        finished = np.flatnonzero(ended)
        for i in finished:
            if learn and self.memory is not None:
                self._learn_from_episode(stream, i, info["final_obs"][i])
            stream.finished.append({
                "reward": float(stream.reward[i]),
                "steps": int(stream.length[i]),
                "success": float(info["success"][i]),
                "skill_steps": int(stream.skill_steps[i]),
            })
        if learn and self.kit is not None and len(finished):
            self._learning_metrics.update(self.kit.train_policies())
        stream.end_episodes(ended)
        explorer.reset(ended)
        stream.obs = obs

    def _finish_skills(self, stream: _Stream, over: np.ndarray, achieved: np.ndarray,
                       learn: bool) -> None:
        """Count the uses of skills that stopped; remember failures for this episode."""
        if learn:
            self.memory.record_use(stream.plan_skill[over], achieved[over])
        failed = over & ~achieved
        replayed = failed & (stream.plan_policy < 0)
        stream.failed_skills[replayed, stream.plan_skill[replayed]] = True
        cloned = failed & (stream.plan_policy >= 0)
        stream.failed_policies[cloned, stream.plan_policy[cloned]] = True
        stream.plan_length[over] = 0
        stream.plan_skill[over] = stream.plan_event[over] = stream.plan_policy[over] = -1

    def _start_skills(self, stream: _Stream, learn: bool) -> None:
        """Envs with no running skill start the best usable one among the ``top_k`` retrieved."""
        idle = stream.plan_position >= stream.plan_length
        if self.memory is None or len(self.memory) == 0 or not idle.any():
            return
        grow = self.memory.next_index - stream.failed_skills.shape[1]
        stream.failed_skills = np.pad(stream.failed_skills, ((0, 0), (0, max(grow, 0))))
        idle_rows = np.flatnonzero(idle)
        obs = stream.obs[idle_rows]
        indices, scores = self.memory.retrieve(obs[:, FLAGS].astype(bool), self.embed(obs),
                                               min_score=self.retrieval_threshold, record=learn)
        indices, scores = indices.cpu().numpy(), scores.cpu().numpy()
        valid = indices >= 0
        failed = np.take_along_axis(stream.failed_skills[idle_rows], np.maximum(indices, 0), 1)
        if self.policies is not None:
            # Every closed-loop skill of a subgoal runs that subgoal's policy.
            failed |= stream.failed_policies[idle_rows, next_subgoal(obs)][:, None]
        usable = valid & ~failed
        use = usable.any(axis=1)
        for row, index in zip(idle_rows[use], indices[use, np.argmax(usable[use], axis=1)],
                              strict=True):
            self._plan(stream, row, int(index))

    def _plan(self, stream: _Stream, row: int, index: int) -> None:
        """Make env ``row`` run skill ``index``."""
        skill = self.memory[index]
        subgoal = SUBGOAL_OF_NAME.get(skill.name, -1)
        stream.plan_skill[row] = index
        stream.plan_position[row] = 0
        stream.plan_event[row] = _SUCCESS if self.extraction == EXTRACTIONS[0] else subgoal
        if self.policies is not None:
            stream.plan_policy[row] = subgoal
            stream.plan_length[row] = self.skill_step_budget
        else:
            stream.plan[row, : len(skill.actions)] = skill.actions
            stream.plan_length[row] = len(skill.actions)

    # --- learning -----------------------------------------------------------------------------

    def _learn_from_episode(self, stream: _Stream, i: int, final_obs: np.ndarray) -> None:
        length = int(stream.length[i])
        if self.extraction == EXTRACTIONS[0]:
            succeeded = stream.trajectory_events[i, length - 1, _SUCCESS]
            if succeeded and length >= self.min_success_steps:
                self._add_last_transitions(stream, i, length, final_obs)
            return
        obs = np.concatenate([stream.trajectory_obs[i, :length], final_obs[None]])
        self.kit.learn_episode(obs, stream.trajectory_actions[i, :length],
                               stream.trajectory_events[i, :length])

    def _add_last_transitions(self, stream: _Stream, i: int, length: int,
                              final_obs: np.ndarray) -> None:
        """The original: the last transitions of a successful episode, named by what they did."""
        n = min(self.skill_length, length)
        start_obs = stream.trajectory_obs[i, length - n]
        flags = preconditions(start_obs)
        if final_obs[FLAGS[1]] and not flags["door_open"]:
            name = "open_door_sequence"
        elif final_obs[FLAGS[0]] and not flags["has_key"]:
            name = "acquire_key"
        else:
            name = f"navigate_{n}_steps"
        actions = stream.trajectory_actions[i, length - n : length].tolist()
        self.memory.add(name, actions, flags, self.embed(start_obs[None])[0])

    def _library_metrics(self) -> dict[str, float]:
        return library_metrics(self.memory)


def _reuse_rate(episodes: list[dict[str, float]]) -> float:
    """Share of the episodes' steps that skills took."""
    return sum(e["skill_steps"] for e in episodes) / max(sum(e["steps"] for e in episodes), 1)
