"""What procmem's batched envs share: the Gymnasium vector-env base, action checks and
array-held state."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space


class BatchedVectorEnv(VectorEnv):
    """A procmem batched env as a :class:`gymnasium.vector.VectorEnv`.

    Episodes that end are reset within the same ``step`` (Gymnasium's same-step autoreset,
    declared in ``metadata``): the returned observation starts the next episode and
    ``info["final_obs"]`` holds, in the rows ``info["_final_obs"]`` marks (the envs that
    ended this step), the observation each episode ended on; other rows are unspecified.
    Actions are discrete.
    Subclasses call :meth:`_set_spaces` once their sizes are known.
    """

    metadata = {"autoreset_mode": AutoresetMode.SAME_STEP, "render_modes": []}
    num_actions: int

    def _set_spaces(self, observation: spaces.Space) -> None:
        """The single and batched observation and action spaces of ``num_envs`` envs."""
        self.single_observation_space = observation
        self.single_action_space = spaces.Discrete(self.num_actions)
        self.observation_space = batch_space(observation, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)


def check_actions(env: Any, actions: np.ndarray) -> np.ndarray:
    """The actions of ``env.step``: ``RuntimeError`` before the first ``reset``; else
    ``actions`` as int64 ``[env.num_envs]``, each in ``[0, env.num_actions)``, or
    ``ValueError``."""
    if env._needs_reset:
        raise RuntimeError("call reset() before step()")
    num_envs, num_actions = env.num_envs, env.num_actions
    actions = np.asarray(actions)
    if actions.shape != (num_envs,):
        raise ValueError(f"actions must have shape ({num_envs},), got {actions.shape}")
    if not np.issubdtype(actions.dtype, np.integer):
        raise ValueError(f"actions must be integers, got dtype {actions.dtype}")
    if np.any((actions < 0) | (actions >= num_actions)):
        raise ValueError(f"actions must lie in [0, {num_actions}), got {actions}")
    return actions.astype(np.int64)


class ArrayState:
    """State held in numpy arrays (named by ``state_arrays``), a generator ``_rng`` and a
    ``_needs_reset`` flag: saved deep-copied, restored with shape checks."""

    state_arrays: tuple[str, ...] = ()
    _rng: np.random.Generator
    _needs_reset: bool

    def state_dict(self) -> dict[str, Any]:
        """Full env state, deep-copied, including the generator's state."""
        state = {name: getattr(self, name).copy() for name in self.state_arrays}
        state["rng"] = copy.deepcopy(self._rng.bit_generator.state)
        state["needs_reset"] = self._needs_reset
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state produced by ``state_dict`` of an env with the same settings."""
        for name in self.state_arrays:
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
