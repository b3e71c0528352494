"""Batched MiniPacman (DeepMind's "PillEater", the I2A paper's test bed), vectorised in numpy.

The rules are the reference's, as ``shared/specs/minipacman.md`` states them;
:mod:`procmem.envs.minipacman_oracle` plays the same rules one env at a time in plain Python,
and the tests hold this env to it.

**Maze.** :data:`MAZE`, 15 rows x 19 columns, 138 free cells, no dead ends. Cells are
addressed by their flat index ``row * 19 + col``. Actions :data:`ACTION_NAMES`: ``0`` stay,
``1`` right (col + 1), ``2`` up (row - 1), ``3`` left, ``4`` down; a move into a wall stays.

**Levels.** A level fills every free cell with food (138, the cells under the pills and
Pacman's start cell included), then places the :data:`NUM_PILLS` power pills and Pacman,
each on a free cell drawn uniformly and independently (a pill may share its cell with the
other pill or with Pacman), then ``min(1 + (level - 1) // 2, MAX_GHOSTS)`` ghosts, each on
a free cell drawn uniformly outside the half-open box of rows ``[r - 5, r + 5)`` and columns
``[c - 5, c + 5)`` around Pacman at ``(r, c)`` (offsets -5..+4 are excluded, +5 is allowed;
the box's lower edges clipped at 1), with a heading drawn uniformly from right, up and the
two :data:`NO_DIRECTION_HEADINGS`. ``power`` starts at 0. The ghost cap (the spec has none)
matters only past level 11, which a 1,000-step episode of ``regular`` or ``avoid`` never
reaches.

**Step order.** (1) ``power`` (the pill timer) drops by 1, not below 0. (2) Pacman moves and
eats what lies on its new cell (staying also eats): food (event ``food``), then one power
pill there (event ``pill``, ``power = 20``). Eating the last food (``regular``, ``avoid``)
or the last pill (``rush``) starts the next level at once, before the pill check or the
ghost phase, which then play on the new level. (3) The ghost phase, ghost by ghost: if a
ghost shares Pacman's cell, Pacman dies when ``power == 0`` (event ``killed``), else the
ghost is eaten (event ``ghost``); then the ghost moves with probability ``speed`` and the
same check repeats. Eating a ghost ends the ghost phase: the ghosts after it neither move
nor collide this step; eating the last ghost (``hunt``, ``ambush``) starts the next level.
Pacman's death does not end the phase. (4) In ``avoid``, the level also ends once it has
lasted :data:`AVOID_LEVEL_STEPS` steps (not on a step Pacman dies). (5) Pacman's death
terminates the episode; ``frame_cap`` steps truncate it. A level change gives no bonus and
the episode goes on.

``speed = 0.5 + 0.1 * (level - 1)``, halved while ``power > 0`` (``power`` as it is after
step 2); a speed of 1 and above moves on every step.

**Ghost moves.** Every ghost has a heading: a move code 1..4, or for a new ghost one of the
two :data:`NO_DIRECTION_HEADINGS`, which name no direction (their reverses are right and up).
A ghost with one free neighbour takes it. With two (a corridor or a corner) it keeps its
heading when that way is free, else takes the first of the two (in right, up, left, down
order) that is not the reverse of its heading. With three or more (a junction) it leaves
out the reverse of its heading and, with ``power == 0``, takes the option pointing most
towards Pacman (the largest dot product of the move with Pacman's offset; ties to the first
in right, up, left, down order) or, with probability :data:`RANDOM_TURN`, an option drawn
uniformly; with ``power > 0`` the option pointing most away. A ghost on Pacman's own cell
keeps its heading. The move taken becomes the heading.

======= ===================================================== ==========================
mode    next level when                                       rewards (step, food, pill,
                                                              ghost, killed)
======= ===================================================== ==========================
regular all food eaten                                        0, 1, 2, 5, 0
avoid   all food eaten, or 128 steps into the level           0.1, -0.1, -5, -10, -20
hunt    all ghosts eaten                                      0, 0, 1, 10, -20
ambush  all ghosts eaten                                      0, -0.1, 0, 10, -20
rush    all pills eaten                                       0, -0.1, 10, 0, 0
======= ===================================================== ==========================

**Rewards and info.** Each step counts the :data:`EVENTS` (``step`` is 1 on every step) in
``info["events"]`` float32 [B, 5]; the reward is ``events @ reward_vector`` (the mode's
row above), so one environment model can serve every mode by predicting events. ``info``
also holds ``final_obs`` (in the rows of envs that ended, the observation before the
same-step auto-reset; zeros elsewhere), ``episode_steps``, ``episode_return`` and ``level``
(of the episode each env ran this step, meaningful where it ended).

**Observations.** float32 [B, 3, 15, 19], RGB in [0, 1], channels first; per cell the
first match of: Pacman (0, 1, 0); a ghost (1, power / 20, 0); a power pill (0, 1, 1);
food (0, 0, 1); wall (1, 1, 1); empty (0, 0, 0). The env keeps the frame and redraws only
the cells a step changed (every row after a new level).

**Randomness.** Every env draws from its own counter-based stream (a SplitMix64 hash of
its key ``rng_key`` and its draw counter ``rng_counter``, one count a step), so an env's
trajectory does not depend on the batch it runs in: a batch equals its rows run as single
envs from the same state. ``reset(seed=...)`` reseeds the generator ``_rng`` that deals the
keys; every later draw comes from the per-env streams: per ghost its move, random turn and
random option, per level the cells and headings it places.
"""

