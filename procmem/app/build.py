"""From a checked config to built objects: each group's component, wired together.

The app builds the env (twice: training and evaluation), the memory and the curriculum,
plugs the curriculum into an env with stages, loads what the agent takes from other runs
(its declared ``run_inputs``: ``agent.env_model_run``, ``agent.policy_run``, ...) and hands
all of it to the agent's constructor, which takes what it names: ``env``, ``eval_env``,
``memory``, ``device``, ``seed`` and the loaded objects.
"""

from __future__ import annotations

import inspect
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from procmem.algorithms.protocols import Algorithm, RunInput, artifacts_of, run_inputs_of
from procmem.app.catalogue import ConfigError, import_target, run_config
from procmem.app.compatibility import check_built_env, input_file
from procmem.curricula import Curriculum
from procmem.envs.protocols import BatchedEnv, StagedEnv
from procmem.run.callbacks import Callback
from procmem.run.checkpoint import CheckpointError
from procmem.run.loggers import Sink
from procmem.run.run_dir import RunDir
from procmem.run.status import describe_error
from procmem.runtime import rng_state, set_rng_state
from procmem.safe_load import UnsafeFileError
from procmem.settings import SettingError


@dataclass
class BuiltRun:
    """What a run config builds."""

    algorithm: Algorithm
    curriculum: Curriculum | None
    env: BatchedEnv
    callbacks: list[Callback]


def build_component(node: DictConfig, prefix: str, **objects: Any) -> Any:
    """Instantiate the component of ``node``, passing it those of ``objects`` its constructor
    names. Its own errors reach the caller without Hydra's wrapper; a bad setting is a
    :class:`ConfigError` naming the key under ``prefix``."""
    try:
        parameters = inspect.signature(import_target(node._target_)).parameters
        given = {name: value for name, value in objects.items() if name in parameters}
        inputs = {run_input.setting for run_input in run_inputs_of(import_target(node._target_))
                  .values()}
        settings = OmegaConf.masked_copy(node, [key for key in node if key not in inputs])
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
    loaded = load_run_inputs(cfg, env, device)
    algorithm = build_component(cfg.agent, "agent", env=env, eval_env=eval_env, memory=memory,
                                device=device, seed=cfg.seed, **loaded)
    _require(algorithm, Algorithm, "agent")
    callbacks = []
    for name, node in (cfg.get("callbacks") or {}).items():
        callbacks.append(build_component(node, f"callbacks.{name}"))
        _require(callbacks[-1], Callback, f"callbacks.{name}")
    return BuiltRun(algorithm, curriculum, env, callbacks)


def _require(built: Any, protocol: type, group: str) -> None:
    """Refuse a component that does not do what its group's protocol asks."""
    if not isinstance(built, protocol):
        raise ConfigError(f"{group}._target_", f"{type(built).__name__} does not follow "
                                               f"{protocol.__module__}.{protocol.__name__}")


def load_run_inputs(cfg: DictConfig, env: BatchedEnv, device: torch.device) -> dict[str, Any]:
    """The agent's constructor arguments read from other runs (its ``run_inputs`` whose
    setting names a run), by argument. A file that cannot be loaded is a
    :class:`CheckpointError` naming it."""
    loaded = {}
    for argument, run_input in run_inputs_of(import_target(cfg.agent._target_)).items():
        if cfg.agent.get(run_input.setting):
            path = input_file(cfg, run_input)
            with tempfile.TemporaryDirectory() as folder:
                if path is None:  # a run saved before it left the file: its checkpoint makes it
                    path = _artifact_from_checkpoint(RunDir(cfg.agent[run_input.setting]),
                                                     run_input.artifact, Path(folder))
                loaded[argument] = _load(run_input, path, env, device)
    return loaded


def _artifact_from_checkpoint(run: RunDir, file: str, folder: Path) -> Path:
    """``file``, as the algorithm of ``run`` saves it from its latest checkpoint, written into
    ``folder`` (``run`` is not changed). The random state is left as it was."""
    before = rng_state()
    try:
        algorithm = build_run(run_config(run), torch.device("cpu")).algorithm
        run.checkpoints().load_latest(accept=lambda c: algorithm.load_state_dict(c["algorithm"]))
        artifact = next(a for a in artifacts_of(type(algorithm)) if a.file == file)
        return artifact.save(algorithm, folder / file)
    finally:
        set_rng_state(before)


def _load(run_input: RunInput, path: Path, env: BatchedEnv, device: torch.device) -> Any:
    try:
        return run_input.load(path, env, device)
    except FileNotFoundError:
        raise
    except UnsafeFileError as error:
        raise CheckpointError(str(error)) from None
    except Exception as error:
        raise CheckpointError(f"{path}: unreadable file ({describe_error(error)})") from error


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
