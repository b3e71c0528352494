"""Batched MiniPacman (DeepMind's "PillEater", the I2A paper's test bed), vectorised in numpy.

**Maze.** :data:`MAZE`, 15 rows x 19 columns, 138 free cells, no dead ends. Cells are
addressed by their flat index ``row * 19 + col``. Actions :data:`ACTION_NAMES`: ``0`` stay,
``1`` right (col + 1), ``2`` up (row - 1), ``3`` left, ``4`` down; a move into a wall stays.

**Step order.** (1) ``power`` (the pill timer) drops by 1, not below 0. (2) Pacman moves
and eats what lies on its new cell (staying also eats): food (event ``food``) or a power
pill (event ``pill``, ``power = 20``). (3) The ghosts, in slot order: if a ghost shares
Pacman's cell, Pacman dies when ``power == 0`` (event ``killed``), else the ghost is eaten
(event ``ghost``); then a ghost that is still there moves with probability ``speed`` and
the same check repeats. At most one ghost is eaten per step: the first collision in
(slot, before/after the move) order eats its ghost, later colliding ghosts stay on
Pacman's cell (and can be eaten on a later step while ``power > 0``). Once Pacman is
killed the ghosts after it in that order do not move. Ghosts never interact with each
other and may share cells, so the ghost phase is computed for all slots at once.
(4) The level ends when its mode's condition holds (below). (5) Pacman's death
terminates the episode; ``frame_cap`` steps truncate it.

``speed = min(1, 0.5 + 0.1 * (level - 1))``, halved while ``power > 0`` (``power`` as it
is after steps 1-2); from level 6 on a ghost moves on every step it is not halved.

**Ghost moves.** A ghost's *options* are the free neighbours of its cell except the one
behind it (the reverse of its last move); with no option left (a dead end; this maze has
none) the reverse is the only option. A cell with one option is a *corridor* cell (also
a corner): the ghost takes it, i.e. keeps going and never reverses. A cell with two or
more options is a *junction*: with ``power == 0`` the ghost takes, with probability 0.95,
the option pointing most towards Pacman (the largest dot product of the unit move with
Pacman's offset from the ghost, in (col, -row) coordinates) and with probability 0.05 an
option drawn uniformly; with ``power > 0`` it takes the option pointing most away (the
smallest dot product), never at random. Ties go to the first option in action order
(right, up, left, down). A freshly spawned ghost has no last move: all its free
neighbours are options.

**Levels.** A level places Pacman and :data:`NUM_PILLS` power pills on distinct free cells
drawn uniformly, puts food on every other free cell (Pacman's start cell holds none,
135 food), resets ``power`` to 0 and recreates ``min(1 + (level - 1) // 2, MAX_GHOSTS)``
ghosts on distinct free cells drawn uniformly among those outside the +-5 box around
Pacman (``max(|drow|, |dcol|) > 5``). Ghosts live in :data:`MAX_GHOSTS` fixed slots
(``ghost_alive`` masks the live ones): enough for every level the modes ``regular`` and
``avoid`` reach in 1,000 steps (a level lasts at least 128 steps there, so level <= 8,
4 ghosts); ``hunt``, ``ambush`` and ``rush`` can level faster and are capped at 6 ghosts
from level 11 on. The next level starts (same step, no bonus, the episode goes on) when:

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

No level change happens on the step Pacman dies.

**Rewards and info.** Each step counts the :data:`EVENTS` (``step`` is 1 on every step) in
``info["events"]`` float32 [B, 5]; the reward is ``events @ reward_vector`` (the mode's
row above), so one environment model can serve every mode by predicting events. ``info``
also holds ``final_obs`` (the observation before the same-step auto-reset of envs that
ended), ``episode_steps``, ``episode_return`` and ``level`` (of the episode each env ran
this step, meaningful where it ended).

**Observations.** float32 [B, 3, 15, 19], RGB in [0, 1], channels first; per cell the
first match of: Pacman (0, 1, 0); a ghost (1, power / 20, 0); a power pill (0, 1, 1);
food (0, 0, 1); wall (1, 1, 1); empty (0, 0, 0).

**Randomness.** Every env draws from its own counter-based stream (a SplitMix64 hash of
its key ``rng_key`` and its draw counter ``rng_counter``), so an env's trajectory does not
depend on the batch it runs in: a batch equals its rows run as single envs from the same
state. ``reset(seed=...)`` reseeds the generator ``_rng`` that deals the keys; every
later draw (ghost moves, auto-resets, new levels) comes from the per-env streams. Each
step draws, per ghost slot, the move (``< speed``), the 5 % random turn and the pick of
a random option; each level draws the cells of Pacman, the pills and the ghosts.
"""

