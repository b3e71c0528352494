"""An environment model for MiniPacman: predicts the next frame and the step's events.

:class:`EnvModel` reads a frame and an action and outputs per-pixel logits of the next
frame's pixel classes (:mod:`procmem.models.pixel_classes`) and, per event of
:data:`~procmem.envs.minipacman.EVENTS`, logits over the counts ``0..max_count`` of that
event on the step. Rewards come from predicted events (``events @ reward_vector``), so one
model serves every reward mode. Its loss and accuracy are in
:mod:`procmem.models.env_model_loss`, its file in :mod:`procmem.models.env_model_file`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from procmem.envs.minipacman import EVENTS
from procmem.models.distinct import per_distinct_row
from procmem.models.env_model_loss import prediction_loss
from procmem.models.fused_kernels import conv_nhwc, first_argmax, spatial_max, tap_sums
from procmem.models.pixel_classes import (
    PACMAN,
    PIXEL_CLASSES,
    class_frames,
    class_planes,
    frame_classes,
)
from procmem.models.row_memory import RowMemory, weights_version


class PoolAndInject(nn.Module):
    """A pool-and-inject block on ``channels`` feature planes, keeping the size.

    The block input ``x`` is max-pooled over the whole grid and the pooled vector is tiled
    back over it and concatenated (``2C`` planes); two branches read that, a 3x3 and a 5x5
    convolution to ``C`` planes each (ReLU); their outputs are concatenated with ``x``
    (``3C`` planes) and a 1x1 convolution (ReLU) maps them back to ``C`` planes.

    :meth:`forward` computes this on channels-last features ``[B, H, W, C]`` without building
    the tiled planes: each branch convolves ``x`` with its first ``C`` input channels and
    adds the pooled vector times :func:`tap_sums` of the rest; the 1x1 convolution is a
    matrix product. :meth:`forward_unfused` is the block written as the layers above, on
    ``[B, C, H, W]``.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.small = nn.Conv2d(2 * channels, channels, 3, padding=1)
        self.large = nn.Conv2d(2 * channels, channels, 5, padding=2)
        self.mix = nn.Conv2d(3 * channels, channels, 1)
        self._frozen_sums: dict[nn.Conv2d, tuple[tuple, Tensor]] = {}  # per branch

    def forward(self, x: Tensor) -> Tensor:
        pooled = spatial_max(x)
        channels = x.shape[-1]
        mix = self.mix.weight.flatten(1)  # [C, 3C]: small, large, x
        out = F.linear(x, mix[:, 2 * channels:], self.mix.bias).flatten(0, 2)
        for part, conv in enumerate((self.small, self.large)):
            branch = self._branch(conv, x, pooled).relu_()
            out.addmm_(branch.flatten(0, 2), mix[:, part * channels:(part + 1) * channels].T)
        return out.relu_().view(x.shape)

    def _branch(self, conv: nn.Conv2d, x: Tensor, pooled: Tensor) -> Tensor:
        """``conv`` of ``[x, pooled tiled]``, channels-last."""
        batch, height, width, channels = x.shape
        padding = conv.padding[0]
        on_x = conv_nhwc(x, conv.weight[:, :channels], conv.bias, padding)
        on_x.view(batch, -1).addmm_(pooled, self._tap_sums(conv, height, width))
        return on_x

    def _tap_sums(self, conv: nn.Conv2d, height: int, width: int) -> Tensor:
        """:func:`tap_sums` of ``conv``'s pooled-plane weights, ``[C, H * W * O]``; kept
        while the weights are frozen and unchanged
        (:func:`~procmem.models.row_memory.weights_version`)."""
        weight, padding = conv.weight, conv.padding[0]
        channels = weight.shape[1] // 2
        if weight.requires_grad and torch.is_grad_enabled():
            return tap_sums(weight[:, channels:], height, width, padding).flatten(1)
        key = (weights_version(conv), height, width)
        kept = self._frozen_sums.get(conv)
        if kept is None or kept[0] != key:
            sums = tap_sums(weight[:, channels:].detach(), height, width, padding).flatten(1)
            kept = self._frozen_sums[conv] = (key, sums)
        return kept[1]

    def forward_unfused(self, x: Tensor) -> Tensor:
        """The block as the layers of the class docstring on ``[B, C, H, W]``: the reference
        implementation :meth:`forward` is held to (see :class:`EnvModel`)."""
        pooled = x.amax(dim=(2, 3), keepdim=True).expand_as(x)
        injected = torch.cat([x, pooled], dim=1)
        branches = [F.relu(self.small(injected)), F.relu(self.large(injected))]
        return F.relu(self.mix(torch.cat([*branches, x], dim=1)))


