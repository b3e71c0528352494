"""Observation batches of an env (an array, or a dict of arrays) as tensors and copies."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

Observations = np.ndarray | dict[str, np.ndarray]


def as_tensors(obs: Observations, device: torch.device) -> Tensor | dict[str, Tensor]:
    """An env's observation batch (an array or a dict of arrays) as tensors on ``device``."""
    if isinstance(obs, dict):
        return {key: torch.as_tensor(value, device=device) for key, value in obs.items()}
    return torch.as_tensor(obs, device=device)


def take_rows(obs: Observations, rows: np.ndarray) -> Observations:
    """The observations of some envs of a batch (an array or a dict of arrays)."""
    if isinstance(obs, dict):
        return {key: value[rows] for key, value in obs.items()}
    return obs[rows]


def copy_observations(obs: Observations) -> Observations:
    """A copy of an observation batch (an array or a dict of arrays)."""
    if isinstance(obs, dict):
        return {key: np.array(value) for key, value in obs.items()}
    return np.array(obs)
