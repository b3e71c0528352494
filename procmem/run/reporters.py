"""Reporters: what the runner calls when training ends, to draw and save what an algorithm
offers (see :mod:`procmem.algorithms.protocols`).

Each reporter asks the algorithm for its data through a protocol and does nothing when the
algorithm does not offer it, so every run gets the same list (:func:`run_reporters`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from procmem.algorithms.protocols import EnvModelLearner, EpisodeRecorder, Imaginer, SkillLearner
from procmem.run.loggers import MetricLogger
from procmem.run.metrics import panels
from procmem.run.plots import plot_curves
from procmem.run.render import save_gif, save_strip, to_rgb8, upscale
from procmem.run.run_dir import RunDir

PIXEL_SCALE = 8  # each observation pixel is drawn this many pixels wide and high
EPISODE_FPS = 10
STRIP_FRAMES = 16


class Reporter(Protocol):
    """Called once, after the last training iteration."""

    def on_train_end(self, algorithm: Any, logger: MetricLogger) -> None: ...


@dataclass
class SavedArtifacts:
    """The run's artifacts for later runs: ``skills.json`` of a skill learner with a memory,
    ``env_model.pt`` of an env-model learner."""

    run: RunDir

    def on_train_end(self, algorithm: Any, logger: MetricLogger) -> None:
        if isinstance(algorithm, SkillLearner) and algorithm.memory is not None:
            self.run.save_skills(algorithm.memory)
        if isinstance(algorithm, EnvModelLearner):
            self.run.save_env_model(algorithm.env_model)


class SkillTable:
    """The skill library as the table ``media/skills``."""

    def on_train_end(self, algorithm: Any, logger: MetricLogger) -> None:
        if isinstance(algorithm, SkillLearner) and algorithm.memory is not None:
            logger.log_table("media/skills", algorithm.memory.to_records())


@dataclass
class TrainingCurves:
    """``plots/training.png``: a panel per logged metric that has a panel title in the
    vocabulary (:mod:`procmem.run.metrics`), logged as ``media/training_curves``."""

    plots_dir: Path
    title: str

    def on_train_end(self, algorithm: Any, logger: MetricLogger) -> None:
        drawn = panels({key for row in logger.rows for key in row})
        if drawn:
            figure = plot_curves(logger.rows, drawn, self.plots_dir / "training.png",
                                 title=self.title)
            logger.log_image("media/training_curves", figure)


@dataclass
class EpisodeAnimation:
    """A recorded greedy episode as ``plots/episode.gif`` (logged as ``media/episode``) and
    its first frames as ``plots/episode_strip.png``."""

    plots_dir: Path

    def on_train_end(self, algorithm: Any, logger: MetricLogger) -> None:
        frames = algorithm.record_episode() if isinstance(algorithm, EpisodeRecorder) else None
        if frames is None:
            return
        frames = upscale(to_rgb8(frames), PIXEL_SCALE)
        gif = save_gif(frames, self.plots_dir / "episode.gif", fps=EPISODE_FPS)
        logger.log_video("media/episode", gif)
        save_strip(frames[:STRIP_FRAMES], self.plots_dir / "episode_strip.png", columns=8)


@dataclass
class ImaginationStrip:
    """Real frames above imagined ones as ``plots/imagination.png`` (``media/imagination``)."""

    plots_dir: Path

    def on_train_end(self, algorithm: Any, logger: MetricLogger) -> None:
        pair = algorithm.imagined_vs_real() if isinstance(algorithm, Imaginer) else None
        if pair is None:
            return
        real, imagined = pair
        frames = upscale(to_rgb8(np.concatenate([real, imagined])), PIXEL_SCALE)
        path = save_strip(frames, self.plots_dir / "imagination.png", columns=len(real))
        logger.log_image("media/imagination", path)


def run_reporters(run: RunDir, title: str) -> list[Reporter]:
    """The reporters of a training run in ``run``, its plots titled ``title``."""
    return [SavedArtifacts(run), SkillTable(), TrainingCurves(run.plots_dir, title),
            EpisodeAnimation(run.plots_dir), ImaginationStrip(run.plots_dir)]
