"""Typed schemas for every config group, checked before anything is built.

Each component's schema is a dataclass whose ``_target_`` default names the class it
configures. Field defaults are ``MISSING``: the values live in ``conf/`` only. A node is
checked in two steps: merging it into the structured schema catches unknown keys and wrong
types, and building the dataclass runs ``__post_init__``, which checks ranges. Every failure
becomes one :class:`ConfigError` whose message names the full key.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from procmem.agents.features import SituationEmbedding
from procmem.agents.i2a import IMAGINATION
from procmem.envs.toolenv import STAGES as TOOL_STAGES

GROUPS = ("env", "agent", "memory", "curriculum", "logger")
DEVICES = ("auto", "cpu", "cuda")


class ConfigError(ValueError):
    """An invalid config value; ``str()`` is one line naming the full key."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason

    def __reduce__(self) -> tuple[type, tuple[str, str]]:
        """Picklable, so errors cross process boundaries (launchers, process pools)."""
        return ConfigError, (self.key, self.reason)

    def under(self, prefix: str) -> ConfigError:
        return ConfigError(f"{prefix}.{self.key}" if prefix else self.key, self.reason)


def _value(obj: Any, key: str) -> Any:
    return getattr(obj, key)


def at_least(obj: Any, key: str, minimum: float) -> None:
    if _value(obj, key) < minimum:
        raise ConfigError(key, f"{_value(obj, key)!r} is out of range: must be >= {minimum}")


def greater_than(obj: Any, key: str, bound: float) -> None:
    if not _value(obj, key) > bound:
        raise ConfigError(key, f"{_value(obj, key)!r} is out of range: must be > {bound}")


def within(obj: Any, key: str, low: float, high: float) -> None:
    if not low <= _value(obj, key) <= high:
        raise ConfigError(key, f"{_value(obj, key)!r} is out of range: must be in [{low}, {high}]")


def stage_list(obj: Any, key: str, num_stages: int) -> None:
    """A non-empty list of stages, each in ``0..num_stages - 1``."""
    stages = _value(obj, key)
    if not stages:
        raise ConfigError(key, "must not be empty")
    for stage in stages:
        if not 0 <= stage < num_stages:
            raise ConfigError(key, f"{stage!r} is out of range: stages are 0..{num_stages - 1}")


def one_of(obj: Any, key: str, options: Iterable[Any]) -> None:
    options = tuple(options)
    if _value(obj, key) not in options:
        allowed = ", ".join(map(str, options))
        raise ConfigError(key, f"{_value(obj, key)!r} is not one of: {allowed}")


# --- env ------------------------------------------------------------------------------------


@dataclass
class GridWorldConfig:
    _target_: str = "procmem.envs.gridworld.GridWorld"
    num_envs: int = MISSING
    size: int = MISSING
    max_steps: int = MISSING
    layout: str = MISSING
    walls: float = MISSING
    step_reward: float = MISSING
    key_reward: float = MISSING
    door_reward: float = MISSING
    goal_reward: float = MISSING

    def __post_init__(self) -> None:
        at_least(self, "num_envs", 1)
        at_least(self, "size", 3)
        at_least(self, "max_steps", 1)
        one_of(self, "layout", ("fixed", "random"))
        if self.layout == "fixed" and self.size < 5:
            raise ConfigError("size", f"{self.size} is out of range: layout=fixed needs size >= 5")
        if self.layout == "random" and self.size > 16:
            raise ConfigError("size",
                              f"{self.size} is out of range: layout=random needs size <= 16")
        if not 0.0 <= self.walls < 0.5:
            raise ConfigError("walls", f"{self.walls!r} is out of range: must be in [0, 0.5)")
        if self.layout == "fixed" and self.walls > 0:
            raise ConfigError("walls", f"{self.walls!r}: layout=fixed has no walls, must be 0")


@dataclass
class MiniGridConfig:
    _target_: str = "procmem.envs.minigrid.MiniGridEnv"
    env_id: str = MISSING
    num_envs: int = MISSING
    max_steps: int | None = MISSING

    def __post_init__(self) -> None:
        if not self.env_id.startswith("MiniGrid-"):
            raise ConfigError("env_id", f"{self.env_id!r} must name a MiniGrid task: MiniGrid-...")
        at_least(self, "num_envs", 1)
        if self.max_steps is not None:
            at_least(self, "max_steps", 1)


