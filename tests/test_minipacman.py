"""MiniPacman: the API, and each rule of shared/specs/minipacman.md on a state set up for it.

Where no random draw decides a step, the same set-up is also stepped by the plain one-env
implementation of the rules (:mod:`procmem.envs.minipacman_oracle`) and the two must agree.
"""

import random

import numpy as np
import pytest

from procmem.envs.minipacman import (
    ACTION_NAMES,
    EVENTS,
    FREE_CELLS,
    MAX_GHOSTS,
    MAZE,
    MODES,
    NEW_GHOST_HEADINGS,
    NEXT,
    NO_DIRECTION_HEADINGS,
    REVERSE_HEADING,
    REWARDS,
    SPAWN_CELLS,
    SPAWN_COUNT,
    WIDTH,
    MiniPacman,
    ghost_count,
    ghost_speed,
    untouched_zeros,
)
from procmem.envs.minipacman_oracle import Ghost, OracleMiniPacman
from procmem.settings import SettingError

STAY, RIGHT, UP, LEFT, DOWN = range(5)
NO_RIGHT, NO_UP = NO_DIRECTION_HEADINGS  # the headings whose reverses are right and up
FAR_FOOD, FAR_PILL, FAR_GHOST = (13, 1), (13, 3), (13, 17)
WALLS = np.array([[c == "#" for c in row] for row in MAZE])
FREE = ~WALLS.ravel()
GREEN, RED, CYAN, BLUE, WHITE = [0, 1, 0], [1, 0, 0], [0, 1, 1], [0, 0, 1], [1, 1, 1]


def cell(row: int, col: int) -> int:
    return row * WIDTH + col


def rc(flat) -> tuple[int, int]:
    return tuple(int(x) for x in divmod(int(flat), WIDTH))


def sync(env):
    """Make the state consistent after direct edits: recount the food, redraw the frames."""
    env.food_left[:] = env.food.sum(axis=1)
    env.load_state_dict(env.state_dict())


def set_food(env, *cells):
    env.food[:] = False
    for row_col in cells:
        env.food[:, cell(*row_col)] = True


def place_ghost(env, row, col, heading=LEFT, slot=0):
    env.ghost_alive[:, slot] = True
    env.ghost_pos[:, slot] = cell(row, col)
    env.ghost_heading[:, slot] = heading


def place_pill(env, row, col, slot=1):
    env.pill_alive[:, slot] = True
    env.pill_pos[:, slot] = cell(row, col)


def blank(num_envs=1, mode="regular", frame_cap=1000, seed=0, level=1):
    """An env whose every row holds one food, one pill (the other eaten) and one ghost (heading
    left) far in the bottom corners, Pacman at (1, 1), power 0, step 0 of the episode."""
    env = MiniPacman(num_envs=num_envs, mode=mode, frame_cap=frame_cap)
    env.reset(seed=seed)
    env.level[:] = level
    env.level_steps[:] = 0
    env.steps[:] = 0
    set_food(env, FAR_FOOD)
    env.pill_pos[:] = cell(*FAR_PILL)
    env.pill_alive[:] = [True, False]
    env.ghost_alive[:] = False
    place_ghost(env, *FAR_GHOST)
    env.pacman[:] = cell(1, 1)
    env.power[:] = 0
    sync(env)
    return env


def act(env, action):
    """Step every row with ``action``, after taking in any direct edits of the state."""
    sync(env)
    return env.step(np.full(env.num_envs, action))


def in_spawn_box(pacman, cells):
    """Whether ``cells`` lie in the half-open box of rows [r-5, r+5) x columns [c-5, c+5)
    around Pacman at (r, c), its lower edges clipped at 1 (elementwise)."""
    pr, pc = np.divmod(np.asarray(pacman), WIDTH)
    cr, cc = np.divmod(np.asarray(cells), WIDTH)
    return ((np.maximum(pr - 5, 1) <= cr) & (cr < pr + 5)
            & (np.maximum(pc - 5, 1) <= cc) & (cc < pc + 5))


# --- the oracle on the same state ----------------------------------------------------------------


class FixedDraws(random.Random):
    """A generator whose ``random()`` always returns ``value``: with 0.05 <= value < speed a
    ghost moves and never turns at random."""

    def __init__(self, value: float) -> None:
        super().__init__(0)
        self.value = value

    def random(self) -> float:
        return self.value


def to_oracle(env, row=0, draw=0.3):
    """An :class:`OracleMiniPacman` holding row ``row`` of ``env``'s state."""
    oracle = OracleMiniPacman(env.mode, env.frame_cap, seed=0)
    oracle.pacman = rc(env.pacman[row])
    oracle.food = {rc(c) for c in np.flatnonzero(env.food[row])}
    oracle.pills = [rc(p) for p, alive in zip(env.pill_pos[row], env.pill_alive[row],
                                              strict=True) if alive]
    oracle.ghosts = [Ghost(rc(p), int(h)) for p, h, alive in
                     zip(env.ghost_pos[row], env.ghost_heading[row], env.ghost_alive[row],
                         strict=True) if alive]
    oracle.power = int(env.power[row])
    oracle.level = int(env.level[row])
    oracle.level_steps = int(env.level_steps[row])
    oracle.steps = int(env.steps[row])
    oracle.rng = FixedDraws(draw)
    return oracle


def env_state(env, row=0):
    return {
        "pacman": rc(env.pacman[row]),
        "food": {rc(c) for c in np.flatnonzero(env.food[row])},
        "pills": [rc(p) for p, a in zip(env.pill_pos[row], env.pill_alive[row], strict=True)
                  if a],
        "ghosts": [(rc(p), int(h)) for p, h, a in zip(env.ghost_pos[row], env.ghost_heading[row],
                                                      env.ghost_alive[row], strict=True) if a],
        "power": int(env.power[row]), "level": int(env.level[row]),
        "level_steps": int(env.level_steps[row]), "steps": int(env.steps[row]),
    }


def oracle_state(oracle):
    return {
        "pacman": oracle.pacman, "food": set(oracle.food), "pills": list(oracle.pills),
        "ghosts": [(g.cell, g.heading) for g in oracle.ghosts], "power": oracle.power,
        "level": oracle.level, "level_steps": oracle.level_steps, "steps": oracle.steps,
    }


