"""Imagination for I2A: rollouts of an environment model and their encoding.

:func:`imagine` starts one rollout per action from each real frame: the first imagined
step takes that action, later steps take the rollout policy's greedy action on the
imagined frame. :class:`RolloutEncoder` reads each rollout's imagined frames and rewards
with a convolutional encoder and an LSTM, last step first (the paper's order, so the
code ends on the step nearest the present). :class:`CopyModel` is the baseline model that
imagines nothing: it returns its input frame and no events. Rollouts often coincide, so the
rollout policy reads each distinct imagined frame once, the encoder's body each distinct
frame once and its LSTM each distinct rollout once (:mod:`procmem.models.distinct`).

With a :class:`~procmem.models.state_space_model.StateSpaceModel` the rollouts stay in its
latent space (:func:`imagine_latent`): the rollout policy (:class:`LatentRolloutPolicy`) and
the encoder (:class:`LatentRolloutEncoder`) read the latent states, and no frame is
decoded."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from procmem.envs.minipacman import EVENTS
from procmem.models.distinct import distinct_rows, per_distinct_row
from procmem.models.networks import flat_size, pixel_body
from procmem.models.state_space_model import StateSpaceModel


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

    @torch.no_grad()
    def open_loop_frames(self, frames: Tensor, actions: Tensor) -> Tensor:
        """The input frames once per action of ``actions`` ``[B, T]``: ``[T, B, 3, H, W]``."""
        return frames[None].repeat(actions.shape[1], 1, 1, 1, 1)


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


@torch.no_grad()
def imagine_latent(model: StateSpaceModel, rollout_policy: nn.Module, frames: Tensor,
                   depth: int, reward_vector: Tensor) -> tuple[Tensor, Tensor]:
    """One imagined rollout per action from each frame ``[B, 3, H, W]``, ``depth`` steps of
    the state-space model's latent transition, no frame decoded.

    Rollout ``a`` takes action ``a`` first, then the rollout policy's most likely action on
    each imagined state; a step's reward is its most likely event counts ``@
    reward_vector``. Returns the states ``[depth, B, A, latent_size]`` and rewards
    ``[depth, B, A]``, in time order, as :func:`imagine` returns frames."""
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    batch, num_actions = len(frames), model.num_actions
    states = [model.encode(frames).repeat_interleave(num_actions, dim=0)]
    action = torch.arange(num_actions, device=frames.device).repeat(batch)
    for step in range(depth):
        states.append(model.transition(states[-1], action))
        if step + 1 < depth:
            action = rollout_policy(states[-1]).argmax(1)
    states = torch.stack(states)
    events = model.events(states[:-1], states[1:]).argmax(-1).to(states.dtype)
    shape = (depth, batch, num_actions)
    return states[1:].view(*shape, -1), (events @ reward_vector.to(states)).view(shape)


class LatentRolloutPolicy(nn.Module):
    """The rollout policy of imagination in a latent space: a ReLU layer of ``hidden`` units
    on the state and a linear layer to action logits."""

    def __init__(self, latent_size: int, num_actions: int, hidden: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(latent_size, hidden), nn.ReLU(),
                                    nn.Linear(hidden, num_actions))

    def forward(self, states: Tensor) -> Tensor:
        return self.layers(states)


class LatentRolloutEncoder(nn.Module):
    """Encodes imagined latent rollouts ``states [T, N, latent_size]``, ``rewards [T, N]``
    into codes ``[N, hidden]``: each state with its reward appended, an LSTM over the steps
    in reverse order, the code its last output (:class:`RolloutEncoder` without the frame
    body: the states are already features)."""

    def __init__(self, latent_size: int, hidden: int) -> None:
        super().__init__()
        self.lstm = nn.LSTM(latent_size + 1, hidden)

    def forward(self, states: Tensor, rewards: Tensor) -> Tensor:
        return last_step_first(self.lstm, states, rewards)


def last_step_first(lstm: nn.LSTM, features: Tensor, rewards: Tensor) -> Tensor:
    """The last output ``[N, hidden]`` of ``lstm`` run over the steps of imagined rollouts,
    ``T-1`` down to 0: each step's features ``[T, N, F]`` with its reward ``[T, N]``
    appended."""
    inputs = torch.cat([features, rewards.unsqueeze(-1)], dim=-1)
    outputs, _ = lstm(inputs.flip(0))
    return outputs[-1]


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
        """The codes of the rollouts, as :meth:`forward_each` computes them, with less work:
        the body and the LSTM's input weights read each distinct frame once, and the LSTM
        runs once per distinct rollout (the same frames and rewards;
        :mod:`~procmem.models.distinct`), its steps written out so that it starts from
        those per-frame input terms."""
        steps, rows = rewards.shape
        flat = frames.flatten(0, 1)
        groups = distinct_rows(flat)
        if groups is None:
            frame_ids = torch.arange(len(flat), device=flat.device)
        else:
            first, frame_ids = groups
            flat = flat.index_select(0, first)
        frame_ids = frame_ids.view(steps, rows)
        from_frames = F.linear(self.body(flat), self.lstm.weight_ih_l0[:, :-1])  # [K, 4H]

        def encode(ids: Tensor, rewards: Tensor) -> Tensor:
            return self._recur(from_frames[ids], rewards)

        keys = torch.cat([frame_ids.T.to(rewards.dtype), rewards.T], dim=1)
        return per_distinct_row(encode, keys, frame_ids, rewards, dim=1)

    def forward_each(self, frames: Tensor, rewards: Tensor) -> Tensor:
        """The codes of the rollouts by the layers as written: the body on every frame,
        the ``nn.LSTM`` on every rollout."""
        steps, rows = rewards.shape
        features = self.body(frames.flatten(0, 1)).view(steps, rows, -1)
        return last_step_first(self.lstm, features, rewards)

    def _recur(self, from_frames: Tensor, rewards: Tensor) -> Tensor:
        """The LSTM's last output ``[N, hidden]`` over steps ``T-1`` down to 0, given the
        input weights' terms of the frames ``[T, N, 4 hidden]`` and the rewards ``[T, N]``
        (the input's last feature); gates in ``nn.LSTM``'s order: input, forget, cell,
        output."""
        lstm = self.lstm
        inputs = torch.addcmul(from_frames + (lstm.bias_ih_l0 + lstm.bias_hh_l0),
                               rewards.unsqueeze(-1), lstm.weight_ih_l0[:, -1])
        hidden = cell = inputs.new_zeros(inputs.shape[1], self.hidden)
        for step in reversed(range(len(inputs))):
            gates = torch.addmm(inputs[step], hidden, lstm.weight_hh_l0.T)
            entry, forget, candidate, exit_ = gates.chunk(4, dim=1)
            cell = forget.sigmoid() * cell + entry.sigmoid() * candidate.tanh()
            hidden = exit_.sigmoid() * cell.tanh()
        return hidden
