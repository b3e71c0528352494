"""Batched env throughput on CPU: env steps per second by env and batch size.

Steps each env with uniform random actions (drawn ahead of the timed loop) and its full
observations (MiniPacman renders RGB frames), for each batch size, and prints steps/s. For
MiniPacman it also prints the ratio to the reference single-env rate (pure Python, one
object per env, about 2,750 steps/s with rendering on this machine class).

    python benchmarks/env_throughput.py
    python benchmarks/env_throughput.py --envs minipacman --batch-sizes 1 4096 --seconds 5
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np

from procmem.envs.expressions import ExpressionEnv
from procmem.envs.gridworld import GridWorld
from procmem.envs.minipacman import MiniPacman
from procmem.envs.toolenv import ToolEnv

REFERENCE_STEPS_PER_S = 2750.0  # MiniPacman's reference single env
ACTION_BLOCK = 64
ENVS: dict[str, Callable[[int], object]] = {
    "gridworld": lambda n: GridWorld(num_envs=n),  # random 8x8 layouts
    "toolenv": lambda n: ToolEnv(num_envs=n),
    "expressions": lambda n: ExpressionEnv(num_envs=n),
    "minipacman": lambda n: MiniPacman(num_envs=n),
}


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
            return calls * num_envs / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", nargs="+", choices=ENVS, default=list(ENVS))
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16, 256, 4096])
    parser.add_argument("--seconds", type=float, default=3.0, help="timed seconds per size")
    args = parser.parse_args()

    print("random actions, full observations, CPU; env steps per second")
    print(f"{'env':<12} {'batch':>6} {'steps/s':>12}")
    for name in args.envs:
        for size in args.batch_sizes:
            rate = throughput(ENVS[name], size, args.seconds)
            ratio = (f"  {rate / REFERENCE_STEPS_PER_S:.1f}x reference"
                     if name == "minipacman" else "")
            print(f"{name:<12} {size:>6} {rate:>12,.0f}{ratio}")
    print(f"MiniPacman reference: {REFERENCE_STEPS_PER_S:,.0f} steps/s (single env, pure Python)")


if __name__ == "__main__":
    main()
