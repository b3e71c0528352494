"""The config tree in ``conf/``: every option composes, checks and builds; bad values fail
early with a one-line error naming the full key; run dirs resolve as documented."""

from __future__ import annotations

import inspect
import pickle
import re
import warnings
from functools import partial
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from procmem.algorithms.protocols import Algorithm
from procmem.app import ConfigError, check_config
from procmem.app import compose_config as app_compose
from procmem.app.build import build_run, logger_sinks
from procmem.app.config import import_target, run_config
from procmem.run.run_dir import RunDir
from procmem.settings import settings_of

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
GROUPS = ("env", "agent", "agent/network", "memory", "curriculum", "logger", "experiment")
DEFAULTS = {
    "env": "gridworld",
    "agent": "procedural",
    "agent/network": "auto",  # the default of agent=a2c
    "memory": "none",  # agent=procedural picks skill_library
    "curriculum": "none",
    "logger": "wandb",
    "experiment": "procedural_gridworld",  # a run without one is the same
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


def env_read_by(network: str) -> list[str]:
    """The first env option (the default first) whose observations ``network`` reads, as an
    override; none for ``auto``, which reads them all."""
    cls = import_target(OmegaConf.load(CONF / "agent" / "network" / f"{network}.yaml")._target_)
    if not hasattr(cls, "accepts"):
        return []
    envs = sorted(options("env"), key=lambda env: env != DEFAULTS["env"])
    return [next(f"env={env}" for env in envs
                 if cls.accepts(instantiate(compose_config([f"env={env}"]).env)))]


def overrides_for(group: str, option: str) -> list[str]:
    """A run that builds ``group=option``: an experiment that picks it where one does, else
    the option with what it pairs with (A2C and an env it reads for networks, tool use for
    curricula)."""
    experiment = experiment_using(group, option)
    if group == "experiment" or experiment is not None:
        overrides = [f"experiment={experiment or option}"]
    else:
        pairing = []
        if group == "agent/network":
            pairing = ["agent=a2c", "memory=none", *env_read_by(option)]
        elif group == "curriculum":
            pairing = ["experiment=model_native_toolenv"]
        overrides = [*pairing, f"{group}={option}"]
    # An agent that pretrains its env model when given no run (I2A) builds quickly with one
    # pretraining iteration.
    if "pretrain_iterations" in compose_config(overrides).agent:
        overrides.append("agent.pretrain_iterations=1")
    return overrides


@pytest.mark.parametrize(("group", "option"), GROUP_OPTIONS)
def test_option_composes_checks_and_builds(group, option):
    cfg = compose_config(overrides_for(group, option))
    check_config(cfg)
    built = build_run(cfg, torch.device("cpu"))
    assert isinstance(built.algorithm, Algorithm)
    assert (built.curriculum is None) == (len(cfg.curriculum) == 0)
    assert (getattr(built.algorithm, "memory", None) is None) == (len(cfg.memory) == 0)


def test_logger_none_and_memory_none_are_empty_groups():
    cfg = compose_config(["logger=none", "memory=none"])
    check_config(cfg)
    assert len(cfg.logger) == 0 and len(cfg.memory) == 0
    algorithm = build_run(cfg, torch.device("cpu")).algorithm
    assert algorithm.memory is None
    assert algorithm.state_dict()["memory"] is None


# --- one source of truth per setting ------------------------------------------------------


COMPONENT_OPTIONS = [(group, option) for group, option in GROUP_OPTIONS
                     if group != "experiment" and "_target_" in OmegaConf.load(
                         CONF / group / f"{option}.yaml")]
CLASS_OPTIONS = [pair for pair in COMPONENT_OPTIONS if pair != ("agent/network", "auto")]


@pytest.mark.parametrize(("group", "option"), COMPONENT_OPTIONS)
def test_every_option_extends_the_schema_of_its_class_and_restates_no_default(group, option):
    """The option file names its schema first and holds only presets: no value equal to the
    constructor's default (that would define the setting twice)."""
    text = OmegaConf.load(CONF / group / f"{option}.yaml")
    assert list(text.defaults)[:1] == [f"/schema/{group}/{option}@_here_"]
    declared = settings_of(import_target(text._target_))
    presets = OmegaConf.to_container(text)
    for key, value in presets.items():
        if key in declared:
            default = declared[key].default
            default = list(default) if isinstance(default, tuple) else default
            assert value != default, f"conf/{group}/{option}.yaml restates {key}'s default"


def test_the_primary_config_holds_no_setting():
    """Top-level keys and the trainer's settings come from their schemas."""
    assert set(OmegaConf.load(CONF / "config.yaml")) == {"defaults", "hydra"}


def component_config(group: str, option: str) -> DictConfig:
    """A run config that builds the component ``group=option`` (W&B disabled)."""
    return compose_config([*overrides_for(group, option), "logger.mode=disabled"])


def built_directly(cls: type, changed: dict, cfg: DictConfig, directory: Path) -> object:
    """``cls`` built without the config machinery: the settings ``changed``, and the objects
    its constructor takes made by hand."""
    def plain(node: DictConfig) -> dict:
        return {k: v for k, v in OmegaConf.to_container(node).items() if not k.startswith("_")}

    def env() -> object:
        return import_target(cfg.env._target_)(**plain(cfg.env))

    made = {"env": env, "eval_env": env, "device": lambda: torch.device("cpu"),
            "seed": lambda: cfg.seed, "directory": lambda: directory, "run_id": lambda: "x",
            "memory": lambda: (import_target(cfg.memory._target_)("cpu", **plain(cfg.memory))
                               if cfg.memory else None),
            "network": lambda: partial(import_target(cfg.agent.network._target_),
                                       **plain(cfg.agent.network))}
    parameters = inspect.signature(cls).parameters
    return cls(**{name: make() for name, make in made.items() if name in parameters}, **changed)


@pytest.mark.parametrize(("group", "option"), CLASS_OPTIONS)
def test_every_component_built_from_its_config_has_the_settings_built_directly(group, option,
                                                                            tmp_path):
    """The settings a config gives reach the constructor unchanged, and building the class
    directly, with only the values that differ from its defaults, gives the same settings."""
    cfg = component_config(group, option)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # I2A without an env model pretrains one
        built = build_run(cfg, torch.device("cpu"))
        from_config = {
            "env": lambda: built.env, "agent": lambda: built.algorithm,
            "agent/network": lambda: built.algorithm.net,
            "memory": lambda: built.algorithm.memory, "curriculum": lambda: built.curriculum,
            "logger": lambda: logger_sinks(cfg, RunDir(tmp_path), "train")[0],
        }[group]()
        node = OmegaConf.to_container(OmegaConf.select(cfg, group.replace("/", ".")))
        cls = import_target(node["_target_"])
        declared = settings_of(cls)
        given = {k: tuple(v) if isinstance(v, list) else v for k, v in node.items()
                 if k in declared}
        assert from_config.settings == given
        changed = {k: v for k, v in given.items() if v != declared[k].default}
        assert built_directly(cls, changed, cfg, tmp_path).settings == from_config.settings


# --- defaults and experiments ---------------------------------------------------------------


def test_default_config():
    cfg = compose_config()
    check_config(cfg)
    assert cfg.experiment_name == "procedural_gridworld"
    assert cfg.logger._target_ == "procmem.run.loggers.WandbSink"
    assert cfg.memory._target_ == "procmem.skills.library.SkillLibrary"
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
    ("experiment=model_native_toolenv curriculum.num_stages=0", "curriculum.num_stages"),
    ("logger.mode=sometimes", "logger.mode"),
    ("trainer.iterations=0", "trainer.iterations"),
    ("seed=-1", "seed"),
    ("device=tpu", "device"),
    ("+memory.foo=1", "memory.foo"),
    ("+trainer.foo=1", "trainer.foo"),
    ("memory.top_k=abc", "memory.top_k"),
    ("env.size=1.5", "env.size"),
    ("experiment=model_native_expressions agent.network.hidden=3", "agent.network.hidden"),
    ("+experiment_name_typo=1", "experiment_name_typo"),
    ("experiment=i2a_minipacman agent.imagination=dreamed", "agent.imagination"),
]


