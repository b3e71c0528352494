"""Any registered Gymnasium env, batched by Gymnasium's own vector envs (``env=gymnasium``).

:class:`GymnasiumEnv` builds ``gymnasium.make_vec(id, num_envs, ...)`` with same-step
autoreset and presents it as a procmem batched env: ``info["final_obs"]`` as one batch (the
final observation of each env that ended, the current one elsewhere) instead of Gymnasium's
per-env object array, observation entries that are not numbers dropped (MiniGrid's
``mission`` text), and a state that checkpoints can hold.
"""

from __future__ import annotations

import copy
import pickle
import warnings
from collections.abc import Mapping, Sequence
from typing import Annotated, Any

import gymnasium
import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorWrapper

from procmem.envs.protocols import BatchedEnv
from procmem.imports import import_object
from procmem.settings import AtLeast, NonEmpty, OneOf, SettingError, configurable

VECTORIZATION = ("sync", "async")
NUMERIC = (spaces.Box, spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary)


@configurable
class GymnasiumEnv(VectorWrapper, BatchedEnv):
    """``num_envs`` copies of the Gymnasium env ``id`` (``module:id`` imports the module that
    registers it first, e.g. ``minigrid:MiniGrid-DoorKey-5x5-v0``), made with ``kwargs`` and
    wrapped, each, by the wrapper classes ``wrappers`` names (``module.Class``, applied in
    order), stepped in this process (``vectorization="sync"``) or one process per env
    (``"async"``).

    ``num_actions`` is the number of actions of a discrete action space, else 0. A sync env's
    state is every env, pickled, so a resumed run continues identically. Envs that live in
    other processes (async) or cannot be pickled restart, with a warning, when a run resumes.
    """

    def __init__(
        self,
        *,
        id: Annotated[str, NonEmpty()] = "CartPole-v1",  # noqa: A002 (Gymnasium's name)
        num_envs: Annotated[int, AtLeast(1)] = 16,
        kwargs: Mapping[str, Any] | None = None,
        wrappers: Sequence[str] = (),
        vectorization: Annotated[str, OneOf(VECTORIZATION)] = "sync",
    ) -> None:
        wrapper_classes = [import_object(path) for path in wrappers]

        def wrap(env: gymnasium.Env) -> gymnasium.Env:
            for wrapper in wrapper_classes:
                env = wrapper(env)
            return _numeric_observations(env)

        try:
            envs = gymnasium.make_vec(
                id, num_envs=num_envs, vectorization_mode=vectorization,
                vector_kwargs={"autoreset_mode": AutoresetMode.SAME_STEP}, wrappers=[wrap],
                **dict(kwargs or {}))
        except (gymnasium.error.Error, ModuleNotFoundError) as error:
            raise SettingError("id", f"{id!r}: {str(error).splitlines()[0]}") from None
        super().__init__(envs)
        self.id = id
        action_space = self.single_action_space
        self.num_actions = int(action_space.n) if isinstance(action_space, spaces.Discrete) else 0

    def step(self, actions: np.ndarray
             ) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(actions)
        done = terminated | truncated
        final = copy.deepcopy(obs) if done.any() else obs
        for i in np.flatnonzero(done):  # only the envs whose episode ended this step
            _set_row(final, i, info["final_obs"][i])
        info = {**info, "final_obs": final, "_final_obs": done}
        return obs, reward.astype(np.float32), terminated, truncated, info

    def state_dict(self) -> dict[str, Any]:
        """Every env, pickled (sync envs that pickle), else ``None``."""
        if self.settings["vectorization"] != "sync":
            return {"envs": None}
        try:
            return {"envs": pickle.dumps(self.env.envs)}
        except (pickle.PicklingError, AttributeError, TypeError):
            return {"envs": None}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state["envs"] is None:
            warnings.warn(f"env=gymnasium id={self.id}: its envs could not be saved (async, or "
                          "not picklable), so they restart and the resumed run does not "
                          "continue identically", stacklevel=2)
            self.env.reset()
            return
        envs = pickle.loads(state["envs"])
        if len(envs) != self.num_envs:
            raise ValueError(f"state has {len(envs)} envs, expected {self.num_envs}")
        self.env.envs = envs


def _numeric_observations(env: gymnasium.Env) -> gymnasium.Env:
    """``env``, its dict observation without the entries that are not numbers."""
    space = env.observation_space
    if isinstance(space, spaces.Dict) and not all(isinstance(sub, NUMERIC)
                                                  for sub in space.spaces.values()):
        return NumericObservations(env)
    return env


class NumericObservations(gymnasium.ObservationWrapper):
    """Leaves out the entries of a dict observation that are not numbers (MiniGrid's mission
    text), which no network reads and no batch holds."""

    def __init__(self, env: gymnasium.Env) -> None:
        super().__init__(env)
        self.keys = [key for key, sub in env.observation_space.spaces.items()
                     if isinstance(sub, NUMERIC)]
        self.observation_space = spaces.Dict({key: env.observation_space[key]
                                              for key in self.keys})

    def observation(self, observation: dict[str, Any]) -> dict[str, Any]:
        return {key: observation[key] for key in self.keys}


def _set_row(batch: Any, row: int, value: Any) -> None:
    """Put one env's observation into row ``row`` of a batch (an array or a dict of them)."""
    if isinstance(batch, dict):
        for key in batch:
            batch[key][row] = value[key]
    else:
        batch[row] = value

