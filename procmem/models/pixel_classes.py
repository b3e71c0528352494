"""MiniPacman's pixel classes: the 7 kinds of pixel an environment model predicts.

Frames are handled as 7 pixel classes, in the order of :data:`PIXEL_CLASSES`: ``empty``,
``wall``, ``food``, ``pill``, ``pacman``, ``ghost`` (dangerous, green 0) and ``edible_ghost``
(any ghost pixel with green > 0, i.e. rendered while ``power > 0``). :func:`frame_classes`
maps frames rendered by :class:`procmem.envs.minipacman.MiniPacman` to classes;
:func:`class_frames` renders classes back (edible ghosts with green 1, or
``power / PILL_POWER`` when the pill timer is given).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

from procmem.envs.minipacman import PILL_POWER

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


def class_planes(frames: Tensor) -> Tensor:
    """The one-hot pixel classes of RGB frames ``[N, 3, H, W]``, float ``[N, 7, H, W]``."""
    planes = F.one_hot(frame_classes(frames), len(PIXEL_CLASSES)).permute(0, 3, 1, 2)
    return planes.to(frames.dtype)


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
