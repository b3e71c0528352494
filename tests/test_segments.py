"""Subgoal segmentation, shortest experienced paths and transferable features."""

import numpy as np
import torch

from procmem.envs.keydoor import FIELD, NO_DIRECTION, OBS_FIELDS
from procmem.skills.features import (
    SituationEmbedding,
    next_subgoal,
    num_policy_features,
    policy_features,
)
from procmem.skills.segments import shortest_path, state_keys, subgoal_segments

UP, DOWN, LEFT, RIGHT, PICKUP, OPEN = range(6)
MOVES = {UP: (0, 1), DOWN: (0, -1), LEFT: (-1, 0), RIGHT: (1, 0)}
KEY, DOOR, GOAL = (2, 0), (2, 2), (0, 2)


def obs_row(x, y, has_key=0, door_open=0, key=KEY, door=DOOR, goal=GOAL):
    row = np.zeros(len(OBS_FIELDS), dtype=np.int64)
    values = {"x": x, "y": y, "dir": NO_DIRECTION, "has_key": has_key, "door_open": door_open,
              "key_x": key[0], "key_y": key[1], "door_x": door[0], "door_y": door[1],
              "goal_x": goal[0], "goal_y": goal[1]}
    for name, value in values.items():
        row[FIELD[name]] = value
    return row


def play(actions):
    """Run ``actions`` on a tiny open 3x3 task; return obs [T+1], actions [T], events."""
    x, y, has_key, door_open = 0, 0, 0, 0
    obs, events = [obs_row(x, y)], {"key_picked": [], "door_opened": [], "success": []}
    for a in actions:
        picked = opened = success = False
        if a in MOVES:
            x = min(max(x + MOVES[a][0], 0), 2)
            y = min(max(y + MOVES[a][1], 0), 2)
        elif a == PICKUP and (x, y) == KEY and not has_key:
            has_key, picked = 1, True
        elif a == OPEN and (x, y) == DOOR and has_key and not door_open:
            door_open, opened = 1, True
        success = bool(door_open) and (x, y) == GOAL
        events["key_picked"].append(picked)
        events["door_opened"].append(opened)
        events["success"].append(success)
        obs.append(obs_row(x, y, has_key, door_open))
    return np.stack(obs), np.array(actions), {k: np.array(v) for k, v in events.items()}


def test_shortest_path_cuts_loops_and_detours():
    # right, left, right, up, down, right: net two steps right.
    obs, actions, _ = play([RIGHT, LEFT, RIGHT, UP, DOWN, RIGHT])
    keys = state_keys(obs)
    steps = shortest_path(keys, actions, 0, len(actions))
    assert [int(actions[t]) for t in steps] == [RIGHT, RIGHT]


def test_segments_follow_the_subgoals_in_order_and_are_shortened():
    wander = [UP, RIGHT, DOWN, LEFT, RIGHT, RIGHT]  # ends on the key (2, 0)
    to_door = [UP, DOWN, UP, UP]  # (2,1) back to (2,0), then (2,1) (2,2): the door
    to_goal = [DOWN, UP, LEFT, LEFT]  # away and back, then (1,2) (0,2): the goal
    obs, actions, events = play([*wander, PICKUP, *to_door, OPEN, *to_goal])
    segments = subgoal_segments(obs, actions, events)

    assert [s.subgoal.name for s in segments] == ["acquire_key", "open_door", "reach_goal"]
    assert segments[0].actions.tolist() == [RIGHT, RIGHT, PICKUP]
    assert segments[1].actions.tolist() == [UP, UP, OPEN]
    assert segments[2].actions.tolist() == [LEFT, LEFT]
    # Each demonstration starts in the state right after the previous subgoal.
    assert segments[1].obs[0, FIELD["has_key"]] == 1 and segments[1].obs[0, FIELD["x"]] == 2
    for segment in segments:
        assert len(segment.obs) == len(segment.actions)


def test_episode_without_events_has_no_segments():
    obs, actions, events = play([UP, UP, RIGHT])
    assert subgoal_segments(obs, actions, events) == []


def test_next_subgoal_follows_the_flags():
    rows = np.stack([obs_row(0, 0), obs_row(0, 0, has_key=1), obs_row(0, 0, 1, 1)])
    assert next_subgoal(rows).tolist() == [0, 1, 2]


def test_situation_embedding_transfers_across_layouts():
    embed = SituationEmbedding(64, seed=0, device=torch.device("cpu"), lengthscale=0.5)
    # Two different layouts, same offset to the key: same key vector.
    a = embed(obs_row(0, 0, key=(2, 1))[None])
    b = embed(obs_row(3, 3, key=(5, 4))[None])
    c = embed(obs_row(0, 0, key=(3, 1))[None])
    assert torch.allclose(a, b, atol=1e-6)
    assert float(a @ c.T) < 0.5
    assert torch.allclose(a.norm(dim=1), torch.ones(1))
    again = SituationEmbedding(64, seed=0, device=torch.device("cpu"), lengthscale=0.5)
    assert torch.equal(again(obs_row(1, 2)[None]), embed(obs_row(1, 2)[None]))


def test_policy_features_depend_on_offsets_not_absolute_cells():
    a = policy_features(obs_row(0, 0, key=(2, 1))[None], np.array([0]))
    b = policy_features(obs_row(3, 3, key=(5, 4))[None], np.array([0]))
    assert np.array_equal(a, b)


def test_direction_features_are_the_same_near_and_far_so_skills_carry_to_larger_grids():
    near = policy_features(obs_row(0, 0, key=(2, 1))[None], np.array([0]), "direction")
    far = policy_features(obs_row(0, 0, key=(13, 9))[None], np.array([0]), "direction")
    np.testing.assert_array_equal(near, far)
    assert near.shape[1] == num_policy_features("direction") == num_policy_features("offset") - 2
    near_offset, far_offset = (policy_features(obs_row(0, 0, key=key)[None], np.array([0]))
                               for key in ((2, 1), (13, 9)))
    assert not np.array_equal(near_offset, far_offset)  # "offset" reads the distance too
