"""What the config tree offers: its directory, the options of each group and the classes
they name."""

from __future__ import annotations

import functools
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from procmem.imports import import_object
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
