"""Env states as data: how an env's current episode began and the actions taken since.

:class:`EpisodeRecorder` wraps one Gymnasium env. Its ``recorded_episode`` is plain data
(numbers, strings, dicts, numpy arrays), which a checkpoint holds and loads without running
code. Setting it on a new env of the same kind resets that env the way the episode began and
replays its actions: the env reaches the same state, for any env that draws all its
randomness from ``env.np_random`` (Gymnasium's convention).
"""

from __future__ import annotations

import copy
from typing import Any

import gymnasium
from gymnasium.vector.utils import batch_space, concatenate, create_empty_array, iterate

#: The attribute a vector env's ``get_attr``/``set_attr`` reads and sets on each recorder.
RECORDED = "recorded_episode"


class EpisodeRecorder(gymnasium.Wrapper):
    """Records, for the current episode, the ``seed`` and ``options`` of the ``reset`` that
    began it (for a reset without a seed, the state of ``env.np_random`` just before it)
    and every action since. Recording costs one list append a step."""

    def __init__(self, env: gymnasium.Env) -> None:
        super().__init__(env)
        self._start: dict[str, Any] | None = None
        self._actions: list[Any] = []
        # Discrete actions are numbers, which cannot change; others may be views of the
        # caller's batch, so they are copied.
        self._copy = not isinstance(env.action_space, gymnasium.spaces.Discrete)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[Any, dict[str, Any]]:
        rng = None if seed is not None else self.unwrapped.np_random.bit_generator.state
        self._start = {"seed": None if seed is None else int(seed), "rng": rng,
                       "options": options}
        self._actions = []
        return self.env.reset(seed=seed, options=options)

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        self._actions.append(copy.deepcopy(action) if self._copy else action)
        return self.env.step(action)

    @property
    def recorded_episode(self) -> dict[str, Any] | None:
        """How the current episode began (``seed``, ``rng``, ``options``) and its ``steps``
        ``actions``, batched as the action space batches them; ``None`` before a reset."""
        if self._start is None:
            return None
        steps = len(self._actions)
        actions = create_empty_array(self.action_space, steps)
        if steps:
            actions = concatenate(self.action_space, self._actions, actions)
        return {**self._start, "steps": steps, "actions": actions}

    @recorded_episode.setter
    def recorded_episode(self, episode: dict[str, Any] | None) -> None:
        """Reset the env as ``episode`` began and replay its actions. ``None`` only forgets
        the record (the env's state was put in place another way)."""
        if episode is None:
            self._start, self._actions = None, []
            return
        if episode["rng"] is not None:
            self.unwrapped.np_random.bit_generator.state = episode["rng"]
        self.reset(seed=episode["seed"], options=episode["options"])
        for action in iterate(batch_space(self.action_space, episode["steps"]),
                              episode["actions"]):
            self.step(action)
