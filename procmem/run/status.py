"""A run's status: whether it is running, finished or failed (and why).

``train`` records ``running`` when it starts and ``finished`` or ``failed`` when it stops, so
reports can tell a failed or killed job from a finished one (the run directory keeps it in
``status.json``). A run killed without a chance to write (SIGKILL, a lost node) stays
``running``.
"""

from __future__ import annotations

from dataclasses import dataclass

RUNNING, FINISHED, FAILED = STATUSES = ("running", "finished", "failed")


@dataclass(frozen=True)
class RunStatus:
    """A run's status; ``error`` is the failure's one-line message."""

    status: str
    error: str | None = None

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"unknown status {self.status!r} (one of: {', '.join(STATUSES)})")


def describe_error(error: BaseException) -> str:
    """One line for a failure: the exception's type and first message line."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
