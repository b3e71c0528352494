"""Farama MiniGrid (e.g. DoorKey-5x5/8x8) behind the batched key/door/goal interface.

Observations are read from each MiniGrid env's state (``env.unwrapped``), not from its
egocentric image, and laid out as in :mod:`procmem.envs.keydoor`. MiniGrid steps one env at
a time in Python, so ``step`` loops over the ``num_envs`` envs; that loop, and MiniGrid's own
per-step image rendering (``gen_obs``), bound the throughput.
"""

from __future__ import annotations

import copy
import warnings
from typing import Annotated, Any

import numpy as np
from gymnasium import spaces

from procmem.envs.batched import BatchedVectorEnv, check_actions
from procmem.envs.keydoor import FIELD, FLAG_NAMES, NUM_DIRECTIONS, OBS_FIELDS
from procmem.envs.protocols import SubgoalEnv
from procmem.envs.replay import EpisodeRecorder
from procmem.settings import AtLeast, SettingError, StartsWith, configurable

MISSING_EXTRA = "env=minigrid needs the 'minigrid' extra: pip install -e '.[minigrid]'"
# Fields that change within an episode, in the order _dynamic_fields returns them.
_DYNAMIC = [FIELD[name] for name in (
    "x", "y", "dir", "has_key", "door_open",
    "blocked_xpos", "blocked_xneg", "blocked_ypos", "blocked_yneg",
)]
_OBJECTS = ("key", "door", "goal")
_HAS_KEY, _DOOR_OPEN = FIELD["has_key"], FIELD["door_open"]
_DOOR_X, _DOOR_Y = FIELD["door_x"], FIELD["door_y"]


def _make_envs(env_id: str, num_envs: int, max_steps: int | None) -> list[Any]:
    try:
        import gymnasium
        import minigrid  # noqa: F401  (registers the MiniGrid-* ids)
    except ImportError as error:
        raise ImportError(MISSING_EXTRA) from error
    kwargs = {} if max_steps is None else {"max_steps": max_steps}
    try:
        return [EpisodeRecorder(gymnasium.make(env_id, **kwargs)) for _ in range(num_envs)]
    except gymnasium.error.Error as error:
        raise SettingError("env_id", f"{env_id!r}: {str(error).splitlines()[0]}") from None


def _blocked(grid: Any, x: int, y: int) -> bool:
    """Whether the agent cannot enter cell (x, y): outside the grid, or a solid object."""
    if not (0 <= x < grid.width and 0 <= y < grid.height):
        return True
    cell = grid.grid[y * grid.width + x]
    return cell is not None and not cell.can_overlap()


def _dynamic_fields(env: Any, door_x: int, door_y: int) -> tuple[int, ...]:
    """The ``_DYNAMIC`` fields of one unwrapped env's current state."""
    x, y = (int(v) for v in env.agent_pos)
    grid, carrying = env.grid, env.carrying
    door = grid.grid[door_y * grid.width + door_x] if door_x >= 0 else None
    return (
        x, y, int(env.agent_dir),
        carrying is not None and carrying.type == "key",
        bool(getattr(door, "is_open", False)),
        _blocked(grid, x + 1, y), _blocked(grid, x - 1, y),
        _blocked(grid, x, y + 1), _blocked(grid, x, y - 1),
    )


