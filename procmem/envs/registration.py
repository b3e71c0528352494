"""procmem's envs in Gymnasium's registry, one env at a time or batched.

Importing :mod:`procmem.envs` registers them::

    import gymnasium
    import procmem.envs  # noqa: F401  (or gymnasium.make("procmem.envs:procmem/..."))

    env = gymnasium.make("procmem/MiniPacman-v0", mode="hunt")  # one env
    envs = gymnasium.make_vec("procmem/MiniPacman-v0", num_envs=64, mode="hunt")  # batched

``make`` gives a :class:`SingleEnv`: one env of the batched class, with the usual Gymnasium
contract (an episode that ends returns its last observation; call ``reset`` to start the
next). ``make_vec`` gives the batched class itself (its ``vector_entry_point``). Keyword
arguments are the env's settings.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import gymnasium
import numpy as np

from procmem.envs.batched import BatchedVectorEnv
from procmem.imports import import_object

ENVS = {  # registered name -> the batched class
    "GridWorld": "procmem.envs.gridworld:GridWorld",
    "ToolEnv": "procmem.envs.toolenv:ToolEnv",
    "Expressions": "procmem.envs.expressions:ExpressionEnv",
    "MiniPacman": "procmem.envs.minipacman:MiniPacman",
}
VERSION = 0


def env_id(name: str) -> str:
    """The Gymnasium id of a registered env, ``procmem/<name>-v0``."""
    return f"procmem/{name}-v{VERSION}"


class SingleEnv(gymnasium.Env):
    """One env of a procmem batched env (built with ``num_envs=1``) as a plain Gymnasium env.

    The batched env resets an ended episode within its step; this env returns the episode's
    last observation instead, and the next :meth:`reset` starts a new episode.
    """

    metadata = {"render_modes": []}

    def __init__(self, batched: BatchedVectorEnv) -> None:
        self.batched = batched
        self.observation_space = batched.single_observation_space
        self.action_space = batched.single_action_space

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[Any, dict[str, Any]]:
        super().reset(seed=seed)
        obs, info = self.batched.reset(seed=seed, options=options)
        return _first(obs), _first(info)

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.batched.step(np.array([action]))
        if terminated[0] or truncated[0]:
            obs = info["final_obs"]
        info = {key: value for key, value in info.items()
                if key not in ("final_obs", "_final_obs")}
        return (_first(obs), float(reward[0]), bool(terminated[0]), bool(truncated[0]),
                _first(info))


def make_single(path: str, **settings: Any) -> SingleEnv:
    """A :class:`SingleEnv` of the batched class at ``module:Class`` ``path``."""
    return SingleEnv(import_object(path)(num_envs=1, **settings))


def register_envs() -> None:
    """Register every env of :data:`ENVS` (once)."""
    for name, path in ENVS.items():
        if env_id(name) not in gymnasium.registry:
            gymnasium.register(env_id(name), entry_point=partial(make_single, path),
                               vector_entry_point=path)


def _first(batch: Any) -> Any:
    """Row 0 of a batch: of an array, or of each entry of a dict of them."""
    if isinstance(batch, dict):
        return {key: _first(value) for key, value in batch.items()}
    return batch[0]
