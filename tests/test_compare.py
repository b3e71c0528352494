import csv
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from procmem.app import compare_runs, compose_config
from procmem.run.compare import (
    GroupStat,
    RunRecord,
    aggregate,
    bootstrap_interval,
    curve_panels,
    curves,
    error_bars,
    format_markdown,
    format_table,
    group_label,
    load_run,
    t_interval,
    write_comparison,
)
from procmem.run.run_dir import RunDir, RunDirError, find_runs
from procmem.run.status import FAILED, FINISHED, RUNNING


def make_run(
    run_dir: Path,
    rows: list[dict],
    overrides: Sequence[str] = (),
    evaluation: dict | None = None,
) -> Path:
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if evaluation is not None:
        (run_dir / "eval.json").write_text(json.dumps(evaluation))
    return run_dir


def record(overrides: list[str], **summary: float) -> RunRecord:
    return RunRecord(path=Path("."), overrides=overrides, metrics=[], summary=summary)


def test_load_run_summarizes_the_last_window_of_each_metric(tmp_path):
    rows = [{"iteration": i, "train/episode_reward": float(i)} for i in range(10)]
    rows += [{"iteration": 10, "eval/success_rate": 0.5, "note": "text"}]
    run = load_run(RunDir(make_run(tmp_path / "run", rows, ["seed=1", "memory=none"])), window=0.2)

    assert run.overrides == ["seed=1", "memory=none"]
    assert run.metrics == rows
    assert run.summary == {"train/episode_reward": 8.5, "eval/success_rate": 0.5}


def test_load_run_uses_at_least_one_value(tmp_path):
    rows = [{"iteration": i, "perf/sps": float(i)} for i in range(3)]
    run = load_run(RunDir(make_run(tmp_path / "run", rows)), window=0.01)
    assert run.summary == {"perf/sps": 2.0}


def test_eval_json_overrides_summary(tmp_path):
    rows = [{"iteration": 0, "eval/success_rate": 0.1, "train/episode_reward": 3.0}]
    evaluation = {"eval/success_rate": 0.9, "eval/return": 7, "checkpoint": "last.pt"}
    run = load_run(RunDir(make_run(tmp_path / "run", rows, evaluation=evaluation)))
    assert run.summary == {
        "eval/success_rate": 0.9,
        "eval/return": 7.0,
        "train/episode_reward": 3.0,
    }


def test_load_run_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="metrics.jsonl"):
        load_run(RunDir(tmp_path))
    (tmp_path / "metrics.jsonl").write_text('{"iteration": 0}\nnot json\n')
    record = load_run(RunDir(tmp_path))
    assert (record.state, record.finished) == ("unreadable", False)
    assert record.reason.startswith(f"{tmp_path / 'metrics.jsonl'}:2: not valid JSON")


def test_a_finished_run_whose_last_metrics_line_is_cut_off_is_left_out_and_named(tmp_path):
    runs = [make_run(tmp_path / str(job), [{"iteration": 1, "eval/success_rate": 1.0}])
            for job in (0, 1)]
    for run in runs:
        RunDir(run).write_status(FINISHED)
    with (runs[1] / "metrics.jsonl").open("a") as f:
        f.write('{"iteration": 2, "eval/succ')  # damaged after the run finished
    table, _ = compare_runs([tmp_path], tmp_path)
    assert f"left out: {runs[1]}: unreadable ({runs[1] / 'metrics.jsonl'}:2: the last line " \
           "is cut off)" in table
    assert "| (defaults) | eval/success_rate | 1 |" in (tmp_path / "comparison.md").read_text()


def test_find_runs_on_a_run_dir(tmp_path):
    run_dir = make_run(tmp_path / "run", [{"iteration": 0}])
    assert find_runs(run_dir) == [RunDir(run_dir)]


