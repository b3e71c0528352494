"""Tensor kernels of the env model's fused forward path (:meth:`EnvModel.forward
<procmem.models.env_model.EnvModel.forward>`): convolutions and pools on channels-last
features, the convolution of a spatially constant input as a matrix product, and an argmax
over a few classes."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F


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
