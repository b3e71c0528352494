"""Gymnasium in and out: procmem's envs as Gymnasium vector envs with registered one-env
forms, and any Gymnasium env through env=gymnasium."""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path
from typing import Any

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from gymnasium.vector import AutoresetMode, VectorEnv

import procmem.envs  # noqa: F401  (registers procmem/...)
from procmem.envs.gymnasium_env import GymnasiumEnv
from procmem.envs.registration import ENVS, SingleEnv, env_id
from procmem.settings import SettingError

from helpers import checkpoint_round_trip, run_cli

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


@pytest.mark.parametrize("vectorization", ["sync", "async"])
def test_env_gymnasium_leaves_out_text_observations_and_resumes_exactly(vectorization, tmp_path):
    """Restored from a checkpoint file (in a seeded episode, then in one begun at an unseeded
    autoreset), other envs continue identically."""
    def make() -> GymnasiumEnv:
        return GymnasiumEnv(id="minigrid:MiniGrid-DoorKey-5x5-v0", num_envs=2,
                            kwargs={"max_steps": 8}, vectorization=vectorization)

    env, restored = make(), make()
    try:
        assert set(env.single_observation_space.spaces) == {"image", "direction"}
        actions = np.random.default_rng(0).integers(0, env.num_actions, (40, 2))
        env.reset(seed=0)
        restored.reset(seed=1)
        for step, a in enumerate(actions):
            if step in (5, 13):
                state = checkpoint_round_trip(env.state_dict(), tmp_path / f"{step}.pt")
                restored.load_state_dict(state)
            (obs, *rest, _), (again, *rest_again, _) = env.step(a), restored.step(a)
            if step >= 5:
                np.testing.assert_array_equal(obs["image"], again["image"])
                for x, y in zip(rest, rest_again, strict=True):  # reward, terminated, truncated
                    np.testing.assert_array_equal(x, y)
    finally:
        env.close()
        restored.close()


def test_env_gymnasium_state_is_data_for_continuous_actions(tmp_path):
    env, restored = (GymnasiumEnv(id="Pendulum-v1", num_envs=2) for _ in range(2))
    actions = np.random.default_rng(0).uniform(-2, 2, (30, 2, 1)).astype(np.float32)
    env.reset()  # unseeded: the generators' states are what the state holds
    for a in actions[:10]:
        env.step(a)
    restored.load_state_dict(checkpoint_round_trip(env.state_dict(), tmp_path / "env.pt"))
    for a in actions[10:]:
        np.testing.assert_array_equal(env.step(a)[0], restored.step(a)[0])


class Planted:
    """A pickle whose loading creates the file ``path``, as a malicious checkpoint could."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return Path.touch, (self.path,)


def test_env_gymnasium_never_unpickles_the_envs_of_an_earlier_version(tmp_path):
    marker = tmp_path / "unpickled"
    state = checkpoint_round_trip({"envs": pickle.dumps(Planted(marker))}, tmp_path / "old.pt")
    env = GymnasiumEnv(num_envs=2)
    env.reset(seed=0)
    with pytest.warns(UserWarning, match="saved as pickled objects, which are not loaded, so "
                                         "the envs restart"):
        env.load_state_dict(state)
    assert not marker.exists()
    pickle.loads(state["envs"])  # what loading it would have done
    assert marker.exists()


def test_env_gymnasium_restarts_with_a_warning_from_an_earlier_unsaved_state():
    env = GymnasiumEnv(num_envs=2)
    env.reset(seed=0)
    with pytest.warns(UserWarning, match="was not saved .* so the envs restart"):
        env.load_state_dict({"envs": None})  # async envs of an earlier version


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


CALLED = []


def not_a_wrapper(env: gymnasium.Env) -> gymnasium.Env:
    """Wraps nothing; a call is noted."""
    CALLED.append(env)
    return env


@pytest.mark.parametrize(("settings", "message"), [
    ({"wrappers": ["no.such.Wrapper"]},
     "wrappers: no.such.Wrapper: cannot be imported: No module named 'no'"),
    ({"wrappers": ["gymnasium.wrappers.NoSuchWrapper"]},
     "wrappers: gymnasium.wrappers.NoSuchWrapper: cannot be imported: "),
    ({"wrappers": ["collections.OrderedDict"]},
     "wrappers: collections.OrderedDict: a class, not a subclass of gymnasium.Wrapper"),
    ({"wrappers": ["os.getcwd"]},
     "wrappers: os.getcwd: a builtin_function_or_method, not a subclass of gymnasium.Wrapper"),
    ({"wrappers": [f"{__name__}.not_a_wrapper"]},
     f"wrappers: {__name__}.not_a_wrapper: a function, not a subclass of gymnasium.Wrapper"),
    ({"wrappers": ["gymnasium.wrappers.TimeLimit"]},
     "wrappers: gymnasium.wrappers.TimeLimit: TimeLimit.__init__() missing 1 required "),
    ({"kwargs": {"bogus": 1}},
     "kwargs: {'bogus': 1}: CartPoleEnv.__init__() got an unexpected keyword argument 'bogus'"),
    ({"kwargs": 5}, "kwargs: 5 is not a mapping of the env's argument names to values"),
])
def test_env_gymnasium_refuses_bad_wrappers_and_kwargs_naming_the_setting(settings, message):
    with pytest.raises(SettingError) as info:
        GymnasiumEnv(num_envs=1, **settings)
    assert info.value.key == next(iter(settings))
    assert str(info.value).startswith(message) and "\n" not in str(info.value)
    assert not CALLED  # refused without being called


def test_a_bad_wrapper_on_the_command_line_is_one_line_exit_2_and_no_run_dir(tmp_path):
    result = run_cli("train.py", "experiment=a2c_cartpole", "env.wrappers=[os.getcwd]",
                     "trainer.iterations=2", "logger=none", f"hydra.run.dir={tmp_path / 'x'}",
                     check=False)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.splitlines() == [
        "config error: env.wrappers: os.getcwd: a builtin_function_or_method, not a subclass "
        "of gymnasium.Wrapper"]
    assert not (tmp_path / "x").exists()
