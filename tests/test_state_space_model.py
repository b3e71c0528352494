"""The state-space env model (agent=env_model agent.model=ssm): its latent rollouts, its
decoder, its sequence loss and replay windows, its file, and I2A imagining in its latent
space."""

from __future__ import annotations

import warnings
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from procmem import app
from procmem.algorithms.env_model_training import EnvModelTrainer, sequence_rows
from procmem.algorithms.i2a import I2A
from procmem.algorithms.rollouts import Field, RolloutStorage
from procmem.envs.minipacman import MiniPacman
from procmem.models.env_model_file import load_env_model, save_env_model
from procmem.models.env_model_loss import prediction_loss
from procmem.models.imagination import LatentRolloutEncoder, imagine_latent
from procmem.models.pixel_classes import PIXEL_COLOURS, class_frames, frame_classes
from procmem.models.state_space_model import StateSpaceModel
from procmem.run.loggers import read_metrics
from procmem.settings import SettingError

from helpers import run_cli

pytestmark = pytest.mark.usefixtures("one_torch_thread")

A2C_SETTINGS = {"n_steps": 3, "gamma": 0.99, "lr": 7e-4, "optimizer": "rmsprop",
                "entropy_coef": 0.01, "value_coef": 0.5, "max_grad_norm": 0.5,
                "bootstrap_truncated": True}
TINY_MODEL_RUN = ["experiment=envmodel_minipacman", "agent.model=ssm", "logger=none",
                  "trainer.progress=false", "env.num_envs=2", "trainer.iterations=2",
                  "trainer.eval_every=0", "trainer.eval_episodes=1",
                  "trainer.checkpoint_every=0", "agent.channels=4", "agent.latent_size=16"]
TINY_I2A_RUN = ["experiment=i2a_minipacman", "logger=none", "trainer.progress=false",
                "env.num_envs=2", "env.frame_cap=30", "agent.n_steps=3", "agent.depth=2",
                "trainer.iterations=3", "trainer.eval_every=3", "trainer.eval_episodes=2",
                "trainer.checkpoint_every=0"]


def tiny_model(seed: int = 0) -> StateSpaceModel:
    torch.manual_seed(seed)
    return StateSpaceModel(5, (3, 15, 19), latent_size=16, channels=4, event_coef=1.0).eval()


def real_frames(count: int = 3) -> Tensor:
    env = MiniPacman(num_envs=count)
    env.reset(seed=0)
    for _ in range(4):
        env.step(np.arange(count) % 5)
    return torch.as_tensor(env.observe())


class FixedPolicy(nn.Module):
    """A rollout policy that always prefers ``action``."""

    def __init__(self, action: int) -> None:
        super().__init__()
        self.action = action

    def forward(self, states: Tensor) -> Tensor:
        return nn.functional.one_hot(torch.full((len(states),), self.action), 5).float()


def test_the_latent_rollout_equals_the_model_used_step_by_step():
    model, frames = tiny_model(), real_frames()
    actions = torch.tensor([[0, 1, 2, 3], [4, 4, 0, 1], [2, 2, 2, 2]])
    states, events = model.unroll(frames, actions)
    pixels, _ = model(frames, actions)
    state = model.encode(frames)
    for t in range(4):
        state, step_events = model.step(state, actions[:, t])
        assert torch.allclose(states[t], state, atol=1e-6)
        assert torch.allclose(events[t], step_events, atol=1e-6)
        assert torch.allclose(pixels[t], model.decode(state, frames), atol=1e-5)
    # I2A's rollouts: rollout a takes action a first, then the rollout policy's choice
    reward_vector = torch.tensor(MiniPacman(num_envs=1).reward_vector, dtype=torch.float32)
    imagined, rewards = imagine_latent(model, FixedPolicy(3), frames, 3, reward_vector)
    assert imagined.shape == (3, 3, 5, 16) and rewards.shape == (3, 3, 5)
    for action in range(5):
        path = torch.tensor([action, 3, 3]).repeat(3, 1)
        states, events = model.unroll(frames, path)
        assert torch.allclose(imagined[:, :, action], states, atol=1e-6)
        expected = events.argmax(-1).float() @ reward_vector
        assert torch.equal(rewards[:, :, action], expected)