from __future__ import annotations

import mmap
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated, Any

import numpy as np
from gymnasium import spaces

from procmem.envs.batched import ArrayState, BatchedVectorEnv, check_actions
from procmem.envs.protocols import EventRewardEnv, PixelEnv
from procmem.settings import AtLeast, OneOf, configurable

MAZE = (
    "###################",
    "#...#.........#...#",
    "#.#.#.#######.#.#.#",
    "#.................#",
    "#.#.#.#######.#.#.#",
    "#.#.............#.#",
    "#.####.#####.####.#",
    "#......#####......#",
    "#.####.#####.####.#",
    "#.#.............#.#",
    "#.#.#.#######.#.#.#",
    "#.................#",
    "#.#.#.#######.#.#.#",
    "#...#.........#...#",
    "###################",
)
HEIGHT, WIDTH = len(MAZE), len(MAZE[0])
NUM_CELLS = HEIGHT * WIDTH
WALLS = np.array([[c == "#" for c in row] for row in MAZE], dtype=bool)
FREE = ~WALLS.ravel()
FREE_CELLS = np.flatnonzero(FREE)  # the 138 free cells, flat indices
CELL_ROW, CELL_COL = np.divmod(np.arange(NUM_CELLS), WIDTH)

ACTION_NAMES = ("stay", "right", "up", "left", "down")
MODES = ("regular", "avoid", "hunt", "ambush", "rush")
EVENTS = ("step", "food", "pill", "ghost", "killed")
REWARDS = {
    "regular": (0.0, 1.0, 2.0, 5.0, 0.0),
    "avoid": (0.1, -0.1, -5.0, -10.0, -20.0),
    "hunt": (0.0, 0.0, 1.0, 10.0, -20.0),
    "ambush": (0.0, -0.1, 0.0, 10.0, -20.0),
    "rush": (0.0, -0.1, 10.0, 0.0, 0.0),
}
MAX_GHOSTS = 6
NUM_PILLS = 2
PILL_POWER = 20
SPAWN_BOX = 5
AVOID_LEVEL_STEPS = 128
RANDOM_TURN = 0.05
UNTOUCHED_MIN_BYTES = 1 << 20  # see untouched_zeros

