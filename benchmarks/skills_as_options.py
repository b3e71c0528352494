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
    """Per job group and seed: steps to the target, the last value, the env steps run, the
    final evaluation's success rate and the episodes run."""
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
                                  final_eval[-1]["eval/success_rate"] if final_eval else None,
                                  train[-1].get("train/episodes", 0.0) if train else 0.0)
    return groups


def cell(seed: tuple, min_episodes: int) -> str:
    """A seed's entry: the steps to the target, else what it reached and when."""
    steps, last, ran, _, episodes = seed
    if steps is not None:
        return f"{steps:,.0f}"
    if episodes < min_episodes:
        return f"- ({episodes:.0f} episodes in {ran:,.0f})"
    return f"- ({last:.2f} at {ran:,.0f})"


def plot(sweeps: list[Path], metric: str, target: float, min_episodes: int, out: Path) -> None:
    """Training curves over env steps: per job group the mean over seeds (a run that stopped
    at the target holds its last value) and the range, with the target as a line. Curves
    start at a fifth of ``min_episodes`` episodes, so their first points average fewer."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs: dict[str, list[tuple[np.ndarray, np.ndarray]]] = defaultdict(list)
    for sweep in sweeps:
        for job in sorted(p for p in sweep.iterdir() if (p / ".hydra").is_dir()):
            rows = [r for r in RunDir(job).metrics() if metric in r
                    and r.get("train/episodes", 0) >= min_episodes // 5]
            if rows:
                runs[group_of(RunDir(job), sweep)[0]].append(
                    (np.array([r["train/env_steps"] for r in rows]),
                     np.array([r[metric] for r in rows])))
    figure, axes = plt.subplots(figsize=(8, 4.5))
    for name, curves in sorted(runs.items()):
        grid = np.geomspace(min(c[0][0] for c in curves), max(c[0][-1] for c in curves), 200)
        values = np.stack([np.interp(grid, steps, value) for steps, value in curves])
        line, = axes.plot(grid, values.mean(axis=0), label=f"{name} (n={len(curves)})")
        axes.fill_between(grid, values.min(axis=0), values.max(axis=0), alpha=0.2,
                          color=line.get_color())
    axes.axhline(target, color="grey", linestyle=":", linewidth=1)
    axes.set(xscale="log", xlabel="env steps",
             ylabel=f"{metric} (last {min_episodes} episodes)")
    axes.legend(fontsize=7, loc="upper left")
    figure.tight_layout()
    figure.savefig(out, dpi=110)
    print(f"\ncurves: {out}")


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
    parser.add_argument("--plot", type=Path, help="write the training curves to this file")
    args = parser.parse_args()
    groups = table(args.sweeps, args.metric, args.target, args.min_episodes)
    print(f"env steps until {args.metric} >= {args.target} over >= {args.min_episodes} "
          "episodes (- : not within the budget; then the last value and the steps run)\n")
    print("| job | " + " | ".join(f"seed {s}" for s in sorted(next(iter(groups.values()))))
          + " | mean | final eval success |")
    print("|---|" + "---|" * (len(next(iter(groups.values()))) + 2))
    for name, seeds in sorted(groups.items()):
        cells = [cell(s, args.min_episodes) for _, s in sorted(seeds.items())]
        mean = mean_steps(seeds)
        evals = [s[3] for s in seeds.values() if s[3] is not None]
        print(f"| `{name}` | " + " | ".join(cells)
              + f" | {'-' if mean is None else f'{mean:,.0f}'} | "
              + (f"{np.mean(evals):.2f}" if evals else "-") + " |")
    if args.plot:
        plot(args.sweeps, args.metric, args.target, args.min_episodes, args.plot)
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
