"""What an agent reads from another run (its declared ``run_inputs``) and each component's own
config rules (its ``check_config`` hook) are checked by the app from the declarations, with
one line naming the setting, before anything is built."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from procmem import app
from procmem.algorithms.policy_file import load_policy
from procmem.run.run_dir import RunDir
from procmem.skills.features import SituationEmbedding


def saved_run(path: Path, *overrides: str) -> Path:
    """A run dir holding only the config of ``overrides`` (no checkpoint, no files)."""
    RunDir(path).write_config(app.compose_config(list(overrides)))
    return path


def refusal(*overrides: str) -> str:
    with pytest.raises(app.ConfigError) as info:
        app.check_config(app.compose_config(list(overrides)))
    return str(info.value)


def test_a_component_rule_is_checked_through_its_hook() -> None:
    assert refusal("memory.embedding_dim=8") == (
        f"memory.embedding_dim: 8 is too small: agent.extraction=subgoals needs >= "
        f"{SituationEmbedding.MIN_DIM}")
    app.check_config(app.compose_config(["memory.embedding_dim=8",
                                         "agent.extraction=last_transitions"]))


def test_a_setting_that_reads_another_run_names_what_is_wrong(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    a2c = saved_run(tmp_path / "a2c", "experiment=a2c_minipacman")
    gridworld = saved_run(tmp_path / "grid", "agent=a2c", "memory=none")
    i2a, env_model = "experiment=i2a_minipacman", "experiment=envmodel_minipacman"

    assert refusal(i2a, f"agent.env_model_run={empty}") == (
        f"agent.env_model_run: {empty} is not a run dir and holds no env_model.pt")
    assert refusal(i2a, f"agent.env_model_run={a2c}") == (
        f"agent.env_model_run: {a2c} has no env_model.pt: its agent=a2c leaves policy.pt")
    assert refusal(env_model, f"agent.policy_run={gridworld}") == (
        f"agent.policy_run: {gridworld} trained on env=gridworld; this run's env is "
        "env=minipacman")
    assert refusal(env_model, f"agent.policy_run={a2c}") == (
        f"agent.policy_run: {a2c} has no policy.pt yet, and no checkpoint to make it from")


def test_a_setting_that_reads_another_run_takes_the_file_itself(tmp_path: Path) -> None:
    (tmp_path / "model.pt").write_bytes(b"")  # checked when loaded, not here
    app.check_config(app.compose_config(["experiment=i2a_minipacman",
                                         f"agent.env_model_run={tmp_path / 'model.pt'}"]))


# Run dirs written by the version before algorithms declared their files (tiny A2C and
# env-model runs on MiniPacman, made by commit e4acd46): no policy.pt, no run_id.
EARLIER = Path(__file__).parent / "data" / "earlier_runs"


def test_run_dirs_of_an_earlier_version_evaluate_and_serve_later_runs(tmp_path: Path) -> None:
    runs = Path(shutil.copytree(EARLIER, tmp_path / "earlier"))
    before = sorted(p.relative_to(runs) for p in runs.rglob("*"))
    tiny = ["logger=none", "trainer.progress=false", "trainer.iterations=1",
            "trainer.eval_every=1", "trainer.eval_episodes=1", "env.num_envs=2"]

    result, _ = app.evaluate_run(runs / "a2c_minipacman", episodes=1, log=False)
    assert result["iteration"] == 2 and "eval/episode_return" in result
    app.train(app.compose_config(["experiment=envmodel_minipacman", *tiny,
                                  "agent.collect_steps=2", "agent.channels=4",
                                  f"agent.policy_run={runs / 'a2c_minipacman'}"]),
              tmp_path / "env_model")
    app.train(app.compose_config(["experiment=i2a_minipacman", *tiny, "agent.depth=1",
                                  f"agent.env_model_run={runs / 'envmodel_minipacman'}"]),
              tmp_path / "i2a")

    assert RunDir(tmp_path / "i2a").status().status == "finished"
    after = sorted(p.relative_to(runs) for p in runs.rglob("*"))
    assert set(after) - set(before) == {Path("a2c_minipacman/eval.json")}  # read, not changed


def test_a_policy_file_can_name_only_a_network(tmp_path: Path) -> None:
    torch.save({"network": "os.system", "settings": {}, "weights": {}}, tmp_path / "policy.pt")
    with pytest.raises(ValueError, match=r"policy.pt: names os.system, which is not a network"):
        load_policy(tmp_path / "policy.pt", None, torch.device("cpu"))
