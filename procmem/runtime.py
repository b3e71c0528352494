"""Seeding, RNG state capture and device selection."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

from procmem.settings import SettingError


class NonFiniteError(FloatingPointError):
    """Training produced a NaN or an inf."""


class NonFiniteLossError(NonFiniteError):
    """A loss became NaN or infinite; raised before any parameter is updated with it, so the
    state in memory is still good."""


class NonFiniteParametersError(NonFiniteError):
    """An optimizer step made parameters NaN or infinite (a learning rate far too high):
    the state in memory is bad, so only an earlier checkpoint holds a good one."""


def check_finite(name: str, loss: torch.Tensor) -> None:
    """Raise :class:`NonFiniteLossError` naming ``name`` if ``loss`` holds a NaN or an inf."""
    if not bool(torch.isfinite(loss.detach()).all()):
        shown = f"{loss.item()}" if loss.numel() == 1 else "not finite"
        raise NonFiniteLossError(f"{name} is {shown}")


def step_checked(optimizer: torch.optim.Optimizer, name: str) -> None:
    """``optimizer.step()``, then raise :class:`NonFiniteParametersError` naming ``name`` if
    it left a parameter NaN or infinite."""
    optimizer.step()
    parameters = [p for group in optimizer.param_groups for p in group["params"]]
    largest = torch.nn.utils.get_total_norm(parameters, norm_type=float("inf"))
    if not bool(torch.isfinite(largest)):
        raise NonFiniteParametersError(
            f"the {name} step made parameters nan or inf (is the learning rate too high?)")


def set_decayed_lr(optimizer: torch.optim.Optimizer, lr: float, update: int,
                   decay_updates: int) -> float:
    """Set every group of ``optimizer`` to ``lr`` decayed linearly to 0 over
    ``decay_updates`` updates (0: constant), at ``update`` (counted from 1); return it."""
    if decay_updates:
        lr *= max(0.0, 1.0 - (update - 1) / decay_updates)
    for group in optimizer.param_groups:
        group["lr"] = lr
    return lr


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (CPU and every CUDA device) from one integer."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """The global RNG states, for a checkpoint."""
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def resolve_device(device: str) -> torch.device:
    """``auto`` picks CUDA when present, else CPU; asking for CUDA without one is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise SettingError("device", "cuda was asked for, but torch sees no CUDA device on "
                                     "this machine: use device=cpu, or device=auto")
    return torch.device(device)


def set_threads(threads: int) -> None:
    """Torch's CPU threads; 0 keeps torch's default. Small models run fastest on one."""
    if threads > 0:
        torch.set_num_threads(threads)
