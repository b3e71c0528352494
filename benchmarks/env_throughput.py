"""Batched env throughput on CPU: env steps per second by env and batch size.

Steps each env with uniform random actions (drawn ahead of the timed loop) and its full
observations (MiniPacman renders RGB frames), for each batch size, and prints steps/s.
MiniPacman is timed with each of ``--threads``, and side by side with its single-env
reference: the same rules stepped one env at a time in plain Python, rendering each frame
(:class:`procmem.envs.minipacman_oracle.OracleMiniPacman`, like the reference's PillEater).
Each MiniPacman rate is printed with its ratio to the reference's rate of the same run.
``cartpole`` is ``env=gymnasium`` (CartPole-v1, sync), printed with its ratio to Gymnasium's
own ``make_vec`` of the same batch, timed alternately with it: what procmem's wrapping
(episode recording for checkpoints, ``final_obs`` batching) costs per step.

    python benchmarks/env_throughput.py
    python benchmarks/env_throughput.py --envs minipacman --batch-sizes 4096 8192 --threads 2
    python benchmarks/env_throughput.py --envs cartpole --batch-sizes 1 16 256
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable
from functools import partial

import gymnasium
import numpy as np

from procmem.envs.expressions import ExpressionEnv
from procmem.envs.gridworld import GridWorld
from procmem.envs.gymnasium_env import GymnasiumEnv
from procmem.envs.minipacman import MiniPacman
from procmem.envs.minipacman_oracle import OracleMiniPacman
from procmem.envs.toolenv import ToolEnv

ACTION_BLOCK = 64
ENVS: dict[str, Callable[[int, int], object]] = {
    "gridworld": lambda n, threads: GridWorld(num_envs=n),  # random 8x8 layouts
    "toolenv": lambda n, threads: ToolEnv(num_envs=n),
    "expressions": lambda n, threads: ExpressionEnv(num_envs=n),
    "minipacman": lambda n, threads: MiniPacman(num_envs=n, threads=threads),
    "cartpole": lambda n, threads: GymnasiumEnv(id="CartPole-v1", num_envs=n),
}
THREADED = {"minipacman"}
MOST_GYMNASIUM_ENVS = 256  # larger batches of Python envs only take long to build
ROUNDS = 3  # cartpole and Gymnasium's own vector env alternate this many times


def gymnasium_vector_env(num_envs: int) -> gymnasium.vector.VectorEnv:
    """Gymnasium's own sync vector env of CartPole-v1: the baseline of ``cartpole``."""
    env = gymnasium.make_vec("CartPole-v1", num_envs=num_envs, vectorization_mode="sync")
    env.num_actions = env.single_action_space.n
    return env


def throughput(make: Callable[[int], object], num_envs: int, seconds: float,
               seed: int = 0) -> float:
    """Env steps per second of a ``num_envs`` batch over about ``seconds`` of stepping."""
    env = make(num_envs)
    env.reset(seed=seed)
    actions = np.random.default_rng(seed).integers(0, env.num_actions, (ACTION_BLOCK, num_envs))
    for row in actions[:4]:  # warm-up
        env.step(row)
    calls = 0
    start = time.perf_counter()
    while True:
        for row in actions:
            env.step(row)
        calls += len(actions)
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            env.close()
            return calls * num_envs / elapsed


def reference_throughput(seconds: float, seed: int = 0) -> float:
    """Steps per second of one :class:`OracleMiniPacman` under random actions."""
    env = OracleMiniPacman(seed=seed)
    actions = random.Random(seed)
    steps = 0
    start = time.perf_counter()
    while True:
        for _ in range(ACTION_BLOCK):
            _, _, terminated, truncated, _ = env.step(actions.randrange(5))
            if terminated or truncated:
                env.reset()
        steps += ACTION_BLOCK
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return steps / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", nargs="+", choices=ENVS, default=list(ENVS))
    parser.add_argument("--batch-sizes", type=int, nargs="+",
                        default=[1, 16, 256, 2048, 4096, 8192])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2],
                        help="MiniPacman's threads (env.threads) to time")
    parser.add_argument("--seconds", type=float, default=3.0, help="timed seconds per size")
    args = parser.parse_args()

    reference = reference_throughput(args.seconds) if "minipacman" in args.envs else None
    print("random actions, full observations, CPU; env steps per second")
    print(f"{'env':<12} {'threads':>7} {'batch':>6} {'steps/s':>12}")
    for name in args.envs:
        for threads in args.threads if name in THREADED else [1]:
            for size in args.batch_sizes:
                if name == "cartpole":
                    if size <= MOST_GYMNASIUM_ENVS:
                        print_against_gymnasium(size, args.seconds)
                    continue
                rate = throughput(partial(ENVS[name], threads=threads), size, args.seconds)
                ratio = f"  {rate / reference:7.1f}x reference" if name == "minipacman" else ""
                print(f"{name:<12} {threads:>7} {size:>6} {rate:>12,.0f}{ratio}")
    if reference is not None:
        print(f"MiniPacman reference (one env, plain Python, rendering each frame): "
              f"{reference:,.0f} steps/s")


def print_against_gymnasium(size: int, seconds: float) -> None:
    """``cartpole``'s rate at ``size`` and its ratio to Gymnasium's own vector env, each the
    median of :data:`ROUNDS` alternating timings."""
    ours, theirs = [], []
    for _ in range(ROUNDS):
        ours.append(throughput(partial(ENVS["cartpole"], threads=1), size, seconds / ROUNDS))
        theirs.append(throughput(gymnasium_vector_env, size, seconds / ROUNDS))
    rate, baseline = float(np.median(ours)), float(np.median(theirs))
    print(f"{'cartpole':<12} {1:>7} {size:>6} {rate:>12,.0f}  {rate / baseline:7.2f}x "
          f"gymnasium.make_vec ({baseline:,.0f})")


if __name__ == "__main__":
    main()
