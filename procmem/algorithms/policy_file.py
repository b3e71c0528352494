"""The policy file (``policy.pt``) an actor-critic run leaves for later runs: its network,
named by import path with its settings, and its weights, all plain data."""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from procmem.imports import import_object
from procmem.io import atomic_torch_save
from procmem.safe_load import load_data_file


def save_policy(network: functools.partial, net: nn.Module, path: str | os.PathLike) -> Path:
    """Write ``net`` (built by ``network(env)``, a partial of a network class or function
    with its settings) to ``path``, atomically."""
    name = f"{network.func.__module__}.{network.func.__qualname__}"
    return atomic_torch_save({"network": name, "settings": dict(network.keywords),
                              "weights": net.state_dict()}, path)


def load_policy(path: str | os.PathLike, env: Any, device: torch.device) -> nn.Module:
    """The network :func:`save_policy` wrote to ``path``, built for ``env`` on ``device`` in
    eval mode. The file is loaded as data only, and the network it names must be one (it
    has the networks' ``check_env`` hook): a file cannot have another callable called."""
    saved = load_data_file(path)
    network = import_object(saved["network"])
    if not callable(getattr(network, "check_env", None)):
        raise ValueError(f"{path}: names {saved['network']}, which is not a network")
    net = network(env, **saved["settings"])
    net.load_state_dict(saved["weights"])
    return net.to(device).eval()
