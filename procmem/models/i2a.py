"""The I2A network (Weber et al. 2017): a model-free path and an imagination path.

:class:`I2APolicy` is an actor-critic network with two paths. The model-free path reads the
real frame (:func:`~procmem.models.networks.pixel_body`). The imagination path rolls an
environment model out once per action, ``depth`` steps each (the first step takes that
action, later ones the rollout policy's), encodes every rollout with a
:class:`~procmem.models.imagination.RolloutEncoder` (LSTM over the imagined frames and
rewards, last step first) and concatenates the codes. Both paths feed one ReLU layer and
the policy and value heads.

``imagination`` picks the agent and its baselines (:data:`IMAGINATION`):

- ``learned``: the trained env model imagines: the pixel model
  (:class:`~procmem.models.env_model.EnvModel`) in frames, the state-space model
  (:class:`~procmem.models.state_space_model.StateSpaceModel`) in its latent space, where
  the rollout policy and the encoder read its states and no frame is decoded;
- ``copy``: a :class:`~procmem.models.imagination.CopyModel` returns the input frame and no
  reward, so the imagination path has the same parameters and inputs but no foresight;
- ``none``: the standard model-free agent; its hidden layer is widened so it trains as many
  parameters as the I2A network with the pixel model (rollout policy and env model aside).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from procmem.models.env_model import EnvModel
from procmem.models.imagination import (
    CopyModel,
    LatentRolloutEncoder,
    LatentRolloutPolicy,
    RolloutEncoder,
    RolloutPolicy,
    imagine,
    imagine_latent,
)
from procmem.models.networks import flat_size, pixel_body
from procmem.models.state_space_model import StateSpaceModel

IMAGINATION = ("learned", "copy", "none")


def standard_hidden(trained: int, body: int, features: int, num_actions: int) -> int:
    """The hidden width that gives a model-free network (a body of ``body`` parameters,
    ``features`` features, one hidden layer, policy and value heads) ``trained``
    parameters, or as near as a whole width gets."""
    per_unit = features + 1 + num_actions + 1  # hidden layer in and heads out
    return max(1, round((trained - body - (num_actions + 1)) / per_unit))


class I2APolicy(nn.Module):
    """The I2A actor-critic network (see the module docstring); ``forward(obs, state)`` as
    every network in :mod:`procmem.models.networks` (no recurrent state: ``[B, 0]``). Its
    arguments are the settings of :class:`~procmem.algorithms.i2a.I2A`, which builds it for
    an env with image observations and event rewards (MiniPacman).

    ``env_model`` is used when ``imagination="learned"``; ``reward_vector`` ``[5]`` turns
    imagined events into rewards. Parameter groups: :meth:`agent_parameters` (trained by
    A2C), ``rollout_policy`` (distilled) and ``model`` (the env model, frozen or
    fine-tuned; none for ``copy`` and ``none``).
    """

    def __init__(
        self,
        env: Any,
        imagination: str,
        env_model: EnvModel | StateSpaceModel | None,
        depth: int,
        channels: int,
        hidden: int,
        code_size: int,
    ) -> None:
        super().__init__()
        if imagination == "learned" and env_model is None:
            raise ValueError("imagination='learned' needs an env model")
        frame_shape, num_actions = tuple(env.obs_shape), int(env.num_actions)
        self.imagination, self.depth = imagination, depth
        self.body = pixel_body(frame_shape[0], channels)
        features = flat_size(self.body, frame_shape)
        self.latent = imagination == "learned" and isinstance(env_model, StateSpaceModel)
        if imagination == "none":
            self.model = self.rollout_policy = self.encoder = None
            body = sum(p.numel() for p in self.body.parameters())
            hidden = standard_hidden(self._i2a_trained_parameters(
                env, depth, channels, hidden, code_size), body, features, num_actions)
        else:
            self.model = env_model if imagination == "learned" else CopyModel(num_actions)
            if self.latent:
                self.rollout_policy = LatentRolloutPolicy(env_model.latent_size, num_actions,
                                                          code_size)
                self.encoder = LatentRolloutEncoder(env_model.latent_size, code_size)
            else:
                self.rollout_policy = RolloutPolicy(frame_shape, num_actions, channels)
                self.encoder = RolloutEncoder(frame_shape, channels, code_size)
            features += num_actions * code_size
        self.register_buffer("reward_vector",
                             torch.as_tensor(env.reward_vector, dtype=torch.float32))
        self.fc = nn.Sequential(nn.Linear(features, hidden), nn.ReLU())
        self.policy = nn.Linear(hidden, num_actions)
        self.value = nn.Linear(hidden, 1)

    @staticmethod
    def _i2a_trained_parameters(env: Any, depth: int, channels: int, hidden: int,
                                code_size: int) -> int:
        """How many parameters A2C trains in the I2A network of these settings."""
        net = I2APolicy(env, "copy", None, depth, channels, hidden, code_size)
        return sum(p.numel() for p in net.agent_parameters())

    def agent_parameters(self) -> list[nn.Parameter]:
        """The parameters A2C trains: everything but the rollout policy and the env model."""
        own = [self.body, self.fc, self.policy, self.value]
        if self.encoder is not None:
            own.append(self.encoder)
        return [p for module in own for p in module.parameters()]

    def initial_state(self, batch: int) -> Tensor:
        return torch.zeros(batch, 0, device=self.policy.weight.device)

    def imagine(self, frames: Tensor) -> tuple[Tensor, Tensor]:
        """The imagined rollouts of ``frames``: frames ``[depth, B, A, 3, H, W]`` (latent
        states ``[depth, B, A, latent_size]`` with a state-space model) and rewards ``[depth,
        B, A]`` (see :func:`~procmem.models.imagination.imagine` and
        :func:`~procmem.models.imagination.imagine_latent`)."""
        rollouts = imagine_latent if self.latent else imagine
        return rollouts(self.model, self.rollout_policy, frames, self.depth, self.reward_vector)

    def rollout_policy_logits(self, frames: Tensor) -> Tensor:
        """The rollout policy's action logits on real frames ``[B, 3, H, W]`` (what
        distillation trains): on the frames, or on their latent states."""
        if self.latent:
            with torch.no_grad():
                frames = self.model.encode(frames)
        return self.rollout_policy(frames)

    def forward(self, obs: Tensor, state: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        frames = obs.float()
        features = self.body(frames)
        if self.encoder is not None:
            imagined, rewards = self.imagine(frames)
            codes = self.encoder(imagined.flatten(1, 2), rewards.flatten(1, 2))
            features = torch.cat([features, codes.view(len(frames), -1)], dim=1)
        hidden = self.fc(features)
        return self.policy(hidden), self.value(hidden).squeeze(1), state
