from procmem.run.plots import FEW_POINTS, curves_figure, figure_grid, plot_curves


def test_figure_grid_lays_out_four_panels_as_two_by_two():
    fig, axes = figure_grid(4, ncols=2)
    assert len(axes) == len(fig.axes) == 4
    assert axes[0].get_subplotspec().get_gridspec().get_geometry() == (2, 2)


def test_figure_grid_drops_unused_cells():
    fig, axes = figure_grid(3, ncols=2)
    assert len(axes) == len(fig.axes) == 3


def test_plot_curves_writes_a_png(tmp_path):
    rows = [
        {"iteration": i, "train/episode_return": float(i), "memory/skills": i // 2}
        for i in range(5)
    ]
    rows.append({"iteration": 5, "eval/success_rate": 1.0})
    path = tmp_path / "plots" / "curves.png"

    panels = [("train/episode_return", "Episode return"), ("memory/skills", "Skills")]
    result = plot_curves(rows, panels, path, title="run")

    assert result == path
    assert path.read_bytes().startswith(b"\x89PNG")


def test_plot_curves_tolerates_a_missing_metric(tmp_path):
    path = plot_curves([{"iteration": 0}], [("absent/metric", "Absent")], tmp_path / "x.png")
    assert path.stat().st_size > 0


def test_a_metric_logged_at_few_points_is_drawn_with_markers():
    rows = [{"iteration": i, "train/loss_value": 1.0 / i} for i in range(1, FEW_POINTS + 5)]
    rows.append({"iteration": FEW_POINTS + 5, "eval/success_rate": 0.5})  # logged once
    fig = curves_figure(rows, [("eval/success_rate", "Eval"), ("train/loss_value", "Loss")])
    once, many = (ax.lines[0] for ax in fig.axes)
    assert once.get_marker() == "o"  # a single point is visible
    assert many.get_marker() in ("None", None, "")