def test_find_runs_on_a_multirun_dir_sorts_jobs_numerically(tmp_path):
    for job in ["10", "2", "0"]:
        make_run(tmp_path / job, [{"iteration": 0}])
    (tmp_path / "1").mkdir()  # a job that never wrote metrics
    (tmp_path / "multirun.yaml").write_text("hydra: {}\n")
    assert [run.path.name for run in find_runs(tmp_path)] == ["0", "2", "10"]


def test_find_runs_without_runs_raises(tmp_path):
    with pytest.raises(RunDirError, match=str(tmp_path)):
        find_runs(tmp_path)
    with pytest.raises(RunDirError, match="missing"):
        find_runs(tmp_path / "missing")


def test_group_label_ignores_seed_and_hydra_keys():
    overrides = ["seed=3", "memory=none", "hydra.job.chdir=true", "agent.lr=0.1", "+resume=x"]
    assert group_label(overrides) == "agent.lr=0.1 memory=none"
    assert group_label(["seed=1", "hydra/launcher=joblib"]) == "hydra/launcher=joblib"
    assert group_label(["seed=1"]) == "(defaults)"
    assert group_label(["seed=1", "memory=none"], ignore=["memory"]) == "seed=1"


def test_aggregate_mean_and_t_interval():
    runs = [
        record([f"seed={i}", "memory=none"], **{"eval/success_rate": v})
        for i, v in enumerate([1.0, 2.0, 3.0])
    ]
    runs.append(record(["seed=0"], **{"eval/success_rate": 5.0, "train/episode_reward": 1.0}))

    stats = aggregate(runs, interval="t")

    half = 4.302652729911275 * 1.0 / math.sqrt(3)
    assert [(s.group, s.metric, s.n) for s in stats] == [
        ("memory=none", "eval/success_rate", 3),
        ("(defaults)", "eval/success_rate", 1),
        ("(defaults)", "train/episode_reward", 1),
    ]
    first = stats[0]
    assert first.mean == pytest.approx(2.0)
    assert first.ci_low == pytest.approx(2.0 - half)
    assert first.ci_high == pytest.approx(2.0 + half)


def test_bootstrap_interval_resamples_the_runs():
    # Three runs: the resampled mean is 1.0 with probability 1/27 > 2.5%, so the interval
    # reaches the extremes; the default interval is the bootstrap one.
    runs = [record([f"seed={i}"], m=v) for i, v in enumerate([1.0, 2.0, 3.0])]
    (stat,) = aggregate(runs)
    assert (stat.mean, stat.ci_low, stat.ci_high) == (2.0, 1.0, 3.0)
    values = np.random.default_rng(1).normal(5.0, 1.0, size=40)
    mean, low, high = bootstrap_interval(values)
    _, t_low, t_high = t_interval(values)
    assert low < mean < high and abs((high - low) / (t_high - t_low) - 1) < 0.15
    assert bootstrap_interval(values) == (mean, low, high)  # a fixed seed: repeatable
    with pytest.raises(ValueError, match="interval must be one of"):
        aggregate(runs, interval="wald")


def test_curves_average_the_iterations_every_run_logged():
    runs = [record(["seed=0"]), record(["seed=1"])]
    runs[0].metrics = [{"iteration": i, "r": float(i)} for i in (1, 2, 3)]
    runs[1].metrics = [{"iteration": i, "r": float(i) + 2} for i in (1, 2)] + [{"iteration": 3}]
    (curve,) = curves(runs, ["r", "absent"])
    assert curve.group == "(defaults)" and curve.n == 2
    assert curve.iterations.tolist() == [1, 2] and curve.mean.tolist() == [2.0, 3.0]
    assert (curve.low <= curve.mean).all() and (curve.high >= curve.mean).all()


def test_curves_show_the_metrics_that_have_curves():
    runs = [record(["seed=0"], **{"eval_sample/episode_return": 5.0})]
    runs[0].metrics = [{"iteration": i, "train/episode_return": float(i)} for i in (1, 2)]
    metrics = ["train/episode_return", "eval_sample/episode_return"]
    group_curves = curves(runs, metrics)
    assert curve_panels(group_curves, metrics) == ["train/episode_return"]
    assert curve_panels([], metrics) == metrics  # nothing to draw: the panels say so


