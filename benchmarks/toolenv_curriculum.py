"""Which curriculum solves toolenv fastest? none, staged and adaptive with the tuned A2C agent.

For each curriculum and seed, trains `experiment=model_native_toolenv curriculum=<c>` with a
greedy evaluation every `--eval-every` updates and records the first evaluation at which
every stage's accuracy is >= 0.99: its update, the env samples trained on until then
(`train/env_steps`) and the wall time until then, and the final per-stage accuracies. Then
trains `experiment=model_native_toolenv_original` (60 updates, staged [0,0,0,1,1,2], lr 3e-4,
entropy 0.01, no shaping) for every seed and reports its final per-stage accuracies.

`curriculum=none` draws every problem's stage uniformly from all stages from the first
update; `staged` trains only the scheduled stage ([0,0,0,1,1,2] stretched over the run);
`adaptive` advances when the current stage's accuracy reaches its threshold and replays
earlier stages.

Wall time is measured from the rows themselves: with `trainer.log_every=1` every update's
row carries `perf/iterations_per_second`, the rate since the previous row, so
1 / rate is that update's wall time including the evaluation and checkpoint that followed
the previous row. The time to an evaluation point is the sum over the updates up to it: the
training loop from its start, with every earlier evaluation, without building the run and
without the evaluation at that point itself. Evaluating more often than the experiment
(every 50) also lets the adaptive curriculum advance sooner: it moves on after evaluations.

    python benchmarks/toolenv_curriculum.py                   # 5 seeds, all curricula
    python benchmarks/toolenv_curriculum.py --seeds 2 --curricula adaptive --iterations 500
"""

from __future__ import annotations

import argparse
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from procmem import app
from procmem.run.loggers import read_metrics

CURRICULA = ("none", "staged", "adaptive")
ORIGINAL = "original"
THRESHOLD = 0.99
COMMON = ["logger=none", "trainer.progress=false", "torch_threads=1", "trainer.log_every=1",
          "trainer.checkpoint_every=0"]


def run(curriculum: str, seed: int, iterations: int | None, eval_every: int) -> dict:
    """Train one job in a temp dir; summarise its evaluations and timing."""
    if curriculum == ORIGINAL:
        overrides = ["experiment=model_native_toolenv_original", *COMMON, f"seed={seed}"]
    else:
        overrides = ["experiment=model_native_toolenv", f"curriculum={curriculum}", *COMMON,
                     f"seed={seed}", f"trainer.eval_every={eval_every}"]
        if iterations is not None:
            overrides.append(f"trainer.iterations={iterations}")
    cfg = app.compose_config(overrides)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as run_dir:
        app.train(cfg, run_dir)
        rows = read_metrics(Path(run_dir) / "metrics.jsonl")
    total_wall = time.perf_counter() - start

    # Per-update wall time and env samples, from the training rows in logged order.
    seconds, env_steps, previous = {}, {}, 0
    for row in rows:
        if "perf/iterations_per_second" in row:
            iteration = row["iteration"]
            seconds[iteration] = (iteration - previous) / row["perf/iterations_per_second"]
            env_steps[iteration] = row["train/env_steps"]
            previous = iteration
    elapsed = dict(zip(seconds, np.cumsum(list(seconds.values())), strict=True))

    evaluations = [r for r in rows if "eval/success_rate_stage0" in r]
    stages = sorted(int(k.removeprefix("eval/success_rate_stage")) for k in evaluations[-1]
                    if k.startswith("eval/success_rate_stage"))
    accuracy = [[r[f"eval/success_rate_stage{s}"] for s in stages] for r in evaluations]
    solved = [r["iteration"] for r, acc in zip(evaluations, accuracy, strict=True)
              if min(acc) >= THRESHOLD]
    first = solved[0] if solved else None
    return {
        "reached": first is not None,
        "updates": float(first) if first else float("nan"),
        "env_samples": float(env_steps[first]) if first else float("nan"),
        "wall_s": float(elapsed[first]) if first else float("nan"),
        "final": accuracy[-1],
        "final_stage": evaluations[-1].get("curriculum/stage", float("nan")),
        "iterations": int(cfg.trainer.iterations),
        "loop_wall_s": float(elapsed[max(elapsed)]),
        "total_wall_s": total_wall,
    }


def spread(values: list[float], fmt: str) -> str:
    """mean [min, max] over the runs that have a value, or n/a."""
    values = np.asarray(values, dtype=float)
    values = values[~np.isnan(values)]
    if not len(values):
        return "n/a"
    return f"{values.mean():{fmt}} [{values.min():{fmt}}, {values.max():{fmt}}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--curricula", nargs="+", default=list(CURRICULA), choices=CURRICULA)
    parser.add_argument("--iterations", type=int, default=None,
                        help="updates per tuned run (default: the experiment's)")
    parser.add_argument("--eval-every", type=int, default=25,
                        help="updates between evaluations of the tuned runs")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    seeds = range(args.seeds)
    jobs = [(c, s) for c in (*args.curricula, ORIGINAL) for s in seeds]
    with ProcessPoolExecutor(args.workers) as pool:
        results = list(pool.map(run, *zip(*jobs, strict=True), [args.iterations] * len(jobs),
                                [args.eval_every] * len(jobs)))
    by_job = dict(zip(jobs, results, strict=True))

    tuned = by_job[(args.curricula[0], 0)]
    print(f"experiment=model_native_toolenv, {tuned['iterations']} updates, greedy evaluation "
          f"every {args.eval_every}; {args.seeds} seeds. Time to all stages >= {THRESHOLD}: "
          "the first evaluation where every stage reaches it, mean [min, max] over the seeds "
          "that got there; final accuracies: mean over seeds.\n")
    stages = range(len(tuned["final"]))
    finals = " ".join(f"{f'final s{s}':>8}" for s in stages)
    print(f"{'curriculum':10} {'reached':>7} {'updates':>22} {'env samples':>31} "
          f"{'wall s':>25} {finals}")
    for curriculum in args.curricula:
        runs = [by_job[(curriculum, s)] for s in seeds]
        reached = sum(r["reached"] for r in runs)
        final = np.mean([r["final"] for r in runs], axis=0)
        print(f"{curriculum:10} {f'{reached}/{args.seeds}':>7} "
              f"{spread([r['updates'] for r in runs], '.0f'):>22} "
              f"{spread([r['env_samples'] for r in runs], '.0f'):>31} "
              f"{spread([r['wall_s'] for r in runs], '.1f'):>25} "
              + " ".join(f"{a:8.3f}" for a in final))

    runs = [by_job[(ORIGINAL, s)] for s in seeds]
    final = np.mean([r["final"] for r in runs], axis=0)
    print(f"\nexperiment=model_native_toolenv_original ({runs[0]['iterations']} updates), final "
          "accuracies, mean over seeds: "
          + ", ".join(f"stage {s} {a:.3f}" for s, a in zip(stages, final, strict=True)))

    print("\nper run: first update with all stages >= 0.99 (-: never), final accuracies, final "
          "curriculum stage, training-loop / whole-run wall seconds")
    for (curriculum, seed), r in by_job.items():
        first = f"{r['updates']:.0f}" if r["reached"] else "-"
        accs = " ".join(f"{a:.3f}" for a in r["final"])
        print(f"  {curriculum:10} seed {seed}  first {first:>5}  final {accs}  "
              f"stage {r['final_stage']:.0f}  wall {r['loop_wall_s']:.1f} / "
              f"{r['total_wall_s']:.1f}")


if __name__ == "__main__":
    main()
