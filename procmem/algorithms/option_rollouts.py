"""A2C's rollouts when its actions include skills (:mod:`procmem.algorithms.skill_options`).

A rollout is counted in decisions: every env takes decisions until each has finished at
least ``n_steps`` of them in this rollout (an env of short decisions finishes more while
another runs a long skill; all of them enter the update). A decision still running when
the rollout stops carries over and enters the update that sees it end, with the
observation and recurrent state it was chosen from. The policy's log-probabilities and
values are computed at the update from those stored inputs, with unavailable actions masked
(their probability is exactly 0), so a decision chosen before the previous update is
scored by the current network.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from procmem.algorithms.evaluation import episode_metrics
from procmem.algorithms.skill_options import SkillOptions, option_returns
from procmem.models.observations import as_tensors

_EVAL_SEED_OFFSET = 1_000_003


def masked_logits(logits: Tensor, mask: Tensor) -> Tensor:
    """``logits`` with the actions ``mask`` forbids set to the lowest float: probability 0,
    and no NaN in the entropy."""
    return logits.masked_fill(~mask, torch.finfo(logits.dtype).min)


@dataclass
class DecisionBatch:
    """The finished decisions of one rollout, flattened: what each was chosen from (``obs``,
    recurrent ``states``, the action ``masks``), the ``actions`` and their ``returns``."""

    obs: Tensor
    states: Tensor
    masks: Tensor
    actions: Tensor
    returns: Tensor


class DecisionCollector:
    """Collects A2C's decisions over ``options`` (training: it learns skills) in rollouts of
    at least ``n_steps`` finished decisions per env; keeps the running decisions' inputs."""

    def __init__(self, options: SkillOptions, n_steps: int, state_size: int,
                 device: torch.device) -> None:
        self.options, self.n_steps, self.device = options, n_steps, device
        b = options.env.num_envs
        self.start_obs = np.zeros((b, options.env.obs_dim), dtype=np.int64)
        self.start_state = torch.zeros(b, state_size, device=device)
        self.start_mask = np.zeros((b, options.num_actions), dtype=bool)
        self.start_choice = np.zeros(b, dtype=np.int64)

    def collect(self, learner: Any) -> tuple[DecisionBatch, int]:
        """Run ``learner``'s network (A2C: its ``net``, ``obs``, ``state``, ``generator``,
        ``gamma``) until every env has finished ``n_steps`` decisions; the batch and the
        env steps taken."""
        options, b = self.options, self.options.env.num_envs
        count = np.zeros(b, dtype=np.int64)
        ended: list[tuple[Any, ...]] = []  # per env step: the decisions that ended in it
        steps = 0
        while (count < self.n_steps).any():
            self._decide(learner)
            obs, outcome, info = options.step(learner.obs)
            steps += b
            rows = np.flatnonzero(outcome.ended)
            gain = outcome.gain * learner.reward_scale
            cut = outcome.truncated & outcome.ended
            if cut.any() and learner.bootstrap_truncated:  # a time limit the obs may not show
                gain = gain + learner.gamma ** outcome.steps * learner.final_values(cut, info)
            ended.append((rows, count[rows].copy(), gain[rows],
                          learner.gamma ** outcome.steps[rows], outcome.episode_end[rows],
                          self.start_obs[rows].copy(), self.start_state[rows].clone(),
                          self.start_mask[rows].copy(), self.start_choice[rows].copy()))
            count[rows] += 1
            done = torch.as_tensor(outcome.episode_end, dtype=torch.float32, device=self.device)
            learner.state = learner.state * (1.0 - done).unsqueeze(1)
            learner.obs = obs
        return self._batch(learner, ended, count), steps

    def _decide(self, learner: Any) -> None:
        """The idle envs draw their next decision from the current network."""
        options = self.options
        rows = np.flatnonzero(options.idle())
        if len(rows) == 0:
            return
        mask = options.masks(learner.obs[rows], rows)
        index = torch.as_tensor(rows, device=self.device)
        with torch.no_grad():
            logits, _, state = learner.net(as_tensors(learner.obs[rows], self.device),
                                           learner.state[index])
        choices = choose(masked_logits(logits, torch.as_tensor(mask, device=self.device)),
                         True, learner.generator)
        self.start_obs[rows] = learner.obs[rows]
        self.start_state[index] = learner.state[index]
        self.start_mask[rows] = mask
        self.start_choice[rows] = choices
        learner.state = learner.state.index_copy(0, index, state)
        options.begin(rows, choices)

    def _batch(self, learner: Any, ended: list[tuple[Any, ...]], count: np.ndarray
               ) -> DecisionBatch:
        """The rollout's decisions with their returns, each env's chain bootstrapped from
        the value of where its next decision starts."""
        shape = (int(count.max()), len(count))
        gains, discounts, dones = (torch.zeros(shape, device=self.device) for _ in range(3))
        valid = torch.zeros(shape, dtype=torch.bool, device=self.device)
        for rows, j, gain, discount, done, *_ in ended:
            at = (torch.as_tensor(j, device=self.device), torch.as_tensor(rows, device=self.device))
            gains[at] = torch.as_tensor(gain, dtype=torch.float32, device=self.device)
            discounts[at] = torch.as_tensor(discount, dtype=torch.float32, device=self.device)
            dones[at] = torch.as_tensor(done, dtype=torch.float32, device=self.device)
            valid[at] = True
        idle = self.options.idle()
        next_obs = np.where(idle[:, None], learner.obs, self.start_obs)
        next_state = torch.where(torch.as_tensor(idle, device=self.device)[:, None],
                                 learner.state, self.start_state)
        with torch.no_grad():
            _, bootstrap, _ = learner.net(as_tensors(next_obs, self.device), next_state)
        returns = option_returns(gains, discounts, dones, valid, bootstrap)
        return DecisionBatch(
            obs=as_tensors(np.concatenate([e[5] for e in ended]), self.device),
            states=torch.cat([e[6] for e in ended]),
            masks=torch.as_tensor(np.concatenate([e[7] for e in ended]), device=self.device),
            actions=torch.as_tensor(np.concatenate([e[8] for e in ended]), device=self.device),
            returns=torch.cat([returns[torch.as_tensor(e[1], device=self.device),
                                       torch.as_tensor(e[0], device=self.device)]
                               for e in ended]))

    def state_dict(self) -> dict[str, Any]:
        return {"options": self.options.state_dict(), "start_obs": self.start_obs.copy(),
                "start_state": self.start_state.clone(), "start_mask": self.start_mask.copy(),
                "start_choice": self.start_choice.copy()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.options.load_state_dict(state["options"])
        self.start_obs = np.array(state["start_obs"])
        self.start_state = state["start_state"].to(self.device)
        self.start_mask = np.array(state["start_mask"])
        self.start_choice = np.array(state["start_choice"])


def choose(logits: Tensor, sample: bool, generator: torch.Generator) -> np.ndarray:
    """Actions from (masked) ``logits``: drawn with ``generator``, or the most likely."""
    if sample:
        probs = torch.softmax(logits, dim=1)
        return torch.multinomial(probs, 1, generator=generator).squeeze(1).cpu().numpy()
    return logits.argmax(dim=1).cpu().numpy()


@torch.no_grad()
def evaluate_options(options: SkillOptions, net: nn.Module, device: torch.device, seed: int,
                     episodes: int, eval_policy: str) -> dict[str, float]:
    """``episodes`` episodes of ``net`` choosing among actions and skills on ``options``'s
    env (nothing learnt changes): ``eval/...`` episode metrics and how much skills did."""
    env = options.env
    obs, _ = env.reset(seed=seed + _EVAL_SEED_OFFSET)
    state = net.initial_state(env.num_envs)
    generator = torch.Generator(device=device).manual_seed(seed + _EVAL_SEED_OFFSET)
    while len(options.finished) < episodes:
        rows = np.flatnonzero(options.idle())
        if len(rows):
            mask = options.masks(obs[rows], rows)
            index = torch.as_tensor(rows, device=device)
            logits, _, new_state = net(as_tensors(obs[rows], device), state[index])
            choices = choose(masked_logits(logits, torch.as_tensor(mask, device=device)),
                             eval_policy == "sample", generator)
            state = state.index_copy(0, index, new_state)
            options.begin(rows, choices)
        obs, outcome, _ = options.step(obs)
        done = torch.as_tensor(outcome.episode_end, dtype=torch.float32, device=device)
        state = state * (1.0 - done).unsqueeze(1)
    done_episodes = options.finished[:episodes]
    return {**episode_metrics("eval", done_episodes), **options.metrics("eval", done_episodes)}