@pytest.mark.parametrize(("override", "key"), BAD_VALUES, ids=[o for o, _ in BAD_VALUES])
def test_bad_value_is_one_line_error_naming_key(override, key):
    cfg = compose_config(override.split())
    with pytest.raises(ConfigError) as info:
        check_config(cfg)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{key}: "), message
    assert info.value.key == key
    assert info.value.reason


RULES_BETWEEN_SETTINGS = [
    ("experiment=model_native_toolenv env.stages=[5]",
     "env.stages: 5 is out of range: stages are 0..3"),
    ("env.layout=fixed env.size=4", "env.size: 4 is out of range: layout=fixed needs size >= 5"),
    ("agent.skill_kind=closed_loop agent.extraction=last_transitions", "agent.skill_kind: "),
    ("experiment=i2a_minipacman agent.imagination=copy agent.finetune_env_model=true",
     "agent.finetune_env_model: needs imagination=learned"),
]


@pytest.mark.parametrize(("override", "message"), RULES_BETWEEN_SETTINGS,
                         ids=[o for o, _ in RULES_BETWEEN_SETTINGS])
def test_a_rule_between_settings_fails_when_built_naming_the_key(override, message):
    """Rules that tie settings together live in the constructor; the app names the group."""
    cfg = compose_config(override.split())
    check_config(cfg)
    with pytest.raises(ConfigError) as info:
        build_run(cfg, torch.device("cpu"))
    assert str(info.value).startswith(message)
    assert "\n" not in str(info.value)


