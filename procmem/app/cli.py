"""What ``train.py`` and ``evaluate.py`` share: one line and an exit code for every error a
user can cause, and no file left behind by a command Hydra refused.

Exit codes: 2 a bad command, config or dir; 3 training diverged; 4 a run's files cannot be
read; 74 a file cannot be written; 130 and 143 a run stopped by SIGINT or SIGTERM; 1 a job of a
multirun failed. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.errors import CompactHydraException, ConfigCompositionException, HydraException
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, open_dict, read_write
from omegaconf.errors import OmegaConfBaseException

from procmem.app.catalogue import ConfigError
from procmem.run.callbacks import CallbackError
from procmem.run.checkpoint import CheckpointError
from procmem.run.lock import RunDirLocked
from procmem.run.loggers import MetricsFileError
from procmem.run.run_dir import SWEEP_MARKER, RunDirError
from procmem.runtime import NonFiniteError

# (error type, what the line starts with, exit code); the first that matches applies.
KNOWN_FAILURES: tuple[tuple[type[BaseException], str, int], ...] = (
    (ConfigError, "config error", 2),
    (RunDirError, "run dir error", 2),
    (RunDirLocked, "run dir error", 2),
    (NonFiniteError, "training stopped", 3),
    (CheckpointError, "checkpoint error", 4),
    (CallbackError, "callback error", 70),
    (MetricsFileError, "metrics error", 4),
    (OSError, "file error", 74),
)


class JobFailed(CompactHydraException):
    """A multirun job stopped by a known failure. Hydra marks the job failed and runs the
    others; at the end the first such line is printed and the exit code is 1."""


def known_failure(error: BaseException) -> tuple[str, int] | None:
    """The one line and exit code for an error a user can cause; ``None`` for a bug."""
    for kind, prefix, code in KNOWN_FAILURES:
        if isinstance(error, kind):
            return f"{prefix}: {one_line(str(error))}", code
    return None


def one_line(text: str) -> str:
    """A multi-line message on one line: sentences joined by a space, other lines by ``; ``,
    and the items listed after a line ending in ``:`` by commas."""
    out = ""
    listing = False
    for line in (line.strip() for line in text.strip().splitlines()):
        if not line:
            continue
        if not out:
            out = line
        elif listing:
            out += (" " if out.endswith(":") else ", ") + line
        else:
            out += (" " if out.endswith(".") else "; ") + line
        listing = listing or line.endswith(":")
    return out


def run_hydra_main(main: Callable[[], Any]) -> None:
    """Run a ``@hydra.main`` function so that what Hydra itself refuses (an override it
    cannot apply, an unknown option, a dir it cannot make) is one line too, and the dirs it
    made for a refused command are removed (:class:`OutputDirs`). ``HYDRA_FULL_ERROR=1``
    keeps Hydra's traceback."""
    wants_traceback = os.environ.get("HYDRA_FULL_ERROR") == "1"
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra raises its errors instead of printing them
    try:
        main()
    except (HydraException, OSError) as error:
        if wants_traceback:
            raise
        if isinstance(error, JobFailed):
            print(str(error), file=sys.stderr)
            sys.exit(1)
        OutputDirs.remove_refused()
        failure = known_failure(error) if not isinstance(error, HydraException) else None
        line, code = failure or (f"config error: {_hydra_message(error)}", 2)
        print(line, file=sys.stderr)
        sys.exit(code)


def _hydra_message(error: BaseException) -> str:
    """Hydra's message without its config search path; an override it could not apply is
    followed by OmegaConf's reason."""
    text = str(error).split("Config search path:")[0]
    cause = error.__cause__
    if isinstance(error, ConfigCompositionException) and isinstance(cause, OmegaConfBaseException):
        first, _, rest = text.strip().partition("\n")
        reason = str(cause.msg or cause).splitlines()[0]
        text = f"{first.rstrip('.')}: {reason}.\n{rest}"
    return one_line(text)


class OutputDirs(Callback):
    """Hydra makes a run's (or a multirun's) dir before the run can refuse its config. This
    callback notes, when a command starts, the highest dir of that path that did not exist
    yet, so that :meth:`remove_refused` takes away what a refused command made: nothing a
    refused command made is left behind (a multirun's dir holding only ``multirun.yaml``
    counts as empty).

    It also pins a multirun's dir: resolved once when the sweep starts (``hydra:``
    interpolations read the sweep's own config there) and handed to every job as the
    override ``hydra.sweep.dir=<dir>``, so jobs that differ in agent or env, in this process
    or on other machines, all land in it."""

    made: Path | None = None

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        HydraConfig.instance().set_config(config)  # the dir's name reads the run's choices
        OutputDirs.made = _first_missing(Path(config.hydra.run.dir))

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        HydraConfig.instance().set_config(config)
        sweep_dir = str(config.hydra.sweep.dir)
        with read_write(config.hydra), open_dict(config.hydra):
            config.hydra.sweep.dir = sweep_dir
            config.hydra.overrides.hydra.append(f"hydra.sweep.dir={_override_value(sweep_dir)}")
        OutputDirs.made = _first_missing(Path(sweep_dir))

    def on_run_end(self, config: DictConfig, **kwargs: Any) -> None:
        OutputDirs.made = None

    on_multirun_end = on_run_end

    @classmethod
    def remove_refused(cls) -> None:
        """Remove the dirs this command made, if nothing but empty dirs (and a multirun's
        ``multirun.yaml``) is in them."""
        made, cls.made = cls.made, None
        if made is None or not made.is_dir():
            return
        for _, _, files in os.walk(made):
            if any(name != SWEEP_MARKER for name in files):
                return
        shutil.rmtree(made, ignore_errors=True)


def _first_missing(path: Path) -> Path | None:
    """The highest dir of ``path`` (made absolute) that does not exist, or ``None``."""
    missing = None
    for folder in (path.absolute(), *path.absolute().parents):
        if folder.exists():
            return missing
        missing = folder
    return missing


def _override_value(text: str) -> str:
    """``text`` as the value of a Hydra override: quoted unless it is a plain path."""
    if re.fullmatch(r"[\w./+:@-]+", text):
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"
