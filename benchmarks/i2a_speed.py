"""Training speed of I2A and its baselines on MiniPacman: frames per second and ratios.

Builds ``agent=i2a`` four ways (:data:`AGENTS`): the standard agent (``imagination=none``),
the copy model, I2A with the pixel env model (the model of ``--env-model-run``) and I2A
with the state-space model, imagining in its latent space (the model of ``--ssm-run``);
without a run, an untrained model of the default ``agent=env_model`` size (its weights
change the cost only through how often pixel rollouts coincide). On the ``i2a_minipacman``
settings (16 envs x 5 steps per update, depth 5) it times A2C updates of each, side by side
in one process, on the given device, for each thread count; the runs are repeated
``--repeats`` times, interleaved, and each figure is the best of its repeats (this
machine's speed drifts by a quarter from minute to minute). The table gives each agent's
share of the standard agent's frames per second.

``--code before`` also runs the pixel imagination as it was before it was made faster (the
env model run as its plain layers, :meth:`EnvModel.forward_unfused`, its pixel classes by
``argmax`` and masked writes, on every row of every call, neither once per distinct row
(:func:`~procmem.models.distinct.per_distinct_row`) nor remembered between calls
(:class:`~procmem.models.row_memory.RowMemory`), and the rollout policy and the encoder
likewise on every frame and rollout even where they coincide), so that speed-up is
measured in one run too.

    python benchmarks/i2a_speed.py --env-model-run <pixel run> --ssm-run <ssm run>
    python benchmarks/i2a_speed.py --threads 1 --code before after --agents pixel copy standard
    python benchmarks/i2a_speed.py --updates 40 --threads 2 --depth 3 --device cuda"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import torch

from procmem import app
from procmem.app.build import build_run
from procmem.models import env_model, imagination, pixel_classes
from procmem.models.env_model import EnvModel
from procmem.models.env_model_file import env_model_kind, load_env_model, save_env_model

# name: (agent.imagination, agent.model)
AGENTS = {"standard": ("none", None), "copy": ("copy", None), "pixel": ("learned", "pixel"),
          "ssm": ("learned", "ssm")}
CODE = ("before", "after")


@contextlib.contextmanager
def code(version: str) -> Iterator[None]:
    """Run the imagination code as it is (``after``) or as it was (``before``)."""
    if version == "after":
        yield
        return
    with (mock.patch.object(EnvModel, "predict", plain_predict),
          mock.patch.object(env_model, "frame_classes", masked_frame_classes),
          mock.patch.object(imagination, "per_distinct_row", every_row),
          mock.patch.object(imagination, "distinct_rows", no_groups)):
        yield


@torch.no_grad()
def plain_predict(model: EnvModel, frames: torch.Tensor, actions: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """:meth:`EnvModel.predict` as it was: the plain layers
    (:meth:`EnvModel.forward_unfused`) on every row, then ``argmax`` and RGB by indexing."""
    pixel_logits, event_logits = model.forward_unfused(frames, actions)
    classes = pixel_logits.argmax(1)
    rgb = pixel_classes.PIXEL_COLOURS[classes].permute(0, 3, 1, 2).contiguous()
    return rgb, event_logits.argmax(2).float()


def masked_frame_classes(frames: torch.Tensor) -> torch.Tensor:
    """:func:`~procmem.models.pixel_classes.frame_classes` as it was: one masked write per
    class, not a table lookup."""
    red, green, blue = frames[:, 0] > 0.5, frames[:, 1], frames[:, 2] > 0.5
    lit = green > 0.5
    classes = torch.full(red.shape, pixel_classes.EMPTY, dtype=torch.int64, device=frames.device)
    classes[blue] = pixel_classes.FOOD
    classes[lit] = pixel_classes.PACMAN
    classes[lit & blue] = pixel_classes.PILL
    classes[red] = pixel_classes.GHOST
    classes[red & (green > 0)] = pixel_classes.EDIBLE_GHOST
    classes[red & blue] = pixel_classes.WALL
    return classes


def every_row(function: Callable[..., Any], keys: torch.Tensor, *inputs: torch.Tensor,
              dim: int = 0) -> Any:
    """:func:`~procmem.models.distinct.per_distinct_row` as it was: ``function`` on every
    row, equal ones included."""
    return function(*inputs)


def no_groups(keys: torch.Tensor) -> None:
    """:func:`~procmem.models.distinct.distinct_rows` as if every row differed."""
    return None


def frames_per_second(agent_name: str, model_paths: dict[str, Path], updates: int, depth: int,
                      device: torch.device) -> float:
    """Env frames per second of ``updates`` A2C updates (after one warm-up update) of one of
    :data:`AGENTS`; for a pixel env model that remembers predictions, it also prints the
    share of rows its memory answered."""
    imagination, model = AGENTS[agent_name]
    overrides = ["experiment=i2a_minipacman", f"agent.imagination={imagination}",
                 f"agent.depth={depth}"]
    if model is not None:
        overrides += [f"agent.model={model}", f"agent.env_model_run={model_paths[model]}"]
    cfg = app.compose_config(overrides)
    agent = build_run(cfg, device).algorithm
    agent.train_iteration()
    frames = cfg.agent.n_steps * cfg.env.num_envs * updates
    start = time.perf_counter()
    for _ in range(updates):
        agent.train_iteration()
    if device.type == "cuda":
        torch.cuda.synchronize()
    speed = frames / (time.perf_counter() - start)
    memory = agent.net.model.memory if isinstance(agent.net.model, EnvModel) else None
    if memory is not None and memory.hits:
        print(f"  env model: {memory.hits / (memory.hits + memory.misses):.0%} of the rows "
              f"it was asked for answered from memory", flush=True)
    return speed


def model_file(parser: argparse.ArgumentParser, option: str, path: Path | None, kind: str,
               folder: Path, device: torch.device) -> Path:
    """The env model file of ``--<option>`` (a run dir or its ``env_model.pt``), checked to
    hold a ``kind`` model; without one, an untrained model of the default size saved in
    ``folder``."""
    if path is None:
        cfg = app.compose_config(["experiment=envmodel_minipacman", "env.num_envs=1",
                                  f"agent.model={kind}"])
        model = build_run(cfg, device).algorithm.env_model
        return save_env_model(model, folder / f"{kind}.pt")
    if path.is_dir():
        path = path / "env_model.pt"
    try:
        found = env_model_kind(load_env_model(path))
    except Exception as error:
        parser.error(f"--{option}: {path}: unreadable env model ({type(error).__name__}: "
                     f"{error})")
    if found != kind:
        parser.error(f"--{option}: {path}: holds an env model of kind {found}, not {kind}")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=20)
    parser.add_argument("--depth", type=int, default=5)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--code", nargs="+", choices=CODE, default=["after"])
    parser.add_argument("--agents", nargs="+", choices=list(AGENTS), default=list(AGENTS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--env-model-run", type=Path, help="a trained pixel env model's run dir")
    parser.add_argument("--ssm-run", type=Path, help="a trained state-space model's run dir")
    args = parser.parse_args()
    device = torch.device(args.device)
    speeds = {}
    with tempfile.TemporaryDirectory() as folder:
        paths = {"pixel": model_file(parser, "env-model-run", args.env_model_run, "pixel",
                                     Path(folder), device),
                 "ssm": model_file(parser, "ssm-run", args.ssm_run, "ssm", Path(folder), device)}
        for _ in range(args.repeats):
            for threads in args.threads:
                torch.set_num_threads(threads)
                for version in args.code:
                    with code(version):
                        for name in args.agents:
                            speed = frames_per_second(name, paths, args.updates, args.depth,
                                                      device)
                            key = (threads, version, name)
                            speeds[key] = max(speed, speeds.get(key, 0.0))
                            print(f"  {version} code, {threads} thread(s), {name}: "
                                  f"{speed:,.0f} frames/s", flush=True)
    print(f"device {device}, depth {args.depth}, {args.updates} updates of 16 envs x 5 steps, "
          f"best of {args.repeats}")
    print("| code | threads | agent | frames/s | share of standard |")
    print("|---|---|---|---|---|")
    for (threads, version, name), speed in speeds.items():
        standard = speeds.get((threads, version, "standard"))
        share = "-" if standard is None else f"{speed / standard:.2f}"
        print(f"| {version} | {threads} | {name} | {speed:,.0f} | {share} |")


if __name__ == "__main__":
    main()
