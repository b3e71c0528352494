"""Figures drawn from run metrics, made without touching pyplot's global state."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.figure import Figure

FEW_POINTS = 30  # a curve of this many points or fewer is drawn with a marker at each


def figure_grid(n_panels: int, ncols: int) -> tuple[Figure, list[Axes]]:
    """A figure with ``n_panels`` axes laid out row by row, ``ncols`` to a row at most."""
    if n_panels < 1:
        raise ValueError("a figure needs at least one panel")
    ncols = max(1, min(ncols, n_panels))
    nrows = math.ceil(n_panels / ncols)
    fig = Figure(figsize=(5 * ncols, 3.5 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel().tolist()
    for ax in axes[n_panels:]:
        ax.remove()
    return fig, axes[:n_panels]


def mark_no_data(ax: Axes) -> None:
    """Write "no data" in the middle of an empty panel."""
    ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center", va="center")
    ax.set_xticks([])
    ax.set_yticks([])


def save_figure(fig: Figure, path: str | os.PathLike) -> Path:
    """Save ``fig`` as an image at ``path``, creating parent folders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


def plot_curves(
    rows: Sequence[dict],
    panels: Sequence[tuple[str, str]],
    path: str | os.PathLike,
    title: str | None = None,
    ncols: int = 2,
) -> Path:
    """Draw :func:`curves_figure` and save it as a PNG at ``path``."""
    return save_figure(curves_figure(rows, panels, title, ncols), path)


def curves_figure(
    rows: Sequence[dict],
    panels: Sequence[tuple[str, str]],
    title: str | None = None,
    ncols: int = 2,
) -> Figure:
    """Each ``(metric, panel title)`` against ``iteration``, one panel each; a metric logged
    at few points (a final evaluation: one) gets a marker at each."""
    fig, axes = figure_grid(len(panels), ncols)
    for ax, (key, panel_title) in zip(axes, panels, strict=True):
        points = [(r["iteration"], r[key]) for r in rows if r.get(key) is not None]
        ax.set_title(panel_title)
        if points:
            iterations, values = zip(*points, strict=True)
            ax.plot(iterations, values, marker="o" if len(points) <= FEW_POINTS else None,
                    markersize=4)
            ax.set_xlabel("iteration")
        else:
            mark_no_data(ax)
    if title:
        fig.suptitle(title)
    return fig
