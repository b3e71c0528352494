"""Any registered Gymnasium env, batched by Gymnasium's own vector envs (``env=gymnasium``).

:class:`GymnasiumEnv` builds ``gymnasium.make_vec(id, num_envs, ...)`` with same-step
autoreset and presents it as a procmem batched env: ``info["final_obs"]`` as one batch (the
final observation of each env that ended, the current one elsewhere) instead of Gymnasium's
per-env object array, observation entries that are not numbers dropped (MiniGrid's
``mission`` text), and a state that is data (:mod:`procmem.envs.replay`).
"""

from __future__ import annotations

import copy
import signal
import warnings
from collections.abc import Mapping, Sequence
from typing import Annotated, Any

import gymnasium
import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorWrapper
from gymnasium.vector.async_vector_env import _async_worker

from procmem.envs.protocols import BatchedEnv
from procmem.envs.replay import RECORDED, EpisodeRecorder
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

    ``num_actions`` is the number of actions of a discrete action space, else 0. The state
    is how each env's episode began and the actions since, so a resumed run continues
    identically, sync or async, for envs that draw their randomness from ``env.np_random``.
    Async workers ignore SIGINT and end quietly at SIGTERM: this process alone stops a run.
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
        env_kwargs = _env_kwargs(kwargs)
        wrapper_classes = [(path, _wrapper_class(path)) for path in wrappers]

        def wrap(env: gymnasium.Env) -> gymnasium.Env:
            for path, wrapper in wrapper_classes:
                try:
                    env = wrapper(env)
                except TypeError as error:
                    raise SettingError("wrappers", f"{path}: {error}") from None
            return EpisodeRecorder(_numeric_observations(env))

        vector_kwargs: dict[str, Any] = {"autoreset_mode": AutoresetMode.SAME_STEP}
        if vectorization == "async":
            vector_kwargs["worker"] = _quiet_worker
        try:
            envs = gymnasium.make_vec(id, num_envs=num_envs, vectorization_mode=vectorization,
                                      vector_kwargs=vector_kwargs, wrappers=[wrap], **env_kwargs)
        except (gymnasium.error.Error, ModuleNotFoundError) as error:
            raise SettingError("id", f"{id!r}: {str(error).splitlines()[0]}") from None
        except TypeError as error:
            if not env_kwargs:
                raise
            reason = str(error).splitlines()[0].split(" was raised from the environment")[0]
            raise SettingError("kwargs", f"{env_kwargs}: {reason}") from None
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
        """Each env's recorded episode (:class:`~procmem.envs.replay.EpisodeRecorder`)."""
        return {"episodes": list(self.env.get_attr(RECORDED))}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Replay each env's recorded episode. A state of an earlier version holds no
        episodes: the envs restart, with a warning, and its pickled envs are never loaded."""
        episodes = state.get("episodes")
        if episodes is None:
            saved = ("was saved as pickled objects, which are not loaded"
                     if isinstance(state.get("envs"), bytes)
                     else "was not saved (async, or not picklable)")
            warnings.warn(f"env=gymnasium id={self.id}: the checkpoint's env state {saved}, "
                          "so the envs restart and the resumed run does not continue "
                          "identically", stacklevel=2)
            self.env.reset()
            return
        if len(episodes) != self.num_envs:
            raise ValueError(f"state has {len(episodes)} envs, expected {self.num_envs}")
        self.env.set_attr(RECORDED, list(episodes))


def _env_kwargs(kwargs: Mapping[str, Any] | None) -> dict[str, Any]:
    """``kwargs`` as a dict of argument names to values, else a ``SettingError``."""
    if kwargs is None:
        return {}
    if not isinstance(kwargs, Mapping) or not all(isinstance(key, str) for key in kwargs):
        raise SettingError("kwargs", f"{kwargs!r} is not a mapping of the env's argument "
                                     "names to values")
    return dict(kwargs)


def _wrapper_class(path: str) -> type[gymnasium.Wrapper]:
    """The wrapper class at import path ``path``, else a ``SettingError`` saying why not;
    nothing it names is called."""
    try:
        found = import_object(path)
    except (ImportError, AttributeError, ValueError) as error:
        raise SettingError("wrappers", f"{path}: cannot be imported: {error}") from None
    if not (isinstance(found, type) and issubclass(found, gymnasium.Wrapper)):
        kind = "a class" if isinstance(found, type) else f"a {type(found).__name__}"
        raise SettingError("wrappers", f"{path}: {kind}, not a subclass of gymnasium.Wrapper")
    return found


def _quiet_worker(*args: Any) -> None:
    """Gymnasium's async worker, without the run's stop signals: it ignores SIGINT (Ctrl-C
    reaches the whole process group; the main process stops the run) and ends without a
    traceback at SIGTERM, which the main process sends its workers when it closes or exits,
    or when the main process is gone (killed)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        _async_worker(*args)
    except BrokenPipeError:  # no main process left to report to
        pass


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

