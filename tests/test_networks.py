"""Networks built from an env's shape: the image actor-critic, alone and under A2C."""

from functools import partial
from types import SimpleNamespace

import torch

from procmem.algorithms.a2c import A2C
from procmem.envs.minipacman import MiniPacman
from procmem.models.networks import PixelCNNPolicy

MINIPACMAN = SimpleNamespace(obs_shape=(3, 15, 19), num_actions=5)


def test_pixel_cnn_is_the_tutorial_network_on_minipacman_frames():
    net = PixelCNNPolicy(MINIPACMAN)
    # conv 3->16 (3x3, stride 1): 13x17; conv 16->16 (3x3, stride 2): 6x8; FC 768 -> 256.
    assert net.fc[0].in_features == 16 * 6 * 8 and net.fc[0].out_features == 256
    frames = torch.rand(4, 3, 15, 19)
    logits, values, state = net(frames, net.initial_state(4))
    assert logits.shape == (4, 5) and values.shape == (4,) and state.shape == (4, 0)
    # Every pixel can matter: the output depends on a change in a corner pixel.
    changed = frames.clone()
    changed[:, :, 0, 0] += 1.0
    assert not torch.allclose(net(changed, state)[0], logits)


def test_pixel_cnn_sizes_follow_the_config():
    net = PixelCNNPolicy(SimpleNamespace(obs_shape=(1, 10, 10), num_actions=3), channels=8,
                         hidden=32)
    logits, values, _ = net(torch.rand(2, 1, 10, 10), net.initial_state(2))
    assert logits.shape == (2, 3) and values.shape == (2,)
    assert net.fc[0].in_features == 8 * 3 * 3


def test_a2c_trains_and_evaluates_the_pixel_cnn_on_minipacman(one_torch_thread):
    def env() -> MiniPacman:
        return MiniPacman(num_envs=4, frame_cap=30)

    agent = A2C(env(), env(), torch.device("cpu"), 0, partial(PixelCNNPolicy, hidden=32),
                n_steps=5, gamma=0.99, bootstrap_truncated=True)
    for _ in range(3):
        metrics = agent.train_iteration()
    assert metrics["train/env_steps"] == 3 * 5 * 4
    assert all(torch.isfinite(torch.tensor(v)) for v in metrics.values())
    evaluation = agent.evaluate(4)
    assert set(evaluation) == {"eval/episode_return", "eval/episode_steps"}
    assert 1 <= evaluation["eval/episode_steps"] <= 30
