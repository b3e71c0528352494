"""The env model file: an :class:`~procmem.models.env_model.EnvModel`'s weights and settings,
written atomically and read back as data only."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from procmem.io import atomic_torch_save
from procmem.models.env_model import EnvModel
from procmem.safe_load import load_data_file


def save_env_model(model: EnvModel, path: str | os.PathLike) -> Path:
    """Save ``model``'s weights and settings to the file ``path``, atomically."""
    return atomic_torch_save({"state_dict": model.state_dict(), "settings": dict(model.settings)},
                             path)


def load_env_model(path: str | os.PathLike, device: torch.device | str = "cpu") -> EnvModel:
    """The :class:`EnvModel` :func:`save_env_model` wrote to ``path``, in eval mode; the file
    is loaded as data only (:func:`~procmem.safe_load.load_data_file`)."""
    saved = load_data_file(path)
    model = EnvModel(**saved["settings"])
    model.load_state_dict(saved["state_dict"])
    return model.to(device).eval()
