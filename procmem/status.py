"""A run's ``status.json``: whether it is running, finished or failed (and why).

``train`` writes ``running`` when it starts and ``finished`` or ``failed`` when it stops, so
reports can tell a failed or killed job from a finished one. A run killed without a chance to
write (SIGKILL, a lost node) stays ``running``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from procmem.io import atomic_write_json

STATUS_FILE = "status.json"
RUNNING, FINISHED, FAILED = STATUSES = ("running", "finished", "failed")


@dataclass(frozen=True)
class RunStatus:
    """What ``status.json`` says; ``error`` is the failure's one-line message."""

    status: str
    error: str | None = None


def write_status(run_dir: str | Path, status: str, error: str | None = None) -> Path:
    """Record ``status`` (and for a failure its ``error``) in ``<run_dir>/status.json``."""
    if status not in STATUSES:
        raise ValueError(f"status must be one of {', '.join(STATUSES)}; got {status!r}")
    return atomic_write_json(Path(run_dir) / STATUS_FILE, {"status": status, "error": error})


def read_status(run_dir: str | Path) -> RunStatus | None:
    """The run's status, or ``None`` for a run dir without ``status.json``."""
    path = Path(run_dir) / STATUS_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        status = RunStatus(data["status"], data.get("error"))
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise ValueError(f"{path}: not a run status file ({error})") from error
    if status.status not in STATUSES:
        raise ValueError(f"{path}: unknown status {status.status!r}")
    return status


def describe_error(error: BaseException) -> str:
    """One line for a failure: the exception's type and first message line."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