def step_both(env, action, draw=0.3):
    """Step ``env`` and, from row 0's state, the oracle; they must agree on row 0's reward,
    events, ending, frame and (when the episode goes on) state. Returns ``env``'s step."""
    sync(env)
    oracle = to_oracle(env, 0, draw)
    out = act(env, action)
    obs, reward, terminated, truncated, info = out
    o_obs, o_reward, o_terminated, o_truncated, o_events = oracle.step(action)
    np.testing.assert_array_equal(info["events"][0], o_events)
    assert reward[0] == pytest.approx(o_reward, abs=1e-5)
    assert (bool(terminated[0]), bool(truncated[0])) == (o_terminated, o_truncated)
    if terminated[0] or truncated[0]:
        np.testing.assert_array_equal(info["final_obs"][0], o_obs)
    else:
        np.testing.assert_array_equal(obs[0], o_obs)
        assert env_state(env) == oracle_state(oracle)
    return out


# --- maze, construction, observation -------------------------------------------------------------


def test_maze_has_138_free_cells_no_dead_ends_and_api():
    assert len(MAZE) == 15 and all(len(row) == 19 for row in MAZE)
    assert len(FREE_CELLS) == 138
    moves = NEXT[FREE_CELLS][:, 1:5] != FREE_CELLS[:, None]
    assert (moves.sum(axis=1) >= 2).all()
    env = MiniPacman()
    assert env.num_envs == 16 and env.num_actions == 5 and env.action_names == ACTION_NAMES
    assert env.obs_shape == (3, 15, 19) and env.mode == "regular" and env.frame_cap == 1000
    assert env.event_names == EVENTS == ("step", "food", "pill", "ghost", "killed")
    for mode in MODES:
        np.testing.assert_allclose(MiniPacman(mode=mode).reward_vector, REWARDS[mode])
    env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step(np.zeros(16, dtype=np.int64))
    assert obs.shape == (16, 3, 15, 19) and obs.dtype == np.float32
    assert reward.shape == terminated.shape == truncated.shape == (16,)
    assert terminated.dtype == truncated.dtype == bool
    assert {"events", "final_obs", "_final_obs", "episode_steps", "episode_return",
            "level"} <= set(info)
    assert info["events"].shape == (16, 5) and info["final_obs"].shape == (16, 3, 15, 19)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [({"num_envs": 0}, "num_envs"), ({"mode": "chase"}, "mode"), ({"frame_cap": 0}, "frame_cap"),
     ({"num_envs": 2.5}, "num_envs"), ({"num_envs": True}, "num_envs")],
)
def test_bad_arguments_name_the_argument(kwargs, name):
    with pytest.raises(SettingError) as info:
        MiniPacman(**kwargs)
    assert info.value.key == name


def test_step_before_reset_and_bad_actions_raise():
    env = MiniPacman(num_envs=2)
    with pytest.raises(RuntimeError):
        env.step(np.zeros(2, dtype=np.int64))
    env.reset(seed=0)
    for bad in (np.array([0, 5]), np.array([-1, 0]), np.array([0, 1, 2]), np.array([0.0, 1.0])):
        with pytest.raises(ValueError):
            env.step(bad)


def test_reset_layout_and_colours():
    n = 64
    env = MiniPacman(num_envs=n)
    obs, _ = env.reset(seed=3)
    assert obs.dtype == np.float32 and obs.shape == (n, 3, 15, 19)
    assert obs.min() >= 0.0 and obs.max() <= 1.0
    np.testing.assert_array_equal(obs[:, :, WALLS], 1.0)
    rows = np.arange(n)
    assert (env.level == 1).all() and (env.power == 0).all() and (env.steps == 0).all()
    assert env.pill_alive.all() and (env.ghost_alive.sum(axis=1) == 1).all()
    assert np.isin(env.ghost_heading[:, 0], NEW_GHOST_HEADINGS).all()
    pac = np.divmod(env.pacman, WIDTH)
    np.testing.assert_array_equal(obs[rows, :, pac[0], pac[1]], np.tile(GREEN, (n, 1)))
    ghost = np.divmod(env.ghost_pos[:, 0], WIDTH)
    np.testing.assert_array_equal(obs[rows, :, ghost[0], ghost[1]], np.tile(RED, (n, 1)))
    free = set(FREE_CELLS.tolist())
    for row in range(n):
        covered = {int(env.pacman[row]), int(env.ghost_pos[row, 0])}
        pills = sorted(set(env.pill_pos[row].tolist()) - covered)
        food = sorted(free - covered - set(pills))  # food lies on every free cell
        frame = obs[row].reshape(3, -1)
        np.testing.assert_array_equal(frame[:, pills].T, np.tile(CYAN, (len(pills), 1)))
        np.testing.assert_array_equal(frame[:, food].T, np.tile(BLUE, (len(food), 1)))
        np.testing.assert_array_equal(obs[row], to_oracle(env, row).observe())


def test_each_level_starts_with_138_food_under_pills_and_pacman():
    n = 256
    env = MiniPacman(num_envs=n)
    env.reset(seed=4)
    rows = np.arange(n)
    assert (env.food == FREE).all() and (env.food_left == 138).all()
    assert env.food[rows, env.pacman].all()
    assert env.food[rows[:, None], env.pill_pos].all()


def test_level_start_placement_frequencies():
    """Pills and Pacman are placed independently and uniformly on the 138 free cells, so a
    pill lies on Pacman's start cell with probability 1 - (137/138)^2 (about 1.4 %) and the two
    pills share a cell with probability 1/138; each frequency over 20,000 level starts lies
    within 4 binomial standard errors (about 0.34 and 0.24 percentage points) of it."""
    n = 20_000
    env = MiniPacman(num_envs=n)
    env.reset(seed=5)
    assert np.isin(env.pacman, FREE_CELLS).all() and np.isin(env.pill_pos, FREE_CELLS).all()
    assert len(np.unique(env.pacman)) == 138 and len(np.unique(env.pill_pos)) == 138
    for frequency, p in [
        ((env.pill_pos == env.pacman[:, None]).any(axis=1).mean(), 1 - (137 / 138) ** 2),
        ((env.pill_pos[:, 0] == env.pill_pos[:, 1]).mean(), 1 / 138),
    ]:
        assert abs(frequency - p) < 4 * np.sqrt(p * (1 - p) / n)
    # And the food is all there: a pill on Pacman's cell has food under it too.
    assert (env.food == FREE).all() and (env.food_left == 138).all()


