"""I2A: imagined rollouts, the rollout encoder, the copy model, distillation, the baselines'
sizes and tiny end-to-end runs (agent=i2a alone and after an env model run)."""

from __future__ import annotations

import importlib.util
import re
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from torch import Tensor, nn

from procmem import app
from procmem.algorithms.i2a import I2A, distillation_loss
from procmem.envs.minipacman import EVENTS, MiniPacman
from procmem.models.env_model import EnvModel
from procmem.models.i2a import I2APolicy
from procmem.models.imagination import CopyModel, RolloutEncoder, imagine
from procmem.models.pixel_classes import frame_classes
from procmem.run.loggers import MetricLogger, read_metrics
from procmem.run.reporters import ImaginationStrip
from procmem.settings import SettingError

from helpers import ROOT, run_cli

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FOOD = EVENTS.index("food")
A2C_SETTINGS = {"n_steps": 3, "gamma": 0.99, "lr": 7e-4, "optimizer": "rmsprop",
                "entropy_coef": 0.01, "value_coef": 0.5, "max_grad_norm": 0.5,
                "bootstrap_truncated": True}
TINY_RUN = ["logger=none", "trainer.progress=false", "env.num_envs=2", "env.frame_cap=30",
            "agent.n_steps=3", "agent.depth=2", "trainer.iterations=3", "trainer.eval_every=3",
            "trainer.eval_episodes=2", "trainer.checkpoint_every=0"]


class CountingModel(nn.Module):
    """A fake env model: every step adds 1 to each pixel and reports ``action`` foods."""

    num_actions = 5

    def predict(self, frames: Tensor, actions: Tensor) -> tuple[Tensor, Tensor]:
        events = torch.zeros(len(frames), len(EVENTS))
        events[:, FOOD] = actions.float()
        return frames + 1, events


class FixedPolicy(nn.Module):
    """A rollout policy that always prefers ``action``."""

    def __init__(self, action: int) -> None:
        super().__init__()
        self.action = action

    def forward(self, frames: Tensor) -> Tensor:
        return nn.functional.one_hot(torch.full((len(frames),), self.action), 5).float()


def policy(env: MiniPacman, imagination: str, env_model: EnvModel | None = None,
           depth: int = 5) -> I2APolicy:
    """The I2A network with I2A's default sizes."""
    return I2APolicy(env, imagination, env_model, depth, channels=16, hidden=256, code_size=64)


def make_agent(imagination: str, env_model: EnvModel | None = None, **settings) -> I2A:
    env, eval_env = MiniPacman(num_envs=2, frame_cap=40), MiniPacman(num_envs=2, frame_cap=40)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pretraining on random-policy data
        agent = I2A(env, eval_env, torch.device("cpu"), 0, imagination=imagination, depth=3,
                    pretrain_iterations=2, **{**A2C_SETTINGS, **settings})
    if env_model is not None:
        agent.net.model.load_state_dict(env_model.state_dict())
    return agent


