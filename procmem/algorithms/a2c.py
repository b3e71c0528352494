"""Advantage actor-critic (A2C) over a batched env, for any network in
:mod:`procmem.models.networks`."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Mapping
from typing import Annotated, Any

import numpy as np
import torch
from torch import Tensor, nn

from procmem.algorithms.evaluation import (
    EVAL_POLICIES,
    RECORD_SEED_OFFSET,
    evaluate_policy,
    explain_policy,
    record_episode,
)
from procmem.algorithms.policy_file import save_policy
from procmem.algorithms.protocols import Artifact
from procmem.algorithms.rollouts import Field, RolloutStorage
from procmem.envs.protocols import BatchedEnv
from procmem.models.observations import Observations, as_tensors, copy_observations, take_rows
from procmem.runtime import check_finite, step_checked
from procmem.settings import Above, AtLeast, AtMost, Component, OneOf, configurable

OPTIMIZERS = {"adam": torch.optim.Adam, "rmsprop": torch.optim.RMSprop}

# Settings A2C shares with the algorithms built on it (I2A), each declared once here.
RolloutSteps = Annotated[int, AtLeast(1)]
Discount = Annotated[float, AtLeast(0.0), AtMost(1.0)]
LearningRate = Annotated[float, Above(0.0)]
OptimizerName = Annotated[str, OneOf(tuple(OPTIMIZERS))]
GradNorm = Annotated[float, Above(0.0)]
EvalPolicy = Annotated[str, OneOf(EVAL_POLICIES)]
NetworkFactory = Callable[[Any], nn.Module]


def n_step_returns(rewards: Tensor, dones: Tensor, bootstrap: Tensor, gamma: float) -> Tensor:
    """Discounted returns ``[T, B]`` of a rollout: ``R_t = r_t + gamma * (1 - done_t) * R_{t+1}``,
    with ``R_T`` the value estimate of the state after the last step."""
    returns = torch.empty_like(rewards)
    running = bootstrap
    for t in range(rewards.shape[0] - 1, -1, -1):
        running = rewards[t] + gamma * (1.0 - dones[t]) * running
        returns[t] = running
    return returns


@configurable
class A2C:
    """Synchronous advantage actor-critic: one update per iteration from ``n_steps`` steps of
    every env.

    Returns are per step, bootstrapped from the value of the state the rollout stops in and
    cut at episode ends. At a truncated episode (a time limit) ``bootstrap_truncated`` adds
    ``gamma`` times the value of the final observation to the reward of the truncated step,
    right where the observation does not show the time left (a frame cap); without it the
    return ends there, right where it does (toolenv's step count). The defaults are the
    usual A2C settings (RMSprop 7e-4, 5 steps, gamma 0.99, gradients clipped at 0.5). The loss is
    the policy gradient with (optionally normalised) advantages, plus ``value_coef`` times the
    value MSE, minus ``entropy_coef`` times the entropy;
    gradients are clipped to ``max_grad_norm`` and taken by ``optimizer`` at ``lr``.
    Recurrent states are carried across updates and reset where episodes end.
    ``network(env)`` builds the actor-critic; ``train/episode_return`` and
    ``train/success_rate`` are means over the last ``stats_window`` episodes.

    The update's steps are kept in :attr:`rollout`, a
    :class:`~procmem.algorithms.rollouts.RolloutStorage` of ``n_steps * num_envs`` rows.

    Evaluation (:func:`~procmem.algorithms.evaluation.evaluate_policy`) runs on the eval env
    from fixed seeds, taking the policy's most likely action (``eval_policy="greedy"``) or
    an action sampled from it (``"sample"``, from a generator seeded with the episode seed,
    so evaluations repeat and training's draws are untouched). A greedy policy that reads
    only the current frame repeats itself wherever its choice leaves the frame as it was
    (staying, walking into a wall), so it can stall until the episode ends; the I2A paper
    reports the stochastic policy's scores. Envs with stages report the success rate of
    every eval stage, others the episode return and steps, and success where the env
    reports it; ``train/success_rate`` too needs it.
    """

    env_needs: tuple[type, ...] = ()  # any env with discrete actions its network reads
    # policy.pt: the trained network, for later runs (agent.policy_run of agent=env_model)
    artifacts = (Artifact("policy.pt", lambda a2c, path: save_policy(a2c.network, a2c.net, path)),)

    def __init__(
        self,
        env: BatchedEnv,
        eval_env: BatchedEnv,
        device: torch.device,
        seed: int,
        network: Annotated[NetworkFactory, Component()],
        *,
        n_steps: RolloutSteps = 5,
        gamma: Discount = 0.99,
        lr: LearningRate = 7e-4,
        optimizer: OptimizerName = "rmsprop",
        value_coef: Annotated[float, AtLeast(0.0)] = 0.5,
        entropy_coef: Annotated[float, AtLeast(0.0)] = 0.01,
        max_grad_norm: GradNorm = 0.5,
        normalize_advantages: bool = False,
        bootstrap_truncated: bool = True,
        stats_window: Annotated[int, AtLeast(1)] = 100,
        eval_policy: EvalPolicy = "greedy",
    ) -> None:
        self.env, self.eval_env = env, eval_env
        self.device, self.seed = device, seed
        self.n_steps, self.gamma = n_steps, gamma
        self.value_coef, self.entropy_coef = value_coef, entropy_coef
        self.max_grad_norm = max_grad_norm
        self.normalize_advantages = normalize_advantages
        self.bootstrap_truncated = bootstrap_truncated
        self.stats_window = stats_window
        self.eval_policy = eval_policy
        self.network = network
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.net = network(env).to(device)
        self.optimizer = OPTIMIZERS[optimizer](self.trained_parameters(), lr=lr)
        self.generator = torch.Generator(device=device).manual_seed(seed)
        self.rollout = RolloutStorage(n_steps * env.num_envs, self.rollout_fields(), device)
        self.obs, _ = env.reset(seed=seed)
        self.state = self.net.initial_state(env.num_envs)
        self.episode_return = np.zeros(env.num_envs)
        self.finished: list[tuple[float, float]] = []  # (return, correct) of recent episodes
        self.episodes = 0  # finished episodes, all told
        self.env_steps = 0

    # --- the algorithm protocol ---------------------------------------------------------------

    def train_iteration(self) -> dict[str, float]:
        start = time.perf_counter()
        log_probs, values, entropies = [], [], []  # the loss's terms, with their gradients
        for _ in range(self.n_steps):
            obs_tensors = as_tensors(self.obs, self.device)
            logits, value, self.state = self.net(obs_tensors, self.state)
            dist = torch.distributions.Categorical(logits=logits)
            action = torch.multinomial(dist.probs, 1, generator=self.generator).squeeze(1)
            obs, reward, terminated, truncated, info = self.env.step(action.cpu().numpy())
            done = terminated | truncated
            self._track_episodes(reward, done, info)
            if self.bootstrap_truncated:
                reward = reward + self.gamma * self._final_values(truncated & ~terminated, info)
            log_probs.append(dist.log_prob(action))
            entropies.append(dist.entropy())
            values.append(value)
            done_t = torch.as_tensor(done, dtype=torch.float32, device=self.device)
            self.rollout.add(reward=reward, done=done_t, **self.step_fields(
                obs_tensors, action, logits.detach(), obs, done, info))
            self.state = self.state * (1.0 - done_t).unsqueeze(1)
            self.obs = obs
        with torch.no_grad():
            _, bootstrap, _ = self.net(as_tensors(self.obs, self.device), self.state)
        rewards, dones = (self.rollout.get(name).view(self.n_steps, -1)
                          for name in ("reward", "done"))
        returns = n_step_returns(rewards, dones, bootstrap, self.gamma)
        values_t = torch.stack(values)
        advantages = (returns - values_t).detach()
        if self.normalize_advantages:
            advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
        policy_loss = -(torch.stack(log_probs) * advantages).mean()
        value_loss = (returns - values_t).pow(2).mean()
        entropy = torch.stack(entropies).mean()
        loss = policy_loss + self.value_coef * value_loss - self.entropy_coef * entropy
        check_finite("the A2C loss", loss)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = nn.utils.clip_grad_norm_(self.trained_parameters(), self.max_grad_norm)
        check_finite("the A2C gradient norm", grad_norm)
        step_checked(self.optimizer, "A2C")
        self.state = self.state.detach()
        samples = self.n_steps * self.env.num_envs
        self.env_steps += samples
        metrics = {
            "train/loss_policy": policy_loss.item(),
            "train/loss_value": value_loss.item(),
            "train/entropy": entropy.item(),
            "train/grad_norm": float(grad_norm),
            "train/env_steps": float(self.env_steps),
            "train/episodes": float(self.episodes),
            **self.auxiliary_updates(),
        }
        metrics["perf/sps"] = samples / (time.perf_counter() - start)
        if self.finished:
            recent = np.array(self.finished[-self.stats_window:])
            metrics["train/episode_return"] = float(recent[:, 0].mean())
            if not np.isnan(recent[:, 1]).all():  # the env reports which episodes succeeded
                metrics["train/success_rate"] = float(np.nanmean(recent[:, 1]))
        return metrics

    def trained_parameters(self) -> list[nn.Parameter]:
        """The parameters the A2C loss trains (all of the network's here)."""
        return list(self.net.parameters())

    def rollout_fields(self) -> dict[str, Field]:
        """The fields of :attr:`rollout`, one row per env per step: the ``reward`` (with a
        truncated episode's bootstrap) and ``done`` of A2C's returns, and those a subclass's
        :meth:`step_fields` adds for its :meth:`auxiliary_updates`."""
        return {"reward": Field((), np.float32), "done": Field((), np.float32)}

    def step_fields(self, obs: Tensor | dict[str, Tensor], action: Tensor, logits: Tensor,
                    next_obs: Observations, done: np.ndarray, info: dict[str, Any]
                    ) -> dict[str, Any]:
        """A subclass's own :attr:`rollout` fields for one env step, from the observations
        as tensors ``obs``, the ``action`` taken, the policy's ``logits`` (detached) and what
        the env returned; none here."""
        return {}

    def auxiliary_updates(self) -> dict[str, float]:
        """Updates of a subclass's own after each A2C step, from :attr:`rollout`, and their
        metrics; none here."""
        return {}

    def evaluate(self, episodes: int) -> dict[str, float]:
        """Episodes of the ``eval_policy``: the success rate per eval stage, or return, steps
        and success (:func:`~procmem.algorithms.evaluation.evaluate_policy`)."""
        return evaluate_policy(self.eval_env, self.net, self.device, self.seed, episodes,
                               self.eval_policy)

    def explain(self, per_stage: int) -> list[dict[str, Any]]:
        """A few evaluation episodes per eval stage, spelled out (problem, program, answer,
        reward); nothing for envs without stages."""
        return explain_policy(self.eval_env, self.net, self.device, self.seed, per_stage,
                              self.eval_policy)

    def state_dict(self) -> dict[str, Any]:
        return {
            "net": copy.deepcopy(self.net.state_dict()),
            "optimizer": copy.deepcopy(self.optimizer.state_dict()),
            "generator": self.generator.get_state(),
            "env": self.env.state_dict(),
            "obs": copy_observations(self.obs),
            "state": self.state.detach().clone(),
            "episode_return": self.episode_return.copy(),
            "finished": list(self.finished),
            "env_steps": self.env_steps,
            "episodes": self.episodes,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.net.load_state_dict(state["net"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        self.env.load_state_dict(state["env"])
        self.obs = copy_observations(state["obs"])
        self.state = state["state"].to(self.device)
        self.episode_return = np.array(state["episode_return"])
        self.finished = [tuple(e) for e in state["finished"]]
        self.env_steps = int(state["env_steps"])
        self.episodes = int(state["episodes"])

    def record_episode(self, max_frames: int = 300) -> np.ndarray | None:
        """The frames ``[T, 3, H, W]`` of one greedy episode of eval env 0 (a fixed seed; at
        most ``max_frames``, longer episodes are cut there), ``None`` where the observations
        are not images (:func:`~procmem.algorithms.evaluation.record_episode`)."""
        return record_episode(self.eval_env, self.net, self.device,
                              self.seed + RECORD_SEED_OFFSET, max_frames)

    # --- helpers ------------------------------------------------------------------------------

    def _track_episodes(self, reward: np.ndarray, done: np.ndarray, info: dict) -> None:
        self.episode_return += reward
        correct = info.get("success")
        for i in np.flatnonzero(done):
            solved = float("nan") if correct is None else float(correct[i])
            self.finished.append((float(self.episode_return[i]), solved))
        self.episodes += int(done.sum())
        self.finished = self.finished[-self.stats_window:]
        self.episode_return[done] = 0.0

    @torch.no_grad()
    def _final_values(self, rows: np.ndarray, info: dict[str, Any]) -> np.ndarray:
        """Value estimates of the final observations of the envs in mask ``rows`` (0 elsewhere),
        from the recurrent state the episode had reached."""
        values = np.zeros(len(rows), dtype=np.float32)
        index = np.flatnonzero(rows)
        if len(index):
            final_obs = as_tensors(take_rows(info["final_obs"], index), self.device)
            state = self.state[torch.as_tensor(index, device=self.device)]
            _, value, _ = self.net(final_obs, state)
            values[index] = value.cpu().numpy()
        return values
