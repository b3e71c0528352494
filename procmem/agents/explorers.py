"""Exploration policies acting on a batch of key/door/goal observations.

Every explorer follows :class:`Explorer`: ``act`` picks one action per env, ``reset(mask)``
tells it which envs started a new episode, and ``state_dict``/``load_state_dict`` save and
restore whatever it remembers, so a resumed run continues identically.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np

from procmem.envs.gridworld import ACTION_NAMES, MOVES, NEIGHBOURS, GridWorld
from procmem.envs.keydoor import BLOCKED, FIELD, FLAGS, position

EXPLORERS = ("random", "oracle", "count")
_UP, _DOWN, _LEFT, _RIGHT, _PICKUP, _OPEN = (
    ACTION_NAMES.index(a)
    for a in ("move_up", "move_down", "move_left", "move_right", "pickup_key", "open_door")
)
# Gridworld actions 0..3 move; the blocked_* column each of them would run into.
_NUM_MOVES = 4
_MOVE_BLOCKED = [BLOCKED[NEIGHBOURS.tolist().index(move)] for move in MOVES[:_NUM_MOVES].tolist()]


class Explorer(Protocol):
    """Picks one action per env from a batch of observations."""

    def act(self, obs: np.ndarray, rng: np.random.Generator) -> np.ndarray: ...

    def reset(self, mask: np.ndarray) -> None: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None: ...


class _Stateless:
    """An explorer that remembers nothing: resetting, saving and loading do nothing."""

    def reset(self, mask: np.ndarray) -> None:
        """Nothing to forget when an episode starts."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Nothing to restore."""


class RandomExplorer(_Stateless):
    """Uniformly random actions."""

    def __init__(self, num_actions: int = len(ACTION_NAMES)) -> None:
        if num_actions < 1:
            raise ValueError(f"num_actions must be >= 1, got {num_actions}")
        self.num_actions = num_actions

    def act(self, obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return rng.integers(self.num_actions, size=len(obs), dtype=np.int64)


class OracleExplorer(_Stateless):
    """Hand-written policy that reads the key, door and goal cells from the obs.

    It knows where everything is, so it is a reproduction preset of the original
    experiment only, not a learning baseline. Without the key it walks to the key
    (x first, then y) and picks it up; with the door closed it walks to the door and
    opens it; otherwise it walks to the goal. It ignores walls, so on a layout with walls
    it can get stuck against one. Deterministic: ``rng`` is unused.
    """

    def act(self, obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        has_key = obs[:, FIELD["has_key"]].astype(bool)
        door_open = obs[:, FIELD["door_open"]].astype(bool)
        target = np.where(
            ~has_key[:, None],
            position(obs, "key"),
            np.where(~door_open[:, None], position(obs, "door"), position(obs, "goal")),
        )
        dx, dy = (target - position(obs, "agent")).T
        return np.select(
            [dx > 0, dx < 0, dy > 0, dy < 0, ~has_key],
            [_RIGHT, _LEFT, _UP, _DOWN, _PICKUP],
            default=_OPEN,
        ).astype(np.int64)


class CountExplorer:
    """Episodic count-based exploration that does not know where the objects are.

    Per env it counts, within the current episode, the visits to each (agent cell,
    has_key, door_open) state. Each step it counts the current state, then with
    probability ``interact_prob`` takes a random interaction (actions ``4..num_actions-1``),
    else the move (actions 0..3) into the unblocked neighbour whose state under the current
    flags it visited least, ties broken at random. It reads only the agent's cell, the flags
    and the ``blocked_*`` fields; ``reset(mask)`` clears the counts of envs that started a
    new episode.
    """

    def __init__(
        self, num_envs: int, size: int, num_actions: int = len(ACTION_NAMES),
        interact_prob: float = 0.2,
    ) -> None:
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size}")
        if num_actions <= _NUM_MOVES:
            raise ValueError(
                f"num_actions must be > {_NUM_MOVES} (moves, then interactions), got {num_actions}"
            )
        if not 0.0 <= interact_prob <= 1.0:
            raise ValueError(f"interact_prob must be in [0, 1], got {interact_prob}")
        self.num_actions = num_actions
        self.interact_prob = interact_prob
        # [B, x, y, 2 * has_key + door_open]
        self.counts = np.zeros((num_envs, size, size, 4), dtype=np.int64)

    def act(self, obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        rows = np.arange(len(obs))
        cell = position(obs, "agent")
        flags = 2 * obs[:, FLAGS[0]] + obs[:, FLAGS[1]]
        self.counts[rows, cell[:, 0], cell[:, 1], flags] += 1

        size = self.counts.shape[1]
        neighbours = np.clip(cell[:, None, :] + MOVES[:_NUM_MOVES], 0, size - 1)  # [B, 4, 2]
        visits = self.counts[rows[:, None], neighbours[..., 0], neighbours[..., 1], flags[:, None]]
        score = np.where(obs[:, _MOVE_BLOCKED] > 0, np.inf, visits + rng.random(visits.shape))
        moves = np.argmin(score, axis=1)

        interact = rng.random(len(obs)) < self.interact_prob
        interaction = rng.integers(_NUM_MOVES, self.num_actions, size=len(obs))
        return np.where(interact, interaction, moves).astype(np.int64)

    def reset(self, mask: np.ndarray) -> None:
        """Forget the visits of the envs in ``mask`` (they started a new episode)."""
        self.counts[mask] = 0

    def state_dict(self) -> dict[str, Any]:
        return {"counts": self.counts.copy()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        counts = np.asarray(state["counts"], dtype=np.int64)
        if counts.shape != self.counts.shape:
            raise ValueError(
                f"state['counts'] has shape {counts.shape}, expected {self.counts.shape}"
            )
        self.counts = counts.copy()


def make_explorer(name: str, env: GridWorld) -> Explorer:
    """The explorer called ``name`` (one of ``EXPLORERS``), sized for ``env``."""
    if name == "random":
        return RandomExplorer(env.num_actions)
    if name == "oracle":
        return OracleExplorer()
    if name == "count":
        return CountExplorer(env.num_envs, env.size, env.num_actions)
    raise ValueError(f"explorer must be one of {EXPLORERS}, got {name!r}")
