"""Training callbacks: code that hooks into the runner's loop without editing it.

A callback subclasses :class:`Callback` and overrides the moments it needs: after each
iteration (with its metrics), after an evaluation, after a checkpoint, at the end. Each hook
gets the runner, whose ``algorithm``, ``logger`` and ``iteration`` it may read and whose
:meth:`~procmem.run.runner.Runner.request_stop` ends training after the current iteration
(the run then ends ``finished``, with the reason in ``status.json``). A callback whose
decisions depend on what it saw (a best value, a count) keeps that in :meth:`state_dict`:
checkpoints hold it, so a resumed run decides as an uninterrupted one would.

Runs configure them as ``callbacks=[early_stopping]`` (the options of ``conf/callbacks/``)
or ``+callbacks.<name>._target_=<import path>`` for one of your own.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, Protocol

from procmem.run.loggers import MetricLogger
from procmem.settings import AtLeast, NonEmpty, OneOf, SettingError, configurable


class TrainingRun(Protocol):
    """What a callback sees of the run being trained (the runner)."""

    algorithm: Any
    logger: MetricLogger
    iteration: int

    def request_stop(self, reason: str) -> None:
        """End training after the current iteration; the run ends ``finished``."""


class CallbackError(RuntimeError):
    """A callback raised: the message names the callback, its hook and the error."""


class Callback:
    """Hooks into training; every hook does nothing unless overridden."""

    def on_iteration(self, runner: TrainingRun, metrics: dict[str, float]) -> None:
        """After each training iteration, with its metrics (logged or not)."""

    def on_evaluation(self, runner: TrainingRun, metrics: dict[str, float]) -> None:
        """After each evaluation, with its metrics."""

    def on_checkpoint(self, runner: TrainingRun, path: Path) -> None:
        """After each checkpoint is saved, with its file."""

    def on_train_end(self, runner: TrainingRun) -> None:
        """Once, after the last training iteration."""

    def state_dict(self) -> dict[str, Any]:
        """What the callback must remember across a stop and resume (plain data)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Take up the state :meth:`state_dict` gave."""


@configurable
class EarlyStopping(Callback):
    """Ends training when ``metric`` reaches ``threshold`` (at or above it with
    ``mode="max"``, at or below with ``"min"``), or when it has not improved by more than
    ``min_delta`` on its best for ``patience`` values in a row (0: no patience rule). It
    reads the metric wherever it is logged: evaluations for ``eval/...``, iterations for
    ``train/...``. With ``min_episodes``, values count only once ``train/episodes`` has
    reached it (a training mean over a window of episodes, once the window is full)."""

    def __init__(
        self,
        *,
        metric: Annotated[str, NonEmpty()] = "eval/success_rate",
        threshold: float | None = None,
        mode: Annotated[str, OneOf(("max", "min"))] = "max",
        patience: Annotated[int, AtLeast(0)] = 0,
        min_delta: Annotated[float, AtLeast(0.0)] = 0.0,
        min_episodes: Annotated[int, AtLeast(0)] = 0,
    ) -> None:
        if threshold is None and patience == 0:
            raise SettingError("threshold", "set a threshold, or a patience above 0")
        self.metric, self.threshold, self.mode = metric, threshold, mode
        self.patience, self.min_delta = patience, min_delta
        self.min_episodes, self.episodes = min_episodes, 0.0
        self.best: float | None = None
        self.stale = 0  # values in a row without an improvement on the best

    def on_iteration(self, runner: TrainingRun, metrics: dict[str, float]) -> None:
        self.episodes = metrics.get("train/episodes", self.episodes)
        self._see(runner, metrics)

    def on_evaluation(self, runner: TrainingRun, metrics: dict[str, float]) -> None:
        self._see(runner, metrics)

    def _see(self, runner: TrainingRun, metrics: dict[str, float]) -> None:
        value = metrics.get(self.metric)
        if value is None or not math.isfinite(value) or self.episodes < self.min_episodes:
            return
        sign = 1.0 if self.mode == "max" else -1.0
        if self.best is None or sign * (value - self.best) > self.min_delta:
            self.best, self.stale = value, 0
        else:
            self.stale += 1
        if self.threshold is not None and sign * (value - self.threshold) >= 0:
            runner.request_stop(f"early stopping: {self.metric} reached {value:.4g} (threshold "
                                f"{self.threshold:.4g}) at iteration {runner.iteration}")
        elif self.patience and self.stale >= self.patience:
            runner.request_stop(f"early stopping: {self.metric} did not improve on "
                                f"{self.best:.4g} for {self.stale} values, at iteration "
                                f"{runner.iteration}")

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "stale": self.stale, "episodes": self.episodes}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.stale = state["best"], int(state["stale"])
        self.episodes = float(state.get("episodes", 0.0))
