"""Load runs, group them by their overrides and compare their metrics (finished runs only;
failed and unfinished ones are listed as left out).

A run's evaluation (``eval.json``, ``eval_<policy>.json``) is used only if it is of the run's
last checkpoint (:func:`last_checkpoint`): one that records another ``iteration`` is stale
and left out, and so is one that records none (written by earlier versions) when it is
older than the run's newest checkpoint file; one that records none and is not older is used.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from procmem.io import atomic_write_text
from procmem.run.plots import FEW_POINTS, figure_grid, mark_no_data, save_figure
from procmem.run.run_dir import RunDir
from procmem.run.status import FINISHED, RunStatus

MAX_PLOTTED_METRICS = 6
BOOTSTRAP_SAMPLES = 10_000
BOOTSTRAP_SEED = 0
NO_INTERVAL = "-"  # the interval cell of a group of one run
NO_INTERVAL_NOTE = f"groups with one run (n=1) have no interval ({NO_INTERVAL})"


@dataclass
class RunRecord:
    """One run: its overrides, logged metric rows, per-metric summary and ``status.json``
    (``None`` for runs that predate it, taken as finished); ``problem`` says why its files
    could not be read (it is then left out); ``stale`` says, for each evaluation file left
    out of the summary, that it is not of the run's last checkpoint."""

    path: Path
    overrides: list[str]
    metrics: list[dict]
    summary: dict[str, float]
    status: RunStatus | None = None
    problem: str | None = None
    stale: list[str] = field(default_factory=list)

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
    """Mean and 95% interval of one metric over the runs of one group; a group of one run
    has no interval (``None``)."""

    group: str
    metric: str
    n: int
    mean: float
    ci_low: float | None
    ci_high: float | None

    @property
    def has_interval(self) -> bool:
        return self.ci_low is not None and self.ci_high is not None


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


def _checkpoint_iteration(path: Path) -> int:
    """The iteration in a checkpoint's name (``ckpt_00000400.pt`` -> 400)."""
    return int(path.stem.removeprefix("ckpt_"))


def last_checkpoint(run: RunDir, rows: Sequence[dict], finished: bool) -> int | None:
    """The iteration of the run's last checkpoint: that of its newest ``ckpt_*.pt``, the
    one ``evaluate.py run=`` evaluates. A finished run whose checkpoint files are gone
    saved its last at the last iteration it logged; otherwise ``None`` (not known)."""
    newest = run.checkpoints().latest()
    if newest is not None:
        return _checkpoint_iteration(newest)
    logged = [row["iteration"] for row in rows if "iteration" in row]
    return max(logged) if finished and logged else None


def _evaluation_policies(run: RunDir) -> list[str | None]:
    """The policies the run has evaluation files of: other policies' (``eval_<policy>.json``)
    by name, then its own (``None``, ``eval.json``), so its own entries win a merge."""
    others = sorted(path.stem.removeprefix("eval_") for path in run.path.glob("eval_*.json"))
    return [*others, None]


def _stale_reason(run: RunDir, policy: str | None, evaluation: dict, last: int | None
                 ) -> str | None:
    """Why the evaluation of ``policy`` is not of the run's last checkpoint (``last``), or
    ``None`` when it is, or when that cannot be told (see the module docstring)."""
    path = run.eval_file(policy)
    again = (f"run evaluate.py run={run.path}"
             f"{'' if policy is None else f' eval_policy={policy}'} again")
    iteration = evaluation.get("iteration")
    if iteration is None:
        newest = run.checkpoints().latest()
        if newest is None or path.stat().st_mtime >= newest.stat().st_mtime:
            return None
        return (f"{path.name} records no checkpoint iteration and is older than the run's "
                f"last checkpoint, {_checkpoint_iteration(newest)}; {again}")
    if last is None or iteration == last:
        return None
    return f"{path.name} is of checkpoint {iteration}, the run's last is {last}; {again}"


def _current_evaluations(run: RunDir, last: int | None) -> tuple[dict, list[str]]:
    """The entries of the run's evaluations of its last checkpoint, merged, and why each
    other evaluation is stale."""
    merged: dict = {}
    stale = []
    for policy in _evaluation_policies(run):
        evaluation = run.evaluation(policy)
        if evaluation is None:
            continue
        reason = _stale_reason(run, policy, evaluation, last)
        if reason is None:
            merged.update(evaluation)
        else:
            stale.append(reason)
    return merged, stale


