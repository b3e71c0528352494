"""Trains the MiniPacman :class:`~procmem.models.env_model.EnvModel` on transitions of a
batched env (``agent=env_model``).

**Acting.** With a ``policy`` (the network of a trained A2C run, which the app loads from
``agent.policy_run``) actions are sampled from it (not greedy, so the data keep some
variety). Without one, actions are uniform and a warning says so once, on the first
collection: a random Pacman seldom eats a pill or a ghost, so those events are rare in its
data.

**Transitions.** Each step stores ``(frame, action, next_frame, events, mask)``. The env
resets ended episodes within the step, so the returned observation of an env that ended is
the first frame of its next episode; its ``next_frame`` is read from ``info["final_obs"]``
instead, the true frame the action led to. Every transition is then real and ``mask`` is
true; it is false only for ended envs of an env that reports no ``final_obs`` (their next
frame is unknown). The first frame of the next episode is the ``frame`` of the following
transition, as it should be. Frames are kept as uint8 ``round(x * PILL_POWER)`` (every
channel of a MiniPacman frame is a multiple of ``1 / PILL_POWER``), a quarter of float32.

**Buffer.** A FIFO ring of ``buffer_size`` transitions (numpy arrays); each iteration
steps the whole batch ``collect_steps`` times (``collect_steps * num_envs`` transitions)
and then takes ``updates_per_iteration`` Adam steps on minibatches of ``batch_size`` drawn
uniformly, with replacement, from the transitions held. With ``lr_decay_iterations`` the
learning rate falls linearly from ``lr`` (first iteration) to 0 over that many iterations.

**Evaluation.** ``evaluate(episodes)`` acts with the same policy (fixed seeds, so every
evaluation sees the same held-out data) on the eval env: ``episodes`` segments, each a
reset (seed ``seed + 7919 + k``) followed by :data:`EVAL_SEGMENT_STEPS` steps of the whole
batch. Metrics, prefixed ``eval/`` like A2C's: the model's one-step
``eval/envmodel/{pixel,frame,event,reward}_accuracy`` and ``eval/envmodel/loss`` over every
held-out transition, and open-loop ``eval/envmodel/rollout_pixel_accuracy_{k}`` and
``..._frame_accuracy_{k}``, ``k = 1..`` :data:`ROLLOUT_STEPS`, over the segments cut into
windows of :data:`ROLLOUT_STEPS` steps (a window is kept up to the step where an episode
ended; later steps start from a reset frame and are masked).

The trained model is :attr:`EnvModelTrainer.env_model`; a run saves it as its
``env_model.pt`` for I2A.
"""

from __future__ import annotations

import copy
import time
import warnings
from collections.abc import Mapping
from typing import Annotated, Any

import numpy as np
import torch
from torch import Tensor, nn

from procmem.algorithms.protocols import require_env
from procmem.envs.minipacman import PILL_POWER
from procmem.envs.protocols import EventRewardEnv, PixelEnv
from procmem.models.env_model import EnvModel, rollout_accuracy
from procmem.runtime import check_finite, step_checked
from procmem.settings import Above, AtLeast, configurable

EVAL_SEGMENT_STEPS = 64  # batch steps per held-out segment
EVAL_SEED_OFFSET = 7919
ROLLOUT_STEPS = 5  # open-loop accuracy after 1..ROLLOUT_STEPS imagined steps
EVAL_CHUNK = 1024  # transitions per forward pass in evaluation
RANDOM_POLICY_WARNING = (
    "agent=env_model has no policy_run: the env model trains on data from a uniformly "
    "random policy"
)


def encode_frames(frames: np.ndarray) -> np.ndarray:
    """Frames float32 ``[N, 3, H, W]`` as uint8 multiples of ``1 / PILL_POWER``."""
    return np.rint(np.asarray(frames) * PILL_POWER).astype(np.uint8)


def decode_frames(codes: np.ndarray) -> np.ndarray:
    """The float32 frames of :func:`encode_frames`."""
    return codes.astype(np.float32) / np.float32(PILL_POWER)


