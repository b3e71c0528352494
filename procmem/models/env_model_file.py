"""The env model file: an environment model's kind, weights and settings, written atomically
and read back as data only. Two kinds: ``pixel`` (:class:`~procmem.models.env_model.EnvModel`)
and ``ssm`` (:class:`~procmem.models.state_space_model.StateSpaceModel`); a file without a
kind holds a pixel model (written before there were two)."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from procmem.io import atomic_torch_save
from procmem.models.env_model import EnvModel
from procmem.models.state_space_model import StateSpaceModel
from procmem.safe_load import load_data_file

ENV_MODELS: dict[str, type[nn.Module]] = {"pixel": EnvModel, "ssm": StateSpaceModel}


def env_model_kind(model: nn.Module) -> str:
    """The kind of an env model: ``pixel`` or ``ssm``."""
    return next(kind for kind, cls in ENV_MODELS.items() if isinstance(model, cls))


def save_env_model(model: EnvModel | StateSpaceModel, path: str | os.PathLike) -> Path:
    """Save ``model``'s kind, weights and settings to the file ``path``, atomically."""
    return atomic_torch_save({"kind": env_model_kind(model), "state_dict": model.state_dict(),
                              "settings": dict(model.settings)}, path)


def load_env_model(path: str | os.PathLike, device: torch.device | str = "cpu"
                   ) -> EnvModel | StateSpaceModel:
    """The env model :func:`save_env_model` wrote to ``path``, in eval mode; the file is
    loaded as data only (:func:`~procmem.safe_load.load_data_file`). ``ValueError`` for a
    kind this code does not know."""
    saved = load_data_file(path)
    kind = saved.get("kind", "pixel")
    if kind not in ENV_MODELS:
        raise ValueError(f"an env model of kind {kind!r}; known kinds: {', '.join(ENV_MODELS)}")
    model = ENV_MODELS[kind](**saved["settings"])
    model.load_state_dict(saved["state_dict"])
    return model.to(device).eval()
