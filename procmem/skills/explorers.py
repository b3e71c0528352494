"""Exploration policies acting on a batch of key/door/goal observations.

Every explorer follows :class:`Explorer`: ``act`` picks one action per env, ``reset(mask)``
tells it which envs started a new episode, and ``state_dict``/``load_state_dict`` save and
restore whatever it remembers, so a resumed run continues identically.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from procmem.envs.gridworld import ACTION_NAMES
from procmem.envs.keydoor import (
    BLOCKED,
    FIELD,
    FLAGS,
    HEADING_OF_NEIGHBOUR,
    NEIGHBOURS,
    NUM_DIRECTIONS,
    position,
)

EXPLORERS = ("random", "oracle", "count")
_UP, _DOWN, _LEFT, _RIGHT, _PICKUP, _OPEN = range(len(ACTION_NAMES))
_NEIGHBOUR_OF_HEADING = np.array([HEADING_OF_NEIGHBOUR.index(d) for d in range(NUM_DIRECTIONS)])
_HEADING_STEP = np.array(NEIGHBOURS)[_NEIGHBOUR_OF_HEADING]  # (dx, dy) of a step forward


class Explorer(Protocol):
    """Picks one action per env from a batch of observations.

    ``envs`` names the envs the rows of ``obs`` belong to (default: all, in order), so an
    agent can ask only for the envs it does not steer itself.
    """

    def act(self, obs: np.ndarray, rng: np.random.Generator,
            envs: np.ndarray | None = None) -> np.ndarray: ...

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

    def act(self, obs: np.ndarray, rng: np.random.Generator,
            envs: np.ndarray | None = None) -> np.ndarray:
        return rng.integers(self.num_actions, size=len(obs), dtype=np.int64)


class OracleExplorer(_Stateless):
    """Hand-written gridworld policy that reads the key, door and goal cells from the obs.

    It knows where everything is, so it is a reproduction preset of the original
    experiment only, not a learning baseline. Without the key it walks to the key
    (x first, then y) and picks it up; with the door closed it walks to the door and
    opens it; otherwise it walks to the goal. It ignores walls, so on a layout with walls
    it can get stuck against one. Deterministic: ``rng`` is unused.
    """

    def act(self, obs: np.ndarray, rng: np.random.Generator,
            envs: np.ndarray | None = None) -> np.ndarray:
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

    It reads only the agent's cell, heading, flags and ``blocked_*`` fields. Per env and
    episode it counts visits to each state (cell, heading where the env has one, flags).
    In a state where it has not yet tried every interaction (pick up, open), it tries the
    next one; otherwise it moves to the least-visited reachable state, ties broken at
    random: with ``movement="absolute"`` a step to an unblocked neighbour cell, with
    ``"egocentric"`` a turn left, a turn right or a step forward. So each state is
    probed once and the episode sweeps outwards instead of dithering. An interaction that
    just changed the flags is not tried again straight away (toggling an opened door
    would close it).
    """

    _STATE = ("visits", "tried", "last_probe", "last_flags")

    def __init__(self, num_envs: int, size: int, movement: str, move_actions: Sequence[int],
                 interaction_actions: Sequence[int]) -> None:
        if movement not in ("absolute", "egocentric"):
            raise ValueError(f"movement must be 'absolute' or 'egocentric', got {movement!r}")
        expected = 4 if movement == "absolute" else 3
        if len(move_actions) != expected:
            raise ValueError(f"{movement} movement needs {expected} move actions, "
                             f"got {list(move_actions)}")
        self.egocentric = movement == "egocentric"
        self.move_actions = np.asarray(move_actions, dtype=np.int64)
        self.interaction_actions = np.asarray(interaction_actions, dtype=np.int64)
        headings = NUM_DIRECTIONS if self.egocentric else 1
        self.visits = np.zeros((num_envs, size, size, headings, 4), dtype=np.int64)
        self.tried = np.zeros((*self.visits.shape, len(interaction_actions)), dtype=bool)
        self.last_probe = np.full(num_envs, -1, dtype=np.int64)
        self.last_flags = np.zeros(num_envs, dtype=np.int64)

    def act(self, obs: np.ndarray, rng: np.random.Generator,
            envs: np.ndarray | None = None) -> np.ndarray:
        rows = np.arange(len(obs)) if envs is None else np.asarray(envs)
        x, y = position(obs, "agent").T
        heading = obs[:, FIELD["dir"]] % NUM_DIRECTIONS if self.egocentric else np.zeros_like(x)
        flags = 2 * obs[:, FLAGS[0]] + obs[:, FLAGS[1]]
        here = (rows, x, y, heading, flags)
        self.visits[here] += 1
        changed = (self.last_probe[rows] >= 0) & (flags != self.last_flags[rows])
        self.tried[rows[changed], x[changed], y[changed], heading[changed], flags[changed],
                   self.last_probe[rows][changed]] = True

        untried = ~self.tried[here]  # [B, I]
        probe = untried.any(axis=1)
        which = np.argmax(untried, axis=1)
        self.tried[rows[probe], x[probe], y[probe], heading[probe], flags[probe],
                   which[probe]] = True

        scores = self._move_scores(obs, rows, x, y, heading, flags)
        scores = scores + rng.random(scores.shape) * 0.5  # breaks ties between equal counts
        moves = self.move_actions[np.argmin(scores, axis=1)]
        self.last_probe[rows] = np.where(probe, which, -1)
        self.last_flags[rows] = flags
        return np.where(probe, self.interaction_actions[which], moves).astype(np.int64)

    def _move_scores(self, obs: np.ndarray, envs: np.ndarray, x: np.ndarray, y: np.ndarray,
                     heading: np.ndarray, flags: np.ndarray) -> np.ndarray:
        """Visit counts of the state each move leads to; ``inf`` where the move is blocked."""
        size = self.visits.shape[1]
        rows = envs[:, None]
        blocked = obs[:, BLOCKED] > 0  # [B, 4] in NEIGHBOURS order
        if not self.egocentric:
            nx = np.clip(x[:, None] + np.array(NEIGHBOURS)[:, 0], 0, size - 1)
            ny = np.clip(y[:, None] + np.array(NEIGHBOURS)[:, 1], 0, size - 1)
            counts = self.visits[rows, nx, ny, 0, flags[:, None]].astype(float)
            return np.where(blocked, np.inf, counts)
        turns = np.stack([(heading - 1) % 4, (heading + 1) % 4], axis=1)
        turn_counts = self.visits[rows, x[:, None], y[:, None], turns, flags[:, None]]
        step = _HEADING_STEP[heading]
        fx = np.clip(x + step[:, 0], 0, size - 1)
        fy = np.clip(y + step[:, 1], 0, size - 1)
        forward = self.visits[rows[:, 0], fx, fy, heading, flags].astype(float)
        facing_blocked = blocked[np.arange(len(obs)), _NEIGHBOUR_OF_HEADING[heading]]
        forward = np.where(facing_blocked, np.inf, forward)
        return np.concatenate([turn_counts.astype(float), forward[:, None]], axis=1)

    def reset(self, mask: np.ndarray) -> None:
        """Forget the envs in ``mask`` (they started a new episode)."""
        self.visits[mask] = 0
        self.tried[mask] = False
        self.last_probe[mask] = -1

    def state_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name).copy() for name in self._STATE}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        for name in self._STATE:
            saved = np.asarray(state[name])
            if saved.shape != getattr(self, name).shape:
                raise ValueError(f"state[{name!r}] has shape {saved.shape}, "
                                 f"expected {getattr(self, name).shape}")
            setattr(self, name, saved.copy())


def make_explorer(name: str, env: Any) -> Explorer:
    """The explorer called ``name`` (one of ``EXPLORERS``), sized for ``env``."""
    if name == "random":
        return RandomExplorer(env.num_actions)
    if name == "oracle":
        if env.movement != "absolute":
            raise ValueError("explorer=oracle is the original gridworld's; it cannot steer "
                             f"{type(env).__name__}")
        return OracleExplorer()
    if name == "count":
        return CountExplorer(env.num_envs, env.size, env.movement, env.move_actions,
                             env.interaction_actions)
    raise ValueError(f"explorer must be one of {EXPLORERS}, got {name!r}")
