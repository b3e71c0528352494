"""A state-space environment model for MiniPacman: imagination in a learned latent space.

:class:`StateSpaceModel` is the deterministic state-space model of Buesing et al. 2018
("Learning and Querying Fast Generative Models for Reinforcement Learning", their dSSM-DET):
an encoder turns a frame into a latent state vector, an action-conditioned transition steps
that state, an event head predicts each step's event counts from the states before and
after it (rewards are ``events @ reward_vector``, so one model serves every reward mode, as
with the pixel model), and a decoder turns a state into logits of the 7 pixel classes
(:mod:`procmem.models.pixel_classes`) only when asked. A rollout of ``depth`` steps is one
encoder pass and ``depth`` small matrix products, where the pixel model
(:class:`~procmem.models.env_model.EnvModel`) runs its convolutional trunk on every
imagined frame.

It trains on sequences: from a real first frame it rolls out open loop through the
sequence's actions and is scored by the decoder's and the event head's loss at every step
(:meth:`StateSpaceModel.loss`), so that its own rollouts stay accurate; the trainer is
:class:`~procmem.algorithms.env_model_training.EnvModelTrainer` with ``model=ssm``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from procmem.envs.minipacman import EVENTS
from procmem.models.env_model_loss import prediction_loss
from procmem.models.networks import flat_size, pixel_body
from procmem.models.pixel_classes import PIXEL_CLASSES, class_frames, class_planes

FRAME_PLANES = 3 + len(PIXEL_CLASSES)  # RGB and the one-hot pixel classes


class StateSpaceModel(nn.Module):
    """A deterministic state-space model of MiniPacman (see the module docstring).

    - Encoder: the frame's RGB and one-hot pixel-class planes through
      :func:`~procmem.models.networks.pixel_body` (``channels``) and a linear layer to the
      state, ``latent_size`` numbers.
    - Transition: ``s' = s + W_out relu(W_in s + E[a])``, a residual step with a learned
      embedding ``E`` of the action (``2 * latent_size`` hidden units).
    - Event head: a ``latent_size``-unit ReLU layer on ``[s, s']`` and, per event, logits
      over its count ``0..max_count`` on the step.
    - Decoder: a linear map of the state to ``channels`` planes of the frame's size, added
      to a 1x1 convolution of the rollout's first frame (the frame the state was encoded
      from: the maze and the food not yet eaten need not be carried in the state), a 3x3
      convolution (ReLU) and a 1x1 convolution to the 7 class logits of each pixel.

    ``event_coef`` weighs the event loss next to the pixel loss in :meth:`loss`.
    """

    def __init__(
        self,
        num_actions: int,
        frame_shape: tuple[int, int, int],
        latent_size: int,
        channels: int,
        event_coef: float,
        max_count: int = 1,
    ) -> None:
        super().__init__()
        self.settings = {"num_actions": num_actions, "frame_shape": tuple(frame_shape),
                         "latent_size": latent_size, "channels": channels,
                         "event_coef": event_coef, "max_count": max_count}
        self.num_actions, self.latent_size = num_actions, latent_size
        self.num_events, self.num_counts = len(EVENTS), max_count + 1
        self.event_coef = event_coef
        _, height, width = frame_shape
        self.frame_size = (height, width)
        body = pixel_body(FRAME_PLANES, channels)
        self.encoder = nn.Sequential(
            body, nn.Linear(flat_size(body, (FRAME_PLANES, height, width)), latent_size))
        self.transition_in = nn.Linear(latent_size, 2 * latent_size)
        self.action_in = nn.Embedding(num_actions, 2 * latent_size)
        self.transition_out = nn.Linear(2 * latent_size, latent_size)
        self.event_head = nn.Sequential(
            nn.Linear(2 * latent_size, latent_size), nn.ReLU(),
            nn.Linear(latent_size, self.num_events * self.num_counts))
        self.decode_state = nn.Linear(latent_size, channels * height * width)
        self.decode_frame = nn.Conv2d(FRAME_PLANES, channels, 1)
        self.decode_mix = nn.Conv2d(channels, channels, 3, padding=1)
        self.decode_classes = nn.Conv2d(channels, len(PIXEL_CLASSES), 1)

    # --- the parts ----------------------------------------------------------------------------

    def encode(self, frames: Tensor) -> Tensor:
        """The states ``[B, latent_size]`` of frames ``[B, 3, H, W]``."""
        return self.encoder(_planes(frames))

    def transition(self, states: Tensor, actions: Tensor) -> Tensor:
        """The next states ``[B, latent_size]`` after ``actions`` ``[B]``."""
        by_action = self.action_in.weight + self.transition_in.bias  # [A, 2 * latent_size]
        hidden = torch.addmm(by_action[actions.long()], states, self.transition_in.weight.T)
        return torch.addmm(states + self.transition_out.bias, hidden.relu_(),
                           self.transition_out.weight.T)

    def events(self, states: Tensor, next_states: Tensor) -> Tensor:
        """The event logits ``[..., 5, max_count + 1]`` of steps from ``states`` to
        ``next_states`` (``[..., latent_size]`` each)."""
        logits = self.event_head(torch.cat([states, next_states], dim=-1))
        return logits.view(*states.shape[:-1], self.num_events, self.num_counts)

    def step(self, states: Tensor, actions: Tensor) -> tuple[Tensor, Tensor]:
        """The next states ``[B, latent_size]`` after ``actions`` ``[B]`` and the step's event
        logits ``[B, 5, max_count + 1]``."""
        next_states = self.transition(states, actions)
        return next_states, self.events(states, next_states)

    def decode(self, states: Tensor, first_frames: Tensor) -> Tensor:
        """Pixel-class logits ``[..., B, 7, H, W]`` of states ``[..., B, latent_size]`` (any
        leading dims, e.g. steps) of rollouts that started from ``first_frames`` ``[B, 3,
        H, W]``."""
        lead = states.shape[:-1]
        planes = self.decode_state(states).view(*lead, -1, *self.frame_size)
        x = F.relu(planes + self.decode_frame(_planes(first_frames)))
        pixels = self.decode_classes(F.relu(self.decode_mix(x.flatten(0, -4))))
        return pixels.view(*lead, *pixels.shape[1:])

    def unroll(self, frames: Tensor, actions: Tensor) -> tuple[Tensor, Tensor]:
        """The latent rollout from frames ``[B, 3, H, W]`` through actions ``[B, T]``: the
        states after each step ``[T, B, latent_size]`` and each step's event logits
        ``[T, B, 5, max_count + 1]``."""
        states = [self.encode(frames)]
        for t in range(actions.shape[1]):
            states.append(self.transition(states[-1], actions[:, t]))
        states = torch.stack(states)
        return states[1:], self.events(states[:-1], states[1:])

    def forward(self, frames: Tensor, actions: Tensor) -> tuple[Tensor, Tensor]:
        """Pixel-class logits ``[T, B, 7, H, W]`` and event logits ``[T, B, 5, max_count +
        1]`` of the open-loop rollout from ``frames`` ``[B, 3, H, W]`` through ``actions``
        ``[B, T]``."""
        states, events = self.unroll(frames, actions)
        return self.decode(states, frames), events

    # --- predictions --------------------------------------------------------------------------

    @torch.no_grad()
    def open_loop_frames(self, frames: Tensor, actions: Tensor) -> Tensor:
        """The most likely frames ``[T, B, 3, H, W]`` of the open-loop rollout from ``frames``
        through ``actions`` ``[B, T]`` (edible ghosts with green 1): the decoder run on the
        latent rollout's states."""
        pixels, _ = self(frames, actions)
        return class_frames(pixels.flatten(0, 1).argmax(1)).view(
            *pixels.shape[:2], *frames.shape[1:])

    # --- training -----------------------------------------------------------------------------

    def loss(
        self,
        frames: Tensor,
        actions: Tensor,
        next_frames: Tensor,
        events: Tensor,
        mask: Tensor | None = None,
        reward_vector: Tensor | None = None,
    ) -> tuple[Tensor, dict[str, float]]:
        """:func:`~procmem.models.env_model_loss.prediction_loss` of the open-loop rollout
        from ``frames`` ``[B, 3, H, W]`` through ``actions`` ``[B, T]``, against
        ``next_frames`` ``[B, T, 3, H, W]`` and ``events`` ``[B, T, 5]``, averaged over
        every step of every rollout. ``mask`` ``[B, T]`` (default: all true) marks the
        transitions that are real; a step counts while every step up to it is. One-step
        transitions (``actions`` ``[B]``, ``next_frames`` ``[B, 3, H, W]``, ``events``
        ``[B, 5]``, ``mask`` ``[B]``) are rollouts of one step: the same call as
        :meth:`EnvModel.loss <procmem.models.env_model.EnvModel.loss>`."""
        if actions.dim() == 1:
            actions, next_frames, events = actions[:, None], next_frames[:, None], events[:, None]
            mask = None if mask is None else mask[:, None]
        if mask is None:
            mask = torch.ones(actions.shape, dtype=torch.bool, device=actions.device)
        kept = torch.cumprod(mask.to(torch.int64), dim=1).bool().T  # [T, B]
        if not kept.any():
            return sum(p.sum() for p in self.parameters()) * 0.0, {}
        pixels, event_logits = self(frames, actions)
        return prediction_loss(pixels[kept], event_logits[kept],
                               next_frames.transpose(0, 1)[kept], events.transpose(0, 1)[kept],
                               self.event_coef, reward_vector)


def _planes(frames: Tensor) -> Tensor:
    """The RGB frames ``[B, 3, H, W]`` with their one-hot pixel-class planes, ``[B, 10, H,
    W]``."""
    return torch.cat([frames, class_planes(frames)], dim=1)
