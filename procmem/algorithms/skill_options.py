"""Skills as options: a learner's policy chooses among the primitive actions and one action
per subgoal skill (acquire key, open door, reach goal).

:class:`SkillOptions` runs the decisions of a batch of key/door/goal envs. Skill action
``A + s`` (``A`` primitive actions) is available in a situation only where the library
holds an applicable skill of subgoal ``s`` (retrieved by the situation's key, its
preconditions equal to the state's flags) that can run: open-loop skills that have not
failed in this episode, closed-loop ones whose subgoal policy is trained and has not failed
in it. Choosing it runs the best such skill, closed-loop (its subgoal's policy) or open-loop
(its actions), until its subgoal's event, the step cap or the episode's end: one decision.
A primitive action is a one-step decision. Each env's decision ends at its own step.

A decision's return is its rewards discounted per step, ``G = sum_i gamma^i r_i`` over its
``k`` steps; the next decision's value is discounted by ``gamma^k``
(:func:`option_returns`). Every episode the learner's envs finish is cut into subgoal
skills for the library, as the skill-library agent does (:class:`SkillKit`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch
from torch import Tensor

from procmem.algorithms.skill_kit import EVENTS, SUBGOAL_OF_NAME, SkillKit
from procmem.envs.keydoor import FLAGS, SUBGOALS

NUM_SKILL_ACTIONS = len(SUBGOALS)


def option_returns(rewards: Tensor, discounts: Tensor, dones: Tensor, valid: Tensor,
                   bootstrap: Tensor) -> Tensor:
    """Returns ``[M, B]`` of each env's chain of decisions: ``R_j = G_j + d_j (1 - done_j)
    R_{j+1}``, with ``G_j`` a decision's discounted rewards (``rewards``), ``d_j = gamma^k_j``
    (``discounts``) and ``R`` after an env's last valid decision its ``bootstrap`` value.
    ``valid`` marks each env's decisions, a prefix of its column."""
    returns = torch.zeros_like(rewards)
    running = bootstrap
    for j in range(rewards.shape[0] - 1, -1, -1):
        step = rewards[j] + discounts[j] * (1.0 - dones[j]) * running
        running = torch.where(valid[j], step, running)
        returns[j] = running
    return returns


@dataclass
class _Decisions:
    """Per-env state of the running decisions and of the current episodes."""

    trajectory_obs: np.ndarray  # [B, T, obs_dim]: obs before each step of the episode
    trajectory_actions: np.ndarray  # [B, T]
    trajectory_events: np.ndarray  # [B, T, len(EVENTS)]
    length: np.ndarray  # steps of the current episode
    reward: np.ndarray  # its return so far
    skill_steps: np.ndarray  # its steps taken by skills
    candidates: np.ndarray  # [B, S]: the skill each skill action would run, -1 for none
    choice: np.ndarray  # the running decision's action, -1 for none
    skill: np.ndarray  # library index of the running skill, -1 for none
    plan: np.ndarray  # [B, T] actions of the running open-loop skill
    plan_length: np.ndarray
    steps: np.ndarray  # k: steps of the running decision
    gain: np.ndarray  # G: its discounted rewards so far
    failed_skills: np.ndarray  # [B, N] open-loop skills that failed in this episode
    failed_policies: np.ndarray  # [B, S] subgoal policies that failed in this episode

    @classmethod
    def start(cls, env: Any) -> _Decisions:
        b, t, s = env.num_envs, env.max_steps, NUM_SKILL_ACTIONS
        none = np.full(b, -1, dtype=np.int64)
        return cls(np.zeros((b, t, env.obs_dim), dtype=np.int64),
                   np.zeros((b, t), dtype=np.int64), np.zeros((b, t, len(EVENTS)), dtype=bool),
                   np.zeros(b, dtype=np.int64), np.zeros(b), np.zeros(b, dtype=np.int64),
                   np.full((b, s), -1, dtype=np.int64), none.copy(), none.copy(),
                   np.zeros((b, t), dtype=np.int64), np.zeros(b, dtype=np.int64),
                   np.zeros(b, dtype=np.int64), np.zeros(b), np.zeros((b, 0), dtype=bool),
                   np.zeros((b, s), dtype=bool))

    def state_dict(self) -> dict[str, np.ndarray]:
        return {f.name: getattr(self, f.name).copy() for f in fields(self)}

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> _Decisions:
        return cls(**{f.name: np.array(state[f.name]) for f in fields(cls)})