@dataclass
class ToolEnvConfig:
    _target_: str = "procmem.envs.toolenv.ToolEnv"
    num_envs: int = MISSING
    max_steps: int = MISSING
    operand_low: int = MISSING
    operand_high: int = MISSING
    shaping: float = MISSING
    stages: list[int] = MISSING
    eval_stages: list[int] | None = MISSING

    def num_stages(self) -> int:
        return len(TOOL_STAGES)

    def __post_init__(self) -> None:
        at_least(self, "num_envs", 1)
        at_least(self, "max_steps", 1)
        at_least(self, "operand_low", 0)  # the vocabulary has no sign token
        at_least(self, "operand_high", self.operand_low)
        at_least(self, "shaping", 0.0)
        stage_list(self, "stages", self.num_stages())
        if self.eval_stages is not None:
            stage_list(self, "eval_stages", self.num_stages())


@dataclass
class MiniPacmanConfig:
    _target_: str = "procmem.envs.minipacman.MiniPacman"
    num_envs: int = MISSING
    mode: str = MISSING
    frame_cap: int = MISSING

    def __post_init__(self) -> None:
        at_least(self, "num_envs", 1)
        one_of(self, "mode", ("regular", "avoid", "hunt", "ambush", "rush"))
        at_least(self, "frame_cap", 1)


@dataclass
class ExpressionEnvConfig(ToolEnvConfig):
    _target_: str = "procmem.envs.expressions.ExpressionEnv"
    max_depth: int = MISSING

    def num_stages(self) -> int:
        return self.max_depth

    def __post_init__(self) -> None:
        at_least(self, "max_depth", 1)
        super().__post_init__()


# --- agent ----------------------------------------------------------------------------------


@dataclass
class ProceduralAgentConfig:
    _target_: str = "procmem.agents.procedural.ProceduralMemoryAgent"
    explorer: str = MISSING
    extraction: str = MISSING
    skill_kind: str = MISSING
    skill_length: int = MISSING
    min_success_steps: int = MISSING
    retrieval_threshold: float = MISSING
    skill_step_budget: int = MISSING
    key_lengthscale: float = MISSING
    bc_hidden: int = MISSING
    bc_lr: float = MISSING
    bc_steps: int = MISSING
    bc_batch_size: int = MISSING
    bc_buffer_size: int = MISSING

    def __post_init__(self) -> None:
        one_of(self, "explorer", ("random", "oracle", "count"))
        one_of(self, "extraction", ("last_transitions", "subgoals"))
        one_of(self, "skill_kind", ("open_loop", "closed_loop"))
        if self.skill_kind == "closed_loop" and self.extraction != "subgoals":
            raise ConfigError("skill_kind", "closed_loop needs extraction=subgoals")
        at_least(self, "skill_length", 1)
        at_least(self, "min_success_steps", 1)
        within(self, "retrieval_threshold", -1.0, 1.0)
        at_least(self, "skill_step_budget", 0)
        greater_than(self, "key_lengthscale", 0.0)
        at_least(self, "bc_hidden", 1)
        greater_than(self, "bc_lr", 0.0)
        at_least(self, "bc_steps", 1)
        at_least(self, "bc_batch_size", 1)
        at_least(self, "bc_buffer_size", 1)


@dataclass
class ToolGRUPolicyConfig:
    _target_: str = "procmem.agents.networks.ToolGRUPolicy"
    _partial_: bool = True  # built by the algorithm with its env: network(env)
    hidden: int = MISSING

    def __post_init__(self) -> None:
        at_least(self, "hidden", 1)


@dataclass
class KeyDoorMLPPolicyConfig:
    _target_: str = "procmem.agents.networks.KeyDoorMLPPolicy"
    _partial_: bool = True  # built by the algorithm with its env: network(env)
    hidden: int = MISSING

    def __post_init__(self) -> None:
        at_least(self, "hidden", 1)


@dataclass
class ToolAttentionPolicyConfig:
    _target_: str = "procmem.agents.networks.ToolAttentionPolicy"
    _partial_: bool = True  # built by the algorithm with its env: network(env)
    hidden: int = MISSING

    def __post_init__(self) -> None:
        at_least(self, "hidden", 2)
        if self.hidden % 2:
            raise ConfigError("hidden", f"{self.hidden} must be even (two encoder directions)")


@dataclass
class PixelCNNPolicyConfig:
    _target_: str = "procmem.agents.networks.PixelCNNPolicy"
    _partial_: bool = True  # built by the algorithm with its env: network(env)
    channels: int = MISSING
    hidden: int = MISSING

    def __post_init__(self) -> None:
        at_least(self, "channels", 1)
        at_least(self, "hidden", 1)


