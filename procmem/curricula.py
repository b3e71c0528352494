"""Curricula: which stages of a staged task family an algorithm trains on.

Stages are numbered from 0 (the easiest). Every curriculum has:

- ``stage: int``: the newest stage being trained;
- ``sample(n, rng) -> np.ndarray``: the stages (int64, shape ``(n,)``) of ``n`` new
  training problems; an env plugs this in as its stage sampler;
- ``on_iteration(iteration, total)``: called by the runner before every training iteration
  (1-based, ``total = trainer.iterations``), so a schedule can follow the run length;
- ``update(iteration, eval_metrics)``: called by the runner after every evaluation;
- ``metrics() -> dict``: ``curriculum/stage`` and whatever else the curriculum reports,
  logged with the evaluation metrics;
- ``state_dict()`` / ``load_state_dict(state)``: all a resumed run needs to continue
  identically.

The app plugs ``sample`` into envs with stages (:class:`~procmem.envs.protocols.StagedEnv`)
and the runner calls the hooks. Without a curriculum (``curriculum=none``) an env draws its
problems uniformly from its own ``stages``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Protocol, runtime_checkable

import numpy as np

from procmem.settings import AtLeast, AtMost, Below, Contains, Each, NonEmpty, configurable


def _constant(n: int, stage: int) -> np.ndarray:
    return np.full(n, stage, dtype=np.int64)


@configurable
class FixedCurriculum:
    """Always the same ``stage``."""

    def __init__(self, *, stage: Annotated[int, AtLeast(0)] = 0) -> None:
        self.stage = stage

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Every problem is of the current stage."""
        return _constant(n, self.stage)

    def on_iteration(self, iteration: int, total: int) -> None:
        """Nothing to schedule."""

    def update(self, iteration: int, eval_metrics: Mapping[str, float]) -> None:
        """Nothing to advance."""

    def metrics(self) -> dict[str, float]:
        return {"curriculum/stage": float(self.stage)}

    def state_dict(self) -> dict[str, Any]:
        return {"stage": self.stage}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.stage = int(state["stage"])


@configurable
class StagedCurriculum(FixedCurriculum):
    """A fixed stage schedule stretched over the run (``curriculum=staged``).

    At iteration ``i`` of ``total`` the stage is ``schedule[(i - 1) * len(schedule) // total]``:
    with ``[0, 0, 0, 1, 1, 2]`` and 60 iterations, stage 0 for 1..30, 1 for 31..50 and 2 for
    51..60. Only the current stage is trained, as in the original system.
    """

    def __init__(
        self,
        *,
        schedule: Annotated[Sequence[int], NonEmpty(), Each(AtLeast(0))] = (0, 0, 0, 1, 1, 2),
    ) -> None:
        super().__init__(stage=schedule[0])
        self.schedule = [int(stage) for stage in schedule]

    def on_iteration(self, iteration: int, total: int) -> None:
        """Move to the scheduled stage of ``iteration`` (in ``1..total``)."""
        if not 1 <= iteration <= total:
            raise ValueError(f"iteration must be in [1, {total}], got {iteration}")
        self.stage = self.schedule[(iteration - 1) * len(self.schedule) // total]

    def metrics(self) -> dict[str, float]:
        return {**super().metrics(), "curriculum/replay_share": 0.0}


@configurable
class AdaptiveCurriculum:
    """Advance when the current stage is solved; keep replaying the earlier ones
    (``curriculum=adaptive``).

    After an evaluation, the stage advances by one (never beyond ``num_stages - 1``) when
    ``eval_metrics[metric.format(stage=stage)]`` is at least ``threshold``; when that metric is
    missing, nothing changes. A new problem is of the current stage with probability
    ``1 - replay`` and of a uniformly drawn earlier stage otherwise (stage 0 has none).
    """

    def __init__(
        self,
        *,
        num_stages: Annotated[int, AtLeast(1)] = 3,
        threshold: Annotated[float, AtLeast(0.0), AtMost(1.0)] = 0.99,
        replay: Annotated[float, AtLeast(0.0), Below(1.0)] = 0.3,
        metric: Annotated[str, Contains("{stage}")] = "eval/success_rate_stage{stage}",
    ) -> None:
        self.num_stages = num_stages
        self.threshold = threshold
        self.replay = replay
        self.metric = metric
        self.stage = 0

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """The current stage, or with probability ``replay`` a uniformly drawn earlier one."""
        stages = _constant(n, self.stage)
        if self.stage > 0 and self.replay > 0:
            replayed = rng.random(n) < self.replay
            stages[replayed] = rng.integers(0, self.stage, size=int(replayed.sum()))
        return stages

    def on_iteration(self, iteration: int, total: int) -> None:
        """Nothing to schedule: only evaluations move the stage."""

    def update(self, iteration: int, eval_metrics: Mapping[str, float]) -> None:
        """Advance one stage when the current one's metric reaches ``threshold``."""
        value = eval_metrics.get(self.metric.format(stage=self.stage))
        if value is not None and value >= self.threshold and self.stage < self.num_stages - 1:
            self.stage += 1

    def metrics(self) -> dict[str, float]:
        """The stage and the expected share of new problems drawn from earlier stages."""
        replay_share = self.replay if self.stage > 0 else 0.0
        return {"curriculum/stage": float(self.stage), "curriculum/replay_share": replay_share}

    def state_dict(self) -> dict[str, Any]:
        return {"stage": self.stage}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.stage = int(state["stage"])


@runtime_checkable
class Curriculum(Protocol):
    """What the runner and the app need from a curriculum (see the module docstring)."""

    stage: int

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray: ...

    def on_iteration(self, iteration: int, total: int) -> None: ...

    def update(self, iteration: int, eval_metrics: Mapping[str, float]) -> None: ...

    def metrics(self) -> dict[str, float]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None: ...
