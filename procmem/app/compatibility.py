"""Which group choices work together, checked before anything is built.

An agent declares the env capabilities it needs (``env_needs``), an env class the ones it
offers (the protocols of :mod:`procmem.envs.protocols` it subclasses). A memory needs an
agent that takes one, a curriculum an env with stages, ``agent.policy_run`` an A2C run on the
same env and ``agent.env_model_run`` a run that saved an env model. Each mismatch is one line
naming the choices and, where there are some, the options that would fit. What only the
built env can tell (discrete actions, a network that reads its observations) is checked by
:func:`check_built_env` right after the env is built, before the agent.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from procmem.algorithms.procedural import ProceduralMemoryAgent
from procmem.app.catalogue import ConfigError, choice, group_options, import_target
from procmem.envs.protocols import CAPABILITIES, StagedEnv, offers
from procmem.models.networks import NetworkMismatch, check_fits
from procmem.run.run_dir import RunDir
from procmem.skills.features import SituationEmbedding


class CombinationError(ConfigError):
    """Choices of different groups that do not work together; ``str()`` is the one-line
    message, which names them."""

    def __init__(self, key: str, reason: str) -> None:
        ValueError.__init__(self, reason)
        self.key = key
        self.reason = reason


def env_named(node: DictConfig) -> str:
    """``env=<option>``, with the Gymnasium id where the option runs one."""
    return choice("env", node) + (f" (id={node.id})" if "id" in node else "")


def options_offering(needs: Iterable[type]) -> list[str]:
    """The env options whose classes offer every capability in ``needs``."""
    needs = list(needs)
    return [option for option, path in group_options("env")
            if all(offers(import_target(path), need) for need in needs)]


def check_compatible(cfg: DictConfig) -> None:
    """Refuse group choices that do not work together (see the module docstring)."""
    env, agent = _class_of(cfg, "env"), _class_of(cfg, "agent")
    env_choice, agent_choice = env_named(cfg.env), choice("agent", cfg.agent)
    missing = [need for need in agent.env_needs if not offers(env, need)]
    if missing:
        raise CombinationError("agent", (
            f"{agent_choice} needs {_words(CAPABILITIES[need] for need in missing)}; "
            f"{env_choice} has none; envs with them: "
            f"{', '.join(options_offering(agent.env_needs)) or 'none'}"))
    if cfg.memory and "memory" not in inspect.signature(agent).parameters:
        raise CombinationError("memory", (
            f"{choice('memory', cfg.memory)} needs an agent that keeps a memory; "
            f"{agent_choice} keeps none: set memory=none"))
    if cfg.curriculum and not offers(env, StagedEnv):
        raise CombinationError("curriculum", (
            f"{choice('curriculum', cfg.curriculum)} needs {CAPABILITIES[StagedEnv]}; "
            f"{env_choice} has none: set curriculum=none, or pick one of "
            f"{', '.join(options_offering([StagedEnv]))}"))
    if cfg.agent.get("policy_run"):
        _check_policy_run(Path(cfg.agent.policy_run), cfg.env)
    if cfg.agent.get("env_model_run"):
        _check_env_model_run(Path(cfg.agent.env_model_run))
    _check_embedding_dim(cfg)


def check_built_env(cfg: DictConfig, env: Any) -> None:
    """What only the built env can tell: discrete actions, and a network that reads its
    observations (the agent's ``network``)."""
    if env.num_actions < 1:
        raise CombinationError("env", (
            f"{choice('agent', cfg.agent)} needs discrete actions; {env_named(cfg.env)} "
            f"has {env.single_action_space}"))
    network = cfg.agent.get("network")
    if network:
        try:
            check_fits(import_target(network._target_), env)
        except NetworkMismatch as error:
            raise CombinationError("agent.network", (
                f"{choice('agent/network', network)} cannot read the observations of "
                f"{env_named(cfg.env)}: {error}; pick another, or agent/network=auto"
            )) from None


def _check_policy_run(path: Path, env: DictConfig) -> None:
    run = RunDir(path)
    if not run.config_file.is_file():
        raise ConfigError("agent.policy_run", f"{path} is not a run dir (no {run.config_file})")
    policy = run.config()
    if "network" not in policy.agent:
        raise ConfigError("agent.policy_run", f"{path} is not an A2C run (it has no "
                                              "agent.network)")
    if policy.env._target_ != env._target_:
        raise ConfigError("agent.policy_run", f"{path} trained on {choice('env', policy.env)}; "
                                              f"this run's env is {choice('env', env)}")


def _check_env_model_run(path: Path) -> None:
    model = RunDir(path).env_model_file if path.is_dir() else path
    if not model.is_file():
        raise ConfigError("agent.env_model_run", f"{model} not found: give an "
                                                 "agent=env_model run dir or its env_model.pt")


def _check_embedding_dim(cfg: DictConfig) -> None:
    """Subgoal keys need room in the memory's embeddings."""
    agent, memory, min_dim = cfg.agent, cfg.memory, SituationEmbedding.MIN_DIM
    if (import_target(agent._target_) is ProceduralMemoryAgent
            and agent.get("extraction") == "subgoals" and memory
            and memory.get("embedding_dim", min_dim) < min_dim):
        raise ConfigError("memory.embedding_dim", f"{memory.embedding_dim} is too small: "
                          f"agent.extraction=subgoals needs >= {min_dim}")


def _class_of(cfg: DictConfig, group: str) -> type:
    node = cfg[group]
    if not node or "_target_" not in node:
        raise ConfigError(f"{group}._target_", "missing: every component names its class")
    try:
        return import_target(node._target_)
    except ConfigError as error:
        raise error.under(group) from None


def _words(items: Iterable[str]) -> str:
    return " and ".join(items)

