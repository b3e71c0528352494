"""From a composed config to a finished run: the glue that ``train.py`` and ``evaluate.py`` share.

Only this module and the two entrypoints touch Hydra; everything it builds takes plain
arguments.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from hydra import compose, initialize_config_dir
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from procmem.checkpoint import CheckpointManager
from procmem.compare import (
    GroupStat,
    RunRecord,
    aggregate,
    curves,
    default_plot_metrics,
    find_runs,
    format_markdown,
    format_table,
    group_runs,
    left_out_reason,
    load_run,
    plot_group_curves,
    write_comparison,
)
from procmem.io import atomic_write_json, atomic_write_text
from procmem.logging import MetricLogger
from procmem.runner import Runner
from procmem.runtime import resolve_device, seed_everything, set_threads
from procmem.schema import check_config
from procmem.status import FAILED, FINISHED, RUNNING, describe_error, write_status

CONFIG_DIR = Path(__file__).resolve().parents[1] / "conf"
SAVED_CONFIG = Path(".hydra") / "config.yaml"
EXPLAINED_PER_STAGE = 3  # evaluate_run spells out this many episodes per stage
SAVED_OVERRIDES = Path(".hydra") / "overrides.yaml"


def register_resolvers() -> None:
    """``${procmem.if_null:value,then,else}``: lets ``resume`` pick the run dir in the config."""
    OmegaConf.register_new_resolver(
        "procmem.if_null", lambda value, then, otherwise: then if value is None else otherwise,
        replace=True,
    )


def compose_config(overrides: Sequence[str] = (), return_hydra_config: bool = False) -> DictConfig:
    """The config ``train.py <overrides>`` would run with (for tests, notebooks, benchmarks)."""
    register_resolvers()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides),
                       return_hydra_config=return_hydra_config)


def build_optional(node: Any, **kwargs: Any) -> Any:
    """Instantiate a group node, or return ``None`` for an empty one (``memory=none``)."""
    if node is None or len(node) == 0:
        return None
    return instantiate(node, _partial_=True)(**kwargs)


def build_algorithm(cfg: DictConfig, device: torch.device) -> tuple[Any, Any]:
    """The algorithm of a run config with its env, eval env, memory and curriculum."""
    try:
        curriculum = instantiate(cfg.curriculum)
        algorithm = instantiate(
            cfg.agent,
            env=instantiate(cfg.env),
            eval_env=instantiate(cfg.env),
            memory=build_optional(cfg.memory, device=str(device)),
            curriculum=curriculum,
            device=device,
            seed=cfg.seed,
        )
    except InstantiationException as error:
        if error.__cause__ is None:
            raise
        raise error.__cause__ from None  # the constructor's own error, without Hydra's wrapper
    return algorithm, curriculum


def run_identity(run_dir: Path) -> tuple[str | None, str]:
    """W&B group and name of a run: jobs of one multirun share their sweep dir as group."""
    sweep_dir = run_dir.parent
    if not (sweep_dir / "multirun.yaml").exists():
        return None, run_dir.name
    overrides_file = run_dir / SAVED_OVERRIDES
    overrides = list(OmegaConf.load(overrides_file)) if overrides_file.exists() else []
    return f"{sweep_dir.parent.name}/{sweep_dir.name}", ",".join([run_dir.name, *overrides])


def load_run_config(run_dir: str | Path) -> DictConfig:
    """The resolved config a run was started with."""
    path = Path(run_dir) / SAVED_CONFIG
    if not path.exists():
        raise FileNotFoundError(f"{path}: not found; is {run_dir} a procmem run dir?")
    return OmegaConf.load(path)


def _logger_sinks(cfg: DictConfig, run_dir: Path, job_type: str) -> list[Any]:
    group, name = run_identity(run_dir)
    sink = build_optional(
        cfg.logger,
        run_dir=run_dir,
        run_config=OmegaConf.to_container(cfg, resolve=True),
        group=group,
        name=name,
        job_type=job_type,
    )
    return [] if sink is None else [sink]


def train(cfg: DictConfig, run_dir: str | Path, resume: bool = False) -> dict[str, float]:
    """Check, build and run one training job in ``run_dir``; return its final metrics.

    ``<run_dir>/status.json`` says ``running`` meanwhile, then ``finished``, or ``failed``
    with the error's first line (the error is re-raised)."""
    write_status(run_dir, RUNNING)
    try:
        final = _train(cfg, Path(run_dir), resume)
    except BaseException as error:
        write_status(run_dir, FAILED, describe_error(error))
        raise
    write_status(run_dir, FINISHED)
    return final


def _train(cfg: DictConfig, run_dir: Path, resume: bool) -> dict[str, float]:
    check_config(cfg)
    set_threads(cfg.torch_threads)
    seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    algorithm, curriculum = build_algorithm(cfg, device)
    checkpoints = CheckpointManager(run_dir / "checkpoints", keep=cfg.trainer.keep_checkpoints)
    checkpoint = checkpoints.load_latest() if resume else None
    logger = MetricLogger(
        run_dir,
        _logger_sinks(cfg, run_dir, "train"),
        resume_iteration=None if checkpoint is None else checkpoint["iteration"],
    )
    trainer = cfg.trainer
    runner = Runner(
        algorithm,
        curriculum,
        logger,
        checkpoints,
        iterations=trainer.iterations,
        eval_every=trainer.eval_every,
        eval_episodes=trainer.eval_episodes,
        checkpoint_every=trainer.checkpoint_every,
        log_every=trainer.log_every,
        progress=trainer.progress,
    )
    if checkpoint is not None:
        runner.restore(checkpoint)
    exit_code = 1
    try:
        final = runner.run()
        exit_code = 0
    finally:
        logger.finish(exit_code)
    return final