def test_aggregate_single_run_has_no_interval():
    for interval in ("bootstrap", "t"):
        (stat,) = aggregate([record(["seed=0"], **{"perf/sps": 4.0})], interval=interval)
        assert stat == GroupStat("(defaults)", "perf/sps", 1, 4.0, None, None)


def test_aggregate_counts_only_runs_that_have_the_metric():
    runs = [record([], a=1.0, b=2.0), record([], a=3.0)]
    stats = aggregate(runs, metrics=["b", "a", "absent"])
    assert [(s.metric, s.n, s.mean) for s in stats] == [("b", 1, 2.0), ("a", 2, 2.0)]


def test_format_markdown_names_the_interval():
    stats = [GroupStat("memory=none", "eval/success_rate", 3, 0.5, 0.25, 0.75)]
    assert format_markdown(stats).splitlines() == [
        "| group | metric | n | mean | 95% bootstrap interval |", "|---|---|---|---|---|",
        "| memory=none | eval/success_rate | 3 | 0.5 | [0.25, 0.75] |"]
    assert "95% Student-t interval" in format_markdown(stats, "t")


def test_format_table_aligns_columns():
    stats = [
        GroupStat("memory=none", "eval/success_rate", 3, 0.5, 0.25, 0.75),
        GroupStat("(defaults)", "perf/sps", 1, 1200.0, None, None),
    ]
    lines = format_table(stats).splitlines()
    assert lines[0].split() == ["group", "metric", "n", "mean", "95%", "interval"]
    assert lines[1].split() == ["memory=none", "eval/success_rate", "3", "0.5", "[0.25,", "0.75]"]
    assert lines[0].index("metric") == lines[1].index("eval/") == lines[2].index("perf/")
    assert lines[2].split() == ["(defaults)", "perf/sps", "1", "1200", "-"]
    assert lines[3:] == ["groups with one run (n=1) have no interval (-)"]


def test_write_comparison_writes_csv_and_png(tmp_path):
    stats = [
        GroupStat("memory=none", "eval/success_rate", 3, 0.5, 0.25, 0.75),
        GroupStat("memory=skills", "eval/success_rate", 3, 0.8, 0.7, 0.9),
        GroupStat("memory=skills", "perf/sps", 3, 1000.0, 900.0, 1100.0),
    ]
    csv_path, png_path = write_comparison(stats, tmp_path / "out")

    assert csv_path == tmp_path / "out" / "comparison.csv"
    with csv_path.open() as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["group", "metric", "n", "mean", "ci_low", "ci_high"]
    assert [(r["group"], r["metric"], int(r["n"]), float(r["mean"])) for r in rows] == [
        ("memory=none", "eval/success_rate", 3, 0.5),
        ("memory=skills", "eval/success_rate", 3, 0.8),
        ("memory=skills", "perf/sps", 3, 1000.0),
    ]
    assert png_path == tmp_path / "out" / "comparison.png"
    assert png_path.read_bytes().startswith(b"\x89PNG")


def test_write_comparison_end_to_end_from_a_multirun(tmp_path):
    multirun = tmp_path / "multirun"
    for job, (memory, value) in enumerate([("none", 1.0), ("none", 2.0), ("skills", 4.0)]):
        make_run(
            multirun / str(job),
            [{"iteration": 0, "eval/success_rate": value}],
            [f"seed={job}", f"memory={memory}"],
        )
    stats = aggregate([load_run(p) for p in find_runs(multirun)])
    _, png_path = write_comparison(
        stats, tmp_path / "out", metrics_to_plot=["eval/success_rate", "absent"]
    )
    assert [(s.group, s.mean) for s in stats] == [("memory=none", 1.5), ("memory=skills", 4.0)]
    assert png_path.stat().st_size > 0


