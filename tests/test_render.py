"""Episode rendering (GIF, frame strip) and what the reporters draw for A2C when training
ends."""

import json
import subprocess
import sys
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image, ImageSequence

from procmem.algorithms.a2c import A2C
from procmem.envs.minipacman import MiniPacman
from procmem.envs.toolenv import ToolEnv
from procmem.models.networks import PixelCNNPolicy, ToolGRUPolicy
from procmem.run.loggers import MetricLogger, WandbSink
from procmem.run.render import save_gif, save_strip, to_rgb8, upscale
from procmem.run.reporters import run_reporters
from procmem.run.run_dir import RunDir

CPU = torch.device("cpu")


def distinct_frames(count: int, height: int = 3, width: int = 4) -> np.ndarray:
    """``count`` uint8 frames [T, H, W, 3], each a different solid colour."""
    colours = np.stack([np.arange(count) * 10, 255 - np.arange(count) * 10,
                        np.full(count, 128)], axis=1).astype(np.uint8)
    return np.broadcast_to(colours[:, None, None, :], (count, height, width, 3)).copy()


class RecordingSink:
    """A sink that only remembers which media it was given, and at which iterations."""

    def __init__(self) -> None:
        self.media: list[tuple[str, str, Path]] = []
        self.iterations: set[int | None] = set()

    def log(self, row: dict) -> None:
        pass

    def log_table(self, key: str, records: list, iteration: int | None = None) -> None:
        pass

    def log_image(self, key: str, path: Path, iteration: int | None = None) -> None:
        self.media.append(("image", key, path))
        self.iterations.add(iteration)

    def log_video(self, key: str, path: Path, iteration: int | None = None) -> None:
        self.media.append(("video", key, path))
        self.iterations.add(iteration)

    def finish(self, exit_code: int) -> None:
        pass


def test_to_rgb8_converts_channels_first_floats():
    frames = np.zeros((2, 3, 4, 5), dtype=np.float32)
    frames[1, 0, 2, 3] = 1.0
    frames[1, 2, 0, 0] = 0.5
    rgb = to_rgb8(frames)
    assert rgb.shape == (2, 4, 5, 3) and rgb.dtype == np.uint8
    assert rgb[1, 2, 3].tolist() == [255, 0, 0] and rgb[1, 0, 0].tolist() == [0, 0, 128]
    with pytest.raises(ValueError):
        to_rgb8(np.zeros((2, 4, 5, 3)))


def test_upscale_repeats_every_pixel_into_a_block():
    frames = np.arange(2 * 2 * 3 * 3, dtype=np.uint8).reshape(2, 2, 3, 3)
    big = upscale(frames, 4)
    assert big.shape == (2, 8, 12, 3)
    for row in range(2):
        for col in range(3):
            block = big[:, 4 * row:4 * row + 4, 4 * col:4 * col + 4]
            assert (block == frames[:, row:row + 1, col:col + 1]).all()
    assert np.array_equal(upscale(frames, 1), frames)


def test_save_gif_writes_every_frame_at_the_frame_rate(tmp_path: Path):
    frames = upscale(distinct_frames(7), 2)
    path = save_gif(frames, tmp_path / "sub" / "clip.gif", fps=10)
    with Image.open(path) as gif:
        assert gif.n_frames == 7 and gif.size == (8, 6)
        for image, frame in zip(ImageSequence.Iterator(gif), frames, strict=True):
            assert image.info["duration"] == 100
            assert np.array_equal(np.asarray(image.convert("RGB")), frame)


def test_save_strip_lays_frames_out_in_a_grid(tmp_path: Path):
    frames = distinct_frames(5, height=3, width=4)
    path = save_strip(frames, tmp_path / "strip.png", columns=2, gap=1)
    grid = np.asarray(Image.open(path).convert("RGB"))
    assert grid.shape == (3 * 3 + 2, 2 * 4 + 1, 3)  # 3 rows, 2 columns, 1-pixel gaps
    assert np.array_equal(grid[4:7, 5:9], frames[3])  # row 1, column 1
    assert (grid[8:11, 5:9] == 0).all()  # the empty cell after the last frame
    assert save_strip(frames, tmp_path / "one_row.png").stat().st_size > 0
    assert Image.open(tmp_path / "one_row.png").size == (5 * 4 + 4 * 2, 3)


