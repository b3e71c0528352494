"""memory.load and memory.frozen: a run starts from the skills another run learnt."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from procmem import app
from procmem.algorithms.skill_kit import POLICY_DEFAULTS, SkillKit
from procmem.app import ConfigError
from procmem.envs.gridworld import GridWorld
from procmem.run.run_dir import RunDir
from procmem.skills.library import SkillLibrary

from helpers import run_cli, wandb_summary

GRID = ["env=gridworld", "env.size=5"]
SMALL = ["env.num_envs=4", "logger=none",
         "trainer.progress=false", "trainer.eval_every=0", "trainer.eval_episodes=2",
         "trainer.checkpoint_every=0", "seed=0"]


def train(directory: Path, *overrides: str) -> RunDir:
    app.train(app.compose_config([*GRID, *SMALL, *overrides]), directory)
    return RunDir(directory)


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """A skill-library run on 5x5 layouts: skills.json and skill_policies.pt."""
    directory = tmp_path_factory.mktemp("source") / "run"
    train(directory, "agent=procedural", "trainer.iterations=12")
    assert (directory / "skills.json").is_file() and (directory / "skill_policies.pt").is_file()
    return directory


def saved_skills(run: Path) -> int:
    return len(json.loads((run / "skills.json").read_text())["skills"])


@pytest.mark.parametrize("agent", ["a2c", "procedural"])
def test_a_frozen_loaded_library_is_used_as_it_is(source, tmp_path, agent):
    run = train(tmp_path / "run", f"agent={agent}", "memory=skill_library",
                f"memory.load={source}", "memory.frozen=true", "trainer.iterations=6",
                "env.size=7")  # another layout size: the keys mean the same
    rows = [row for row in run.metrics() if "memory/skills" in row]
    size = saved_skills(source)
    assert all(row["memory/loaded_skills"] == size for row in rows)
    assert all(row["memory/skills"] == size for row in rows)  # nothing added or merged
    assert rows[-1]["memory/skill_uses"] > 0
    assert saved_skills(tmp_path / "run") == size
    assert run.config().memory.load == str(source)


def test_a_loaded_library_that_is_not_frozen_keeps_learning(source, tmp_path):
    run = train(tmp_path / "run", "agent=procedural", f"memory.load={source}/skills.json",
                "trainer.iterations=6")
    rows = [row for row in run.metrics() if "memory/skills" in row]
    assert rows[0]["memory/loaded_skills"] == saved_skills(source)
    assert rows[-1]["memory/merges"] > json.loads(
        (source / "skills.json").read_text())["counters"]["merges"]


def refusal(*overrides: str, env: tuple[str, ...] = tuple(GRID)) -> str:
    with pytest.raises(ConfigError) as error:
        app.check_config(app.compose_config([*env, *SMALL, *overrides]))
    return str(error.value)


def test_a_damaged_library_file_is_one_line_exit_2_and_no_run_dir(source, tmp_path):
    damaged = tmp_path / "damaged"
    shutil.copytree(source, damaged)
    (damaged / "skills.json").write_text('{"format_version": 2, "skills": [')
    run_dir = tmp_path / "never"
    result = run_cli("train.py", "agent=a2c", "memory=skill_library", f"memory.load={damaged}",
                     *GRID, *SMALL, f"hydra.run.dir={run_dir}", check=False)
    assert result.returncode == 2
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("config error: memory.load: ") and "skills.json: not valid JSON" in line
    assert not run_dir.exists()


def test_damaged_policies_are_refused_naming_the_file(source, tmp_path):
    damaged = tmp_path / "damaged"
    shutil.copytree(source, damaged)
    (damaged / "skill_policies.pt").write_bytes(b"not a torch file")
    assert "skill_policies.pt: unreadable" in refusal("agent=a2c", "memory=skill_library",
                                                      f"memory.load={damaged}")


@pytest.mark.parametrize(("overrides", "reason"), [
    (["memory.embedding_dim=32"], "keys of size 64; memory.embedding_dim is 32"),
    (["env=minigrid", "env.max_steps=20"],
     "learnt on procmem.envs.gridworld.GridWorld; this run's env is "
     "procmem.envs.minigrid.MiniGridEnv"),
    (["memory.load=/no/such/run"], "/no/such/run: no skill library there"),
])
def test_a_library_whose_keys_mean_something_else_is_refused(source, overrides, reason):
    env = () if "env=minigrid" in overrides else tuple(GRID)
    error = refusal("agent=a2c", "memory=skill_library", f"memory.load={source}", *overrides,
                    env=env)
    assert error.startswith("memory.load: ")
    assert reason in error and "\n" not in error


def test_skills_of_another_subgoal_set_are_refused(tmp_path):
    original = train(tmp_path / "original", "agent=procedural", "agent.extraction=last_transitions",
                     "agent.skill_kind=open_loop", "trainer.iterations=12")
    assert saved_skills(original.path) > 0
    error = refusal("agent=procedural", f"memory.load={original.path}")
    assert "skills of another subgoal set" in error


@pytest.mark.slow
def test_the_loaded_library_s_size_is_in_the_wandb_summary(source, tmp_path):
    run = train(tmp_path / "run", "agent=a2c", "memory=skill_library", f"memory.load={source}",
                "trainer.iterations=3", "logger=wandb")
    summary = wandb_summary(run.path)["summary"]
    assert summary["memory/loaded_skills"] == saved_skills(source)


class _PlantedCode:
    """Loading a pickle of this runs ``touch <marker>``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return os.system, (f"touch {self.marker}",)


def test_planted_code_in_the_policies_file_never_runs(source, tmp_path):
    planted = tmp_path / "planted"
    shutil.copytree(source, planted)
    marker = tmp_path / "marker"
    torch.save({"format_version": 1, "policies": _PlantedCode(marker)},
               planted / "skill_policies.pt")
    error = refusal("agent=a2c", "memory=skill_library", f"memory.load={planted}")
    assert "skill_policies.pt: unreadable (UnsafeFileError" in error
    assert "posix.system" in error and not marker.exists()


def test_a_loaded_library_brings_the_features_its_policies_read(tmp_path):
    original = train(tmp_path / "original", "agent=procedural", "agent.skill_features=direction",
                     "trainer.iterations=12")
    library = SkillLibrary(load=str(original.path))
    kit = SkillKit(library, GridWorld(size=9), torch.device("cpu"), 5, closed_loop=True,
                   **POLICY_DEFAULTS)  # this run asks for nothing: the file says direction
    assert kit.skill_features == kit.policies.features == "direction"
    assert kit.key_seed == 0 and kit.policies.loaded == {0, 1, 2}
