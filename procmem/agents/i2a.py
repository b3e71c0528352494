"""Imagination-augmented agents (I2A, Weber et al. 2017) for MiniPacman, trained with A2C.

:class:`I2APolicy` is an actor-critic network with two paths. The model-free path reads the
real frame (:func:`~procmem.agents.networks.pixel_body`). The imagination path rolls an
environment model out once per action, ``depth`` steps each (the first step takes that
action, later ones the rollout policy's), encodes every rollout with a
:class:`~procmem.agents.imagination.RolloutEncoder` (LSTM over the imagined frames and
rewards, last step first) and concatenates the codes. Both paths feed one ReLU layer and
the policy and value heads.

``imagination`` picks the agent and its baselines:

- ``learned``: the trained :class:`~procmem.agents.env_model.EnvModel` imagines;
- ``copy``: a :class:`~procmem.agents.imagination.CopyModel` returns the input frame and no
  reward, so the imagination path has the same parameters and inputs but no foresight;
- ``none``: the standard model-free agent; its hidden layer is widened so it trains as many
  parameters as the I2A network (rollout policy and env model aside).

:class:`I2A` is :class:`~procmem.agents.a2c.A2C` on that network plus two updates of its
own after each A2C step: the rollout policy is distilled from the agent's policy (the
cross-entropy of its action distribution against the agent's, on the real frames of the
update, with its own Adam optimizer), and, with ``finetune_env_model``, the env model takes
an Adam step of its own supervised loss on the update's real transitions. Otherwise the env
model is frozen. A2C's loss never reaches either: the rollout policy's actions are argmax
choices and imagined frames are argmax pixel classes.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from procmem.agents.a2c import A2C
from procmem.agents.env_model import EnvModel
from procmem.agents.env_model_trainer import EnvModelTrainer, load_env_model, next_frames_of
from procmem.agents.imagination import CopyModel, RolloutEncoder, RolloutPolicy, imagine
from procmem.agents.networks import flat_size, pixel_body
from procmem.logging import MetricLogger
from procmem.render import save_strip, to_rgb8, upscale
from procmem.runtime import check_finite

IMAGINATION = ("learned", "copy", "none")
PRETRAIN_WARNING = (
    "agent=i2a has no env_model_run: pretraining an env model for {iterations} iterations "
    "on random-policy data first (train one with experiment=envmodel_minipacman and pass its "
    "run dir as agent.env_model_run)"
)


def check_imagination(imagination: str) -> None:
    """Refuse an ``imagination`` that is not one of :data:`IMAGINATION`."""
    if imagination not in IMAGINATION:
        raise ValueError(f"imagination must be one of {IMAGINATION}, got {imagination!r}")


def distillation_loss(rollout_logits: Tensor, agent_logits: Tensor) -> Tensor:
    """Cross-entropy of the rollout policy against the agent's policy (a constant target),
    ``-sum_a pi(a) log pi_hat(a)``, averaged over the batch; it is smallest, the agent
    policy's entropy, where the two distributions agree."""
    target = torch.softmax(agent_logits.detach(), dim=1)
    return -(target * F.log_softmax(rollout_logits, dim=1)).sum(1).mean()


def standard_hidden(trained: int, body: int, features: int, num_actions: int) -> int:
    """The hidden width that gives a model-free network (a body of ``body`` parameters,
    ``features`` features, one hidden layer, policy and value heads) ``trained``
    parameters, or as near as a whole width gets."""
    per_unit = features + 1 + num_actions + 1  # hidden layer in and heads out
    return max(1, round((trained - body - (num_actions + 1)) / per_unit))


