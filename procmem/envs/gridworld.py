"""Batched key/door/goal gridworld: fetch the key, open the door, reach the goal."""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
from gymnasium import spaces

from procmem.envs import keydoor
from procmem.envs.batched import ArrayState, BatchedVectorEnv, check_actions
from procmem.envs.keydoor import BLOCKED, FIELD, FLAG_NAMES, FLAGS, NO_DIRECTION, OBS_FIELDS
from procmem.envs.protocols import SubgoalEnv
from procmem.settings import AtLeast, Below, OneOf, SettingError, configurable

ACTION_NAMES = ("move_up", "move_down", "move_left", "move_right", "pickup_key", "open_door")
LAYOUTS = ("fixed", "random")

PICKUP_KEY = ACTION_NAMES.index("pickup_key")
OPEN_DOOR = ACTION_NAMES.index("open_door")
# (dx, dy) of each action, in ACTION_NAMES order; pickup_key and open_door do not move.
MOVES = np.array([[0, 1], [0, -1], [-1, 0], [1, 0], [0, 0], [0, 0]], dtype=np.int64)
NEIGHBOURS = np.array(keydoor.NEIGHBOURS, dtype=np.int64)

# Fixed-layout cells; the agent starts at (0, 0), the goal sits in the far corner.
FIXED_KEY = (2, 2)
FIXED_DOOR = (3, 3)
FIXED_BOX = (1, 3)
FIXED_MIN_SIZE = 5
MAX_RANDOM_SIZE = 16
MAX_WALLS = 0.5
NO_BOX = (-1, -1)

STATE_ARRAYS = (
    "agent_pos",
    "has_key",
    "door_open",
    "key_pos",
    "door_pos",
    "goal_pos",
    "box_pos",
    "walls",
    "steps",
)


def _columns(name: str) -> list[int]:
    """The obs columns of ``name``'s cell: ``x, y`` for the agent, ``<name>_x, <name>_y``."""
    prefix = "" if name == "agent" else f"{name}_"
    return [FIELD[f"{prefix}x"], FIELD[f"{prefix}y"]]


def reachable(free: np.ndarray, start: np.ndarray) -> np.ndarray:
    """Cells reachable from ``start`` [N, 2] through ``free`` cells [N, S, S], by flood fill."""
    reach = np.zeros_like(free)
    reach[np.arange(len(free)), start[:, 0], start[:, 1]] = True
    while True:
        grown = reach.copy()
        grown[:, 1:] |= reach[:, :-1]
        grown[:, :-1] |= reach[:, 1:]
        grown[:, :, 1:] |= reach[:, :, :-1]
        grown[:, :, :-1] |= reach[:, :, 1:]
        grown &= free
        if np.array_equal(grown, reach):
            return reach
        reach = grown


