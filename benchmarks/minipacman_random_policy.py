"""MiniPacman under a uniformly random policy: per mode, the batched env beside its one-env
oracle (the same rules in plain Python), as means over whole episodes with standard errors.

Prints a markdown table of the episode length, return and food, pills and ghosts eaten per
episode (frame cap 1000; each batched row contributes its first episode).

    python benchmarks/minipacman_random_policy.py
    python benchmarks/minipacman_random_policy.py --episodes 2000 --modes regular avoid
"""

from __future__ import annotations

import argparse

from procmem.envs.minipacman import MODES
from procmem.envs.minipacman_statistics import (
    STATISTICS,
    env_first_episodes,
    mean_and_error,
    oracle_episodes,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=20_000, help="per mode and side")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    print(f"uniform random actions, {args.episodes:,} episodes per cell; mean (standard error)")
    print(f"| mode | implementation | {' | '.join(STATISTICS)} |")
    print(f"|---|---|{'---|' * len(STATISTICS)}")
    for mode in args.modes:
        for name, stats in (("batched", env_first_episodes(mode, args.episodes, args.seed)),
                            ("oracle", oracle_episodes(mode, args.episodes, args.seed))):
            mean, error = mean_and_error(stats)
            cells = " | ".join(f"{m:.3g} ({e:.2g})" for m, e in zip(mean, error, strict=True))
            print(f"| {mode} | {name} | {cells} |", flush=True)


if __name__ == "__main__":
    main()
