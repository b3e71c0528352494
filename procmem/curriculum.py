"""Curricula: which stage of a task family an algorithm trains on."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class FixedCurriculum:
    """Always the same stage (``curriculum=none``)."""

    def __init__(self, stage: int = 0) -> None:
        if stage < 0:
            raise ValueError(f"stage must be >= 0, got {stage}")
        self.stage = stage

    def update(self, iteration: int, eval_metrics: Mapping[str, float]) -> None:
        """Nothing to advance."""

    def metrics(self) -> dict[str, float]:
        return {"curriculum/stage": float(self.stage)}

    def state_dict(self) -> dict[str, Any]:
        return {"stage": self.stage}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.stage = int(state["stage"])
