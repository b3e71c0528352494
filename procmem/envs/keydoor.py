"""Observation layout and subgoals shared by the key/door/goal tasks (gridworld, MiniGrid).

Every env the skill-library agent runs on returns observations as int64 rows with these
fields, so one agent, one explorer and one set of skill features serve them all:

- ``x, y``: the agent's cell; ``dir``: its heading (MiniGrid: 0 +x, 1 +y, 2 -x, 3 -y), or
  ``NO_DIRECTION`` where moves are absolute (gridworld);
- ``has_key, door_open``: the two state flags (skill preconditions);
- ``key_x, key_y``: where the key lay when the episode started; ``door_*``, ``goal_*``:
  the door and goal cells;
- ``blocked_xpos, blocked_xneg, blocked_ypos, blocked_yneg``: 1 when the neighbouring cell
  in that direction cannot be entered (border, wall, closed door where doors block).

Envs also say how the agent moves, for explorers that must not know where objects are:
``movement`` is ``"absolute"`` (``move_actions`` step to the neighbour in the order of the
``blocked_*`` fields: +x, -x, +y, -y) or ``"egocentric"`` (``move_actions`` are turn left,
turn right, forward; turning right goes from heading ``d`` to ``(d + 1) % 4``), and
``interaction_actions`` are the actions that act on objects.
"""

from __future__ import annotations

from dataclasses import dataclass

OBS_FIELDS = (
    "x", "y", "dir", "has_key", "door_open",
    "key_x", "key_y", "door_x", "door_y", "goal_x", "goal_y",
    "blocked_xpos", "blocked_xneg", "blocked_ypos", "blocked_yneg",
)
FIELD = {name: index for index, name in enumerate(OBS_FIELDS)}
FLAG_NAMES = ("has_key", "door_open")
FLAGS = [FIELD[name] for name in FLAG_NAMES]
BLOCKED = [FIELD[f"blocked_{d}"] for d in ("xpos", "xneg", "ypos", "yneg")]
NO_DIRECTION = -1
NUM_DIRECTIONS = 4
# Cell offsets of the +x, -x, +y, -y neighbours (the blocked_* order), and the heading that
# faces each of them.
NEIGHBOURS = ((1, 0), (-1, 0), (0, 1), (0, -1))
HEADING_OF_NEIGHBOUR = (0, 2, 1, 3)


def position(obs, name: str):
    """The ``(x, y)`` columns of ``name`` (``agent``, ``key``, ``door`` or ``goal``)."""
    if name == "agent":
        return obs[..., [FIELD["x"], FIELD["y"]]]
    return obs[..., [FIELD[f"{name}_x"], FIELD[f"{name}_y"]]]


@dataclass(frozen=True)
class Subgoal:
    """A step of the task: its skill name, the ``info`` event that marks it, its target."""

    name: str
    event: str
    target: str


SUBGOALS = (
    Subgoal("acquire_key", "key_picked", "key"),
    Subgoal("open_door", "door_opened", "door"),
    Subgoal("reach_goal", "success", "goal"),
)
