"""Which group choices work together, checked before anything is built.

An agent or a memory declares the env capabilities it needs (``env_needs``), an env class
the ones it offers (the protocols of :mod:`procmem.envs.protocols` it subclasses). A memory needs an
agent that takes one, a curriculum an env with stages, and a setting that reads another run
(an agent's declared ``run_inputs``) a run on the same env that leaves the file it reads.
Each component's own rules (its ``check_config`` hook) come next. Each mismatch is one line
naming the choices and, where there are some, the options that would fit. What only the
built env can tell (discrete actions, a network that reads its observations: its
``check_env`` hook) is checked by :func:`check_built_env` right after the env is built,
before the agent. Nothing here names a family: see :mod:`procmem.algorithms.protocols`.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from procmem.algorithms.protocols import RunInput, artifacts_of, run_inputs_of
from procmem.app.catalogue import ConfigError, choice, group_options, import_target, run_config
from procmem.envs.protocols import CAPABILITIES, StagedEnv, offers
from procmem.run.run_dir import RunDir
from procmem.settings import SettingError

GROUPS_WITH_RULES = ("env", "agent", "memory", "curriculum")  # checked by their check_config


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
    memory_needs = getattr(_class_of(cfg, "memory"), "env_needs", ()) if cfg.memory else ()
    missing = [need for need in memory_needs if not offers(env, need)]
    if missing:
        raise CombinationError("memory", (
            f"{choice('memory', cfg.memory)} needs "
            f"{_words(CAPABILITIES[need] for need in missing)}; {env_choice} has none: set "
            f"memory=none, or pick one of {', '.join(options_offering(memory_needs))}"))
    if cfg.curriculum and not offers(env, StagedEnv):
        raise CombinationError("curriculum", (
            f"{choice('curriculum', cfg.curriculum)} needs {CAPABILITIES[StagedEnv]}; "
            f"{env_choice} has none: set curriculum=none, or pick one of "
            f"{', '.join(options_offering([StagedEnv]))}"))
    for run_input in run_inputs_of(agent).values():
        if cfg.agent.get(run_input.setting):
            input_file(cfg, run_input)
    _check_own_rules(cfg)


def check_built_env(cfg: DictConfig, env: Any) -> None:
    """What only the built env can tell: discrete actions, and a network that reads its
    observations (the agent's ``network``)."""
    if env.num_actions < 1:
        raise CombinationError("env", (
            f"{choice('agent', cfg.agent)} needs discrete actions; {env_named(cfg.env)} "
            f"has {env.single_action_space}"))
    network = cfg.agent.get("network")
    check_env = getattr(import_target(network._target_), "check_env", None) if network else None
    if check_env is not None:
        try:
            check_env(env)
        except ValueError as error:
            raise CombinationError("agent.network", (
                f"{choice('agent/network', network)} cannot read the observations of "
                f"{env_named(cfg.env)}: {error}; pick another, or agent/network=auto"
            )) from None


def input_file(cfg: DictConfig, run_input: RunInput) -> Path | None:
    """The file the agent setting ``run_input.setting`` names: the file itself, or the
    artifact in the run dir it names; ``None`` for a run saved before it left that file,
    whose latest checkpoint can make it. Anything else is a :class:`ConfigError` naming the
    setting: not a run dir, a run on another env, a run that leaves no such file."""
    key, path = f"agent.{run_input.setting}", Path(cfg.agent[run_input.setting])
    if path.is_file():
        return path
    run, file = RunDir(path), path / run_input.artifact
    if not run.config_file.is_file():
        if file.is_file():  # a folder holding the file
            return file
        raise ConfigError(key, f"{path} is not a run dir and holds no {run_input.artifact}")
    source = run_config(run)  # class paths of earlier versions brought up to date
    if source.env._target_ != cfg.env._target_:
        raise ConfigError(key, f"{path} trained on {choice('env', source.env)}; this run's "
                               f"env is {choice('env', cfg.env)}")
    if file.is_file():
        return file
    leaves = [artifact.file for artifact in artifacts_of(import_target(source.agent._target_))
              if artifact.only_with is None or source.get(artifact.only_with)]
    if run_input.artifact not in leaves:
        raise ConfigError(key, f"{path} has no {run_input.artifact}: its "
                               f"{choice('agent', source.agent)} leaves "
                               f"{', '.join(leaves) or 'no files for other runs'}")
    if not run.checkpoints().paths():
        raise ConfigError(key, f"{path} has no {run_input.artifact} yet, and no checkpoint "
                               "to make it from")
    return None


def _check_own_rules(cfg: DictConfig) -> None:
    """Each component's own config rules: its class's ``check_config`` hook, given the whole
    run config as plain data."""
    run = None
    for group in GROUPS_WITH_RULES:
        node = cfg.get(group)
        check = getattr(import_target(node._target_), "check_config", None) if node else None
        if check is not None:
            run = run or OmegaConf.to_container(cfg, resolve=True)
            try:
                check(run)
            except SettingError as error:
                raise ConfigError(error.key, error.reason) from None


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