class I2APolicy(nn.Module):
    """The I2A actor-critic network (see the module docstring); ``forward(obs, state)`` as
    every network in :mod:`procmem.agents.networks` (no recurrent state: ``[B, 0]``).

    ``env_model`` is used when ``imagination="learned"``; ``reward_vector`` ``[5]`` turns
    imagined events into rewards. Parameter groups: :meth:`agent_parameters` (trained by
    A2C), ``rollout_policy`` (distilled) and ``model`` (the env model, frozen or
    fine-tuned; none for ``copy`` and ``none``).
    """

    def __init__(
        self,
        env: Any,
        imagination: str,
        env_model: EnvModel | None = None,
        depth: int = 5,
        channels: int = 16,
        hidden: int = 256,
        code_size: int = 64,
    ) -> None:
        super().__init__()
        check_imagination(imagination)
        if imagination == "learned" and env_model is None:
            raise ValueError("imagination='learned' needs an env model")
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        frame_shape, num_actions = tuple(env.obs_shape), int(env.num_actions)
        self.imagination, self.depth = imagination, depth
        self.body = pixel_body(frame_shape[0], channels)
        features = flat_size(self.body, frame_shape)
        if imagination == "none":
            self.model = self.rollout_policy = self.encoder = None
            body = sum(p.numel() for p in self.body.parameters())
            hidden = standard_hidden(self._i2a_trained_parameters(
                env, depth, channels, hidden, code_size), body, features, num_actions)
        else:
            self.model = env_model if imagination == "learned" else CopyModel(num_actions)
            self.rollout_policy = RolloutPolicy(frame_shape, num_actions, channels)
            self.encoder = RolloutEncoder(frame_shape, channels, code_size)
            features += num_actions * code_size
        self.register_buffer("reward_vector",
                             torch.as_tensor(env.reward_vector, dtype=torch.float32))
        self.fc = nn.Sequential(nn.Linear(features, hidden), nn.ReLU())
        self.policy = nn.Linear(hidden, num_actions)
        self.value = nn.Linear(hidden, 1)

    @staticmethod
    def _i2a_trained_parameters(env: Any, depth: int, channels: int, hidden: int,
                                code_size: int) -> int:
        """How many parameters A2C trains in the I2A network of these settings."""
        net = I2APolicy(env, "copy", None, depth, channels, hidden, code_size)
        return sum(p.numel() for p in net.agent_parameters())

    def agent_parameters(self) -> list[nn.Parameter]:
        """The parameters A2C trains: everything but the rollout policy and the env model."""
        own = [self.body, self.fc, self.policy, self.value]
        if self.encoder is not None:
            own.append(self.encoder)
        return [p for module in own for p in module.parameters()]

    def initial_state(self, batch: int) -> Tensor:
        return torch.zeros(batch, 0, device=self.policy.weight.device)

    def imagine(self, frames: Tensor) -> tuple[Tensor, Tensor]:
        """The imagined rollouts of ``frames``: frames ``[depth, B, A, 3, H, W]`` and rewards
        ``[depth, B, A]`` (see :func:`~procmem.agents.imagination.imagine`)."""
        return imagine(self.model, self.rollout_policy, frames, self.depth, self.reward_vector)

    def forward(self, obs: Tensor, state: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        frames = obs.float()
        features = self.body(frames)
        if self.encoder is not None:
            imagined, rewards = self.imagine(frames)
            codes = self.encoder(imagined.flatten(1, 2), rewards.flatten(1, 2))
            features = torch.cat([features, codes.view(len(frames), -1)], dim=1)
        hidden = self.fc(features)
        return self.policy(hidden), self.value(hidden).squeeze(1), state


class I2A(A2C):
    """A2C on an :class:`I2APolicy`, with the rollout policy distilled and, optionally, the
    env model fine-tuned (see the module docstring).

    The env model comes from ``env_model_run`` (an ``agent=env_model`` run dir or its
    ``env_model.pt``). Without one, ``imagination="learned"`` first pretrains a model for
    ``pretrain_iterations`` iterations of :class:`EnvModelTrainer` on random-policy data of
    a copy of the env, with a warning, so the agent also runs on its own. The other keyword
    arguments are :class:`~procmem.agents.a2c.A2C`'s.
    """

    def __init__(
        self,
        env: Any,
        eval_env: Any,
        memory: Any,
        curriculum: Any,
        device: torch.device,
        seed: int,
        imagination: str = "learned",
        env_model_run: str | None = None,
        depth: int = 5,
        channels: int = 16,
        hidden: int = 256,
        code_size: int = 64,
        distill_lr: float = 1e-3,
        finetune_env_model: bool = False,
        env_model_lr: float = 1e-4,
        pretrain_iterations: int = 500,
        **a2c_settings: Any,
    ) -> None:
        if not hasattr(env, "reward_vector"):
            raise ValueError("agent=i2a needs a MiniPacman env (env=minipacman)")
        check_imagination(imagination)  # before any env model is pretrained
        if finetune_env_model and imagination != "learned":
            raise ValueError("finetune_env_model needs imagination='learned'")
        self.finetune_env_model = finetune_env_model
        env_model = None
        if imagination == "learned":
            env_model = self._env_model(env, device, seed, env_model_run, pretrain_iterations)
            env_model.requires_grad_(finetune_env_model)

        def network(env: Any) -> I2APolicy:
            return I2APolicy(env, imagination, env_model, depth, channels, hidden, code_size)

        super().__init__(env, eval_env, memory, curriculum, device, seed, network,
                         **a2c_settings)
        self.distill_optimizer = None
        if self.net.rollout_policy is not None:
            self.distill_optimizer = torch.optim.Adam(self.net.rollout_policy.parameters(),
                                                      lr=distill_lr)
        self.env_model_optimizer = None
        if finetune_env_model:
            self.env_model_optimizer = torch.optim.Adam(self.net.model.parameters(),
                                                        lr=env_model_lr)

    @staticmethod
    def _env_model(env: Any, device: torch.device, seed: int, run: str | None,
                   pretrain_iterations: int) -> EnvModel:
        """The env model of ``run``, or one pretrained on random-policy data (warning)."""
        if run is not None:
            return load_env_model(run, device)
        warnings.warn(PRETRAIN_WARNING.format(iterations=pretrain_iterations), stacklevel=3)
        data_env = copy.deepcopy(env)
        trainer = EnvModelTrainer(data_env, data_env, None, None, device, seed + 1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the trainer's own random-policy warning
            for _ in range(pretrain_iterations):
                trainer.train_iteration()
        return trainer.model.eval()

    # --- A2C hooks ----------------------------------------------------------------------------

    def trained_parameters(self) -> list[nn.Parameter]:
        return self.net.agent_parameters()

    def auxiliary_updates(self, steps: Sequence[Mapping[str, Any]]) -> dict[str, float]:
        """Distil the rollout policy from the agent's policy on the update's real frames and,
        with ``finetune_env_model``, train the env model on its real transitions."""
        metrics: dict[str, float] = {}
        if self.distill_optimizer is None:
            return metrics
        frames = torch.cat([step["obs"] for step in steps]).float()
        agent_logits = torch.cat([step["logits"] for step in steps])
        loss = distillation_loss(self.net.rollout_policy(frames), agent_logits)
        check_finite("the distillation loss", loss)
        self.distill_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.distill_optimizer.step()
        metrics["train/loss_distill"] = loss.item()
        if self.env_model_optimizer is not None:
            metrics.update(self._finetune_env_model(frames, steps))
        return metrics

    def _finetune_env_model(self, frames: Tensor, steps: Sequence[Mapping[str, Any]]
                            ) -> dict[str, float]:
        """One Adam step of the env model's loss on the update's real transitions."""
        model = self.net.model
        nexts, masks = zip(*(next_frames_of(step["next_obs"], step["done"], step["info"])
                             for step in steps), strict=True)
        def batch(arrays: Sequence[np.ndarray]) -> Tensor:
            return torch.as_tensor(np.concatenate(arrays), device=self.device)

        actions = torch.cat([step["action"] for step in steps])
        events = batch([step["info"]["events"] for step in steps]).float()
        model.train()
        loss, metrics = model.loss(frames, actions, batch(nexts).float(), events,
                                   batch(masks), self.net.reward_vector)
        check_finite("the env model loss", loss)
        self.env_model_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.env_model_optimizer.step()
        model.eval()
        return {f"train/{key}": value for key, value in metrics.items()}

    # --- checkpoints and artifacts ------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        for name in ("distill_optimizer", "env_model_optimizer"):
            optimizer = getattr(self, name)
            if optimizer is not None:
                state[name] = copy.deepcopy(optimizer.state_dict())
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        for name in ("distill_optimizer", "env_model_optimizer"):
            optimizer = getattr(self, name)
            if optimizer is not None:
                optimizer.load_state_dict(state[name])

    def on_train_end(self, run_dir: Path, logger: MetricLogger) -> None:
        """A2C's plots and episode, and for agents that imagine ``plots/imagination.png``
        (logged as ``media/imagination``): see :meth:`imagined_vs_real`."""
        super().on_train_end(run_dir, logger)
        if self.net.model is None:
            return
        real, imagined = self.imagined_vs_real()
        frames = upscale(to_rgb8(np.concatenate([real, imagined])), 8)
        path = save_strip(frames, Path(run_dir) / "plots" / "imagination.png",
                          columns=len(real))
        logger.log_image("media/imagination", path)

    @torch.no_grad()
    def imagined_vs_real(self) -> tuple[np.ndarray, np.ndarray]:
        """The real frames ``[K, 3, H, W]`` of the first ``K <= depth`` greedy steps of eval
        env 0 (fixed seed; cut where its episode ends) and the frames the env model
        imagines for the same actions, open loop from the first frame."""
        env = self.eval_env
        obs, _ = env.reset(seed=self.seed + 104729)
        imagined_frame = torch.as_tensor(obs[:1], device=self.device).float()
        state = self.net.initial_state(env.num_envs)
        real, imagined = [], []
        for _ in range(self.net.depth):
            logits, _, state = self.net(torch.as_tensor(obs, device=self.device), state)
            action = logits.argmax(1)
            obs, _, terminated, truncated, info = env.step(action.cpu().numpy())
            imagined_frame, _ = self.net.model.predict(imagined_frame, action[:1])
            real.append(info.get("final_obs", obs)[0])
            imagined.append(imagined_frame[0].cpu().numpy())
            if terminated[0] or truncated[0]:
                break
        return np.stack(real), np.stack(imagined)