def test_a_target_that_does_not_follow_its_groups_protocol_is_a_config_error():
    cfg = compose_config(["memory=none", "logger=none"])
    cfg.agent = OmegaConf.create({"_target_": "procmem.run.reporters.Tables"})
    with pytest.raises(ConfigError, match=r"^agent._target_: Tables does not follow "
                                          r"procmem.algorithms.protocols.Algorithm$"):
        build_run(cfg, torch.device("cpu"))


def test_memory_for_an_agent_without_one_is_a_config_error():
    cfg = compose_config(["experiment=i2a_minipacman", "memory=skill_library"])
    with pytest.raises(ConfigError, match="^memory=skill_library needs an agent that keeps a "
                                          "memory; agent=i2a keeps none: set memory=none$"):
        check_config(cfg)


def test_memory_on_an_env_without_subgoal_events_is_a_config_error():
    cfg = compose_config(["experiment=model_native_toolenv", "memory=skill_library"])
    with pytest.raises(ConfigError, match="^memory=skill_library needs subgoal events .key, "
                                          "door, goal.; env=toolenv has none: set memory=none, "
                                          "or pick one of gridworld, minigrid$"):
        check_config(cfg)


# --- run dirs -----------------------------------------------------------------------------------


def _run_dir_keys(overrides: list[str]) -> tuple[str, str]:
    cfg = compose_config(overrides, hydra_config=True)
    return cfg.hydra.run.dir, cfg.hydra.output_subdir


def test_run_dir_under_experiment_name():
    run_dir, output_subdir = _run_dir_keys([])
    assert Path(run_dir).parent == Path("outputs/runs/procedural_gridworld")
    assert Path(run_dir).name  # the timestamp
    assert output_subdir is None  # the run writes .hydra/ itself, once it is accepted


def test_run_dir_follows_experiment():
    run_dir, _ = _run_dir_keys(["experiment=procedural_gridworld_original"])
    assert Path(run_dir).parent == Path("outputs/runs/procedural_gridworld_original")


def test_resume_reuses_run_dir():
    run_dir, output_subdir = _run_dir_keys(["resume=/some/dir"])
    assert run_dir == "/some/dir"
    assert output_subdir is None


# --- the entrypoint -----------------------------------------------------------------------------


def test_config_errors_survive_pickling():
    """Launchers and process pools send a job's error back to the parent process."""
    error = pickle.loads(pickle.dumps(ConfigError("memory.top_k", "0 is out of range")))
    assert (error.key, error.reason) == ("memory.top_k", "0 is out of range")
    assert str(error) == "memory.top_k: 0 is out of range"


def test_a_run_dir_written_before_the_modules_moved_still_loads(tmp_path):
    """Its config names the old paths (procmem.agents.a2c.A2C); they load as the new ones."""
    cfg = compose_config(["experiment=a2c_minipacman"])
    old = OmegaConf.to_yaml(cfg).replace("procmem.algorithms.a2c", "procmem.agents.a2c").replace(
        "procmem.models.networks", "procmem.agents.networks")
    run = RunDir(tmp_path)
    run.config_file.parent.mkdir(parents=True)
    run.config_file.write_text(old)
    loaded = run_config(run)
    assert loaded.agent._target_ == "procmem.algorithms.a2c.A2C"
    assert loaded.agent.network._target_ == "procmem.models.networks.PixelCNNPolicy"
    assert loaded == cfg
