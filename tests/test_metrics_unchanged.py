"""The restructuring changed no result: the default experiment and model_native_toolenv at
seed 0 log what they logged before it (tests/data/before_restructuring/, written by the
earlier layout with logger=none), apart from perf/* and the renames the changelog lists
(docs/changelog.md)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from procmem import app
from procmem.run.run_dir import RunDir

from helpers import without_perf

ROOT = Path(__file__).resolve().parents[1]
BEFORE = Path(__file__).parent / "data" / "before_restructuring"
# What the changelog's "Metric names that changed" table says, old key -> new key. Runs without
# a curriculum no longer log DROPPED_WITHOUT_CURRICULUM.
RENAMES = {
    "train/episode_reward": "train/episode_return",
    "train/success": "train/success_rate",
    "train/accuracy": "train/success_rate",
    "eval/mean_reward": "eval/episode_return",
    "eval/mean_steps": "eval/episode_steps",
    "eval/mean_steps_solved": "eval/solved_steps",
    "eval/accuracy": "eval/success_rate",
    "eval/accuracy_stage{k}": "eval/success_rate_stage{k}",
    "train/envmodel/{name}": "envmodel/{name}",
    "plots/training": "media/training_curves",
    "memory/skills_table": "media/skills",
}
DROPPED_WITHOUT_CURRICULUM = "curriculum/stage"
# Keys added since (to runs that did not log them), which the changelog lists; every other
# key logs what it logged before.
ADDED = {"train/episodes"}
RUNS = {  # the recorded runs: their overrides, and whether a curriculum ran
    "default_short": (["trainer.iterations=30", "trainer.eval_every=10",
                       "trainer.checkpoint_every=10"], False),
    "toolenv_short": (["experiment=model_native_toolenv", "trainer.iterations=40",
                       "trainer.eval_every=10", "trainer.checkpoint_every=20"], True),
    "default_full": ([], False),
    "toolenv_full": (["experiment=model_native_toolenv"], True),
}


def renamed(key: str) -> str:
    for old, new in RENAMES.items():
        pattern = re.sub(r"\\\{[a-z]+\\\}", "(.+)", re.escape(old))
        if (match := re.fullmatch(pattern, key)) is not None:
            return re.sub(r"\{[a-z]+\}", lambda _: match.group(1), new)
    return key


def before(name: str, with_curriculum: bool) -> list[dict]:
    rows = [json.loads(line) for line in (BEFORE / f"{name}.jsonl").read_text().splitlines()]
    rows = [{renamed(key): value for key, value in row.items()
             if with_curriculum or key != DROPPED_WITHOUT_CURRICULUM} for row in rows]
    return [row for row in rows if len(row) > 1]  # a row that held only a dropped key


def assert_unchanged(name: str, tmp_path: Path) -> None:
    overrides, with_curriculum = RUNS[name]
    cfg = app.compose_config([*overrides, "logger=none", "trainer.progress=false", "seed=0"])
    app.train(cfg, tmp_path)
    recorded = before(name, with_curriculum)
    added = ADDED - {key for row in recorded for key in row}
    now = [{key: value for key, value in row.items() if key not in added}
           for row in without_perf(RunDir(tmp_path).metrics())]
    assert now == recorded


@pytest.mark.parametrize("name", ["default_short", "toolenv_short"])
def test_a_short_run_logs_what_it_logged_before(name, tmp_path):
    assert_unchanged(name, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["default_full", "toolenv_full"])
def test_the_whole_run_logs_what_it_logged_before(name, tmp_path):
    assert_unchanged(name, tmp_path)


def test_every_rename_is_documented_in_the_changelog():
    changelog = (ROOT / "docs" / "changelog.md").read_text()
    table = changelog.split("## Metric names that changed", 1)[1].split("\n## ", 1)[0]
    for old, new in RENAMES.items():
        assert re.search(rf"^\| `{re.escape(old)}`.*\| `{re.escape(new)}`", table, re.MULTILINE), (
            old, new)
    assert f"`{DROPPED_WITHOUT_CURRICULUM}`" in table


def test_the_renames_map_old_keys_and_leave_others():
    assert renamed("eval/accuracy_stage3") == "eval/success_rate_stage3"
    assert renamed("train/envmodel/pixel_accuracy") == "envmodel/pixel_accuracy"
    assert renamed("memory/skills") == "memory/skills"
