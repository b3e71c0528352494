"""A run dir changes only once a run is accepted: what is refused before anything is written,
in process (the command-line cases are in test_bad_inputs.py)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import torch

from procmem import app
from procmem.app.cli import one_line
from procmem.app.config import ConfigError
from procmem.io import atomic_write_text
from procmem.run.checkpoint import CheckpointError
from procmem.run.compare import load_run
from procmem.run.loggers import MetricsFileError, WandbSink
from procmem.run.run_dir import RunDir, RunDirError
from procmem.run.status import STOPPED, RunStatus
from procmem.runtime import resolve_device
from procmem.settings import SettingError

from helpers import TINY


def snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def tiny_cfg():
    return app.compose_config([*TINY, "logger=none"])


@pytest.fixture(scope="module")
def stopped_run(tiny_cfg, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny run that finished its iterations but says it was stopped."""
    run_dir = tmp_path_factory.mktemp("stopped") / "run"
    app.train(tiny_cfg, run_dir)
    RunDir(run_dir).write_status(RunStatus(STOPPED, "SIGTERM after iteration 12"))
    return run_dir


def test_a_refused_config_leaves_no_run_dir(tmp_path: Path) -> None:
    cfg = app.compose_config(["env.max_steps=-1", "logger=none"])
    with pytest.raises(ConfigError, match="env.max_steps"):
        app.train(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_a_new_run_in_a_dir_holding_a_run_is_refused_and_changes_nothing(
    tiny_cfg, stopped_run: Path
) -> None:
    before = snapshot(stopped_run)
    with pytest.raises(RunDirError, match=f"holds a run already: continue it with `python "
                                          f"train.py resume={stopped_run}`"):
        app.train(tiny_cfg, stopped_run)
    assert snapshot(stopped_run) == before


def test_resuming_a_live_run_is_refused_and_changes_nothing(tiny_cfg, tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    run.write_config(tiny_cfg)
    run.write_status(RunStatus.of_this_process())  # alive: this very process
    before = snapshot(tmp_path)
    with pytest.raises(RunDirError, match=f"is still running: running \\(pid {os.getpid()} "):
        app.train(tiny_cfg, tmp_path, resume=True)
    assert snapshot(tmp_path) == before


def test_a_resume_with_a_damaged_metrics_file_is_refused_and_changes_nothing(
    tiny_cfg, stopped_run: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    os.system(f"cp -r {stopped_run} {run_dir}")  # noqa: S605 - a plain copy
    lines = (run_dir / "metrics.jsonl").read_text().splitlines(keepends=True)
    (run_dir / "metrics.jsonl").write_text("".join(lines[:2] + ["{garbage\n"] + lines[3:]))
    before = snapshot(run_dir)
    with pytest.raises(MetricsFileError, match=r"metrics.jsonl:3: not valid JSON"):
        app.train(tiny_cfg, run_dir, resume=True)
    assert snapshot(run_dir) == before


def test_evaluate_refuses_bad_arguments_before_writing(stopped_run: Path, tmp_path: Path):
    before = snapshot(stopped_run)
    for episodes in (0, -5):
        with pytest.raises(ConfigError, match=f"^episodes: {episodes} is out of range"):
            app.evaluate_run(stopped_run, episodes=episodes)
    with pytest.raises(RunDirError, match="no run here"):
        app.evaluate_run(tmp_path / "typo", episodes=3)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("x")
    with pytest.raises(RunDirError, match="not a run dir"):
        app.evaluate_run(tmp_path / "notes", episodes=3)
    assert snapshot(stopped_run) == before


def test_evaluating_a_run_without_checkpoints_names_it(stopped_run: Path, tmp_path: Path):
    run_dir = tmp_path / "run"
    os.system(f"cp -r {stopped_run} {run_dir} && rm -r {run_dir}/checkpoints")  # noqa: S605
    with pytest.raises(CheckpointError, match="no checkpoint to evaluate"):
        app.evaluate_run(run_dir, episodes=3)


def test_compare_refuses_a_metric_no_run_logged_and_keeps_its_earlier_outputs(
    stopped_run: Path, tmp_path: Path
) -> None:
    RunDir(stopped_run)  # compared as a finished run below
    run_dir = tmp_path / "run"
    os.system(f"cp -r {stopped_run} {run_dir}")  # noqa: S605
    RunDir(run_dir).write_status("finished")
    app.compare_runs([run_dir], run_dir)
    before = snapshot(run_dir)
    with pytest.raises(ConfigError, match="^metrics: eval/nosuch: logged by none of the "):
        app.compare_runs([run_dir], run_dir, ["eval/nosuch"])
    with pytest.raises(ConfigError, match="^interval: 'wide' is not one of bootstrap, t$"):
        app.compare_runs([run_dir], run_dir, interval="wide")
    assert snapshot(run_dir) == before


def test_wandb_online_without_credentials_is_refused_before_anything_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    with pytest.raises(SettingError, match="^mode: online needs W&B credentials"):
        WandbSink(tmp_path / "run", "abc")
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_device_cuda_without_a_gpu_is_a_config_error() -> None:
    with pytest.raises(SettingError, match="^device: cuda was asked for"):
        resolve_device("cuda")


def test_an_unknown_minigrid_id_is_a_config_error(tmp_path: Path) -> None:
    cfg = app.compose_config(["experiment=a2c_minigrid", "env.env_id=MiniGrid-Nope-v0",
                              "logger=none"])
    with pytest.raises(ConfigError, match="^env.env_id: 'MiniGrid-Nope-v0': Environment "):
        app.train(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_files_are_written_with_the_mode_the_umask_gives(tmp_path: Path) -> None:
    mask = os.umask(0o022)
    os.umask(mask)
    path = atomic_write_text(tmp_path / "status.json", "{}")
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask


@pytest.mark.parametrize(("text", "line"), [
    ("In 'config': Could not find 'agent/i2b'\n\nAvailable options in 'agent':\n\ta2c\n\ti2a\n",
     "In 'config': Could not find 'agent/i2b'; Available options in 'agent': a2c, i2a"),
    ("Could not override 'agent.foo'.\nTo append use +agent.foo=1",
     "Could not override 'agent.foo'. To append use +agent.foo=1"),
    ("one line", "one line"),
])
def test_a_multi_line_message_is_put_on_one_line(text: str, line: str) -> None:
    assert one_line(text) == line


def test_evaluate_with_another_eval_policy_notes_it_and_refuses_agents_without_one(
    stopped_run: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "a2c"
    app.train(app.compose_config([*TINY, "logger=none", "agent=a2c"]), run_dir)
    greedy, greedy_file = app.evaluate_run(run_dir, episodes=4, log=False)
    sampled, sampled_file = app.evaluate_run(run_dir, episodes=4, log=False,
                                             eval_policy="sample")
    assert "eval_policy" not in greedy and sampled["eval_policy"] == "sample"
    # The run evaluates greedily: the sampled evaluation is kept apart, under its own names.
    assert greedy_file == run_dir / "eval.json" and sampled_file == run_dir / "eval_sample.json"
    assert RunDir(run_dir).evaluation() == greedy
    assert RunDir(run_dir).evaluation("sample") == sampled
    assert "eval/episode_return" in greedy and "eval/episode_return" not in sampled
    assert "eval_sample/episode_return" in sampled
    summary = load_run(RunDir(run_dir)).summary  # a comparison reads both
    assert summary["eval/episode_return"] == greedy["eval/episode_return"]
    assert summary["eval_sample/episode_return"] == sampled["eval_sample/episode_return"]
    own, _ = app.evaluate_run(run_dir, episodes=4, log=False, eval_policy="greedy")
    assert own["eval_policy"] == "greedy" and "eval/episode_return" in own  # its own policy
    config = run_dir / ".hydra" / "config.yaml"  # a run from before agent.eval_policy ...
    config.write_text("".join(line for line in config.read_text().splitlines(keepends=True)
                              if "eval_policy" not in line))
    _, written = app.evaluate_run(run_dir, episodes=4, log=False, eval_policy="sample")
    assert written == sampled_file  # ... evaluated greedily: sampling is another policy
    before = snapshot(stopped_run)  # the skill-library agent picks no action from a policy
    with pytest.raises(ConfigError, match="^agent.eval_policy"):
        app.evaluate_run(stopped_run, episodes=3, eval_policy="sample")
    evaluated = snapshot(run_dir)
    with pytest.raises(ConfigError, match="^agent.eval_policy: 'softmax' is not one of"):
        app.evaluate_run(run_dir, episodes=3, eval_policy="softmax")
    assert snapshot(stopped_run) == before and snapshot(run_dir) == evaluated