def test_spawn_tables_follow_the_half_open_box():
    for pacman in FREE_CELLS:
        allowed = FREE_CELLS[~in_spawn_box(pacman, FREE_CELLS)]
        count = SPAWN_COUNT[pacman]
        assert count == len(allowed)
        assert sorted(SPAWN_CELLS[pacman, :count]) == sorted(allowed)
    # Offset +5 (row or column) is allowed, -5 is not.
    spawn = {rc(p): {rc(c) for c in SPAWN_CELLS[p, : SPAWN_COUNT[p]]} for p in FREE_CELLS}
    assert (3, 11) in spawn[(3, 6)] and (8, 6) in spawn[(3, 6)]  # (0, +5) and (+5, 0)
    assert (3, 1) not in spawn[(3, 6)]  # (0, -5)
    assert (4, 5) not in spawn[(9, 5)] and (9, 10) in spawn[(9, 5)]  # (-5, 0) and (0, +5)
    assert (5, 5) not in spawn[(9, 5)]  # (-4, 0)


def test_spawned_ghosts_avoid_the_box_and_reach_its_far_edges():
    n = 20_000
    env = MiniPacman(num_envs=n)
    env.reset(seed=6)
    ghost = env.ghost_pos[:, 0]
    assert np.isin(ghost, FREE_CELLS).all()
    assert not in_spawn_box(env.pacman, ghost).any()
    dr = ghost // WIDTH - env.pacman // WIDTH
    dc = ghost % WIDTH - env.pacman % WIDTH
    inside = (-5 <= dr) & (dr < 5) & (-5 <= dc) & (dc < 5)
    assert not inside.any()
    assert ((dr == 5) & (-5 <= dc) & (dc < 5)).sum() > 50
    assert ((dc == 5) & (-5 <= dr) & (dr < 5)).sum() > 50
    # Uniform over the allowed cells: the ghost's rank among them is uniform.
    rank = np.array([np.flatnonzero(SPAWN_CELLS[p, : SPAWN_COUNT[p]] == g)[0]
                     for p, g in zip(env.pacman, ghost, strict=True)])
    u = (rank + 0.5) / SPAWN_COUNT[env.pacman]
    assert abs(u.mean() - 0.5) < 4 * np.sqrt(1 / 12 / n)
    # New headings: right, up and the two no-direction codes, a quarter each.
    share = np.array([(env.ghost_heading[:, 0] == h).mean() for h in NEW_GHOST_HEADINGS])
    assert (abs(share - 0.25) < 4 * np.sqrt(0.25 * 0.75 / n)).all()


def test_ghost_count_and_speed_tables():
    np.testing.assert_array_equal(ghost_count([1, 2, 3, 4, 5, 11, 30]), [1, 1, 2, 2, 3, 6, 6])
    assert MAX_GHOSTS == 6
    # Speed 0.5 + 0.1 (level - 1): from level 6 on, every step.
    assert (np.minimum(ghost_speed([1, 2, 3, 6, 9], 0), 1) == pytest.approx(
        [0.5, 0.6, 0.7, 1.0, 1.0]))
    # Halved while power > 0: the speed itself is halved, so past level 6 it still grows.
    assert (np.minimum(ghost_speed([1, 2, 6, 7, 11, 16], 3), 1) == pytest.approx(
        [0.25, 0.3, 0.5, 0.55, 0.75, 1.0]))


# --- Pacman --------------------------------------------------------------------------------------


def test_movement_and_walls():
    env = blank()
    for action, expected in [(UP, (1, 1)), (LEFT, (1, 1)), (RIGHT, (1, 2)), (DOWN, (1, 2)),
                             (LEFT, (1, 1)), (DOWN, (2, 1)), (DOWN, (3, 1)), (RIGHT, (3, 2)),
                             (STAY, (3, 2)), (UP, (3, 2))]:
        act(env, action)
        assert rc(env.pacman[0]) == expected


@pytest.mark.parametrize("mode", MODES)
def test_eating_food_and_pill_rewards_per_mode(mode):
    env = blank(mode=mode)
    env.food[0, cell(1, 2)] = True
    env.food[0, cell(1, 1)] = True
    _, reward, *_, info = act(env, RIGHT)
    np.testing.assert_array_equal(info["events"], [[1, 1, 0, 0, 0]])
    np.testing.assert_allclose(reward, [np.dot(REWARDS[mode], [1, 1, 0, 0, 0])], rtol=1e-6)
    assert not env.food[0, cell(1, 2)] and env.food_left[0] == 2
    _, reward, *_, info = act(env, STAY)  # nothing left on (1, 2)
    np.testing.assert_array_equal(info["events"], [[1, 0, 0, 0, 0]])
    np.testing.assert_allclose(reward, [REWARDS[mode][0]], rtol=1e-6)
    place_pill(env, 1, 3)
    _, reward, *_, info = act(env, RIGHT)
    np.testing.assert_array_equal(info["events"], [[1, 0, 1, 0, 0]])
    np.testing.assert_allclose(reward, [np.dot(REWARDS[mode], [1, 0, 1, 0, 0])], rtol=1e-6)
    assert env.power[0] == 20 and not env.pill_alive[0, 1] and env.pill_alive[0, 0]


def test_staying_eats():
    env = blank()
    env.food[0, cell(1, 1)] = True
    *_, info = act(env, STAY)
    assert info["events"][0, 1] == 1 and not env.food[0, cell(1, 1)]


