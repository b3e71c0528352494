"""MiniPacman's rules for one env, in plain Python, one step at a time.

This is the reference the batched :class:`~procmem.envs.minipacman.MiniPacman` is tested
against (the same statistics under a random policy) and timed against (a per-env Python
implementation of the same rules, rendering included). It follows the spec's rules line by
line and favours being read next to them over speed; see the batched env's module docstring
for the rules themselves. Cells are ``(row, col)`` tuples; moves and headings use the action
codes 1 right, 2 up, 3 left, 4 down, and a new ghost may also get one of the two headings
that name no direction (:data:`NO_DIRECTION_HEADINGS`).
"""

from __future__ import annotations

import random

import numpy as np

from procmem.envs.minipacman import (
    AVOID_LEVEL_STEPS,
    COLOURS,
    EVENTS,
    MAZE,
    NO_DIRECTION_HEADINGS,
    NUM_PILLS,
    PILL_POWER,
    RANDOM_TURN,
    REVERSE_HEADING,
    REWARDS,
    SPAWN_BOX,
)

Cell = tuple[int, int]
STEP_OF = {0: (0, 0), 1: (0, 1), 2: (-1, 0), 3: (0, -1), 4: (1, 0)}  # action -> (drow, dcol)
FREE = [(r, c) for r, row in enumerate(MAZE) for c, ch in enumerate(row) if ch == "."]
PACMAN, GHOST, PILL, FOOD, WALL, EMPTY = (tuple(colour) for colour in COLOURS.tolist())


def moved(cell: Cell, direction: int) -> Cell:
    """Where a move from ``cell`` ends: a wall, or a heading that names no direction, stays."""
    drow, dcol = STEP_OF.get(direction, (0, 0))
    row, col = cell[0] + drow, cell[1] + dcol
    return (row, col) if MAZE[row][col] == "." else cell


class Ghost:
    """A ghost: its cell and heading."""

    def __init__(self, cell: Cell, heading: int) -> None:
        self.cell = cell
        self.heading = heading