@configurable
class EnvModelTrainer:
    """Trains an :class:`EnvModel` (``channels`` planes, ``blocks`` pool-and-inject blocks,
    ``event_coef`` the weight of the event loss) from a replay ring of ``buffer_size`` env
    transitions: ``collect_steps`` batch steps, then ``updates_per_iteration`` Adam steps on
    ``batch_size`` transitions each, at ``lr`` decayed over ``lr_decay_iterations``; see the
    module docstring."""

    env_needs = (PixelEnv, EventRewardEnv)

    def __init__(
        self,
        env: EventRewardEnv,
        eval_env: EventRewardEnv,
        device: torch.device,
        seed: int,
        policy: nn.Module | None = None,
        *,
        channels: Annotated[int, AtLeast(1)] = 16,
        blocks: Annotated[int, AtLeast(0)] = 2,
        lr: Annotated[float, Above(0.0)] = 1e-3,
        batch_size: Annotated[int, AtLeast(1)] = 64,
        buffer_size: Annotated[int, AtLeast(1)] = 50000,
        collect_steps: Annotated[int, AtLeast(1)] = 8,
        updates_per_iteration: Annotated[int, AtLeast(1)] = 2,
        event_coef: Annotated[float, AtLeast(0.0)] = 1.0,
        lr_decay_iterations: Annotated[int, AtLeast(0)] = 0,
    ) -> None:
        require_env(self, env)
        self.env, self.eval_env = env, eval_env
        self.device, self.seed = torch.device(device), seed
        self.batch_size, self.buffer_size = batch_size, buffer_size
        self.collect_steps = collect_steps
        self.updates_per_iteration = updates_per_iteration
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.env_model = EnvModel(int(env.num_actions), channels, blocks,
                                      event_coef).to(self.device)
        self.optimizer = torch.optim.Adam(self.env_model.parameters(), lr=lr)
        self.lr, self.lr_decay_iterations = lr, lr_decay_iterations
        self.policy = None if policy is None else policy.to(self.device).eval()
        self.warned = False
        self.rng = np.random.default_rng(seed)
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.reward_vector = torch.as_tensor(env.reward_vector, dtype=torch.float32)

        shape = tuple(env.obs_shape)
        self.frames = np.zeros((buffer_size, *shape), dtype=np.uint8)
        self.next_frames = np.zeros((buffer_size, *shape), dtype=np.uint8)
        self.actions = np.zeros(buffer_size, dtype=np.int64)
        self.events = np.zeros((buffer_size, len(env.event_names)), dtype=np.float32)
        self.mask = np.zeros(buffer_size, dtype=bool)
        self.position = 0  # where the next transition goes
        self.size = 0  # transitions held

        self.obs, _ = env.reset(seed=seed)
        self.state = None if self.policy is None else self.policy.initial_state(env.num_envs)
        self.env_steps = 0

    # --- the algorithm protocol ---------------------------------------------------------------

    def train_iteration(self) -> dict[str, float]:
        start = time.perf_counter()
        for _ in range(self.collect_steps):
            action, self.state = self._act(self.obs, self.state, self.rng, self.generator)
            obs, _, terminated, truncated, info = self.env.step(action)
            done = terminated | truncated
            next_frames, mask = next_frames_of(obs, done, info)
            self._store(self.obs, action, next_frames, info["events"], mask)
            self.state = _reset_state(self.state, done)
            self.obs = obs
        self.env_steps += self.collect_steps * self.env.num_envs
        lr = self._learning_rate()
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.env_model.train()
        totals: dict[str, float] = {}
        for _ in range(self.updates_per_iteration):
            rows = self.rng.integers(0, self.size, size=self.batch_size)
            loss, metrics = self.env_model.loss(*self._batch(rows),
                                                reward_vector=self.reward_vector)
            check_finite("the env model loss", loss)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            step_checked(self.optimizer, "env model")
            for key, value in metrics.items():
                totals[key] = totals.get(key, 0.0) + value / self.updates_per_iteration
        return {
            **totals,
            "train/env_steps": float(self.env_steps),
            "train/buffer_size": float(self.size),
            "train/lr": lr,
            "perf/sps": self.collect_steps * self.env.num_envs / (time.perf_counter() - start),
        }

    @torch.no_grad()
    def evaluate(self, episodes: int) -> dict[str, float]:
        """One-step and open-loop accuracy on ``episodes`` held-out segments (fixed seeds)."""
        self.env_model.eval()
        data = self.collect_segments(episodes)
        frames, actions, next_frames, events, mask = (
            torch.as_tensor(a, device=self.device) for a in
            (data["frames"], data["actions"], data["next_frames"], data["events"], data["mask"])
        )
        flat = [t.flatten(0, 2) for t in (frames, actions, next_frames, events, mask)]
        sums: dict[str, float] = {}
        kept = 0
        for begin in range(0, len(flat[0]), EVAL_CHUNK):
            chunk = [t[begin:begin + EVAL_CHUNK] for t in flat]
            weight = int(chunk[4].sum())
            if weight == 0:
                continue
            _, metrics = self.env_model.loss(*chunk, reward_vector=self.reward_vector)
            for key, value in metrics.items():
                sums[key] = sums.get(key, 0.0) + value * weight
            kept += weight
        result = {f"eval/{key}": value / kept for key, value in sums.items()}
        windows = _windows(data, ROLLOUT_STEPS)
        rollout = rollout_accuracy(self.env_model, *(torch.as_tensor(w, device=self.device)
                                                 for w in windows), steps=ROLLOUT_STEPS)
        for k in range(ROLLOUT_STEPS):
            result[f"eval/envmodel/rollout_pixel_accuracy_{k + 1}"] = rollout["pixel_accuracy"][k]
            result[f"eval/envmodel/rollout_frame_accuracy_{k + 1}"] = rollout["frame_accuracy"][k]
        return result

    def state_dict(self) -> dict[str, Any]:
        held = slice(0, self.size)
        return {
            "model": copy.deepcopy(self.env_model.state_dict()),
            "optimizer": copy.deepcopy(self.optimizer.state_dict()),
            "buffer": {
                "frames": self.frames[held].copy(),
                "next_frames": self.next_frames[held].copy(),
                "actions": self.actions[held].copy(),
                "events": self.events[held].copy(),
                "mask": self.mask[held].copy(),
                "position": self.position,
                "size": self.size,
            },
            "env": self.env.state_dict(),
            "obs": np.array(self.obs, copy=True),
            "state": None if self.state is None else self.state.detach().clone(),
            "rng": copy.deepcopy(self.rng.bit_generator.state),
            "generator": self.generator.get_state(),
            "env_steps": self.env_steps,
            "warned": self.warned,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.env_model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        buffer = state["buffer"]
        size = int(buffer["size"])
        if size > self.buffer_size:
            raise ValueError(f"the saved buffer holds {size} transitions, more than "
                             f"buffer_size={self.buffer_size}")
        for name in ("frames", "next_frames", "actions", "events", "mask"):
            getattr(self, name)[:size] = buffer[name]
        self.size, self.position = size, int(buffer["position"]) % self.buffer_size
        self.env.load_state_dict(state["env"])
        self.obs = np.array(state["obs"], copy=True)
        self.state = None if state["state"] is None else state["state"].to(self.device)
        self.rng = np.random.default_rng()
        self.rng.bit_generator.state = copy.deepcopy(state["rng"])
        self.generator.set_state(state["generator"])
        self.env_steps = int(state["env_steps"])
        self.warned = bool(state["warned"])

    def _learning_rate(self) -> float:
        """``lr``, decayed linearly to 0 over ``lr_decay_iterations`` iterations (0: constant)."""
        if self.lr_decay_iterations == 0:
            return self.lr
        iteration = self.env_steps // (self.collect_steps * self.env.num_envs)
        return self.lr * max(0.0, 1.0 - (iteration - 1) / self.lr_decay_iterations)

    # --- data ---------------------------------------------------------------------------------

    def collect_segments(self, segments: int) -> dict[str, np.ndarray]:
        """Held-out transitions of the eval env, ``[segments, EVAL_SEGMENT_STEPS, B, ...]``:
        ``frames``, ``actions``, ``next_frames`` (float32), ``events``, ``mask`` and
        ``done`` (the episode ended on that step)."""
        env = self.eval_env
        rng = np.random.default_rng(self.seed + EVAL_SEED_OFFSET)
        generator = torch.Generator(device=self.device).manual_seed(self.seed + EVAL_SEED_OFFSET)
        names = ("frames", "actions", "next_frames", "events", "mask", "done")
        data: dict[str, list] = {name: [] for name in names}
        for k in range(segments):
            obs, _ = env.reset(seed=self.seed + EVAL_SEED_OFFSET + k)
            state = None if self.policy is None else self.policy.initial_state(env.num_envs)
            steps: dict[str, list] = {name: [] for name in names}
            for _ in range(EVAL_SEGMENT_STEPS):
                action, state = self._act(obs, state, rng, generator)
                next_obs, _, terminated, truncated, info = env.step(action)
                done = terminated | truncated
                next_frames, mask = next_frames_of(next_obs, done, info)
                for name, value in zip(names, (obs, action, next_frames, info["events"], mask,
                                               done), strict=True):
                    steps[name].append(np.array(value, copy=True))
                state = _reset_state(state, done)
                obs = next_obs
            for name in names:
                data[name].append(np.stack(steps[name]))
        return {name: np.stack(values) for name, values in data.items()}

    def _act(self, obs: np.ndarray, state: Tensor | None, rng: np.random.Generator,
             generator: torch.Generator) -> tuple[np.ndarray, Tensor | None]:
        """Actions of the acting policy (sampled) and its next recurrent state."""
        if self.policy is None:
            if not self.warned:
                warnings.warn(RANDOM_POLICY_WARNING, stacklevel=3)
                self.warned = True
            return rng.integers(0, self.env.num_actions, size=len(obs)), state
        with torch.no_grad():
            logits, _, state = self.policy(torch.as_tensor(obs, device=self.device), state)
            probs = torch.softmax(logits, dim=1)
            action = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        return action.cpu().numpy(), state

    def _store(self, frames: np.ndarray, actions: np.ndarray, next_frames: np.ndarray,
               events: np.ndarray, mask: np.ndarray) -> None:
        """Append a batch of transitions to the ring, overwriting the oldest when full."""
        n = len(frames)
        rows = (self.position + np.arange(n)) % self.buffer_size
        if n > self.buffer_size:  # only the newest buffer_size of them are kept
            rows, frames, actions = rows[-self.buffer_size:], frames[-self.buffer_size:], \
                actions[-self.buffer_size:]
            next_frames, events = next_frames[-self.buffer_size:], events[-self.buffer_size:]
            mask = mask[-self.buffer_size:]
        self.frames[rows] = encode_frames(frames)
        self.next_frames[rows] = encode_frames(next_frames)
        self.actions[rows] = actions
        self.events[rows] = events
        self.mask[rows] = mask
        self.position = int((self.position + n) % self.buffer_size)
        self.size = min(self.size + n, self.buffer_size)

    def _batch(self, rows: np.ndarray) -> tuple[Tensor, ...]:
        device = self.device
        return (
            torch.as_tensor(decode_frames(self.frames[rows]), device=device),
            torch.as_tensor(self.actions[rows], device=device),
            torch.as_tensor(decode_frames(self.next_frames[rows]), device=device),
            torch.as_tensor(self.events[rows], device=device),
            torch.as_tensor(self.mask[rows], device=device),
        )


def next_frames_of(obs: np.ndarray, done: np.ndarray, info: Mapping[str, Any]
                   ) -> tuple[np.ndarray, np.ndarray]:
    """The frames each action led to, and which of them are known (see the module docstring):
    ``obs``, with the ``final_obs`` rows of the envs that ended."""
    obs, done = np.asarray(obs), np.asarray(done)
    if "final_obs" not in info:
        return obs, ~done
    frames = obs.copy()
    frames[done] = np.asarray(info["final_obs"])[done]
    return frames, np.ones(len(done), dtype=bool)


def _reset_state(state: Tensor | None, done: np.ndarray) -> Tensor | None:
    """A policy's recurrent state, zeroed where episodes ended."""
    if state is None or state.shape[1] == 0:
        return state
    keep = torch.as_tensor(~done, dtype=state.dtype, device=state.device)
    return state * keep.unsqueeze(1)


def _windows(data: Mapping[str, np.ndarray], steps: int) -> tuple[np.ndarray, ...]:
    """Held-out segments cut into windows of ``steps`` transitions, for
    :func:`rollout_accuracy`: first frames ``[N, 3, H, W]``, actions ``[N, steps]``, next
    frames ``[N, steps, 3, H, W]`` and masks ``[N, steps]`` (step ``t`` is real when no
    episode ended at steps ``< t`` of the window, and its own transition is known)."""
    segments, length, batch = data["actions"].shape
    count = length // steps
    def cut(array: np.ndarray) -> np.ndarray:
        # [S, count * steps, B, ...] -> [S * count * B, steps, ...]
        array = array[:, :count * steps]
        array = array.reshape(segments, count, steps, batch, *array.shape[3:])
        array = np.moveaxis(array, 3, 2)
        return array.reshape(segments * count * batch, steps, *array.shape[4:])
    frames, actions, next_frames = cut(data["frames"]), cut(data["actions"]), \
        cut(data["next_frames"])
    done, known = cut(data["done"]), cut(data["mask"])
    ended_before = np.concatenate([np.zeros_like(done[:, :1]), np.cumsum(done, 1)[:, :-1] > 0],
                                  axis=1)
    return frames[:, 0], actions, next_frames, known & ~ended_before
