"""Stop signals: SIGTERM (a scheduler's preemption) and SIGINT (Ctrl-C) stop a run cleanly."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType, TracebackType

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class RunStopped(Exception):
    """A run stopped by ``signum``; ``exit_code`` is the shell's convention, 128 + signum
    (143 for SIGTERM, 130 for SIGINT)."""

    def __init__(self, signum: int, iteration: int | None = None) -> None:
        self.signum = signum
        self.iteration = iteration
        where = "" if iteration is None else f" after iteration {iteration}"
        super().__init__(f"{self.signal_name}{where}")

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class StopSignals:
    """While entered (in the main thread), SIGTERM and SIGINT stop the run.

    Inside :meth:`deferred` (the training loop) the first signal only sets ``requested``, so
    the loop can finish its iteration and save a checkpoint; outside it, or at a second
    signal, :class:`RunStopped` is raised at once. The previous handlers come back on exit.
    Off the main thread, where Python cannot handle signals, it does nothing."""

    def __init__(self) -> None:
        self.requested: int | None = None
        self._deferring = False
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in STOP_SIGNALS}
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]
        self._previous = {}

    @contextmanager
    def deferred(self) -> Iterator[None]:
        self._deferring = True
        try:
            yield
        finally:
            self._deferring = False

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self._deferring and self.requested is None:
            self.requested = signum
            return
        raise RunStopped(signum)
