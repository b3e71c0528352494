"""What an environment offers, as protocols that algorithms, the app and reporters check.

Every env is a :class:`BatchedEnv`. An env that offers more says so by subclassing the
protocols below, and users of an env ask with ``isinstance`` (each protocol is
runtime-checkable), never by probing attributes one at a time:

- :class:`StagedEnv`: problems come in stages (tool use); a curriculum can pick them.
- :class:`PixelEnv`: observations are RGB images, so episodes can be drawn.
- :class:`EventRewardEnv`: each step counts events and the reward is a fixed weighting of
  them, so an environment model can predict rewards through events (MiniPacman).
- :class:`SubgoalEnv`: the key/door/goal tasks (gridworld, MiniGrid) with their subgoal
  events, the observation layout of :mod:`procmem.envs.keydoor` and how moves work.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
from gymnasium.spaces import Space

StageSampler = Callable[[int, np.random.Generator], np.ndarray]


@runtime_checkable
class BatchedEnv(Protocol):
    """``num_envs`` envs stepped together, arrays in and arrays out: a Gymnasium vector env
    (single and batched spaces) with ``num_actions`` discrete actions.

    ``step`` returns ``(obs, reward, terminated, truncated, info)`` with one row per env.
    Envs whose episode ended are reset within the same ``step`` call (Gymnasium's
    same-step autoreset): the returned observation starts the next episode and
    ``info["final_obs"]`` holds the observation the episode ended on, where
    ``info["_final_obs"]`` is true. Where an env can tell whether an episode was solved,
    ``info["success"]`` says so for the episodes that ended. ``state_dict`` holds
    everything a resumed run needs to continue identically.
    """

    num_envs: int
    num_actions: int
    single_observation_space: Space
    single_action_space: Space

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[Any, dict[str, Any]]: ...

    def step(self, actions: np.ndarray
             ) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None: ...


@runtime_checkable
class StagedEnv(BatchedEnv, Protocol):
    """Problems in numbered stages (0 the easiest).

    ``stages`` are the stages trained when nothing else picks them, ``eval_stages`` those an
    evaluation reports. :meth:`set_stage_sampler` plugs in who picks the stage of every new
    problem (a curriculum); ``reset(seed=..., options={"stages": ...})`` forces the stages of
    the problems it starts. :meth:`describe` spells out the current problems,
    :meth:`program` the actions an agent took, and ``info["final_answer"]`` holds the answer
    of episodes that ended.
    """

    num_stages: int
    stages: Sequence[int]
    eval_stages: Sequence[int]

    def set_stage_sampler(self, sampler: StageSampler) -> None: ...

    def describe(self) -> list[dict[str, Any]]: ...

    def program(self, actions: Sequence[int]) -> str: ...


@runtime_checkable
class PixelEnv(BatchedEnv, Protocol):
    """Observations are float RGB images ``[B, *obs_shape]``, ``obs_shape = (3, H, W)``,
    values in [0, 1]."""

    obs_shape: tuple[int, int, int]


@runtime_checkable
class EventRewardEnv(BatchedEnv, Protocol):
    """Each step counts :attr:`event_names` in ``info["events"]`` (float ``[B, E]``) and
    the reward is ``events @ reward_vector``."""

    event_names: tuple[str, ...]
    reward_vector: np.ndarray


@runtime_checkable
class SubgoalEnv(BatchedEnv, Protocol):
    """A key/door/goal task: int observations ``[B, obs_dim]`` laid out as in
    :mod:`procmem.envs.keydoor`, the subgoal events ``key_picked``, ``door_opened`` and
    ``success`` in ``info``, and how moves work (``movement``, ``move_actions``,
    ``interaction_actions``) for explorers that do not know where objects are."""

    obs_dim: int
    size: int
    max_steps: int
    flag_names: tuple[str, ...]
    movement: str
    move_actions: tuple[int, ...]
    interaction_actions: tuple[int, ...]


# What each capability is, in words (for the errors that say an env lacks one).
CAPABILITIES: dict[type, str] = {
    StagedEnv: "problems in stages",
    PixelEnv: "image observations",
    EventRewardEnv: "rewards counted as events",
    SubgoalEnv: "subgoal events (key, door, goal)",
}


def offers(env_class: type, capability: type) -> bool:
    """Whether an env class declares ``capability`` (one of :data:`CAPABILITIES`): its
    instances offer it whatever their settings."""
    return capability in env_class.__mro__
