"""What an algorithm must do for the runner, and what it may offer reporters and evaluation.

Every algorithm is an :class:`Algorithm`. The others are optional: an algorithm that offers
the data a reporter draws (an episode, imagined frames, its skills, a trained env model) or
that can explain its evaluation implements the matching protocol, and users check with
``isinstance``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import numpy as np

from procmem.envs.protocols import CAPABILITIES
from procmem.models.env_model import EnvModel
from procmem.skills.library import SkillLibrary


@runtime_checkable
class Algorithm(Protocol):
    """What the runner needs from a learning algorithm.

    ``env_needs`` (on the class) names the capabilities its env must offer, protocols of
    :mod:`procmem.envs.protocols` (an empty tuple: any env with discrete actions); the app
    checks them before anything is built.
    """

    env_needs: tuple[type, ...]

    def train_iteration(self) -> dict[str, float]:
        """Run one iteration (the algorithm's unit: an episode, an update) -> metrics."""

    def evaluate(self, episodes: int) -> dict[str, float]:
        """Evaluate without changing what was learned -> metrics."""

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs to continue identically."""

    def load_state_dict(self, state: Mapping[str, Any]) -> None: ...


@runtime_checkable
class Explainer(Protocol):
    """Spells out a few evaluation episodes (``evaluate.py run=`` prints them)."""

    def explain(self, per_stage: int) -> list[dict[str, Any]]: ...


@runtime_checkable
class EpisodeRecorder(Protocol):
    """Records one greedy episode as frames ``[T, 3, H, W]``, or ``None`` where its env's
    observations are not images."""

    def record_episode(self, max_frames: int = 300) -> np.ndarray | None: ...


@runtime_checkable
class Imaginer(Protocol):
    """Real frames and the frames it imagines for the same actions, or ``None`` when it
    imagines nothing."""

    def imagined_vs_real(self) -> tuple[np.ndarray, np.ndarray] | None: ...


@runtime_checkable
class SkillLearner(Protocol):
    """Keeps its skills in a skill library (``None`` when it runs without memory)."""

    memory: SkillLibrary | None


@runtime_checkable
class EnvModelLearner(Protocol):
    """Trains an environment model that other runs load (I2A)."""

    env_model: EnvModel


def require_env(algorithm: Algorithm, env: Any) -> None:
    """Raise ``ValueError`` when ``env`` lacks a capability the algorithm's class needs
    (``env_needs``)."""
    missing = [CAPABILITIES[need] for need in type(algorithm).env_needs
               if not isinstance(env, need)]
    if missing:
        raise ValueError(f"{type(algorithm).__name__} needs {' and '.join(missing)}; "
                         f"{type(env).__name__} has none")
