"""Imagination-augmented agents (I2A, Weber et al. 2017) for MiniPacman, trained with A2C.

:class:`I2A` is :class:`~procmem.algorithms.a2c.A2C` on an
:class:`~procmem.models.i2a.I2APolicy` (its ``imagination`` picks the agent or one of its
baselines) plus two updates of its own after each A2C step: the rollout policy is distilled
from the agent's policy (the cross-entropy of its action distribution against the agent's,
on the real frames of the update, with its own Adam optimizer), and, with
``finetune_env_model``, the env model takes an Adam step of its own supervised loss on the
update's real transitions. Otherwise the env model is frozen. A2C's loss never reaches
either: the rollout policy's actions are argmax choices and imagined frames are argmax pixel
classes.
"""

from __future__ import annotations

import copy
import itertools
import warnings
from collections.abc import Mapping
from typing import Annotated, Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from procmem.algorithms.a2c import A2C, LearningRate
from procmem.algorithms.env_model_training import (
    ENV_MODEL_KINDS,
    EnvModelTrainer,
    next_frames_of,
)
from procmem.algorithms.evaluation import RECORD_SEED_OFFSET, policy_steps
from procmem.algorithms.protocols import RunInput, require_env
from procmem.algorithms.rollouts import Field
from procmem.envs.protocols import EventRewardEnv, PixelEnv
from procmem.models.env_model import EnvModel
from procmem.models.env_model_file import env_model_kind, load_env_model
from procmem.models.i2a import IMAGINATION, I2APolicy
from procmem.models.state_space_model import StateSpaceModel
from procmem.runtime import check_finite, step_checked
from procmem.settings import AtLeast, OneOf, SettingError, configurable

PRETRAIN_WARNING = (
    "agent=i2a has no env_model_run: pretraining a {model} env model for {iterations} "
    "iterations on random-policy data first (train one with experiment=envmodel_minipacman "
    "agent.model={model} and pass its run dir as agent.env_model_run)"
)


def distillation_loss(rollout_logits: Tensor, agent_logits: Tensor) -> Tensor:
    """Cross-entropy of the rollout policy against the agent's policy (a constant target),
    ``-sum_a pi(a) log pi_hat(a)``, averaged over the batch; it is smallest, the agent
    policy's entropy, where the two distributions agree."""
    target = torch.softmax(agent_logits.detach(), dim=1)
    return -(target * F.log_softmax(rollout_logits, dim=1)).sum(1).mean()


