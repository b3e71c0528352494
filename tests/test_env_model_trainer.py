"""agent=env_model: data collection, the replay ring, learning, resuming, saving the model and
acting with a trained A2C run's policy."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from procmem import app
from procmem.algorithms.env_model_training import (
    EnvModelTrainer,
    _windows,
    decode_frames,
    encode_frames,
)
from procmem.app.build import load_run_inputs
from procmem.envs.minipacman import MiniPacman
from procmem.models.env_model_file import load_env_model, save_env_model
from procmem.run.run_dir import RunDir

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SMALL = {"channels": 16, "blocks": 1, "lr": 3e-3, "batch_size": 32, "buffer_size": 2000,
         "collect_steps": 4, "updates_per_iteration": 2, "event_coef": 0.1}


def make_trainer(num_envs: int = 4, frame_cap: int = 1000, seed: int = 0, policy=None,
                 **settings) -> EnvModelTrainer:
    return EnvModelTrainer(
        MiniPacman(num_envs=num_envs, frame_cap=frame_cap),
        MiniPacman(num_envs=num_envs, frame_cap=frame_cap), torch.device("cpu"), seed, policy,
        **{**SMALL, **settings},
    )


def quiet(trainer: EnvModelTrainer, iterations: int) -> list[dict[str, float]]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [trainer.train_iteration() for _ in range(iterations)]


def test_random_policy_warns_once():
    trainer = make_trainer()
    with pytest.warns(UserWarning, match="random policy"):
        metrics = trainer.train_iteration()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        trainer.train_iteration()
    assert metrics["train/env_steps"] == 4 * 4
    assert {"envmodel/loss", "envmodel/pixel_accuracy", "envmodel/reward_accuracy"} <= set(metrics)


def test_frames_encode_exactly():
    env = MiniPacman(num_envs=8)
    obs, _ = env.reset(seed=3)
    for _ in range(40):  # eat a pill now and then: ghosts with green power / 20
        obs, *_ = env.step(np.random.default_rng(0).integers(0, 5, size=8))
        assert np.array_equal(decode_frames(encode_frames(obs)), obs)


def test_buffer_ring_and_final_frames():
    trainer = make_trainer(num_envs=4, frame_cap=2, buffer_size=10, collect_steps=2)
    env_copy = MiniPacman(num_envs=4, frame_cap=2)
    env_copy.load_state_dict(trainer.env.state_dict())
    quiet(trainer, 1)  # 2 steps x 4 envs; every episode is truncated on step 2
    assert trainer.replay.size == 8 and trainer.replay.position == 8
    assert trainer.replay["mask"][:8].all()  # final_obs makes every transition real
    # Replaying the stored actions on a copy of the env: the rows of step 2 hold the final
    # frames, not the reset frames the env returned (which start the next transitions).
    env_copy.step(trainer.replay["actions"][:4])
    obs, _, terminated, truncated, info = env_copy.step(trainer.replay["actions"][4:8])
    assert (terminated | truncated).all()
    assert np.array_equal(decode_frames(trainer.replay["next_frames"][4:8]), info["final_obs"])
    assert not np.array_equal(info["final_obs"], obs)
    assert np.array_equal(decode_frames(trainer.replay["frames"][4:8]), decode_frames(
        trainer.replay["next_frames"][:4]))

    quiet(trainer, 1)  # 8 more into a ring of 10: the oldest 6 are overwritten
    assert trainer.replay.size == 10 and trainer.replay.position == 6
    assert np.array_equal(decode_frames(trainer.replay["frames"][:2]), obs[2:])
    frames = trainer.replay["frames"]
    assert frames.shape == (10, 3, 15, 19) and frames.dtype == np.uint8
    assert trainer.replay["events"].shape == (10, 5) and trainer.replay["mask"].shape == (10,)
    batch = trainer._batch(np.arange(5))
    assert [tuple(t.shape) for t in batch] == [(5, 3, 15, 19), (5,), (5, 3, 15, 19), (5, 5), (5,)]


def test_a_checkpoint_buffer_of_the_earlier_layout_loads():
    """Checkpoints keep the replay as ``buffer``: the held rows of each array, as they lie in
    the ring, with ``position`` and ``size``."""
    trainer = make_trainer(buffer_size=10)
    rows = np.arange(3)
    buffer = {"frames": np.full((3, 3, 15, 19), 2, dtype=np.uint8),
              "next_frames": np.full((3, 3, 15, 19), 4, dtype=np.uint8), "actions": rows + 1,
              "events": np.eye(3, 5, dtype=np.float32), "mask": rows > 0, "position": 3,
              "size": 3}
    trainer.load_state_dict({**trainer.state_dict(), "buffer": buffer})
    assert trainer.replay.size == 3 and trainer.replay.position == 3
    frames, actions, next_frames, events, mask = trainer._batch(rows)
    assert actions.tolist() == [1, 2, 3] and mask.tolist() == [False, True, True]
    assert torch.equal(events, torch.eye(3, 5))
    assert torch.equal(next_frames, 2 * frames) and frames.max() > 0
    saved = trainer.state_dict()["buffer"]
    assert saved.keys() == buffer.keys()
    assert all(np.array_equal(saved[name], value) for name, value in buffer.items())


def test_rollout_windows_mask_episode_ends():
    segments, length, batch = 1, 6, 2
    done = np.zeros((segments, length, batch), dtype=bool)
    done[0, 1, 0] = True  # env 0 ends at step 1 of the first window
    data = {
        "frames": np.zeros((segments, length, batch, 3, 15, 19), dtype=np.float32),
        "actions": np.zeros((segments, length, batch), dtype=np.int64),
        "next_frames": np.zeros((segments, length, batch, 3, 15, 19), dtype=np.float32),
        "mask": np.ones((segments, length, batch), dtype=bool),
        "done": done,
    }
    frames, actions, next_frames, mask = _windows(data, 3)
    assert frames.shape == (4, 3, 15, 19) and actions.shape == (4, 3)
    assert next_frames.shape == (4, 3, 3, 15, 19)
    # windows ordered (segment, window, env): env 0's first window is kept up to its end
    assert mask.tolist() == [[True, True, False], [True, True, True],
                             [True, True, True], [True, True, True]]


@pytest.mark.slow
def test_training_improves_held_out_pixel_accuracy():
    trainer = make_trainer(num_envs=8, updates_per_iteration=4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        before = trainer.evaluate(1)
        quiet(trainer, 40)
        after = trainer.evaluate(1)
    names = ["pixel_accuracy", "frame_accuracy", "event_accuracy", "reward_accuracy",
             *(f"rollout_pixel_accuracy_{k}" for k in range(1, 6))]
    assert {f"eval/envmodel/{name}" for name in names} <= set(after)
    assert after["eval/envmodel/pixel_accuracy"] > before["eval/envmodel/pixel_accuracy"] + 0.2
    assert after["eval/envmodel/pixel_accuracy"] > 0.9
    assert after["eval/envmodel/rollout_pixel_accuracy_1"] > 0.8


def test_state_dict_round_trip_continues_identically(tmp_path):
    trainer = make_trainer()
    quiet(trainer, 3)
    state = trainer.state_dict()
    path = tmp_path / "state.pt"
    torch.save(state, path)
    expected = quiet(trainer, 3)

    resumed = make_trainer(seed=5)
    resumed.load_state_dict(torch.load(path, weights_only=False))
    got = quiet(resumed, 3)
    for want, have in zip(expected, got, strict=True):
        want.pop("perf/sps"), have.pop("perf/sps")
        assert want == have
    for a, b in zip(trainer.env_model.parameters(), resumed.env_model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_a_saved_model_loads_with_the_same_outputs(tmp_path):
    trainer = make_trainer()
    quiet(trainer, 1)
    model = load_env_model(save_env_model(trainer.env_model, tmp_path / "model.pt"))
    frames = torch.as_tensor(trainer.env.observe())
    actions = torch.zeros(len(frames), dtype=torch.int64)
    trainer.env_model.eval()
    for a, b in zip(model(frames, actions), trainer.env_model(frames, actions), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("policy_file", [True, False], ids=["policy.pt", "earlier version"])
def test_a_policy_run_acts_with_the_a2c_policy_without_warning(tmp_path, policy_file):
    run = RunDir(tmp_path / "a2c")
    cfg = app.compose_config([
        "experiment=a2c_minipacman", "logger=none", "trainer.progress=false",
        "env.num_envs=2", "env.frame_cap=20", "agent.n_steps=2", "trainer.iterations=2",
        "trainer.eval_every=0", "trainer.eval_episodes=1", "trainer.checkpoint_every=0",
    ])
    run.config_file.parent.mkdir(parents=True)
    OmegaConf.save(cfg, run.config_file)
    app.train(cfg, run.path)
    assert (run.path / "policy.pt").is_file()  # what A2C leaves for later runs
    if not policy_file:  # a run saved before runs left it: its checkpoint makes it
        (run.path / "policy.pt").unlink()
    trainer_cfg = app.compose_config(["experiment=envmodel_minipacman",
                                      f"agent.policy_run={run.path}"])

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        policy = load_run_inputs(trainer_cfg, MiniPacman(num_envs=4), torch.device("cpu"))[
            "policy"]
        trainer = make_trainer(policy=policy)
        metrics = trainer.train_iteration()
        trainer.evaluate(1)
    assert np.isfinite(metrics["envmodel/loss"])
    net = run.checkpoints().load_latest()["algorithm"]["net"]
    for name, value in trainer.policy.state_dict().items():
        assert torch.equal(value, net[name])
    assert sorted(p.name for p in run.path.iterdir() if p.suffix == ".pt") == (
        ["policy.pt"] if policy_file else [])  # the policy run is left as it was


def test_learning_rate_decays_linearly_to_zero():
    trainer = make_trainer(lr=1e-3, lr_decay_iterations=4)
    rates = [metrics["train/lr"] for metrics in quiet(trainer, 6)]
    assert rates == pytest.approx([1e-3, 7.5e-4, 5e-4, 2.5e-4, 0.0, 0.0])
    assert trainer.optimizer.param_groups[0]["lr"] == 0.0
    assert {m["train/lr"] for m in quiet(make_trainer(lr=1e-3), 3)} == {1e-3}