@dataclass
class StepOutcome:
    """What one env step did to the decisions: which ended (``ended``), their discounted
    rewards ``gain`` and step counts ``steps``, which of them ended by a time limit
    (``truncated``) or with their episode (``episode_end``)."""

    ended: np.ndarray
    gain: np.ndarray
    steps: np.ndarray
    truncated: np.ndarray
    episode_end: np.ndarray


class SkillOptions:
    """The decisions of ``env``'s envs with the skills of ``kit`` as options (see the module
    docstring): closed-loop skills where the kit holds subgoal policies, else open-loop ones,
    a skill's steps capped at ``step_budget``, rewards discounted by ``gamma``. With
    ``learn`` (training) finished episodes become skills and skill uses are counted;
    evaluation learns nothing."""

    def __init__(self, kit: SkillKit, env: Any, gamma: float, step_budget: int,
                 learn: bool) -> None:
        self.kit, self.env, self.gamma = kit, env, gamma
        self.step_budget, self.learn = step_budget, learn
        self.num_actions = env.num_actions + NUM_SKILL_ACTIONS
        self.now = _Decisions.start(env)
        self.finished: list[dict[str, float]] = []  # episodes ended, oldest first
        self.decisions = np.zeros(2, dtype=np.int64)  # decisions begun, of them skills
        # subgoal of each skill index, -1 for another name, -2 not looked up yet (a skill's
        # name never changes and an index is never reused)
        self._subgoal_of_index = np.zeros(0, dtype=np.int64)

    # --- choosing -------------------------------------------------------------------------

    def masks(self, obs: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Which actions envs ``rows`` (idle) may choose in ``obs`` (their observations):
        ``[len(rows), A + S]`` bool; remembers the skill each skill action would run."""
        now, kit = self.now, self.kit
        mask = np.ones((len(rows), self.num_actions), dtype=bool)
        mask[:, self.env.num_actions:] = False
        now.candidates[rows] = -1
        memory = kit.memory
        if len(memory) == 0 or len(rows) == 0:
            return mask
        grow = memory.next_index - now.failed_skills.shape[1]
        now.failed_skills = np.pad(now.failed_skills, ((0, 0), (0, max(grow, 0))))
        indices, _ = memory.retrieve(obs[:, FLAGS].astype(bool), kit.embed(obs),
                                     record=self.learn)
        indices = indices.cpu().numpy()
        subgoals = self._subgoals_of(indices)
        usable = (indices >= 0) & ~np.take_along_axis(now.failed_skills[rows],
                                                      np.maximum(indices, 0), 1)
        ready = kit.ready() & ~(now.failed_policies[rows] if kit.policies is not None
                                else np.zeros((len(rows), NUM_SKILL_ACTIONS), dtype=bool))
        for s in range(NUM_SKILL_ACTIONS):
            fits = usable & (subgoals == s)  # the best-ranked usable skill of subgoal s
            has = fits.any(axis=1) & ready[:, s]
            best = indices[np.arange(len(rows)), np.argmax(fits, axis=1)]
            now.candidates[rows[has], s] = best[has]
            mask[has, self.env.num_actions + s] = True
        return mask

    def begin(self, rows: np.ndarray, choices: np.ndarray) -> None:
        """Envs ``rows`` start decisions ``choices`` (a primitive action, or ``A + s`` for
        the skill of subgoal ``s`` that :meth:`masks` found)."""
        now, primitive = self.now, self.env.num_actions
        now.choice[rows] = choices
        now.steps[rows], now.gain[rows] = 0, 0.0
        skills = rows[choices >= primitive]
        self.decisions += (len(rows), len(skills))
        if len(skills) == 0:
            return
        subgoal = now.choice[skills] - primitive
        index = now.candidates[skills, subgoal]
        if (index < 0).any():
            raise ValueError("a skill action was chosen where no skill was available")
        now.skill[skills] = index
        if self.kit.policies is not None:
            now.plan_length[skills] = self.step_budget
            return
        for row, skill in zip(skills, index, strict=True):
            actions = self.kit.memory[int(skill)].actions
            now.plan[row, :len(actions)] = actions
            now.plan_length[row] = len(actions)

    def idle(self) -> np.ndarray:
        """Envs with no running decision, which choose at this step."""
        return self.now.choice < 0

    def env_actions(self, obs: np.ndarray) -> np.ndarray:
        """The env action of every env's running decision in ``obs``."""
        now, primitive = self.now, self.env.num_actions
        actions = now.choice.copy()
        skill = now.choice >= primitive
        if skill.any():
            rows = np.flatnonzero(skill)
            if self.kit.policies is not None:
                actions[rows] = self.kit.policies.act(obs[rows], now.choice[rows] - primitive)
            else:
                actions[rows] = now.plan[rows, now.steps[rows]]
        return actions

    def _subgoals_of(self, indices: np.ndarray) -> np.ndarray:
        """The subgoal (index into ``SUBGOALS``) of each retrieved skill index, -1 for none;
        names are looked up once per skill."""
        memory, table = self.kit.memory, self._subgoal_of_index
        if len(table) < memory.next_index:
            table = np.concatenate([table, np.full(memory.next_index - len(table), -2)])
        new = np.unique(indices[(indices >= 0) & (table[np.maximum(indices, 0)] == -2)])
        for index in new:  # skills seen for the first time
            table[index] = SUBGOAL_OF_NAME.get(memory.name_of(int(index)), -1)
        self._subgoal_of_index = table
        return np.where(indices >= 0, table[np.maximum(indices, 0)], -1)

    # --- stepping -------------------------------------------------------------------------

    def step(self, obs: np.ndarray) -> tuple[np.ndarray, StepOutcome, dict[str, Any]]:
        """Step every env by its running decision from ``obs``; return the next observations,
        what happened to the decisions and the env's ``info``."""
        env, now = self.env, self.now
        rows = np.arange(env.num_envs)
        actions = self.env_actions(obs)
        now.trajectory_obs[rows, now.length] = obs
        now.trajectory_actions[rows, now.length] = actions
        next_obs, reward, terminated, truncated, info = env.step(actions)
        events = np.stack([info[name] for name in EVENTS], axis=1)
        now.trajectory_events[rows, now.length] = events
        now.gain += self.gamma ** now.steps * reward
        now.steps += 1
        now.length += 1
        now.reward += reward
        skill = now.choice >= env.num_actions
        now.skill_steps += skill
        episode_end = terminated | truncated
        subgoal = np.maximum(now.choice - env.num_actions, 0)
        achieved = events[rows, subgoal] & skill
        over_budget = skill & (now.steps >= now.plan_length)
        ended = ~skill | achieved | over_budget | episode_end
        if (skill & ended).any():
            self._finish_skills(skill & ended, achieved)
        outcome = StepOutcome(ended, now.gain.copy(), now.steps.copy(),
                              truncated & ~terminated, episode_end)
        now.choice[ended] = -1
        for i in np.flatnonzero(episode_end):
            self._end_episode(i, info["final_obs"][i], bool(info["success"][i]))
        return next_obs, outcome, info

    def _finish_skills(self, over: np.ndarray, achieved: np.ndarray) -> None:
        now = self.now
        if self.learn:
            self.kit.memory.record_use(now.skill[over], achieved[over])
        failed = over & ~achieved
        if self.kit.policies is not None:
            rows = np.flatnonzero(failed)
            now.failed_policies[rows, now.choice[rows] - self.env.num_actions] = True
        else:
            now.failed_skills[failed, now.skill[failed]] = True
        now.skill[over] = -1
        now.plan_length[over] = 0

    def _end_episode(self, i: int, final_obs: np.ndarray, success: bool) -> None:
        now, length = self.now, int(self.now.length[i])
        if self.learn:
            obs = np.concatenate([now.trajectory_obs[i, :length], final_obs[None]])
            self.kit.learn_episode(obs, now.trajectory_actions[i, :length],
                                   now.trajectory_events[i, :length])
        self.finished.append({"reward": float(now.reward[i]), "steps": length,
                              "success": float(success),
                              "skill_steps": int(now.skill_steps[i])})
        now.length[i], now.reward[i], now.skill_steps[i] = 0, 0.0, 0
        now.failed_skills[i] = False
        now.failed_policies[i] = False

    # --- what it reports ------------------------------------------------------------------

    def metrics(self, prefix: str, episodes: list[dict[str, float]]) -> dict[str, float]:
        """The share of the ``episodes``' steps that skills took (``{prefix}/reuse_rate``,
        as the skill-library agent reports it) and of the decisions begun since the last call
        that chose a skill since the last call (``{prefix}/skill_decision_share``)."""
        steps = sum(e["steps"] for e in episodes)
        share = self.decisions[1] / max(self.decisions[0], 1)
        self.decisions[:] = 0
        return {f"{prefix}/reuse_rate": sum(e["skill_steps"] for e in episodes) / max(steps, 1),
                f"{prefix}/skill_decision_share": float(share)}

    def state_dict(self) -> dict[str, Any]:
        return {"now": self.now.state_dict(), "finished": list(self.finished),
                "decisions": self.decisions.copy()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.now = _Decisions.from_state_dict(state["now"])
        self.finished = list(state["finished"])
        self.decisions = np.array(state["decisions"])



