"""Features of key/door/goal observations that carry across layouts.

A skill is keyed on where the agent stands relative to its subgoal's target (key, door or
goal), which way it faces and which neighbouring cells are blocked, never on absolute cells,
so a skill learned in one layout is found again in another.
"""

from __future__ import annotations

import numpy as np
import torch

from procmem.envs.keydoor import BLOCKED, FIELD, FLAGS, NUM_DIRECTIONS, SUBGOALS, position

_TARGETS = [subgoal.target for subgoal in SUBGOALS]


def next_subgoal(obs: np.ndarray) -> np.ndarray:
    """Index into ``SUBGOALS`` of the subgoal each row still has to reach next."""
    has_key = obs[:, FIELD["has_key"]] > 0
    door_open = obs[:, FIELD["door_open"]] > 0
    return np.where(door_open, 2, np.where(has_key, 1, 0))


def target_offsets(obs: np.ndarray, subgoals: np.ndarray) -> np.ndarray:
    """``target - agent`` cell offsets ``[B, 2]`` for each row's subgoal."""
    targets = np.stack([position(obs, name) for name in _TARGETS], axis=1)  # [B, 3, 2]
    chosen = targets[np.arange(len(obs)), subgoals]
    return chosen - position(obs, "agent")


def _direction_one_hot(obs: np.ndarray) -> np.ndarray:
    """Heading one-hot ``[B, 4]``; all zeros where the env has no heading."""
    heading = obs[:, FIELD["dir"]]
    return (heading[:, None] == np.arange(NUM_DIRECTIONS)[None, :]).astype(np.float32)


# What a closed-loop skill policy reads of the target: "offset" its offset in cells (scaled
# by 1/8) and its direction; "direction" only its direction, so a grid of any size looks
# like the one the policy learnt on.
POLICY_FEATURE_KINDS = ("offset", "direction")


def policy_features(obs: np.ndarray, subgoals: np.ndarray, kind: str = "offset") -> np.ndarray:
    """Inputs of a closed-loop skill policy: the target's offset (with ``kind="offset"``),
    its direction (signs of the offset), distance-one and on-target flags, the heading,
    blocked neighbours and the state flags."""
    offset = target_offsets(obs, subgoals).astype(np.float32)
    distance = np.abs(offset).sum(axis=1, keepdims=True)
    scaled = [offset / 8.0] if kind == "offset" else []
    return np.concatenate([
        *scaled,
        np.sign(offset),
        (distance == 1).astype(np.float32),
        (distance == 0).astype(np.float32),
        _direction_one_hot(obs),
        obs[:, BLOCKED].astype(np.float32),
        obs[:, FLAGS].astype(np.float32),
    ], axis=1)


def num_policy_features(kind: str) -> int:
    """The width of :func:`policy_features` of ``kind``."""
    return (2 if kind == "offset" else 0) + 2 + 1 + 1 + NUM_DIRECTIONS + len(BLOCKED) + len(FLAGS)


class SituationEmbedding:
    """Seeded unit vectors of a situation: random Fourier features of the target offset
    (similarity ~ ``exp(-|d - d'|^2 / (2 lengthscale^2))``), heading and blocked cells.

    With a lengthscale of half a cell (the agent's default), situations one cell apart score
    ~0.1, so open-loop action sequences are reused only where they fit. Same seed, same
    vectors in every process.
    """

    MIN_DIM = NUM_DIRECTIONS + len(BLOCKED) + 8  # heading and walls, then Fourier features

    def __init__(self, dim: int, seed: int, device: torch.device, lengthscale: float) -> None:
        if dim < self.MIN_DIM:
            raise ValueError(f"embedding_dim must be >= {self.MIN_DIM} for situation keys, "
                             f"got {dim}")
        extra = NUM_DIRECTIONS + len(BLOCKED)
        rng = np.random.default_rng(seed)
        fourier = dim - extra
        self.frequencies = rng.normal(0.0, 1.0 / lengthscale, size=(2, fourier))
        self.phases = rng.uniform(0.0, 2 * np.pi, size=fourier)
        self.fourier_scale = np.sqrt(2.0 / fourier)
        self.device = device

    def __call__(self, obs: np.ndarray, subgoals: np.ndarray | None = None) -> torch.Tensor:
        """Embeddings ``[B, dim]`` of ``obs`` relative to ``subgoals`` (default: the next)."""
        subgoals = next_subgoal(obs) if subgoals is None else subgoals
        offset = target_offsets(obs, subgoals).astype(np.float64)
        fourier = self.fourier_scale * np.cos(offset @ self.frequencies + self.phases)
        # Heading and walls weigh like one Fourier block each, so they matter but do not
        # drown the offset.
        local = np.concatenate([_direction_one_hot(obs), obs[:, BLOCKED]], axis=1) * 0.5
        vectors = np.concatenate([fourier, local], axis=1)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        return torch.as_tensor(vectors, dtype=torch.float32, device=self.device)


class StateEmbedding:
    """The original's absolute state key: a fixed, seeded random projection of the agent's
    cell, the flags and the key/door/goal offsets (scaled by the grid size) plus a constant.
    Used with ``extraction=last_transitions``; the same seed gives the same vectors in every
    process.
    """

    def __init__(self, size: int, dim: int, seed: int, device: torch.device) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.num_features = 2 + len(FLAGS) + 2 * len(_TARGETS) + 1
        self.projection = torch.randn(self.num_features, dim, generator=generator).to(device)
        self.scale = float(max(size - 1, 1))
        self.device = device

    def features(self, obs: np.ndarray) -> torch.Tensor:
        obs = torch.as_tensor(obs, dtype=torch.float32, device=self.device)
        agent = position(obs, "agent")
        offsets = [position(obs, name) - agent for name in _TARGETS]
        ones = torch.ones(len(obs), 1, device=self.device)
        return torch.cat([agent / self.scale, obs[:, FLAGS],
                          *(o / self.scale for o in offsets), ones], dim=1)

    def __call__(self, obs: np.ndarray) -> torch.Tensor:
        # A fixed-order sum of products rather than a matmul: BLAS kernels may round
        # differently from one process to the next, and the keys must be bit-identical.
        features = self.features(obs)
        projected = features[:, :1] * self.projection[0]
        for i in range(1, self.num_features):
            projected = projected + features[:, i:i + 1] * self.projection[i]
        return torch.nn.functional.normalize(projected, dim=1)
