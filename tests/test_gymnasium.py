"""Gymnasium in and out: procmem's envs as Gymnasium vector envs with registered one-env
forms, and any Gymnasium env through env=gymnasium."""

from __future__ import annotations

import pickle
import warnings

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from gymnasium.vector import AutoresetMode, VectorEnv

import procmem.envs  # noqa: F401  (registers procmem/...)
from procmem.envs.gymnasium_env import GymnasiumEnv
from procmem.envs.registration import ENVS, SingleEnv, env_id
from procmem.settings import SettingError

NAMES = list(ENVS)


@pytest.mark.parametrize("name", NAMES)
def test_each_registered_env_passes_gymnasiums_env_checker(name):
    env = gymnasium.make(env_id(name))
    assert isinstance(env.unwrapped, SingleEnv)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the checker's warnings count as failures
        check_env(env.unwrapped, skip_render_check=True)


@pytest.mark.parametrize("name", NAMES)
def test_make_vec_gives_the_batched_env_with_its_spaces_and_same_step_autoreset(name):
    envs = gymnasium.make_vec(env_id(name), num_envs=5)
    assert isinstance(envs, VectorEnv) and envs.num_envs == 5
    assert envs.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP
    assert envs.action_space == gymnasium.spaces.MultiDiscrete([envs.num_actions] * 5)
    obs, _ = envs.reset(seed=0)
    assert envs.observation_space.contains(obs)
    rng = np.random.default_rng(0)
    ended = False
    for _ in range(400):
        obs, reward, terminated, truncated, info = envs.step(rng.integers(0, envs.num_actions, 5))
        assert envs.observation_space.contains(obs) and reward.shape == (5,)
        done = terminated | truncated
        assert np.array_equal(info["_final_obs"], done)
        if done.any():
            assert envs.observation_space.contains(info["final_obs"])
            ended = True
    assert ended


def test_make_passes_settings_and_the_one_env_returns_the_last_observation_of_an_episode():
    env = gymnasium.make(env_id("MiniPacman"), mode="hunt", frame_cap=3)
    assert env.unwrapped.batched.mode == "hunt"
    first, _ = env.reset(seed=1)
    for _ in range(3):
        obs, _, terminated, truncated, _ = env.step(0)
    assert truncated and not terminated
    again, _ = env.reset(seed=1)
    assert np.array_equal(first, again)  # a seed gives the same start


def test_env_gymnasium_batches_the_final_observations_of_ended_episodes():
    env = GymnasiumEnv(num_envs=3)
    obs, _ = env.reset(seed=0)
    for _ in range(60):
        obs, reward, terminated, truncated, info = env.step(np.array([1, 1, 0]))
        done = terminated | truncated
        if done.any():
            break
    assert done.any() and info["final_obs"].shape == obs.shape
    assert np.array_equal(info["_final_obs"], done)
    row = int(np.flatnonzero(done)[0])
    assert abs(info["final_obs"][row][2]) > 0.2 >= abs(obs[row][2])  # a fallen pole; a new one
    assert np.array_equal(info["final_obs"][~done], obs[~done])
    assert reward.dtype == np.float32 and env.num_actions == 2


def test_env_gymnasium_leaves_out_text_observations_and_resumes_exactly():
    env = GymnasiumEnv(id="minigrid:MiniGrid-DoorKey-5x5-v0", num_envs=2)
    assert set(env.single_observation_space.spaces) == {"image", "direction"}
    env.reset(seed=0)
    state = pickle.loads(pickle.dumps(env.state_dict()))  # as a checkpoint holds it
    actions = np.random.default_rng(0).integers(0, env.num_actions, (20, 2))
    first = [env.step(a)[0]["image"] for a in actions]
    env.load_state_dict(state)
    second = [env.step(a)[0]["image"] for a in actions]
    assert all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))


def test_env_gymnasium_async_envs_restart_with_a_warning_when_resumed():
    env = GymnasiumEnv(num_envs=2, vectorization="async")
    try:
        env.reset(seed=0)
        with pytest.warns(UserWarning, match="restart"):
            env.load_state_dict(env.state_dict())
    finally:
        env.close()


def test_env_gymnasium_refuses_an_unknown_id_naming_the_setting():
    with pytest.raises(SettingError, match="^id: 'NoSuchEnv-v0': Environment `NoSuchEnv`"):
        GymnasiumEnv(id="NoSuchEnv-v0")


def test_env_gymnasium_passes_kwargs_and_applies_wrappers_in_order():
    env = GymnasiumEnv(id="CartPole-v1", num_envs=2, kwargs={"max_episode_steps": 3},
                       wrappers=["gymnasium.wrappers.TimeAwareObservation"])
    assert env.single_observation_space.shape == (5,)  # the time appended by the wrapper
    env.reset(seed=0)
    for _ in range(3):
        _, _, terminated, truncated, _ = env.step(np.zeros(2, dtype=np.int64))
    assert truncated.all() and not terminated.any()  # the 3-step limit from kwargs
