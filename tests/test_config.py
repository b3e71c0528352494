"""The config tree in ``conf/``: every option composes, checks and builds; bad values fail
early with a one-line error naming the full key; run dirs resolve as documented."""

from __future__ import annotations

import pickle
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from procmem.app import build_algorithm, build_optional
from procmem.app import compose_config as app_compose
from procmem.schema import SCHEMAS, ConfigError, check_config

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
GROUPS = ("env", "agent", "agent/network", "memory", "curriculum", "logger", "experiment")
DEFAULTS = {
    "env": "gridworld",
    "agent": "procedural",
    "agent/network": "tool_gru",  # the default of agent=a2c
    "memory": "skill_library",
    "curriculum": "none",
    "logger": "wandb",
    "experiment": "procedural_gridworld",
}
ALGORITHM_METHODS = ("train_iteration", "evaluate", "state_dict", "load_state_dict")


def options(group: str) -> list[str]:
    return sorted(path.stem for path in (CONF / group).glob("*.yaml"))


GROUP_OPTIONS = [(group, option) for group in GROUPS for option in options(group)]


def compose_config(overrides: list[str] | None = None, hydra_config: bool = False) -> DictConfig:
    return app_compose(overrides or [], return_hydra_config=hydra_config)


# --- every option -----------------------------------------------------------------------------


@pytest.mark.parametrize("group", GROUPS)
def test_group_has_options_including_default(group):
    found = options(group)
    assert found, f"conf/{group}/ has no options"
    assert DEFAULTS[group] in found


def experiment_using(group: str, option: str) -> str | None:
    """An experiment that picks ``option`` for ``group`` (the default one first), or None."""
    uses = re.compile(rf"override /{group}:\s*{re.escape(option)}\s*$", re.MULTILINE)
    users = [name for name in options("experiment")
             if uses.search((CONF / "experiment" / f"{name}.yaml").read_text())]
    return DEFAULTS["experiment"] if DEFAULTS["experiment"] in users else next(iter(users), None)


# Overrides that keep building an option quick: I2A without an env model run pretrains one.
QUICK_BUILD = {(group, option): ["agent.pretrain_iterations=1"]
               for group, option in (("agent", "i2a"), ("experiment", "i2a_minipacman"))}


@pytest.mark.parametrize(("group", "option"), GROUP_OPTIONS)
def test_option_composes_checks_and_builds(group, option):
    overrides = [f"{group}={option}"]
    if group in ("env", "agent", "agent/network"):
        # Envs, agents and networks are built with an experiment that pairs them; an env
        # without one is built alone.
        experiment = experiment_using(group, option)
        if experiment is None and group == "env":
            cfg = compose_config(overrides)
            check_config(cfg)
            assert callable(getattr(instantiate(cfg.env), "reset", None))
            return
        if experiment is not None:
            overrides.insert(0, f"experiment={experiment}")
    overrides += QUICK_BUILD.get((group, option), [])
    cfg = compose_config(overrides)
    check_config(cfg)

    algorithm, curriculum = build_algorithm(cfg, torch.device("cpu"))
    for method in ALGORITHM_METHODS:
        assert callable(getattr(algorithm, method, None)), f"algorithm lacks {method}"
    assert callable(getattr(curriculum, "state_dict", None))

    if len(cfg.memory) == 0:
        assert build_optional(cfg.memory, device="cpu") is None
        assert getattr(algorithm, "memory", None) is None
    else:
        assert algorithm.memory is not None

    # Only the empty logger is built here: building the W&B sink would start W&B.
    if len(cfg.logger) == 0:
        assert build_optional(cfg.logger, run_dir=Path("unused")) is None
    else:
        assert cfg.logger._target_ in SCHEMAS


def test_logger_none_builds_to_none():
    cfg = compose_config(["logger=none"])
    check_config(cfg)
    assert len(cfg.logger) == 0
    assert build_optional(cfg.logger, run_dir=Path("unused")) is None


def test_memory_none_builds_agent_without_memory():
    cfg = compose_config(["memory=none"])
    check_config(cfg)
    algorithm, _ = build_algorithm(cfg, torch.device("cpu"))
    assert algorithm.memory is None
    assert algorithm.state_dict()["memory"] is None


def test_wandb_logger_node_passes_schema():
    cfg = compose_config(["logger=wandb"])
    check_config(cfg)
    assert cfg.logger._target_ == "procmem.logging.WandbSink"
    assert cfg.logger._target_ in SCHEMAS


# --- defaults and experiments ---------------------------------------------------------------


