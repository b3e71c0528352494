"""MiniPacman env throughput on CPU: env steps per second by batch size.

Steps a :class:`~procmem.envs.minipacman.MiniPacman` with uniform random actions (drawn
ahead of the timed loop) and rendered RGB observations, for each batch size, and prints
steps/s and the ratio to the reference single-env rate (pure Python, one object per env,
about 2,750 steps/s with rendering on this machine class).

    python benchmarks/env_throughput.py
    python benchmarks/env_throughput.py --batch-sizes 1 4096 --seconds 5 --mode hunt
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from procmem.envs.minipacman import MODES, MiniPacman

REFERENCE_STEPS_PER_S = 2750.0
ACTION_BLOCK = 64


def throughput(num_envs: int, mode: str, seconds: float, seed: int = 0) -> float:
    """Env steps per second of a ``num_envs`` batch over about ``seconds`` of stepping."""
    env = MiniPacman(num_envs=num_envs, mode=mode)
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
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16, 256, 4096])
    parser.add_argument("--mode", choices=MODES, default="regular")
    parser.add_argument("--seconds", type=float, default=3.0, help="timed seconds per size")
    args = parser.parse_args()

    print(f"MiniPacman mode={args.mode}, random actions, rendered obs, CPU")
    print(f"{'batch':>6} {'steps/s':>12} {'x reference':>12}")
    for size in args.batch_sizes:
        rate = throughput(size, args.mode, args.seconds)
        print(f"{size:>6} {rate:>12,.0f} {rate / REFERENCE_STEPS_PER_S:>12.1f}")
    print(f"reference: {REFERENCE_STEPS_PER_S:,.0f} steps/s (single env, pure Python)")


if __name__ == "__main__":
    main()