def evaluate_run(
    run_dir: str | Path, episodes: int, device: str = "auto", log: bool = True
) -> dict[str, Any]:
    """Evaluate a run's last checkpoint; write and return ``eval.json``'s content."""
    run_dir = Path(run_dir)
    cfg = load_run_config(run_dir)
    set_threads(cfg.torch_threads)
    seed_everything(cfg.seed)
    algorithm, _ = build_algorithm(cfg, resolve_device(device))
    checkpoint = CheckpointManager(run_dir / "checkpoints").load_latest()
    if checkpoint is None:
        raise FileNotFoundError(f"{run_dir / 'checkpoints'}: no checkpoint to evaluate")
    algorithm.load_state_dict(checkpoint["algorithm"])
    metrics = algorithm.evaluate(episodes)
    result = {"iteration": checkpoint["iteration"], "episodes": episodes, **metrics}
    if hasattr(algorithm, "explain"):
        result["samples"] = algorithm.explain(EXPLAINED_PER_STAGE)
    atomic_write_json(run_dir / "eval.json", result)
    if log:
        for sink in _logger_sinks(cfg, run_dir, "eval"):
            sink.log({"iteration": checkpoint["iteration"], **metrics})
            sink.finish(0)
    return result


def compare_runs(
    paths: Sequence[str | Path],
    out_dir: str | Path,
    metrics: Sequence[str] | None = None,
    interval: str = "bootstrap",
    report: bool = False,
) -> tuple[str, dict[str, Path]]:
    """Aggregate finished runs by their overrides over seeds (mean and 95% ``interval``);
    write ``comparison.csv``, ``comparison.md``, ``comparison.png`` (final values) and
    ``curves.png`` (mean curves with shaded bootstrap intervals) into ``out_dir``. Failed and
    unfinished runs are left out and listed. ``report`` also logs it all as a W&B run."""
    loaded = [load_run(run) for path in paths for run in find_runs(path)]
    runs = [run for run in loaded if run.finished]
    left_out = [run for run in loaded if not run.finished]
    if not runs:
        raise ValueError(f"no finished runs to compare in {', '.join(map(str, paths))} "
                         f"({len(left_out)} failed or unfinished)")
    stats = aggregate(runs, metrics, interval=interval)
    csv_path, png_path = write_comparison(stats, out_dir, metrics)
    plotted = list(metrics) if metrics is not None else default_plot_metrics(stats)
    md_path = atomic_write_text(Path(out_dir) / "comparison.md",
                                format_markdown(stats, interval, left_out))
    curves_path = plot_group_curves(curves(runs, plotted), plotted, Path(out_dir) / "curves.png")
    written = {"comparison.csv": csv_path, "comparison.md": md_path,
               "comparison.png": png_path, "curves.png": curves_path}
    if report:
        _log_comparison(loaded, stats, written, Path(out_dir), interval)
    table = "\n".join([format_table(stats),
                       *(f"left out: {run.path}: {left_out_reason(run)}" for run in left_out)])
    return table, written


def _log_comparison(runs: Sequence[RunRecord], stats: Sequence[GroupStat],
                    written: Mapping[str, Path], out_dir: Path, interval: str) -> None:
    """The comparison as a W&B run (``job_type=compare``, in the runs' project and, when they
    share one, their group): tables ``compare/summary`` (one row per group and metric) and
    ``compare/runs`` (every run with its group and status), and both plots."""
    cfg = load_run_config(runs[0].path)
    groups = {run_identity(run.path)[0] for run in runs}
    sink = build_optional(
        cfg.logger,
        run_dir=out_dir,
        run_config={"compared": [str(run.path) for run in runs], "interval": interval},
        group=groups.pop() if len(groups) == 1 else None,
        name=f"compare {out_dir.name}",
        job_type="compare",
    )
    if sink is None:
        raise ValueError(f"report=true logs to W&B, but {runs[0].path} ran with logger=none")
    sink.log_table("compare/summary", [asdict(stat) for stat in stats])
    group_of = {run.path: group for group, members in group_runs([r for r in runs if r.finished])
                .items() for run in members}
    sink.log_table("compare/runs", [
        {"run": str(run.path), "group": group_of.get(run.path, "(left out)"),
         "overrides": " ".join(run.overrides),
         "status": run.state, "error": run.error} for run in runs])
    sink.log_image("compare/comparison", written["comparison.png"])
    sink.log_image("compare/curves", written["curves.png"])
    sink.finish(0)


def format_metrics(metrics: Mapping[str, Any]) -> str:
    """A two-column text table of a metrics dict; a ``samples`` list follows, one a line."""
    scalars = {k: v for k, v in metrics.items() if k != "samples"}
    width = max((len(k) for k in scalars), default=0)
    lines = []
    for key, value in scalars.items():
        shown = f"{value:.4g}" if isinstance(value, float) else str(value)
        lines.append(f"{key:<{width}}  {shown}")
    lines += [", ".join(f"{k}={v}" for k, v in sample.items())
              for sample in metrics.get("samples", ())]
    return "\n".join(lines)
