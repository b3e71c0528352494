"""Actor-critic networks. Each is built from the env it acts in: ``network(env)``; its
settings are the keyword-only arguments after ``env``. Each says which envs it reads
(``accepts(env)``, with ``reads`` in words); :func:`auto_network` picks the first of
:data:`NETWORKS` that reads an env, and :func:`check_fits` says why a network cannot.

A network maps a batch of observations and its recurrent state to action logits, state
values and the next state: ``forward(obs, state) -> (logits [B, A], values [B], state)``;
``initial_state(batch)`` gives the state of a fresh batch (``None`` for feed-forward nets).
"""

from __future__ import annotations

import functools
from typing import Annotated, Any

import numpy as np
import torch
from gymnasium import spaces
from torch import Tensor, nn

from procmem.envs.keydoor import BLOCKED, FIELD, FLAGS, NEIGHBOURS
from procmem.envs.protocols import SubgoalEnv
from procmem.envs.toolenv import ToolEnv
from procmem.settings import AtLeast, Even, configurable


@configurable
class ToolGRUPolicy(nn.Module):
    """The original tool-use architecture: a GRU decoding tool tokens.

    The context tokens (the problem's operands) are embedded and mean-pooled, with the
    stage embedding, into the GRU's state at the first step of each episode; each step's
    input is the embedding of the previous tool token plus the stage embedding; linear
    policy and value heads read the GRU's output.
    """

    reads = "tool-use tokens (procmem's toolenv and expressions)"

    @staticmethod
    def accepts(env: Any) -> bool:
        return isinstance(env, ToolEnv)

    def __init__(self, env: Any, *, hidden: Annotated[int, AtLeast(1)] = 96) -> None:
        super().__init__()
        self.token = nn.Embedding(env.vocab_size, hidden)
        self.stage = nn.Embedding(env.num_stages, hidden)
        self.context = nn.Linear(hidden, hidden)
        self.cell = nn.GRUCell(hidden, hidden)
        self.policy = nn.Linear(hidden, env.num_actions)
        self.value = nn.Linear(hidden, 1)
        self.hidden = hidden
        self.pad_token = env.pad_token

    def initial_state(self, batch: int) -> Tensor:
        return torch.zeros(batch, self.hidden, device=self.policy.weight.device)

    def encode_context(self, context: Tensor, stage: Tensor) -> Tensor:
        """Mean of the embedded context tokens (padding left out), with the stage."""
        keep = (context != self.pad_token).unsqueeze(-1).float()
        pooled = (self.token(context) * keep).sum(1) / keep.sum(1).clamp(min=1.0)
        return torch.tanh(self.context(pooled) + self.stage(stage))

    def forward(self, obs: dict[str, Tensor], state: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        start = (obs["step"] == 0).unsqueeze(1)
        state = torch.where(start, self.encode_context(obs["context"], obs["stage"]), state)
        state = self.cell(self.token(obs["prev_token"]) + self.stage(obs["stage"]), state)
        return self.policy(state), self.value(state).squeeze(1), state


@configurable
class KeyDoorMLPPolicy(nn.Module):
    """A feed-forward actor-critic for the key/door/goal observations of
    :mod:`procmem.envs.keydoor` (gridworld, MiniGrid).

    Features: the agent's cell, the flags and the ``blocked_*`` bits; the heading one-hot
    (all zero where moves are absolute); and for the key, door and goal whether the cell is
    known, the cell, its offset from the agent and that offset in the agent's frame (ahead,
    to the right; zero without a heading). Cells and offsets are divided by ``env.size - 1``.
    The policy and the value each read them through their own two tanh layers (so returns
    of any scale do not swamp the policy's features); the policy head starts near uniform.
    The net keeps no memory: its state is an empty ``[B, 0]`` tensor, so algorithms that
    carry a recurrent state carry it unchanged.
    """

    reads = "the key/door/goal observation layout (gridworld, minigrid)"

    @staticmethod
    def accepts(env: Any) -> bool:
        return isinstance(env, SubgoalEnv)

    def __init__(self, env: Any, *, hidden: Annotated[int, AtLeast(1)] = 64) -> None:
        super().__init__()
        self.agent = [FIELD["x"], FIELD["y"]]
        self.dir = FIELD["dir"]
        self.flags = FLAGS + BLOCKED
        self.objects = [[FIELD[f"{name}_x"], FIELD[f"{name}_y"]]
                        for name in ("key", "door", "goal")]
        self.scale = float(max(env.size - 1, 1))
        # Heading d faces (dx, dy) = forward[d]; its right is the heading (d + 1) % 4.
        forward = torch.tensor([NEIGHBOURS[i] for i in (0, 2, 1, 3)], dtype=torch.float32)
        self.register_buffer("forward_of", forward, persistent=False)
        self.register_buffer("right_of", forward.roll(-1, 0), persistent=False)
        features = 2 + 4 + len(self.flags) + 3 * 7
        self.actor, self.critic = (nn.Sequential(nn.Linear(features, hidden), nn.Tanh(),
                                                 nn.Linear(hidden, hidden), nn.Tanh())
                                   for _ in range(2))
        self.policy = nn.Linear(hidden, env.num_actions)
        self.value = nn.Linear(hidden, 1)
        nn.init.orthogonal_(self.policy.weight, gain=0.01)
        nn.init.zeros_(self.policy.bias)

    def initial_state(self, batch: int) -> Tensor:
        return torch.zeros(batch, 0, device=self.policy.weight.device)

    def features(self, obs: Tensor) -> Tensor:
        obs = obs.long()
        agent = obs[:, self.agent].float()
        direction = obs[:, self.dir]
        has_dir = (direction >= 0).float().unsqueeze(1)
        heading = direction.clamp(min=0)
        forward, right = self.forward_of[heading] * has_dir, self.right_of[heading] * has_dir
        parts = [agent / self.scale, nn.functional.one_hot(heading, 4).float() * has_dir,
                 obs[:, self.flags].float()]
        for columns in self.objects:
            cell = obs[:, columns].float()
            known = (cell >= 0).all(1, keepdim=True).float()
            offset = (cell - agent) * known / self.scale
            ego = torch.stack([(offset * forward).sum(1), (offset * right).sum(1)], 1)
            parts += [known, cell * known / self.scale, offset, ego]
        return torch.cat(parts, 1)

    def forward(self, obs: Tensor, state: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        features = self.features(obs)
        return (self.policy(self.actor(features)), self.value(self.critic(features)).squeeze(1),
                state)


def context_gru(hidden: int) -> nn.GRU:
    """A bidirectional GRU over ``hidden``-wide token codes, ``hidden`` wide out (each half a
    direction): every token coded from the whole context."""
    return nn.GRU(hidden, hidden // 2, batch_first=True, bidirectional=True)


@configurable
class ToolAttentionPolicy(nn.Module):
    """Reads the context in order, for problems whose program depends on it (expressions).

    A bidirectional GRU encodes the context tokens once per episode, at its first step. A GRU
    decoder emits the tool tokens: its state starts from the mean of the encoded context;
    each step's input is the previous tool token's embedding and the previous attention read;
    it then attends over the encoded context (dot-product attention, padding masked out), and
    the policy and value heads read the decoder state with the attention read. The recurrent
    state holds the decoder state, the read and the encoded context, flattened. No stage
    embedding: the context alone defines the problem, so unseen stages (deeper expressions)
    can be attempted.
    """

    reads = ToolGRUPolicy.reads
    accepts = ToolGRUPolicy.accepts

    def __init__(self, env: Any, *, hidden: Annotated[int, AtLeast(2), Even()] = 128) -> None:
        super().__init__()
        self.token = nn.Embedding(env.vocab_size, hidden)
        self.encoder = context_gru(hidden)
        self.start = nn.Linear(hidden, hidden)
        self.cell = nn.GRUCell(2 * hidden, hidden)
        self.query = nn.Linear(hidden, hidden)
        self.combine = nn.Linear(2 * hidden, hidden)
        self.policy = nn.Linear(hidden, env.num_actions)
        self.value = nn.Linear(hidden, 1)
        self.hidden = hidden
        self.context_length = env.context_length
        self.pad_token = env.pad_token

    def initial_state(self, batch: int) -> Tensor:
        size = (2 + self.context_length) * self.hidden
        return torch.zeros(batch, size, device=self.policy.weight.device)

    def forward(self, obs: dict[str, Tensor], state: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        context, h = obs["context"], self.hidden
        keep = context != self.pad_token
        decoder, read = state[:, :h], state[:, h: 2 * h]
        encoded = state[:, 2 * h:].view(-1, self.context_length, h)
        starting = torch.nonzero(obs["step"] == 0).squeeze(1)
        if len(starting):  # encode the contexts of new episodes
            fresh, _ = self.encoder(self.token(context[starting]))
            weights = keep[starting].unsqueeze(-1).float()
            pooled = (fresh * weights).sum(1) / weights.sum(1).clamp(min=1.0)
            encoded = encoded.index_copy(0, starting, fresh)
            decoder = decoder.index_copy(0, starting, torch.tanh(self.start(pooled)))
            read = read.index_copy(0, starting, torch.zeros_like(pooled))
        decoder = self.cell(torch.cat([self.token(obs["prev_token"]), read], dim=1), decoder)
        scores = torch.einsum("blh,bh->bl", encoded, self.query(decoder))
        attention = torch.softmax(scores.masked_fill(~keep, float("-inf")), dim=1)
        read = torch.einsum("bl,blh->bh", attention, encoded)
        features = torch.tanh(self.combine(torch.cat([decoder, read], dim=1)))
        state = torch.cat([decoder, read, encoded.flatten(1)], dim=1)
        return self.policy(features), self.value(features).squeeze(1), state


def pixel_body(in_channels: int, channels: int) -> nn.Sequential:
    """Two 3x3 convolutions (``channels``, stride 1 then 2, ReLU), flattened: the image
    feature extractor of :class:`PixelCNNPolicy` and of I2A's parts."""
    return nn.Sequential(
        nn.Conv2d(in_channels, channels, 3, stride=1), nn.ReLU(),
        nn.Conv2d(channels, channels, 3, stride=2), nn.ReLU(), nn.Flatten(),
    )


def flat_size(body: nn.Module, frame_shape: tuple[int, ...]) -> int:
    """The number of features ``body`` makes of one input of ``frame_shape``."""
    with torch.no_grad():
        return int(body(torch.zeros(1, *frame_shape)).shape[1])


@configurable
class PixelCNNPolicy(nn.Module):
    """A feed-forward actor-critic on image observations ``[B, C, H, W]`` in [0, 1]: two 3x3
    convolutions (``channels``, stride 1 then 2, ReLU), a ``hidden``-unit ReLU layer and
    linear policy and value heads (the MiniPacman A2C tutorial's network by default). No
    recurrent state: an empty ``[B, 0]`` tensor."""

    reads = "images: float [C, H, W] in [0, 1], channels first"

    @staticmethod
    def accepts(env: Any) -> bool:
        space = env.single_observation_space
        return (isinstance(space, spaces.Box) and len(space.shape) == 3
                and np.issubdtype(space.dtype, np.floating) and space.shape[0] <= 4
                and bool(np.all(space.low >= 0)) and bool(np.all(space.high <= 1)))

    def __init__(self, env: Any, *, channels: Annotated[int, AtLeast(1)] = 16,
                 hidden: Annotated[int, AtLeast(1)] = 256) -> None:
        super().__init__()
        self.body = pixel_body(env.obs_shape[0], channels)
        self.fc = nn.Sequential(nn.Linear(flat_size(self.body, env.obs_shape), hidden), nn.ReLU())
        self.policy = nn.Linear(hidden, env.num_actions)
        self.value = nn.Linear(hidden, 1)

    def initial_state(self, batch: int) -> Tensor:
        return torch.zeros(batch, 0, device=self.policy.weight.device)

    def forward(self, obs: Tensor, state: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        features = self.fc(self.body(obs.float()))
        return self.policy(features), self.value(features).squeeze(1), state


def _actor_critic(features: int, hidden: int, num_actions: int) -> tuple[nn.Module, ...]:
    """Separate policy and value trunks (two tanh layers each) and their heads; the policy
    head starts near uniform."""
    actor, critic = (nn.Sequential(nn.Linear(features, hidden), nn.Tanh(),
                                   nn.Linear(hidden, hidden), nn.Tanh()) for _ in range(2))
    policy, value = nn.Linear(hidden, num_actions), nn.Linear(hidden, 1)
    nn.init.orthogonal_(policy.weight, gain=0.01)
    nn.init.zeros_(policy.bias)
    return actor, critic, policy, value


@configurable
class MLPPolicy(nn.Module):
    """A feed-forward actor-critic for flat vector observations (CartPole and the like):
    separate policy and value trunks of two tanh layers of ``hidden`` units. No recurrent
    state: an empty ``[B, 0]`` tensor."""

    reads = "flat vectors: a one-dimensional Box"

    @staticmethod
    def accepts(env: Any) -> bool:
        space = env.single_observation_space
        return isinstance(space, spaces.Box) and len(space.shape) == 1

    def __init__(self, env: Any, *, hidden: Annotated[int, AtLeast(1)] = 64) -> None:
        super().__init__()
        features = int(env.single_observation_space.shape[0])
        self.actor, self.critic, self.policy, self.value = _actor_critic(
            features, hidden, env.num_actions)

    def initial_state(self, batch: int) -> Tensor:
        return torch.zeros(batch, 0, device=self.policy.weight.device)

    def forward(self, obs: Tensor, state: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        features = obs.float()
        return (self.policy(self.actor(features)), self.value(self.critic(features)).squeeze(1),
                state)


@configurable
class MiniGridPolicy(nn.Module):
    """MiniGrid's encoder: the egocentric image (object, colour and state of each cell)
    through three 2x2 convolutions with a max-pool after the first (the usual MiniGrid
    actor-critic), the facing direction one-hot beside it, then separate policy and value
    trunks of two tanh layers of ``hidden`` units. No recurrent state."""

    reads = "MiniGrid observations: an image [H, W, 3] and a direction"

    @staticmethod
    def accepts(env: Any) -> bool:
        space = env.single_observation_space
        return (isinstance(space, spaces.Dict) and set(space.spaces) == {"image", "direction"}
                and len(space["image"].shape) == 3)

    def __init__(self, env: Any, *, hidden: Annotated[int, AtLeast(1)] = 64) -> None:
        super().__init__()
        space = env.single_observation_space
        height, width, planes = space["image"].shape
        self.directions = int(space["direction"].n)
        self.body = nn.Sequential(
            nn.Conv2d(planes, 16, 2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 2), nn.ReLU(), nn.Conv2d(32, 64, 2), nn.ReLU(), nn.Flatten(),
        )
        features = flat_size(self.body, (planes, height, width)) + self.directions
        self.actor, self.critic, self.policy, self.value = _actor_critic(
            features, hidden, env.num_actions)

    def initial_state(self, batch: int) -> Tensor:
        return torch.zeros(batch, 0, device=self.policy.weight.device)

    def forward(self, obs: dict[str, Tensor], state: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        image = self.body(obs["image"].float().permute(0, 3, 1, 2))
        direction = nn.functional.one_hot(obs["direction"].long(), self.directions).float()
        features = torch.cat([image, direction], dim=1)
        return (self.policy(self.actor(features)), self.value(self.critic(features)).squeeze(1),
                state)


# The networks auto_network chooses from, in order: the first that reads an env is picked.
NETWORKS = (ToolGRUPolicy, KeyDoorMLPPolicy, PixelCNNPolicy, MiniGridPolicy, MLPPolicy)


class NetworkMismatch(ValueError):
    """No network reads an env's observations, or the chosen one cannot."""


def auto_network(env: Any) -> nn.Module:
    """The network for ``env`` by its observations: tool tokens -> the tool GRU, the
    key/door/goal layout -> its MLP, images -> the CNN, MiniGrid -> its encoder, flat
    vectors -> an MLP; each with its default settings."""
    check_fits(auto_network, env)
    return next(network for network in NETWORKS if network.accepts(env))(env)


def check_fits(network: Any, env: Any) -> None:
    """Raise :class:`NetworkMismatch` (one line) when ``network`` (a class of
    :data:`NETWORKS`, or :func:`auto_network`) cannot read ``env``'s observations."""
    space = env.single_observation_space
    if network is auto_network:
        if not any(candidate.accepts(env) for candidate in NETWORKS):
            raise NetworkMismatch(f"no network reads observations {space}; networks read: "
                                  + "; ".join(candidate.reads for candidate in NETWORKS))
    elif not network.accepts(env):
        raise NetworkMismatch(f"{network.__name__} reads {network.reads}, not {space}")


# ``check_env(env)``: the hook the app calls on a network once the env is built (see
# procmem.algorithms.protocols); it raises NetworkMismatch when the network cannot read it.
for _network in (*NETWORKS, ToolAttentionPolicy):
    _network.check_env = classmethod(check_fits)
auto_network.check_env = functools.partial(check_fits, auto_network)