class OracleMiniPacman:
    """One MiniPacman env in reward ``mode``, episodes cut after ``frame_cap`` steps; its
    randomness comes from ``random.Random(seed)``. With ``render=False`` steps return no
    frame (for statistics, where only events matter)."""

    def __init__(self, mode: str = "regular", frame_cap: int = 1000,
                 seed: int | None = None, render: bool = True) -> None:
        self.mode = mode
        self.frame_cap = frame_cap
        self.render = render
        self.rewards = REWARDS[mode]
        self.rng = random.Random(seed)
        self.reset()

    # --- episodes and levels --------------------------------------------------------------

    def reset(self) -> np.ndarray | None:
        self.steps = 0
        self.level = 0
        self.new_level()
        return self.observe() if self.render else None

    def new_level(self) -> None:
        """Refill the food, place the pills, then Pacman, then the ghosts; reset power."""
        self.level += 1
        self.level_steps = 0
        self.food = set(FREE)  # every free cell: 138
        self.pills = [self.rng.choice(FREE) for _ in range(NUM_PILLS)]
        self.pacman = self.rng.choice(FREE)
        self.ghosts = [Ghost(self.spawn_cell(), self.rng.choice((1, 2, *NO_DIRECTION_HEADINGS)))
                       for _ in range(1 + (self.level - 1) // 2)]
        self.power = 0

    def spawn_cell(self) -> Cell:
        """A free cell drawn uniformly outside the half-open box of rows ``[r-5, r+5)`` and
        columns ``[c-5, c+5)`` around Pacman at ``(r, c)``."""
        row, col = self.pacman
        allowed = [(r, c) for r, c in FREE
                   if not (row - SPAWN_BOX <= r < row + SPAWN_BOX
                           and col - SPAWN_BOX <= c < col + SPAWN_BOX)]
        return self.rng.choice(allowed)

    # --- a step ---------------------------------------------------------------------------

    def step(self, action: int) -> tuple[np.ndarray | None, float, bool, bool, list[int]]:
        """(obs, reward, terminated, truncated, events): events count :data:`EVENTS`."""
        events = dict.fromkeys(EVENTS, 0)
        events["step"] = 1
        self.steps += 1
        self.level_steps += 1
        self.power = max(0, self.power - 1)

        self.pacman = moved(self.pacman, action)
        if self.pacman in self.food:
            self.food.remove(self.pacman)
            events["food"] = 1
            if not self.food and self.mode in ("regular", "avoid"):
                self.new_level()  # at once: the rest of the step plays on the new level
        for index, pill in enumerate(self.pills):
            if pill == self.pacman:  # one pill a step
                del self.pills[index]
                events["pill"] = 1
                self.power = PILL_POWER
                if not self.pills and self.mode == "rush":
                    self.new_level()
                break

        speed = 0.5 + 0.1 * (self.level - 1)
        if self.power > 0:
            speed *= 0.5
        for index, ghost in enumerate(self.ghosts):
            if ghost.cell == self.pacman and self.meets(index, events):
                break  # a ghost was eaten: the ghost phase ends
            if self.rng.random() < speed:
                ghost.heading = self.heading(ghost)
                ghost.cell = moved(ghost.cell, ghost.heading)
                if ghost.cell == self.pacman and self.meets(index, events):
                    break

        killed = events["killed"] > 0
        if not killed and self.mode == "avoid" and self.level_steps == AVOID_LEVEL_STEPS:
            self.new_level()
        reward = sum(self.rewards[i] * events[name] for i, name in enumerate(EVENTS))
        truncated = not killed and self.steps >= self.frame_cap
        obs = self.observe() if self.render else None
        return obs, reward, killed, truncated, [events[name] for name in EVENTS]

    def meets(self, index: int, events: dict[str, int]) -> bool:
        """Ghost ``index`` is on Pacman's cell: Pacman dies without power, else the ghost is
        eaten (the last one in hunt and ambush starts the next level). Whether it was eaten."""
        if self.power == 0:
            events["killed"] = 1
            return False
        del self.ghosts[index]
        events["ghost"] = 1
        if not self.ghosts and self.mode in ("hunt", "ambush"):
            self.new_level()
        return True

    def heading(self, ghost: Ghost) -> int:
        """The direction a ghost takes when it moves (see the module docstring of the
        batched env)."""
        free = [d for d in (1, 2, 3, 4) if moved(ghost.cell, d) != ghost.cell]
        behind = REVERSE_HEADING[ghost.heading]
        if len(free) == 1:
            return free[0]
        if len(free) == 2:
            if ghost.heading in free:
                return ghost.heading
            return next(d for d in free if d != behind)
        options = [d for d in free if d != behind]
        drow, dcol = self.pacman[0] - ghost.cell[0], self.pacman[1] - ghost.cell[1]
        if drow == 0 and dcol == 0:
            return ghost.heading
        towards = [STEP_OF[d][0] * drow + STEP_OF[d][1] * dcol for d in options]
        if self.power == 0:
            if self.rng.random() < RANDOM_TURN:
                return self.rng.choice(options)
            return options[towards.index(max(towards))]
        return options[towards.index(min(towards))]

    # --- what the agent sees --------------------------------------------------------------

    def observe(self) -> np.ndarray:
        """The RGB frame, float32 (3, 15, 19): per cell the first of Pacman, a ghost (its
        green channel power / 20), a pill, food, a wall, empty."""
        ghosts = {ghost.cell for ghost in self.ghosts}
        edible = self.power / PILL_POWER
        frame = np.zeros((3, len(MAZE), len(MAZE[0])), dtype=np.float32)
        for r, row in enumerate(MAZE):
            for c, ch in enumerate(row):
                cell = (r, c)
                if cell == self.pacman:
                    colour = PACMAN
                elif cell in ghosts:
                    colour = (1.0, edible, 0.0)
                elif cell in self.pills:
                    colour = PILL
                elif cell in self.food:
                    colour = FOOD
                elif ch == "#":
                    colour = WALL
                else:
                    continue
                frame[:, r, c] = colour
        return frame
