"""Random-policy statistics of MiniPacman: per whole episode, its length, return and the food,
pills and ghosts eaten, for the batched env and for its one-env oracle.

The tests compare the two in distribution (their random numbers differ), and
``benchmarks/minipacman_random_policy.py`` prints them per mode.
"""

from __future__ import annotations

import random

import numpy as np

from procmem.envs.minipacman import MiniPacman
from procmem.envs.minipacman_oracle import OracleMiniPacman

STATISTICS = ("length", "return", "food", "pills", "ghosts")


def env_first_episodes(mode: str, episodes: int, seed: int) -> np.ndarray:
    """Per row of a batch of ``episodes`` envs, its first episode's statistics
    [episodes, len(STATISTICS)] under uniform random actions.

    Each row contributes exactly its first episode: collecting the first N episodes to end
    from a smaller batch would favour short ones. Once at most half the rows are still in
    their first episode, those go on alone in a smaller batch (each env draws from its own
    stream, so a row runs the same in any batch)."""
    env = MiniPacman(num_envs=episodes, mode=mode)
    env.reset(seed=seed)
    actions = np.random.default_rng(seed + 1)
    stats = np.zeros((episodes, len(STATISTICS)))
    episode = np.arange(episodes)  # the episode each row plays
    running = np.ones(episodes, dtype=bool)
    while running.any():
        _, _, terminated, truncated, info = env.step(actions.integers(0, 5, env.num_envs))
        stats[episode[running], 2:] += info["events"][running, 1:4]
        ended = running & (terminated | truncated)
        stats[episode[ended], 0] = info["episode_steps"][ended]
        stats[episode[ended], 1] = info["episode_return"][ended]
        running &= ~ended
        left = int(running.sum())
        if 0 < left <= env.num_envs // 2:
            state = env.state_dict()
            smaller = MiniPacman(num_envs=left, mode=mode)
            smaller.load_state_dict({name: value[running] if name in env.state_arrays else value
                                     for name, value in state.items()})
            env, episode, running = smaller, episode[running], np.ones(left, dtype=bool)
    return stats


def oracle_episodes(mode: str, episodes: int, seed: int) -> np.ndarray:
    """The same statistics over ``episodes`` oracle episodes (unrendered) under uniform
    random actions."""
    env = OracleMiniPacman(mode, seed=seed, render=False)
    actions = random.Random(seed + 1)
    stats = np.zeros((episodes, len(STATISTICS)))
    for episode in range(episodes):
        env.reset()
        total, eaten, done = 0.0, np.zeros(3), False
        while not done:
            _, reward, terminated, truncated, events = env.step(actions.randrange(5))
            total += reward
            eaten += events[1:4]
            done = terminated or truncated
        stats[episode] = (env.steps, total, *eaten)
    return stats


def mean_and_error(stats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per statistic, the mean over episodes and its standard error."""
    return stats.mean(axis=0), stats.std(axis=0, ddof=1) / np.sqrt(len(stats))
