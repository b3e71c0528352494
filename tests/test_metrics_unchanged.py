"""The restructuring changed no result: the default experiment and model_native_toolenv at
seed 0 log what they logged before it (tests/data/before_restructuring/, written by the
earlier layout with logger=none), apart from perf/* and the renames the changelog lists
(docs/changelog.md); training statistics within float rounding, and whole runs by where
they end."""

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
ADDED = {"train/episodes", "train/lr"}
DRIFT_TOLERANCE = 1e-3
DRIFTING = ("loss", "bc_loss", "entropy", "grad_norm")
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


def run_and_recorded(name: str, tmp_path: Path) -> tuple[list[dict], list[dict]]:
    """The rows a run at seed 0 logs now and the rows it logged before, under today's names."""
    overrides, with_curriculum = RUNS[name]
    cfg = app.compose_config([*overrides, "logger=none", "trainer.progress=false", "seed=0"])
    app.train(cfg, tmp_path)
    recorded = before(name, with_curriculum)
    added = ADDED - {key for row in recorded for key in row}
    now = [{key: value for key, value in row.items() if key not in added}
           for row in without_perf(RunDir(tmp_path).metrics())]
    assert [sorted(row) for row in now] == [sorted(row) for row in recorded]
    return now, recorded


def expected(key: str, value: float) -> object:
    """A training statistic (loss, entropy, gradient norm) drifts from the recorded one in
    float32 rounding, which differs from one CPU's kernels to another's; every count, rate and
    return of a short run must match."""
    return pytest.approx(value, rel=DRIFT_TOLERANCE) if key.split("/")[-1].startswith(
        DRIFTING) else value


@pytest.mark.parametrize("name", ["default_short", "toolenv_short"])
def test_a_short_run_logs_what_it_logged_before(name, tmp_path):
    now, recorded = run_and_recorded(name, tmp_path)
    assert now == [{key: expected(key, value) for key, value in row.items()} for row in recorded]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["default_full", "toolenv_full"])
def test_the_whole_run_ends_where_it_ended_before(name, tmp_path):
    """Over a whole run the rounding drift changes which actions are sampled, so the rows part;
    the run logs the same keys at the same iterations and its final evaluation solves what it
    solved before, in as many steps within 5%."""
    now, recorded = run_and_recorded(name, tmp_path)
    final_now, final_before = (
        next(row for row in reversed(rows) if "eval/success_rate" in row)
        for rows in (now, recorded))
    for key, value in final_before.items():
        if key.startswith(("eval/success_rate", "curriculum/")):
            assert final_now[key] == value, key
        elif key.startswith("eval/"):
            assert final_now[key] == pytest.approx(value, rel=0.05), key


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
