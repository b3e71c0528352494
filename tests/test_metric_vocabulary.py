"""One metric vocabulary: every key a run of any family logs is in the table the plots read
and the documentation's metric reference (generated from it at every build) publishes."""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import pytest

from procmem import app
from procmem.run.metrics import VOCABULARY, UnknownMetricWarning, markdown_table, metric_of
from procmem.run.run_dir import RunDir

ROOT = Path(__file__).resolve().parents[1]
TINY = ["logger=none", "trainer.progress=false", "trainer.iterations=2", "trainer.eval_every=2",
        "trainer.eval_episodes=1", "trainer.checkpoint_every=0"]
SMALL_MINIPACMAN = ["env.num_envs=2", "env.frame_cap=20"]
# Every experiment, made tiny; together they log every metric family.
RUNS = {
    "procedural_gridworld": ["env.max_steps=30"],
    "procedural_gridworld_original": [],
    "procedural_minigrid": [],
    "a2c_minigrid": ["env.num_envs=2", "env.max_steps=20"],
    "a2c_skills_gridworld": ["env.num_envs=4", "env.size=5", "env.max_steps=30"],
    "a2c_minigrid_image": ["env.num_envs=2"],
    "a2c_cartpole": ["env.num_envs=2"],
    "model_native_toolenv": ["env.num_envs=8"],
    "model_native_toolenv_original": ["env.num_envs=8"],
    "model_native_expressions": ["env.num_envs=8"],
    "a2c_minipacman": SMALL_MINIPACMAN,
    "envmodel_minipacman": [*SMALL_MINIPACMAN, "agent.collect_steps=2", "agent.channels=4"],
    "i2a_minipacman": [*SMALL_MINIPACMAN, "agent.depth=2", "agent.pretrain_iterations=1",
                       "agent.finetune_env_model=true"],
    "i2a_minipacman_ambush": [*SMALL_MINIPACMAN, "agent.depth=2", "agent.pretrain_iterations=1"],
    "i2a_minipacman_hunt": [*SMALL_MINIPACMAN, "agent.depth=2", "agent.pretrain_iterations=1"],
}


@pytest.mark.parametrize("experiment", RUNS)
def test_every_key_a_run_logs_is_in_the_vocabulary(experiment, tmp_path, one_torch_thread):
    cfg = app.compose_config([f"experiment={experiment}", *TINY, *RUNS[experiment]])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pretraining and random-policy notes
        warnings.simplefilter("error", UnknownMetricWarning)  # media keys are checked here
        app.train(cfg, tmp_path)
    logged = {key for row in RunDir(tmp_path).metrics() for key in row} - {"iteration"}
    assert logged
    assert sorted(key for key in logged if metric_of(key) is None) == []


def test_every_experiment_is_run():
    experiments = {path.stem for path in (ROOT / "conf" / "experiment").glob("*.yaml")}
    assert set(RUNS) == experiments


def test_a_key_outside_the_vocabulary_is_refused_by_the_check():
    assert metric_of("train/episode_reward") is None  # the old name of the episode return
    assert metric_of("eval/success_rate_stage12").key == "eval/success_rate_stage{k}"
    assert metric_of("eval/success_rate_stage") is None


def test_the_metric_reference_publishes_the_vocabulary():
    spec = importlib.util.spec_from_file_location("reference_pages",
                                                  ROOT / "docs" / "reference_pages.py")
    pages = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pages)
    page = pages.PAGES["reference/metrics.md"]()
    assert markdown_table() in page
    assert all(f"| `{metric.key}` | {metric.kind} |" in page for metric in VOCABULARY)


def test_the_vocabulary_has_no_duplicates_and_known_namespaces():
    keys = [metric.key for metric in VOCABULARY]
    assert len(keys) == len(set(keys))
    namespaces = {"train", "eval", "eval_{policy}", "memory", "curriculum", "envmodel", "perf",
                  "media", "compare"}
    assert {key.split("/", 1)[0] for key in keys} == namespaces
