"""Env steps to a training target, per seed, for the jobs of skill-library multiruns.

Reads multirun dirs made by the sweeps of docs/results/skills-as-options.md (A2C with and
without skills, the skill-library agent, libraries loaded frozen or not) and prints, for
each job group (its overrides without the seed), the env steps at which the training
metric first reached the target in every seed (``-`` where it never did within the budget,
with the last value reached), their mean, and the ratios the results page quotes.

    python benchmarks/skills_as_options.py outputs/multiruns/<sweep>/<time> \\
        --metric train/episode_return --target 0.9 --baseline "agent=a2c memory=none" \\
        --against "agent=a2c memory=skill_library"
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import numpy as np

from procmem.run.run_dir import RunDir


def steps_to_target(rows: list[dict], metric: str, target: float, min_episodes: int
                    ) -> tuple[float | None, float]:
    """The ``train/env_steps`` of the first training row where ``metric`` reached ``target``
    once ``min_episodes`` episodes had ended (None if none did), and the metric's last
    value."""
    values = [(row["train/env_steps"], row[metric]) for row in rows
              if metric in row and row.get("train/episodes", 0) >= min_episodes]
    reached = [steps for steps, value in values if value >= target]
    return (reached[0] if reached else None), (values[-1][1] if values else float("nan"))


def group_of(run: RunDir, sweep: Path) -> tuple[str, int]:
    """A job's overrides without its seed (the group), and its seed."""
    overrides = run.path.joinpath(".hydra", "overrides.yaml").read_text().splitlines()
    pairs = [line.removeprefix("- ").strip() for line in overrides if line.startswith("- ")]
    seed = next(int(p.split("=", 1)[1]) for p in pairs if p.startswith("seed="))
    shown = [p.replace(str(sweep.parent), "<src>") for p in pairs
             if p.split("=", 1)[0] in ("agent", "memory", "memory.load", "memory.frozen")]
    return " ".join(shown), seed


def table(sweeps: list[Path], metric: str, target: float, min_episodes: int
          ) -> dict[str, dict[int, tuple]]:
    """Per job group and seed: steps to the target, the last value, the env steps run and
    the final evaluation's success rate."""
    groups: dict[str, dict[int, tuple]] = defaultdict(dict)
    for sweep in sweeps:
        for job in sorted(p for p in sweep.iterdir() if (p / ".hydra").is_dir()):
            run = RunDir(job)
            name, seed = group_of(run, sweep)
            rows = run.metrics()
            train = [r for r in rows if "train/env_steps" in r]
            final_eval = [r for r in rows if "eval/success_rate" in r]
            groups[name][seed] = (*steps_to_target(rows, metric, target, min_episodes),
                                  train[-1]["train/env_steps"] if train else 0.0,
                                  final_eval[-1]["eval/success_rate"] if final_eval else None)
    return groups


def mean_steps(seeds: dict[int, tuple]) -> float | None:
    steps = [s[0] for s in seeds.values()]
    return None if any(s is None for s in steps) else float(np.mean(steps))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweeps", nargs="+", type=Path)
    parser.add_argument("--metric", default="train/episode_return")
    parser.add_argument("--target", type=float, default=0.9)
    parser.add_argument("--min-episodes", type=int, default=100,
                        help="the metric counts once this many episodes have ended")
    parser.add_argument("--baseline", help="group whose steps the ratios divide")
    parser.add_argument("--against", nargs="*", default=[], help="groups compared with it")
    args = parser.parse_args()
    groups = table(args.sweeps, args.metric, args.target, args.min_episodes)
    print(f"env steps until {args.metric} >= {args.target} over >= {args.min_episodes} "
          "episodes (- : not within the budget; then the last value and the steps run)\n")
    print("| job | " + " | ".join(f"seed {s}" for s in sorted(next(iter(groups.values()))))
          + " | mean | final eval success |")
    print("|---|" + "---|" * (len(next(iter(groups.values()))) + 2))
    for name, seeds in sorted(groups.items()):
        cells = [f"{s[0]:,.0f}" if s[0] is not None else f"- ({s[1]:.2f} at {s[2]:,.0f})"
                 for _, s in sorted(seeds.items())]
        mean = mean_steps(seeds)
        evals = [s[3] for s in seeds.values() if s[3] is not None]
        print(f"| `{name}` | " + " | ".join(cells)
              + f" | {'-' if mean is None else f'{mean:,.0f}'} | "
              + (f"{np.mean(evals):.2f}" if evals else "-") + " |")
    if args.baseline:
        base = groups[args.baseline]
        for name in args.against:
            ours = groups[name]
            if mean_steps(ours) is None:
                print(f"\n{name}: does not reach the target in every seed")
                continue
            if mean_steps(base) is None:
                budget = min(s[2] for s in base.values())
                print(f"\n{args.baseline} does not reach it in every seed: {name} needs at "
                      f"most 1/{budget / mean_steps(ours):.1f} of the budget it ran "
                      f"({budget:,.0f})")
            else:
                print(f"\n{name}: {mean_steps(base) / mean_steps(ours):.1f}x fewer env steps "
                      f"than {args.baseline}")


if __name__ == "__main__":
    main()