def test_aggregate_labels_groups_by_the_overrides_that_vary():
    shared = ["logger=wandb", "trainer.iterations=50"]
    runs = [
        record([*shared, f"seed={seed}", f"memory={memory}"], **{"train/success": float(seed)})
        for seed in (0, 1)
        for memory in ("none", "skill_library")
    ]
    stats = aggregate(runs)
    assert [s.group for s in stats] == ["memory=none", "memory=skill_library"]
    assert [s.n for s in stats] == [2, 2]


def test_failed_and_unfinished_runs_are_left_out_and_listed(tmp_path):
    finished = make_run(tmp_path / "0", [{"iteration": 1, "train/success": 1.0}])
    RunDir(finished).write_status(FINISHED)
    failed = make_run(tmp_path / "1", [{"iteration": 1, "train/success": 0.0}])
    RunDir(failed).write_status(FAILED, "NonFiniteLossError: the A2C loss is nan")
    killed = make_run(tmp_path / "2", [{"iteration": 1, "train/success": 0.0}])
    RunDir(killed).write_status(RUNNING)
    before_logging = tmp_path / "3"
    RunDir(before_logging).write_status(FAILED, "ConfigError: env.max_steps: -1 is out of range")

    table, written = compare_runs([tmp_path], tmp_path)

    assert table.splitlines()[1:] == [
        "(defaults)  train/success  1  1     -",
        "groups with one run (n=1) have no interval (-)",
        f"left out: {failed}: failed (NonFiniteLossError: the A2C loss is nan)",
        f"left out: {killed}: running, or killed before it could finish",
        f"left out: {before_logging}: failed (ConfigError: env.max_steps: -1 is out of range)"]
    assert "Left out, not finished (3):" in written["comparison.md"].read_text()


def test_only_failed_runs_is_an_error(tmp_path):
    RunDir(tmp_path / "0").write_status(FAILED, "RuntimeError: boom")
    with pytest.raises(RunDirError, match=r"no finished runs to compare .* \(1 left out: "
                                          rf"{tmp_path / '0'}: failed \(RuntimeError: boom\)\)"):
        compare_runs([tmp_path], tmp_path)


def test_a_wandb_report_needs_runs_that_used_wandb(tmp_path):
    run = make_run(tmp_path / "run", [{"iteration": 1, "train/success": 1.0}])
    OmegaConf.save(compose_config(["logger=none"]), run / ".hydra" / "config.yaml")
    with pytest.raises(ValueError, match=f"report=true logs to W&B, but {run} ran with "
                                         "logger=none"):
        compare_runs([run], tmp_path, report=True)


def test_an_unreadable_status_file_is_named(tmp_path):
    run = make_run(tmp_path / "run", [{"iteration": 1}])
    (run / "status.json").write_text('{"stat')
    assert load_run(RunDir(run)).reason.startswith(f"{run / 'status.json'}: not a run status")
    (run / "status.json").write_text('{"status": "paused"}')
    assert load_run(RunDir(run)).reason.startswith(
        f"{run / 'status.json'}: unknown status 'paused'")


def finished_run(run_dir: Path, checkpoints: Sequence[int] = (150, 400),
                 **evaluations: dict) -> Path:
    """A finished run that logged ``eval/reuse_rate`` 0.874 at its last iteration, 400, with
    the checkpoint files of ``checkpoints`` and evaluation files named by the keywords."""
    make_run(run_dir, [{"iteration": 400, "eval/reuse_rate": 0.874}])
    RunDir(run_dir).write_status(FINISHED)
    (run_dir / "checkpoints").mkdir()
    for iteration in checkpoints:
        (run_dir / "checkpoints" / f"ckpt_{iteration:08d}.pt").write_bytes(b"")
    for name, evaluation in evaluations.items():
        (run_dir / f"{name}.json").write_text(json.dumps(evaluation))
    return run_dir


