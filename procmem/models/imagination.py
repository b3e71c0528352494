"""Imagination for I2A: rollouts of an environment model and their encoding.

:func:`imagine` starts one rollout per action from each real frame: the first imagined
step takes that action, later steps take the rollout policy's greedy action on the
imagined frame. :class:`RolloutEncoder` reads each rollout's imagined frames and rewards
with a convolutional encoder and an LSTM, last step first (the paper's order, so the
code ends on the step nearest the present). :class:`CopyModel` is the baseline model that
imagines nothing: it returns its input frame and no events. Rollouts often coincide, so the
rollout policy reads each distinct imagined frame once and the encoder reads each distinct
rollout once, each of its distinct frames through the body once
(:mod:`procmem.models.distinct`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from procmem.envs.minipacman import EVENTS
from procmem.models.distinct import per_distinct_row
from procmem.models.networks import flat_size, pixel_body


class CopyModel(nn.Module):
    """An environment model that predicts the input frame again and no events (the I2A
    paper's "copy model" baseline); same :meth:`predict` as
    :class:`~procmem.models.env_model.EnvModel`, no parameters."""

    def __init__(self, num_actions: int) -> None:
        super().__init__()
        self.num_actions = num_actions

    @torch.no_grad()
    def predict(self, frames: Tensor, actions: Tensor) -> tuple[Tensor, Tensor]:
        """The input frames, unchanged, and zero event counts ``[B, 5]``."""
        return frames.clone(), frames.new_zeros(len(frames), len(EVENTS))


class RolloutPolicy(nn.Module):
    """The small policy that picks actions inside imagination (distilled from the agent's
    policy): :func:`pixel_body` then a linear layer to action logits."""

    def __init__(self, frame_shape: tuple[int, ...], num_actions: int, channels: int) -> None:
        super().__init__()
        self.body = pixel_body(frame_shape[0], channels)
        self.logits = nn.Linear(flat_size(self.body, frame_shape), num_actions)

    def forward(self, frames: Tensor) -> Tensor:
        return self.logits(self.body(frames))


@torch.no_grad()
def imagine(model: nn.Module, rollout_policy: nn.Module, frames: Tensor, depth: int,
            reward_vector: Tensor) -> tuple[Tensor, Tensor]:
    """One imagined rollout per action from each frame ``[B, 3, H, W]``, ``depth`` steps.

    Rollout ``a`` takes action ``a`` first, then the rollout policy's most likely action
    on each imagined frame (read once per distinct frame). ``model.predict(frames,
    actions)`` gives the next frames and event counts; a step's reward is ``events @
    reward_vector``. Returns the imagined frames ``[depth, B, A, 3, H, W]`` and rewards
    ``[depth, B, A]``, in time order (step 0 is the frame the first action leads to)."""
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    batch, num_actions = len(frames), model.num_actions
    frame = frames.repeat_interleave(num_actions, dim=0)
    action = torch.arange(num_actions, device=frames.device).repeat(batch)
    imagined, rewards = [], []
    for step in range(depth):
        frame, events = model.predict(frame, action)
        imagined.append(frame)
        rewards.append(events @ reward_vector.to(events))
        if step + 1 < depth:
            action = per_distinct_row(rollout_policy, frame, frame).argmax(1)
    shape = (depth, batch, num_actions)
    return torch.stack(imagined).view(*shape, *frames.shape[1:]), torch.stack(rewards).view(shape)


class RolloutEncoder(nn.Module):
    """Encodes imagined rollouts ``frames [T, N, 3, H, W]``, ``rewards [T, N]`` into codes
    ``[N, hidden]``: each frame through :func:`pixel_body`, its reward appended, then an
    LSTM over the steps in reverse order (``T-1`` down to 0); the code is its last output."""

    def __init__(self, frame_shape: tuple[int, ...], channels: int, hidden: int) -> None:
        super().__init__()
        self.body = pixel_body(frame_shape[0], channels)
        self.lstm = nn.LSTM(flat_size(self.body, frame_shape) + 1, hidden)
        self.hidden = hidden

    def forward(self, frames: Tensor, rewards: Tensor) -> Tensor:
        """The codes of the rollouts, each distinct rollout (frames and rewards) encoded
        once and each distinct frame of those read by the body once
        (:func:`~procmem.models.distinct.per_distinct_row`)."""
        keys = torch.cat([frames.transpose(0, 1).flatten(1), rewards.T], dim=1)
        return per_distinct_row(self._encode_distinct_frames, keys, frames, rewards, dim=1)

    def forward_each(self, frames: Tensor, rewards: Tensor) -> Tensor:
        """:meth:`forward`, computed for every rollout and frame (equal ones included)."""
        return self._encode(self.body(frames.flatten(0, 1)), rewards)

    def _encode_distinct_frames(self, frames: Tensor, rewards: Tensor) -> Tensor:
        flat = frames.flatten(0, 1)
        return self._encode(per_distinct_row(self.body, flat, flat), rewards)

    def _encode(self, features: Tensor, rewards: Tensor) -> Tensor:
        """The LSTM over the body's features of the frames ``[T * N, F]`` (step-major) and
        the rewards ``[T, N]``, last step first; its last output ``[N, hidden]``."""
        steps, rows = rewards.shape
        inputs = torch.cat([features.view(steps, rows, -1), rewards.unsqueeze(-1)], dim=-1)
        outputs, _ = self.lstm(inputs.flip(0))
        return outputs[-1]