@pytest.mark.parametrize("mode", MODES)
def test_food_under_a_pill_gives_both_events(mode):
    env = blank(mode=mode)
    env.ghost_alive[:] = False  # nothing random in this step
    set_food(env, FAR_FOOD, (1, 2))
    place_pill(env, 1, 2)  # the pill at FAR_PILL stays: no level change in rush
    _, reward, *_, info = step_both(env, RIGHT)
    np.testing.assert_array_equal(info["events"], [[1, 1, 1, 0, 0]])
    np.testing.assert_allclose(reward, [np.dot(REWARDS[mode], [1, 1, 1, 0, 0])], rtol=1e-6)
    assert env.power[0] == 20 and env.food_left[0] == 1 and not env.food[0, cell(1, 2)]
    np.testing.assert_array_equal(env.pill_alive[0], [True, False])


def test_a_pill_on_pacmans_start_cell_is_eaten_by_staying():
    env = blank()
    env.ghost_alive[:] = False
    set_food(env, FAR_FOOD, (1, 1))  # a level starts with food on Pacman's cell
    place_pill(env, 1, 1)
    *_, info = step_both(env, STAY)
    np.testing.assert_array_equal(info["events"], [[1, 1, 1, 0, 0]])
    assert env.power[0] == 20 and not env.food[0, cell(1, 1)]


def test_two_pills_on_one_cell_are_eaten_one_a_step():
    env = blank()
    env.ghost_alive[:] = False
    place_pill(env, 1, 2, slot=0)
    place_pill(env, 1, 2, slot=1)
    *_, info = step_both(env, RIGHT)
    np.testing.assert_array_equal(info["events"], [[1, 0, 1, 0, 0]])
    assert env.pill_alive[0].sum() == 1 and env.power[0] == 20
    *_, info = step_both(env, STAY)  # the second one, on the next step
    np.testing.assert_array_equal(info["events"], [[1, 0, 1, 0, 0]])
    assert env.power[0] == 20 and not env.pill_alive[0].any() and env.level[0] == 1


# --- the ghost phase -----------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_killed_by_ghost_terminates_with_final_obs(mode):
    env = blank(num_envs=2, mode=mode)
    place_ghost(env, 1, 2, slot=1)
    env.ghost_alive[1, 1] = False  # row 1 has no ghost next to Pacman
    env.steps[:] = 7
    obs, reward, terminated, truncated, info = act(env, RIGHT)
    np.testing.assert_array_equal(terminated, [True, False])
    assert not truncated.any()
    np.testing.assert_array_equal(info["_final_obs"], [True, False])
    np.testing.assert_array_equal(info["events"][0], [1, 0, 0, 0, 1])
    np.testing.assert_allclose(reward[0], np.dot(REWARDS[mode], [1, 0, 0, 0, 1]), rtol=1e-6)
    # The final obs shows Pacman on the ghost's cell; the env was reset in the same step.
    np.testing.assert_array_equal(info["final_obs"][0, :, 1, 2], GREEN)
    assert info["episode_steps"][0] == 8 and env.steps[0] == 0 and info["level"][0] == 1
    assert env.level[0] == 1 and (env.food[0] == FREE).all() and env.food_left[0] == 138
    assert env.pill_alive[0].all() and env.power[0] == 0
    assert not np.array_equal(obs[0], info["final_obs"][0])
    assert env.steps[1] == 8


def test_a_death_does_not_end_the_ghost_phase():
    env = blank(num_envs=64, level=6)  # speed 1: every ghost moves
    place_ghost(env, 1, 1, heading=DOWN, slot=0)  # on Pacman's cell: the first check kills
    place_ghost(env, 3, 8, heading=RIGHT, slot=1)
    *_, terminated, _, info = step_both(env, STAY)
    assert terminated.all()
    np.testing.assert_array_equal(info["events"], np.tile([1, 0, 0, 0, 1], (64, 1)))
    # The final frame: Pacman at (1, 1), the killer moved on down, the later ghost moved too.
    final = info["final_obs"]
    np.testing.assert_array_equal(final[:, :, 1, 1], np.tile(GREEN, (64, 1)))
    np.testing.assert_array_equal(final[:, :, 2, 1], np.tile(RED, (64, 1)))
    np.testing.assert_array_equal(final[:, :, 3, 9], np.tile(RED, (64, 1)))
    np.testing.assert_array_equal(final[:, :, 3, 8], np.zeros((64, 3)))


