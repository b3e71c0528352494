"""What a run tells its user: the same lines on the console and in its ``train.log``.

Library code logs to loggers under ``procmem``. ``train.py`` shows them on the console
(``conf/hydra/job_logging/procmem.yaml`` puts a :class:`ConsoleHandler` on ``procmem``), and
:func:`run_log` copies them into the run's ``train.log`` while the run trains.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tqdm.auto import tqdm

LOGGER = "procmem"


class ConsoleHandler(logging.Handler):
    """Writes each line to stdout through tqdm, so a progress bar stays whole."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=sys.stdout)
        except Exception:  # noqa: BLE001 - logging's contract: report, never raise
            self.handleError(record)


@contextmanager
def run_log(path: str | Path) -> Iterator[logging.Logger]:
    """While entered, append what ``procmem`` loggers say at INFO and above to ``path``,
    each line stamped with its time."""
    logger = logging.getLogger(LOGGER)
    handler = logging.FileHandler(path, mode="a", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S"))
    handler.setLevel(logging.INFO)
    level = logger.level
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        yield logger
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        handler.close()