def test_decoded_frames_are_pixel_classes_the_renderer_draws():
    model, frames = tiny_model(), real_frames()
    actions = torch.tensor([[1, 2], [3, 4], [0, 0]])
    pixels, events = model(frames, actions)
    assert pixels.shape == (2, 3, 7, 15, 19) and events.shape == (2, 3, 5, 2)
    imagined = model.open_loop_frames(frames, actions)
    assert imagined.shape == (2, 3, 3, 15, 19)
    classes = pixels.argmax(2)
    for t in range(2):
        assert torch.equal(frame_classes(imagined[t]), classes[t])
        assert torch.equal(imagined[t], class_frames(classes[t]))
    colours = imagined.permute(0, 1, 3, 4, 2).reshape(-1, 3)
    assert (colours[:, None] == PIXEL_COLOURS).all(2).any(1).all()


def test_the_loss_scores_each_step_while_every_step_before_it_is_real():
    model, frames = tiny_model(), real_frames(2)
    actions = torch.tensor([[1, 2, 3], [4, 0, 1]])
    next_frames, events = torch.rand(2, 3, 3, 15, 19).round(), torch.zeros(2, 3, 5)
    events[1, 2, 1] = 1
    mask = torch.tensor([[True, False, True], [True, True, True]])  # row 0: only step 0
    loss, metrics = model.loss(frames, actions, next_frames, events, mask)
    pixels, event_logits = model(frames, actions)
    kept = [(0, 0), (0, 1), (1, 1), (2, 1)]  # (step, row)
    expected, want = prediction_loss(
        torch.stack([pixels[t, b] for t, b in kept]),
        torch.stack([event_logits[t, b] for t, b in kept]),
        torch.stack([next_frames[b, t] for t, b in kept]),
        torch.stack([events[b, t] for t, b in kept]), 1.0)
    assert torch.allclose(loss, expected) and metrics == pytest.approx(want)
    one_step, _ = model.loss(frames, actions[:, 0], next_frames[:, 0], events[:, 0])
    assert torch.allclose(one_step, model.loss(frames, actions[:, :1], next_frames[:, :1],
                                               events[:, :1])[0])


def test_sequence_rows_are_consecutive_steps_of_one_env_in_a_full_ring():
    num_envs, steps = 3, 10
    replay = RolloutStorage(20, {"env": Field((), np.int64), "step": Field((), np.int64)})
    for step in range(steps):  # 30 rows into a ring of 20: the oldest 10 are overwritten
        replay.add(env=np.arange(num_envs), step=np.full(num_envs, step))
    rows = sequence_rows(replay, np.random.default_rng(0), 200, 4, num_envs)
    env, step = replay["env"][rows], replay["step"][rows]
    assert (env == env[:, :1]).all()
    assert (np.diff(step, axis=1) == 1).all()
    assert step.min() >= 3 and step.max() == steps - 1  # held rows only (rows 10-29)
    with pytest.raises(ValueError, match="too few for sequences"):
        sequence_rows(replay, np.random.default_rng(0), 1, 8, num_envs)