def test_eating_a_ghost_ends_the_ghost_phase():
    """Power > 0, two ghosts: in rows 0..199 the first sits on Pacman's cell and is eaten, so
    the second does not move this step; in rows 200.. it is elsewhere and the second moves."""
    n = 400
    env = blank(num_envs=n, level=16)
    env.power[:] = 5
    place_ghost(env, 1, 2, slot=0)
    place_ghost(env, 3, 8, heading=RIGHT, slot=1)
    env.ghost_pos[n // 2 :, 0] = cell(13, 9)
    _, reward, terminated, _, info = step_both(env, RIGHT)
    eaten = np.arange(n) < n // 2
    assert not terminated.any()
    np.testing.assert_array_equal(info["events"][:, 3], eaten)
    np.testing.assert_array_equal(env.ghost_alive[:, 0], ~eaten)
    np.testing.assert_allclose(reward[eaten], 5.0)
    np.testing.assert_array_equal(env.ghost_pos[eaten, 1], cell(3, 8))
    np.testing.assert_array_equal(env.ghost_heading[eaten, 1], RIGHT)
    moved = env.ghost_pos[~eaten, 1] != cell(3, 8)
    np.testing.assert_array_equal(env.ghost_pos[~eaten, 1][moved], cell(3, 9))
    assert moved.mean() > 1 / 3  # it would have moved (speed 1 by the spec)


@pytest.mark.parametrize("mode", ["regular", "hunt"])
def test_ghosts_eaten_with_power_at_most_one_per_step(mode):
    env = blank(mode=mode, level=3)
    env.power[:] = 5
    place_ghost(env, 1, 2, slot=0)
    place_ghost(env, 1, 2, slot=1)
    place_ghost(env, 13, 17, slot=2)
    _, reward, terminated, *_, info = step_both(env, RIGHT)
    assert not terminated[0]
    np.testing.assert_array_equal(info["events"][0], [1, 0, 0, 1, 0])
    assert reward[0] == REWARDS[mode][3]
    np.testing.assert_array_equal(env.ghost_alive[0, :3], [False, True, True])
    np.testing.assert_array_equal(env.ghost_pos[0, 1:3], [cell(1, 2), cell(13, 17)])
    *_, info = step_both(env, STAY)  # met at once, before moving
    np.testing.assert_array_equal(info["events"][0], [1, 0, 0, 1, 0])
    assert env.ghost_alive[0].sum() == 1 and env.level[0] == 3


@pytest.mark.parametrize("mode", ["hunt", "ambush"])
def test_eating_the_last_ghost_starts_the_next_level_and_ends_the_phase(mode):
    n = 400
    env = blank(num_envs=n, mode=mode, level=3)
    env.power[:] = 5
    env.steps[:] = 30
    place_ghost(env, 1, 2, slot=0)  # the level's only ghost left
    _, reward, terminated, truncated, info = act(env, RIGHT)
    assert not (terminated | truncated).any()
    np.testing.assert_array_equal(info["events"], np.tile([1, 0, 0, 1, 0], (n, 1)))
    np.testing.assert_allclose(reward, REWARDS[mode][3])
    assert (env.level == 4).all() and (info["level"] == 4).all() and (env.steps == 31).all()
    assert (env.level_steps == 0).all() and (env.power == 0).all()
    assert (env.food == FREE).all() and (env.food_left == 138).all() and env.pill_alive.all()
    assert (env.ghost_alive.sum(axis=1) == ghost_count(4)).all()
    # The new ghosts did not move: on spawn cells, half of them with a no-direction heading
    # (a ghost that moves takes a heading 1..4; at level 4 speed 0.8).
    ghosts = env.ghost_pos[env.ghost_alive]
    pacman = np.repeat(env.pacman, env.ghost_alive.sum(axis=1))
    assert not in_spawn_box(pacman, ghosts).any()
    headings = env.ghost_heading[env.ghost_alive]
    assert abs(np.isin(headings, NO_DIRECTION_HEADINGS).mean() - 0.5) < 0.1


# --- ghost moves ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("heading", "pacman", "expected"),
    [(LEFT, (3, 12), LEFT), (NO_RIGHT, (3, 12), LEFT), (NO_UP, (3, 5), RIGHT),
     (RIGHT, (3, 5), RIGHT), (UP, (3, 5), RIGHT)],
    ids=["left", "reverse-right", "reverse-up", "right", "up"],
)
def test_a_fresh_ghost_in_a_corridor_follows_its_heading(heading, pacman, expected):
    """In the corridor (3, 6..12) a ghost keeps a free heading, else takes the first way in
    right, up, left, down order that is not its heading's reverse: left for the heading whose
    reverse is right, right for the one whose reverse is up, even away from Pacman."""
    env = blank(num_envs=50, level=6)
    env.pacman[:] = cell(*pacman)
    place_ghost(env, 3, 8, heading=heading)
    step_both(env, STAY)
    np.testing.assert_array_equal(env.ghost_pos[:, 0], NEXT[cell(3, 8), expected])
    np.testing.assert_array_equal(env.ghost_heading[:, 0], expected)


@pytest.mark.parametrize(("heading", "expected"), [(NO_RIGHT, DOWN), (NO_UP, RIGHT)],
                         ids=["reverse-right", "reverse-up"])
def test_no_direction_headings_at_a_corner(heading, expected):
    """At the corner (1, 1) (free ways right and down) neither code names a free way, so the
    ghost takes the first way that is not the code's reverse."""
    env = blank(num_envs=50, level=6)
    env.pacman[:] = cell(13, 9)
    place_ghost(env, 1, 1, heading=heading)
    step_both(env, STAY)
    np.testing.assert_array_equal(env.ghost_pos[:, 0], NEXT[cell(1, 1), expected])
    np.testing.assert_array_equal(env.ghost_heading[:, 0], expected)


def test_ghost_keeps_going_in_corridor_never_reverses():
    env = blank(num_envs=200, level=6)
    env.pacman[:] = cell(3, 7)  # right behind the ghost
    place_ghost(env, 3, 8, heading=RIGHT)
    for col in (9, 10, 11, 12):
        step_both(env, STAY)
        np.testing.assert_array_equal(env.ghost_pos[:, 0], cell(3, col))
        np.testing.assert_array_equal(env.ghost_heading[:, 0], RIGHT)
    # Around a corner: the ghost follows the corridor from (1, 2) through (1, 1) down.
    env = blank(num_envs=200, level=6)
    env.pacman[:] = cell(13, 9)
    place_ghost(env, 1, 2, heading=LEFT)
    step_both(env, STAY)
    step_both(env, STAY)
    np.testing.assert_array_equal(env.ghost_pos[:, 0], cell(2, 1))
    np.testing.assert_array_equal(env.ghost_heading[:, 0], DOWN)


def test_ghost_chases_at_junction_with_power_zero():
    n = 4000
    env = blank(num_envs=n, seed=5, level=6)
    env.pacman[:] = cell(1, 5)  # straight up from the junction (3, 5)
    place_ghost(env, 3, 5, heading=RIGHT)  # came from (3, 4): left is excluded
    oracle = to_oracle(env)
    oracle.step(STAY)
    act(env, STAY)
    moved = np.bincount(env.ghost_heading[:, 0], minlength=5)
    # Up with 0.95 + 0.05 / 3; right and down only at random (0.05 / 3 each); never left.
    assert moved[LEFT] == 0 and moved[[RIGHT, UP, DOWN]].sum() == n
    up = moved[UP] / n
    assert abs(up - (0.95 + 0.05 / 3)) < 4 * np.sqrt(0.0333 * 0.9667 / n)
    for side in (RIGHT, DOWN):
        assert abs(moved[side] / n - 0.05 / 3) < 4 * np.sqrt(0.0167 * 0.9833 / n)
    assert oracle.ghosts[0].heading == UP and oracle.ghosts[0].cell == (2, 5)


