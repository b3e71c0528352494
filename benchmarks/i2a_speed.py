"""Training speed of I2A and its baselines on MiniPacman: frames per second and ratios.

Builds ``agent=i2a`` with ``imagination=learned`` (an env model of the default
``agent=env_model`` size; its weights do not change the cost), ``copy`` and ``none`` on
the ``i2a_minipacman`` settings (16 envs x 5 steps per update, depth 5) and times A2C
updates of each, side by side in one process, on the given device and thread count.

    python benchmarks/i2a_speed.py
    python benchmarks/i2a_speed.py --updates 40 --threads 2 --depth 3 --device cuda
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from procmem import app
from procmem.app.build import build_run
from procmem.models.env_model import save_env_model

IMAGINATION = ("learned", "copy", "none")


def frames_per_second(imagination: str, model_path: Path, updates: int, depth: int,
                      device: torch.device) -> float:
    """Env frames per second of ``updates`` A2C updates (after one warm-up update)."""
    cfg = app.compose_config(["experiment=i2a_minipacman", f"agent.imagination={imagination}",
                              f"agent.env_model_run={model_path}", f"agent.depth={depth}"])
    agent = build_run(cfg, device).algorithm
    agent.train_iteration()
    frames = cfg.agent.n_steps * cfg.env.num_envs * updates
    start = time.perf_counter()
    for _ in range(updates):
        agent.train_iteration()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return frames / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=20)
    parser.add_argument("--depth", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cfg = app.compose_config(["experiment=envmodel_minipacman", "env.num_envs=1"])
    model = build_run(cfg, device).algorithm.env_model  # untrained: speed does not care
    with tempfile.TemporaryDirectory() as folder:
        path = save_env_model(model, Path(folder) / "env_model.pt")
        speeds = {name: frames_per_second(name, path, args.updates, args.depth, device)
                  for name in IMAGINATION}
    print(f"device {device}, {args.threads} thread(s), depth {args.depth}, "
          f"{args.updates} updates of 16 envs x 5 steps")
    print("| imagination | frames/s | x I2A (learned) |")
    print("|---|---|---|")
    for name, speed in speeds.items():
        print(f"| {name} | {speed:,.0f} | {speed / speeds['learned']:.1f} |")


if __name__ == "__main__":
    main()
