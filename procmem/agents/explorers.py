"""Exploration policies acting on a batch of GridWorld observations."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from procmem.envs.gridworld import ACTION_NAMES, OBS_FIELDS

_X, _Y, _HAS_KEY, _DOOR_OPEN = (OBS_FIELDS.index(f) for f in ("x", "y", "has_key", "door_open"))
_KEY = [OBS_FIELDS.index("key_x"), OBS_FIELDS.index("key_y")]
_DOOR = [OBS_FIELDS.index("door_x"), OBS_FIELDS.index("door_y")]
_GOAL = [OBS_FIELDS.index("goal_x"), OBS_FIELDS.index("goal_y")]
_UP, _DOWN, _LEFT, _RIGHT, _PICKUP, _OPEN = (
    ACTION_NAMES.index(a)
    for a in ("move_up", "move_down", "move_left", "move_right", "pickup_key", "open_door")
)


class Explorer(Protocol):
    """Picks one action per env from a batch of observations."""

    def act(self, obs: np.ndarray, rng: np.random.Generator) -> np.ndarray: ...


class RandomExplorer:
    """Uniformly random actions."""

    def __init__(self, num_actions: int = len(ACTION_NAMES)) -> None:
        if num_actions < 1:
            raise ValueError(f"num_actions must be >= 1, got {num_actions}")
        self.num_actions = num_actions

    def act(self, obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return rng.integers(self.num_actions, size=len(obs), dtype=np.int64)


class OracleExplorer:
    """Hand-written policy that reads the key, door and goal cells from the obs.

    It knows where everything is, so it is a reproduction preset of the original
    experiment only, not a learning baseline. Without the key it walks to the key
    (x first, then y) and picks it up; with the door closed it walks to the door and
    opens it; otherwise it walks to the goal. Deterministic: ``rng`` is unused.
    """

    def act(self, obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        has_key = obs[:, _HAS_KEY].astype(bool)
        door_open = obs[:, _DOOR_OPEN].astype(bool)
        target = np.where(
            ~has_key[:, None],
            obs[:, _KEY],
            np.where(~door_open[:, None], obs[:, _DOOR], obs[:, _GOAL]),
        )
        dx = target[:, 0] - obs[:, _X]
        dy = target[:, 1] - obs[:, _Y]
        return np.select(
            [dx > 0, dx < 0, dy > 0, dy < 0, ~has_key],
            [_RIGHT, _LEFT, _UP, _DOWN, _PICKUP],
            default=_OPEN,
        ).astype(np.int64)