@pytest.mark.parametrize(
    ("pacman", "heading", "power", "expected"),
    [((1, 7), RIGHT, 0, RIGHT),  # right and up point equally towards Pacman: right first
     ((1, 3), LEFT, 0, UP),  # up and left tie (right, the reverse, is out): up first
     ((5, 3), LEFT, 0, LEFT),  # left and down tie: left first
     ((5, 7), UP, 5, UP),  # fleeing, up and left point equally away: up first
     ((1, 5), RIGHT, 5, DOWN)],  # fleeing straight away from Pacman
    ids=["right-up", "up-left", "left-down", "flee-up-left", "flee-down"],
)
def test_junction_ties_go_in_right_up_left_down_order(pacman, heading, power, expected):
    """At the junction (3, 5) a ghost leaves out its heading's reverse and takes the option
    pointing most towards Pacman (power 0; apart from 5 % random turns) or most away from him
    (power > 0, never at random, at half speed); ties go to the first in right, up, left, down
    order."""
    n = 1000
    env = blank(num_envs=n, level=6)
    env.power[:] = power
    env.pacman[:] = cell(*pacman)
    place_ghost(env, 3, 5, heading=heading)
    oracle = to_oracle(env)
    oracle.step(STAY)
    assert oracle.ghosts[0].cell == rc(NEXT[cell(3, 5), expected])
    act(env, STAY)
    moved = env.ghost_pos[:, 0] != cell(3, 5)
    taken = env.ghost_heading[moved, 0]
    assert (taken != REVERSE_HEADING[heading]).all()
    if power:
        np.testing.assert_array_equal(taken, expected)
        assert abs(moved.mean() - 0.5) < 4 * np.sqrt(0.25 / n)  # speed 1 halved
    else:
        assert moved.all() and (taken == expected).mean() > 0.93


def test_ghost_flees_at_junction_with_power():
    n = 4000
    env = blank(num_envs=n, seed=6, level=6)
    env.power[:] = 10
    env.pacman[:] = cell(1, 5)
    place_ghost(env, 3, 5, heading=RIGHT)
    act(env, STAY)
    moved = env.ghost_pos[:, 0] != cell(3, 5)
    # Never at random: the move pointing most away (down); speed 1 halved to 0.5.
    np.testing.assert_array_equal(env.ghost_pos[moved, 0], cell(4, 5))
    assert abs(moved.mean() - 0.5) < 4 * np.sqrt(0.25 / n)


@pytest.mark.parametrize("heading", [UP, LEFT], ids=["up", "left"])
def test_a_ghost_on_pacmans_cell_keeps_its_heading(heading):
    """With power 0 the ghost on Pacman's cell kills him, then moves: at a junction it keeps
    its heading instead of choosing (every option points "towards" him equally)."""
    env = blank(num_envs=200, level=6)
    env.pacman[:] = cell(3, 5)
    place_ghost(env, 3, 5, heading=heading)
    *_, terminated, _, info = step_both(env, STAY)
    assert terminated.all()
    r, c = rc(NEXT[cell(3, 5), heading])
    np.testing.assert_array_equal(info["final_obs"][:, :, r, c], np.tile(RED, (200, 1)))


def test_ghost_speed_by_level():
    n = 4000
    env = blank(num_envs=n, seed=7, level=2)
    env.pacman[:] = cell(13, 9)
    place_ghost(env, 3, 8, heading=RIGHT)
    act(env, STAY)
    moved = (env.ghost_pos[:, 0] != cell(3, 8)).mean()
    assert abs(moved - 0.6) < 4 * np.sqrt(0.24 / n)


@pytest.mark.parametrize(("level", "speed"), [(7, 0.55), (16, 1.0)])
def test_power_halves_the_level_speed(level, speed):
    """Speed 0.5 + 0.1 (level - 1), halved while power > 0: 0.55 at level 7, 1 at level 16."""
    n = 4000
    env = blank(num_envs=n, seed=8, level=level)
    env.power[:] = 10
    env.pacman[:] = cell(13, 9)
    place_ghost(env, 3, 8, heading=RIGHT)
    oracle = to_oracle(env, draw=0.999)
    oracle.step(STAY)
    assert (oracle.ghosts[0].cell == (3, 9)) == (speed == 1.0)
    act(env, STAY)
    moved = (env.ghost_pos[:, 0] != cell(3, 8)).mean()
    assert abs(moved - speed) < 4 * np.sqrt(speed * (1 - speed) / n) + 1e-9


# --- pills, levels, episodes ---------------------------------------------------------------------


def test_pill_power_timing_and_ghost_colour():
    env = blank()
    place_pill(env, 1, 2)
    obs, *_ = act(env, RIGHT)
    assert env.power[0] == 20
    gr, gc = rc(env.ghost_pos[0, 0])
    np.testing.assert_allclose(obs[0, :, gr, gc], [1, 1, 0])
    for expected in range(19, -1, -1):
        obs, *_ = act(env, STAY)
        assert env.power[0] == expected
        gr, gc = rc(env.ghost_pos[0, 0])
        np.testing.assert_allclose(obs[0, :, gr, gc], [1, expected / 20, 0])
    act(env, STAY)
    assert env.power[0] == 0


@pytest.mark.parametrize("mode", MODES)
def test_level_changes_per_mode(mode):
    env = blank(num_envs=2, mode=mode)
    env.steps[:] = 10
    # Row 0 meets the mode's condition this step, row 1 does not.
    if mode in ("regular", "avoid"):
        set_food(env, (1, 2))
        env.food[1, cell(5, 5)] = True
    elif mode in ("hunt", "ambush"):
        env.power[:] = 5
        place_ghost(env, 1, 2)
        place_ghost(env, 13, 17, slot=1)
        env.ghost_alive[0, 1] = False
    else:  # rush
        env.pill_alive[:] = False
        place_pill(env, 1, 2)
        env.pill_alive[1, 0] = True
    _, _, terminated, truncated, info = act(env, RIGHT)
    assert not (terminated | truncated).any()
    np.testing.assert_array_equal(env.level, [2, 1])
    np.testing.assert_array_equal(info["level"], [2, 1])
    np.testing.assert_array_equal(env.steps, [11, 11])  # the episode goes on
    np.testing.assert_array_equal(env.level_steps, [0, 1])
    assert (env.food[0] == FREE).all() and env.food_left[0] == 138
    # In regular and avoid the pill check plays on the new level: it may eat a new pill.
    pill = info["events"][0, 2] if mode in ("regular", "avoid") else 0
    assert env.pill_alive[0].sum() == 2 - pill and env.power[0] == 20 * pill
    assert env.ghost_alive[0].sum() == 1


