"""Train one run: ``python train.py [experiment=NAME] [key=value ...]`` (``-m`` to sweep)."""

from __future__ import annotations

import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import CompactHydraException
from hydra.types import RunMode
from omegaconf import DictConfig

from procmem.app import ConfigError, train
from procmem.app.config import name_run, run_config
from procmem.run.checkpoint import CheckpointError
from procmem.run.run_dir import RunDir
from procmem.runtime import NonFiniteLossError

# Errors a user can act on: one line on stderr and an exit code, instead of a traceback.
KNOWN_FAILURES = {
    ConfigError: ("config error", 2),
    NonFiniteLossError: ("training stopped", 3),
    CheckpointError: ("checkpoint error", 4),
}


class JobFailed(CompactHydraException):
    """A multirun job stopped by a known failure. Hydra marks the job failed and runs the
    others; at the end it prints the first such line and exits with 1."""


def _resume_config(cfg: DictConfig) -> DictConfig:
    """``resume=<run dir>`` continues that run with the config it was started with."""
    extra = [o for o in HydraConfig.get().overrides.task if not o.startswith("resume=")]
    if extra:
        raise ConfigError("resume", f"continues a run with its saved config; drop {extra}")
    return run_config(RunDir(cfg.resume))


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    run = RunDir(HydraConfig.get().runtime.output_dir)
    try:
        if cfg.resume:
            cfg = _resume_config(cfg)
        else:
            name_run(cfg)
            run.write_config(cfg)  # Hydra's copy names the run by interpolation
        final = train(cfg, run.path, resume=run.checkpoints().latest() is not None)
    except tuple(KNOWN_FAILURES) as error:
        prefix, exit_code = next(v for k, v in KNOWN_FAILURES.items() if isinstance(error, k))
        print(f"{prefix}: {error}", file=sys.stderr)
        if HydraConfig.get().mode == RunMode.MULTIRUN:  # compare lists the failed job
            raise JobFailed(f"job {run.path} failed: {prefix}: {error}") from error
        if isinstance(error, ConfigError):
            run.discard_if_unused()  # a refused single run leaves no run dir behind
        sys.exit(exit_code)
    print(f"run_dir: {run.path}")
    objective = final.get(cfg.trainer.objective)
    if objective is None:
        print(f"warning: trainer.objective={cfg.trainer.objective} was never logged, so a "
              f"sweeper gets no value; final metrics: {', '.join(sorted(final))}",
              file=sys.stderr)
    return objective


if __name__ == "__main__":
    main()
