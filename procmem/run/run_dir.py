"""The run directory: the one place that knows what a run keeps where.

::

    <run dir>/
      .hydra/config.yaml     the resolved config the run started with
      .hydra/overrides.yaml  its command-line overrides (and hydra.yaml, Hydra's settings)
      .lock                  while a process writes the run: its lock (:mod:`procmem.run.lock`)
      run_id                 the run's id: its W&B run's, and the stamp of its checkpoints
      status.json            running (pid, host, heartbeat) | finished | failed | stopped
      train.log              what the console showed: config, evaluations, checkpoints, result
      metrics.jsonl          one JSON object per logged point
      checkpoints/           ckpt_<iteration>.pt, the newest few
      plots/                 training.png, and episode.gif, imagination.png, ...
      wandb/                 the W&B run (a folder per start, all with the run's id)
      eval.json              what ``evaluate.py run=`` measured (eval_<policy>.json: with
                             a policy other than the run's own)
      evaluation/wandb/      the W&B runs of those evaluations
      <artifacts>            what the algorithm leaves for later runs (its ``artifacts``:
                             skills.json, env_model.pt, policy.pt, ...)

The jobs of a multirun are run dirs ``0``, ``1``, ... of one sweep dir, which holds
``multirun.yaml``. Everything a resume or a report reads is written atomically, and nothing
is written before a run is accepted (``procmem.app.training``).
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import shutil
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from procmem.io import atomic_write_json, atomic_write_text
from procmem.run.checkpoint import CheckpointManager
from procmem.run.lock import RunLock
from procmem.run.loggers import read_metrics
from procmem.run.status import RunStatus

CONFIG_FILE = Path(".hydra") / "config.yaml"
OVERRIDES_FILE = Path(".hydra") / "overrides.yaml"
HYDRA_FILE = Path(".hydra") / "hydra.yaml"
STATUS_FILE = "status.json"
LOG_FILE = "train.log"
METRICS_FILE = "metrics.jsonl"
CHECKPOINT_DIR = "checkpoints"
PLOTS_DIR = "plots"
WANDB_DIR = "wandb"
RUN_ID_FILE = "run_id"
EARLIER_RUN_ID_FILE = Path(WANDB_DIR) / "train_run_id"  # where runs with W&B kept it before
EVAL_FILE = "eval.json"
EVALUATION_DIR = "evaluation"
SWEEP_MARKER = "multirun.yaml"
LOCK_FILE = ".lock"


class RunDirError(Exception):
    """A dir that cannot be used as asked: missing, not a run, holding a run already, or
    the dir of a run that is still alive."""


class RunDir:
    """The files of one run (see the module docstring); ``path`` need not exist yet."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RunDir) and other.path == self.path

    def __hash__(self) -> int:
        return hash(self.path)

    # --- where things are -------------------------------------------------------------------

    @property
    def config_file(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def metrics_file(self) -> Path:
        return self.path / METRICS_FILE

    @property
    def log_file(self) -> Path:
        return self.path / LOG_FILE

    @property
    def evaluation_dir(self) -> Path:
        """Where the W&B runs of evaluations go, apart from the training run's."""
        return self.path / EVALUATION_DIR

    @property
    def plots_dir(self) -> Path:
        return self.path / PLOTS_DIR

    def eval_file(self, policy: str | None = None) -> Path:
        """``eval.json``, or ``eval_<policy>.json`` for an evaluation by a policy other than
        the run's own."""
        return self.path / (EVAL_FILE if policy is None else f"eval_{policy}.json")

    def is_empty(self) -> bool:
        """Whether the dir is missing or empty but for its lock file (a run may start
        here)."""
        return not self.path.is_dir() or all(p.name == LOCK_FILE for p in self.path.iterdir())

    def lock(self) -> RunLock:
        """The lock a process holds while it writes this run (``with run.lock(): ...``)."""
        return RunLock(self.path / LOCK_FILE)

    def remove(self) -> None:
        """Delete the dir (what a refused new run had written there)."""
        shutil.rmtree(self.path, ignore_errors=True)

    def holds_run(self) -> bool:
        """Whether a run has started here: it has a status, metrics or checkpoints."""
        return self.is_run() or bool(self.checkpoints().paths())

    def require_run(self) -> None:
        """Raise :class:`RunDirError` unless this is the dir of a run (one line saying what
        the dir is instead)."""
        if self.is_empty():
            raise RunDirError(f"{self.path}: no run here (the dir is missing or empty)")
        if not self.config_file.is_file():
            raise RunDirError(f"{self.path}: not a run dir (it has no {CONFIG_FILE}); give "
                              "a dir train.py made")

    def resume_command(self) -> str:
        """The command that continues this run."""
        return f"python train.py resume={shlex.quote(str(self.path.resolve()))}"

    def is_run(self) -> bool:
        """Whether a run has started here (it logged metrics or recorded a status)."""
        return self.metrics_file.is_file() or (self.path / STATUS_FILE).is_file()

    def sweep_dir(self) -> Path | None:
        """The multirun dir this run is a job of, or ``None`` for a single run."""
        return self.path.parent if (self.path.parent / SWEEP_MARKER).exists() else None

    def identity(self) -> tuple[str | None, str]:
        """W&B group and name: jobs of one multirun share their sweep dir as group and are
        named by job number and overrides; a single run is named by its dir."""
        sweep = self.sweep_dir()
        if sweep is None:
            return None, self.path.name
        return f"{sweep.parent.name}/{sweep.name}", ",".join([self.path.name, *self.overrides()])

    # --- config, status, metrics ------------------------------------------------------------

    def config(self) -> DictConfig:
        """The resolved config the run was started with."""
        if not self.config_file.is_file():
            raise FileNotFoundError(f"{self.config_file}: not found; is {self.path} a procmem "
                                    "run dir?")
        return OmegaConf.load(self.config_file)

    def write_config(self, cfg: DictConfig, overrides: list[str] | None = None,
                     hydra: DictConfig | None = None) -> Path:
        """Keep ``cfg`` as the config the run was started with, and its command-line
        ``overrides`` and ``hydra`` settings where it had them."""
        if overrides is not None:
            atomic_write_text(self.path / OVERRIDES_FILE, OmegaConf.to_yaml(overrides))
        if hydra is not None:
            atomic_write_text(self.path / HYDRA_FILE, OmegaConf.to_yaml(hydra))
        return atomic_write_text(self.config_file, OmegaConf.to_yaml(cfg))

    def overrides(self) -> list[str]:
        """The run's command-line overrides (none for a run started without Hydra)."""
        path = self.path / OVERRIDES_FILE
        return [str(o) for o in OmegaConf.load(path)] if path.is_file() else []

    def status(self) -> RunStatus | None:
        """What ``status.json`` says, or ``None`` for a run dir without one."""
        path = self.path / STATUS_FILE
        if not path.is_file():
            return None
        try:
            return RunStatus.from_json(json.loads(path.read_text(encoding="utf-8")))
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as error:
            raise ValueError(f"{path}: not a run status file ({error})") from error
        except ValueError as error:
            raise ValueError(f"{path}: {error}") from error

    def write_status(self, status: RunStatus | str, reason: str | None = None) -> Path:
        """Record ``status`` (a :class:`RunStatus`, or a status name with its ``reason``)."""
        if isinstance(status, str):
            status = RunStatus(status, reason)
        return atomic_write_json(self.path / STATUS_FILE, status.to_json())

    def metrics(self, complete: bool = False) -> list[dict[str, Any]]:
        """The logged rows (see :func:`~procmem.run.loggers.read_metrics`)."""
        return read_metrics(self.metrics_file, complete)

    def checkpoints(self) -> CheckpointManager:
        """The run's checkpoints, stamped with its :meth:`run_id`; one stamped by another run
        is refused (see :class:`CheckpointManager`)."""
        return CheckpointManager(self.path / CHECKPOINT_DIR, self.run_id())

    # --- results ----------------------------------------------------------------------------

    def evaluation(self, policy: str | None = None) -> dict[str, Any] | None:
        """What ``evaluate.py run=`` wrote (:meth:`eval_file` of ``policy``), or ``None``."""
        path = self.eval_file(policy)
        if not path.is_file():
            return None
        try:
            evaluation = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: not valid JSON ({error.msg})") from error
        if not isinstance(evaluation, dict):
            raise ValueError(f"{path}: expected a JSON object")
        return evaluation

    def write_evaluation(self, result: dict[str, Any], policy: str | None = None) -> Path:
        return atomic_write_json(self.eval_file(policy), result)

    def run_id(self) -> str | None:
        """The run's id, given when it was first claimed (:meth:`claim_id`), or ``None``
        (no run yet, or a run saved before ids without W&B)."""
        for id_file in (self.path / RUN_ID_FILE, self.path / EARLIER_RUN_ID_FILE):
            if id_file.is_file():
                return id_file.read_text().strip()
        return None

    def claim_id(self) -> str:
        """The run's id, given now if it has none: it stays the run's for its life."""
        run_id = self.run_id()
        if run_id is None:
            run_id = secrets.token_hex(4)
            atomic_write_text(self.path / RUN_ID_FILE, run_id)
        return run_id

    def wandb_run_id(self, job_type: str) -> str:
        """The W&B run id: the training run's is the run's id, so a resume continues it;
        other jobs (evaluations, comparisons) get a fresh one each."""
        return self.claim_id() if job_type == "train" else secrets.token_hex(4)


def find_runs(path: str | os.PathLike) -> list[RunDir]:
    """The run dir ``path`` itself, or the job dirs of the multirun dir ``path``, in job
    order."""
    run = RunDir(path)
    if run.is_run():
        return [run]
    jobs = [RunDir(d) for d in run.path.iterdir()] if run.path.is_dir() else []
    jobs = [job for job in jobs if job.is_run()]
    if not jobs:
        raise RunDirError(f"no runs (folders with {METRICS_FILE} or {STATUS_FILE}) found in "
                          f"{run.path}")
    return sorted(jobs, key=lambda j: (0, int(j.path.name), "") if j.path.name.isdigit()
                  else (1, 0, j.path.name))