@pytest.mark.parametrize(("mode", "last"), [("regular", "food"), ("avoid", "food"),
                                            ("rush", "pill")])
def test_a_level_change_mid_step_then_the_new_levels_ghosts_move(mode, last):
    """At level 5 Pacman eats the last food (or pill) on (1, 2), where the old level also has
    a pill and next to it a ghost about to step onto it. Level 6 starts at once: the pill check
    (regular, avoid) and the ghost phase play on it, so the old pill and ghost play no part,
    the new ghosts (speed 1) all move from their spawn cells, and nobody dies."""
    n = 3000
    env = blank(num_envs=n, mode=mode, level=5)
    env.steps[:] = 40
    if last == "food":
        set_food(env, (1, 2))
        place_pill(env, 1, 2)
    else:
        set_food(env, FAR_FOOD, (1, 2))
        env.pill_alive[:] = False
        place_pill(env, 1, 2)
    place_ghost(env, 1, 3, heading=LEFT, slot=1)
    _, _, terminated, truncated, info = act(env, RIGHT)
    assert not (terminated | truncated).any()
    events = info["events"]
    np.testing.assert_array_equal(events[:, [0, 1, 3, 4]], np.tile([1, 1, 0, 0], (n, 1)))
    assert (env.level == 6).all() and (env.level_steps == 0).all() and (env.steps == 41).all()
    assert (env.food == FREE).all() and (env.food_left == 138).all()
    pill = events[:, 2] == 1
    if last == "food":
        # The new level's pill check: a pill eaten only where one lies on Pacman's new cell.
        assert 0 < pill.sum() < 0.05 * n
        np.testing.assert_array_equal(env.pill_alive.sum(axis=1), 2 - pill)
        eaten = np.argmin(env.pill_alive[pill], axis=1)
        np.testing.assert_array_equal(env.pill_pos[pill, eaten], env.pacman[pill])
        apart = env.pill_pos[:, 0] != env.pill_pos[:, 1]  # else one of them is left
        assert not (env.pill_alive & (env.pill_pos == env.pacman[:, None]))[apart].any()
    else:
        assert pill.all() and env.pill_alive.all()
    np.testing.assert_array_equal(env.power, np.where(pill & (last == "food"), 20, 0))
    assert (env.ghost_alive.sum(axis=1) == ghost_count(6)).all()
    # Where power is 0 (speed 1) every new ghost moved: its heading is a move, and the cell
    # it came from lies outside the spawn box around Pacman's new cell.
    fast = env.power == 0
    headings = env.ghost_heading[fast][env.ghost_alive[fast]]
    ghosts = env.ghost_pos[fast][env.ghost_alive[fast]]
    assert np.isin(headings, [RIGHT, UP, LEFT, DOWN]).all()
    came_from = NEXT[ghosts, np.take(REVERSE_HEADING, headings)]
    pacman = np.repeat(env.pacman[fast], env.ghost_alive[fast].sum(axis=1))
    assert not in_spawn_box(pacman, came_from).any()


def test_avoid_levels_every_128_steps_but_not_on_a_death():
    env = blank(num_envs=3, mode="avoid")
    env.level_steps[:] = [127, 126, 127]
    place_ghost(env, 1, 2, slot=1)  # Pacman walks onto it in row 2
    env.ghost_alive[:2, 1] = False
    _, _, terminated, _, info = act(env, RIGHT)
    np.testing.assert_array_equal(terminated, [False, False, True])
    np.testing.assert_array_equal(info["level"], [2, 1, 1])
    np.testing.assert_array_equal(env.level[:2], [2, 1])
    np.testing.assert_array_equal(env.level_steps[:2], [0, 127])
    assert (env.food[0] == FREE).all() and env.pill_alive[0].all()
    env = blank(num_envs=1, mode="regular")
    env.level_steps[:] = 127
    act(env, STAY)
    assert env.level[0] == 1


def test_third_level_has_two_ghosts():
    env = blank(mode="rush", level=2)
    env.pill_alive[:] = False
    place_pill(env, 1, 2)
    act(env, RIGHT)
    assert env.level[0] == 3 and env.ghost_alive[0].sum() == 2


def test_frame_cap_truncates_and_auto_resets():
    env = blank(num_envs=4, frame_cap=5)
    env.steps[:] = [0, 1, 2, 2]
    for _ in range(2):
        _, _, terminated, truncated, _ = act(env, STAY)
        assert not (terminated | truncated).any()
    env.ghost_alive[3, 1] = True  # row 3: a ghost on Pacman's cell on the last step
    env.ghost_pos[3, 1] = cell(1, 1)
    obs, _, terminated, truncated, info = act(env, STAY)
    np.testing.assert_array_equal(truncated, [False, False, True, False])
    np.testing.assert_array_equal(terminated, [False, False, False, True])  # not both
    np.testing.assert_array_equal(info["episode_steps"], [3, 4, 5, 5])
    np.testing.assert_array_equal(env.steps, [3, 4, 0, 0])
    np.testing.assert_array_equal(info["final_obs"][2, :, 1, 1], GREEN)
    assert not np.array_equal(obs[2], info["final_obs"][2])
    assert (env.food[2] == FREE).all() and env.level[2] == 1


def test_episode_return_accumulates():
    env = blank(mode="avoid")
    for _ in range(3):
        *_, info = act(env, STAY)
    np.testing.assert_allclose(info["episode_return"], [0.3], rtol=1e-6)


# --- seeding, state, batching, rendering ---------------------------------------------------------


def rollout(env, steps, seed=0):
    actions = np.random.default_rng(seed).integers(0, 5, (steps, env.num_envs))
    return [env.step(a) for a in actions]