def report_after_training(agent: A2C, run_dir: Path, sink: RecordingSink) -> None:
    """Log two training iterations of ``agent`` and an evaluation, then call every reporter
    of a run in ``run_dir``."""
    logger = MetricLogger(run_dir / "metrics.jsonl", [sink])
    for iteration in (1, 2):
        logger.log(iteration, agent.train_iteration())
    logger.log(2, agent.evaluate(2))
    for reporter in run_reporters(RunDir(run_dir), title="test"):
        reporter.on_train_end(SimpleNamespace(algorithm=agent, logger=logger))


def test_a2c_on_minipacman_plots_training_and_renders_an_episode(tmp_path: Path,
                                                                 one_torch_thread):
    agent = A2C(MiniPacman(num_envs=2, frame_cap=20), MiniPacman(num_envs=2, frame_cap=20),
                CPU, 0, partial(PixelCNNPolicy, hidden=16), n_steps=5, gamma=0.99)
    sink = RecordingSink()
    report_after_training(agent, tmp_path, sink)

    plots = tmp_path / "plots"
    assert sorted(p.name for p in plots.iterdir()) == [
        "episode.gif", "episode_strip.png", "training.png"]
    assert sink.iterations == {2}  # plotted at the run's last iteration
    assert sink.media == [("image", "media/training_curves", plots / "training.png"),
                          ("video", "media/episode", plots / "episode.gif")]
    frames = agent.record_episode()  # the same greedy episode from the same seed
    assert frames.shape[1:] == (3, 15, 19) and 2 <= len(frames) <= 21  # start + <= 20 steps
    with Image.open(plots / "episode.gif") as gif:
        durations = [image.info["duration"] for image in ImageSequence.Iterator(gif)]
        assert gif.size == (19 * 8, 15 * 8)
    # Identical consecutive frames merge, so the playing time, not the count, is exact.
    assert len(durations) <= len(frames) and sum(durations) == 100 * len(frames)
    strip = Image.open(plots / "episode_strip.png")
    shown = min(len(frames), 16)
    columns = min(shown, 8)
    assert strip.size[0] == columns * 19 * 8 + (columns - 1) * 2
    assert len(agent.record_episode(max_frames=3)) == 3


def test_a2c_without_image_observations_only_plots_training(tmp_path: Path, one_torch_thread):
    agent = A2C(ToolEnv(num_envs=8, stages=(0,)), ToolEnv(num_envs=8, stages=(0,)), CPU, 0,
                partial(ToolGRUPolicy, hidden=16))
    sink = RecordingSink()
    report_after_training(agent, tmp_path, sink)
    assert [p.name for p in (tmp_path / "plots").iterdir()] == ["training.png"]
    assert sink.media == [("image", "media/training_curves",
                           tmp_path / "plots" / "training.png")]


def test_wandb_sink_logs_a_gif_as_a_video_offline(tmp_path: Path):
    gif = save_gif(upscale(distinct_frames(3), 4), tmp_path / "plots" / "episode.gif")
    sink = WandbSink(tmp_path, RunDir(tmp_path).wandb_run_id("train"), project="procmem-test",
                     mode="offline")
    logger = MetricLogger(tmp_path / "metrics.jsonl", [sink])
    logger.log(1, {"train/entropy": 1.0})
    logger.log_video("media/episode", gif)
    logger.finish()
    wandb = Path(sys.executable).parent / "wandb"
    out = subprocess.run([str(wandb), "leet", "inspect", "--summary", "--json",
                          str(tmp_path / "wandb")], capture_output=True, text=True, check=True)
    video = json.loads(out.stdout)["summary"]["media/episode"]
    assert video["_type"] == "video-file" and video["path"].endswith(".gif")
