"""Load runs, group them by their overrides and compare their metrics (finished runs only;
failed and unfinished ones are listed as left out)."""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from scipy import stats as scipy_stats

from procmem.io import atomic_write_text
from procmem.run.plots import FEW_POINTS, figure_grid, mark_no_data, save_figure
from procmem.run.run_dir import RunDir
from procmem.run.status import FINISHED, RunStatus

MAX_PLOTTED_METRICS = 6
BOOTSTRAP_SAMPLES = 10_000
BOOTSTRAP_SEED = 0


@dataclass
class RunRecord:
    """One run: its overrides, logged metric rows, per-metric summary and ``status.json``
    (``None`` for runs that predate it, taken as finished); ``problem`` says why its files
    could not be read (it is then left out)."""

    path: Path
    overrides: list[str]
    metrics: list[dict]
    summary: dict[str, float]
    status: RunStatus | None = None
    problem: str | None = None

    @property
    def state(self) -> str:
        """``running``, ``finished``, ``failed`` or ``stopped``; ``unreadable`` with a
        problem."""
        if self.problem is not None:
            return "unreadable"
        return self.status.status if self.status is not None else FINISHED

    @property
    def reason(self) -> str | None:
        """Why the run failed or stopped, or what makes it unreadable."""
        return self.problem or (self.status.reason if self.status is not None else None)

    @property
    def finished(self) -> bool:
        return self.state == FINISHED


@dataclass
class GroupStat:
    """Mean and 95% interval of one metric over the runs of one group."""

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


def load_run(run: RunDir, window: float = 0.1) -> RunRecord:
    """Read a run; each metric is summarized by the mean of its last ``window`` fraction of
    logged values, and numeric entries of its evaluation replace same-named summaries."""
    if not 0 < window <= 1:
        raise ValueError(f"window must be in (0, 1], got {window}")
    try:
        status = run.status()
        stopped_before_logging = status is not None and not run.metrics_file.is_file()
        finished = status is None or status.status == FINISHED
        rows = [] if stopped_before_logging else run.metrics(complete=finished)
        summary = _summarize(rows, window)
        summary.update(_numeric_items(run.evaluations()))
    except ValueError as error:  # a damaged status.json, metrics.jsonl or eval*.json
        return RunRecord(path=run.path, overrides=run.overrides(), metrics=[], summary={},
                         problem=str(error))
    return RunRecord(path=run.path, overrides=run.overrides(), metrics=rows, summary=summary,
                     status=status)


def group_label(overrides: Sequence[str], ignore: Sequence[str] = ("seed", "resume")) -> str:
    """The sorted overrides that define a group, leaving out ``ignore`` keys and hydra's own."""
    kept = []
    for override in overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        if key not in ignore and key != "hydra" and not key.startswith("hydra."):
            kept.append(override)
    return " ".join(sorted(kept)) or "(defaults)"


def t_interval(values: Sequence[float]) -> tuple[float, float, float]:
    """Mean and two-sided 95% Student-t interval; a single value has a zero-width interval."""
    n = len(values)
    mean = float(np.mean(values))
    if n == 1:
        return mean, mean, mean
    half = float(scipy_stats.t.ppf(0.975, n - 1) * np.std(values, ddof=1) / math.sqrt(n))
    return mean, mean - half, mean + half