def load_run(run: RunDir, window: float = 0.1) -> RunRecord:
    """Read a run; each metric is summarized by the mean of its last ``window`` fraction of
    logged values, and numeric entries of its evaluations of its last checkpoint replace
    same-named summaries (stale ones are named in ``stale``)."""
    if not 0 < window <= 1:
        raise ValueError(f"window must be in (0, 1], got {window}")
    try:
        status = run.status()
        stopped_before_logging = status is not None and not run.metrics_file.is_file()
        finished = status is None or status.status == FINISHED
        rows = [] if stopped_before_logging else run.metrics(complete=finished)
        summary = _summarize(rows, window)
        evaluations, stale = _current_evaluations(run, last_checkpoint(run, rows, finished))
        summary.update(_numeric_items(evaluations))
    except ValueError as error:  # a damaged status.json, metrics.jsonl or eval*.json
        return RunRecord(path=run.path, overrides=run.overrides(), metrics=[], summary={},
                         problem=str(error))
    return RunRecord(path=run.path, overrides=run.overrides(), metrics=rows, summary=summary,
                     status=status, stale=stale)


def group_label(overrides: Sequence[str], ignore: Sequence[str] = ("seed", "resume")) -> str:
    """The sorted overrides that define a group, leaving out ``ignore`` keys and hydra's own."""
    kept = []
    for override in overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        if key not in ignore and key != "hydra" and not key.startswith("hydra."):
            kept.append(override)
    return " ".join(sorted(kept)) or "(defaults)"


def t_interval(values: Sequence[float]) -> tuple[float, float, float]:
    """Mean and two-sided 95% Student-t interval of two values or more."""
    from scipy import stats as scipy_stats  # here: a second of import, for comparisons only

    n = len(values)
    mean = float(np.mean(values))
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
    """Mean and 95% percentile-bootstrap interval over runs (see :func:`bootstrap_intervals`)
    of two values or more."""
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
    95% ``interval`` over runs, ``bootstrap`` (percentile) or ``t`` (Student); none over a
    single run.

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
                mean, low, high = (INTERVALS[interval](values) if len(values) > 1
                                   else (values[0], None, None))
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


def format_interval(stat: GroupStat) -> str:
    """``[low, high]``, or :data:`NO_INTERVAL` for a group of one run."""
    return f"[{stat.ci_low:.4g}, {stat.ci_high:.4g}]" if stat.has_interval else NO_INTERVAL


def interval_notes(stats: Sequence[GroupStat]) -> list[str]:
    """:data:`NO_INTERVAL_NOTE` once when some group has no interval, else nothing."""
    return [] if all(s.has_interval for s in stats) else [NO_INTERVAL_NOTE]


def format_table(stats: Sequence[GroupStat]) -> str:
    """An aligned text table of group, metric, n, mean and 95% interval (then, where a group
    has none, :data:`NO_INTERVAL_NOTE`)."""
    header = ("group", "metric", "n", "mean", "95% interval")
    rows = [(s.group, s.metric, str(s.n), f"{s.mean:.4g}", format_interval(s)) for s in stats]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return "\n".join([
        *("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
          for row in [header, *rows]),
        *interval_notes(stats)])


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
    """Write ``comparison.csv`` (empty interval cells for a group of one run) and
    ``comparison.png`` (a horizontal bar per group with its interval, one panel per metric,
    groups named in one legend below)."""
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
        ax.barh(positions, [s.mean for s in rows], xerr=error_bars(rows), capsize=4,
                color=[colours[s.group] for s in rows])
        ax.set_yticks([])
        ax.invert_yaxis()  # groups top to bottom in the legend's order
    add_group_legend(fig, colours)
    png_path = save_figure(fig, out_dir / "comparison.png")
    return csv_path, png_path


def error_bars(stats: Sequence[GroupStat]) -> np.ndarray:
    """The error bars of ``stats``' bars, ``[2, len(stats)]``: the interval below and above
    each mean; NaN, drawn as no bar, for a group without an interval."""
    return np.array([[s.mean - s.ci_low, s.ci_high - s.mean] if s.has_interval
                     else [np.nan, np.nan] for s in stats]).T


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


def stale_evaluations(runs: Sequence[RunRecord]) -> list[tuple[Path, str]]:
    """Each run's evaluations left out as stale: the run and why."""
    return [(run.path, reason) for run in runs for reason in run.stale]


def format_markdown(stats: Sequence[GroupStat], interval: str = "bootstrap",
                    left_out: Sequence[RunRecord] = (), compared: Sequence[RunRecord] = ()
                    ) -> str:
    """A Markdown table of group, metric, n, mean and 95% interval (named in the header),
    then :data:`NO_INTERVAL_NOTE` where it applies, the evaluations of the ``compared`` runs
    left out as stale, and the ``left_out`` runs with the reason each is not in it."""
    kind = {"bootstrap": "bootstrap", "t": "Student-t"}[interval]
    lines = [f"| group | metric | n | mean | 95% {kind} interval |", "|---|---|---|---|---|"]
    lines += [f"| {s.group} | {s.metric} | {s.n} | {s.mean:.4g} | {format_interval(s)} |"
              for s in stats]
    notes = interval_notes(stats)
    lines += ["", *notes] if notes else []
    stale = stale_evaluations(compared)
    if stale:
        lines += ["", f"Stale evaluations left out ({len(stale)}):", ""]
        lines += [f"- `{path}`: {reason}" for path, reason in stale]
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
