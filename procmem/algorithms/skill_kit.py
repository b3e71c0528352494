"""A skill library with what turns episodes into its skills and runs them, for any learner.

:class:`SkillKit` holds the library, the situation keys its subgoal skills are stored under
(:class:`~procmem.skills.features.SituationEmbedding`) and, for closed-loop skills, the
subgoal policies cloned from the skills' demonstrations. The skill-library agent and A2C
with skills as options (:mod:`procmem.algorithms.skill_options`) both learn through it.

A kit is saved as two files in a run dir: ``skills.json`` (the library) and
``skill_policies.pt`` (the key settings, the env they were learnt on and the policies'
weights), and ``memory.load=<run dir or skills.json>`` starts another run from them
(:func:`check_saved_kit` checks them before anything is built).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch

from procmem.envs.keydoor import FLAG_NAMES, FLAGS, SUBGOALS
from procmem.io import atomic_torch_save
from procmem.models.skill_policies import SubgoalPolicies
from procmem.safe_load import load_data_file
from procmem.settings import Above, AtLeast, OneOf, SettingError
from procmem.skills.features import POLICY_FEATURE_KINDS, SituationEmbedding
from procmem.skills.library import SkillLibrary, library_file
from procmem.skills.segments import subgoal_segments

POLICIES_FILE = "skill_policies.pt"
POLICIES_FORMAT_VERSION = 1
SKILL_KINDS = ("open_loop", "closed_loop")
EVENTS = tuple(subgoal.event for subgoal in SUBGOALS)
SUBGOAL_OF_NAME = {subgoal.name: index for index, subgoal in enumerate(SUBGOALS)}

# Settings of the subgoal policies, declared once for every agent that clones them.
KeyLengthscale = Annotated[float, Above(0.0)]
Hidden = Annotated[int, AtLeast(1)]
CloningRate = Annotated[float, Above(0.0)]
CloningSteps = Annotated[int, AtLeast(1)]
CloningBatch = Annotated[int, AtLeast(1)]
DemoBuffer = Annotated[int, AtLeast(1)]
SkillFeatures = Annotated[str, OneOf(POLICY_FEATURE_KINDS)]
POLICY_DEFAULTS = {"key_lengthscale": 0.5, "bc_hidden": 64, "bc_lr": 3e-3, "bc_steps": 20,
                   "bc_batch_size": 256, "bc_buffer_size": 4000}


def preconditions(obs_row: np.ndarray) -> dict[str, bool]:
    """The state flags of one observation, as a skill's preconditions."""
    return {name: bool(obs_row[column]) for name, column in zip(FLAG_NAMES, FLAGS, strict=True)}


def library_metrics(memory: SkillLibrary) -> dict[str, float]:
    """The library's ``memory/...`` statistics, and the size of a loaded library when it
    started (``memory/loaded_skills``)."""
    metrics = {f"memory/{key}": float(value) for key, value in memory.stats().items()}
    if memory.loaded_from is not None:
        metrics["memory/loaded_skills"] = float(memory.loaded_skills)
    return metrics


