"""Reporters: end-of-training callbacks that draw and save what an algorithm offers (see
:mod:`procmem.algorithms.protocols`).

Each reporter asks the algorithm for its data through a protocol and does nothing when the
algorithm does not offer it, so every run gets the same list (:func:`run_reporters`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from procmem.algorithms.protocols import EpisodeRecorder, Imaginer, Tabulator, artifacts_of
from procmem.run.callbacks import Callback, TrainingRun
from procmem.run.metrics import panels
from procmem.run.plots import plot_curves
from procmem.run.render import save_gif, save_strip, to_rgb8, upscale
from procmem.run.run_dir import RunDir

PIXEL_SCALE = 8  # each observation pixel is drawn this many pixels wide and high
EPISODE_FPS = 10
STRIP_FRAMES = 16


@dataclass
class SavedArtifacts(Callback):
    """The files the algorithm leaves for later runs (its declared ``artifacts``: a skill
    library, an env model, a policy), saved in the run dir."""

    run: RunDir

    def on_train_end(self, runner: TrainingRun) -> None:
        for artifact in artifacts_of(type(runner.algorithm)):
            artifact.save(runner.algorithm, self.run.path / artifact.file)


class Tables(Callback):
    """The algorithm's tables (:class:`~procmem.algorithms.protocols.Tabulator`), logged."""

    def on_train_end(self, runner: TrainingRun) -> None:
        algorithm, logger = runner.algorithm, runner.logger
        if isinstance(algorithm, Tabulator):
            for key, rows in algorithm.tables().items():
                logger.log_table(key, rows)


@dataclass
class TrainingCurves(Callback):
    """``plots/training.png``: a panel per logged metric that has a panel title in the
    vocabulary (:mod:`procmem.run.metrics`), logged as ``media/training_curves``."""

    plots_dir: Path
    title: str

    def on_train_end(self, runner: TrainingRun) -> None:
        logger = runner.logger
        drawn = panels({key for row in logger.rows for key in row})
        if drawn:
            figure = plot_curves(logger.rows, drawn, self.plots_dir / "training.png",
                                 title=self.title)
            logger.log_image("media/training_curves", figure)


@dataclass
class EpisodeAnimation(Callback):
    """A recorded greedy episode as ``plots/episode.gif`` (logged as ``media/episode``) and
    its first frames as ``plots/episode_strip.png``."""

    plots_dir: Path

    def on_train_end(self, runner: TrainingRun) -> None:
        algorithm, logger = runner.algorithm, runner.logger
        frames = algorithm.record_episode() if isinstance(algorithm, EpisodeRecorder) else None
        if frames is None:
            return
        frames = upscale(to_rgb8(frames), PIXEL_SCALE)
        gif = save_gif(frames, self.plots_dir / "episode.gif", fps=EPISODE_FPS)
        logger.log_video("media/episode", gif)
        save_strip(frames[:STRIP_FRAMES], self.plots_dir / "episode_strip.png", columns=8)


@dataclass
class ImaginationStrip(Callback):
    """Real frames above imagined ones as ``plots/imagination.png`` (``media/imagination``)."""

    plots_dir: Path

    def on_train_end(self, runner: TrainingRun) -> None:
        algorithm, logger = runner.algorithm, runner.logger
        pair = algorithm.imagined_vs_real() if isinstance(algorithm, Imaginer) else None
        if pair is None:
            return
        real, imagined = pair
        frames = upscale(to_rgb8(np.concatenate([real, imagined])), PIXEL_SCALE)
        path = save_strip(frames, self.plots_dir / "imagination.png", columns=len(real))
        logger.log_image("media/imagination", path)


def run_reporters(run: RunDir, title: str) -> list[Callback]:
    """The reporters of a training run in ``run``, its plots titled ``title``."""
    return [SavedArtifacts(run), Tables(), TrainingCurves(run.plots_dir, title),
            EpisodeAnimation(run.plots_dir), ImaginationStrip(run.plots_dir)]
