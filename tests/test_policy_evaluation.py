"""The evaluation loop of policy networks: rounds of episodes from fixed seeds, greedy or
sampled actions, per-stage metrics for envs with stages, recorded episodes."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from gymnasium import spaces
from torch import nn

from procmem.algorithms.evaluation import (
    EVAL_SEED_STRIDE,
    episode_metrics,
    evaluate_policy,
    explain_policy,
    record_episode,
    run_episodes,
)

CPU = torch.device("cpu")


class Countdown:
    """Three envs whose episodes last 1, 2 and 3 steps (env ``i``: ``lengths[i]``); reward 1
    a step; an episode succeeds when its last action is 1. Observations are the step count,
    as one-pixel RGB frames where ``obs_shape`` is set. Remembers its reset seeds and the
    actions it was sent."""

    num_envs, num_actions = 3, 2
    single_action_space = spaces.Discrete(2)

    def __init__(self, lengths: tuple[int, ...] = (1, 2, 3)) -> None:
        self.lengths = np.array(lengths)
        self.single_observation_space = spaces.Box(0.0, 10.0, (3, 1, 1), np.float32)
        self.seeds: list[int | None] = []
        self.sent: list[np.ndarray] = []

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple:
        self.seeds.append(seed)
        self.t = np.zeros(self.num_envs, dtype=np.int64)
        return self._obs(), {}

    def step(self, actions: np.ndarray) -> tuple:
        self.sent.append(np.array(actions))
        self.t += 1
        done = self.t >= self.lengths
        info = {"success": done & (actions == 1), "final_obs": self._obs()}
        self.t[done] = 0
        return (self._obs(), np.ones(self.num_envs, dtype=np.float32), done,
                np.zeros(self.num_envs, dtype=bool), info)

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    def _obs(self) -> np.ndarray:
        return np.broadcast_to(self.t[:, None, None, None], (self.num_envs, 3, 1, 1)).astype(
            np.float32)


class PixelCountdown(Countdown):
    obs_shape = (3, 1, 1)


class Quiz(Countdown):
    """One-step problems in stages 0..2 (trained: 0 and 1); an answer is right when it is
    the stage."""

    num_actions, num_stages, stages, eval_stages = 3, 3, (0, 1), (0, 1, 2)
    single_action_space = spaces.Discrete(3)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple:
        self.stage = options["stages"]
        return super().reset(seed=seed)

    def step(self, actions: np.ndarray) -> tuple:
        obs, reward, terminated, truncated, info = super().step(actions)
        terminated[:] = True
        info.update(success=actions == self.stage, final_answer=np.array(actions))
        return obs, reward, terminated, truncated, info

    def set_stage_sampler(self, sampler: Any) -> None: ...

    def describe(self) -> list[dict[str, Any]]:
        return [{"stage": self.stage}] * self.num_envs

    @staticmethod
    def program(actions: list[int]) -> str:
        return " ".join(map(str, actions))


class FixedLogits(nn.Module):
    """A policy with the same ``logits`` everywhere."""

    def __init__(self, *logits: float) -> None:
        super().__init__()
        self.logits = torch.tensor(logits)

    def initial_state(self, batch: int) -> torch.Tensor:
        return torch.zeros(batch, 0)

    def forward(self, obs: torch.Tensor, state: torch.Tensor) -> tuple:
        return self.logits.expand(len(obs), -1), torch.zeros(len(obs)), state


def test_episodes_run_in_seeded_rounds_and_count_each_episode_up_to_its_end():
    env = Countdown()
    records = run_episodes(env, FixedLogits(0.0, 1.0), CPU, 10, 5, "greedy")
    assert env.seeds == [10, 11]  # two rounds of three episodes, the last one cut
    assert [r["steps"] for r in records] == [1, 2, 3, 1, 2]
    assert [r["reward"] for r in records] == [1.0, 2.0, 3.0, 1.0, 2.0]  # none after the end
    assert all(r["success"] for r in records)
    metrics = evaluate_policy(env, FixedLogits(0.0, 1.0), CPU, 10, 5, "greedy")
    assert metrics == {"eval/episode_return": 1.8, "eval/episode_steps": 1.8,
                       "eval/success_rate": 1.0, "eval/solved_steps": 1.8}


def test_greedy_takes_the_most_likely_action_and_sample_draws_repeatably():
    greedy_env = Countdown()
    evaluate_policy(greedy_env, FixedLogits(1.0, 0.0), CPU, 0, 30, "greedy")
    assert (np.concatenate(greedy_env.sent) == 0).all()
    env = Countdown()
    first = evaluate_policy(env, FixedLogits(1.0, 0.0), CPU, 0, 30, "sample")
    sent = np.concatenate(env.sent)
    assert set(sent.tolist()) == {0, 1} and 0.5 < (sent == 0).mean() < 0.9  # p(0) = 0.73
    env.sent.clear()
    assert evaluate_policy(env, FixedLogits(1.0, 0.0), CPU, 0, 30, "sample") == first
    assert np.array_equal(np.concatenate(env.sent), sent)
    assert 0.0 < first["eval/success_rate"] < 1.0


def test_envs_with_stages_report_every_eval_stage_and_average_the_trained_ones():
    env = Quiz()
    metrics = evaluate_policy(env, FixedLogits(0.0, 1.0, 0.0), CPU, 0, 4, "greedy")
    assert metrics == {"eval/success_rate_stage0": 0.0, "eval/success_rate_stage1": 1.0,
                       "eval/success_rate_stage2": 0.0, "eval/success_rate": 0.5}
    assert env.seeds[::2] == [EVAL_SEED_STRIDE * (stage + 1) for stage in (0, 1, 2)]
    records = explain_policy(env, FixedLogits(0.0, 1.0, 0.0), CPU, 0, 1, "greedy")
    assert records == [{"stage": stage, "program": "1", "answer": 1, "correct": stage == 1,
                        "reward": 1.0} for stage in (0, 1, 2)]
    assert explain_policy(Countdown(), FixedLogits(0.0, 1.0), CPU, 0, 1, "greedy") == []


def test_episode_metrics_leave_out_success_where_the_env_does_not_report_it():
    unknown = [{"reward": 1.0, "steps": 2, "success": None}]
    assert episode_metrics("eval", unknown) == {"eval/episode_return": 1.0,
                                                "eval/episode_steps": 2.0}
    failed = [{"reward": 0.0, "steps": 4, "success": False}]
    assert episode_metrics("train", failed) == {
        "train/episode_return": 0.0, "train/episode_steps": 4.0, "train/success_rate": 0.0}


@pytest.mark.parametrize(("max_frames", "expected"), [(300, [0, 1, 2, 3]), (2, [0, 1])])
def test_a_recorded_episode_holds_env_zeros_frames_up_to_its_end(max_frames, expected):
    env = PixelCountdown(lengths=(3, 1, 1))
    frames = record_episode(env, FixedLogits(0.0, 1.0), CPU, 5, max_frames)
    assert frames[:, 0, 0, 0].tolist() == expected  # the last: the final frame, not a reset
    assert env.seeds == [5]
    assert record_episode(Countdown(), FixedLogits(0.0, 1.0), CPU, 5, max_frames) is None