def test_the_trainer_masks_the_steps_after_an_episode_ends():
    trainer = EnvModelTrainer(MiniPacman(num_envs=2, frame_cap=6), MiniPacman(num_envs=2),
                              torch.device("cpu"), 0, model="ssm", channels=4, latent_size=16,
                              batch_size=64, collect_steps=12, sequence_length=4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random-policy data
        metrics = trainer.train_iteration()
    assert isinstance(trainer.env_model, StateSpaceModel)
    assert "envmodel/pixel_accuracy" in metrics
    frames, actions, next_frames, _, mask = trainer._sample_batch()
    assert frames.shape == (64, 3, 15, 19) and next_frames.shape == (64, 4, 3, 15, 19)
    # episodes of 6 steps: the windows that cross an end are masked after it
    assert mask.all(1).any() and not mask.all()
    assert (mask.int().cummin(1).values == mask.int()).all()  # real, then masked for good


def test_the_latent_encoder_reads_the_states_last_first():
    torch.manual_seed(0)
    encoder = LatentRolloutEncoder(16, hidden=8)
    states, rewards = torch.randn(3, 6, 16), torch.randn(3, 6)
    code = encoder(states, rewards)
    state = None
    for t in (2, 1, 0):  # the LSTM stepped by hand, last imagined step first
        output, state = encoder.lstm(torch.cat([states[t], rewards[t, :, None]], 1)[None], state)
    assert code.shape == (6, 8) and torch.allclose(code, output[0], atol=1e-6)
    assert not torch.allclose(code, encoder(states.flip(0), rewards.flip(0)), atol=1e-4)


def test_a_saved_model_loads_with_its_kind_and_the_same_outputs(tmp_path: Path):
    model, frames = tiny_model(), real_frames()
    loaded = load_env_model(save_env_model(model, tmp_path / "env_model.pt"))
    assert isinstance(loaded, StateSpaceModel) and not loaded.training
    actions = torch.tensor([[1, 2], [3, 4], [0, 0]])
    for a, b in zip(loaded(frames, actions), model(frames, actions), strict=True):
        assert torch.equal(a, b)
    saved = torch.load(tmp_path / "env_model.pt")
    torch.save({**saved, "kind": "dream"}, tmp_path / "odd.pt")
    with pytest.raises(ValueError, match="kind 'dream'; known kinds: pixel, ssm"):
        load_env_model(tmp_path / "odd.pt")


def test_i2a_imagines_in_the_latent_space_and_decodes_only_for_the_picture():
    env, eval_env = MiniPacman(num_envs=2, frame_cap=40), MiniPacman(num_envs=2, frame_cap=40)
    agent = I2A(env, eval_env, torch.device("cpu"), 0, tiny_model(), model="ssm", depth=2,
                **A2C_SETTINGS)
    assert agent.net.latent and isinstance(agent.net.encoder, LatentRolloutEncoder)
    with mock.patch.object(StateSpaceModel, "decode", side_effect=AssertionError("decoded")):
        metrics = agent.train_iteration()
        agent.evaluate(1)
    assert "train/loss_distill" in metrics
    real, imagined = agent.imagined_vs_real()
    assert imagined.shape == real.shape and imagined.shape[1:] == (3, 15, 19)
    with pytest.raises(SettingError, match="^env_model_run: holds an env model of kind ssm, not"):
        I2A(env, eval_env, torch.device("cpu"), 0, tiny_model(), model="pixel", **A2C_SETTINGS)


def test_a_saved_state_space_model_runs_i2a(tmp_path: Path):
    model_dir, agent_dir = tmp_path / "envmodel", tmp_path / "i2a"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random-policy data
        app.train(app.compose_config(TINY_MODEL_RUN), model_dir)
    cfg = app.compose_config([*TINY_I2A_RUN, "agent.model=ssm",
                              f"agent.env_model_run={model_dir}"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the env model is loaded, not pretrained
        app.train(cfg, agent_dir)
    assert "eval/episode_return" in read_metrics(agent_dir / "metrics.jsonl")[-1]
    assert (agent_dir / "plots" / "imagination.png").stat().st_size > 0


@pytest.mark.slow
def test_a_mismatched_env_model_file_is_one_line_and_no_run(tmp_path: Path):
    model_dir = tmp_path / "envmodel"
    run_cli("train.py", *TINY_MODEL_RUN, f"hydra.run.dir={model_dir}")
    run_dir = tmp_path / "i2a"
    result = run_cli("train.py", *TINY_I2A_RUN, f"agent.env_model_run={model_dir}",
                     f"hydra.run.dir={run_dir}", check=False)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "config error: agent.env_model_run: holds an env model of kind ssm, not the pixel "
        "model agent.model=pixel asks for: set agent.model=ssm, or name a run of "
        "agent=env_model agent.model=pixel"]
    assert not run_dir.exists()


@pytest.mark.slow
def test_the_env_model_table_reads_both_kinds_side_by_side(tmp_path: Path):
    runs = []
    for kind in ("pixel", "ssm"):
        run = tmp_path / kind
        overrides = [*(o for o in TINY_MODEL_RUN if not o.startswith("agent.model=")),
                     f"agent.model={kind}", "trainer.eval_every=2", f"hydra.run.dir={run}"]
        run_cli("train.py", *overrides)
        runs.append(str(run))
    out = run_cli("benchmarks/env_models.py", *runs, "--rounds", "2", "--repeats", "1").stdout
    rows = [line.split("|")[1:-1] for line in out.splitlines() if line.startswith("| ")][1:]
    assert [(row[0].strip(), row[1].strip()) for row in rows] == [("pixel", "pixel"),
                                                                  ("ssm", "ssm")]
    for row in rows:
        assert 0.0 <= float(row[3]) <= 1.0  # held-out pixel accuracy
        assert len(row[7].split("/")) == 5 and float(row[-1].replace(",", "")) > 0
    bad = run_cli("benchmarks/env_models.py", "README.md", check=False)
    assert bad.returncode == 2 and "README.md: unreadable env model" in bad.stderr