from __future__ import annotations

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
FREE_CELLS = np.flatnonzero(~WALLS.ravel())  # the 138 free cells, flat indices
CELL_ROW, CELL_COL = np.divmod(np.arange(NUM_CELLS), WIDTH)

ACTION_NAMES = ("stay", "right", "up", "left", "down")
# (drow, dcol) per action.
MOVES = np.array([[0, 0], [0, 1], [-1, 0], [0, -1], [1, 0]], dtype=np.int64)
REVERSE = np.array([0, 3, 4, 1, 2], dtype=np.int64)
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
SPAWN_BOX = 5  # ghosts spawn with max(|drow|, |dcol|) > SPAWN_BOX from Pacman
AVOID_LEVEL_STEPS = 128
RANDOM_TURN = 0.05


def _next_cells() -> np.ndarray:
    """``NEXT[cell, action]``: the cell a move from ``cell`` ends on (a wall: ``cell``)."""
    row = np.clip(CELL_ROW[:, None] + MOVES[:, 0], 0, HEIGHT - 1)
    col = np.clip(CELL_COL[:, None] + MOVES[:, 1], 0, WIDTH - 1)
    target = row * WIDTH + col
    return np.where(WALLS.ravel()[target], np.arange(NUM_CELLS)[:, None], target)


NEXT = _next_cells()
# OPEN[cell, d - 1]: the move d in 1..4 from cell leads to a free cell.
OPEN = (NEXT[:, 1:] != np.arange(NUM_CELLS)[:, None]) & ~WALLS.ravel()[:, None]
# NOT_BEHIND[last move, d - 1]: d is not the reverse of the last move (0: none yet).
NOT_BEHIND = np.arange(1, 5)[None, :] != REVERSE[:, None]

# Colour classes, first match wins; the ghost's green channel is set from power.
PACMAN, GHOST, PILL, FOOD, WALL, EMPTY = range(6)
COLOURS = np.array(
    [[0, 1, 0], [1, 0, 0], [0, 1, 1], [0, 0, 1], [1, 1, 1], [0, 0, 0]], dtype=np.float32
)
# Bit c of COLOUR_BITS[class] is channel c of its colour (every channel is 0 or 1).
COLOUR_BITS = (COLOURS.astype(np.uint8) << np.arange(3, dtype=np.uint8)).sum(axis=1)
COLOUR_BITS = COLOUR_BITS.astype(np.uint8)
CHANNEL_SHIFTS = np.arange(3, dtype=np.uint8)[None, :, None]
BACKGROUND = np.where(WALLS.ravel(), WALL, EMPTY).astype(np.uint8)