class EnvModel(nn.Module):
    """Predicts MiniPacman's next frame (as pixel classes) and the step's event counts.

    Input planes: the RGB frame ``[B, 3, 15, 19]`` (its green keeps the pill timer), its
    pixel classes one-hot (7 planes, from :func:`frame_classes`; they make the trunk learn
    several times faster than from RGB alone) and the action's one-hot broadcast as
    ``num_actions`` planes. Trunk: a 1x1 convolution to ``channels`` (ReLU), then ``blocks``
    :class:`PoolAndInject` blocks. Pixel head: a 1x1 convolution to the 7 class logits of
    each pixel of the next frame. Event head: a 3x3 convolution (``channels``, ReLU), its
    global max and mean pools and its features at Pacman's pixel of the input frame (``3C``;
    every event happens where Pacman goes, and rare events such as a pill were never
    predicted from the pools alone), a ``channels``-unit ReLU layer and, for each of the
    5 events, logits over its count ``0..max_count`` on the step (targets above
    ``max_count`` are clamped; each event happens at most once a step, so the default
    ``max_count = 1`` makes every event a binary head). ``event_coef`` weighs the event loss
    next to the pixel loss in :meth:`loss`. The trainer
    (:class:`~procmem.algorithms.env_model_training.EnvModelTrainer`) holds the defaults.

    :meth:`forward` computes these layers channels-last, with the one-hot planes and the
    tiled pooled planes folded into lookups and matrix products, about twice as fast on a
    CPU as :meth:`forward_unfused`, which runs them as written above: the reference
    implementation of the environment model ``shared/specs/minipacman.md`` describes (one-hot
    action planes, pool-and-inject blocks of tiled pooled planes), which the tests hold
    :meth:`forward` to. :meth:`predict` remembers its last distinct predictions in ``memory``
    (a :class:`~procmem.models.row_memory.RowMemory`) until the weights change.
    """

    def __init__(
        self,
        num_actions: int,
        channels: int,
        blocks: int,
        event_coef: float,
        max_count: int = 1,
    ) -> None:
        super().__init__()
        self.settings = {"num_actions": num_actions, "channels": channels, "blocks": blocks,
                         "max_count": max_count, "event_coef": event_coef}
        self.num_actions = num_actions
        self.num_events = len(EVENTS)
        self.num_counts = max_count + 1
        self.event_coef = event_coef
        self.stem = nn.Conv2d(3 + len(PIXEL_CLASSES) + num_actions, channels, 1)
        self.blocks = nn.Sequential(*(PoolAndInject(channels) for _ in range(blocks)))
        self.pixel_head = nn.Conv2d(channels, len(PIXEL_CLASSES), 1)
        self.event_conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.event_head = nn.Sequential(
            nn.Linear(3 * channels, channels), nn.ReLU(),
            nn.Linear(channels, self.num_events * self.num_counts),
        )
        self.memory = RowMemory()

    def forward(self, frames: Tensor, actions: Tensor) -> tuple[Tensor, Tensor]:
        """Logits of the next frame's pixel classes ``[B, 7, H, W]`` and of each event's
        count ``[B, 5, max_count + 1]``, for frames ``[B, 3, H, W]`` and actions ``[B]``.

        Computed channels-last, the one-hot planes and 1x1 convolutions as lookups and
        matrix products; :meth:`forward_unfused` is the same function written as the layers
        of the class docstring."""
        x, events = self.features_and_events(frames, actions)
        pixels = F.linear(x, self.pixel_head.weight.flatten(1), self.pixel_head.bias)
        return pixels.permute(0, 3, 1, 2), events

    def features_and_events(self, frames: Tensor, actions: Tensor) -> tuple[Tensor, Tensor]:
        """:meth:`forward` up to the pixel head: the trunk's channels-last features ``[B, H,
        W, C]`` and the event logits."""
        batch = len(frames)
        classes = frame_classes(frames)
        stem = self.stem.weight.flatten(1)  # [C, 3 + 7 + A]: RGB, class and action planes
        colours, kinds = stem[:, :3], stem[:, 3:3 + len(PIXEL_CLASSES)]
        moves = stem[:, 3 + len(PIXEL_CLASSES):]
        x = F.embedding(classes, kinds.T.contiguous())  # 20x faster than on a view
        x.view(-1, x.shape[-1]).addmm_(frames.permute(0, 2, 3, 1).reshape(-1, 3), colours.T)
        x.add_((moves.T[actions.long()] + self.stem.bias)[:, None, None]).relu_()
        for block in self.blocks:
            x = block(x)
        y = conv_nhwc(x, self.event_conv.weight, self.event_conv.bias, 1).relu_()
        at_pacman = torch.einsum("bhwc,bhw->bc", y, (classes == PACMAN).to(y.dtype))
        pooled = torch.cat([spatial_max(y), y.mean(dim=(1, 2)), at_pacman], dim=1)
        return x, self.event_head(pooled).view(batch, self.num_events, self.num_counts)

    def forward_unfused(self, frames: Tensor, actions: Tensor) -> tuple[Tensor, Tensor]:
        """:meth:`forward` written as the layers of the class docstring: one-hot planes
        concatenated with the frame, convolutions on ``[B, C, H, W]``."""
        batch, _, height, width = frames.shape
        planes = F.one_hot(actions.long(), self.num_actions).to(frames.dtype)
        planes = planes[:, :, None, None].expand(batch, self.num_actions, height, width)
        classes = class_planes(frames)
        x = F.relu(self.stem(torch.cat([frames, classes, planes], dim=1)))
        for block in self.blocks:
            x = block.forward_unfused(x)
        y = F.relu(self.event_conv(x))
        at_pacman = (y * classes[:, PACMAN:PACMAN + 1]).sum(dim=(2, 3))
        pooled = torch.cat([y.amax(dim=(2, 3)), y.mean(dim=(2, 3)), at_pacman], dim=1)
        events = self.event_head(pooled).view(batch, self.num_events, self.num_counts)
        return self.pixel_head(x), events

    @torch.no_grad()
    def predict(self, frames: Tensor, actions: Tensor) -> tuple[Tensor, Tensor]:
        """The most likely next frames, RGB float32 ``[B, 3, H, W]`` (edible ghosts with green
        1), and event counts, float32 ``[B, 5]``: :meth:`predict_each`, not computed again
        for the rows ``memory`` remembers from earlier calls with the same weights, and
        computed once per distinct (frame, action) row of the others
        (:func:`~procmem.models.distinct.per_distinct_row`). The weights' storage and
        version counters (in-place writes: optimizer steps, ``load_state_dict``) tell the
        memory when to forget."""
        keys = torch.cat([frames.flatten(1), actions[:, None].to(frames.dtype)], dim=1)
        return self.memory(self._predict_distinct, keys, keys, frames, actions,
                           version=weights_version(self))

    def _predict_distinct(self, keys: Tensor, frames: Tensor, actions: Tensor
                          ) -> tuple[Tensor, Tensor]:
        return per_distinct_row(self.predict_each, keys, frames, actions)

    @torch.no_grad()
    def predict_each(self, frames: Tensor, actions: Tensor) -> tuple[Tensor, Tensor]:
        """:meth:`predict`, computed for every row (equal rows included): :meth:`forward`'s
        most likely classes, from pixel logits laid out class by class (``[7, B * H * W]``)
        for :func:`first_argmax`."""
        x, event_logits = self.features_and_events(frames, actions)
        logits = torch.addmm(self.pixel_head.bias[:, None], self.pixel_head.weight.flatten(1),
                             x.flatten(0, 2).T)
        classes = first_argmax(logits).view(x.shape[:3])
        return class_frames(classes), event_logits.argmax(2).float()

    @torch.no_grad()
    def open_loop_frames(self, frames: Tensor, actions: Tensor) -> Tensor:
        """The most likely frames ``[T, B, 3, H, W]`` of the open-loop rollout from ``frames``
        ``[B, 3, H, W]`` through ``actions`` ``[B, T]``: :meth:`predict` fed its own
        predicted frames (edible ghosts with green 1, so the pill timer does not run down
        inside a rollout)."""
        frame, imagined = frames, []
        for t in range(actions.shape[1]):
            frame, _ = self.predict(frame, actions[:, t])
            imagined.append(frame)
        return torch.stack(imagined)

    def loss(
        self,
        frames: Tensor,
        actions: Tensor,
        next_frames: Tensor,
        events: Tensor,
        mask: Tensor | None = None,
        reward_vector: Tensor | None = None,
    ) -> tuple[Tensor, dict[str, float]]:
        """:func:`~procmem.models.env_model_loss.prediction_loss` of this model's predictions
        (weighing the event loss by ``event_coef``), averaged over the transitions where
        ``mask`` ``[B]`` is true (default: all); mask out those whose ``next_frames`` is not
        the true next frame (a reset frame after an episode's end). Their rows are never
        read, so they may hold anything. ``events`` ``[B, 5]`` are the step's counts
        (``info["events"]``). The metrics are over the kept transitions; with none kept the
        loss is a zero that still backpropagates (to zeros) and the metrics are empty."""
        if mask is not None:
            rows = mask.to(torch.bool)
            frames, actions = frames[rows], actions[rows]
            next_frames, events = next_frames[rows], events[rows]
        if len(frames) == 0:
            return sum(p.sum() for p in self.parameters()) * 0.0, {}
        return prediction_loss(*self(frames, actions), next_frames, events, self.event_coef,
                               reward_vector)
