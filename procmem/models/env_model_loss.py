"""How well an environment model predicts: its training loss and accuracy metrics for one
step (:func:`prediction_loss`, behind :meth:`EnvModel.loss
<procmem.models.env_model.EnvModel.loss>`) and its open-loop accuracy over several imagined
steps (:func:`rollout_accuracy`)."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from procmem.models.pixel_classes import frame_classes


def prediction_loss(
    pixel_logits: Tensor,
    event_logits: Tensor,
    next_frames: Tensor,
    events: Tensor,
    event_coef: float,
    reward_vector: Tensor | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """Pixel cross-entropy (mean over pixels) + ``event_coef`` x event cross-entropy (mean
    over events) of predicted logits, ``[B, 7, H, W]`` and ``[B, 5, max_count + 1]``, against
    the true ``next_frames`` ``[B, 3, H, W]`` and event counts ``events`` ``[B, 5]`` (counts
    above ``max_count`` are clamped).

    Metrics: ``envmodel/loss``, ``envmodel/pixel_loss``, ``envmodel/event_loss``,
    ``envmodel/pixel_accuracy`` (pixels of the right class), ``envmodel/frame_accuracy``
    (frames with every pixel right), ``envmodel/event_accuracy`` (transitions with all 5
    event counts right) and, given ``reward_vector`` ``[5]``, ``envmodel/reward_accuracy``
    (transitions whose reward from predicted events, ``counts @ reward_vector``, is within
    1e-4 of the true one)."""
    target_pixels = frame_classes(next_frames)
    target_events = events.round().long().clamp(0, event_logits.shape[-1] - 1)
    pixel_loss = F.cross_entropy(pixel_logits, target_pixels)
    event_loss = F.cross_entropy(event_logits.flatten(0, 1), target_events.flatten())
    loss = pixel_loss + event_coef * event_loss
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
            weights = torch.as_tensor(reward_vector, device=next_frames.device).float()
            predicted = predicted_events.float() @ weights
            true = events.float() @ weights
            metrics["envmodel/reward_accuracy"] = (
                ((predicted - true).abs() < 1e-4).float().mean().item()
            )
    return loss, metrics


@torch.no_grad()
def rollout_accuracy(
    model: nn.Module,
    frames: Tensor,
    actions: Tensor,
    next_frames_seq: Tensor,
    mask: Tensor,
    steps: int,
) -> dict[str, list[float]]:
    """Open-loop accuracy of an env model over ``1..steps`` imagined steps.

    From ``frames`` ``[B, 3, H, W]`` the model imagines the rollout through ``actions``
    ``[B, T]`` (``model.open_loop_frames(frames, actions)``: the pixel model fed its own
    predicted frames, the state-space model its own latent states; ``steps <= T``); step
    ``k`` is compared with ``next_frames_seq`` ``[B, T, 3, H, W]``, by pixel class, over the
    rows whose transitions ``1..k`` are all real (``mask`` ``[B, T]`` true, e.g. no episode
    boundary). Returns, one entry per step (NaN where no row is kept), ``pixel_accuracy``
    and ``frame_accuracy``."""
    if steps > actions.shape[1]:
        raise ValueError(f"steps must be <= {actions.shape[1]}, got {steps}")
    keep = torch.cumprod(mask.to(torch.int64), dim=1).bool()
    imagined = model.open_loop_frames(frames, actions[:, :steps])
    pixel, whole = [], []
    for k in range(steps):
        right = frame_classes(imagined[k]) == frame_classes(next_frames_seq[:, k])
        rows = keep[:, k]
        if rows.any():
            pixel.append(right[rows].float().mean().item())
            whole.append(right[rows].flatten(1).all(1).float().mean().item())
        else:
            pixel.append(float("nan"))
            whole.append(float("nan"))
    return {"pixel_accuracy": pixel, "frame_accuracy": whole}
