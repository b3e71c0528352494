"""Load finished runs, group them by their overrides and compare their metrics."""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf
from scipy import stats as scipy_stats

from procmem.io import atomic_write_text
from procmem.logging import read_metrics
from procmem.plots import figure_grid, mark_no_data, save_figure

MAX_PLOTTED_METRICS = 6


@dataclass
class RunRecord:
    """One finished run: its overrides, logged metric rows and per-metric summary."""

    path: Path
    overrides: list[str]
    metrics: list[dict]
    summary: dict[str, float]


@dataclass
class GroupStat:
    """Mean and 95% Student-t interval of one metric over the runs of one group."""

    group: str
    metric: str
    n: int
    mean: float
    ci_low: float
    ci_high: float


def _numeric_items(row: dict) -> Iterable[tuple[str, float]]:
    """Numeric metric entries of ``row``, leaving out ``iteration``."""
    for key, value in row.items():
        if key != "iteration" and isinstance(value, int | float) and not isinstance(value, bool):
            yield key, float(value)


def _summarize(rows: Sequence[dict], window: float) -> dict[str, float]:
    series: dict[str, list[float]] = {}
    for row in rows:
        for key, value in _numeric_items(row):
            series.setdefault(key, []).append(value)
    return {
        key: float(np.mean(values[-max(1, round(window * len(values))) :]))
        for key, values in series.items()
    }


def load_run(run_dir: str | os.PathLike, window: float = 0.1) -> RunRecord:
    """Read a run folder; each metric is summarized by the mean of its last ``window`` fraction
    of logged values, and numeric entries of ``eval.json`` replace same-named summaries."""
    if not 0 < window <= 1:
        raise ValueError(f"window must be in (0, 1], got {window}")
    run_dir = Path(run_dir)
    rows = read_metrics(run_dir / "metrics.jsonl")
    summary = _summarize(rows, window)

    eval_path = run_dir / "eval.json"
    if eval_path.is_file():
        try:
            evaluation = json.loads(eval_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ValueError(f"{eval_path}: not valid JSON ({e.msg})") from e
        if not isinstance(evaluation, dict):
            raise ValueError(f"{eval_path}: expected a JSON object")
        summary.update(_numeric_items(evaluation))

    overrides_path = run_dir / ".hydra" / "overrides.yaml"
    overrides = (
        [str(o) for o in OmegaConf.to_container(OmegaConf.load(overrides_path))]
        if overrides_path.is_file()
        else []
    )
    return RunRecord(path=run_dir, overrides=overrides, metrics=rows, summary=summary)


def find_runs(path: str | os.PathLike) -> list[Path]:
    """The run folder ``path`` itself, or the job folders of the multirun folder ``path``."""
    path = Path(path)
    if (path / "metrics.jsonl").is_file():
        return [path]
    jobs = [d for d in path.iterdir() if (d / "metrics.jsonl").is_file()] if path.is_dir() else []
    if not jobs:
        raise ValueError(f"no runs (folders with metrics.jsonl) found in {path}")
    return sorted(jobs, key=lambda d: (0, int(d.name), "") if d.name.isdigit() else (1, 0, d.name))


def group_label(overrides: Sequence[str], ignore: Sequence[str] = ("seed", "resume")) -> str:
    """The sorted overrides that define a group, leaving out ``ignore`` keys and hydra's own."""
    kept = []
    for override in overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        if key not in ignore and key != "hydra" and not key.startswith("hydra."):
            kept.append(override)
    return " ".join(sorted(kept)) or "(defaults)"


def _mean_interval(values: Sequence[float]) -> tuple[float, float, float]:
    """Mean and two-sided 95% Student-t interval; a single value has a zero-width interval."""
    n = len(values)
    mean = float(np.mean(values))
    if n == 1:
        return mean, mean, mean
    half = float(scipy_stats.t.ppf(0.975, n - 1) * np.std(values, ddof=1) / math.sqrt(n))
    return mean, mean - half, mean + half


def aggregate(
    runs: Sequence[RunRecord],
    metrics: Sequence[str] | None = None,
    ignore: Sequence[str] = ("seed", "resume"),
) -> list[GroupStat]:
    """Per group of runs (first-seen order) and metric (sorted by default): mean and 95% interval.

    Groups are labelled by the overrides that vary between runs (an override every run shares
    says nothing). By default every summarized metric of any run is used; a group lacking a
    metric in some runs gets a smaller ``n`` and none at all when no run has it.
    """
    shared = set.intersection(*(set(r.overrides) for r in runs)) if len(runs) > 1 else set()
    groups: dict[str, list[RunRecord]] = {}
    for run in runs:
        varying = [o for o in run.overrides if o not in shared]
        groups.setdefault(group_label(varying, ignore), []).append(run)
    names = list(metrics) if metrics is not None else sorted({k for r in runs for k in r.summary})

    out = []
    for group, members in groups.items():
        for metric in names:
            values = [r.summary[metric] for r in members if metric in r.summary]
            if values:
                mean, low, high = _mean_interval(values)
                out.append(GroupStat(group, metric, len(values), mean, low, high))
    return out


def format_table(stats: Sequence[GroupStat]) -> str:
    """An aligned text table of group, metric, n, mean and 95% interval."""
    header = ("group", "metric", "n", "mean", "95% interval")
    rows = [
        (s.group, s.metric, str(s.n), f"{s.mean:.4g}", f"[{s.ci_low:.4g}, {s.ci_high:.4g}]")
        for s in stats
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    )


def _default_plot_metrics(stats: Sequence[GroupStat]) -> list[str]:
    """Up to ``MAX_PLOTTED_METRICS`` metrics, eval/* first, then train/*, then the rest."""

    def rank(metric: str) -> tuple[int, str]:
        prefix = metric.split("/", 1)[0]
        return {"eval": 0, "train": 1}.get(prefix, 2), metric

    return sorted({s.metric for s in stats}, key=rank)[:MAX_PLOTTED_METRICS]


def write_comparison(
    stats: Sequence[GroupStat],
    out_dir: str | os.PathLike,
    metrics_to_plot: Sequence[str] | None = None,
) -> tuple[Path, Path]:
    """Write ``comparison.csv`` and ``comparison.png`` (a bar per group, one panel per metric)."""
    out_dir = Path(out_dir)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["group", "metric", "n", "mean", "ci_low", "ci_high"])
    writer.writerows([s.group, s.metric, s.n, s.mean, s.ci_low, s.ci_high] for s in stats)
    csv_path = atomic_write_text(out_dir / "comparison.csv", buffer.getvalue())

    names = list(metrics_to_plot) if metrics_to_plot is not None else _default_plot_metrics(stats)
    fig, axes = figure_grid(len(names), ncols=3)
    for ax, metric in zip(axes, names, strict=True):
        rows = [s for s in stats if s.metric == metric]
        ax.set_title(metric)
        if not rows:
            mark_no_data(ax)
            continue
        positions = range(len(rows))
        errors = [[s.mean - s.ci_low for s in rows], [s.ci_high - s.mean for s in rows]]
        ax.bar(positions, [s.mean for s in rows], yerr=errors, capsize=4)
        ax.set_xticks(positions, [s.group for s in rows], rotation=30, ha="right")
    png_path = save_figure(fig, out_dir / "comparison.png")
    return csv_path, png_path
