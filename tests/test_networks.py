"""Networks built from an env's shape: the image actor-critic alone and under A2C, and the
network picked for each kind of observation."""

from functools import partial
from types import SimpleNamespace

import pytest
import torch
from gymnasium import spaces

from procmem.algorithms.a2c import A2C
from procmem.envs.expressions import ExpressionEnv
from procmem.envs.gridworld import GridWorld
from procmem.envs.gymnasium_env import GymnasiumEnv
from procmem.envs.minipacman import MiniPacman
from procmem.envs.toolenv import ToolEnv
from procmem.models.networks import (
    KeyDoorMLPPolicy,
    MiniGridPolicy,
    MLPPolicy,
    NetworkMismatch,
    PixelCNNPolicy,
    ToolGRUPolicy,
    auto_network,
    check_fits,
)
from procmem.models.observations import as_tensors

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


AUTO_PICKS = [  # (how the env is made, the network auto picks)
    (lambda: ToolEnv(num_envs=2), ToolGRUPolicy),
    (lambda: ExpressionEnv(num_envs=2), ToolGRUPolicy),
    (lambda: GridWorld(num_envs=2), KeyDoorMLPPolicy),
    (lambda: MiniPacman(num_envs=2), PixelCNNPolicy),
    (lambda: GymnasiumEnv(num_envs=2), MLPPolicy),
    (lambda: GymnasiumEnv(id="minigrid:MiniGrid-DoorKey-5x5-v0", num_envs=2), MiniGridPolicy),
]


@pytest.mark.parametrize(("make", "network"), AUTO_PICKS,
                         ids=[network.__name__ for _, network in AUTO_PICKS])
def test_auto_picks_the_network_that_reads_the_observations_and_it_runs(make, network):
    env = make()
    net = auto_network(env)
    assert type(net) is network
    obs, _ = env.reset(seed=0)
    logits, values, state = net(as_tensors(obs, torch.device("cpu")), net.initial_state(2))
    assert logits.shape == (2, env.num_actions) and values.shape == (2,)
    assert state.shape[0] == 2


def test_a_network_that_cannot_read_the_observations_says_what_it_reads():
    with pytest.raises(NetworkMismatch, match=r"^PixelCNNPolicy reads images: .*, not Box\(-1"):
        check_fits(PixelCNNPolicy, GridWorld())
    with pytest.raises(NetworkMismatch, match=r"^MLPPolicy reads flat vectors"):
        check_fits(MLPPolicy, MiniPacman())
    check_fits(MLPPolicy, GridWorld())  # a flat vector it can read
    text = SimpleNamespace(single_observation_space=spaces.Text(8))
    with pytest.raises(NetworkMismatch, match="^no network reads observations Text"):
        check_fits(auto_network, text)