class SkillKit:
    """``memory`` with its situation keys and, with ``closed_loop``, one cloned policy per
    subgoal (``bc_*``: hidden units, learning rate, steps, batch, buffer) reading
    ``skill_features`` of its target.

    :meth:`learn_episode` cuts an episode into subgoal segments, adds each to the library
    and to its subgoal's demonstrations; a frozen library (``memory.frozen``) learns
    nothing, neither skills nor policies. A library loaded from another run
    (``memory.loaded_from``) brings its keys' seed and lengthscale, its policies and the
    features they read from the ``skill_policies.pt`` beside it, so its keys and policies
    mean what they meant there.
    """

    def __init__(self, memory: SkillLibrary, env: Any, device: torch.device, seed: int, *,
                 closed_loop: bool, key_lengthscale: float, bc_hidden: int, bc_lr: float,
                 bc_steps: int, bc_batch_size: int, bc_buffer_size: int,
                 skill_features: str = "offset") -> None:
        self.memory = memory
        self.env_target = f"{type(env).__module__}.{type(env).__qualname__}"
        self.num_actions = env.num_actions
        saved = None if memory.loaded_from is None else read_policies(memory.loaded_from)
        if saved is not None:
            seed, key_lengthscale = saved["key_seed"], saved["key_lengthscale"]
            bc_hidden, skill_features = saved["hidden"], saved["features"]
            if saved["num_actions"] != env.num_actions:
                raise ValueError(f"{saved['path']}: its policies act with "
                                 f"{saved['num_actions']} actions; this env has "
                                 f"{env.num_actions}")
        self.key_seed, self.key_lengthscale = seed, key_lengthscale
        self.embed = SituationEmbedding(memory.embedding_dim, seed, device, key_lengthscale)
        self.policies = (SubgoalPolicies(env.num_actions, device, seed, bc_hidden, bc_lr,
                                         bc_buffer_size, bc_steps, bc_batch_size,
                                         skill_features)
                         if closed_loop else None)
        self.skill_features = skill_features
        self.hidden = bc_hidden
        if saved is not None and self.policies is not None:
            if saved["policies"] is None:
                raise ValueError(f"{saved['path']}: it holds no subgoal policies (its run "
                                 "used open-loop skills); set agent.skill_kind=open_loop")
            self.policies.nets.load_state_dict(saved["policies"])
            self.policies.loaded = {SUBGOAL_OF_NAME[name] for name in memory.names()}

    @property
    def frozen(self) -> bool:
        return self.memory.frozen

    def ready(self) -> np.ndarray:
        """Which subgoals' skills can run now ``[S]``: all open-loop ones; closed-loop ones
        once their policy has demonstrations (or was loaded)."""
        if self.policies is None:
            return np.ones(len(SUBGOALS), dtype=bool)
        return np.array([self.policies.trained(s) for s in range(len(SUBGOALS))])

    def learn_episode(self, obs: np.ndarray, actions: np.ndarray, events: np.ndarray) -> None:
        """Add the subgoal segments of one episode: ``obs`` its ``T + 1`` observations (the
        last terminal), ``actions`` its ``T`` actions, ``events`` ``[T, len(EVENTS)]``."""
        if self.frozen:
            return
        fired = {name: events[:, k] for k, name in enumerate(EVENTS)}
        for segment in subgoal_segments(obs, actions, fired):
            subgoal = np.array([SUBGOAL_OF_NAME[segment.subgoal.name]])
            self.memory.add(segment.subgoal.name, segment.actions.tolist(),
                            preconditions(segment.obs[0]), self.embed(segment.obs[:1], subgoal)[0])
            if self.policies is not None:
                self.policies.add(segment)

    def train_policies(self) -> dict[str, float]:
        """Clone the subgoals that got demonstrations since the last call (none when frozen)."""
        if self.policies is None or self.frozen:
            return {}
        return self.policies.train()

    def save_policies(self, path: Path) -> Path:
        """Write ``skill_policies.pt``: the key settings, the env and the policies."""
        return atomic_torch_save({
            "format_version": POLICIES_FORMAT_VERSION,
            "env": self.env_target,
            "num_actions": self.num_actions,
            "key_seed": self.key_seed,
            "key_lengthscale": self.key_lengthscale,
            "embedding_dim": self.memory.embedding_dim,
            "hidden": self.hidden,
            "features": self.skill_features,
            "policies": None if self.policies is None else self.policies.nets.state_dict(),
        }, path)

    def state_dict(self) -> dict[str, Any] | None:
        return None if self.policies is None else self.policies.state_dict()

    def load_state_dict(self, state: Mapping[str, Any] | None) -> None:
        if self.policies is not None:
            self.policies.load_state_dict(state)


def read_policies(library: Path) -> dict[str, Any]:
    """The ``skill_policies.pt`` beside the library file ``library``, checked; ``ValueError``
    naming the file for a missing, damaged or malformed one."""
    path = library.parent / POLICIES_FILE
    if not path.is_file():
        raise ValueError(f"{library}: no {POLICIES_FILE} beside it (the keys' settings and "
                         "the subgoal policies are saved there)")
    try:
        saved = load_data_file(path)
        if saved["format_version"] != POLICIES_FORMAT_VERSION:
            raise ValueError(f"unsupported format_version {saved['format_version']!r}")
        if saved["features"] not in POLICY_FEATURE_KINDS:
            raise ValueError(f"features: {saved['features']!r} is not one of "
                             f"{', '.join(POLICY_FEATURE_KINDS)}")
        for key, kind in (("env", str), ("num_actions", int), ("key_seed", int),
                          ("key_lengthscale", float), ("embedding_dim", int), ("hidden", int),
                          ("features", str)):
            if not isinstance(saved[key], kind):
                raise ValueError(f"{key}: {saved[key]!r} is not a {kind.__name__}")
    except Exception as error:  # a damaged file: whatever torch or the checks raise
        raise ValueError(f"{path}: unreadable ({type(error).__name__}: {error})") from None
    return {**saved, "path": path}


def check_saved_kit(run: Mapping[str, Any], skill_kind: str) -> None:
    """Refuse a ``memory.load`` whose skills cannot serve this run: a damaged library or
    policies file, skills of another subgoal set, keys of another embedding size, another
    env, or open-loop skills where closed-loop ones are asked for. Raises
    :class:`~procmem.settings.SettingError` naming ``memory.load``."""
    memory = run.get("memory") or {}
    if not memory.get("load"):
        return
    try:
        path = library_file(memory["load"])
        other = sorted(set(SkillLibrary.load(path).names()) - set(SUBGOAL_OF_NAME))
        if other:
            raise ValueError(f"{path}: skills of another subgoal set ({other[0]}; this "
                             f"agent's are {', '.join(SUBGOAL_OF_NAME)})")
        saved = read_policies(path)
    except (ValueError, FileNotFoundError) as error:
        raise SettingError("memory.load", str(error)) from None
    if saved["embedding_dim"] != memory.get("embedding_dim", saved["embedding_dim"]):
        raise SettingError("memory.load", f"{path}: keys of size {saved['embedding_dim']}; "
                                          f"memory.embedding_dim is {memory['embedding_dim']}")
    if saved["env"] != run["env"]["_target_"]:
        raise SettingError("memory.load", f"{path}: learnt on {saved['env']}; this run's env "
                                          f"is {run['env']['_target_']}")
    if skill_kind == "closed_loop" and saved["policies"] is None:
        raise SettingError("memory.load", f"{path}: open-loop skills, no subgoal policies; "
                                          "set agent.skill_kind=open_loop")