@configurable
class GridWorld(ArrayState, BatchedVectorEnv, SubgoalEnv):
    """Batched key/door/goal gridworld, Gymnasium-shaped (arrays in, arrays out).

    Picking up the key on its cell, then opening the door on its cell, then stepping onto
    the goal ends the episode; the door cell never blocks movement. Envs that end are reset
    within the same ``step`` call; their terminal obs is in ``info["final_obs"]``.
    Observations follow :mod:`procmem.envs.keydoor` (``dir`` is ``NO_DIRECTION``: moves
    are absolute, ``move_up`` is ``y + 1``).

    Settings (keyword-only, checked when built): ``num_envs`` envs of ``size`` x ``size``
    cells, episodes truncated after ``max_steps`` steps, the ``layout`` and its ``walls``,
    and the rewards: ``step_reward`` every step, ``key_reward``, ``door_reward`` and
    ``goal_reward`` (which replaces the step reward) for the subgoals.

    ``layout="fixed"`` is the original: start (0, 0), key (2, 2), door (3, 3), a decorative
    box (1, 3) and the goal at (size - 1, size - 1). ``layout="random"`` places the start,
    key, door and goal on distinct free cells drawn per episode from the env's generator
    (seeded by ``reset(seed=...)``; auto-resets draw from it too), and turns the fraction
    ``walls`` of the interior (non-border) cells into walls, redrawing a layout until the
    key, door and goal are reachable from the start. ``self.walls[b, x, y]`` is True on a
    wall; a move into a wall or off the grid leaves the agent in place. For held-out
    evaluation, reset the eval env with a different seed.
    """

    state_arrays = STATE_ARRAYS
    num_actions = len(ACTION_NAMES)
    obs_dim = len(OBS_FIELDS)
    action_names = ACTION_NAMES
    flag_names = FLAG_NAMES
    movement = "absolute"
    move_actions = (3, 2, 0, 1)  # right (+x), left (-x), up (+y), down (-y)
    interaction_actions = (4, 5)  # pickup_key, open_door

    def __init__(
        self,
        *,
        num_envs: Annotated[int, AtLeast(1)] = 1,
        size: Annotated[int, AtLeast(3)] = 8,
        max_steps: Annotated[int, AtLeast(1)] = 300,
        layout: Annotated[str, OneOf(LAYOUTS)] = "random",
        walls: Annotated[float, AtLeast(0.0), Below(MAX_WALLS)] = 0.0,
        step_reward: float = -0.1,
        key_reward: float = 1.0,
        door_reward: float = 2.0,
        goal_reward: float = 10.0,
    ) -> None:
        if layout == "fixed" and size < FIXED_MIN_SIZE:
            raise SettingError("size", f"{size} is out of range: layout=fixed needs size >= "
                                       f"{FIXED_MIN_SIZE} (key, door, box and goal on "
                                       "distinct cells)")
        if layout == "random" and size > MAX_RANDOM_SIZE:
            raise SettingError("size", f"{size} is out of range: layout=random needs size <= "
                                       f"{MAX_RANDOM_SIZE}")
        if layout == "fixed" and walls > 0:
            raise SettingError("walls", f"{walls!r}: layout=fixed has no walls, must be 0")
        self.num_envs = num_envs
        self.size = size
        self.max_steps = max_steps
        self.layout = layout
        self.wall_fraction = walls
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
        self.walls = np.zeros((b, size, size), dtype=bool)
        self.steps = np.zeros(b, dtype=np.int64)
        self._rows = np.arange(b)
        self._rng = np.random.default_rng()
        self._needs_reset = True
        self._set_spaces(spaces.Box(-1, size - 1, (len(OBS_FIELDS),), dtype=np.int64))

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
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
        actions = check_actions(self, actions)

        target = np.clip(self.agent_pos + MOVES[actions], 0, self.size - 1)
        into_wall = self.walls[self._rows, target[:, 0], target[:, 1]]
        self.agent_pos = np.where(into_wall[:, None], self.agent_pos, target)
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
            "_final_obs": done,
            "key_picked": key_picked,
            "door_opened": door_opened,
            "success": success,
            "episode_steps": episode_steps,
        }
        return self._obs(), reward, terminated, truncated, info

    def state_flags(self) -> np.ndarray:
        """(has_key, door_open) of the current state, bool [B, 2]."""
        return np.stack([self.has_key, self.door_open], axis=1)

    def _reset_envs(self, mask: np.ndarray) -> None:
        self.has_key[mask] = False
        self.door_open[mask] = False
        self.steps[mask] = 0
        if self.layout == "fixed":
            self.agent_pos[mask] = 0
            self.key_pos[mask] = FIXED_KEY
            self.door_pos[mask] = FIXED_DOOR
            self.box_pos[mask] = FIXED_BOX
            self.goal_pos[mask] = self.size - 1
        else:
            self._place_random(mask)

    def _place_random(self, mask: np.ndarray) -> None:
        """Draw solvable random layouts for the envs in ``mask``."""
        rows = np.flatnonzero(mask)
        while len(rows):
            walls, cells = self._draw_layouts(len(rows))
            self.walls[rows] = walls
            self.agent_pos[rows], self.key_pos[rows] = cells[:, 0], cells[:, 1]
            self.door_pos[rows], self.goal_pos[rows] = cells[:, 2], cells[:, 3]
            reach = reachable(~walls, cells[:, 0])
            targets = reach[np.arange(len(rows))[:, None], cells[:, 1:, 0], cells[:, 1:, 1]]
            rows = rows[~targets.all(axis=1)]
        self.box_pos[mask] = NO_BOX

    def _draw_layouts(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """``n`` layouts: walls [n, S, S] and start, key, door, goal cells [n, 4, 2]."""
        s = self.size
        interior = (np.arange(1, s - 1)[:, None] * s + np.arange(1, s - 1)).ravel()
        num_walls = round(self.wall_fraction * len(interior))
        chosen = np.argsort(self._rng.random((n, len(interior))), axis=1)[:, :num_walls]
        walls = np.zeros((n, s * s), dtype=bool)
        np.put_along_axis(walls, interior[chosen], True, axis=1)
        # Walls sort after every free cell, so the first four cells are distinct free cells.
        cells = np.argsort(self._rng.random((n, s * s)) + walls, axis=1)[:, :4]
        return walls.reshape(n, s, s), np.stack(np.divmod(cells, s), axis=-1)

    def _obs(self) -> np.ndarray:
        obs = np.empty((self.num_envs, len(OBS_FIELDS)), dtype=np.int64)
        obs[:, _columns("agent")] = self.agent_pos
        obs[:, FIELD["dir"]] = NO_DIRECTION
        obs[:, FLAGS] = self.state_flags()
        obs[:, _columns("key")] = self.key_pos
        obs[:, _columns("door")] = self.door_pos
        obs[:, _columns("goal")] = self.goal_pos
        neighbours = self.agent_pos[:, None, :] + NEIGHBOURS  # [B, 4, 2]
        outside = np.any((neighbours < 0) | (neighbours >= self.size), axis=2)
        inside = np.clip(neighbours, 0, self.size - 1)
        wall = self.walls[self._rows[:, None], inside[..., 0], inside[..., 1]]
        obs[:, BLOCKED] = outside | wall
        return obs
