"""Train one run: check the config, build the run, run it, record its status."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from procmem.app.build import build_run, logger_sinks
from procmem.app.config import check_config
from procmem.run.loggers import MetricLogger
from procmem.run.reporters import run_reporters
from procmem.run.run_dir import RunDir
from procmem.run.runner import Runner
from procmem.run.status import FAILED, FINISHED, RUNNING, describe_error
from procmem.runtime import resolve_device, seed_everything, set_threads


def train(cfg: DictConfig, run_dir: str | Path, resume: bool = False) -> dict[str, float]:
    """Check, build and run one training job in ``run_dir``; return its final metrics.

    The run's status says ``running`` meanwhile, then ``finished``, or ``failed`` with the
    error's first line (the error is re-raised). With ``resume`` the run continues from its
    latest checkpoint."""
    run = RunDir(run_dir)
    run.write_status(RUNNING)
    try:
        final = _train(cfg, run, resume)
    except BaseException as error:
        run.write_status(FAILED, describe_error(error))
        raise
    run.write_status(FINISHED)
    return final


def _train(cfg: DictConfig, run: RunDir, resume: bool) -> dict[str, float]:
    check_config(cfg)
    set_threads(cfg.torch_threads)
    seed_everything(cfg.seed)
    built = build_run(cfg, resolve_device(cfg.device))
    checkpoints = run.checkpoints()
    checkpoint = checkpoints.load_latest() if resume else None
    logger = MetricLogger(
        run.metrics_file,
        logger_sinks(cfg, run, "train"),
        resume_iteration=None if checkpoint is None else checkpoint["iteration"],
    )
    runner = Runner(built.algorithm, built.curriculum, logger, checkpoints,
                    run_reporters(run, title=cfg.experiment_name), **cfg.trainer)
    if checkpoint is not None:
        runner.restore(checkpoint)
    exit_code = 1
    try:
        final = runner.run()
        exit_code = 0
    finally:
        logger.finish(exit_code)
    return final
