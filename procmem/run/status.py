"""A run's status: running, finished, failed or stopped, and whether a running one is alive.

``train`` records ``running`` when a run starts, with the process's pid and host, and a
background thread renews its ``heartbeat`` every :data:`HEARTBEAT_SECONDS`. The run ends
``finished``; ``failed`` with the error's first line as ``reason``; or ``stopped`` by a
signal, with the ``resume`` command that continues it. A run killed without a chance to write
(SIGKILL, a lost node) keeps saying ``running``: :meth:`RunStatus.alive` tells it from a live
one by its pid (on the same host) or the age of its heartbeat (from another host).
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import asdict, dataclass, replace
from typing import Any

RUNNING, FINISHED, FAILED, STOPPED = STATUSES = ("running", "finished", "failed", "stopped")
HEARTBEAT_SECONDS = 10.0
# A heartbeat older than this says the run is dead: its process stopped renewing it.
STALE_SECONDS = 6 * HEARTBEAT_SECONDS


@dataclass(frozen=True)
class RunStatus:
    """What ``status.json`` says: the status, why the run failed or stopped (``reason``), the
    command that resumes a stopped run, and who runs it (pid, host, start and heartbeat
    times in seconds since the epoch)."""

    status: str
    reason: str | None = None
    resume: str | None = None
    pid: int | None = None
    host: str | None = None
    started: float | None = None
    heartbeat: float | None = None

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"unknown status {self.status!r} (one of: {', '.join(STATUSES)})")

    @classmethod
    def of_this_process(cls) -> RunStatus:
        """``running`` in this process, with a fresh heartbeat."""
        now = time.time()
        return cls(RUNNING, pid=os.getpid(), host=socket.gethostname(), started=now,
                   heartbeat=now)

    def beat(self) -> RunStatus:
        return replace(self, heartbeat=time.time())

    def ended(self, status: str, reason: str | None = None, resume: str | None = None
              ) -> RunStatus:
        """This run's status once it has ended (its pid and host kept for the record)."""
        return replace(self, status=status, reason=reason, resume=resume, heartbeat=time.time())

    def alive(self, now: float | None = None) -> bool:
        """Whether a ``running`` run still has its process: on this host, its pid is alive
        and its heartbeat fresh; from another host, its heartbeat is fresh. A status without
        a heartbeat (written before there was one) counts as dead."""
        if self.status != RUNNING or self.heartbeat is None:
            return False
        fresh = (time.time() if now is None else now) - self.heartbeat < STALE_SECONDS
        if self.host == socket.gethostname() and self.pid is not None:
            return fresh and _pid_alive(self.pid)
        return fresh

    def describe(self) -> str:
        """One line: ``failed (<reason>)``, ``stopped (<reason>)``, ``running (pid 12 on
        node3)``, or ``died (no heartbeat since ...)``."""
        if self.status in (FAILED, STOPPED):
            return f"{self.status} ({self.reason})"
        if self.status == RUNNING:
            if self.alive():
                return f"running (pid {self.pid} on {self.host})"
            if self.heartbeat is None:
                return "running, or killed before it could finish"
            since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.heartbeat))
            return f"died (pid {self.pid} on {self.host}; no heartbeat since {since})"
        return self.status

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunStatus:
        """Read ``status.json``; files written before ``reason`` named it ``error``."""
        fields = {key: data.get(key) for key in cls.__dataclass_fields__ if key != "status"}
        fields["reason"] = data.get("reason", data.get("error"))
        return cls(data["status"], **fields)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    return True


def describe_error(error: BaseException) -> str:
    """One line for a failure: the exception's type and first message line."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