def test_seeding_is_reproducible():
    runs = []
    for _ in range(2):
        env = MiniPacman(num_envs=8, mode="hunt")
        obs, _ = env.reset(seed=11)
        runs.append((obs, rollout(env, 100)))
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    for a, b in zip(runs[0][1], runs[1][1], strict=True):
        for x, y in zip(a[:4], b[:4], strict=True):
            np.testing.assert_array_equal(x, y)
        np.testing.assert_array_equal(a[4]["events"], b[4]["events"])
    env = MiniPacman(num_envs=8, mode="hunt")
    other, _ = env.reset(seed=12)
    assert not np.array_equal(other, runs[0][0])


def test_state_dict_round_trip():
    env = MiniPacman(num_envs=6, mode="avoid")
    env.reset(seed=4)
    rollout(env, 30)
    state = env.state_dict()
    first = rollout(env, 40, seed=1)
    copy = MiniPacman(num_envs=6, mode="avoid")
    copy.load_state_dict(state)
    second = rollout(copy, 40, seed=1)
    ended = 0
    for a, b in zip(first, second, strict=True):
        for x, y in zip(a[:4], b[:4], strict=True):
            np.testing.assert_array_equal(x, y)
        done = a[4]["_final_obs"]
        np.testing.assert_array_equal(done, b[4]["_final_obs"])
        np.testing.assert_array_equal(a[4]["final_obs"][done], b[4]["final_obs"][done])
        ended += done.sum()
    assert ended > 0
    with pytest.raises(ValueError):
        MiniPacman(num_envs=5, mode="avoid").load_state_dict(state)


@pytest.mark.parametrize("mode", ["regular", "hunt"])
def test_batch_equals_loop_of_single_envs(mode):
    """Every env draws from its own stream, so a batch row and a single env started from
    that row's state (stream key and counter included) step identically, auto-resets and
    ghost randomness included."""
    b = 5
    batch = MiniPacman(num_envs=b, mode=mode)
    batch.reset(seed=9)
    rollout(batch, 20, seed=3)
    state = batch.state_dict()
    singles = []
    for row in range(b):
        single = MiniPacman(num_envs=1, mode=mode)
        single.load_state_dict({
            **{name: value[row : row + 1] for name, value in state.items()
               if name in single.state_arrays},
            "rng": state["rng"], "needs_reset": False,
        })
        singles.append(single)
    actions = np.random.default_rng(8).integers(0, 5, (150, b))
    dones = 0
    for step_actions in actions:
        obs, reward, terminated, truncated, info = batch.step(step_actions)
        done = terminated | truncated
        dones += done.sum()
        for row, single in enumerate(singles):
            s_obs, s_reward, s_term, s_trunc, s_info = single.step(step_actions[row : row + 1])
            np.testing.assert_array_equal(s_obs[0], obs[row])
            assert s_reward[0] == reward[row] and s_term[0] == terminated[row]
            assert s_trunc[0] == truncated[row]
            np.testing.assert_array_equal(s_info["events"][0], info["events"][row])
            if done[row]:
                np.testing.assert_array_equal(s_info["final_obs"][0], info["final_obs"][row])
    assert dones > 0  # auto-resets were compared too


@pytest.mark.parametrize("rows", [16, 1024])  # below and above UNTOUCHED_MIN_BYTES
def test_untouched_zeros_are_writable_zeros(rows):
    array = untouched_zeros((rows, 3, 15, 19))
    assert array.shape == (rows, 3, 15, 19) and array.dtype == np.float32
    assert not array.any()
    array[rows - 1] = 1.0
    assert array.sum() == 3 * 15 * 19


@pytest.mark.parametrize("mode", ["regular", "hunt", "rush"])
def test_threads_step_the_same_batch(mode):
    """``threads`` splits the batch into shards stepped side by side; every output, the
    state, and a state loaded mid-run are the same as with one thread."""
    envs = [MiniPacman(num_envs=37, mode=mode, threads=threads) for threads in (1, 3)]
    assert len({env.reset(seed=2)[0].tobytes() for env in envs}) == 1
    actions = np.random.default_rng(5).integers(0, 5, (120, 37))
    for step, row in enumerate(actions):
        if step == 60:
            envs[1].load_state_dict(envs[0].state_dict())
        (*a, a_info), (*b, b_info) = (env.step(row) for env in envs)
        for x, y in zip(a, b, strict=True):
            np.testing.assert_array_equal(x, y)
        assert a_info.keys() == b_info.keys()
        for key in a_info:
            np.testing.assert_array_equal(a_info[key], b_info[key])
    for name in envs[0].state_arrays:
        np.testing.assert_array_equal(getattr(envs[0], name), getattr(envs[1], name))
    assert MiniPacman(num_envs=2, threads=4).threads == 2  # at most one thread per env
    envs[1].close()


@pytest.mark.parametrize("mode", ["regular", "hunt", "rush"])
def test_frames_match_a_full_redraw_and_the_oracles_rendering(mode):
    """The frame kept step by step equals one drawn from scratch from the state, and the
    oracle's rendering of the same state; the food count stays the food left."""
    n, steps = 8, 200
    env = MiniPacman(num_envs=n, mode=mode)
    env.reset(seed=21)
    fresh = MiniPacman(num_envs=n, mode=mode)
    powered = 0
    for actions in np.random.default_rng(22).integers(0, 5, (steps, n)):
        obs, *_, info = env.step(actions)
        fresh.load_state_dict(env.state_dict())
        np.testing.assert_array_equal(obs, fresh.observe())
        np.testing.assert_array_equal(env.food_left, env.food.sum(axis=1))
        for row in range(0, n, 3):
            np.testing.assert_array_equal(obs[row], to_oracle(env, row).observe())
        done = info["_final_obs"]
        for frames in (obs, info["final_obs"][done]):  # one Pacman in each
            pacman = (frames[:, 0] == 0) & (frames[:, 1] == 1) & (frames[:, 2] == 0)
            assert (pacman.sum(axis=(1, 2)) == 1).all()
        powered += (env.power > 0).sum()
    assert powered > 0  # tinted ghosts were drawn too