# Headings: the move codes 1..4, and two codes that name no direction, whose reverses are
# right (5) and up (6). A new ghost's heading is one of NEW_GHOST_HEADINGS.
NO_DIRECTION_HEADINGS = (5, 6)
NEW_GHOST_HEADINGS = np.array([1, 2, *NO_DIRECTION_HEADINGS], dtype=np.int64)
REVERSE_HEADING = (0, 3, 4, 1, 2, 1, 2)  # indexed by heading; 0 (stay) is unused
# (drow, dcol) per action or heading; the no-direction headings stay.
MOVES = np.array([[0, 0], [0, 1], [-1, 0], [0, -1], [1, 0], [0, 0], [0, 0]], dtype=np.int64)
NUM_HEADINGS = len(MOVES)


def _tables() -> dict[str, np.ndarray]:
    """Lookup tables of the maze: where each move leads, the corridor rule and a junction's
    options by cell and heading, and where ghosts may spawn by Pacman's cell."""
    row = np.clip(CELL_ROW[:, None] + MOVES[:, 0], 0, HEIGHT - 1)
    col = np.clip(CELL_COL[:, None] + MOVES[:, 1], 0, WIDTH - 1)
    target = row * WIDTH + col
    cells = np.arange(NUM_CELLS)
    nxt = np.where(FREE[target] & FREE[:, None], target, cells[:, None])  # [cell, heading]
    free_dirs = nxt[:, 1:5] != cells[:, None]  # [cell, right/up/left/down]
    corridor = np.zeros((NUM_CELLS, NUM_HEADINGS), dtype=np.int64)
    options = np.zeros((NUM_CELLS, NUM_HEADINGS, 4), dtype=bool)
    for cell in FREE_CELLS:
        free = [d for d in (1, 2, 3, 4) if free_dirs[cell, d - 1]]
        for heading in range(1, NUM_HEADINGS):
            behind = REVERSE_HEADING[heading]
            if len(free) == 1:
                corridor[cell, heading] = free[0]
            elif len(free) == 2:
                corridor[cell, heading] = (heading if heading in free else
                                           next(d for d in free if d != behind))
            else:
                options[cell, heading] = [d in free and d != behind for d in (1, 2, 3, 4)]
    spawn = np.zeros((NUM_CELLS, len(FREE_CELLS)), dtype=np.int64)
    spawn_count = np.zeros(NUM_CELLS, dtype=np.int64)
    for pac in FREE_CELLS:
        r, c = CELL_ROW[pac], CELL_COL[pac]
        boxed = ((max(r - SPAWN_BOX, 1) <= CELL_ROW[FREE_CELLS]) & (CELL_ROW[FREE_CELLS]
                 < r + SPAWN_BOX) & (max(c - SPAWN_BOX, 1) <= CELL_COL[FREE_CELLS])
                 & (CELL_COL[FREE_CELLS] < c + SPAWN_BOX))
        allowed = FREE_CELLS[~boxed]
        spawn[pac, : len(allowed)] = allowed
        spawn_count[pac] = len(allowed)
    return {"next": nxt, "corridor": corridor, "options": options, "spawn": spawn,
            "spawn_count": spawn_count}


_TABLES = _tables()
NEXT = _TABLES["next"]  # NEXT[cell, action or heading]: the cell the move ends on
CORRIDOR = _TABLES["corridor"]  # the move a ghost takes on a cell of 1 or 2 ways; 0: junction
OPTIONS = _TABLES["options"]  # a junction's options [cell, heading, right/up/left/down]
SPAWN_CELLS = _TABLES["spawn"]  # SPAWN_CELLS[pacman, :SPAWN_COUNT[pacman]]: where ghosts
SPAWN_COUNT = _TABLES["spawn_count"]  # may spawn, by Pacman's cell

# Colour classes, first match wins; the ghost's green channel is set from power.
PACMAN, GHOST, PILL, FOOD, WALL, EMPTY = range(6)
COLOURS = np.array(
    [[0, 1, 0], [1, 0, 0], [0, 1, 1], [0, 0, 1], [1, 1, 1], [0, 0, 0]], dtype=np.float32
)
BACKGROUND = np.where(WALLS.ravel(), WALL, EMPTY)
CHANNELS = np.arange(3)

