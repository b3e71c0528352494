"""Closed-loop skills: one small policy per subgoal, cloned from shortened demonstrations."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from procmem.envs.keydoor import SUBGOALS
from procmem.runtime import check_finite, step_checked
from procmem.skills.features import num_policy_features, policy_features
from procmem.skills.segments import Segment

_SUBGOAL_INDEX = {subgoal.name: i for i, subgoal in enumerate(SUBGOALS)}


class _DemoBuffer:
    """A ring buffer of (features, action) pairs of one subgoal."""

    def __init__(self, capacity: int, width: int) -> None:
        self.features = np.zeros((capacity, width), dtype=np.float32)
        self.actions = np.zeros(capacity, dtype=np.int64)
        self.size = 0
        self.next = 0

    def add(self, features: np.ndarray, actions: np.ndarray) -> None:
        capacity = len(self.actions)
        rows = (self.next + np.arange(len(actions))) % capacity
        self.features[rows] = features
        self.actions[rows] = actions
        self.next = int((self.next + len(actions)) % capacity)
        self.size = min(self.size + len(actions), capacity)


class SubgoalPolicies:
    """Greedy MLP policies, one per subgoal, trained by behaviour cloning.

    Every demonstration added goes into its subgoal's ring buffer (the newest
    ``buffer_size`` transitions are kept, so demonstrations produced by the skills themselves,
    which are shorter, gradually replace the first ones found by exploration). After each
    batch of new demonstrations, ``train`` takes ``bc_steps`` cross-entropy steps per
    subgoal that received some. The policies read ``features`` of the target (see
    :data:`~procmem.skills.features.POLICY_FEATURE_KINDS`).
    """

    def __init__(self, num_actions: int, device: torch.device, seed: int, hidden: int,
                 lr: float, buffer_size: int, bc_steps: int, batch_size: int,
                 features: str = "offset") -> None:
        self.device = device
        self.features = features
        width = num_policy_features(features)
        self.bc_steps = bc_steps
        self.batch_size = batch_size
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.nets = nn.ModuleList(
                nn.Sequential(nn.Linear(width, hidden), nn.ReLU(),
                              nn.Linear(hidden, hidden), nn.ReLU(),
                              nn.Linear(hidden, num_actions))
                for _ in SUBGOALS
            ).to(device)
        self.optimizer = torch.optim.Adam(self.nets.parameters(), lr=lr, foreach=True)
        self.buffers = [_DemoBuffer(buffer_size, width) for _ in SUBGOALS]
        self.generator = torch.Generator().manual_seed(seed)
        self._fresh: set[int] = set()
        self.loaded: set[int] = set()  # subgoals whose policy came trained from another run

    def add(self, segment: Segment) -> None:
        index = _SUBGOAL_INDEX[segment.subgoal.name]
        subgoals = np.full(len(segment.actions), index)
        self.buffers[index].add(policy_features(segment.obs, subgoals, self.features),
                                segment.actions)
        self._fresh.add(index)

    def trained(self, subgoal: int) -> bool:
        return self.buffers[subgoal].size > 0 or subgoal in self.loaded

    def train(self) -> dict[str, float]:
        """Clone the subgoals that got new demonstrations; return their mean losses.

        Each step draws a batch per such subgoal and takes one optimizer step on the sum of
        their cross-entropy losses (the policies share no weights, so this equals separate
        steps at a third of the cost).
        """
        fresh = sorted(self._fresh)
        totals = dict.fromkeys(fresh, 0.0)
        for _ in range(self.bc_steps if fresh else 0):
            losses = []
            for index in fresh:
                buffer = self.buffers[index]
                rows = torch.randint(buffer.size, (self.batch_size,), generator=self.generator)
                x = torch.as_tensor(buffer.features[rows.numpy()], device=self.device)
                y = torch.as_tensor(buffer.actions[rows.numpy()], device=self.device)
                losses.append(nn.functional.cross_entropy(self.nets[index](x), y))
            total = torch.stack(losses).sum()
            check_finite("the behaviour-cloning loss", total)
            self.optimizer.zero_grad(set_to_none=True)
            total.backward()
            step_checked(self.optimizer, "behaviour-cloning")
            for index, loss in zip(fresh, losses, strict=True):
                totals[index] += loss.item()
        self._fresh.clear()
        return {f"memory/bc_loss_{SUBGOALS[i].name}": total / self.bc_steps
                for i, total in totals.items()}

    @torch.no_grad()
    def act(self, obs: np.ndarray, subgoals: np.ndarray) -> np.ndarray:
        """Greedy actions ``[B]`` for rows of ``obs`` pursuing ``subgoals``."""
        x = torch.as_tensor(policy_features(obs, subgoals, self.features), device=self.device)
        logits = torch.stack([net(x) for net in self.nets])  # [S, B, A]
        chosen = logits[torch.as_tensor(subgoals, device=self.device), torch.arange(len(obs))]
        return chosen.argmax(dim=1).cpu().numpy()

    def state_dict(self) -> dict[str, Any]:
        return {
            "nets": copy.deepcopy(self.nets.state_dict()),
            "optimizer": copy.deepcopy(self.optimizer.state_dict()),
            "buffers": [{"features": b.features.copy(), "actions": b.actions.copy(),
                         "size": b.size, "next": b.next} for b in self.buffers],
            "generator": self.generator.get_state(),
            "fresh": sorted(self._fresh),
            "loaded": sorted(self.loaded),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.nets.load_state_dict(state["nets"])
        self.optimizer.load_state_dict(state["optimizer"])
        for buffer, saved in zip(self.buffers, state["buffers"], strict=True):
            buffer.features = np.array(saved["features"])
            buffer.actions = np.array(saved["actions"])
            buffer.size, buffer.next = int(saved["size"]), int(saved["next"])
        self.generator.set_state(state["generator"])
        self._fresh = set(state["fresh"])
        self.loaded = set(state.get("loaded", ()))
