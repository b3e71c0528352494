"""An environment model for MiniPacman: predicts the next frame and the step's events.

**Pixel classes.** Frames are handled as 7 pixel classes, in the order of
:data:`PIXEL_CLASSES`: ``empty``, ``wall``, ``food``, ``pill``, ``pacman``, ``ghost``
(dangerous, green 0) and ``edible_ghost`` (any ghost pixel with green > 0, i.e. rendered while
``power > 0``). :func:`frame_classes` maps frames rendered by
:class:`procmem.envs.minipacman.MiniPacman` to classes; :func:`class_frames` renders classes
back (edible ghosts with green 1, or ``power / PILL_POWER`` when the pill timer is given).

**Model.** :class:`EnvModel` reads a frame and an action and outputs per-pixel class logits
of the next frame and, per event of :data:`~procmem.envs.minipacman.EVENTS`, logits over the
counts ``0..max_count`` of that event on the step. Rewards come from predicted events
(``events @ reward_vector``), so one model serves every reward mode.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from procmem.envs.minipacman import EVENTS, PILL_POWER
from procmem.io import atomic_torch_save
from procmem.models.distinct import per_distinct_row
from procmem.models.row_memory import RowMemory, weights_version
from procmem.safe_load import load_data_file

PIXEL_CLASSES = ("empty", "wall", "food", "pill", "pacman", "ghost", "edible_ghost")
EMPTY, WALL, FOOD, PILL, PACMAN, GHOST, EDIBLE_GHOST = range(len(PIXEL_CLASSES))
# RGB of each class, in PIXEL_CLASSES order; edible ghosts at full power (green 1).
PIXEL_COLOURS = torch.tensor(
    [[0, 0, 0], [1, 1, 1], [0, 0, 1], [0, 1, 1], [0, 1, 0], [1, 0, 0], [1, 1, 0]],
    dtype=torch.float32,
)


def _class_table() -> Tensor:
    """The pixel class of each combination of (red on, green on, green above 0, blue on),
    indexed by ``8 red + 4 green_on + 2 green_positive + blue``."""
    table = torch.empty(16, dtype=torch.int64)
    for code in range(16):
        red, lit, green, blue = (bool(code & bit) for bit in (8, 4, 2, 1))
        table[code] = (WALL if red and blue else EDIBLE_GHOST if red and green else
                       GHOST if red else PILL if lit and blue else PACMAN if lit else
                       FOOD if blue else EMPTY)
    return table


CLASS_TABLE = _class_table()


def frame_classes(frames: Tensor) -> Tensor:
    """Pixel classes (indices into :data:`PIXEL_CLASSES`), int64 ``[N, H, W]``, of RGB frames
    float ``[N, 3, H, W]`` as the env renders them: red and blue on is a wall; red on is a
    ghost, edible where green > 0; else green and blue on is a pill, green alone Pacman,
    blue alone food, and nothing on is empty (channels count as on above 0.5)."""
    red, green, blue = frames[:, 0], frames[:, 1], frames[:, 2]
    code = ((red > 0.5).to(torch.uint8) * 8 + (green > 0.5).to(torch.uint8) * 4
            + (green > 0).to(torch.uint8) * 2 + (blue > 0.5).to(torch.uint8))
    return CLASS_TABLE.to(frames.device)[code.long()]


def class_frames(classes: Tensor, power: Tensor | float | None = None) -> Tensor:
    """RGB frames float32 ``[N, 3, H, W]`` (in channels-last memory) of pixel classes int
    ``[N, H, W]``.

    Edible ghosts get green 1, or ``power / PILL_POWER`` when the pill timer ``power`` is
    given (a number or one per frame, ``[N]``), as the env renders them; a power of 0 then
    renders them as dangerous ghosts."""
    frames = F.embedding(classes, PIXEL_COLOURS.to(classes.device)).permute(0, 3, 1, 2)
    if power is not None:
        power = torch.as_tensor(power, device=classes.device)
        green = (power.double() / PILL_POWER).float().reshape(-1, 1, 1)
        edible = classes == EDIBLE_GHOST
        frames[:, 1] = torch.where(edible, green.expand_as(edible), frames[:, 1])
    return frames


def tap_sums(weight: Tensor, height: int, width: int, padding: int) -> Tensor:
    """Per output position, the sum of the taps of a convolution ``weight`` ``[O, C, k, k]``
    (zero ``padding``, stride 1) that land inside a ``height x width`` input: ``[C, H, W,
    O]``. The convolution of an input constant over space, ``p [B, C]`` tiled, is ``p`` times
    these sums; at the borders fewer taps land inside."""
    size = weight.shape[-1]
    offsets = torch.arange(size, device=weight.device) - padding
    rows = torch.arange(height, device=weight.device)[:, None] + offsets  # [H, k]
    cols = torch.arange(width, device=weight.device)[:, None] + offsets  # [W, k]
    inside_rows = ((rows >= 0) & (rows < height)).to(weight.dtype)
    inside_cols = ((cols >= 0) & (cols < width)).to(weight.dtype)
    return torch.einsum("iu,jv,ocuv->cijo", inside_rows, inside_cols, weight)


def first_argmax(scores: Tensor) -> Tensor:
    """``scores.argmax(0)`` of ``[K, ...]`` scores, as ``K - 1`` elementwise passes: the
    first of equal maxima, as ``argmax``; for few classes several times faster than
    ``argmax`` over a short innermost dimension (7 pixel classes: 0.2 ms against 1 ms per
    80 frames on one core). Scores must be finite."""
    best, index = scores[0], torch.zeros_like(scores[0])
    for k in range(1, len(scores)):
        higher = torch.sign(scores[k] - best).clamp_(min=0)  # 1 where strictly higher
        index.addcmul_(higher, k - index)
        best = torch.maximum(best, scores[k])
    return index.long()


def conv_nhwc(x: Tensor, weight: Tensor, bias: Tensor | None, padding: int) -> Tensor:
    """A stride-1 convolution of channels-last features ``x`` ``[B, H, W, C]``, returned
    channels-last ``[B, H, W, O]``."""
    out = F.conv2d(x.permute(0, 3, 1, 2), weight, bias, padding=padding)
    return out.permute(0, 2, 3, 1).contiguous()  # already so for channels-last ``x``


def spatial_max(x: Tensor) -> Tensor:
    """The maximum over the grid of channels-last features ``[B, H, W, C]``: ``[B, C]``
    (by a channels-last pooling kernel, several times faster here than ``amax``)."""
    return F.adaptive_max_pool2d(x.permute(0, 3, 1, 2), 1).flatten(1)


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
    CPU as :meth:`forward_unfused`, which runs them as written above (the reference the
    tests hold it to). :meth:`predict` remembers its last distinct predictions in ``memory``
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
        classes = F.one_hot(frame_classes(frames), len(PIXEL_CLASSES)).permute(0, 3, 1, 2)
        classes = classes.to(frames.dtype)
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

    def loss(
        self,
        frames: Tensor,
        actions: Tensor,
        next_frames: Tensor,
        events: Tensor,
        mask: Tensor | None = None,
        reward_vector: Tensor | None = None,
    ) -> tuple[Tensor, dict[str, float]]:
        """Pixel cross-entropy (mean over pixels) + ``event_coef`` x event cross-entropy
        (mean over events), averaged over the transitions where ``mask`` ``[B]`` is true
        (default: all); mask out those whose ``next_frames`` is not the true next frame (a
        reset frame after an episode's end). Their rows are never read, so they may hold
        anything. ``events`` ``[B, 5]`` are the step's counts (``info["events"]``).

        Metrics over the kept transitions: ``envmodel/loss``, ``envmodel/pixel_loss``,
        ``envmodel/event_loss``, ``envmodel/pixel_accuracy`` (pixels of the right class),
        ``envmodel/frame_accuracy`` (frames with every pixel right),
        ``envmodel/event_accuracy`` (transitions with all 5 event counts right) and, given
        ``reward_vector`` ``[5]``, ``envmodel/reward_accuracy`` (transitions whose reward
        from predicted events, ``counts @ reward_vector``, is within 1e-4 of the true one).
        With no transition kept the loss is a zero that still backpropagates (to zeros) and
        the metrics are empty."""
        if mask is not None:
            rows = mask.to(torch.bool)
            frames, actions = frames[rows], actions[rows]
            next_frames, events = next_frames[rows], events[rows]
        if len(frames) == 0:
            return sum(p.sum() for p in self.parameters()) * 0.0, {}
        pixel_logits, event_logits = self(frames, actions)
        target_pixels = frame_classes(next_frames)
        target_events = events.round().long().clamp(0, self.num_counts - 1)
        pixel_loss = F.cross_entropy(pixel_logits, target_pixels)
        event_loss = F.cross_entropy(event_logits.flatten(0, 1), target_events.flatten())
        loss = pixel_loss + self.event_coef * event_loss
        with torch.no_grad():
            pixel_right = pixel_logits.argmax(1) == target_pixels
            predicted_events = event_logits.argmax(2)
            metrics = {
                "envmodel/loss": loss.item(),
                "envmodel/pixel_loss": pixel_loss.item(),
                "envmodel/event_loss": event_loss.item(),
                "envmodel/pixel_accuracy": pixel_right.float().mean().item(),
                "envmodel/frame_accuracy": pixel_right.flatten(1).all(1).float().mean().item(),
                "envmodel/event_accuracy": (predicted_events == target_events)
                .all(1).float().mean().item(),
            }
            if reward_vector is not None:
                weights = torch.as_tensor(reward_vector, device=frames.device).float()
                predicted = predicted_events.float() @ weights
                true = events.float() @ weights
                metrics["envmodel/reward_accuracy"] = (
                    ((predicted - true).abs() < 1e-4).float().mean().item()
                )
        return loss, metrics


@torch.no_grad()
def rollout_accuracy(
    model: EnvModel,
    frames: Tensor,
    actions: Tensor,
    next_frames_seq: Tensor,
    mask: Tensor,
    steps: int,
) -> dict[str, list[float]]:
    """Open-loop accuracy of ``model`` over ``1..steps`` imagined steps.

    From ``frames`` ``[B, 3, H, W]`` the model is fed ``actions`` ``[B, T]`` and its own
    predicted frames (``steps <= T``); step ``k`` is compared with ``next_frames_seq``
    ``[B, T, 3, H, W]``, by pixel class, over the rows whose transitions ``1..k`` are all
    real (``mask`` ``[B, T]`` true, e.g. no episode boundary). Returns, one entry per step
    (NaN where no row is kept), ``pixel_accuracy`` and ``frame_accuracy``. Predicted
    frames render edible ghosts with green 1, so the model does not see the pill timer
    run down inside a rollout."""
    if steps > actions.shape[1]:
        raise ValueError(f"steps must be <= {actions.shape[1]}, got {steps}")
    keep = torch.cumprod(mask.to(torch.int64), dim=1).bool()
    frame = frames
    pixel, whole = [], []
    for k in range(steps):
        frame, _ = model.predict(frame, actions[:, k])
        right = frame_classes(frame) == frame_classes(next_frames_seq[:, k])
        rows = keep[:, k]
        if rows.any():
            pixel.append(right[rows].float().mean().item())
            whole.append(right[rows].flatten(1).all(1).float().mean().item())
        else:
            pixel.append(float("nan"))
            whole.append(float("nan"))
    return {"pixel_accuracy": pixel, "frame_accuracy": whole}



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
