"""What the config tree offers: its directory, the options of each group and the classes
they name; and the config of a run dir, with the class paths of earlier versions brought up
to date."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from procmem.imports import import_object
from procmem.run.run_dir import RunDir
from procmem.settings import SettingError

CONFIG_DIR = Path(__file__).resolve().parents[2] / "conf"
ConfigError = SettingError  # a bad config value: one line, ``<full key>: <reason>``


def import_target(path: str) -> type:
    """The class a ``_target_`` names."""
    try:
        return import_object(path)
    except (ImportError, AttributeError, ValueError) as error:
        raise ConfigError("_target_", f"cannot import {path!r} ({error})") from None


@functools.cache
def group_options(group: str) -> tuple[tuple[str, str], ...]:
    """``(option, _target_)`` of every option of a config group (``env``, ``agent/network``)
    that names a class."""
    options = []
    for path in sorted((CONFIG_DIR / group).glob("*.yaml")):
        target = OmegaConf.load(path).get("_target_")
        if target is not None:
            options.append((path.stem, target))
    return tuple(options)


def choice(group: str, node: DictConfig | None) -> str:
    """How the command line names the option of ``node``: ``env=minipacman`` (its class's
    path when no option file names it)."""
    target = node.get("_target_") if node else None
    if target is None:
        return f"{group}=none"
    names = {path: option for option, path in group_options(group)}
    return f"{group}={names.get(target, target)}"


# Modules that moved when the library was laid out by role: the configs of run dirs written
# before name their old paths (a policy_run, a resume, an evaluation).
MOVED_MODULES = {
    "procmem.agents.a2c": "procmem.algorithms.a2c",
    "procmem.agents.i2a": "procmem.algorithms.i2a",
    "procmem.agents.procedural": "procmem.algorithms.procedural",
    "procmem.agents.env_model_trainer": "procmem.algorithms.env_model_training",
    "procmem.agents.networks": "procmem.models.networks",
    "procmem.memory.skill_library": "procmem.skills.library",
    "procmem.curriculum": "procmem.curricula",
    "procmem.logging": "procmem.run.loggers",
}


def run_config(run: RunDir) -> DictConfig:
    """The config ``run`` was started with, its ``_target_`` paths brought up to date."""
    cfg = run.config()
    _update_targets(cfg)
    return cfg


def _update_targets(node: Any) -> None:
    if isinstance(node, DictConfig):
        target = node.get("_target_")
        if isinstance(target, str):
            module, _, name = target.rpartition(".")
            node._target_ = f"{MOVED_MODULES.get(module, module)}.{name}"
        for value in node.values():
            _update_targets(value)