@dataclass
class A2CSettings:
    """The A2C settings shared by ``agent=a2c`` and ``agent=i2a``."""

    n_steps: int = MISSING
    gamma: float = MISSING
    lr: float = MISSING
    optimizer: str = MISSING
    value_coef: float = MISSING
    entropy_coef: float = MISSING
    max_grad_norm: float = MISSING
    normalize_advantages: bool = MISSING
    bootstrap_truncated: bool = MISSING
    stats_window: int = MISSING

    def __post_init__(self) -> None:
        at_least(self, "n_steps", 1)
        within(self, "gamma", 0.0, 1.0)
        greater_than(self, "lr", 0.0)
        one_of(self, "optimizer", ("adam", "rmsprop"))
        at_least(self, "value_coef", 0.0)
        at_least(self, "entropy_coef", 0.0)
        greater_than(self, "max_grad_norm", 0.0)
        at_least(self, "stats_window", 1)


@dataclass
class A2CConfig(A2CSettings):
    _target_: str = "procmem.agents.a2c.A2C"
    network: Any = MISSING


@dataclass
class I2AConfig(A2CSettings):
    _target_: str = "procmem.agents.i2a.I2A"
    imagination: str = MISSING
    env_model_run: str | None = MISSING
    depth: int = MISSING
    channels: int = MISSING
    hidden: int = MISSING
    code_size: int = MISSING
    distill_lr: float = MISSING
    finetune_env_model: bool = MISSING
    env_model_lr: float = MISSING
    pretrain_iterations: int = MISSING

    def __post_init__(self) -> None:
        super().__post_init__()
        one_of(self, "imagination", IMAGINATION)
        at_least(self, "depth", 1)
        at_least(self, "channels", 1)
        at_least(self, "hidden", 1)
        at_least(self, "code_size", 1)
        greater_than(self, "distill_lr", 0.0)
        greater_than(self, "env_model_lr", 0.0)
        at_least(self, "pretrain_iterations", 1)


@dataclass
class EnvModelTrainerConfig:
    _target_: str = "procmem.agents.env_model_trainer.EnvModelTrainer"
    policy_run: str | None = MISSING
    channels: int = MISSING
    blocks: int = MISSING
    lr: float = MISSING
    batch_size: int = MISSING
    buffer_size: int = MISSING
    collect_steps: int = MISSING
    updates_per_iteration: int = MISSING
    event_coef: float = MISSING
    lr_decay_iterations: int = MISSING

    def __post_init__(self) -> None:
        at_least(self, "channels", 1)
        at_least(self, "blocks", 0)
        greater_than(self, "lr", 0.0)
        at_least(self, "batch_size", 1)
        at_least(self, "buffer_size", 1)
        at_least(self, "collect_steps", 1)
        at_least(self, "updates_per_iteration", 1)
        at_least(self, "event_coef", 0.0)
        at_least(self, "lr_decay_iterations", 0)


# --- memory ---------------------------------------------------------------------------------


@dataclass
class SkillLibraryConfig:
    _target_: str = "procmem.memory.skill_library.SkillLibrary"
    embedding_dim: int = MISSING
    top_k: int = MISSING
    merge_threshold: float = MISSING
    index: str = MISSING
    capacity: int | None = MISSING
    eviction: str = MISSING
    recency_halflife: float = MISSING
    merge_every: int = MISSING

    def __post_init__(self) -> None:
        at_least(self, "embedding_dim", 1)
        at_least(self, "top_k", 1)
        within(self, "merge_threshold", -1.0, 1.0)
        one_of(self, "index", ("exact", "hnsw"))
        if self.capacity is not None:
            at_least(self, "capacity", 1)
        one_of(self, "eviction", ("utility", "lru", "fifo"))
        greater_than(self, "recency_halflife", 0.0)
        at_least(self, "merge_every", 0)


# --- curriculum -----------------------------------------------------------------------------


@dataclass
class UniformCurriculumConfig:
    _target_: str = "procmem.curriculum.UniformCurriculum"
    num_stages: int = MISSING

    def __post_init__(self) -> None:
        at_least(self, "num_stages", 1)


@dataclass
class FixedCurriculumConfig:
    _target_: str = "procmem.curriculum.FixedCurriculum"
    stage: int = MISSING

    def __post_init__(self) -> None:
        at_least(self, "stage", 0)


@dataclass
class StagedCurriculumConfig:
    _target_: str = "procmem.curriculum.StagedCurriculum"
    schedule: list[int] = MISSING

    def __post_init__(self) -> None:
        if not self.schedule:
            raise ConfigError("schedule", "must not be empty")
        if min(self.schedule) < 0:
            raise ConfigError("schedule", f"{self.schedule} is out of range: stages must be >= 0")


@dataclass
class AdaptiveCurriculumConfig:
    _target_: str = "procmem.curriculum.AdaptiveCurriculum"
    num_stages: int = MISSING
    threshold: float = MISSING
    replay: float = MISSING
    metric: str = MISSING

    def __post_init__(self) -> None:
        at_least(self, "num_stages", 1)
        within(self, "threshold", 0.0, 1.0)
        if not 0.0 <= self.replay < 1.0:
            raise ConfigError("replay", f"{self.replay!r} is out of range: must be in [0, 1)")
        if "{stage}" not in self.metric:
            raise ConfigError("metric", f"{self.metric!r} must contain {{stage}}")


