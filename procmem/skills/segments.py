"""Cut an episode into subgoal segments and shorten each through the states it visited.

A segment runs from the step after one subgoal event (or the episode start) to the step whose
action fired the next event (key picked up, door opened, goal reached). The env is
deterministic, so every transition the episode took is a transition the agent can take again:
a breadth-first search over them from the segment's first state to the state where the event
fired gives the shortest path through experienced transitions. Wandering, loops and dead ends
of the exploration drop out of the demonstration.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from procmem.envs.keydoor import FIELD, SUBGOALS, Subgoal

_KEY_FIELDS = [FIELD[name] for name in ("x", "y", "dir", "has_key", "door_open")]


@dataclass(frozen=True)
class Segment:
    """A shortened demonstration of one subgoal: the obs before each action, and the actions."""

    subgoal: Subgoal
    obs: np.ndarray  # [L, obs_dim]
    actions: np.ndarray  # [L]


def state_keys(obs: np.ndarray) -> list[tuple[int, ...]]:
    """Hashable agent states (cell, heading, flags) of obs rows."""
    return [tuple(row) for row in obs[:, _KEY_FIELDS].tolist()]


def shortest_path(keys: list[tuple[int, ...]], actions: np.ndarray, start: int,
                  end: int) -> list[int]:
    """Steps ``t`` (indices into the episode) of a shortest action path from state ``keys[start]``
    to state ``keys[end]`` over transitions ``keys[t] -> keys[t + 1]`` seen in the episode."""
    target = keys[end]
    edges: dict[tuple[int, ...], list[int]] = {}
    for t in range(len(actions)):
        if keys[t] != keys[t + 1]:
            edges.setdefault(keys[t], []).append(t)
    came_from: dict[tuple[int, ...], int | None] = {keys[start]: None}
    queue = deque([keys[start]])
    while queue and target not in came_from:
        state = queue.popleft()
        for t in edges.get(state, ()):
            if keys[t + 1] not in came_from:
                came_from[keys[t + 1]] = t
                queue.append(keys[t + 1])
    steps: list[int] = []
    state = target
    while came_from[state] is not None:
        t = came_from[state]
        steps.append(t)
        state = keys[t]
    return steps[::-1]


def subgoal_segments(obs: np.ndarray, actions: np.ndarray,
                     events: Mapping[str, np.ndarray]) -> list[Segment]:
    """The shortened segment of every subgoal reached in one episode.

    ``obs`` holds the ``T + 1`` observations of a ``T``-step episode (the last one terminal),
    ``actions`` the ``T`` actions and ``events[name]`` a ``[T]`` bool array per subgoal event.
    """
    keys = state_keys(obs)
    fired = sorted((int(t), subgoal) for subgoal in SUBGOALS
                   for t in np.flatnonzero(events[subgoal.event]))
    segments, start = [], 0
    for t_event, subgoal in fired:
        steps = [*shortest_path(keys, actions[:t_event], start, t_event), t_event]
        segments.append(Segment(subgoal, obs[steps], actions[steps]))
        start = t_event + 1
    return segments
