"""Evaluate a finished run, and compare the runs of multiruns."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from omegaconf import open_dict

from procmem.algorithms.protocols import Explainer
from procmem.app.build import build_component, build_run, logger_sinks
from procmem.app.catalogue import import_target
from procmem.app.config import ConfigError, check_component, run_config
from procmem.io import atomic_write_text
from procmem.run.checkpoint import CheckpointError
from procmem.run.compare import (
    INTERVALS,
    GroupStat,
    RunRecord,
    aggregate,
    curve_panels,
    curves,
    default_plot_metrics,
    format_markdown,
    format_table,
    group_runs,
    left_out_reason,
    load_run,
    plot_group_curves,
    stale_evaluations,
    write_comparison,
)
from procmem.run.run_dir import RunDir, RunDirError, find_runs
from procmem.run.status import FINISHED
from procmem.runtime import resolve_device, seed_everything, set_threads
from procmem.settings import settings_of

EXPLAINED_PER_STAGE = 3  # evaluate_run spells out this many episodes per stage


def evaluate_run(
    run_dir: str | Path, episodes: int, device: str = "auto", log: bool = True,
    eval_policy: str | None = None,
) -> tuple[dict[str, Any], Path]:
    """Evaluate a run's last checkpoint; write the result as the run's evaluation and return
    it and the file it went to. The result records the checkpoint's ``iteration``, the run's
    status then (``run_status``: ``finished``, ``running (pid 12 on node3)``, ``stopped
    (...)``, ...) and whether the run was still in progress (``in_progress``, see
    :func:`progress_note`); algorithms that explain themselves add a few spelled-out
    ``samples``. An ``eval_policy`` replaces the run's ``agent.eval_policy`` (``greedy`` or
    ``sample``, for the agents that act from a policy) and is noted in the result; where it
    is not the run's own, the metrics are named ``eval_<policy>/...`` and kept apart
    (:meth:`~procmem.run.run_dir.RunDir.eval_file` of the policy), so a comparison shows
    both. With ``log``, a run that used W&B also gets a W&B run of the evaluation, kept in
    its own folder (``evaluation/wandb``) so the training run stays the one its ``wandb/``
    shows.

    Bad arguments (no run dir, ``episodes`` below 1, a device it lacks) and a run without a
    usable checkpoint raise before anything is written."""
    if episodes < 1:
        raise ConfigError("episodes", f"{episodes} is out of range: evaluate at least 1 episode")
    run = RunDir(run_dir)
    run.require_run()
    cfg = run_config(run)
    other_policy = None
    if eval_policy is not None:
        own_policy = cfg.agent.get("eval_policy")
        with open_dict(cfg):
            cfg.agent.eval_policy = eval_policy
        check_component(cfg.agent, "agent")
        if own_policy is None:  # a run saved before the setting: it had the default
            own_policy = settings_of(import_target(cfg.agent._target_))["eval_policy"].default
        if eval_policy != own_policy:
            other_policy = eval_policy
    torch_device = resolve_device(device)
    status = run.status()
    set_threads(cfg.torch_threads)
    seed_everything(cfg.seed)
    algorithm = build_run(cfg, torch_device).algorithm
    checkpoint = run.checkpoints().load_latest(
        accept=lambda c: algorithm.load_state_dict(c["algorithm"]))
    if checkpoint is None:
        raise CheckpointError(f"{run.path}: no checkpoint to evaluate (the run stopped before "
                              "it saved one)")
    metrics = algorithm.evaluate(episodes)
    if other_policy is not None:
        metrics = {re.sub("^eval/", f"eval_{other_policy}/", key): value
                   for key, value in metrics.items()}
    result = {"iteration": checkpoint["iteration"],
              "run_status": FINISHED if status is None else status.describe(),
              "in_progress": status is not None and status.alive(), "episodes": episodes,
              **({} if eval_policy is None else {"eval_policy": eval_policy}), **metrics}
    if isinstance(algorithm, Explainer):
        result["samples"] = algorithm.explain(EXPLAINED_PER_STAGE)
    written = run.write_evaluation(result, other_policy)
    if log:
        for sink in logger_sinks(cfg, run, "eval"):
            sink.log({"iteration": checkpoint["iteration"], **metrics})
            sink.finish(0)
    return result, written


def progress_note(result: Mapping[str, Any]) -> str | None:
    """The note for an evaluation of a run still in progress (its checkpoint may not stay
    the last), or ``None``."""
    if not result.get("in_progress"):
        return None
    return (f"note: evaluating checkpoint {result['iteration']} of a run still in progress "
            f"({result['run_status']}); compare uses it only if it stays the run's last "
            "checkpoint")


def compare_runs(
    paths: Sequence[str | Path],
    out_dir: str | Path,
    metrics: Sequence[str] | None = None,
    interval: str = "bootstrap",
    report: bool = False,
) -> tuple[str, dict[str, Path]]:
    """Aggregate finished runs by their overrides over seeds (mean and 95% ``interval``);
    write ``comparison.csv``, ``comparison.md``, ``comparison.png`` (final values) and
    ``curves.png`` (mean curves with shaded bootstrap intervals) into ``out_dir``. Failed,
    stopped, running and unreadable runs are left out and listed, and so are evaluations
    not of their run's last checkpoint (stale). ``report`` also logs it all as a W&B run.

    Arguments that leave nothing to compare (no finished run, a metric no run logged, an
    unknown interval) raise before anything is written, so earlier outputs stay."""
    if interval not in INTERVALS:
        raise ConfigError("interval", f"{interval!r} is not one of {', '.join(INTERVALS)}")
    loaded = [load_run(run) for path in paths for run in find_runs(path)]
    runs = [run for run in loaded if run.finished]
    left_out = [run for run in loaded if not run.finished]
    if not runs:
        raise RunDirError(f"no finished runs to compare in {', '.join(map(str, paths))} "
                          f"({len(left_out)} left out: "
                          f"{'; '.join(f'{r.path}: {left_out_reason(r)}' for r in left_out)})")
    logged = {metric for run in runs for metric in run.summary}
    unknown = [metric for metric in metrics or () if metric not in logged]
    if unknown:
        raise ConfigError("metrics", f"{', '.join(unknown)}: logged by none of the finished "
                                     f"runs; they logged {', '.join(sorted(logged))}")
    stats = aggregate(runs, metrics, interval=interval)
    csv_path, png_path = write_comparison(stats, out_dir, metrics)
    plotted = list(metrics) if metrics is not None else default_plot_metrics(stats)
    md_path = atomic_write_text(Path(out_dir) / "comparison.md",
                                format_markdown(stats, interval, left_out, runs))
    group_curves = curves(runs, plotted)
    curves_path = plot_group_curves(group_curves, curve_panels(group_curves, plotted),
                                    Path(out_dir) / "curves.png")
    written = {"comparison.csv": csv_path, "comparison.md": md_path,
               "comparison.png": png_path, "curves.png": curves_path}
    if report:
        _log_comparison(loaded, stats, written, Path(out_dir), interval)
    table = "\n".join([
        format_table(stats),
        *(f"stale evaluation left out: {path}: {why}" for path, why in stale_evaluations(runs)),
        *(f"left out: {run.path}: {left_out_reason(run)}" for run in left_out)])
    return table, written


def _log_comparison(runs: Sequence[RunRecord], stats: Sequence[GroupStat],
                    written: Mapping[str, Path], out_dir: Path, interval: str) -> None:
    """The comparison as a W&B run (``job_type=compare``, in the runs' project and, when they
    share one, their group): tables ``compare/summary`` (one row per group and metric) and
    ``compare/runs`` (every run with its group and status), and both plots."""
    cfg = run_config(RunDir(runs[0].path))
    if not cfg.logger:
        raise ValueError(f"report=true logs to W&B, but {runs[0].path} ran with logger=none")
    groups = {RunDir(run.path).identity()[0] for run in runs}
    sink = build_component(
        cfg.logger, "logger", directory=out_dir, run_id=RunDir(out_dir).wandb_run_id("compare"),
        run_config={"compared": [str(run.path) for run in runs], "interval": interval},
        group=groups.pop() if len(groups) == 1 else None, name=f"compare {out_dir.name}",
        job_type="compare",
    )
    sink.log_table("compare/summary", [asdict(stat) for stat in stats])
    group_of = {run.path: group for group, members in group_runs([r for r in runs if r.finished])
                .items() for run in members}
    sink.log_table("compare/runs", [
        {"run": str(run.path), "group": group_of.get(run.path, "(left out)"),
         "overrides": " ".join(run.overrides),
         "status": run.state, "reason": run.reason} for run in runs])
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
