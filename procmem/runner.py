"""The one training loop every algorithm runs in."""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
from tqdm.auto import tqdm

from procmem.checkpoint import CheckpointManager
from procmem.logging import MetricLogger
from procmem.runtime import NonFiniteLossError, rng_state, set_rng_state


class Algorithm(Protocol):
    """What the runner needs from a learning algorithm."""

    def train_iteration(self) -> dict[str, float]:
        """Run one iteration (the algorithm's unit: an episode, an update) -> metrics."""

    def evaluate(self, episodes: int) -> dict[str, float]:
        """Evaluate without changing what was learned -> metrics."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None: ...


@runtime_checkable
class TrainEndHook(Protocol):
    """Optional: write an algorithm's own artifacts (tables, plots) when training ends."""

    def on_train_end(self, run_dir: Path, logger: MetricLogger) -> None: ...


class Curriculum(Protocol):
    """Which stages are trained (see ``procmem/curriculum.py``)."""

    stage: int

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """The stages of ``n`` new training problems."""

    def on_iteration(self, iteration: int, total: int) -> None:
        """Called before every training iteration."""

    def update(self, iteration: int, eval_metrics: Mapping[str, float]) -> None:
        """Called after every evaluation."""

    def metrics(self) -> dict[str, float]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None: ...


def _is_due(iteration: int, every: int, last: int) -> bool:
    return iteration == last or (every > 0 and iteration % every == 0)


class Runner:
    """Owns iterations, evaluation cadence, curriculum updates, logging and checkpoints.

    ``eval_every``/``checkpoint_every`` of 0 mean "only after the last iteration".
    """

    def __init__(
        self,
        algorithm: Algorithm,
        curriculum: Curriculum,
        logger: MetricLogger,
        checkpoints: CheckpointManager,
        iterations: int,
        eval_every: int,
        eval_episodes: int,
        checkpoint_every: int,
        log_every: int = 1,
        progress: bool = True,
    ) -> None:
        self.algorithm = algorithm
        self.curriculum = curriculum
        self.logger = logger
        self.checkpoints = checkpoints
        self.iterations = iterations
        self.eval_every = eval_every
        self.eval_episodes = eval_episodes
        self.checkpoint_every = checkpoint_every
        self.log_every = log_every
        self.progress = progress
        self.iteration = 0

    def restore(self, checkpoint: Mapping[str, Any]) -> None:
        """Continue from a checkpoint written by this runner."""
        self.algorithm.load_state_dict(checkpoint["algorithm"])
        self.curriculum.load_state_dict(checkpoint["curriculum"])
        set_rng_state(checkpoint["rng"])
        self.iteration = int(checkpoint["iteration"])

    def save_checkpoint(self) -> Path:
        return self.checkpoints.save(
            self.iteration,
            {
                "algorithm": self.algorithm.state_dict(),
                "curriculum": self.curriculum.state_dict(),
                "rng": rng_state(),
            },
        )

    def _train_iteration(self) -> dict[str, float]:
        """One training iteration. A NaN or inf loss (raised by the algorithm before it
        updates any parameter) stops the run: the state it had, still good, is saved as the
        checkpoint of the last finished iteration and the error names the file."""
        try:
            return self.algorithm.train_iteration()
        except NonFiniteLossError as error:
            self.iteration -= 1
            path = self.save_checkpoint()
            raise NonFiniteLossError(
                f"iteration {self.iteration + 1}: {error}; training stopped, the last good "
                f"state is saved in {path}") from error

    def run(self) -> dict[str, float]:
        """Train up to ``iterations``; return the last logged value of every metric (of the
        whole run when it resumed)."""
        last = self.iterations
        final: dict[str, float] = self.logger.last_values()
        bar = tqdm(total=last, initial=self.iteration, disable=not self.progress,
                   desc="train", unit="it", dynamic_ncols=True)
        window_start, window_iteration = time.perf_counter(), self.iteration
        with bar:
            while self.iteration < last:
                self.iteration += 1
                self.curriculum.on_iteration(self.iteration, last)
                metrics = self._train_iteration()
                if _is_due(self.iteration, self.log_every, last):
                    elapsed = time.perf_counter() - window_start
                    rate = (self.iteration - window_iteration) / max(elapsed, 1e-9)
                    metrics = {**metrics, "perf/iterations_per_second": rate}
                    window_start, window_iteration = time.perf_counter(), self.iteration
                    self.logger.log(self.iteration, metrics)
                    final.update(metrics)
                if _is_due(self.iteration, self.eval_every, last):
                    evaluation = self.algorithm.evaluate(self.eval_episodes)
                    self.curriculum.update(self.iteration, evaluation)
                    evaluation = {**evaluation, **self.curriculum.metrics()}
                    self.logger.log(self.iteration, evaluation)
                    final.update(evaluation)
                if _is_due(self.iteration, self.checkpoint_every, last):
                    self.save_checkpoint()
                bar.update(1)
                bar.set_postfix(_short(final), refresh=False)
        if isinstance(self.algorithm, TrainEndHook):
            self.algorithm.on_train_end(self.logger.path.parent, self.logger)
        return final


def _short(metrics: Mapping[str, float], limit: int = 3) -> dict[str, str]:
    keys = [k for k in metrics if k.startswith(("eval/", "train/"))][:limit]
    return {k.split("/", 1)[1]: f"{metrics[k]:.3g}" for k in keys}
