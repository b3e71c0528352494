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

from procmem.envs.protocols import BatchedEnv, PixelEnv, StagedEnv
from procmem.models.observations import as_tensors, copy_observations, take_rows
from procmem.runtime import check_finite, step_checked
from procmem.settings import Above, AtLeast, AtMost, Component, OneOf, configurable

OPTIMIZERS = {"adam": torch.optim.Adam, "rmsprop": torch.optim.RMSprop}
EVAL_POLICIES = ("greedy", "sample")
EVAL_SEED_STRIDE = 7919  # evaluations of stage k start from seed + stride * (k + 1)
RECORD_SEED_OFFSET = 104729  # the recorded episode's seed, after the run's own

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

    Evaluation runs on the eval env from fixed seeds, taking the policy's most likely
    action (``eval_policy="greedy"``) or an action sampled from it (``"sample"``, from a
    generator seeded with the episode seed, so evaluations repeat and training's draws are
    untouched). A greedy policy that reads only the current frame repeats itself wherever
    its choice leaves the frame as it was (staying, walking into a wall), so it can stall
    until the episode ends; the I2A paper reports the stochastic policy's scores. Envs with stages
    (:class:`~procmem.envs.protocols.StagedEnv`) report the share of exact answers of every
    eval stage, ``eval/success_rate_stage{k}``, and ``eval/success_rate``, the mean over the
    stages the env trains on (stages only evaluated, never trained, stay out of it). Other
    envs report ``eval/episode_return`` and ``eval/episode_steps``, and where the env reports
    success ``eval/success_rate`` and ``eval/solved_steps`` (steps of the solved episodes);
    ``train/success_rate`` too needs it.
    """

    env_needs: tuple[type, ...] = ()  # any env with discrete actions its network reads

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
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.net = network(env).to(device)
        self.optimizer = OPTIMIZERS[optimizer](self.trained_parameters(), lr=lr)
        self.generator = torch.Generator(device=device).manual_seed(seed)
        self.obs, _ = env.reset(seed=seed)
        self.state = self.net.initial_state(env.num_envs)
        self.episode_return = np.zeros(env.num_envs)
        self.finished: list[tuple[float, float]] = []  # (return, correct) of recent episodes
        self.episodes = 0  # finished episodes, all told
        self.env_steps = 0

    # --- the algorithm protocol ---------------------------------------------------------------

    def train_iteration(self) -> dict[str, float]:
        start = time.perf_counter()
        log_probs, values, entropies, rewards, dones = [], [], [], [], []
        steps = []
        for _ in range(self.n_steps):
            obs_tensors = as_tensors(self.obs, self.device)
            logits, value, self.state = self.net(obs_tensors, self.state)
            dist = torch.distributions.Categorical(logits=logits)
            action = torch.multinomial(dist.probs, 1, generator=self.generator).squeeze(1)
            obs, reward, terminated, truncated, info = self.env.step(action.cpu().numpy())
            done = terminated | truncated
            steps.append({"obs": obs_tensors, "action": action, "logits": logits.detach(),
                          "next_obs": obs, "done": done, "info": info})
            self._track_episodes(reward, done, info)
            if self.bootstrap_truncated:
                reward = reward + self.gamma * self._final_values(truncated & ~terminated, info)
            log_probs.append(dist.log_prob(action))
            entropies.append(dist.entropy())
            values.append(value)
            rewards.append(torch.as_tensor(reward, dtype=torch.float32, device=self.device))
            dones.append(torch.as_tensor(done, dtype=torch.float32, device=self.device))
            self.state = self.state * (1.0 - dones[-1]).unsqueeze(1)
            self.obs = obs
        with torch.no_grad():
            _, bootstrap, _ = self.net(as_tensors(self.obs, self.device), self.state)
        returns = n_step_returns(torch.stack(rewards), torch.stack(dones), bootstrap, self.gamma)
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
            **self.auxiliary_updates(steps),
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

    def auxiliary_updates(self, steps: list[dict[str, Any]]) -> dict[str, float]:
        """Updates of a subclass's own after each A2C step, and their metrics; none here.
        ``steps`` holds, per env step of the update, the observations as tensors ``obs``, the
        ``action`` taken, the policy's ``logits`` (detached) and what the env returned:
        ``next_obs``, ``done`` and ``info``."""
        return {}

    @torch.no_grad()
    def evaluate(self, episodes: int) -> dict[str, float]:
        """Episodes of the ``eval_policy``: the success rate per eval stage, or return, steps
        and success."""
        if not isinstance(self.eval_env, StagedEnv):
            records = self._eval_episodes(episodes)
            metrics = {
                "eval/episode_return": float(np.mean([r["reward"] for r in records])),
                "eval/episode_steps": float(np.mean([r["steps"] for r in records])),
            }
            if records[0]["success"] is not None:  # the env reports which episodes succeeded
                metrics["eval/success_rate"] = float(np.mean([r["success"] for r in records]))
                solved = [r["steps"] for r in records if r["success"]]
                if solved:
                    metrics["eval/solved_steps"] = float(np.mean(solved))
            return metrics
        metrics = {}
        for stage in self.eval_env.eval_stages:
            records = self._eval_episodes(episodes, stage)
            metrics[f"eval/success_rate_stage{stage}"] = float(
                np.mean([r["correct"] for r in records]))
        trained = [metrics[f"eval/success_rate_stage{stage}"] for stage in self.eval_env.stages]
        metrics["eval/success_rate"] = float(np.mean(trained))
        return metrics

    @torch.no_grad()
    def explain(self, per_stage: int) -> list[dict[str, Any]]:
        """A few evaluation episodes per eval stage, spelled out (problem, program, answer,
        reward); nothing for envs without stages."""
        if not isinstance(self.eval_env, StagedEnv):
            return []
        return [record for stage in self.eval_env.eval_stages
                for record in self._eval_episodes(per_stage, stage)]

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

    @torch.no_grad()
    def record_episode(self, max_frames: int = 300) -> np.ndarray | None:
        """The frames ``[T, 3, H, W]`` of one greedy episode of eval env 0 (the whole batch
        steps; a fixed seed): the first, then one after every step up to the episode's end,
        at most ``max_frames`` of them (longer episodes are cut there); ``None`` where the
        observations are not images."""
        env = self.eval_env
        if not isinstance(env, PixelEnv):
            return None
        obs, _ = env.reset(seed=self.seed + RECORD_SEED_OFFSET)
        state = self.net.initial_state(env.num_envs)
        frames = [obs[0]]
        while len(frames) < max_frames:
            logits, _, state = self.net(as_tensors(obs, self.device), state)
            obs, _, terminated, truncated, info = env.step(logits.argmax(1).cpu().numpy())
            if terminated[0] or truncated[0]:
                frames.append(info.get("final_obs", obs)[0])
                break
            frames.append(obs[0])
        return np.stack(frames)

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

    def _eval_episodes(self, episodes: int, stage: int | None = None) -> list[dict[str, Any]]:
        """``episodes`` episodes of the ``eval_policy`` (started at ``stage`` for envs with
        stages): their return, steps and success, and for staged envs what was asked, the
        program the agent emitted and its answer. Fixed seeds make evaluations comparable."""
        env, records, round_ = self.eval_env, [], 0
        while len(records) < episodes:
            seed = self.seed + EVAL_SEED_STRIDE * (0 if stage is None else stage + 1) + round_
            if stage is None:
                obs, _ = env.reset(seed=seed)
            else:
                obs, _ = env.reset(seed=seed, options={"stages": stage})
                problems = env.describe()
            state = self.net.initial_state(env.num_envs)
            sampler = torch.Generator(device=self.device).manual_seed(seed)
            running = np.ones(env.num_envs, dtype=bool)
            returns, solved = np.zeros(env.num_envs), np.zeros(env.num_envs, dtype=bool)
            answers = np.zeros(env.num_envs, dtype=np.int64)
            actions = []
            while running.any():
                logits, _, state = self.net(as_tensors(obs, self.device), state)
                if self.eval_policy == "greedy":
                    action = logits.argmax(1).cpu().numpy()
                else:
                    probs = torch.softmax(logits, dim=1)
                    action = torch.multinomial(probs, 1, generator=sampler)[:, 0].cpu().numpy()
                obs, reward, terminated, truncated, info = env.step(action)
                actions.append(np.where(running, action, -1))
                returns += np.where(running, reward, 0.0)
                ended = running & (terminated | truncated)
                success = info.get("success")
                reports_success = success is not None
                if reports_success:
                    solved[ended] = success[ended]
                if stage is not None:
                    answers[ended] = info["final_answer"][ended]
                running &= ~ended
            emitted = np.stack(actions, axis=1)
            for i in range(env.num_envs):
                taken = [a for a in emitted[i] if a >= 0]
                reward = round(float(returns[i]), 6)
                if stage is None:
                    records.append({"reward": reward, "steps": len(taken),
                                    "success": bool(solved[i]) if reports_success else None})
                else:
                    records.append({**problems[i], "program": env.program(taken),
                                    "answer": int(answers[i]), "correct": bool(solved[i]),
                                    "reward": reward})
            round_ += 1
        return records[:episodes]

