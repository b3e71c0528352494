"""Any agent on any env it can learn from: every agent x env x memory x curriculum either
trains a few iterations or stops with one config-error line, as the table of what runs where
(docs/concepts/agents.md) says."""

from __future__ import annotations

import re
import subprocess
import sys
import warnings
from itertools import product
from pathlib import Path

import pytest

from procmem import app
from procmem.app import ConfigError
from procmem.run.run_dir import RunDir

ROOT = Path(__file__).resolve().parents[1]
TINY = ["logger=none", "trainer.progress=false", "trainer.iterations=2", "trainer.eval_every=2",
        "trainer.eval_episodes=1", "trainer.checkpoint_every=0", "seed=0"]
ENVS = {  # the table's columns: how each env is picked, made small
    "gridworld": ["env=gridworld", "env.max_steps=20"],
    "minigrid": ["env=minigrid", "env.max_steps=20"],
    "toolenv": ["env=toolenv", "env.num_envs=8"],
    "expressions": ["env=expressions", "env.num_envs=8"],
    "minipacman": ["env=minipacman", "env.num_envs=2", "env.frame_cap=20"],
    "gymnasium (CartPole-v1)": ["env=gymnasium", "env.num_envs=2"],
    "gymnasium (MiniGrid-DoorKey-5x5-v0)": ["env=gymnasium", "env.num_envs=2",
                                            "env.id=minigrid:MiniGrid-DoorKey-5x5-v0"],
}
AGENTS = {  # the rows, made small
    "a2c": ["agent=a2c"],
    "procedural": ["agent=procedural"],
    "env_model": ["agent=env_model", "agent.collect_steps=2", "agent.channels=4"],
    "i2a": ["agent=i2a", "agent.depth=2", "agent.pretrain_iterations=1"],
}
MEMORIES = ("none", "skill_library")
CURRICULA = ("none", "staged")


def documented_matrix() -> dict[tuple[str, str], bool]:
    """The table of what runs where (docs/concepts/agents.md): (agent, env) -> runs."""
    page = (ROOT / "docs" / "concepts" / "agents.md").read_text()
    table = page[page.index("| agent \\ env |"):].split("\n\n", 1)[0].splitlines()
    envs = [cell.strip() for cell in table[0].strip("|").split("|")[1:]]
    matrix = {}
    for line in table[2:]:
        agent, *cells = (cell.strip() for cell in line.strip("|").split("|"))
        for env, cell in zip(envs, cells, strict=True):
            matrix[(agent.strip("`"), env)] = cell == "yes"
    return matrix


def expected_to_run(agent: str, env: str, memory: str, curriculum: str) -> bool:
    """The table, with the page's rules for memory (the skill-library agent and A2C carry
    one, on envs with subgoal events) and curricula (only envs with stages)."""
    carries = agent in ("procedural", "a2c") and env in ("gridworld", "minigrid")
    return (documented_matrix()[(agent, env)] and (memory == "none" or carries)
            and (curriculum == "none" or env in ("toolenv", "expressions")))


def attempt(overrides: list[str], run_dir: Path) -> str | None:
    """Train a tiny run; ``None`` when it trained, else its one-line config error."""
    cfg = app.compose_config([*overrides, *TINY])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # random-policy and pretraining notes
            app.train(cfg, run_dir)
    except ConfigError as error:
        return str(error)
    assert [row for row in RunDir(run_dir).metrics() if row["iteration"] == 2]
    return None


def test_the_documented_table_covers_every_agent_and_env():
    assert set(documented_matrix()) == set(product(AGENTS, ENVS))


@pytest.mark.slow
@pytest.mark.parametrize(("agent", "env", "memory", "curriculum"),
                         list(product(AGENTS, ENVS, MEMORIES, CURRICULA)))
def test_every_combination_trains_or_stops_with_one_line(agent, env, memory, curriculum,
                                                          tmp_path, one_torch_thread):
    overrides = [*AGENTS[agent], *ENVS[env], f"memory={memory}", f"curriculum={curriculum}"]
    error = attempt(overrides, tmp_path)
    if expected_to_run(agent, env, memory, curriculum):
        assert error is None, error
    else:
        assert error is not None and "\n" not in error, (overrides, error)


REFUSED_ON_THE_COMMAND_LINE = [
    (["agent=procedural", "env=minipacman"],
     "config error: agent=procedural needs subgoal events (key, door, goal); env=minipacman "
     "has none; envs with them: gridworld, minigrid"),
    pytest.param(["agent=a2c", "env=minipacman", "memory=skill_library"],
                 "config error: memory=skill_library needs subgoal events (key, door, goal); "
                 "env=minipacman has none: set memory=none, or pick one of gridworld, minigrid",
                 marks=pytest.mark.slow),
    pytest.param(["agent=i2a", "env=minipacman", "memory=skill_library"],
                 "config error: memory=skill_library needs an agent that keeps a memory; "
                 "agent=i2a keeps none: set memory=none", marks=pytest.mark.slow),
    pytest.param(["agent=a2c", "env=minipacman", "curriculum=staged"],
                 "config error: curriculum=staged needs problems in stages; env=minipacman has "
                 "none: set curriculum=none, or pick one of expressions, toolenv",
                 marks=pytest.mark.slow),
    pytest.param(["experiment=a2c_minipacman", "agent/network=tool_gru"],
                 "config error: agent/network=tool_gru cannot read the observations of "
                 "env=minipacman: ", marks=pytest.mark.slow),
]


@pytest.mark.parametrize(("overrides", "line"), REFUSED_ON_THE_COMMAND_LINE)
def test_a_refused_choice_is_one_line_exit_2_and_no_run_dir(overrides, line, tmp_path):
    run_dir = tmp_path / "run"
    result = subprocess.run([sys.executable, "train.py", *overrides, "logger=none",
                             f"hydra.run.dir={run_dir}"], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [text for text in result.stderr.splitlines() if text.startswith("config error:")]
    assert len(errors) == 1 and errors[0].startswith(line), result.stderr
    assert "Traceback" not in result.stderr
    assert not run_dir.exists()


def test_a_refused_choice_in_the_default_output_dir_leaves_no_dir_at_all(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "train.py"), "agent=procedural",
                             "env=minipacman", "logger=none"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().startswith("config error: agent=procedural needs subgoal")
    assert list(tmp_path.iterdir()) == []  # not even outputs/runs/procedural_minipacman/


def test_a_run_without_an_experiment_is_named_after_its_agent_and_env():
    assert app.compose_config(["agent=a2c", "env=toolenv", "memory=none"]).experiment_name == (
        "a2c_toolenv")
    assert app.compose_config([]).experiment_name == "procedural_gridworld"
    assert app.compose_config(["experiment=a2c_minipacman"]).experiment_name == "a2c_minipacman"
    assert re.fullmatch(r"outputs/runs/a2c_gridworld/\S+", app.compose_config(
        ["agent=a2c", "memory=none"], return_hydra_config=True).hydra.run.dir)
