"""Exact accuracy by expression depth: depths trained on, and deeper ones never trained on.

For every seed, trains `experiment=model_native_expressions` (extra overrides are passed on),
then evaluates its last checkpoint greedily on `--episodes` fresh problems per depth (the
eval env's `eval_stages`: stage s is depth s + 1) and prints, per depth, the exact-answer
accuracy of every seed and the mean, marking the depths the runs trained on; then the env
samples and wall time of each run. The runs are trained in temp dirs, or kept under
`--keep DIR` (one run dir per seed, for `evaluate.py run=DIR/seed0 episodes=20` to spell out
their programs).

    python benchmarks/expressions_depth.py                          # 3 seeds, the pointer
    python benchmarks/expressions_depth.py agent/network=tool_attention   # the attention net
    python benchmarks/expressions_depth.py --seeds 1 trainer.iterations=200 --keep runs/short
"""

from __future__ import annotations

import argparse
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from procmem import app
from procmem.run.loggers import read_metrics
from procmem.run.run_dir import RunDir

# Evaluations along the way change nothing in training (fixed seeds, their own env) and
# nobody reads them here: the table is the last checkpoint's.
COMMON = ["experiment=model_native_expressions", "logger=none", "trainer.progress=false",
          "trainer.eval_every=500"]


def run(seed: int, overrides: list[str], episodes: int, keep: Path | None) -> dict:
    """Train and evaluate one seed in a temp dir, or in ``keep/seed<seed>``."""
    cfg = app.compose_config([*COMMON, f"seed={seed}", *overrides])
    start = time.perf_counter()
    with (nullcontext(keep / f"seed{seed}") if keep else tempfile.TemporaryDirectory()) as run_dir:
        saved = RunDir(run_dir).config_file  # the config evaluate_run reads
        saved.parent.mkdir(parents=True)
        OmegaConf.save(cfg, saved)
        app.train(cfg, run_dir)
        wall = time.perf_counter() - start
        result, _ = app.evaluate_run(run_dir, episodes, device="cpu", log=False)
        rows = read_metrics(Path(run_dir) / "metrics.jsonl")
    accuracy = {int(key.removeprefix("eval/success_rate_stage")) + 1: value
                for key, value in result.items() if key.startswith("eval/success_rate_stage")}
    return {
        "accuracy": accuracy,
        "trained": [stage + 1 for stage in cfg.env.stages],
        "env_samples": max(r.get("train/env_steps", 0.0) for r in rows),
        "updates": int(cfg.trainer.iterations),
        "wall_s": wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0, help="seeds run from this one")
    parser.add_argument("--episodes", type=int, default=1000, help="problems per depth")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--keep", type=Path, help="keep the run dirs here (DIR/seed<n>)")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. agent.lr=0.002")
    args = parser.parse_args()

    if args.seeds < 1 or args.first_seed < 0 or args.episodes < 1:
        parser.error("--seeds and --episodes must be >= 1, --first-seed >= 0")
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    if args.keep and any((args.keep / f"seed{seed}").exists() for seed in seeds):
        parser.error(f"--keep {args.keep}: it already holds a seed<n> run dir")
    with ProcessPoolExecutor(args.workers) as pool:
        runs = list(pool.map(run, seeds, [args.overrides] * len(seeds),
                             [args.episodes] * len(seeds), [args.keep] * len(seeds)))

    first = runs[0]
    print(f"experiment=model_native_expressions {' '.join(args.overrides)}: "
          f"{first['updates']} updates, seeds {', '.join(map(str, seeds))}; greedy exact "
          f"accuracy on {args.episodes} problems per depth\n")
    print(f"{'depth':>5} {'trained':>7} {'mean':>6} {'min':>6}  per seed")
    for depth in sorted(first["accuracy"]):
        values = [r["accuracy"][depth] for r in runs]
        trained = "yes" if depth in first["trained"] else "no"
        print(f"{depth:>5} {trained:>7} {np.mean(values):6.3f} {np.min(values):6.3f}  "
              + " ".join(f"{v:.3f}" for v in values))
    print("\nper seed: env samples, wall seconds (training)")
    for seed, r in zip(seeds, runs, strict=True):
        print(f"  seed {seed}: {r['env_samples']:.0f} samples, {r['wall_s']:.0f} s")


if __name__ == "__main__":
    main()
