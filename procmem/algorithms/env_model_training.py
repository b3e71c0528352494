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

**Buffer.** :attr:`EnvModelTrainer.replay`, a
:class:`~procmem.algorithms.rollouts.RolloutStorage` of ``buffer_size`` transitions (numpy
arrays, the oldest overwritten once it is full); each iteration
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

**Sequences.** The state-space model (``model=ssm``) trains on ``batch_size`` windows of
``sequence_length`` consecutive steps of one env (:func:`sequence_rows`); a step after an
episode's end in its window is masked (its frame is no longer the one the previous step
led to), and the loss is its open-loop rollout's at every step. The held-out metrics are
the same for both models: a state-space model's one-step accuracies are its rollouts of
one step, its open-loop ones its latent rollouts decoded.

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

from procmem.algorithms.evaluation import choose_actions
from procmem.algorithms.policy_file import load_policy
from procmem.algorithms.protocols import Artifact, RunInput, require_env
from procmem.algorithms.rollouts import Field, RolloutStorage
from procmem.envs.minipacman import PILL_POWER
from procmem.envs.protocols import EventRewardEnv, PixelEnv
from procmem.models.env_model import EnvModel
from procmem.models.env_model_file import ENV_MODELS, save_env_model
from procmem.models.env_model_loss import rollout_accuracy
from procmem.models.state_space_model import StateSpaceModel
from procmem.runtime import check_finite, set_decayed_lr, step_checked
from procmem.settings import Above, AtLeast, OneOf, configurable