def bootstrap_intervals(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Means and 95% percentile-bootstrap intervals of ``values`` ``[runs, T]`` over runs, for
    each of the ``T`` columns at once: :data:`BOOTSTRAP_SAMPLES` resamples of the runs with
    replacement (a fixed seed, so reports are repeatable)."""
    values = np.asarray(values, dtype=np.float64)
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    picks = rng.integers(0, len(values), size=(BOOTSTRAP_SAMPLES, len(values)))
    means = values[picks].mean(axis=1)  # [samples, T]
    low, high = np.percentile(means, [2.5, 97.5], axis=0)
    return values.mean(axis=0), low, high


def bootstrap_interval(values: Sequence[float]) -> tuple[float, float, float]:
    """Mean and 95% percentile-bootstrap interval over runs (see :func:`bootstrap_intervals`);
    a single value has a zero-width interval."""
    mean, low, high = bootstrap_intervals(np.asarray(values, dtype=np.float64)[:, None])
    return float(mean[0]), float(low[0]), float(high[0])


INTERVALS = {"bootstrap": bootstrap_interval, "t": t_interval}


def group_runs(runs: Sequence[RunRecord], ignore: Sequence[str] = ("seed", "resume")
               ) -> dict[str, list[RunRecord]]:
    """Runs by group (first-seen order), labelled by the overrides that vary between runs (an
    override every run shares says nothing)."""
    shared = set.intersection(*(set(r.overrides) for r in runs)) if len(runs) > 1 else set()
    groups: dict[str, list[RunRecord]] = {}
    for run in runs:
        varying = [o for o in run.overrides if o not in shared]
        groups.setdefault(group_label(varying, ignore), []).append(run)
    return groups


def aggregate(
    runs: Sequence[RunRecord],
    metrics: Sequence[str] | None = None,
    ignore: Sequence[str] = ("seed", "resume"),
    interval: str = "bootstrap",
) -> list[GroupStat]:
    """Per group of runs (:func:`group_runs`) and metric (sorted by default): the mean and a
    95% ``interval`` over runs, ``bootstrap`` (percentile) or ``t`` (Student).

    By default every summarized metric of any run is used; a group lacking a metric in some
    runs gets a smaller ``n`` and none at all when no run has it.
    """
    if interval not in INTERVALS:
        raise ValueError(f"interval must be one of {sorted(INTERVALS)}, got {interval!r}")
    names = list(metrics) if metrics is not None else sorted({k for r in runs for k in r.summary})
    out = []
    for group, members in group_runs(runs, ignore).items():
        for metric in names:
            values = [r.summary[metric] for r in members if metric in r.summary]
            if values:
                mean, low, high = INTERVALS[interval](values)
                out.append(GroupStat(group, metric, len(values), mean, low, high))
    return out


@dataclass
class GroupCurve:
    """One metric of one group over training: the mean and 95% bootstrap interval over runs
    at each iteration every run of the group logged it."""

    group: str
    metric: str
    n: int
    iterations: np.ndarray
    mean: np.ndarray
    low: np.ndarray
    high: np.ndarray


def curves(runs: Sequence[RunRecord], metrics: Sequence[str],
           ignore: Sequence[str] = ("seed", "resume")) -> list[GroupCurve]:
    """Per group and metric, the curve over the iterations its runs all logged."""
    out = []
    for group, members in group_runs(runs, ignore).items():
        for metric in metrics:
            series = [{row["iteration"]: float(row[metric]) for row in run.metrics
                       if metric in row and "iteration" in row} for run in members]
            series = [s for s in series if s]
            common = sorted(set.intersection(*(set(s) for s in series))) if series else []
            if common:
                values = np.array([[s[i] for i in common] for s in series])
                mean, low, high = bootstrap_intervals(values)
                out.append(GroupCurve(group, metric, len(series), np.array(common), mean, low,
                                      high))
    return out


def curve_panels(group_curves: Sequence[GroupCurve], metrics: Sequence[str]) -> list[str]:
    """The ``metrics`` that have a curve in some group: a value only an evaluation file holds
    (``eval_sample/...``) has none and is shown in the final values alone. All of
    ``metrics`` when none has a curve, so their panels say so."""
    drawn = {curve.metric for curve in group_curves}
    return [metric for metric in metrics if metric in drawn] or list(metrics)


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


def default_plot_metrics(stats: Sequence[GroupStat]) -> list[str]:
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
    """Write ``comparison.csv`` and ``comparison.png`` (a horizontal bar per group with its
    interval, one panel per metric, groups named in one legend below)."""
    out_dir = Path(out_dir)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["group", "metric", "n", "mean", "ci_low", "ci_high"])
    writer.writerows([s.group, s.metric, s.n, s.mean, s.ci_low, s.ci_high] for s in stats)
    csv_path = atomic_write_text(out_dir / "comparison.csv", buffer.getvalue())

    names = list(metrics_to_plot) if metrics_to_plot is not None else default_plot_metrics(stats)
    fig, axes = figure_grid(len(names), ncols=3)
    colours = group_colours(s.group for s in stats)
    for ax, metric in zip(axes, names, strict=True):
        rows = [s for s in stats if s.metric == metric]
        ax.set_title(metric)
        if not rows:
            mark_no_data(ax)
            continue
        positions = range(len(rows))
        errors = [[s.mean - s.ci_low for s in rows], [s.ci_high - s.mean for s in rows]]
        ax.barh(positions, [s.mean for s in rows], xerr=errors, capsize=4,
                color=[colours[s.group] for s in rows])
        ax.set_yticks([])
        ax.invert_yaxis()  # groups top to bottom in the legend's order
    add_group_legend(fig, colours)
    png_path = save_figure(fig, out_dir / "comparison.png")
    return csv_path, png_path


def group_colours(groups: Iterable[str]) -> dict[str, str]:
    """One matplotlib colour per group, in first-seen order."""
    colours: dict[str, str] = {}
    for group in groups:
        colours.setdefault(group, f"C{len(colours) % 10}")
    return colours


def add_group_legend(fig: Figure, colours: dict[str, str]) -> None:
    """A legend of the groups' colours below the panels (labels can be long)."""
    if colours:
        handles = [Patch(color=colour) for colour in colours.values()]
        fig.legend(handles, list(colours), loc="outside lower center", fontsize="small")


def left_out_reason(run: RunRecord) -> str:
    """Why a run is not compared: ``failed (<error>)``, ``stopped (<signal>...)``, ``running
    (pid ... on ...)``, ``died (...)`` or ``unreadable (<problem>)``."""
    if run.problem is not None:
        return f"unreadable ({run.problem})"
    assert run.status is not None  # a run without a status counts as finished
    return run.status.describe()


def format_markdown(stats: Sequence[GroupStat], interval: str = "bootstrap",
                    left_out: Sequence[RunRecord] = ()) -> str:
    """A Markdown table of group, metric, n, mean and 95% interval (named in the header),
    then the ``left_out`` runs with the reason each is not in it."""
    kind = {"bootstrap": "bootstrap", "t": "Student-t"}[interval]
    lines = [f"| group | metric | n | mean | 95% {kind} interval |", "|---|---|---|---|---|"]
    lines += [f"| {s.group} | {s.metric} | {s.n} | {s.mean:.4g} "
              f"| [{s.ci_low:.4g}, {s.ci_high:.4g}] |" for s in stats]
    if left_out:
        lines += ["", f"Left out, not finished ({len(left_out)}):", ""]
        lines += [f"- `{run.path}`: {left_out_reason(run)}" for run in left_out]
    return "\n".join(lines) + "\n"


def plot_group_curves(group_curves: Sequence[GroupCurve], metrics: Sequence[str],
                      path: str | os.PathLike) -> Path:
    """One panel per metric: each group's mean curve over iterations (one colour per group in
    every panel), its 95% bootstrap interval shaded, the groups named in one legend below."""
    fig, axes = figure_grid(len(metrics), ncols=3)
    colours = group_colours(c.group for c in group_curves)
    for ax, metric in zip(axes, metrics, strict=True):
        ax.set_title(metric)
        drawn = [c for c in group_curves if c.metric == metric]
        if not drawn:
            mark_no_data(ax)
            continue
        for curve in drawn:
            colour = colours[curve.group]
            few = len(curve.iterations) <= FEW_POINTS
            ax.plot(curve.iterations, curve.mean, color=colour, marker="o" if few else None,
                    markersize=3)
            ax.fill_between(curve.iterations, curve.low, curve.high, color=colour, alpha=0.2,
                            linewidth=0)
        ax.set_xlabel("iteration")
    add_group_legend(fig, colours)
    return save_figure(fig, path)