STATE_ARRAYS = (
    "pacman",
    "food",
    "pills",
    "ghost_pos",
    "ghost_dir",
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


def ghost_count(level: np.ndarray) -> np.ndarray:
    """Ghosts of a level: ``1 + (level - 1) // 2``, at most :data:`MAX_GHOSTS`."""
    return np.minimum(1 + (np.asarray(level) - 1) // 2, MAX_GHOSTS)


def ghost_speed(level: np.ndarray, power: np.ndarray) -> np.ndarray:
    """Probability that a ghost moves on a step: ``min(1, 0.5 + 0.1 (level - 1))``,
    halved while ``power > 0``."""
    speed = np.minimum(0.5 + 0.1 * (np.asarray(level) - 1), 1.0)
    return np.where(np.asarray(power) > 0, 0.5 * speed, speed)


@configurable
class MiniPacman(ArrayState, BatchedVectorEnv, PixelEnv, EventRewardEnv):
    """Batched MiniPacman: ``num_envs`` envs in reward ``mode`` (one of :data:`MODES`),
    episodes truncated after ``frame_cap`` steps; see the module docstring."""

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
    ) -> None:
        self.num_envs = int(num_envs)
        self.mode = mode
        self.frame_cap = int(frame_cap)
        self.reward_vector = np.array(REWARDS[mode], dtype=np.float32)

        b, g = self.num_envs, MAX_GHOSTS
        self.pacman = np.zeros(b, dtype=np.int64)
        self.food = np.zeros((b, NUM_CELLS), dtype=bool)
        self.pills = np.zeros((b, NUM_CELLS), dtype=bool)
        self.ghost_pos = np.zeros((b, g), dtype=np.int64)
        self.ghost_dir = np.zeros((b, g), dtype=np.int64)
        self.ghost_alive = np.zeros((b, g), dtype=bool)
        self.power = np.zeros(b, dtype=np.int64)
        self.level = np.ones(b, dtype=np.int64)
        self.level_steps = np.zeros(b, dtype=np.int64)
        self.steps = np.zeros(b, dtype=np.int64)
        self.episode_return = np.zeros(b, dtype=np.float64)
        self.rng_key = np.zeros(b, dtype=np.uint64)
        self.rng_counter = np.zeros(b, dtype=np.uint64)
        self._rows = np.arange(b)
        self._rng = np.random.default_rng()
        self._needs_reset = True
        self._set_spaces(spaces.Box(0.0, 1.0, self.obs_shape, dtype=np.float32))

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
        self._reset_envs(np.ones(self.num_envs, dtype=bool))
        self._needs_reset = False
        return self.observe(), {}

    def step(
        self, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Apply one action per env; returns (obs, reward, terminated, truncated, info)."""
        actions = check_actions(self, actions)
        rows = self._rows
        events = np.zeros((self.num_envs, len(EVENTS)), dtype=np.float32)
        events[:, 0] = 1.0

        # 1. The pill timer.
        np.maximum(self.power - 1, 0, out=self.power)

        # 2. Pacman moves and eats.
        self.pacman = NEXT[self.pacman, actions]
        ate_food = self.food[rows, self.pacman]
        ate_pill = self.pills[rows, self.pacman]
        self.food[rows, self.pacman] = False
        self.pills[rows, self.pacman] = False
        self.power[ate_pill] = PILL_POWER
        events[:, 1] = ate_food
        events[:, 2] = ate_pill

        # 3. Ghosts.
        ghost_eaten, killed = self._ghost_phase(self._uniform(rows, 3 * MAX_GHOSTS))
        events[:, 3] = ghost_eaten
        events[:, 4] = killed

        reward = events @ self.reward_vector
        self.steps += 1
        self.level_steps += 1
        self.episode_return += reward

        # 4. Level changes (not on the step Pacman dies).
        next_level = ~killed & self._level_cleared()
        if next_level.any():
            self.level[next_level] += 1
            self._new_level(next_level)

        # 5. Episode ends.
        terminated = killed
        truncated = ~terminated & (self.steps >= self.frame_cap)
        info = {
            "events": events,
            "episode_steps": self.steps.copy(),
            "episode_return": self.episode_return.astype(np.float32),
            "level": self.level.copy(),
        }
        final_obs = self.observe()
        obs = final_obs
        done = terminated | truncated
        if done.any():
            self._reset_envs(done)
            obs = final_obs.copy()
            obs[done] = self.observe(np.flatnonzero(done))
        info["final_obs"], info["_final_obs"] = final_obs, done
        return obs, reward, terminated, truncated, info

    def observe(self, rows: np.ndarray | None = None) -> np.ndarray:
        """Observations of ``rows`` (default: all envs), float32 [len(rows), 3, 15, 19]."""
        if rows is None:  # all envs: no fancy-indexed copies
            food, pills, alive = self.food, self.pills, self.ghost_alive
            ghost_pos, pacman, power = self.ghost_pos, self.pacman, self.power
        else:
            food, pills, alive = self.food[rows], self.pills[rows], self.ghost_alive[rows]
            ghost_pos, pacman, power = self.ghost_pos[rows], self.pacman[rows], self.power[rows]
        n = len(pacman)
        local = np.arange(n)
        classes = np.where(food, FOOD, BACKGROUND).astype(np.uint8)
        classes[pills] = PILL
        ghost_rows = np.broadcast_to(local[:, None], alive.shape)[alive]
        classes[ghost_rows, ghost_pos[alive]] = GHOST
        classes[local, pacman] = PACMAN
        obs = np.empty((n, 3, NUM_CELLS), dtype=np.float32)
        colour_bits = np.take(COLOUR_BITS, classes)[:, None, :]
        np.bitwise_and(colour_bits >> CHANNEL_SHIFTS, 1, out=obs, casting="unsafe")
        # The ghosts' green channel: power / 20 (where no Pacman covers them).
        shown = alive & (ghost_pos != pacman[:, None])
        edible = (power / PILL_POWER).astype(np.float32)
        obs[ghost_rows[shown[alive]], 1, ghost_pos[shown]] = np.broadcast_to(
            edible[:, None], shown.shape
        )[shown]
        return obs.reshape(n, 3, HEIGHT, WIDTH)

    # --- dynamics ---------------------------------------------------------------------------

    def ghost_choice(self, random_turn: np.ndarray, pick: np.ndarray) -> np.ndarray:
        """The move (1..4) each ghost slot [B, G] takes if it moves now; ``random_turn``
        [B, G] bool selects a uniform option (used only where ``power == 0``), indexed by
        ``pick`` [B, G] in [0, 1)."""
        pos, last = self.ghost_pos, self.ghost_dir
        options = OPEN[pos] & NOT_BEHIND[last]  # [B, G, 4]
        stuck = ~options.any(axis=2)
        options[stuck] = OPEN[pos[stuck]]
        drow = CELL_ROW[self.pacman][:, None] - CELL_ROW[pos]
        dcol = CELL_COL[self.pacman][:, None] - CELL_COL[pos]
        # Dot product of each move (right, up, left, down) with Pacman's offset.
        toward = np.stack([dcol, -drow, -dcol, drow], axis=2)
        sign = np.where(self.power > 0, -1, 1)[:, None, None]  # power > 0: flee
        score = toward * sign
        choice = np.argmax(np.where(options, score, np.iinfo(np.int64).min), axis=2)
        use_random = random_turn & (self.power == 0)[:, None]
        if use_random.any():
            drawn_options = options[use_random]  # [R, 4]
            count = drawn_options.sum(axis=1)
            nth = np.minimum((pick[use_random] * count).astype(np.int64), count - 1)
            ranks = np.cumsum(drawn_options, axis=1)
            choice[use_random] = np.argmax(ranks > nth[:, None], axis=1)
        return choice + 1

    def _ghost_phase(self, draws: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        g = MAX_GHOSTS
        move_u, turn_u, pick_u = draws[:, :g], draws[:, g : 2 * g], draws[:, 2 * g :]
        alive = self.ghost_alive
        pac = self.pacman[:, None]
        before = alive & (self.ghost_pos == pac)
        moves = alive & ~before & (move_u < ghost_speed(self.level, self.power)[:, None])
        direction = self.ghost_choice(turn_u < RANDOM_TURN, pick_u)
        target = NEXT[self.ghost_pos, direction]
        after = moves & (target == pac)
        hit = before | after  # one collision at most per ghost: `after` needs no `before`
        any_hit = hit.any(axis=1)
        edible = self.power > 0
        killed = any_hit & ~edible
        # A kill stops the ghosts after it (in slot order) from moving.
        hit_earlier = np.zeros_like(hit)
        hit_earlier[:, 1:] = np.logical_or.accumulate(hit, axis=1)[:, :-1]
        moves &= ~(hit_earlier & ~edible[:, None])
        self.ghost_pos = np.where(moves, target, self.ghost_pos)
        self.ghost_dir = np.where(moves, direction, self.ghost_dir)
        eaten = any_hit & edible
        first = np.argmax(hit, axis=1)
        self.ghost_alive[self._rows[eaten], first[eaten]] = False
        return eaten, killed

    def _level_cleared(self) -> np.ndarray:
        if self.mode == "regular":
            return ~self.food.any(axis=1)
        if self.mode == "avoid":
            return ~self.food.any(axis=1) | (self.level_steps >= AVOID_LEVEL_STEPS)
        if self.mode in ("hunt", "ambush"):
            return ~self.ghost_alive.any(axis=1)
        return ~self.pills.any(axis=1)  # rush

    def _reset_envs(self, mask: np.ndarray) -> None:
        self.level[mask] = 1
        self.steps[mask] = 0
        self.episode_return[mask] = 0.0
        self._new_level(mask)

    def _new_level(self, mask: np.ndarray) -> None:
        """Refill food, place Pacman, pills and ghosts, for the envs in ``mask``."""
        rows = np.flatnonzero(mask)
        n, free = len(rows), len(FREE_CELLS)
        draws = self._uniform(rows, 2 * free)
        # The 1 + NUM_PILLS smallest keys: Pacman's cell, then the pills' cells.
        cells = FREE_CELLS[np.argsort(draws[:, :free], axis=1)[:, : 1 + NUM_PILLS]]
        pacman = cells[:, 0]
        local = np.arange(n)[:, None]
        self.pacman[rows] = pacman
        food = np.zeros((n, NUM_CELLS), dtype=bool)
        food[:, FREE_CELLS] = True
        food[local, cells] = False
        pills = np.zeros((n, NUM_CELLS), dtype=bool)
        pills[local, cells[:, 1:]] = True
        self.food[rows] = food
        self.pills[rows] = pills
        # Ghost cells: the smallest keys among free cells outside the box (others get 2+).
        near = (np.abs(CELL_ROW[FREE_CELLS] - CELL_ROW[pacman][:, None]) <= SPAWN_BOX) & (
            np.abs(CELL_COL[FREE_CELLS] - CELL_COL[pacman][:, None]) <= SPAWN_BOX
        )
        order = np.argsort(draws[:, free:] + 2.0 * near, axis=1)[:, :MAX_GHOSTS]
        self.ghost_pos[rows] = FREE_CELLS[order]
        self.ghost_dir[rows] = 0
        self.ghost_alive[rows] = np.arange(MAX_GHOSTS) < ghost_count(self.level[rows])[:, None]
        self.power[rows] = 0
        self.level_steps[rows] = 0

    def _uniform(self, rows: np.ndarray, n: int) -> np.ndarray:
        """``n`` uniforms in [0, 1) per env of ``rows`` [R], float64 [R, n], from each env's
        own stream; advances those envs' counters by one."""
        with np.errstate(over="ignore"):
            base = _mix(self.rng_key[rows] ^ _mix(self.rng_counter[rows]))
            lanes = np.arange(1, n + 1, dtype=np.uint64) * _MIX2
            bits = _mix(base[:, None] + lanes)
        self.rng_counter[rows] += np.uint64(1)
        return (bits >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))
