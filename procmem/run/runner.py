"""The one training loop every algorithm runs in."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Annotated, Any

from tqdm.auto import tqdm

from procmem.algorithms.protocols import Algorithm
from procmem.curricula import Curriculum
from procmem.run.callbacks import Callback, CallbackError
from procmem.run.checkpoint import CheckpointManager
from procmem.run.loggers import MetricLogger
from procmem.run.signals import RunStopped, StopSignals
from procmem.run.status import describe_error
from procmem.runtime import (
    NonFiniteLossError,
    NonFiniteParametersError,
    rng_state,
    set_rng_state,
)
from procmem.settings import AtLeast, configurable

log = logging.getLogger(__name__)


def _is_due(iteration: int, every: int, last: int) -> bool:
    return iteration == last or (every > 0 and iteration % every == 0)


@configurable
class Runner:
    """Owns iterations, evaluation cadence, curriculum updates, logging, checkpoints and the
    callbacks, the same for every algorithm (the ``trainer`` settings).

    Runs ``iterations`` training iterations, or fewer when ``env_steps`` (0: no limit) is
    reached first: the iteration whose ``train/env_steps`` reaches it is the last, so runs of
    different families can share a budget of env steps. It logs every ``log_every``-th
    iteration; evaluates on
    ``eval_episodes`` episodes every ``eval_every`` iterations and saves a checkpoint every
    ``checkpoint_every`` (0: only after the last iteration; the last is always evaluated and
    saved), keeping the newest ``keep_checkpoints``. ``progress`` shows a progress bar with
    the latest value of ``objective``, the metric a run reports as its result (what a
    sweeper optimises). ``curriculum`` may be ``None``. ``callbacks``
    (:mod:`procmem.run.callbacks`) are called after each iteration, evaluation and checkpoint
    and at the end, in order (the reporters, which draw and save what the algorithm offers,
    among them); one that calls :meth:`request_stop` ends training after the iteration,
    which is then logged, evaluated and saved as the last one (a request from an
    evaluation's hook: saved), and the run ends ``finished`` with the reason
    (:attr:`stop_reason`).

    After each checkpoint the logger sends its rows on to the sinks (W&B). With ``stop``, a
    stop signal ends the run after the current iteration: it saves a checkpoint there and
    raises :class:`~procmem.run.signals.RunStopped`.
    """

    def __init__(
        self,
        algorithm: Algorithm,
        curriculum: Curriculum | None,
        logger: MetricLogger,
        checkpoints: CheckpointManager,
        callbacks: Sequence[Callback] = (),
        stop: StopSignals | None = None,
        *,
        iterations: Annotated[int, AtLeast(1)] = 200,
        env_steps: Annotated[int, AtLeast(0)] = 0,
        eval_every: Annotated[int, AtLeast(0)] = 50,
        eval_episodes: Annotated[int, AtLeast(1)] = 20,
        checkpoint_every: Annotated[int, AtLeast(0)] = 50,
        keep_checkpoints: Annotated[int, AtLeast(1)] = 3,
        log_every: Annotated[int, AtLeast(1)] = 1,
        progress: bool = True,
        objective: str = "eval/success_rate",
    ) -> None:
        self.algorithm = algorithm
        self.curriculum = curriculum
        self.logger = logger
        self.checkpoints = checkpoints
        self.callbacks = list(callbacks)
        self.stop_reason: str | None = None
        self.stop = stop
        self.iterations = iterations
        self.env_steps = env_steps
        self.eval_every = eval_every
        self.eval_episodes = eval_episodes
        self.checkpoint_every = checkpoint_every
        self.keep_checkpoints = keep_checkpoints
        self.log_every = log_every
        self.progress = progress
        self.objective = objective
        self.iteration = 0

    def restore(self, checkpoint: Mapping[str, Any]) -> None:
        """Continue from a checkpoint written by this runner."""
        load_state(self.algorithm, self.curriculum, checkpoint)
        self.continue_from(checkpoint)

    def continue_from(self, checkpoint: Mapping[str, Any]) -> None:
        """Take up the loop where ``checkpoint`` left it (its iteration and RNG states), the
        algorithm and curriculum already holding its state (:func:`load_state`)."""
        set_rng_state(checkpoint["rng"])
        self.iteration = int(checkpoint["iteration"])
        for callback, state in zip(self.callbacks, checkpoint.get("callbacks") or (),
                                   strict=False):
            self._call(callback, "load_state_dict", state)

    def request_stop(self, reason: str) -> None:
        """End training after the current iteration (a callback's call): the run ends
        ``finished``, with ``reason``."""
        self.stop_reason = self.stop_reason or reason

    def save_checkpoint(self) -> Path:
        """Save the state after the current iteration, then send its rows to the sinks."""
        path = self.checkpoints.save(
            self.iteration,
            {
                "algorithm": self.algorithm.state_dict(),
                "curriculum": None if self.curriculum is None else self.curriculum.state_dict(),
                "rng": rng_state(),
                "callbacks": [callback.state_dict() for callback in self.callbacks],
            },
            keep=self.keep_checkpoints,
        )
        self.logger.commit(self.iteration)
        log.info("checkpoint %d: %s", self.iteration, path)
        self._notify("on_checkpoint", path)
        return path

    def _notify(self, hook: str, *arguments: Any) -> None:
        """Call ``hook`` of every callback with this runner and ``arguments``."""
        for callback in self.callbacks:
            self._call(callback, hook, self, *arguments)

    @staticmethod
    def _call(callback: Callback, hook: str, *arguments: Any) -> None:
        """One callback's hook; its error is a :class:`CallbackError` naming it."""
        try:
            getattr(callback, hook)(*arguments)
        except (RunStopped, CallbackError):
            raise
        except Exception as error:
            raise CallbackError(f"callback {type(callback).__name__}.{hook}: "
                                f"{describe_error(error)}") from error

    def _train_iteration(self) -> dict[str, float]:
        """One training iteration. A NaN or inf loss (raised by the algorithm before it
        updates any parameter) stops the run: the state it had, still good, is saved as the
        checkpoint of the last finished iteration and the error names the file. Parameters
        an optimizer step made NaN or inf stop it without saving that state: the error names
        the latest checkpoint, the last good state."""
        try:
            return self.algorithm.train_iteration()
        except NonFiniteLossError as error:
            self.iteration -= 1
            path = self.save_checkpoint()
            raise NonFiniteLossError(
                f"iteration {self.iteration + 1}: {error}; training stopped, the last good "
                f"state is saved in {path}") from error
        except NonFiniteParametersError as error:
            latest = self.checkpoints.latest()
            raise NonFiniteParametersError(
                f"iteration {self.iteration}: {error}; training stopped, the last good state "
                f"is " + (f"the checkpoint {latest}" if latest else "the start: no checkpoint "
                          "was saved")) from error

    def run(self) -> dict[str, float]:
        """Train up to ``iterations`` (or ``env_steps``); return the last logged value of
        every metric (of the whole run when it resumed)."""
        final: dict[str, float] = self.logger.last_values()
        bar = tqdm(total=self.iterations, initial=self.iteration, disable=not self.progress,
                   desc="train", unit="it", dynamic_ncols=True)
        window_start, window_iteration = time.perf_counter(), self.iteration
        deferred = self.stop.deferred() if self.stop is not None else nullcontext()
        with bar, deferred:
            while self.iteration < self.iterations and not self._budget_spent(final):
                self.iteration += 1
                if self.curriculum is not None:
                    self.curriculum.on_iteration(self.iteration, self.iterations)
                metrics = self._train_iteration()
                last = self.iteration if self._budget_spent(metrics) else self.iterations
                self._notify("on_iteration", metrics)
                if self.stop_reason is not None:  # a callback ends training here
                    last = self.iteration
                if _is_due(self.iteration, self.log_every, last):
                    elapsed = time.perf_counter() - window_start
                    rate = (self.iteration - window_iteration) / max(elapsed, 1e-9)
                    metrics = {**metrics, "perf/iterations_per_second": rate}
                    window_start, window_iteration = time.perf_counter(), self.iteration
                    self.logger.log(self.iteration, metrics)
                    final.update(metrics)
                if _is_due(self.iteration, self.eval_every, last):
                    evaluation = self.algorithm.evaluate(self.eval_episodes)
                    if self.curriculum is not None:
                        self.curriculum.update(self.iteration, evaluation)
                        evaluation = {**evaluation, **self.curriculum.metrics()}
                    self.logger.log(self.iteration, evaluation)
                    final.update(evaluation)
                    log.info("iteration %d: %s", self.iteration, format_values(evaluation))
                    self._notify("on_evaluation", evaluation)
                saved = _is_due(self.iteration, self.checkpoint_every, last)
                if saved:
                    self.save_checkpoint()
                bar.update(1)
                bar.set_postfix(progress_postfix(final, self.objective), refresh=False)
                if self.stop_reason is not None and self.iteration < self.iterations:
                    if not saved:
                        self.save_checkpoint()
                    log.info("%s", self.stop_reason)
                    break
                signum = None if self.stop is None else self.stop.requested
                if signum is not None and self.iteration < last:  # stop here, saved
                    if not saved:
                        self.save_checkpoint()
                    raise RunStopped(signum, self.iteration)
        self._notify("on_train_end")
        return final

    def _budget_spent(self, metrics: Mapping[str, float]) -> bool:
        """Whether ``metrics`` show the env-step budget reached."""
        return self.env_steps > 0 and metrics.get("train/env_steps", 0) >= self.env_steps


def load_state(algorithm: Algorithm, curriculum: Curriculum | None,
               checkpoint: Mapping[str, Any]) -> None:
    """Put the algorithm's and curriculum's state of a checkpoint written by :class:`Runner`
    in place; raises when it does not fit them."""
    algorithm.load_state_dict(checkpoint["algorithm"])
    if curriculum is not None:
        curriculum.load_state_dict(checkpoint["curriculum"])


def format_values(metrics: Mapping[str, Any]) -> str:
    """``key=value`` pairs on one line, numbers to 4 significant digits."""
    return " ".join(f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}"
                    for key, value in metrics.items())


def progress_postfix(metrics: Mapping[str, float], objective: str, limit: int = 3
                     ) -> dict[str, str]:
    """What the progress bar shows: the objective's latest value first, then other eval and
    train metrics, each under its full name (``eval/success_rate``), so an evaluation's
    figure is never read as a training one."""
    keys = [k for k in metrics if k.startswith(("eval/", "train/")) and k != objective]
    keys = ([objective] if objective in metrics else []) + keys
    return {k: f"{metrics[k]:.3g}" for k in keys[:limit]}