# --- logger ---------------------------------------------------------------------------------


@dataclass
class WandbConfig:
    _target_: str = "procmem.logging.WandbSink"
    project: str = MISSING
    entity: str | None = None
    mode: str | None = None
    tags: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.mode is not None:
            one_of(self, "mode", ("online", "offline", "disabled"))
        if not self.project:
            raise ConfigError("project", "must not be empty")


# --- runner and top level -------------------------------------------------------------------


@dataclass
class TrainerConfig:
    iterations: int = MISSING
    eval_every: int = MISSING
    eval_episodes: int = MISSING
    checkpoint_every: int = MISSING
    keep_checkpoints: int = MISSING
    log_every: int = MISSING
    progress: bool = MISSING
    objective: str = MISSING

    def __post_init__(self) -> None:
        at_least(self, "iterations", 1)
        at_least(self, "eval_every", 0)
        at_least(self, "eval_episodes", 1)
        at_least(self, "checkpoint_every", 0)
        at_least(self, "keep_checkpoints", 1)
        at_least(self, "log_every", 1)


SCHEMAS: dict[str, type] = {}


def register_schema(schema: type) -> type:
    """Register a component schema under its ``_target_`` (usable as a class decorator)."""
    SCHEMAS[schema._target_] = schema
    return schema


for _schema in (GridWorldConfig, ProceduralAgentConfig, SkillLibraryConfig, FixedCurriculumConfig,
                UniformCurriculumConfig, StagedCurriculumConfig, AdaptiveCurriculumConfig,
                WandbConfig, MiniGridConfig, ToolEnvConfig, A2CConfig, ToolGRUPolicyConfig,
                KeyDoorMLPPolicyConfig, ExpressionEnvConfig, ToolAttentionPolicyConfig,
                PixelCNNPolicyConfig,
                MiniPacmanConfig, EnvModelTrainerConfig, I2AConfig):
    register_schema(_schema)


def check_node(node: Mapping | DictConfig, schema: type, prefix: str) -> Any:
    """Check one config node against ``schema``; return the built dataclass."""
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), node)
        return OmegaConf.to_object(merged)
    except ConfigError as error:
        raise error.under(prefix) from None
    except OmegaConfBaseException as error:
        key = str(error.full_key or error.key or "")
        reason = str(error.msg).splitlines()[0] if error.msg else type(error).__name__
        raise ConfigError(f"{prefix}.{key}" if key else prefix, reason) from None


def check_component(node: Any, group: str) -> None:
    """Check a group node: empty means 'none'; otherwise its ``_target_`` needs a schema."""
    if node is None or len(node) == 0:
        return
    target = node.get("_target_")
    if target is None:
        raise ConfigError(f"{group}._target_", "missing: every component names its class")
    if target not in SCHEMAS:
        raise ConfigError(
            f"{group}._target_",
            f"{target!r} has no schema; decorate its config dataclass with "
            "procmem.schema.register_schema",
        )
    check_node(node, SCHEMAS[target], group)
    for key, value in node.items():
        if isinstance(value, DictConfig) and "_target_" in value:
            check_component(value, f"{group}.{key}")


def check_config(cfg: DictConfig) -> None:
    """Check a composed run config; raise :class:`ConfigError` on the first bad value."""
    for group in GROUPS:
        if group not in cfg:
            raise ConfigError(group, "missing config group")
        check_component(cfg[group], group)
    check_node(cfg.trainer, TrainerConfig, "trainer")
    for key in ("seed", "torch_threads"):
        value = cfg[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(key, f"{value!r} must be an integer >= 0")
    if cfg.device not in DEVICES:
        raise ConfigError("device", f"{cfg.device!r} is not one of: {', '.join(DEVICES)}")
    _check_combinations(cfg)
    if not cfg.experiment_name:
        raise ConfigError("experiment_name", "must not be empty")


def _check_combinations(cfg: DictConfig) -> None:
    """Values of different groups that only work together."""
    agent, memory, min_dim = cfg.agent, cfg.memory, SituationEmbedding.MIN_DIM
    if (agent.get("_target_") == ProceduralAgentConfig._target_
            and agent.get("extraction") == "subgoals" and memory
            and memory.get("embedding_dim", min_dim) < min_dim):
        raise ConfigError("memory.embedding_dim", f"{memory.embedding_dim} is too small: "
                          f"agent.extraction=subgoals needs >= {min_dim}")
