"""Sample efficiency on MiniGrid DoorKey-5x5: the skill-library agent beside A2C, a learner
without procedural memory.

For each seed, trains the skill-library agent (experiment=procedural_minigrid, one env, an
iteration is an episode) and A2C (experiment=a2c_minigrid, 16 envs, an iteration is an update
from 8 steps of every env) and prints, side by side, the env steps until the mean reward of the
last 100 episodes reaches 0.9 (mean ± std over the seeds that reach it, and how many do within
the budget), the wall time per run, the final mean reward of the last 100 episodes and the
final greedy success rate. A2C logs, every update, the mean reward of its last 100 finished
episodes and how many episodes have finished; a row counts once at least 100 have.

    python benchmarks/minigrid_sample_efficiency.py                  # 5 seeds
    python benchmarks/minigrid_sample_efficiency.py --seeds 2 --a2c-iterations 1500
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

TARGET = 0.9  # MiniGrid rewards lie in [0, 1]: the mark of the public PPO figure
WINDOW = 100  # episodes
AGENTS = ("skill_library", "a2c")


def train(overrides: list[str]) -> tuple[list[dict], float]:
    """Train one job in a temp dir; its metric rows and wall time."""
    cfg = app.compose_config([*overrides, "logger=none", "trainer.progress=false",
                              "trainer.eval_every=0", "trainer.eval_episodes=50",
                              "trainer.checkpoint_every=0"])
    with tempfile.TemporaryDirectory() as run_dir:
        start = time.perf_counter()
        app.train(cfg, run_dir)
        wall = time.perf_counter() - start
        rows = read_metrics(Path(run_dir) / "metrics.jsonl")
    return rows, wall


def final_eval(rows: list[dict]) -> float:
    return [r for r in rows if "eval/success_rate" in r][-1]["eval/success_rate"]


def run_skill_library(seed: int, iterations: int) -> dict[str, float]:
    """The skill-library agent as in memory_effect.py: one row per episode."""
    rows, wall = train(["experiment=procedural_minigrid", "memory=skill_library",
                           f"seed={seed}", f"trainer.iterations={iterations}",
                           "env.num_envs=1"])
    episodes = [r for r in rows if "train/episode_return" in r]
    rewards = np.array([r["train/episode_return"] for r in episodes])
    steps = np.array([r["train/env_steps"] for r in episodes])
    window = np.convolve(rewards, np.ones(WINDOW) / WINDOW, mode="valid")
    reached = np.flatnonzero(window >= TARGET)
    at = float(steps[reached[0] + WINDOW - 1]) if len(reached) else float("nan")
    return {"steps_to_target": at, "wall_s": wall,
            "final_reward": float(rewards[-WINDOW:].mean()), "eval_success": final_eval(rows),
            "env_steps": float(steps[-1])}


def run_a2c(seed: int, iterations: int) -> dict[str, float]:
    """A2C logging every update: the mean reward of its last 100 finished episodes."""
    rows, wall = train(["experiment=a2c_minigrid", f"seed={seed}",
                           f"trainer.iterations={iterations}", "trainer.log_every=1",
                           f"agent.stats_window={WINDOW}"])
    logged = [r for r in rows if "train/episode_return" in r]
    steps = np.array([r["train/env_steps"] for r in logged])
    rewards = np.array([r["train/episode_return"] for r in logged])
    episodes = np.array([r["train/episodes"] for r in logged])
    reached = np.flatnonzero((rewards >= TARGET) & (episodes >= WINDOW))
    return {
        "steps_to_target": float(steps[reached[0]]) if len(reached) else float("nan"),
        "wall_s": wall, "final_reward": float(rewards[-1]), "eval_success": final_eval(rows),
        "env_steps": float(steps[-1]),
    }


def run(agent: str, seed: int, skill_iterations: int, a2c_iterations: int) -> dict[str, float]:
    if agent == "skill_library":
        return run_skill_library(seed, skill_iterations)
    return run_a2c(seed, a2c_iterations)


def mean_std(values: list[float], digits: int = 0) -> str:
    values = np.asarray(values, dtype=float)
    if np.isnan(values).all():
        return "n/a"
    return f"{np.nanmean(values):,.{digits}f} ± {np.nanstd(values):,.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--skill-iterations", type=int, default=200,
                        help="episodes per skill-library run")
    parser.add_argument("--a2c-iterations", type=int, default=3000,
                        help="updates per A2C run (16 envs x 8 steps each)")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    jobs = [(agent, seed) for agent in AGENTS for seed in range(args.seeds)]
    with ProcessPoolExecutor(args.workers) as pool:
        results = list(pool.map(run, *zip(*jobs, strict=True),
                                [args.skill_iterations] * len(jobs),
                                [args.a2c_iterations] * len(jobs)))
    by_job = dict(zip(jobs, results, strict=True))

    print(f"MiniGrid-DoorKey-5x5-v0, {args.seeds} seeds: env steps until the mean reward of "
          f"the last {WINDOW} episodes reaches {TARGET} (mean ± std over the seeds that "
          "reach it)\n")
    header = (f"{'agent':14} {'budget (env steps)':>20} {'reached':>8} {'steps to 0.9':>20} "
              f"{'wall s/run':>14} {'final reward':>14} {'eval success':>14}")
    print(header)
    for agent in AGENTS:
        runs = [by_job[(agent, s)] for s in range(args.seeds)]
        reached = sum(not np.isnan(r["steps_to_target"]) for r in runs)
        print(f"{agent:14} {mean_std([r['env_steps'] for r in runs]):>20} "
              f"{f'{reached}/{args.seeds}':>8} "
              f"{mean_std([r['steps_to_target'] for r in runs]):>20} "
              f"{mean_std([r['wall_s'] for r in runs], 1):>14} "
              f"{mean_std([r['final_reward'] for r in runs], 3):>14} "
              f"{mean_std([r['eval_success'] for r in runs], 2):>14}")
    print("\nper seed, steps to 0.9:")
    for agent in AGENTS:
        cells = ", ".join("not reached" if np.isnan(by_job[(agent, s)]["steps_to_target"])
                          else f"{by_job[(agent, s)]['steps_to_target']:,.0f}"
                          for s in range(args.seeds))
        print(f"  {agent:14} {cells}")


if __name__ == "__main__":
    main()