@configurable
class I2A(A2C):
    """A2C on an :class:`~procmem.models.i2a.I2APolicy`, with the rollout policy distilled
    and, optionally, the env model fine-tuned (see the module docstring).

    ``model`` is the kind of env model that imagines (``pixel`` or ``ssm``, the state-space
    model, which imagines in its latent space); the file of ``agent.env_model_run`` must
    hold that kind. ``imagination``, ``depth``, ``channels``, ``hidden`` and ``code_size``
    shape the network;
    the rollout policy is distilled with Adam at ``distill_lr`` and a fine-tuned env model
    trains at ``env_model_lr``. ``env_model`` is the trained model that imagines (the app
    loads it from ``agent.env_model_run``). Without one, ``imagination="learned"`` first
    pretrains a model for ``pretrain_iterations`` iterations of
    :class:`~procmem.algorithms.env_model_training.EnvModelTrainer` on random-policy data of
    a copy of the env, with a warning, so the agent also runs on its own. The A2C settings
    are :class:`~procmem.algorithms.a2c.A2C`'s (the tutorial's by default).
    """

    env_needs = (PixelEnv, EventRewardEnv)
    # A2C's settings for skills as options: I2A carries no memory
    withheld_settings = ("skill_kind", "skill_step_budget", "skill_features")
    artifacts = ()  # its network reads imagined rollouts: no policy for other runs
    run_inputs = {"env_model": RunInput("env_model_run", "env_model.pt",
                                        lambda path, env, device: load_env_model(path, device))}

    def __init__(
        self,
        env: EventRewardEnv,
        eval_env: EventRewardEnv,
        device: torch.device,
        seed: int,
        env_model: EnvModel | None = None,
        *,
        imagination: Annotated[str, OneOf(IMAGINATION)] = "learned",
        model: Annotated[str, OneOf(ENV_MODEL_KINDS)] = "pixel",
        depth: Annotated[int, AtLeast(1)] = 5,
        channels: Annotated[int, AtLeast(1)] = 16,
        hidden: Annotated[int, AtLeast(1)] = 256,
        code_size: Annotated[int, AtLeast(1)] = 64,
        distill_lr: LearningRate = 1e-3,
        finetune_env_model: bool = False,
        env_model_lr: LearningRate = 1e-4,
        pretrain_iterations: Annotated[int, AtLeast(1)] = 500,
        **a2c_settings: Any,
    ) -> None:
        require_env(self, env)
        if finetune_env_model and imagination != "learned":
            raise SettingError("finetune_env_model", "needs imagination=learned")
        self.finetune_env_model = finetune_env_model
        if imagination != "learned":
            env_model = None
        elif env_model is None:
            env_model = self._pretrained_env_model(env, device, seed, model,
                                                   pretrain_iterations)
        elif (kind := env_model_kind(env_model)) != model:
            raise SettingError("env_model_run", (
                f"holds an env model of kind {kind}, not the {model} model agent.model={model} "
                f"asks for: set agent.model={kind}, or name a run of agent=env_model "
                f"agent.model={model}"))
        if env_model is not None:
            env_model.requires_grad_(finetune_env_model)

        def network(env: Any) -> I2APolicy:
            return I2APolicy(env, imagination, env_model, depth, channels, hidden, code_size)

        super().__init__(env, eval_env, device, seed, network, **a2c_settings)
        self.distill_optimizer = None
        if self.net.rollout_policy is not None:
            self.distill_optimizer = torch.optim.Adam(self.net.rollout_policy.parameters(),
                                                      lr=distill_lr)
        self.env_model_optimizer = None
        if finetune_env_model:
            self.env_model_optimizer = torch.optim.Adam(self.net.model.parameters(),
                                                        lr=env_model_lr)

    @staticmethod
    def _pretrained_env_model(env: Any, device: torch.device, seed: int, model: str,
                              pretrain_iterations: int) -> EnvModel | StateSpaceModel:
        """An env model of kind ``model`` pretrained on random-policy data of a copy of
        ``env`` (warning)."""
        warnings.warn(PRETRAIN_WARNING.format(iterations=pretrain_iterations, model=model),
                      stacklevel=4)
        data_env = copy.deepcopy(env)
        trainer = EnvModelTrainer(data_env, data_env, device, seed + 1, model=model)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the trainer's own random-policy warning
            for _ in range(pretrain_iterations):
                trainer.train_iteration()
        return trainer.env_model.eval()

    # --- A2C hooks ----------------------------------------------------------------------------

    def trained_parameters(self) -> list[nn.Parameter]:
        return self.net.agent_parameters()

    def rollout_fields(self) -> dict[str, Field]:
        """A2C's fields, the real frames ``obs`` and the agent's ``logits`` that distillation
        reads, and with ``finetune_env_model`` the rest of each step's env-model transition:
        ``action``, ``next_frames``, ``events`` and ``mask`` (see
        :func:`~procmem.algorithms.env_model_training.next_frames_of`)."""
        fields = super().rollout_fields()
        frame = Field(tuple(self.env.obs_shape), self.env.single_observation_space.dtype)
        if self.net.rollout_policy is not None:
            fields |= {"obs": frame, "logits": Field((self.env.num_actions,), np.float32)}
        if self.finetune_env_model:
            fields |= {"action": Field((), np.int64), "next_frames": frame,
                       "events": Field((len(self.env.event_names),), np.float32),
                       "mask": Field((), np.bool_)}
        return fields

    def step_fields(self, obs: Tensor, action: Tensor, logits: Tensor, next_obs: np.ndarray,
                    done: np.ndarray, info: dict[str, Any]) -> dict[str, Any]:
        fields: dict[str, Any] = {}
        if self.net.rollout_policy is not None:
            fields |= {"obs": obs, "logits": logits}
        if self.finetune_env_model:
            next_frames, mask = next_frames_of(next_obs, done, info)
            fields |= {"action": action, "next_frames": next_frames, "events": info["events"],
                       "mask": mask}
        return fields

    def auxiliary_updates(self) -> dict[str, float]:
        """Distil the rollout policy from the agent's policy on the update's real frames and,
        with ``finetune_env_model``, train the env model on its real transitions."""
        metrics: dict[str, float] = {}
        if self.distill_optimizer is None:
            return metrics
        frames = self.rollout.get("obs").float()
        loss = distillation_loss(self.net.rollout_policy_logits(frames),
                                 self.rollout.get("logits"))
        check_finite("the distillation loss", loss)
        self.distill_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        step_checked(self.distill_optimizer, "distillation")
        metrics["train/loss_distill"] = loss.item()
        if self.env_model_optimizer is not None:
            metrics.update(self._finetune_env_model(frames))
        return metrics

    def _finetune_env_model(self, frames: Tensor) -> dict[str, float]:
        """One Adam step of the env model's loss on the update's real transitions."""
        model, rollout = self.net.model, self.rollout
        model.train()
        loss, metrics = model.loss(frames, *(rollout.get(name) for name in (
            "action", "next_frames", "events", "mask")), self.net.reward_vector)
        check_finite("the env model loss", loss)
        self.env_model_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        step_checked(self.env_model_optimizer, "env model")
        model.eval()
        return metrics

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

    @torch.no_grad()
    def imagined_vs_real(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The real frames ``[K, 3, H, W]`` of the first ``K <= depth`` greedy steps of eval
        env 0 (fixed seed; cut where its episode ends) and the frames the env model
        imagines for the same actions, open loop from the first frame; ``None`` for the
        standard agent, which imagines nothing."""
        if self.net.model is None:
            return None
        seed = self.seed + RECORD_SEED_OFFSET
        obs, _ = self.eval_env.reset(seed=seed)
        first = torch.as_tensor(obs[:1], device=self.device).float()
        real, actions = [], []
        steps = policy_steps(self.eval_env, self.net, self.device, obs, seed)
        for step in itertools.islice(steps, self.net.depth):
            actions.append(int(step.action[0]))
            ended = step.terminated[0] or step.truncated[0]
            real.append(step.info["final_obs"][0] if ended else step.next_obs[0])
            if ended:
                break
        imagined = self.net.model.open_loop_frames(
            first, torch.as_tensor([actions], device=self.device))  # decoded for the picture
        return np.stack(real), imagined[:, 0].cpu().numpy()
