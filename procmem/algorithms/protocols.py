"""What an algorithm must do for the runner, and what it may declare and offer to the rest.

Every algorithm is an :class:`Algorithm`. The rest is optional, and the run directory,
reporters and the app work from it without naming any family:

- ``artifacts`` (a class attribute of :class:`Artifact` s): the files it leaves in its run
  dir for later runs (a skill library, an env model, a policy);
- ``run_inputs`` (a class attribute, constructor argument -> :class:`RunInput`): the
  settings that read another run's artifact, and how to load it from the file;
- ``check_config(run)`` (a classmethod, on any component): its own config rules, given the
  whole run config as plain data, raising :class:`~procmem.settings.SettingError` naming the
  key; ``check_env(env)`` (on a network): whether it reads the built env's observations;
- the data a reporter draws (an episode, imagined frames, tables) or an explanation of its
  evaluation, through the protocols below, which users check with ``isinstance``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from procmem.envs.protocols import CAPABILITIES


@dataclass(frozen=True)
class Artifact:
    """A file an algorithm leaves in its run dir for later runs: ``save(algorithm, path)``
    writes it and returns the path, or ``None`` when the algorithm has nothing to save
    (a skill agent without memory); ``only_with`` names the config group (``memory``)
    without which a run never leaves it."""

    file: str
    save: Callable[[Any, Path], Path | None]
    only_with: str | None = None  # a config group the run must use for it to leave the file


@dataclass(frozen=True)
class RunInput:
    """A constructor argument loaded from another run: the agent ``setting`` that names the
    run (its dir, or the ``artifact`` file itself) and ``load(path, env, device)``, which builds
    the argument from the file. The run must have trained on the same env."""

    setting: str
    artifact: str
    load: Callable[[Path, Any, torch.device], Any]


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
class Tabulator(Protocol):
    """Tables worth a look after training (``media/skills``: the skill library), by metric
    key; rows are dicts of plain values."""

    def tables(self) -> dict[str, list[dict[str, Any]]]: ...


def artifacts_of(cls: type) -> tuple[Artifact, ...]:
    """The artifacts an algorithm class declares (none by default)."""
    return tuple(getattr(cls, "artifacts", ()))


def run_inputs_of(cls: type) -> Mapping[str, RunInput]:
    """The run inputs an algorithm class declares, by constructor argument (none by default)."""
    return dict(getattr(cls, "run_inputs", {}))


def require_env(algorithm: Algorithm, env: Any) -> None:
    """Raise ``ValueError`` when ``env`` lacks a capability the algorithm's class needs
    (``env_needs``)."""
    missing = [CAPABILITIES[need] for need in type(algorithm).env_needs
               if not isinstance(env, need)]
    if missing:
        raise ValueError(f"{type(algorithm).__name__} needs {' and '.join(missing)}; "
                         f"{type(env).__name__} has none")
