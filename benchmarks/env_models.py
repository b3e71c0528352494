"""The env-model table: trained env models of ``agent=env_model`` runs side by side.

For each run dir given (a pixel model and a state-space model, say), prints its kind, its
parameters, its final held-out accuracies (one-step pixel, frame, event and reward
accuracy; open-loop pixel and frame accuracy after 1 to 5 steps, from its
``metrics.jsonl``) and how fast it imagines: I2A's rollouts (one per action, ``--depth``
steps, the rollout policy choosing after the first step) from batches of ``--batch`` real
MiniPacman frames, timed side by side in one process, best of ``--repeats``. A pixel model
imagines frames; a state-space model imagines latent states and draws no frame, so its
figure counts imagined steps as frames. The rollout policy is an untrained one of I2A's
default size (its weights change the cost only through how often pixel rollouts
coincide).

    python benchmarks/env_models.py <pixel run> <ssm run>
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from procmem.envs.minipacman import MiniPacman
from procmem.models.env_model_file import env_model_kind, load_env_model
from procmem.models.imagination import (
    LatentRolloutPolicy,
    RolloutPolicy,
    imagine,
    imagine_latent,
)
from procmem.run.run_dir import RunDir

ACCURACIES = ("pixel_accuracy", "frame_accuracy", "event_accuracy", "reward_accuracy")
OPEN_LOOP_STEPS = 5


def final_metrics(run: Path) -> dict[str, float]:
    """The run's last held-out evaluation (``eval/envmodel/...``), names without the
    prefix."""
    rows = [row for row in RunDir(run).metrics() if "eval/envmodel/pixel_accuracy" in row]
    if not rows:
        raise SystemExit(f"{run}: no held-out evaluation in its metrics")
    return {key.removeprefix("eval/envmodel/"): value for key, value in rows[-1].items()
            if key.startswith("eval/envmodel/")}


def imagined_frames_per_second(model: torch.nn.Module, frames: torch.Tensor, depth: int,
                               rounds: int) -> float:
    """Imagined steps per second of I2A's rollouts from ``frames``, ``rounds`` times."""
    num_actions = model.num_actions
    reward_vector = torch.as_tensor(MiniPacman(num_envs=1).reward_vector, dtype=torch.float32)
    if env_model_kind(model) == "ssm":
        policy, rollouts = LatentRolloutPolicy(model.latent_size, num_actions, 64), imagine_latent
    else:
        policy, rollouts = RolloutPolicy(tuple(frames.shape[1:]), num_actions, 16), imagine
    batches = frames.split(len(frames) // rounds)
    rollouts(model, policy, batches[0], depth, reward_vector)  # warm-up
    start = time.perf_counter()
    for batch in batches:
        rollouts(model, policy, batch, depth, reward_vector)
    imagined = len(frames) * num_actions * depth
    return imagined / (time.perf_counter() - start)


def real_frames(count: int, seed: int) -> torch.Tensor:
    """``count`` frames of MiniPacman episodes under uniformly random actions."""
    env, rng = MiniPacman(num_envs=16), np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed)
    frames = []
    while len(frames) * 16 < count:
        frames.append(obs)
        obs, *_ = env.step(rng.integers(0, env.num_actions, size=16))
    return torch.as_tensor(np.concatenate(frames)[:count])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, nargs="+", help="agent=env_model run dirs")
    parser.add_argument("--depth", type=int, default=5)
    parser.add_argument("--batch", type=int, default=16, help="real frames per call")
    parser.add_argument("--rounds", type=int, default=40, help="calls per timing")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    models, metrics = {}, {}
    for run in args.runs:
        path = run / "env_model.pt" if run.is_dir() else run
        try:
            models[run] = load_env_model(path)
        except Exception as error:
            parser.error(f"{path}: unreadable env model ({type(error).__name__}: {error})")
        metrics[run] = final_metrics(run if run.is_dir() else run.parent)
    frames = real_frames(args.batch * args.rounds, seed=0)
    speed = {run: 0.0 for run in args.runs}
    for _ in range(args.repeats):
        for run, model in models.items():
            speed[run] = max(speed[run], imagined_frames_per_second(
                model, frames, args.depth, args.rounds))
    print(f"imagination: batches of {args.batch} real frames x 5 actions x depth "
          f"{args.depth}, {args.threads} thread(s), best of {args.repeats}")
    steps = range(1, OPEN_LOOP_STEPS + 1)
    print("| run | kind | parameters | " + " | ".join(ACCURACIES) + " | open-loop pixel "
          + " / ".join(map(str, steps)) + " | open-loop frame " + " / ".join(map(str, steps))
          + " | imagined frames/s |")
    print("|---" * (len(ACCURACIES) + 6) + "|")
    for run, model in models.items():
        got = metrics[run]
        loop = [" / ".join(f"{got.get(f'rollout_{kind}_accuracy_{k}', float('nan')):.4f}"
                           for k in steps) for kind in ("pixel", "frame")]
        print(f"| {run.name} | {env_model_kind(model)} | "
              f"{sum(p.numel() for p in model.parameters()):,} | "
              + " | ".join(f"{got.get(name, float('nan')):.4f}" for name in ACCURACIES)
              + f" | {loop[0]} | {loop[1]} | {speed[run]:,.0f} |")


if __name__ == "__main__":
    main()
