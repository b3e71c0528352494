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
from procmem.algorithms.option_rollouts import DecisionCollector, evaluate_options, masked_logits
from procmem.algorithms.policy_file import save_policy
from procmem.algorithms.protocols import Artifact
from procmem.algorithms.rollouts import Field, RolloutStorage
from procmem.algorithms.skill_kit import (
    POLICIES_FILE,
    POLICY_DEFAULTS,
    SKILL_KINDS,
    SkillFeatures,
    SkillKit,
    check_saved_kit,
    library_metrics,
)
from procmem.algorithms.skill_options import NUM_SKILL_ACTIONS, SkillOptions
from procmem.envs.protocols import BatchedEnv, SubgoalEnv
from procmem.models.observations import Observations, as_tensors, copy_observations, take_rows
from procmem.runtime import check_finite, set_decayed_lr, step_checked
from procmem.settings import Above, AtLeast, AtMost, Component, OneOf, configurable
from procmem.skills.library import LIBRARY_FILE, SkillLibrary

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
    gradients are clipped to ``max_grad_norm`` and taken by ``optimizer`` at ``lr``, decayed
    linearly to 0 over ``lr_decay_iterations`` updates where that is set (Adam's steps do not
    shrink with the gradient, so a policy that has solved its task keeps moving at a
    constant rate; the decay lets it settle). The loss sees rewards times ``reward_scale``
    (values are learned in those units); logged returns are the env's.
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

    With a ``memory`` (a skill library, on envs with subgoal events) the policy also
    chooses skills as options (:mod:`procmem.algorithms.skill_options`): one action per
    subgoal, available where the library holds an applicable skill, run as ``skill_kind``
    skills of at most ``skill_step_budget`` steps (0: four times the grid size), whose
    policies read ``skill_features`` of their target. Rollouts
    then count decisions (:mod:`procmem.algorithms.option_rollouts`) and the library grows
    from the learner's own episodes.
    """

    env_needs: tuple[type, ...] = ()  # any env with discrete actions its network reads
    # policy.pt: the trained network, for later runs (agent.policy_run of agent=env_model);
    # with a memory, its skills too
    artifacts = (Artifact("policy.pt", lambda a2c, path: save_policy(a2c.network, a2c.net, path)),
                 Artifact(LIBRARY_FILE, lambda a2c, path: None if a2c.kit is None
                          else a2c.kit.memory.save(path), only_with="memory"),
                 Artifact(POLICIES_FILE, lambda a2c, path: None if a2c.kit is None
                          else a2c.kit.save_policies(path), only_with="memory"))

    def __init__(
        self,
        env: BatchedEnv,
        eval_env: BatchedEnv,
        device: torch.device,
        seed: int,
        network: Annotated[NetworkFactory, Component()],
        memory: SkillLibrary | None = None,
        *,
        n_steps: RolloutSteps = 5,
        gamma: Discount = 0.99,
        lr: LearningRate = 7e-4,
        optimizer: OptimizerName = "rmsprop",
        lr_decay_iterations: Annotated[int, AtLeast(0)] = 0,
        value_coef: Annotated[float, AtLeast(0.0)] = 0.5,
        entropy_coef: Annotated[float, AtLeast(0.0)] = 0.01,
        max_grad_norm: GradNorm = 0.5,
        normalize_advantages: bool = False,
        reward_scale: Annotated[float, Above(0.0)] = 1.0,
        bootstrap_truncated: bool = True,
        stats_window: Annotated[int, AtLeast(1)] = 100,
        eval_policy: EvalPolicy = "greedy",
        skill_kind: Annotated[str, OneOf(SKILL_KINDS)] = "closed_loop",
        skill_step_budget: Annotated[int, AtLeast(0)] = 0,
        skill_features: SkillFeatures = "offset",
    ) -> None:
        self.env, self.eval_env = env, eval_env
        self.device, self.seed = device, seed
        self.n_steps, self.gamma = n_steps, gamma
        self.lr, self.lr_decay_iterations, self.updates = lr, lr_decay_iterations, 0
        self.value_coef, self.entropy_coef = value_coef, entropy_coef
        self.max_grad_norm = max_grad_norm
        self.normalize_advantages = normalize_advantages
        self.reward_scale = reward_scale
        self.bootstrap_truncated = bootstrap_truncated
        self.stats_window = stats_window
        self.eval_policy = eval_policy
        self.network = network
        self.memory, self.kit, self.collector = memory, None, None
        if memory is not None:
            if not isinstance(env, SubgoalEnv):
                raise ValueError(f"a skill library needs subgoal events; {type(env).__name__} "
                                 "has none")
            self.kit = SkillKit(memory, env, device, seed, closed_loop=skill_kind == "closed_loop",
                                skill_features=skill_features, **POLICY_DEFAULTS)
            budget = skill_step_budget or 4 * env.size
            self.options = SkillOptions(self.kit, env, gamma, budget, learn=True)
            self.eval_options = (self.kit, eval_env, gamma, budget)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.net = network(env if memory is None else _WithSkillActions(env)).to(device)
        self.optimizer = OPTIMIZERS[optimizer](self.trained_parameters(), lr=lr)
        self.generator = torch.Generator(device=device).manual_seed(seed)
        self.rollout = RolloutStorage(n_steps * env.num_envs, self.rollout_fields(), device)
        self.obs, _ = env.reset(seed=seed)
        self.state = self.net.initial_state(env.num_envs)
        if memory is not None:
            self.collector = DecisionCollector(self.options, n_steps, self.state.shape[1], device)
        self.episode_return = np.zeros(env.num_envs)
        self.finished: list[tuple[float, float]] = []  # (return, correct) of recent episodes
        self.episodes = 0  # finished episodes, all told
        self.env_steps = 0

    # --- the algorithm protocol ---------------------------------------------------------------

    def train_iteration(self) -> dict[str, float]:
        start = time.perf_counter()
        if self.collector is None:
            log_probs, values_t, entropy_t, returns, samples = self._step_terms()
        else:
            log_probs, values_t, entropy_t, returns, samples = self._decision_terms()
        advantages = (returns - values_t).detach()
        if self.normalize_advantages:
            advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
        policy_loss = -(log_probs * advantages).mean()
        value_loss = (returns - values_t).pow(2).mean()
        entropy = entropy_t.mean()
        loss = policy_loss + self.value_coef * value_loss - self.entropy_coef * entropy
        check_finite("the A2C loss", loss)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.updates += 1
        lr = set_decayed_lr(self.optimizer, self.lr, self.updates, self.lr_decay_iterations)
        grad_norm = nn.utils.clip_grad_norm_(self.trained_parameters(), self.max_grad_norm)
        check_finite("the A2C gradient norm", grad_norm)
        step_checked(self.optimizer, "A2C")
        self.state = self.state.detach()
        self.env_steps += samples
        metrics = {
            "train/loss_policy": policy_loss.item(),
            "train/loss_value": value_loss.item(),
            "train/entropy": entropy.item(),
            "train/grad_norm": float(grad_norm),
            "train/lr": lr,
            "train/env_steps": float(self.env_steps),
            "train/episodes": float(self.episodes),
            **self.auxiliary_updates(),
        }
        if self.kit is not None:
            metrics.update(self._learn_skills())
        metrics["perf/sps"] = samples / (time.perf_counter() - start)
        if self.finished:
            recent = np.array(self.finished[-self.stats_window:])
            metrics["train/episode_return"] = float(recent[:, 0].mean())
            if not np.isnan(recent[:, 1]).all():  # the env reports which episodes succeeded
                metrics["train/success_rate"] = float(np.nanmean(recent[:, 1]))
        return metrics

    def _step_terms(self) -> tuple[Tensor, Tensor, Tensor, Tensor, int]:
        """Collect ``n_steps`` steps of every env: the loss's log-probabilities, values and
        entropies (with their gradients) and returns ``[T, B]``, and the env steps taken."""
        log_probs, values, entropies = [], [], []
        for _ in range(self.n_steps):
            obs_tensors = as_tensors(self.obs, self.device)
            logits, value, self.state = self.net(obs_tensors, self.state)
            dist = torch.distributions.Categorical(logits=logits)
            action = torch.multinomial(dist.probs, 1, generator=self.generator).squeeze(1)
            obs, reward, terminated, truncated, info = self.env.step(action.cpu().numpy())
            done = terminated | truncated
            self._track_episodes(reward, done, info)
            reward = reward * self.reward_scale
            if self.bootstrap_truncated:
                reward = reward + self.gamma * self.final_values(truncated & ~terminated, info)
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
        return (torch.stack(log_probs), torch.stack(values), torch.stack(entropies), returns,
                self.n_steps * self.env.num_envs)

    def _decision_terms(self) -> tuple[Tensor, Tensor, Tensor, Tensor, int]:
        """Collect a rollout of decisions among actions and skills; the same terms, one per
        decision, from the network run on the inputs each decision was chosen from."""
        batch, samples = self.collector.collect(self)
        logits, values, _ = self.net(batch.obs, batch.states)
        dist = torch.distributions.Categorical(logits=masked_logits(logits, batch.masks))
        return dist.log_prob(batch.actions), values, dist.entropy(), batch.returns, samples

    def _learn_skills(self) -> dict[str, float]:
        """Clone the subgoal policies from the demonstrations of the episodes that ended
        since the last update; count those episodes; return the library's statistics, how
        much skills did in them and the cloning losses."""
        episodes, self.options.finished = self.options.finished, []
        for episode in episodes:
            self.finished.append((episode["reward"], episode["success"]))
        self.episodes += len(episodes)
        self.finished = self.finished[-self.stats_window:]
        return {**library_metrics(self.kit.memory), **self.options.metrics("memory", episodes),
                **self.kit.train_policies()}

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
        if self.kit is not None:
            return evaluate_options(SkillOptions(*self.eval_options, learn=False), self.net,
                                    self.device, self.seed, episodes, self.eval_policy)
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
            "updates": self.updates,
            **({} if self.kit is None else {"memory": self.kit.memory.state_dict(),
                                            "policies": self.kit.state_dict(),
                                            "decisions": self.collector.state_dict()}),
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
        self.updates = int(state.get("updates", 0))  # checkpoints from before the lr decay
        if self.kit is not None:
            self.kit.memory.load_state_dict(state["memory"])
            self.kit.load_state_dict(state["policies"])
            self.collector.load_state_dict(state["decisions"])

    @classmethod
    def check_config(cls, run: Mapping[str, Any]) -> None:
        """A loaded library (``memory.load``) holds subgoal skills this run can use."""
        check_saved_kit(run, run["agent"].get("skill_kind", "closed_loop"))

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
    def final_values(self, rows: np.ndarray, info: dict[str, Any]) -> np.ndarray:
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


class _WithSkillActions:
    """``env`` as a network sees it when skills are actions too: ``num_actions`` grows by
    one per subgoal skill; everything else is the env's."""

    def __init__(self, env: SubgoalEnv) -> None:
        self._env = env
        self.num_actions = env.num_actions + NUM_SKILL_ACTIONS

    def __getattr__(self, name: str) -> Any:
        return getattr(self._env, name)