def test_a_stale_evaluation_is_left_out_and_named(tmp_path):
    run = finished_run(tmp_path / "run", eval={"iteration": 150, "eval/reuse_rate": 1.0},
                       eval_sample={"iteration": 400, "eval_sample/reuse_rate": 0.5})
    table, written = compare_runs([run], tmp_path / "out")

    why = (f"eval.json is of checkpoint 150, the run's last is 400; run evaluate.py run={run} "
           "again")
    assert f"stale evaluation left out: {run}: {why}" in table.splitlines()
    markdown = written["comparison.md"].read_text()
    assert f"Stale evaluations left out (1):\n\n- `{run}`: {why}\n" in markdown
    with written["comparison.csv"].open() as f:
        means = {row["metric"]: float(row["mean"]) for row in csv.DictReader(f)}
    assert means == {"eval/reuse_rate": 0.874, "eval_sample/reuse_rate": 0.5}


def test_an_evaluation_of_the_last_checkpoint_is_used(tmp_path):
    run = finished_run(tmp_path / "run", eval={"iteration": 400, "eval/reuse_rate": 1.0},
                       eval_sample={"iteration": 150, "eval_sample/reuse_rate": 0.5})
    record = load_run(RunDir(run))
    assert record.summary == {"eval/reuse_rate": 1.0}
    assert record.stale == ["eval_sample.json is of checkpoint 150, the run's last is 400; run "
                            f"evaluate.py run={run} eval_policy=sample again"]


def test_without_checkpoint_files_a_finished_runs_last_is_its_last_logged_iteration(tmp_path):
    stale = finished_run(tmp_path / "stale", (), eval={"iteration": 150, "eval/reuse_rate": 1.0})
    fresh = finished_run(tmp_path / "fresh", (), eval={"iteration": 400, "eval/reuse_rate": 1.0})
    assert load_run(RunDir(stale)).summary == {"eval/reuse_rate": 0.874}
    assert load_run(RunDir(fresh)).summary == {"eval/reuse_rate": 1.0}


def test_an_evaluation_without_an_iteration_is_stale_only_when_older_than_the_last_checkpoint(
    tmp_path,
):
    run = finished_run(tmp_path / "run", eval={"eval/reuse_rate": 1.0})
    assert load_run(RunDir(run)).summary == {"eval/reuse_rate": 1.0}  # written after it
    newest = run / "checkpoints" / "ckpt_00000400.pt"
    os.utime(run / "eval.json", (newest.stat().st_mtime - 60,) * 2)
    record = load_run(RunDir(run))
    assert record.summary == {"eval/reuse_rate": 0.874}
    assert record.stale == ["eval.json records no checkpoint iteration and is older than the "
                            f"run's last checkpoint, 400; run evaluate.py run={run} again"]


def test_a_group_of_one_run_has_no_interval(tmp_path):
    for job, (memory, value) in enumerate([("none", 1.0), ("none", 2.0), ("skills", 4.0)]):
        make_run(tmp_path / str(job), [{"iteration": 0, "m": value}],
                 [f"seed={job}", f"memory={memory}"])
    table, written = compare_runs([tmp_path], tmp_path)

    note = "groups with one run (n=1) have no interval (-)"
    lines = table.splitlines()
    assert lines[1].split() == ["memory=none", "m", "2", "1.5", "[1,", "2]"]
    assert lines[2].split() == ["memory=skills", "m", "1", "4", "-"]
    assert lines[3:] == [note]
    with written["comparison.csv"].open() as f:
        rows = list(csv.DictReader(f))
    assert [(r["ci_low"], r["ci_high"]) for r in rows] == [("1.0", "2.0"), ("", "")]
    markdown = written["comparison.md"].read_text().splitlines()
    assert markdown[2:] == ["| memory=none | m | 2 | 1.5 | [1, 2] |",
                            "| memory=skills | m | 1 | 4 | - |", "", note]
    bars = error_bars(aggregate([load_run(run) for run in find_runs(tmp_path)]))
    assert bars[:, 0].tolist() == [0.5, 0.5] and np.isnan(bars[:, 1]).all()
