"""Train one run: ``python train.py [experiment=NAME] [key=value ...]`` (``-m`` to sweep);
``python train.py resume=<run dir>`` continues a stopped, failed or killed run."""

from __future__ import annotations

import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from procmem.app import train
from procmem.app.cli import JobFailed, OutputDirs, known_failure, run_hydra_main
from procmem.app.config import CONFIG_DIR, name_run, resume_config
from procmem.run.lock import RunDirLocked
from procmem.run.run_dir import RunDir
from procmem.run.signals import RunStopped


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="config")
def main(cfg: DictConfig) -> float | None:
    hydra_config = HydraConfig.get()
    run = RunDir(hydra_config.runtime.output_dir)
    multirun = hydra_config.mode == RunMode.MULTIRUN
    resuming = cfg.resume is not None
    try:
        if resuming:
            cfg = resume_config(run, list(hydra_config.overrides.task))
        else:
            name_run(cfg)
        final = train(cfg, run.path, resume=resuming,
                      overrides=list(hydra_config.overrides.task),
                      hydra=HydraConfig.instance().cfg)
    except RunStopped as stopped:  # the whole command stops, a multirun's later jobs too
        print(f"stopped by {stopped}; to continue: {run.resume_command()}", file=sys.stderr)
        sys.exit(stopped.exit_code)
    except Exception as error:
        if not isinstance(error, RunDirLocked):  # the dir is another process's
            OutputDirs.remove_refused()  # the dirs Hydra made for this refused run
        failure = known_failure(error)
        if failure is None:
            raise  # a bug: its traceback, and the run (if it started) is marked failed
        line, exit_code = failure
        print(line, file=sys.stderr)
        if multirun:  # compare lists the failed job; Hydra goes on with the others
            raise JobFailed(f"job {run.path} failed: {line}") from error
        sys.exit(exit_code)
    print(f"run_dir: {run.path}")
    objective = final.get(cfg.trainer.objective)
    if objective is None:
        print(f"warning: trainer.objective={cfg.trainer.objective} was never logged, so a "
              f"sweeper gets no value; final metrics: {', '.join(sorted(final))}",
              file=sys.stderr)
    return objective


if __name__ == "__main__":
    run_hydra_main(main)
