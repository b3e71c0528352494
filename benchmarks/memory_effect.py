"""Does procedural memory pay off? The skill library against `memory=none`, over seeds.

For each task (randomised 8x8 gridworld, MiniGrid DoorKey-5x5) and each memory option, runs
the experiment for every seed and prints, over the last 20% of training episodes, the mean
steps per solved episode and the success rate; then evaluation on held-out layouts (the
eval env draws its layouts from another seed) with the share of steps taken by skills. (The
env steps until MiniGrid's mean reward reaches 0.9, beside A2C's:
benchmarks/minigrid_sample_efficiency.py.)

    python benchmarks/memory_effect.py                   # 5 seeds, both tasks
    python benchmarks/memory_effect.py --seeds 2 --tasks gridworld --iterations 100
"""

from __future__ import annotations

import argparse
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from procmem import app
from procmem.run.loggers import read_metrics

TASKS = {
    "gridworld": "experiment=procedural_gridworld",
    "minigrid": "experiment=procedural_minigrid",
}
MEMORIES = ("none", "skill_library")


def run(task: str, memory: str, seed: int, iterations: int) -> dict[str, float]:
    """Train one job in a temp dir; summarise its per-episode rows."""
    overrides = [TASKS[task], f"memory={memory}", f"seed={seed}", "logger=none",
                 f"trainer.iterations={iterations}", "trainer.eval_every=0",
                 "trainer.eval_episodes=50", "trainer.progress=false", "env.num_envs=1"]
    cfg = app.compose_config(overrides)
    with tempfile.TemporaryDirectory() as run_dir:
        app.train(cfg, run_dir)
        rows = read_metrics(Path(run_dir) / "metrics.jsonl")
    episodes = [r for r in rows if "train/episode_steps" in r]
    evaluation = [r for r in rows if "eval/success_rate" in r][-1]
    tail = episodes[-max(1, len(episodes) // 5):]
    solved = [r["train/episode_steps"] for r in tail if r["train/success_rate"] > 0]
    return {
        "steps_solved": float(np.mean(solved)) if solved else float("nan"),
        "success": float(np.mean([r["train/success_rate"] for r in tail])),
        "eval_success": evaluation["eval/success_rate"],
        "eval_steps_solved": evaluation.get("eval/solved_steps", float("nan")),
        "eval_reuse": evaluation.get("eval/reuse_rate", 0.0),
    }


def mean_std(values: list[float]) -> str:
    values = np.asarray(values, dtype=float)
    if np.isnan(values).all():
        return "n/a"
    return f"{np.nanmean(values):8.2f} ± {np.nanstd(values):6.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=200, help="episodes per run")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    jobs = [(t, m, s) for t in args.tasks for m in MEMORIES for s in range(args.seeds)]
    with ProcessPoolExecutor(args.workers) as pool:
        results = list(pool.map(run, *zip(*jobs, strict=True),
                                [args.iterations] * len(jobs)))
    by_job = dict(zip(jobs, results, strict=True))

    columns = ("steps_solved", "success", "eval_success", "eval_steps_solved", "eval_reuse")
    print(f"{args.seeds} seeds, {args.iterations} episodes each; training figures over the "
          "last 20% of episodes; eval on held-out layouts (mean ± std over seeds)\n")
    print(f"{'task':10} {'memory':14} " + " ".join(f"{c:>19}" for c in columns))
    for task in args.tasks:
        for memory in MEMORIES:
            runs = [by_job[(task, memory, s)] for s in range(args.seeds)]
            cells = " ".join(f"{mean_std([r[c] for r in runs]):>19}" for c in columns)
            print(f"{task:10} {memory:14} {cells}")
        none, lib = ([np.nanmean([by_job[(task, m, s)]["steps_solved"]
                                  for s in range(args.seeds)]) for m in MEMORIES])
        print(f"{task:10} steps per solved episode, none / skill_library: {none / lib:.2f}x\n")


if __name__ == "__main__":
    main()
