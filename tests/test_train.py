"""End-to-end runs: the CLI, multiruns, W&B offline runs, resume and evaluation."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import DictConfig, OmegaConf

from procmem import app
from procmem.algorithms.procedural import ProceduralMemoryAgent
from procmem.run.loggers import read_metrics
from procmem.run.run_dir import RunDir

from helpers import ROOT, TINY, WANDB, run_cli, wandb_summary, without_perf


def compose_config(*overrides: str) -> DictConfig:
    return app.compose_config(overrides)


def wandb_run_record(run_dir: Path) -> str:
    """The raw records of the run's log as text (holds group and job type)."""
    return subprocess.run([str(WANDB), "leet", "inspect", "--json", str(run_dir / "wandb")],
                          capture_output=True, text=True, check=True).stdout


def test_single_run_writes_the_run_contract(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    umask = os.umask(0o027)  # the run's files follow it, as files a user creates do
    try:
        result = run_cli("train.py", *TINY, "logger=none", f"hydra.run.dir={run_dir}")
    finally:
        os.umask(umask)

    console = result.stdout.strip().splitlines()
    assert console[-1] == f"run_dir: {run_dir}"
    assert console[-2].startswith("final evaluation at iteration 12: eval/")
    assert " eval/success_rate=" in console[-2]
    logged = [line.split(" ", 2)[2] for line in (run_dir / "train.log").read_text().splitlines()]
    assert logged == console[:-1]  # train.log holds what the console showed, with times
    assert logged[0].startswith("procedural_gridworld: env=gridworld agent=procedural ")
    assert f"checkpoint 8: {run_dir / 'checkpoints' / 'ckpt_00000008.pt'}" in logged
    assert any(line.startswith("iteration 6: eval/") and " eval/success_rate=" in line
               for line in logged)
    for path in [p for p in run_dir.rglob("*") if p.is_file()]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o640, path
    for name in (".hydra/config.yaml", "metrics.jsonl", "skills.json", "plots/training.png"):
        assert (run_dir / name).is_file(), name
    assert [p.name for p in sorted((run_dir / "checkpoints").iterdir())] == [
        "ckpt_00000004.pt", "ckpt_00000008.pt", "ckpt_00000012.pt"]
    rows = read_metrics(run_dir / "metrics.jsonl")
    train_rows = [r for r in rows if "train/episode_steps" in r]
    assert [r["iteration"] for r in train_rows] == list(range(1, 13))
    for key in ("memory/skills", "memory/skill_uses", "memory/reuse_rate",
                "memory/avg_success_rate", "train/episode_return", "train/success_rate"):
        assert key in train_rows[-1]
    assert [r["iteration"] for r in rows if "eval/success_rate" in r] == [6, 12]


def test_default_output_dirs_follow_the_contract(tmp_path: Path) -> None:
    """Without hydra.run.dir, runs land in outputs/runs/<experiment>/<timestamp>/."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *TINY, "logger=none",
         "experiment=procedural_gridworld_original"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    runs = list((tmp_path / "outputs" / "runs" / "procedural_gridworld_original").iterdir())
    assert len(runs) == 1
    assert result.stdout.strip().splitlines()[-1] == f"run_dir: {runs[0]}"


# Launchers a multirun can use, with the overrides that start them on this machine: joblib
# with 2 workers, a local Ray instance of 2 CPUs (started by the launcher, stopped when the
# driver exits) and submitit's local executor (one process per job).
LAUNCHERS = {
    "basic": [],
    "joblib": ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
    "ray": ["hydra/launcher=ray", "+hydra.launcher.ray.init.num_cpus=2"],
    "submitit_local": ["hydra/launcher=submitit_local"],
}


@pytest.mark.slow
@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_multirun_logs_one_wandb_run_per_job_in_one_group(tmp_path: Path, launcher: str
                                                          ) -> None:
    sweep = tmp_path / "sweep"
    result = run_cli("train.py", "-m", "seed=0,1", "memory=none,skill_library",
                     "logger=wandb", "experiment=procedural_gridworld_original", *TINY,
                     f"hydra.sweep.dir={sweep}", *LAUNCHERS[launcher])
    hydra_cfg = OmegaConf.load(sweep / "0" / ".hydra" / "hydra.yaml").hydra
    assert hydra_cfg.launcher._target_.rsplit(".", 1)[-1] == {
        "basic": "BasicLauncher", "joblib": "JoblibLauncher", "ray": "RayLauncher",
        "submitit_local": "LocalLauncher"}[launcher]
    if launcher == "ray":  # job output reaches the driver through Ray's workers
        assert "(_run_job pid=" in result.stdout + result.stderr
    if launcher == "submitit_local":  # each job ran in its own submitit process
        assert len(list((sweep / ".submitit").glob("*/*_log.out"))) == 4

    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert [p.name for p in jobs] == ["0", "1", "2", "3"]
    run_ids = set()
    for job in jobs:
        summary = wandb_summary(job)
        assert summary["state"] == "finished" and summary["exit_code"] == 0
        assert summary["summary"]["iteration"] == 12
        assert "train/episode_steps" in summary["summary"]
        uses_memory = "memory=skill_library" in (job / ".hydra/overrides.yaml").read_text()
        assert ("memory/skill_uses" in summary["summary"]) == uses_memory
        records = wandb_run_record(job)
        assert f'"{sweep.parent.name}/{sweep.name}"' in records
        assert '"train"' in records
        run_ids.add(summary["run_id"])
    assert len(run_ids) == 4

    result = run_cli("evaluate.py", f"compare={sweep}")
    assert "memory=none" in result.stdout and "memory=skill_library" in result.stdout
    csv_rows = (sweep / "comparison.csv").read_text().splitlines()
    assert csv_rows[0] == "group,metric,n,mean,ci_low,ci_high"
    # Oracle explorer: every episode takes 10 steps, with or without memory.
    assert "memory=skill_library,train/episode_steps,2,10.0,10.0,10.0" in csv_rows
    assert (sweep / "comparison.png").stat().st_size > 0
    assert (sweep / "curves.png").stat().st_size > 0
    markdown = (sweep / "comparison.md").read_text()
    assert "| memory=skill_library | train/episode_steps | 2 | 10 | [10, 10] |" in markdown


def test_resume_ends_with_the_same_metrics_as_an_uninterrupted_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = compose_config(*TINY, "logger=none", "trainer.eval_every=5")
    app.train(cfg, tmp_path / "whole")

    stopped = tmp_path / "stopped"
    RunDir(stopped).config_file.parent.mkdir(parents=True)
    OmegaConf.save(cfg, RunDir(stopped).config_file)
    original = ProceduralMemoryAgent.train_iteration
    calls = {"n": 0}

    def dies_at_iteration_ten(self: ProceduralMemoryAgent) -> dict[str, float]:
        calls["n"] += 1
        if calls["n"] == 10:
            raise RuntimeError("killed")
        return original(self)

    monkeypatch.setattr(ProceduralMemoryAgent, "train_iteration", dies_at_iteration_ten)
    with pytest.raises(RuntimeError, match="killed"):
        app.train(cfg, stopped)
    monkeypatch.undo()
    assert max(r["iteration"] for r in read_metrics(stopped / "metrics.jsonl")) == 9

    result = run_cli("train.py", f"resume={stopped}")
    assert result.stdout.strip().splitlines()[-1] == f"run_dir: {stopped}"
    assert RunDir(stopped).config() == cfg
    assert RunDir(stopped).status().status == "finished"

    whole = without_perf(read_metrics(tmp_path / "whole" / "metrics.jsonl"))
    resumed = without_perf(read_metrics(stopped / "metrics.jsonl"))
    assert resumed == whole
    assert json.loads((stopped / "skills.json").read_text()) == json.loads(
        (tmp_path / "whole" / "skills.json").read_text())


def test_failed_job_finishes_its_wandb_run_with_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fails(self: ProceduralMemoryAgent) -> dict[str, float]:
        raise RuntimeError("diverged")

    monkeypatch.setattr(ProceduralMemoryAgent, "train_iteration", fails)
    cfg = compose_config(*TINY, "logger=wandb")
    with pytest.raises(RuntimeError, match="diverged"):
        app.train(cfg, tmp_path)
    summary = wandb_summary(tmp_path)
    assert summary["exit_code"] == 1
    assert summary["state"] != "finished"


@pytest.mark.slow
def test_evaluate_writes_eval_json_for_a_finished_run(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_cli("train.py", *TINY, "logger=wandb", "experiment=procedural_gridworld_original",
            f"hydra.run.dir={run_dir}")

    result = run_cli("evaluate.py", f"run={run_dir}", "episodes=7")
    evaluation = json.loads((run_dir / "eval.json").read_text())
    assert evaluation["episodes"] == 7 and evaluation["iteration"] == 12
    assert evaluation["eval/success_rate"] == 1.0
    assert evaluation["eval/episode_steps"] == 10.0
    assert evaluation["memory/skills"] == 1.0
    assert "eval/episode_return" in result.stdout
    assert f"eval.json: {run_dir / 'eval.json'}" in result.stdout
    # The evaluation's W&B run is kept apart: the run dir's wandb/ still shows the training.
    training, evaluated = wandb_summary(run_dir), wandb_summary(run_dir / "evaluation")
    assert training["name"] == "run" and "train/episode_steps" in training["summary"]
    assert evaluated["name"] == "run (eval)"
    assert evaluated["summary"]["eval/episode_steps"] == 10.0


@pytest.mark.slow
def test_tool_use_run_evaluates_per_stage_with_explained_samples(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_cli("train.py", "experiment=model_native_toolenv", "logger=none", "env.num_envs=16",
            "trainer.iterations=4", "trainer.eval_every=2", "trainer.eval_episodes=16",
            "trainer.progress=false", f"hydra.run.dir={run_dir}")
    rows = read_metrics(run_dir / "metrics.jsonl")
    assert [r["iteration"] for r in rows if "eval/success_rate_stage2" in r] == [2, 4]
    assert all("curriculum/stage" in r for r in rows if "eval/success_rate" in r)

    result = run_cli("evaluate.py", f"run={run_dir}", "episodes=16", "log=false")
    evaluation = json.loads((run_dir / "eval.json").read_text())
    assert {f"eval/success_rate_stage{s}" for s in range(3)} <= evaluation.keys()
    assert [s["stage"] for s in evaluation["samples"]] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert "program=" in result.stdout and "expression=(a*b+c)-(d*e)" in result.stdout


@pytest.mark.slow
def test_optuna_sweep_optimises_the_objective_each_run_returns(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    run_cli("train.py", "-m", "hydra/sweeper=optuna", "hydra.sweeper.n_trials=3",
            "hydra.sweeper.direction=minimize", "hydra.sweeper.sampler.seed=0",
            "env.max_steps=int(interval(5,60))", "trainer.objective=eval/episode_steps",
            "trainer.iterations=4", "trainer.eval_every=4", "trainer.eval_episodes=3",
            "trainer.progress=false", "logger=none", f"hydra.sweep.dir={sweep}")
    trials = {}
    for job in sorted(p for p in sweep.iterdir() if p.is_dir()):
        max_steps = int(OmegaConf.load(job / ".hydra" / "config.yaml").env.max_steps)
        assert 5 <= max_steps <= 60
        evaluations = [r for r in read_metrics(job / "metrics.jsonl")
                       if "eval/episode_steps" in r]
        trials[max_steps] = evaluations[-1]["eval/episode_steps"]
    assert len(trials) == 3
    results = OmegaConf.load(sweep / "optimization_results.yaml")
    assert results.best_value == pytest.approx(min(trials.values()))
    assert trials[results.best_params["env.max_steps"]] == pytest.approx(results.best_value)


@pytest.mark.slow
def test_an_objective_the_run_never_logs_is_reported(tmp_path: Path) -> None:
    result = run_cli("train.py", *TINY, "logger=none", "trainer.objective=eval/typo",
                     f"hydra.run.dir={tmp_path / 'run'}")
    assert "trainer.objective=eval/typo was never logged" in result.stderr
    assert "eval/success_rate" in result.stderr  # what it could have been
