"""The status of a live run: ``running`` with a heartbeat renewed from a background thread."""

from __future__ import annotations

import logging
import threading

from procmem.run.run_dir import RunDir
from procmem.run.status import HEARTBEAT_SECONDS, RunStatus

log = logging.getLogger(__name__)


class Heartbeat:
    """Writes this process's ``running`` status into ``run`` (pid, host, start time) and
    renews its heartbeat every ``interval`` seconds until :meth:`end` writes how it ended.

    The first write happens in the constructor, so a dir that cannot be written stops the
    run before it starts. A renewal that fails (a full disk) is retried at the next beat."""

    def __init__(self, run: RunDir, interval: float = HEARTBEAT_SECONDS) -> None:
        self.run = run
        self.status = RunStatus.of_this_process()
        run.write_status(self.status)
        self._lock = threading.Lock()
        self._ended = threading.Event()
        self._thread = threading.Thread(target=self._beat, args=(interval,), daemon=True,
                                        name=f"heartbeat {run.path}")
        self._thread.start()

    def _beat(self, interval: float) -> None:
        while not self._ended.wait(interval):
            with self._lock:
                if self._ended.is_set():
                    return
                try:
                    self.run.write_status(self.status.beat())
                except OSError as error:
                    log.warning("could not renew the heartbeat in %s: %s", self.run.path, error)

    def end(self, status: str, reason: str | None = None, resume: str | None = None) -> None:
        """Stop the heartbeat and record how the run ended."""
        with self._lock:
            self._ended.set()
            self.run.write_status(self.status.ended(status, reason, resume))
        self._thread.join()