# Lanes of an env's draws within one step (see :meth:`MiniPacman._uniforms`).
GHOST_LANES = 3  # per ghost slot: move, random turn, random option
LEVEL_LANES = NUM_PILLS + 1 + 2 * MAX_GHOSTS  # pills, Pacman, ghost cells and headings
FIRST_LEVEL_LANE = GHOST_LANES * MAX_GHOSTS  # a level change during the step
FIRST_RESET_LANE = FIRST_LEVEL_LANE + LEVEL_LANES  # the auto-reset at its end

STATE_ARRAYS = (
    "pacman",
    "food",
    "food_left",
    "pill_pos",
    "pill_alive",
    "ghost_pos",
    "ghost_heading",
    "ghost_alive",
    "power",
    "level",
    "level_steps",
    "steps",
    "episode_return",
    "rng_key",
    "rng_counter",
)

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def _mix(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser: a bijective 64-bit hash (wrapping arithmetic)."""
    z = x + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


def untouched_zeros(shape: tuple[int, ...]) -> np.ndarray:
    """A float32 array of zeros. A large one lies in fresh anonymous memory: the kernel
    supplies its zero pages on first touch, so an array written only in a few rows costs no
    pass over the whole. Below :data:`UNTOUCHED_MIN_BYTES` plain ``np.zeros`` is cheaper
    than the mapping."""
    itemsize = np.dtype(np.float32).itemsize
    count = int(np.prod(shape))
    if count * itemsize < UNTOUCHED_MIN_BYTES:
        return np.zeros(shape, dtype=np.float32)
    memory = mmap.mmap(-1, count * itemsize)
    return np.frombuffer(memory, dtype=np.float32, count=count).reshape(shape)


def ghost_count(level: np.ndarray) -> np.ndarray:
    """Ghosts of a level: ``1 + (level - 1) // 2``, at most :data:`MAX_GHOSTS`."""
    return np.minimum(1 + (np.asarray(level) - 1) // 2, MAX_GHOSTS)


def ghost_speed(level: np.ndarray, power: np.ndarray) -> np.ndarray:
    """Probability that a ghost moves on a step: ``0.5 + 0.1 (level - 1)``, halved while
    ``power > 0``, then capped at 1 (so from level 16 ghosts move on every step even with
    power)."""
    speed = 0.5 + 0.1 * (np.asarray(level) - 1)
    return np.minimum(np.where(np.asarray(power) > 0, 0.5 * speed, speed), 1.0)


@configurable
class MiniPacman(ArrayState, BatchedVectorEnv, PixelEnv, EventRewardEnv):
    """Batched MiniPacman: ``num_envs`` envs in reward ``mode`` (one of :data:`MODES`),
    episodes truncated after ``frame_cap`` steps; see the module docstring.

    ``threads > 1`` steps the batch as that many contiguous shards on a thread pool (at most
    one per env), each a MiniPacman whose state arrays are views of this env's rows; the
    results are the same, and numpy's released GIL lets large batches (thousands of envs)
    use several cores."""

    state_arrays = STATE_ARRAYS
    num_actions = len(ACTION_NAMES)
    action_names = ACTION_NAMES
    obs_shape = (3, HEIGHT, WIDTH)
    event_names = EVENTS

    def __init__(
        self,
        *,
        num_envs: Annotated[int, AtLeast(1)] = 16,
        mode: Annotated[str, OneOf(MODES)] = "regular",
        frame_cap: Annotated[int, AtLeast(1)] = 1000,
        threads: Annotated[int, AtLeast(1)] = 1,
    ) -> None:
        self.num_envs = b = int(num_envs)
        self.mode = mode
        self.frame_cap = int(frame_cap)
        self.threads = min(int(threads), b)
        self.reward_vector = np.array(REWARDS[mode], dtype=np.float32)
        g = MAX_GHOSTS
        self.pacman = np.zeros(b, dtype=np.int64)
        self.food = np.zeros((b, NUM_CELLS), dtype=bool)
        self.food_left = np.zeros(b, dtype=np.int64)
        self.pill_pos = np.zeros((b, NUM_PILLS), dtype=np.int64)
        self.pill_alive = np.zeros((b, NUM_PILLS), dtype=bool)
        self.ghost_pos = np.zeros((b, g), dtype=np.int64)
        self.ghost_heading = np.zeros((b, g), dtype=np.int64)
        self.ghost_alive = np.zeros((b, g), dtype=bool)
        self.power = np.zeros(b, dtype=np.int64)
        self.level = np.ones(b, dtype=np.int64)
        self.level_steps = np.zeros(b, dtype=np.int64)
        self.steps = np.zeros(b, dtype=np.int64)
        self.episode_return = np.zeros(b, dtype=np.float64)
        self.rng_key = np.zeros(b, dtype=np.uint64)
        self.rng_counter = np.zeros(b, dtype=np.uint64)
        self._frame = np.zeros((b, 3, NUM_CELLS), dtype=np.float32)
        self._rows = np.arange(b)
        self._rng = np.random.default_rng()
        self._needs_reset = True
        self._set_spaces(spaces.Box(0.0, 1.0, self.obs_shape, dtype=np.float32))
        bounds = np.linspace(0, b, self.threads + 1).astype(int).tolist()
        self._shards = [
            (slice(lo, hi), MiniPacman(num_envs=hi - lo, mode=mode, frame_cap=frame_cap))
            for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)
        ] if self.threads > 1 else []
        self._executor: ThreadPoolExecutor | None = None

    # --- public API -------------------------------------------------------------------------

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start a new episode in every env; ``seed`` reseeds the generator dealing the
        per-env keys (None: keys come from the current generator)."""
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        self.rng_key = self._rng.integers(0, 2**63, size=self.num_envs, dtype=np.uint64)
        self.rng_counter = np.zeros(self.num_envs, dtype=np.uint64)
        self._reset_rows(self._rows, self._step_bases(), FIRST_RESET_LANE)
        self._needs_reset = False
        return self.observe(), {}

    def step(
        self, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Apply one action per env; returns (obs, reward, terminated, truncated, info)."""
        actions = check_actions(self, actions)
        obs = np.empty((self.num_envs, *self.obs_shape), dtype=np.float32)
        final_obs = untouched_zeros(obs.shape)
        if self.threads == 1:
            out = self._advance(actions, obs, final_obs)
        else:
            parts = list(self._pool().map(
                lambda shard: shard[1]._bind(self, shard[0])._advance(
                    actions[shard[0]], obs[shard[0]], final_obs[shard[0]]),
                self._shards))
            out = {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}
        reward, terminated, truncated = (out.pop(key) for key in ("reward", "terminated",
                                                                   "truncated"))
        info = {**out, "final_obs": final_obs, "_final_obs": terminated | truncated}
        return obs, reward, terminated, truncated, info

    def _advance(self, actions: np.ndarray, obs: np.ndarray, final_obs: np.ndarray
                 ) -> dict[str, np.ndarray]:
        """Step every env of this batch (writing state in place, so a shard's views write
        through), fill ``obs`` and ``final_obs``, and return the step's reward, terminated,
        truncated and info arrays."""
        rows = self._rows
        bases = self._step_bases()
        events = np.zeros((self.num_envs, len(EVENTS)), dtype=np.float32)
        events[:, 0] = 1.0
        was_pacman, was_ghosts = self.pacman.copy(), self.ghost_pos.copy()
        was_alive = self.ghost_alive.copy()
        new_level = np.zeros(self.num_envs, dtype=bool)
        self.steps += 1
        self.level_steps += 1
        np.maximum(self.power - 1, 0, out=self.power)

        # Pacman moves, eats its cell's food, then one pill there.
        self.pacman[:] = NEXT[self.pacman, actions]
        ate_food = self.food[rows, self.pacman]
        self.food[rows, self.pacman] = False
        self.food_left -= ate_food
        events[:, 1] = ate_food
        if self.mode in ("regular", "avoid"):
            self._next_level(ate_food & (self.food_left == 0), bases, new_level)
        on_pill = self.pill_alive & (self.pill_pos == self.pacman[:, None])
        ate_pill = on_pill.any(axis=1)
        if ate_pill.any():
            eater = np.flatnonzero(ate_pill)
            self.pill_alive[eater, np.argmax(on_pill[eater], axis=1)] = False
            self.power[eater] = PILL_POWER
            if self.mode == "rush":
                self._next_level(ate_pill & ~self.pill_alive.any(axis=1), bases, new_level)
        events[:, 2] = ate_pill

        eaten, killed = self._ghost_phase(bases, new_level)
        events[:, 3] = eaten
        events[:, 4] = killed
        if self.mode == "avoid":
            self._next_level(~killed & (self.level_steps >= AVOID_LEVEL_STEPS), bases,
                             new_level)

        reward = events @ self.reward_vector
        self.episode_return += reward
        truncated = ~killed & (self.steps >= self.frame_cap)
        out = {
            "reward": reward,
            "events": events,
            "terminated": killed,
            "truncated": truncated,
            "episode_steps": self.steps.copy(),
            "episode_return": self.episode_return.astype(np.float32),
            "level": self.level.copy(),
        }
        self._redraw(was_pacman, was_ghosts, was_alive | self.ghost_alive, new_level)
        done = killed | truncated
        if done.any():
            ended = np.flatnonzero(done)
            final_obs[ended] = self._frame[ended].reshape(len(ended), *self.obs_shape)
            self._reset_rows(ended, bases[ended], FIRST_RESET_LANE)
        obs.reshape(self._frame.shape)[:] = self._frame
        return out

    def close_extras(self, **kwargs: Any) -> None:
        if self._executor is not None:
            self._executor.shutdown()
            self._executor = None

    def _pool(self) -> ThreadPoolExecutor:
        """The threads stepping the shards, started on first use."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self.threads, thread_name_prefix="minipacman")
        return self._executor

    def _bind(self, env: MiniPacman, rows: slice) -> MiniPacman:
        """Make this shard's state the views of ``env``'s ``rows``; returns this shard."""
        for name in (*STATE_ARRAYS, "_frame"):
            setattr(self, name, getattr(env, name)[rows])
        return self

    def observe(self, rows: np.ndarray | None = None) -> np.ndarray:
        """Observations of ``rows`` (default: all envs), float32 [len(rows), 3, 15, 19]."""
        frame = self._frame if rows is None else self._frame[rows]
        return frame.reshape(len(frame), *self.obs_shape).copy()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self._draw(self._rows)

    # --- dynamics ---------------------------------------------------------------------------

    def _ghost_phase(self, bases: np.ndarray, new_level: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray]:
        """Each ghost in slot order meets Pacman, moves, meets him again; an eaten ghost
        ends its env's phase. Returns (ghost eaten, Pacman killed) per env."""
        eaten = np.zeros(self.num_envs, dtype=bool)
        killed = np.zeros(self.num_envs, dtype=bool)
        speed = ghost_speed(self.level, self.power)
        for slot in range(MAX_GHOSTS):
            envs = np.flatnonzero(self.ghost_alive[:, slot] & ~eaten)
            if len(envs) == 0:
                continue
            draws = self._uniforms(bases[envs], GHOST_LANES * slot, GHOST_LANES)
            pacman, powered = self.pacman[envs], self.power[envs] > 0
            met = self.ghost_pos[envs, slot] == pacman
            eats = met & powered
            killed[envs[met & ~powered]] = True
            moves = ~eats & (draws[:, 0] < speed[envs])
            movers = envs[moves]
            heading = self._heading(movers, slot, draws[moves])
            self.ghost_heading[movers, slot] = heading
            cell = NEXT[self.ghost_pos[movers, slot], heading]
            self.ghost_pos[movers, slot] = cell
            met = cell == pacman[moves]
            killed[movers[met & ~powered[moves]]] = True
            eater = np.concatenate([envs[eats], movers[met & powered[moves]]])
            if len(eater):
                self.ghost_alive[eater, slot] = False
                eaten[eater] = True
                if self.mode in ("hunt", "ambush"):
                    cleared = np.zeros(self.num_envs, dtype=bool)
                    cleared[eater] = ~self.ghost_alive[eater].any(axis=1)
                    self._next_level(cleared, bases, new_level)
        return eaten, killed

    def _heading(self, envs: np.ndarray, slot: int, draws: np.ndarray) -> np.ndarray:
        """The move (1..4, or the kept heading) each ghost in ``slot`` of ``envs`` takes;
        ``draws`` [n, 3] are its uniforms (move, random turn, random option)."""
        cell, heading = self.ghost_pos[envs, slot], self.ghost_heading[envs, slot]
        turn = CORRIDOR[cell, heading]
        junction = np.flatnonzero(turn == 0)
        if len(junction) == 0:
            return turn
        cell, heading, here = cell[junction], heading[junction], envs[junction]
        options = OPTIONS[cell, heading]  # [J, 4]
        drow = CELL_ROW[self.pacman[here]] - CELL_ROW[cell]
        dcol = CELL_COL[self.pacman[here]] - CELL_COL[cell]
        towards = np.stack([dcol, -drow, -dcol, drow], axis=1)  # right, up, left, down
        powered = self.power[here] > 0
        score = np.where(powered[:, None], -towards, towards)
        choice = np.argmax(np.where(options, score, np.iinfo(np.int64).min), axis=1) + 1
        at_random = ~powered & (draws[junction, 1] < RANDOM_TURN)
        if at_random.any():
            drawn = options[at_random]
            count = drawn.sum(axis=1)
            nth = np.minimum((draws[junction, 2][at_random] * count).astype(np.int64), count - 1)
            choice[at_random] = np.argmax(np.cumsum(drawn, axis=1) > nth[:, None], axis=1) + 1
        on_pacman = (drow == 0) & (dcol == 0)
        turn[junction] = np.where(on_pacman, heading, choice)
        return turn

    def _next_level(self, mask: np.ndarray, bases: np.ndarray, new_level: np.ndarray) -> None:
        """Start the next level of the envs in ``mask`` (noted in ``new_level``)."""
        if mask.any():
            envs = np.flatnonzero(mask)
            self.level[envs] += 1
            self._start_level(envs, bases[envs], FIRST_LEVEL_LANE)
            new_level |= mask

    def _reset_rows(self, envs: np.ndarray, bases: np.ndarray, lane: int) -> None:
        """Start a new episode, at level 1, in ``envs``."""
        self.level[envs] = 1
        self.steps[envs] = 0
        self.episode_return[envs] = 0.0
        self._start_level(envs, bases, lane)
        self._draw(envs)

    def _start_level(self, envs: np.ndarray, bases: np.ndarray, lane: int) -> None:
        """Fill the food, place the pills, Pacman and the ghosts of ``envs`` (see the module
        docstring), drawing from lanes ``lane...`` of their step's streams."""
        draws = self._uniforms(bases, lane, LEVEL_LANES)
        free = len(FREE_CELLS)
        picks = FREE_CELLS[(draws[:, : NUM_PILLS + 1] * free).astype(np.int64)]
        self.pill_pos[envs] = picks[:, :NUM_PILLS]
        self.pill_alive[envs] = True
        pacman = picks[:, NUM_PILLS]
        self.pacman[envs] = pacman
        self.food[envs] = FREE
        self.food_left[envs] = free
        spawn = draws[:, NUM_PILLS + 1 : NUM_PILLS + 1 + MAX_GHOSTS]
        nth = (spawn * SPAWN_COUNT[pacman][:, None]).astype(np.int64)
        self.ghost_pos[envs] = SPAWN_CELLS[pacman[:, None], nth]
        headings = draws[:, NUM_PILLS + 1 + MAX_GHOSTS :]
        self.ghost_heading[envs] = NEW_GHOST_HEADINGS[(headings * 4).astype(np.int64)]
        self.ghost_alive[envs] = np.arange(MAX_GHOSTS) < ghost_count(self.level[envs])[:, None]
        self.power[envs] = 0
        self.level_steps[envs] = 0

    # --- drawing ----------------------------------------------------------------------------

    def _draw(self, envs: np.ndarray) -> None:
        """Draw the whole frame of ``envs``."""
        n = len(envs)
        classes = np.where(self.food[envs], FOOD, BACKGROUND)
        local = np.arange(n)
        pill_alive = self.pill_alive[envs]
        pill_envs = np.broadcast_to(local[:, None], pill_alive.shape)[pill_alive]
        classes[pill_envs, self.pill_pos[envs][pill_alive]] = PILL
        alive = self.ghost_alive[envs]
        ghost_envs = np.broadcast_to(local[:, None], alive.shape)[alive]
        classes[ghost_envs, self.ghost_pos[envs][alive]] = GHOST
        classes[local, self.pacman[envs]] = PACMAN
        frame = COLOURS[classes].transpose(0, 2, 1)  # [n, 3, cells]
        frame[:, 1][classes == GHOST] = np.repeat(self.power[envs] / PILL_POWER,
                                                  (classes == GHOST).sum(axis=1))
        self._frame[envs] = frame

    def _redraw(self, was_pacman: np.ndarray, was_ghosts: np.ndarray, was_alive: np.ndarray,
                new_level: np.ndarray) -> None:
        """Redraw what this step changed: uncover the cells Pacman and the ghosts left
        (``was_pacman`` [B], ``was_ghosts`` [B, G] where ``was_alive``), then draw the ghosts
        and Pacman where they are; whole frames after a new level."""
        ghost_envs, slots = np.nonzero(was_alive)
        envs = np.concatenate([self._rows, ghost_envs])
        cells = np.concatenate([was_pacman, was_ghosts[ghost_envs, slots]])
        on_pill = (self.pill_alive[envs] & (self.pill_pos[envs] == cells[:, None])).any(axis=1)
        beneath = np.where(on_pill, PILL, np.where(self.food[envs, cells], FOOD,
                                                   BACKGROUND[cells]))
        self._paint(envs, cells, COLOURS[beneath])
        ghost_envs, slots = np.nonzero(self.ghost_alive)
        ghosts = np.zeros((len(ghost_envs), 3), dtype=np.float32)
        ghosts[:, 0] = 1.0
        ghosts[:, 1] = self.power[ghost_envs] / PILL_POWER
        self._paint(ghost_envs, self.ghost_pos[ghost_envs, slots], ghosts)
        self._paint(self._rows, self.pacman, COLOURS[PACMAN][None, :])
        if new_level.any():
            self._draw(np.flatnonzero(new_level))

    def _paint(self, envs: np.ndarray, cells: np.ndarray, colours: np.ndarray) -> None:
        """Set the cells ``cells`` of the frames of ``envs`` to ``colours`` [n or 1, 3]."""
        flat = self._frame.reshape(-1)
        at = envs * (3 * NUM_CELLS) + cells
        colours = np.broadcast_to(colours, (len(at), 3))
        for channel in range(3):
            flat[at + channel * NUM_CELLS] = colours[:, channel]

    # --- randomness -------------------------------------------------------------------------

    def _step_bases(self) -> np.ndarray:
        """Each env's hash of this step (its key and counter); advances the counters."""
        with np.errstate(over="ignore"):
            bases = _mix(self.rng_key ^ _mix(self.rng_counter))
        self.rng_counter += np.uint64(1)
        return bases

    @staticmethod
    def _uniforms(bases: np.ndarray, lane: int, n: int) -> np.ndarray:
        """Uniforms in [0, 1), float64 [len(bases), n]: lanes ``lane..lane+n-1`` of the
        envs' step hashes ``bases``."""
        with np.errstate(over="ignore"):
            lanes = np.arange(lane + 1, lane + n + 1, dtype=np.uint64) * _MIX2
            bits = _mix(bases[:, None] + lanes)
        return (bits >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))