def _object_cells(env: Any) -> list[int]:
    """``key_x, key_y, door_x, door_y, goal_x, goal_y``: the first of each in grid order, or -1."""
    found: dict[str, int] = {}
    for index, cell in enumerate(env.grid.grid):
        if cell is not None and cell.type in _OBJECTS:
            found.setdefault(cell.type, index)
    width = env.grid.width
    cells = []
    for name in _OBJECTS:
        index = found.get(name)
        cells += [-1, -1] if index is None else [index % width, index // width]
    return cells


@configurable
class MiniGridEnv(BatchedVectorEnv, SubgoalEnv):
    """``num_envs`` Gymnasium MiniGrid envs of task ``env_id`` with the batched gridworld
    interface; ``max_steps`` replaces the task's own step limit (``None`` keeps it).

    Actions are MiniGrid's own (``action_names``). ``reset(seed=s)`` seeds env ``i`` with
    ``s + i``; episodes that end are reset within the same ``step`` call from each env's
    continuing generator, and their terminal obs is in ``info["final_obs"]``. Rewards are
    MiniGrid's (``1 - 0.9 * steps / max_steps`` on reaching the goal, else 0). Tasks
    without a key, door or goal leave its cell at -1 and its flag at 0.
    """

    obs_dim = len(OBS_FIELDS)
    flag_names = FLAG_NAMES
    movement = "egocentric"
    move_actions = (0, 1, 2)  # left, right, forward
    interaction_actions = (3, 5)  # pickup, toggle (drop and done are never explored)

    def __init__(
        self,
        *,
        env_id: Annotated[str, StartsWith("MiniGrid-")] = "MiniGrid-DoorKey-5x5-v0",
        num_envs: Annotated[int, AtLeast(1)] = 1,
        max_steps: Annotated[int, AtLeast(1)] | None = None,
    ) -> None:
        self.envs = _make_envs(env_id, num_envs, max_steps)
        first = self.envs[0].unwrapped
        self.env_id = env_id
        self.num_envs = num_envs
        self.num_actions = int(self.envs[0].action_space.n)
        # MiniGrid names all its actions; a task's action space holds the first n of them.
        self.action_names = tuple(action.name for action in first.actions)[: self.num_actions]
        self.size = int(first.width)
        self.max_steps = int(first.max_steps)
        self._obs = np.full((num_envs, self.obs_dim), -1, dtype=np.int64)
        self._needs_reset = True
        largest = max(self.size, int(first.height), NUM_DIRECTIONS) - 1
        self._set_spaces(spaces.Box(-1, largest, (self.obs_dim,), dtype=np.int64))

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start a new episode in every env; ``seed`` seeds env ``i`` with ``seed + i``."""
        for i, env in enumerate(self.envs):
            env.reset(seed=None if seed is None else seed + i)
            self._write_episode_start(i)
        self._needs_reset = False
        return self._obs.copy(), {}

    def step(
        self, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Apply one action per env; returns (obs, reward, terminated, truncated, info)."""
        actions = check_actions(self, actions).tolist()
        b = self.num_envs
        reward = np.zeros(b, dtype=np.float32)
        terminated = np.zeros(b, dtype=bool)
        truncated = np.zeros(b, dtype=bool)
        episode_steps = np.zeros(b, dtype=np.int64)
        before = self._obs[:, [_HAS_KEY, _DOOR_OPEN]].astype(bool)
        done_rows = []
        obs = self._obs
        for i, env in enumerate(self.envs):
            _, r, term, trunc, _ = env.step(actions[i])
            state = env.unwrapped
            reward[i], terminated[i], truncated[i] = r, term, trunc and not term
            episode_steps[i] = state.step_count
            obs[i, _DYNAMIC] = _dynamic_fields(state, obs[i, _DOOR_X], obs[i, _DOOR_Y])
            if term or trunc:
                done_rows.append(i)
        final_obs = obs.copy()
        after = final_obs[:, [_HAS_KEY, _DOOR_OPEN]].astype(bool)
        for i in done_rows:
            self.envs[i].reset()
            self._write_episode_start(i)
        info = {
            "final_obs": final_obs,
            "_final_obs": terminated | truncated,
            "key_picked": after[:, 0] & ~before[:, 0],
            "door_opened": after[:, 1] & ~before[:, 1],
            "success": terminated & (reward > 0),
            "episode_steps": episode_steps,
        }
        return obs.copy(), reward, terminated, truncated, info

    def state_flags(self) -> np.ndarray:
        """(has_key, door_open) of the current state, bool [B, 2]."""
        return self._obs[:, [_HAS_KEY, _DOOR_OPEN]].astype(bool)

    def state_dict(self) -> dict[str, Any]:
        """Each env's recorded episode (:class:`~procmem.envs.replay.EpisodeRecorder`) and
        the current obs."""
        return {
            "episodes": [env.recorded_episode for env in self.envs],
            "obs": self._obs.copy(),
            "needs_reset": self._needs_reset,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state produced by ``state_dict`` of an adapter with the same batch size
        (or, from checkpoints of earlier versions, one holding each env's attributes)."""
        envs = state["episodes"] if "episodes" in state else state["envs"]
        if len(envs) != self.num_envs:
            raise ValueError(f"state has {len(envs)} envs, expected {self.num_envs}")
        obs = np.asarray(state["obs"], dtype=np.int64)
        if obs.shape != self._obs.shape:
            raise ValueError(f"state['obs'] has shape {obs.shape}, expected {self._obs.shape}")
        self._obs = obs.copy()
        self._needs_reset = bool(state["needs_reset"])
        if "episodes" in state:
            self._replay(state["episodes"])
        else:
            self._set_attributes(state["envs"])

    def _replay(self, episodes: list[dict[str, Any] | None]) -> None:
        """Replay each env's episode; an env whose episode was not recorded (it continued
        from an older checkpoint) restarts, with a warning."""
        for env, episode in zip(self.envs, episodes, strict=True):
            env.recorded_episode = episode
        unrecorded = [i for i, episode in enumerate(episodes) if episode is None]
        if unrecorded and not self._needs_reset:
            warnings.warn(f"env=minigrid: envs {unrecorded} continued from a checkpoint of an "
                          "earlier version and their episodes were not recorded, so they "
                          "restart", stacklevel=3)
            for i in unrecorded:
                self.envs[i].reset()
                self._write_episode_start(i)

    def _set_attributes(self, attributes: list[dict[str, Any]]) -> None:
        """Put each env's attributes (a state of an earlier version) in place; the episodes in
        progress cannot be recorded, having begun before."""
        for env, env_state in zip(self.envs, attributes, strict=True):
            env.reset()  # lets the Gymnasium wrappers accept step(); the state is replaced next
            vars(env.unwrapped).update(copy.deepcopy(env_state))
            env.recorded_episode = None

    def close_extras(self, **kwargs: Any) -> None:
        """Close every wrapped env."""
        for env in self.envs:
            env.close()

    def _write_episode_start(self, i: int) -> None:
        state = self.envs[i].unwrapped
        self._obs[i, FIELD["key_x"]:FIELD["goal_y"] + 1] = _object_cells(state)
        self._obs[i, _DYNAMIC] = _dynamic_fields(state, self._obs[i, _DOOR_X],
                                                 self._obs[i, _DOOR_Y])