def test_default_config():
    cfg = compose_config()
    check_config(cfg)
    assert cfg.experiment_name == "procedural_gridworld"
    assert cfg.logger._target_ == "procmem.logging.WandbSink"
    assert cfg.memory._target_ == "procmem.memory.skill_library.SkillLibrary"
    # Randomised 8x8 layouts, an explorer that knows no object positions, subgoal skills.
    assert cfg.agent.explorer == "count"
    assert (cfg.env.layout, cfg.env.size) == ("random", 8)
    assert (cfg.agent.extraction, cfg.agent.skill_kind) == ("subgoals", "closed_loop")
    assert cfg.resume is None
    for key in ("iterations", "eval_every", "eval_episodes", "checkpoint_every",
                "keep_checkpoints", "log_every", "progress", "objective"):
        assert key in cfg.trainer, f"trainer.{key} missing"
    assert cfg.trainer.iterations >= 1
    assert cfg.trainer.objective == "eval/success_rate"


def test_original_experiment_uses_oracle_explorer():
    cfg = compose_config(["experiment=procedural_gridworld_original"])
    check_config(cfg)
    assert cfg.experiment_name == "procedural_gridworld_original"
    assert cfg.agent.explorer == "oracle"
    assert cfg.agent.retrieval_threshold == -1.0


def test_command_line_override_beats_experiment():
    cfg = compose_config(["experiment=procedural_gridworld_original", "agent.explorer=random"])
    check_config(cfg)
    assert cfg.agent.explorer == "random"
    assert cfg.agent.extraction == "last_transitions"  # the rest of the experiment stays


# --- bad values ---------------------------------------------------------------------------------


BAD_VALUES = [
    ("memory.top_k=0", "memory.top_k"),
    ("memory.merge_threshold=1.5", "memory.merge_threshold"),
    ("memory.merge_threshold=-1.5", "memory.merge_threshold"),
    ("env.size=2", "env.size"),
    ("env.num_envs=0", "env.num_envs"),
    ("agent.explorer=psychic", "agent.explorer"),
    ("agent.retrieval_threshold=2", "agent.retrieval_threshold"),
    ("curriculum.num_stages=0", "curriculum.num_stages"),
    ("logger.mode=sometimes", "logger.mode"),
    ("trainer.iterations=0", "trainer.iterations"),
    ("seed=-1", "seed"),
    ("device=tpu", "device"),
    ("+memory.foo=1", "memory.foo"),
    ("+trainer.foo=1", "trainer.foo"),
    ("memory.top_k=abc", "memory.top_k"),
    ("env.size=1.5", "env.size"),
]


@pytest.mark.parametrize(("override", "key"), BAD_VALUES, ids=[o for o, _ in BAD_VALUES])
def test_bad_value_is_one_line_error_naming_key(override, key):
    cfg = compose_config([override])
    with pytest.raises(ConfigError) as info:
        check_config(cfg)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{key}: "), message
    assert info.value.key == key
    assert info.value.reason


# --- run dirs -----------------------------------------------------------------------------------


def _run_dir_keys(overrides: list[str]) -> tuple[str, str]:
    cfg = compose_config(overrides, hydra_config=True)
    return cfg.hydra.run.dir, cfg.hydra.output_subdir


def test_run_dir_under_experiment_name():
    run_dir, output_subdir = _run_dir_keys([])
    assert Path(run_dir).parent == Path("outputs/runs/procedural_gridworld")
    assert Path(run_dir).name  # the timestamp
    assert output_subdir == ".hydra"


def test_run_dir_follows_experiment():
    run_dir, _ = _run_dir_keys(["experiment=procedural_gridworld_original"])
    assert Path(run_dir).parent == Path("outputs/runs/procedural_gridworld_original")


def test_resume_reuses_run_dir():
    run_dir, output_subdir = _run_dir_keys(["resume=/some/dir"])
    assert run_dir == "/some/dir"
    assert output_subdir == ".hydra/resume"


# --- the entrypoint -----------------------------------------------------------------------------


def test_cli_bad_value_exits_before_training(tmp_path):
    run_dir = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "train.py", "memory.top_k=0", "logger=none", f"hydra.run.dir={run_dir}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("config error:")]
    assert len(error_lines) == 1, result.stderr
    assert error_lines[0].startswith("config error: memory.top_k: "), result.stderr
    assert "Traceback" not in result.stderr
    assert not (run_dir / "metrics.jsonl").exists()
    assert not (run_dir / "checkpoints").exists()


def test_config_errors_survive_pickling():
    """Launchers and process pools send a job's error back to the parent process."""
    error = pickle.loads(pickle.dumps(ConfigError("memory.top_k", "0 is out of range")))
    assert (error.key, error.reason) == ("memory.top_k", "0 is out of range")
    assert str(error) == "memory.top_k: 0 is out of range"
