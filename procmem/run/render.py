"""Episode frames as images: an animated GIF and a frame strip PNG, drawn with Pillow.

Every function here takes frames as uint8 ``[T, H, W, 3]``; :func:`to_rgb8` converts an
env's float ``[T, 3, H, W]`` observations in ``[0, 1]`` once, up front.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
from PIL import Image


def to_rgb8(frames: np.ndarray) -> np.ndarray:
    """Float ``[T, 3, H, W]`` frames in ``[0, 1]`` as uint8 ``[T, H, W, 3]``."""
    frames = np.asarray(frames, dtype=np.float32)
    if frames.ndim != 4 or frames.shape[1] != 3:
        raise ValueError(f"expected frames of shape [T, 3, H, W], got {frames.shape}")
    return np.round(np.clip(frames, 0.0, 1.0) * 255).astype(np.uint8).transpose(0, 2, 3, 1)


def upscale(frames: np.ndarray, factor: int) -> np.ndarray:
    """Frames ``[T, H, W, 3]`` with every pixel repeated ``factor`` times each way (nearest
    neighbour): ``[T, H * factor, W * factor, 3]``."""
    if factor < 1:
        raise ValueError(f"factor must be >= 1, got {factor}")
    return np.repeat(np.repeat(frames, factor, axis=1), factor, axis=2)


def _prepare(path: str | os.PathLike, frames: np.ndarray) -> Path:
    """Check ``frames`` and create the parent folder of ``path``."""
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or not len(frames):
        raise ValueError(f"expected uint8 frames [T>=1, H, W, 3], got {frames.dtype} "
                         f"{frames.shape}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def save_gif(frames: np.ndarray, path: str | os.PathLike, fps: float = 4.0) -> Path:
    """Save ``frames`` as a looping animated GIF playing ``fps`` frames a second.

    Pillow merges identical consecutive frames into one frame shown for their total time,
    so the GIF may hold fewer frames than given; its playing time is always
    ``len(frames) / fps`` (to GIF's 10 ms resolution).
    """
    path = _prepare(path, frames)
    images = [Image.fromarray(frame) for frame in frames]
    images[0].save(path, save_all=True, append_images=images[1:], duration=1000 / fps, loop=0)
    return path


def save_strip(frames: np.ndarray, path: str | os.PathLike, columns: int = 8,
               gap: int = 2) -> Path:
    """Save ``frames`` as one PNG: a grid ``columns`` frames wide, row by row, ``gap``
    pixels of black between frames."""
    path = _prepare(path, frames)
    count, height, width, _ = frames.shape
    columns = max(1, min(columns, count))
    rows = math.ceil(count / columns)
    grid = np.zeros((rows * (height + gap) - gap, columns * (width + gap) - gap, 3), np.uint8)
    for i, frame in enumerate(frames):
        top, left = (i // columns) * (height + gap), (i % columns) * (width + gap)
        grid[top:top + height, left:left + width] = frame
    Image.fromarray(grid).save(path)
    return path
