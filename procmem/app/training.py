"""Train one run: lock the run dir, check everything, then claim it, run, and record how it
ended.

One process writes a run dir at a time: :func:`train` holds the run dir's lock
(:meth:`~procmem.run.run_dir.RunDir.lock`) from before its first write to its end, and a
second process is refused, having changed nothing. A run dir changes only once a run is
accepted. Everything that can refuse a command comes first and writes nothing: the dir (a
new run needs one without a run in it; a resume needs a run that is not finished), the
config, the device, building the run, and for a resume its checkpoint (loaded into the built
run, so one that does not belong to it is refused) and metrics. Then the run is claimed: its
config is written (new runs), its loggers start, and ``status.json`` says ``running`` with a
heartbeat; only then are rows logged after the checkpoint cut back. A refused new run
removes the dir it was given when that dir was empty, so it leaves nothing behind.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from procmem.app.build import BuiltRun, build_run, logger_sinks
from procmem.app.catalogue import choice
from procmem.app.config import GROUPS, check_config
from procmem.run.heartbeat import Heartbeat
from procmem.run.loggers import MetricLogger, Sink, last_values
from procmem.run.reporters import run_reporters
from procmem.run.run_dir import RunDir, RunDirError
from procmem.run.run_log import run_log
from procmem.run.runner import Runner, format_values, load_state
from procmem.run.signals import RunStopped, StopSignals
from procmem.run.status import FAILED, FINISHED, STOPPED, describe_error
from procmem.runtime import resolve_device, seed_everything, set_rng_state, set_threads

log = logging.getLogger(__name__)


@dataclass
class _Accepted:
    """A run that passed every check: built, with the checkpoint it resumes from (already
    loaded into it)."""

    built: BuiltRun
    checkpoint: dict[str, Any] | None


def train(cfg: DictConfig, run_dir: str | Path, resume: bool = False,
          overrides: Sequence[str] | None = None, hydra: DictConfig | None = None
          ) -> dict[str, float]:
    """Check, build and run one training job in ``run_dir``; return its final metrics.

    ``resume`` continues the run in ``run_dir`` from its latest checkpoint (a finished run is
    left as it is, and its final metrics returned). ``overrides`` and ``hydra`` (Hydra's
    settings) are kept with a new run's config. A refusal raises before anything is written
    (see the module docstring). Once the run is claimed it ends ``finished``, ``failed``
    (the error is re-raised) or ``stopped`` by SIGTERM or SIGINT after saving a checkpoint
    (:class:`~procmem.run.signals.RunStopped` is raised)."""
    run = RunDir(run_dir)
    if resume:
        run.require_run()  # before the lock, which would make the dir
    with run.lock(), StopSignals() as stop:
        new_dir = run.is_empty()
        try:
            accepted = _accept(cfg, run, resume)
            if accepted is None:
                final = last_values(run.metrics())
                log.info("%s finished already; nothing to resume", run.path)
                return final
            sinks, heartbeat = _claim(cfg, run, resume, overrides, hydra)
        except BaseException:
            if new_dir:
                run.remove()
            raise
        with run_log(run.log_file):
            return _run(cfg, run, accepted, sinks, heartbeat, stop)


def _accept(cfg: DictConfig, run: RunDir, resume: bool) -> _Accepted | None:
    """Every check and read a run needs, writing nothing; ``None`` for a finished run."""
    if resume:
        run.require_run()
        status = run.status()
        if status is not None and status.status == FINISHED:
            return None
        if status is not None and status.alive():
            raise RunDirError(f"{run.path} is still running: {status.describe()}; stop it "
                              "before resuming it")
    elif run.holds_run():
        raise RunDirError(f"{run.path} holds a run already: continue it with "
                          f"`{run.resume_command()}`, or give a new run another dir")
    check_config(cfg)
    device = resolve_device(cfg.device)
    set_threads(cfg.torch_threads)
    seed_everything(cfg.seed)
    built = build_run(cfg, device)
    checkpoint = None
    if resume:
        checkpoint = run.checkpoints().load_latest(accept=lambda c: _load(built, c))
    if resume and run.metrics_file.is_file():
        run.metrics()  # a damaged metrics file stops the resume before anything changes
    return _Accepted(built, checkpoint)


def _load(built: BuiltRun, checkpoint: Mapping[str, Any]) -> None:
    """Load a checkpoint into the built run; raises when it does not fit (another agent's
    state, another env's) before anything is written."""
    load_state(built.algorithm, built.curriculum, checkpoint)
    set_rng_state(checkpoint["rng"])  # checked here; set again when the loop starts
    int(checkpoint["iteration"])


def _claim(cfg: DictConfig, run: RunDir, resume: bool, overrides: Sequence[str] | None,
           hydra: DictConfig | None) -> tuple[list[Sink], Heartbeat]:
    """Write a new run's config and id, start its loggers and mark it running."""
    if not resume:
        run.write_config(cfg, None if overrides is None else list(overrides), hydra)
    run.claim_id()  # a run saved before ids gets one: its checkpoints from now are stamped
    sinks = logger_sinks(cfg, run, "train")
    try:
        return sinks, Heartbeat(run)
    except BaseException:
        for sink in sinks:
            sink.finish(1)
        raise


def _run(cfg: DictConfig, run: RunDir, accepted: _Accepted, sinks: list[Sink],
         heartbeat: Heartbeat, stop: StopSignals) -> dict[str, float]:
    checkpoint = accepted.checkpoint
    logger: MetricLogger | None = None
    runner: Runner | None = None
    try:
        _log_start(cfg, run, checkpoint)
        logger = MetricLogger(run.metrics_file, sinks, resume_iteration=None
                              if checkpoint is None else checkpoint["iteration"])
        callbacks = [*accepted.built.callbacks,
                     *run_reporters(run, title=cfg.experiment_name)]
        runner = Runner(accepted.built.algorithm, accepted.built.curriculum, logger,
                        run.checkpoints(), callbacks, stop, **cfg.trainer)
        if checkpoint is not None:
            runner.continue_from(checkpoint)
        final = runner.run()
    except RunStopped as stopped:
        reason = _stop_reason(stopped, run, runner)
        _finish(logger, sinks, stopped.exit_code, stopped=True)
        heartbeat.end(STOPPED, reason, run.resume_command())
        log.info("stopped by %s; to continue: %s", reason, run.resume_command())
        raise
    except BaseException as error:
        _finish(logger, sinks, 1)
        heartbeat.end(FAILED, describe_error(error))
        raise
    _finish(logger, sinks, 0)
    heartbeat.end(FINISHED, runner.stop_reason)
    _log_result(final, runner.iteration)
    return final


def _finish(logger: MetricLogger | None, sinks: list[Sink], exit_code: int,
            stopped: bool = False) -> None:
    for sink in (logger.sinks if logger is not None else sinks):
        sink.finish(exit_code, stopped)


def _stop_reason(stopped: RunStopped, run: RunDir, runner: Runner | None) -> str:
    latest = run.checkpoints().latest()
    if stopped.iteration is not None:
        return f"{stopped}, saved in {latest}"
    during = "" if runner is None else f" during iteration {runner.iteration + 1}"
    kept = f"the latest checkpoint is {latest}" if latest else "no checkpoint was saved"
    return f"{stopped.signal_name}{during}; {kept}"


def _log_start(cfg: DictConfig, run: RunDir, checkpoint: Mapping[str, Any] | None) -> None:
    choices = " ".join(choice(group, cfg[group]) for group in GROUPS)
    log.info("%s: %s seed=%s device=%s", cfg.experiment_name, choices, cfg.seed, cfg.device)
    trainer = cfg.trainer
    log.info("%d iterations%s; evaluate every %d on %d episodes; checkpoint every %d",
             trainer.iterations,
             f" or {trainer.env_steps} env steps" if trainer.env_steps else "",
             trainer.eval_every, trainer.eval_episodes, trainer.checkpoint_every)
    if checkpoint is not None:
        log.info("resumed at iteration %d", checkpoint["iteration"])
    log.info("run dir: %s", run.path.resolve())


def _log_result(final: Mapping[str, float], iteration: int) -> None:
    evaluation = {key: value for key, value in final.items() if key.startswith("eval/")}
    log.info("final evaluation at iteration %d: %s", iteration,
             format_values(evaluation) or "none")