def snapshot(module: nn.Module) -> list[Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def changed(before: list[Tensor], module: nn.Module) -> bool:
    return any(not torch.equal(a, b) for a, b in zip(before, module.parameters(), strict=True))


def test_imagine_runs_one_rollout_per_action_in_time_order():
    frames = torch.zeros(2, 3, 15, 19)
    frames[1] += 10
    reward_vector = torch.tensor(MiniPacman(num_envs=1).reward_vector, dtype=torch.float32)
    imagined, rewards = imagine(CountingModel(), FixedPolicy(action=2), frames, 4, reward_vector)
    assert imagined.shape == (4, 2, 5, 3, 15, 19) and rewards.shape == (4, 2, 5)
    for step in range(4):  # step t is the model applied t + 1 times
        assert torch.equal(imagined[step, 0], torch.full((5, 3, 15, 19), step + 1.0))
        assert torch.equal(imagined[step, 1], torch.full((5, 3, 15, 19), step + 11.0))
    # regular mode: a food is worth 1, so a step's reward is the action it took
    assert torch.equal(rewards[0], torch.arange(5.0).repeat(2, 1))
    assert torch.equal(rewards[1:], torch.full((3, 2, 5), 2.0))


def test_rollout_encoder_reads_the_steps_last_first():
    torch.manual_seed(0)
    encoder = RolloutEncoder((3, 15, 19), channels=4, hidden=8)
    frames, rewards = torch.rand(3, 6, 3, 15, 19), torch.randn(3, 6)
    code = encoder(frames, rewards)
    assert code.shape == (6, 8)
    features = [torch.cat([encoder.body(frames[t]), rewards[t, :, None]], 1) for t in range(3)]
    state = None
    for t in (2, 1, 0):  # the LSTM stepped by hand, last imagined step first
        output, state = encoder.lstm(features[t][None], state)
    assert torch.allclose(code, output[0], atol=1e-6)
    assert not torch.allclose(code, encoder(frames.flip(0), rewards.flip(0)), atol=1e-4)


def test_coinciding_rollouts_and_frames_are_encoded_once_with_the_same_codes_and_gradients():
    torch.manual_seed(0)
    encoder = RolloutEncoder((3, 15, 19), channels=4, hidden=8)
    frames, rewards = torch.rand(3, 4, 3, 15, 19), torch.randn(3, 4)
    columns = torch.tensor([0, 1, 0, 2, 1, 3, 3])  # 7 rollouts, 4 distinct ...
    frames, rewards = frames[:, columns].clone(), rewards[:, columns].clone()
    rewards[1, 6] += 1.0  # ... and 5 once a reward tells the last two apart
    frames[2, 3] = frames[0, 0]  # 11 distinct frames: one comes back in another rollout
    gradients = []
    for forward in (encoder.forward_each, encoder.forward):
        encoder.zero_grad()
        codes = forward(frames, rewards)
        (codes * torch.arange(1.0, 8.0)[:, None]).sum().backward()
        gradients.append([p.grad.clone() for p in encoder.parameters()])
        if forward == encoder.forward_each:
            expected = codes.detach()
    torch.testing.assert_close(codes, expected, rtol=1e-5, atol=1e-6)
    for each, once in zip(*gradients, strict=True):
        torch.testing.assert_close(once, each, rtol=1e-4, atol=1e-6)
    rows = []
    encoder.body.register_forward_hook(lambda module, inputs, output: rows.append(len(output)))
    encoder(frames, rewards)
    assert rows == [11]


def test_the_rollout_policy_reads_each_distinct_imagined_frame_once():
    frames = torch.rand(2, 3, 15, 19)
    seen = []

    class CountingPolicy(FixedPolicy):
        def forward(self, frames: Tensor) -> Tensor:
            seen.append(len(frames))
            return super().forward(frames)

    reward_vector = torch.zeros(len(EVENTS))
    imagined, _ = imagine(CopyModel(5), CountingPolicy(action=1), frames, 3, reward_vector)
    assert seen == [2, 2]  # the copy model imagines the same frame for all 5 actions
    assert torch.equal(imagined, frames[None, :, None].expand(3, 2, 5, 3, 15, 19))


def test_copy_model_imagines_the_input_frame_and_no_reward():
    env = MiniPacman(num_envs=3)
    obs, _ = env.reset(seed=1)
    frames = torch.as_tensor(obs)
    net = policy(env, "copy", depth=4)
    assert isinstance(net.model, CopyModel) and not list(net.model.parameters())
    imagined, rewards = net.imagine(frames)
    assert torch.equal(imagined, frames[None, :, None].expand(4, 3, 5, *frames.shape[1:]))
    assert torch.equal(rewards, torch.zeros(4, 3, 5))
    logits, values, _ = net(frames, net.initial_state(3))
    assert logits.shape == (3, 5) and values.shape == (3,)


def test_learned_imagination_follows_the_env_model():
    env = MiniPacman(num_envs=2)
    obs, _ = env.reset(seed=2)
    frames = torch.as_tensor(obs)
    model = EnvModel(5, channels=8, blocks=1, event_coef=1.0).eval()
    net = policy(env, "learned", model, depth=2)
    imagined, _ = net.imagine(frames)
    first, _ = model.predict(frames.repeat_interleave(5, 0), torch.arange(5).repeat(2))
    assert torch.equal(imagined[0].flatten(0, 1), first)


class ImageSink:
    """A metrics sink that remembers the images it was given."""

    def __init__(self) -> None:
        self.images: list[tuple[str, Path]] = []

    def log(self, row: dict) -> None:
        pass

    def log_image(self, key: str, path: Path, iteration: int | None = None) -> None:
        self.images.append((key, path))

    def log_video(self, key: str, path: Path, iteration: int | None = None) -> None:
        pass

    def finish(self, exit_code: int) -> None:
        pass


def test_imagined_vs_real_frames_are_drawn_and_logged(tmp_path: Path):
    agent = make_agent("copy")
    real, imagined = agent.imagined_vs_real()
    start, _ = agent.eval_env.reset(seed=agent.seed + 104729)
    assert 1 <= len(real) == len(imagined) <= 3 and real.shape[1:] == (3, 15, 19)
    assert (imagined == start[0]).all()  # the copy model imagines the start frame again
    pacman = (real[:, 0] == 0) & (real[:, 1] == 1) & (real[:, 2] == 0)
    assert (pacman.sum(axis=(1, 2)) == 1).all()  # each real frame is a drawn frame
    sink = ImageSink()
    logger = MetricLogger(tmp_path / "metrics.jsonl", [sink])
    logger.log(1, agent.train_iteration())
    ImaginationStrip(tmp_path / "plots").on_train_end(SimpleNamespace(algorithm=agent,
                                                                      logger=logger))
    path = tmp_path / "plots" / "imagination.png"
    assert ("media/imagination", path) in sink.images
    columns = len(real)
    width, height = Image.open(path).size  # real frames above imagined ones, 8x, 2-pixel gaps
    assert (width, height) == (columns * 19 * 8 + (columns - 1) * 2, 2 * 15 * 8 + 2)
    pixels = np.asarray(Image.open(path).convert("RGB"))
    assert (pixels[:120, :152] == np.repeat(np.repeat(
        np.round(real[0].transpose(1, 2, 0) * 255), 8, 0), 8, 1)).all()


def test_distillation_loss_is_the_cross_entropy_to_the_agent_policy():
    teacher = torch.tensor([[2.0, 0.0, -1.0, 0.5, 0.0]])
    probs = torch.softmax(teacher, 1)
    entropy = -(probs * probs.log()).sum()
    assert torch.isclose(distillation_loss(teacher, teacher), entropy)  # smallest where equal
    assert distillation_loss(torch.zeros(1, 5), teacher) > entropy > 0
    student = torch.zeros(1, 5, requires_grad=True)
    distillation_loss(student, teacher).backward()
    moved = student - 0.5 * student.grad  # descending it moves the student to the teacher
    assert distillation_loss(moved, teacher) < distillation_loss(student, teacher)
    assert torch.argmax(moved) == torch.argmax(teacher)


def test_training_updates_each_part_with_its_own_optimizer():
    agent = make_agent("learned")
    rollout, model = snapshot(agent.net.rollout_policy), snapshot(agent.net.model)
    trunk, encoder = snapshot(agent.net.fc), snapshot(agent.net.encoder)
    metrics = agent.train_iteration()
    assert metrics["train/loss_distill"] > 0
    assert changed(rollout, agent.net.rollout_policy)  # the distillation optimizer stepped
    assert changed(trunk, agent.net.fc) and changed(encoder, agent.net.encoder)
    assert not changed(model, agent.net.model)  # frozen by default
    assert {id(p) for group in agent.optimizer.param_groups for p in group["params"]} == {
        id(p) for p in agent.net.agent_parameters()}

    tuned = make_agent("learned", finetune_env_model=True)
    model = snapshot(tuned.net.model)
    metrics = tuned.train_iteration()
    assert changed(model, tuned.net.model)
    assert "envmodel/pixel_accuracy" in metrics


def test_standard_baseline_trains_as_many_parameters_as_i2a():
    env = MiniPacman(num_envs=1)
    i2a = sum(p.numel() for p in policy(env, "copy").agent_parameters())
    standard = policy(env, "none")
    assert standard.model is None and standard.rollout_policy is None
    assert abs(sum(p.numel() for p in standard.parameters()) - i2a) / i2a < 0.005
    agent = make_agent("none")
    assert "train/loss_distill" not in agent.train_iteration()


def test_state_dict_round_trip_continues_identically(tmp_path):
    agent = make_agent("copy")
    agent.train_iteration()
    path = tmp_path / "state.pt"
    torch.save(agent.state_dict(), path)
    expected = [agent.train_iteration() for _ in range(2)]
    resumed = make_agent("copy")
    resumed.load_state_dict(torch.load(path, weights_only=False))
    got = [resumed.train_iteration() for _ in range(2)]
    for want, have in zip(expected, got, strict=True):
        want.pop("perf/sps"), have.pop("perf/sps")
        assert want == have
    assert not changed(snapshot(agent.net), resumed.net)


def test_bad_settings_are_refused():
    env = MiniPacman(num_envs=1)
    with pytest.raises(SettingError, match="^imagination: 'dream' is not one of"):
        make_agent("dream")
    with pytest.raises(ValueError, match="needs an env model"):
        policy(env, "learned")
    with pytest.raises(SettingError, match="^finetune_env_model: needs imagination=learned"):
        make_agent("copy", finetune_env_model=True)
    with pytest.raises(app.ConfigError, match="^agent.imagination"):
        app.check_config(app.compose_config(["experiment=i2a_minipacman",
                                             "agent.imagination=dream"]))


def test_env_model_then_i2a_end_to_end(tmp_path: Path):
    model_dir, agent_dir = tmp_path / "envmodel", tmp_path / "i2a"
    cfg = app.compose_config([
        "experiment=envmodel_minipacman", "logger=none", "trainer.progress=false",
        "env.num_envs=2", "trainer.iterations=2", "trainer.eval_every=0",
        "trainer.eval_episodes=1", "trainer.checkpoint_every=0", "agent.channels=8",
    ])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random-policy data
        app.train(cfg, model_dir)
    cfg = app.compose_config(["experiment=i2a_minipacman", *TINY_RUN,
                              f"agent.env_model_run={model_dir}"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the env model is loaded, not pretrained
        app.train(cfg, agent_dir)
    rows = read_metrics(agent_dir / "metrics.jsonl")
    assert any("train/loss_distill" in row for row in rows)
    assert "eval/episode_return" in rows[-1]
    assert (agent_dir / "plots" / "imagination.png").stat().st_size > 0
    assert (agent_dir / "plots" / "episode.gif").exists()


def test_i2a_runs_on_its_own_with_a_warning(tmp_path: Path):
    cfg = app.compose_config(["experiment=i2a_minipacman", *TINY_RUN,
                              "agent.pretrain_iterations=2"])
    with pytest.warns(UserWarning, match="no env_model_run: pretraining"):
        app.train(cfg, tmp_path)
    assert (tmp_path / "plots" / "imagination.png").exists()


def speed_benchmark():
    """``benchmarks/i2a_speed.py`` as a module."""
    spec = importlib.util.spec_from_file_location("i2a_speed", ROOT / "benchmarks" / "i2a_speed.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_speed_benchmarks_old_path_runs_every_row_and_its_new_path_distinct_rows():
    """``before`` runs the rollout policy, the encoder and the env model on every row of
    every call; ``after`` on each distinct row once, and the env model not on rows it
    remembers."""
    seen = []

    class CountingPolicy(FixedPolicy):
        def forward(self, frames: Tensor) -> Tensor:
            seen.append(len(frames))
            return super().forward(frames)

    frames, reward_vector = torch.rand(2, 3, 15, 19), torch.zeros(len(EVENTS))
    model = EnvModel(5, channels=4, blocks=1, event_coef=1.0).eval()
    encoder = RolloutEncoder((3, 15, 19), channels=4, hidden=8)
    read = []
    encoder.body.register_forward_hook(lambda module, inputs, output: read.append(len(output)))
    for version, rows, encoded in (("before", [10, 10], [30]), ("after", [2, 2], [2])):
        seen.clear()
        read.clear()
        with speed_benchmark().code(version):
            imagined, rewards = imagine(CopyModel(5), CountingPolicy(action=1), frames, 3,
                                        reward_vector)
            encoder(imagined.flatten(1, 2), rewards.flatten(1, 2))
            predicted = model.predict(frames, torch.arange(2))
            model.predict(frames, torch.arange(2))
        assert seen == rows and read == encoded
        assert model.memory.hits == {"before": 0, "after": 2}[version]
        assert torch.equal(imagined, frames[None, :, None].expand(3, 2, 5, 3, 15, 19))
        assert torch.equal(predicted[0], model.predict_each(frames, torch.arange(2))[0])
    real = torch.as_tensor(MiniPacman(num_envs=4).reset(seed=0)[0])
    assert torch.equal(speed_benchmark().masked_frame_classes(real), frame_classes(real))


@pytest.mark.slow
def test_the_speed_benchmark_times_every_agent_before_and_after():
    out = run_cli("benchmarks/i2a_speed.py", "--updates", "1", "--repeats", "1", "--threads",
                  "1", "--depth", "1", "--code", "before", "after").stdout
    assert re.search(r"env model: \d+% of the rows it was asked for answered from memory", out)
    rows = [line.split("|")[1:6] for line in out.splitlines() if line.startswith("| ")][1:]
    assert sorted((code.strip(), name.strip()) for code, _, name, _, _ in rows) == sorted(
        (code, name) for code in ("before", "after")
        for name in ("standard", "copy", "pixel", "ssm"))
    shares = {(code.strip(), name.strip()): share.strip() for code, _, name, _, share in rows}
    assert shares["after", "standard"] == "1.00" and float(shares["after", "ssm"]) > 0
    bad = run_cli("benchmarks/i2a_speed.py", "--env-model-run", "README.md", check=False)
    assert bad.returncode == 2 and "--env-model-run: README.md: unreadable env model" in bad.stderr
