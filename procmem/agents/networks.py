"""Actor-critic networks. Each is built from the env it acts in: ``network(env)``.

A network maps a batch of observations and its recurrent state to action logits, state
values and the next state: ``forward(obs, state) -> (logits [B, A], values [B], state)``;
``initial_state(batch)`` gives the state of a fresh batch (``None`` for feed-forward nets).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

Observations = np.ndarray | dict[str, np.ndarray]


def as_tensors(obs: Observations, device: torch.device) -> Tensor | dict[str, Tensor]:
    """An env's observation batch (an array or a dict of arrays) as tensors on ``device``."""
    if isinstance(obs, dict):
        return {key: torch.as_tensor(value, device=device) for key, value in obs.items()}
    return torch.as_tensor(obs, device=device)


def copy_observations(obs: Observations) -> Observations:
    """A copy of an observation batch (an array or a dict of arrays)."""
    if isinstance(obs, dict):
        return {key: np.array(value) for key, value in obs.items()}
    return np.array(obs)


class ToolGRUPolicy(nn.Module):
    """The original tool-use architecture: a GRU decoding tool tokens.

    The context tokens (the problem's operands) are embedded and mean-pooled, with the
    stage embedding, into the GRU's state at the first step of each episode; each step's
    input is the embedding of the previous tool token plus the stage embedding; linear
    policy and value heads read the GRU's output.
    """

    def __init__(self, env: Any, hidden: int = 96) -> None:
        super().__init__()
        self.token = nn.Embedding(env.vocab_size, hidden)
        self.stage = nn.Embedding(env.num_stages, hidden)
        self.context = nn.Linear(hidden, hidden)
        self.cell = nn.GRUCell(hidden, hidden)
        self.policy = nn.Linear(hidden, env.num_actions)
        self.value = nn.Linear(hidden, 1)
        self.hidden = hidden
        self.pad_token = env.pad_token

    def initial_state(self, batch: int) -> Tensor:
        return torch.zeros(batch, self.hidden, device=self.policy.weight.device)

    def encode_context(self, context: Tensor, stage: Tensor) -> Tensor:
        """Mean of the embedded context tokens (padding left out), with the stage."""
        keep = (context != self.pad_token).unsqueeze(-1).float()
        pooled = (self.token(context) * keep).sum(1) / keep.sum(1).clamp(min=1.0)
        return torch.tanh(self.context(pooled) + self.stage(stage))

    def forward(self, obs: dict[str, Tensor], state: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        start = (obs["step"] == 0).unsqueeze(1)
        state = torch.where(start, self.encode_context(obs["context"], obs["stage"]), state)
        state = self.cell(self.token(obs["prev_token"]) + self.stage(obs["stage"]), state)
        return self.policy(state), self.value(state).squeeze(1), state
