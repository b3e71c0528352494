"""Evaluation episodes of a policy network, for every algorithm that acts from one.

The network is an actor-critic of :mod:`procmem.models.networks`: ``initial_state(n)`` and
``net(obs, state) -> (logits, value, state)``. It acts greedily (the most likely action) or
samples its actions (``eval_policy``) from a generator seeded with the episode seed, so
evaluations repeat and training's draws are untouched. Envs with stages
(:class:`~procmem.envs.protocols.StagedEnv`) are evaluated stage by stage.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from procmem.envs.protocols import BatchedEnv, PixelEnv, StagedEnv
from procmem.models.observations import Observations, as_tensors

EVAL_POLICIES = ("greedy", "sample")
EVAL_SEED_STRIDE = 7919  # evaluations of stage k start from seed + stride * (k + 1)
RECORD_SEED_OFFSET = 104729  # the recorded episode's seed, after the run's own


class PolicyStep(NamedTuple):
    """One step of the batch: the ``action`` taken and what the env returned."""

    action: np.ndarray
    next_obs: Observations
    reward: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    info: dict[str, Any]


def choose_actions(logits: torch.Tensor, eval_policy: str,
                   sampler: torch.Generator | None = None) -> np.ndarray:
    """The most likely actions (``"greedy"``), or actions drawn from the softmax of
    ``logits`` with ``sampler`` (``"sample"``)."""
    if eval_policy == "greedy":
        return logits.argmax(1).cpu().numpy()
    probs = torch.softmax(logits, dim=1)
    return torch.multinomial(probs, 1, generator=sampler)[:, 0].cpu().numpy()


@torch.no_grad()
def policy_steps(env: BatchedEnv, net: nn.Module, device: torch.device, obs: Observations,
                 seed: int, eval_policy: str = "greedy") -> Iterator[PolicyStep]:
    """Step ``env`` from its observations ``obs`` (just reset) with ``net``'s actions, as
    long as the caller reads; sampled actions come from a generator seeded with ``seed``."""
    state = net.initial_state(env.num_envs)
    sampler = torch.Generator(device=device).manual_seed(seed)
    while True:
        logits, _, state = net(as_tensors(obs, device), state)
        action = choose_actions(logits, eval_policy, sampler)
        next_obs, reward, terminated, truncated, info = env.step(action)
        yield PolicyStep(action, next_obs, reward, terminated, truncated, info)
        obs = next_obs


def run_episodes(env: BatchedEnv, net: nn.Module, device: torch.device, seed: int,
                 episodes: int, eval_policy: str, stage: int | None = None
                 ) -> list[dict[str, Any]]:
    """``episodes`` episodes of ``net``, in rounds of one episode per env, each round reset
    from its own seed: ``seed`` (plus ``EVAL_SEED_STRIDE * (stage + 1)`` at a ``stage`` of
    an env with stages) plus the round's number. Each episode's record holds its
    ``reward`` (rounded to 6 places) and, without a stage, its ``steps`` and ``success``
    (``None`` where the env does not report it); at a stage, the problem
    (:meth:`StagedEnv.describe`), the ``program`` the agent emitted, its ``answer`` and
    whether it was ``correct``."""
    records, round_ = [], 0
    while len(records) < episodes:
        start = seed + EVAL_SEED_STRIDE * (0 if stage is None else stage + 1) + round_
        if stage is None:
            obs, _ = env.reset(seed=start)
        else:
            obs, _ = env.reset(seed=start, options={"stages": stage})
            problems = env.describe()
        running = np.ones(env.num_envs, dtype=bool)
        returns, solved = np.zeros(env.num_envs), np.zeros(env.num_envs, dtype=bool)
        answers = np.zeros(env.num_envs, dtype=np.int64)
        actions = []
        for step in policy_steps(env, net, device, obs, start, eval_policy):
            actions.append(np.where(running, step.action, -1))
            returns += np.where(running, step.reward, 0.0)
            ended = running & (step.terminated | step.truncated)
            success = step.info.get("success")
            reports_success = success is not None
            if reports_success:
                solved[ended] = success[ended]
            if stage is not None:
                answers[ended] = step.info["final_answer"][ended]
            running &= ~ended
            if not running.any():
                break
        emitted = np.stack(actions, axis=1)
        for i in range(env.num_envs):
            taken = emitted[i][emitted[i] >= 0].tolist()
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


def episode_metrics(prefix: str, episodes: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Means over ``episodes`` (records with ``reward``, ``steps`` and ``success``, ``None``
    where the env does not report it): ``{prefix}/episode_return`` and ``episode_steps``,
    and with success ``success_rate`` and ``solved_steps`` (steps of the solved episodes,
    where any was)."""
    metrics = {
        f"{prefix}/episode_return": float(np.mean([e["reward"] for e in episodes])),
        f"{prefix}/episode_steps": float(np.mean([e["steps"] for e in episodes])),
    }
    if episodes[0]["success"] is not None:
        metrics[f"{prefix}/success_rate"] = float(np.mean([e["success"] for e in episodes]))
        solved = [e["steps"] for e in episodes if e["success"]]
        if solved:
            metrics[f"{prefix}/solved_steps"] = float(np.mean(solved))
    return metrics


def evaluate_policy(env: BatchedEnv, net: nn.Module, device: torch.device, seed: int,
                    episodes: int, eval_policy: str) -> dict[str, float]:
    """``episodes`` episodes of ``net`` (:func:`run_episodes`) summed up as ``eval/...``
    metrics. Envs with stages report the share of exact answers of every eval stage,
    ``eval/success_rate_stage{k}``, and ``eval/success_rate``, the mean over the stages the
    env trains on (stages only evaluated, never trained, stay out of it); other envs
    report :func:`episode_metrics`."""
    if not isinstance(env, StagedEnv):
        return episode_metrics("eval", run_episodes(env, net, device, seed, episodes,
                                                    eval_policy))
    metrics = {}
    for stage in env.eval_stages:
        records = run_episodes(env, net, device, seed, episodes, eval_policy, stage)
        metrics[f"eval/success_rate_stage{stage}"] = float(
            np.mean([r["correct"] for r in records]))
    trained = [metrics[f"eval/success_rate_stage{stage}"] for stage in env.stages]
    metrics["eval/success_rate"] = float(np.mean(trained))
    return metrics


def explain_policy(env: BatchedEnv, net: nn.Module, device: torch.device, seed: int,
                   per_stage: int, eval_policy: str) -> list[dict[str, Any]]:
    """The records of ``per_stage`` episodes per eval stage (:func:`run_episodes`), spelled
    out; nothing for envs without stages."""
    if not isinstance(env, StagedEnv):
        return []
    return [record for stage in env.eval_stages
            for record in run_episodes(env, net, device, seed, per_stage, eval_policy, stage)]


def record_episode(env: BatchedEnv, net: nn.Module, device: torch.device, seed: int,
                   max_frames: int) -> np.ndarray | None:
    """The frames ``[T, 3, H, W]`` of one greedy episode of env 0 (the whole batch steps,
    reset from ``seed``): the first, then one after every step up to the episode's end, at
    most ``max_frames`` of them; ``None`` where the observations are not images."""
    if not isinstance(env, PixelEnv):
        return None
    obs, _ = env.reset(seed=seed)
    frames = [obs[0]]
    steps = policy_steps(env, net, device, obs, seed)
    while len(frames) < max_frames:
        step = next(steps)
        if step.terminated[0] or step.truncated[0]:
            frames.append(step.info.get("final_obs", step.next_obs)[0])
            break
        frames.append(step.next_obs[0])
    return np.stack(frames)
