"""Batched key/door/goal gridworld: fetch the key, open the door, reach the goal."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

ACTION_NAMES = ("move_up", "move_down", "move_left", "move_right", "pickup_key", "open_door")
OBS_FIELDS = (
    "x",
    "y",
    "has_key",
    "door_open",
    "key_x",
    "key_y",
    "door_x",
    "door_y",
    "goal_x",
    "goal_y",
)
LAYOUTS = ("fixed",)

PICKUP_KEY = ACTION_NAMES.index("pickup_key")
OPEN_DOOR = ACTION_NAMES.index("open_door")
# (dx, dy) of each action, in ACTION_NAMES order; pickup_key and open_door do not move.
MOVES = np.array([[0, 1], [0, -1], [-1, 0], [1, 0], [0, 0], [0, 0]], dtype=np.int64)

# Fixed-layout cells; the goal sits in the far corner (size - 1, size - 1).
FIXED_KEY = (2, 2)
FIXED_DOOR = (3, 3)
FIXED_BOX = (1, 3)
FIXED_MIN_SIZE = 5

_STATE_ARRAYS = (
    "agent_pos",
    "has_key",
    "door_open",
    "key_pos",
    "door_pos",
    "goal_pos",
    "box_pos",
    "steps",
)


class GridWorld:
    """Batched key/door/goal gridworld, Gymnasium-shaped (arrays in, arrays out).

    Each of the ``num_envs`` envs starts at (0, 0). Picking up the key on its cell, then
    opening the door on its cell, then stepping onto the goal ends the episode. Envs that
    end are reset within the same ``step`` call; their terminal obs is in ``info["final_obs"]``.
    """

    num_actions = len(ACTION_NAMES)
    obs_dim = len(OBS_FIELDS)
    action_names = ACTION_NAMES

    def __init__(
        self,
        num_envs: int = 1,
        size: int = 5,
        max_steps: int = 50,
        layout: str = "fixed",
        step_reward: float = -0.1,
        key_reward: float = 1.0,
        door_reward: float = 2.0,
        goal_reward: float = 10.0,
    ) -> None:
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        if size < 3:
            raise ValueError(f"size must be >= 3, got {size}")
        if max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {max_steps}")
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
        if layout == "fixed" and size < FIXED_MIN_SIZE:
            raise ValueError(
                f"size must be >= {FIXED_MIN_SIZE} for layout 'fixed' "
                f"(key, door, box and goal must fit on distinct cells), got {size}"
            )
        self.num_envs = num_envs
        self.size = size
        self.max_steps = max_steps
        self.layout = layout
        self.step_reward = step_reward
        self.key_reward = key_reward
        self.door_reward = door_reward
        self.goal_reward = goal_reward

        b = num_envs
        self.agent_pos = np.zeros((b, 2), dtype=np.int64)
        self.has_key = np.zeros(b, dtype=bool)
        self.door_open = np.zeros(b, dtype=bool)
        self.key_pos = np.zeros((b, 2), dtype=np.int64)
        self.door_pos = np.zeros((b, 2), dtype=np.int64)
        self.goal_pos = np.zeros((b, 2), dtype=np.int64)
        self.box_pos = np.zeros((b, 2), dtype=np.int64)
        self.steps = np.zeros(b, dtype=np.int64)
        self._rng = np.random.default_rng()
        self._needs_reset = True

    def reset(self, seed: int | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        """Start a new episode in every env; ``seed`` reseeds the env's generator."""
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        self._reset_envs(np.ones(self.num_envs, dtype=bool))
        self._needs_reset = False
        return self._obs(), {}

    def step(
        self, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Apply one action per env; returns (obs, reward, terminated, truncated, info)."""
        if self._needs_reset:
            raise RuntimeError("call reset() before step()")
        actions = self._check_actions(actions)

        self.agent_pos = np.clip(self.agent_pos + MOVES[actions], 0, self.size - 1)
        reward = np.full(self.num_envs, self.step_reward, dtype=np.float32)

        on_key = np.all(self.agent_pos == self.key_pos, axis=1)
        key_picked = (actions == PICKUP_KEY) & on_key & ~self.has_key
        self.has_key |= key_picked
        reward[key_picked] += self.key_reward

        on_door = np.all(self.agent_pos == self.door_pos, axis=1)
        door_opened = (actions == OPEN_DOOR) & on_door & self.has_key & ~self.door_open
        self.door_open |= door_opened
        reward[door_opened] += self.door_reward

        success = np.all(self.agent_pos == self.goal_pos, axis=1) & self.door_open
        reward[success] = self.goal_reward

        self.steps += 1
        episode_steps = self.steps.copy()
        terminated = success
        truncated = ~terminated & (self.steps >= self.max_steps)
        final_obs = self._obs()

        done = terminated | truncated
        if done.any():
            self._reset_envs(done)
        info = {
            "final_obs": final_obs,
            "key_picked": key_picked,
            "door_opened": door_opened,
            "success": success,
            "episode_steps": episode_steps,
        }
        return self._obs(), reward, terminated, truncated, info

    def state_flags(self) -> np.ndarray:
        """(has_key, door_open) of the current state, bool [B, 2]."""
        return np.stack([self.has_key, self.door_open], axis=1)

    def state_dict(self) -> dict[str, Any]:
        """Full env state, deep-copied, including the generator's state."""
        state = {name: getattr(self, name).copy() for name in _STATE_ARRAYS}
        state["rng"] = copy.deepcopy(self._rng.bit_generator.state)
        state["needs_reset"] = self._needs_reset
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state produced by ``state_dict`` of an env with the same batch size."""
        for name in _STATE_ARRAYS:
            current = getattr(self, name)
            value = np.asarray(state[name], dtype=current.dtype)
            if value.shape != current.shape:
                raise ValueError(
                    f"state[{name!r}] has shape {value.shape}, expected {current.shape}"
                )
            setattr(self, name, value.copy())
        rng = np.random.default_rng()
        rng.bit_generator.state = copy.deepcopy(state["rng"])
        self._rng = rng
        self._needs_reset = bool(state["needs_reset"])

    def _check_actions(self, actions: np.ndarray) -> np.ndarray:
        actions = np.asarray(actions)
        if actions.shape != (self.num_envs,):
            raise ValueError(f"actions must have shape ({self.num_envs},), got {actions.shape}")
        if not np.issubdtype(actions.dtype, np.integer):
            raise ValueError(f"actions must be integers, got dtype {actions.dtype}")
        if np.any((actions < 0) | (actions >= self.num_actions)):
            raise ValueError(f"actions must lie in [0, {self.num_actions}), got {actions}")
        return actions.astype(np.int64)

    def _reset_envs(self, mask: np.ndarray) -> None:
        self.agent_pos[mask] = 0
        self.has_key[mask] = False
        self.door_open[mask] = False
        self.steps[mask] = 0
        self._place_objects(mask)

    def _place_objects(self, mask: np.ndarray) -> None:
        # Only "fixed" exists so far; randomised layouts will draw from self._rng here.
        self.key_pos[mask] = FIXED_KEY
        self.door_pos[mask] = FIXED_DOOR
        self.box_pos[mask] = FIXED_BOX
        self.goal_pos[mask] = self.size - 1

    def _obs(self) -> np.ndarray:
        return np.concatenate(
            [
                self.agent_pos,
                self.has_key[:, None],
                self.door_open[:, None],
                self.key_pos,
                self.door_pos,
                self.goal_pos,
            ],
            axis=1,
            dtype=np.int64,
        )