EVAL_SEGMENT_STEPS = 64  # batch steps per held-out segment
EVAL_SEED_OFFSET = 7919
ROLLOUT_STEPS = 5  # open-loop accuracy after 1..ROLLOUT_STEPS imagined steps
EVAL_CHUNK = 1024  # transitions per forward pass in evaluation
ENV_MODEL_KINDS = tuple(ENV_MODELS)  # pixel, ssm
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
    """Trains an env model from a replay ring of ``buffer_size`` env transitions:
    ``collect_steps`` batch steps, then ``updates_per_iteration`` Adam steps on
    ``batch_size`` transitions (or sequences) each, at ``lr`` decayed over
    ``lr_decay_iterations``; see the module docstring.

    ``model`` picks the env model: ``pixel``, an :class:`EnvModel` (``channels`` planes,
    ``blocks`` pool-and-inject blocks), trained on single transitions; or ``ssm``, a
    :class:`~procmem.models.state_space_model.StateSpaceModel` (a state of ``latent_size``
    numbers, ``channels`` planes in its encoder and decoder), trained on sequences of
    ``sequence_length`` steps of one env, open loop, scored at every step. ``event_coef``
    weighs the event loss; ``blocks`` is the pixel model's only, ``latent_size`` and
    ``sequence_length`` the state-space model's only."""

    env_needs = (PixelEnv, EventRewardEnv)
    artifacts = (Artifact("env_model.pt",
                          lambda trainer, path: save_env_model(trainer.env_model, path)),)
    run_inputs = {"policy": RunInput("policy_run", "policy.pt", load_policy)}

    def __init__(
        self,
        env: EventRewardEnv,
        eval_env: EventRewardEnv,
        device: torch.device,
        seed: int,
        policy: nn.Module | None = None,
        *,
        model: Annotated[str, OneOf(ENV_MODEL_KINDS)] = "pixel",
        channels: Annotated[int, AtLeast(1)] = 16,
        blocks: Annotated[int, AtLeast(0)] = 2,
        lr: Annotated[float, Above(0.0)] = 1e-3,
        batch_size: Annotated[int, AtLeast(1)] = 64,
        buffer_size: Annotated[int, AtLeast(1)] = 50000,
        collect_steps: Annotated[int, AtLeast(1)] = 8,
        updates_per_iteration: Annotated[int, AtLeast(1)] = 2,
        event_coef: Annotated[float, AtLeast(0.0)] = 1.0,
        lr_decay_iterations: Annotated[int, AtLeast(0)] = 0,
        latent_size: Annotated[int, AtLeast(1)] = 64,
        sequence_length: Annotated[int, AtLeast(1)] = 5,
    ) -> None:
        require_env(self, env)
        self.env, self.eval_env = env, eval_env
        self.device, self.seed = torch.device(device), seed
        self.batch_size = batch_size
        self.collect_steps = collect_steps
        self.updates_per_iteration = updates_per_iteration
        # the pixel model learns one step at a time; the state-space model whole sequences
        self.sequence_length = sequence_length if model == "ssm" else 1
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            if model == "ssm":
                self.env_model = StateSpaceModel(int(env.num_actions), tuple(env.obs_shape),
                                                 latent_size, channels, event_coef)
            else:
                self.env_model = EnvModel(int(env.num_actions), channels, blocks, event_coef)
            self.env_model.to(self.device)
        self.optimizer = torch.optim.Adam(self.env_model.parameters(), lr=lr)
        self.lr, self.lr_decay_iterations = lr, lr_decay_iterations
        self.policy = None if policy is None else policy.to(self.device).eval()
        self.warned = False
        self.rng = np.random.default_rng(seed)
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.reward_vector = torch.as_tensor(env.reward_vector, dtype=torch.float32)

        self.replay = RolloutStorage(buffer_size, transition_fields(env, np.uint8))
        self.obs, _ = env.reset(seed=seed)
        self.state = None if self.policy is None else self.policy.initial_state(env.num_envs)
        self.env_steps = 0

    # --- the algorithm protocol ---------------------------------------------------------------

    def train_iteration(self) -> dict[str, float]:
        start = time.perf_counter()
        for _ in range(self.collect_steps):
            transitions, _, self.obs, self.state = self._collect_step(
                self.env, self.obs, self.state, self.rng, self.generator)
            self.replay.add(**{**transitions, "frames": encode_frames(transitions["frames"]),
                               "next_frames": encode_frames(transitions["next_frames"])})
        self.env_steps += self.collect_steps * self.env.num_envs
        iteration = self.env_steps // (self.collect_steps * self.env.num_envs)
        lr = set_decayed_lr(self.optimizer, self.lr, iteration, self.lr_decay_iterations)
        self.env_model.train()
        totals: dict[str, float] = {}
        for _ in range(self.updates_per_iteration):
            loss, metrics = self.env_model.loss(*self._sample_batch(),
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
            "train/buffer_size": float(self.replay.size),
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
        return {
            "model": copy.deepcopy(self.env_model.state_dict()),
            "optimizer": copy.deepcopy(self.optimizer.state_dict()),
            "buffer": self.replay.state_dict(),
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
        self.replay.load_state_dict(state["buffer"])
        self.env.load_state_dict(state["env"])
        self.obs = np.array(state["obs"], copy=True)
        self.state = None if state["state"] is None else state["state"].to(self.device)
        self.rng = np.random.default_rng()
        self.rng.bit_generator.state = copy.deepcopy(state["rng"])
        self.generator.set_state(state["generator"])
        self.env_steps = int(state["env_steps"])
        self.warned = bool(state["warned"])

    # --- data ---------------------------------------------------------------------------------

    def collect_segments(self, segments: int) -> dict[str, np.ndarray]:
        """Held-out transitions of the eval env, ``[segments, EVAL_SEGMENT_STEPS, B, ...]``:
        ``frames``, ``actions``, ``next_frames`` (float32), ``events``, ``mask`` and
        ``done`` (the episode ended on that step)."""
        env = self.eval_env
        rng = np.random.default_rng(self.seed + EVAL_SEED_OFFSET)
        generator = torch.Generator(device=self.device).manual_seed(self.seed + EVAL_SEED_OFFSET)
        fields = {**transition_fields(env, env.single_observation_space.dtype),
                  "done": Field((), np.bool_)}
        data = RolloutStorage(segments * EVAL_SEGMENT_STEPS * env.num_envs, fields)
        for k in range(segments):
            obs, _ = env.reset(seed=self.seed + EVAL_SEED_OFFSET + k)
            state = None if self.policy is None else self.policy.initial_state(env.num_envs)
            for _ in range(EVAL_SEGMENT_STEPS):
                transitions, done, obs, state = self._collect_step(env, obs, state, rng,
                                                                   generator)
                data.add(**transitions, done=done)
        return {name: data.get(name).reshape(segments, EVAL_SEGMENT_STEPS, env.num_envs,
                                             *field.shape) for name, field in fields.items()}

    def _collect_step(self, env: EventRewardEnv, obs: np.ndarray, state: Tensor | None,
                      rng: np.random.Generator, generator: torch.Generator
                      ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, Tensor | None]:
        """One step of the batch with the acting policy from ``obs``: its transitions
        (float frames), where episodes ended, and the next observations and recurrent
        state."""
        action, state = self._act(obs, state, rng, generator)
        next_obs, _, terminated, truncated, info = env.step(action)
        done = terminated | truncated
        next_frames, mask = next_frames_of(next_obs, done, info)
        transitions = {"frames": obs, "next_frames": next_frames, "actions": action,
                       "events": info["events"], "mask": mask}
        return transitions, done, next_obs, _reset_state(state, done)

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
        return choose_actions(logits, "sample", generator), state

    def _sample_batch(self) -> tuple[Tensor, ...]:
        """``batch_size`` transitions drawn from the replay, as the tensors of the model's
        ``loss``: one step each, or sequences of ``sequence_length`` steps of one env
        (:func:`sequence_rows`), their first frames and ``[B, T, ...]`` actions, next frames,
        events and masks (a step is real while the env did not reset before it)."""
        if self.sequence_length == 1:
            return self._batch(self.replay.sample(self.rng, self.batch_size))
        frames, actions, next_frames, events, mask = self._batch(sequence_rows(
            self.replay, self.rng, self.batch_size, self.sequence_length, self.env.num_envs))
        continues = (next_frames[:, :-1] == frames[:, 1:]).flatten(2).all(2)
        mask[:, 1:] &= continues
        mask = torch.cummin(mask.to(torch.uint8), dim=1).values.bool()
        return frames[:, 0], actions, next_frames, events, mask

    def _batch(self, rows: np.ndarray) -> tuple[Tensor, ...]:
        """The replay's transitions at ``rows`` (of any shape) as tensors on the device:
        frames, actions, next frames, events and masks, frames decoded to float32."""
        batch = self.replay.rows(rows)
        return tuple(torch.as_tensor(decode_frames(batch[name]) if name.endswith("frames")
                                     else batch[name], device=self.device)
                     for name in ("frames", "actions", "next_frames", "events", "mask"))


def sequence_rows(replay: RolloutStorage, rng: np.random.Generator, count: int, length: int,
                  num_envs: int) -> np.ndarray:
    """Ring indices ``[count, length]`` of ``count`` windows of ``length`` consecutive steps
    of one env each, drawn uniformly from the held rows: the replay appends a whole batch
    step (``num_envs`` rows) at a time, so an env's next step is ``num_envs`` rows on. A
    window may cross an episode's end (the caller masks what follows it); it never reaches
    past the newest row."""
    span = (length - 1) * num_envs
    if replay.size <= span:
        raise ValueError(f"the replay holds {replay.size} rows, too few for sequences of "
                         f"{length} steps of {num_envs} envs")
    oldest = replay.position if replay.size == replay.capacity else 0
    starts = rng.integers(0, replay.size - span, size=count)
    steps = np.arange(length) * num_envs
    return (oldest + starts[:, None] + steps) % replay.capacity


def transition_fields(env: EventRewardEnv, frame_dtype: Any) -> dict[str, Field]:
    """The fields of a transition of ``env`` (see the module docstring), its frames kept as
    ``frame_dtype``."""
    frame = Field(tuple(env.obs_shape), frame_dtype)
    return {"frames": frame, "next_frames": frame, "actions": Field((), np.int64),
            "events": Field((len(env.event_names),), np.float32), "mask": Field((), np.bool_)}


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
