"""From a checked config to built objects: each group's component, wired together.

The app builds the env (twice: training and evaluation), the memory and the curriculum,
plugs the curriculum into an env with stages, loads what the agent takes from other runs
(``agent.env_model_run``, ``agent.policy_run``) and hands all of it to the agent's
constructor, which takes what it names: ``env``, ``eval_env``, ``memory``, ``device``,
``seed`` and the loaded objects.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from procmem.algorithms.protocols import Algorithm
from procmem.app.compatibility import check_built_env
from procmem.app.config import (
    RUN_INPUTS,
    ConfigError,
    import_target,
    run_config,
    run_inputs_of,
)
from procmem.curricula import Curriculum
from procmem.envs.protocols import BatchedEnv, StagedEnv
from procmem.run.loggers import Sink
from procmem.run.run_dir import RunDir, read_env_model
from procmem.settings import SettingError


@dataclass
class BuiltRun:
    """What a run config builds."""

    algorithm: Algorithm
    curriculum: Curriculum | None
    env: BatchedEnv


def build_component(node: DictConfig, prefix: str, **objects: Any) -> Any:
    """Instantiate the component of ``node``, passing it those of ``objects`` its constructor
    names. Its own errors reach the caller without Hydra's wrapper; a bad setting is a
    :class:`ConfigError` naming the key under ``prefix``."""
    try:
        parameters = inspect.signature(import_target(node._target_)).parameters
        given = {name: value for name, value in objects.items() if name in parameters}
        settings = OmegaConf.masked_copy(node, [key for key in node if key not in RUN_INPUTS])
        return _instantiate(settings, given)
    except SettingError as error:
        raise error.under(prefix) from None


def _instantiate(node: DictConfig, objects: dict[str, Any]) -> Any:
    """``instantiate(node)(**objects)``: the objects go to the built partial, not to
    instantiate, which would recurse into them (a run config passed to a logger holds
    ``_target_`` nodes of its own); the constructor's errors come without Hydra's wrapper."""
    try:
        return instantiate(node, _partial_=True)(**objects)
    except InstantiationException as error:
        if error.__cause__ is None:
            raise
        raise error.__cause__ from None


def build_run(cfg: DictConfig, device: torch.device) -> BuiltRun:
    """The algorithm of a checked run config, with its curriculum and training env."""
    env = build_component(cfg.env, "env")
    _require(env, BatchedEnv, "env")
    check_built_env(cfg, env)
    eval_env = build_component(cfg.env, "env")
    memory = build_component(cfg.memory, "memory", device=str(device)) if cfg.memory else None
    curriculum = build_component(cfg.curriculum, "curriculum") if cfg.curriculum else None
    if curriculum is not None and isinstance(env, StagedEnv):
        env.set_stage_sampler(curriculum.sample)
    agent = import_target(cfg.agent._target_)
    loaded = {argument: LOADERS[argument](cfg.agent[key], env, device)
              for key, argument in run_inputs_of(agent).items() if cfg.agent.get(key)}
    algorithm = build_component(cfg.agent, "agent", env=env, eval_env=eval_env, memory=memory,
                                device=device, seed=cfg.seed, **loaded)
    _require(algorithm, Algorithm, "agent")
    return BuiltRun(algorithm, curriculum, env)


def _require(built: Any, protocol: type, group: str) -> None:
    """Refuse a component that does not do what its group's protocol asks."""
    if not isinstance(built, protocol):
        raise ConfigError(f"{group}._target_", f"{type(built).__name__} does not follow "
                                               f"{protocol.__module__}.{protocol.__name__}")


def load_policy(run_dir: str, env: BatchedEnv, device: torch.device) -> nn.Module:
    """The network of an A2C run, built for ``env`` from the run's saved config, with the
    weights of its latest checkpoint."""
    run = RunDir(run_dir)
    cfg = run_config(run)
    net = instantiate(cfg.agent.network)(env)
    checkpoint = run.checkpoints().load_latest(
        accept=lambda c: net.load_state_dict(c["algorithm"]["net"]))
    if checkpoint is None:
        raise FileNotFoundError(f"{run.path}: no checkpoint to load a policy from")
    return net.to(device).eval()


# How each argument in RUN_INPUTS is loaded: (run dir or file, env, device) -> object.
LOADERS: dict[str, Callable[[str, BatchedEnv, torch.device], Any]] = {
    "env_model": lambda path, env, device: read_env_model(path, device),
    "policy": load_policy,
}


def logger_sinks(cfg: DictConfig, run: RunDir, job_type: str) -> list[Sink]:
    """The sinks of a ``job_type`` job of ``run`` (none for ``logger=none``): a W&B run in the
    run's group and under its name, holding the resolved config. The training run's files
    are in the run dir's ``wandb/``; an evaluation's, named ``<name> (eval)``, are apart
    (``evaluation/wandb/``)."""
    if not cfg.logger:
        return []
    group, name = run.identity()
    directory = run.path
    if job_type != "train":
        directory, name = run.evaluation_dir, f"{name} ({job_type})"
    return [build_component(cfg.logger, "logger", directory=directory,
                            run_id=run.wandb_run_id(job_type),
                            run_config=OmegaConf.to_container(cfg, resolve=True), group=group,
                            name=name, job_type=job_type)]
