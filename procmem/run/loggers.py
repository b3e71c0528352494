"""Metric logging: the run's metrics file always, plus optional sinks such as W&B."""

from __future__ import annotations

import json
import math
import netrc
import os
import subprocess
import sys
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Protocol
from urllib.parse import urlparse

from procmem.io import atomic_write_text
from procmem.run.metrics import UnknownMetricWarning, metric_of
from procmem.settings import NonEmpty, OneOf, SettingError, configurable


class Sink(Protocol):
    """Somewhere besides ``metrics.jsonl`` that metrics go."""

    def log(self, row: Mapping[str, Any]) -> None: ...

    def logged(self) -> Sequence[Mapping[str, Any]]:
        """The rows earlier starts of this run already hold (none for a new run)."""

    # Media are plotted at ``iteration`` (the run's last logged one), or at no iteration.
    def log_table(self, key: str, records: Sequence[Mapping[str, Any]],
                  iteration: int | None = None) -> None: ...

    def log_image(self, key: str, path: Path, iteration: int | None = None) -> None: ...

    def log_video(self, key: str, path: Path, iteration: int | None = None) -> None: ...

    def finish(self, exit_code: int, stopped: bool = False) -> None:
        """End the run with ``exit_code``; ``stopped``: by a signal, to be resumed."""


def _plain(value: Any) -> Any:
    """A JSON-safe scalar (numpy and torch scalars become Python numbers)."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


class MetricLogger:
    """Appends one JSON object per logged point to the JSON-lines file ``path`` at once, and
    sends the rows on to the sinks when :meth:`commit` is called after a checkpoint.

    Every row carries ``iteration``. When a run resumes from the checkpoint of iteration
    ``k``, rows after ``k`` (written after that checkpoint by the stopped process) are
    dropped, so the file ends up as if the run had never stopped. The sinks get each row
    once across a kill and a resume: a row reaches them only once the checkpoint that covers
    it is saved, so they never hold a row the resumed run logs again, and a resumed logger
    first sends each sink the kept rows it does not hold (those a killed process sent but the
    sink never stored). A key outside the metric vocabulary (:mod:`procmem.run.metrics`) is
    logged with a warning, once.
    """

    def __init__(
        self, path: str | Path, sinks: Sequence[Sink] = (), resume_iteration: int | None = None
    ) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.unknown_keys: set[str] = set()
        self.sinks = list(sinks)
        self.rows: list[dict[str, Any]] = []
        if resume_iteration is not None and self.path.exists():
            self.rows = [r for r in read_metrics(self.path) if r["iteration"] <= resume_iteration]
            for sink in self.sinks:
                held = {_identity(row) for row in sink.logged()}
                for row in self.rows:
                    if _identity(row) not in held:
                        sink.log(row)
        self.unsent: list[dict[str, Any]] = []
        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in self.rows))

    def log(self, iteration: int, metrics: Mapping[str, Any]) -> None:
        if not metrics:
            return
        self._warn_unknown(metrics)
        row = {"iteration": int(iteration), **{k: _plain(v) for k, v in metrics.items()}}
        self.rows.append(row)
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        if self.sinks:
            self.unsent.append(row)

    def commit(self, iteration: int) -> None:
        """Send the sinks the rows up to ``iteration``, whose checkpoint is saved."""
        due = [row for row in self.unsent if row["iteration"] <= iteration]
        for row in due:
            for sink in self.sinks:
                sink.log(row)
        self.unsent = self.unsent[len(due):]

    def last_values(self) -> dict[str, Any]:
        """The last logged value of every metric, rows kept from before a resume included."""
        return last_values(self.rows)

    def _warn_unknown(self, keys: Mapping[str, Any] | Sequence[str]) -> None:
        for key in keys:
            if key not in self.unknown_keys and metric_of(key) is None:
                self.unknown_keys.add(key)
                warnings.warn(f"metric {key!r} is not in the metric vocabulary "
                              "(procmem/run/metrics.py)", UnknownMetricWarning, stacklevel=3)

    def log_table(self, key: str, records: Sequence[Mapping[str, Any]]) -> None:
        self._warn_unknown([key])
        for sink in self.sinks:
            sink.log_table(key, records, self._last_iteration())

    def log_image(self, key: str, path: Path) -> None:
        self._warn_unknown([key])
        for sink in self.sinks:
            sink.log_image(key, path, self._last_iteration())

    def log_video(self, key: str, path: Path) -> None:
        self._warn_unknown([key])
        for sink in self.sinks:
            sink.log_video(key, path, self._last_iteration())

    def _last_iteration(self) -> int | None:
        """The iteration media logged now belong to: that of the last row, kept rows of a
        resumed run included (a run resumed after its last iteration logs no new row)."""
        return self.rows[-1]["iteration"] if self.rows else None

    def finish(self, exit_code: int = 0, stopped: bool = False) -> None:
        for sink in self.sinks:
            sink.finish(exit_code, stopped)


def _identity(row: Mapping[str, Any]) -> tuple[Any, frozenset[str]]:
    """A logged row's iteration and keys: what tells it from the run's other rows."""
    return row.get("iteration"), frozenset(row)


def last_values(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The last value of every metric in ``rows``."""
    last: dict[str, Any] = {}
    for row in rows:
        last.update(row)
    last.pop("iteration", None)
    return last


class MetricsFileError(ValueError):
    """A ``metrics.jsonl`` that cannot be read; the message names the file and line."""


def read_metrics(path: str | Path, complete: bool = False) -> list[dict[str, Any]]:
    """Rows of a ``metrics.jsonl`` file; a bad line raises :class:`MetricsFileError`.

    Every row ends with a newline, so text after the last newline is a write the process
    was killed in the middle of; it is left out. With ``complete`` (the file of a finished
    run, which has no such write) it is an error too."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"missing metrics file: {path}")
    lines = path.read_text(errors="replace").split("\n")
    if complete and lines[-1]:
        raise MetricsFileError(f"{path}:{len(lines)}: the last line is cut off")
    rows = []
    for number, line in enumerate(lines[:-1], start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise MetricsFileError(f"{path}:{number}: not valid JSON ({error.msg})") from None
        if not isinstance(row, dict) or not isinstance(row.get("iteration"), int):
            raise MetricsFileError(f"{path}:{number}: expected a JSON object with an "
                                   "iteration")
        rows.append(row)
    return rows


@configurable
class WandbSink:
    """A Weights & Biases run kept in ``<directory>/wandb``, in ``project`` (of ``entity``)
    with ``tags``; ``mode`` is online, offline or disabled, and ``None`` takes
    ``WANDB_MODE``, else offline.

    ``run_id`` names the run: a resumed training run passes the id it had, so it continues
    the same W&B run. Metrics are plotted against ``iteration``. Online mode without W&B
    credentials is a :class:`~procmem.settings.SettingError` of ``mode``, raised before
    anything is written.
    """

    def __init__(
        self,
        directory: str | Path,
        run_id: str,
        run_config: Mapping[str, Any] | None = None,
        group: str | None = None,
        name: str | None = None,
        job_type: str = "train",
        *,
        project: Annotated[str, NonEmpty()] = "procmem",
        entity: str | None = None,
        mode: Annotated[str, OneOf(("online", "offline", "disabled"))] | None = None,
        tags: Sequence[str] = (),
    ) -> None:
        import wandb

        self._wandb = wandb
        self.directory = directory = Path(directory)
        mode = mode or os.environ.get("WANDB_MODE") or "offline"
        if mode == "online" and not _has_credentials():
            raise SettingError("mode", "online needs W&B credentials: run `wandb login` or set "
                                       "WANDB_API_KEY, or log offline (WANDB_MODE=offline)")
        (directory / "wandb").mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(
            project=project,
            entity=entity,
            dir=str(directory),
            mode=mode,
            config=dict(run_config or {}),
            tags=list(tags),
            group=group,
            name=name,
            job_type=job_type,
            id=run_id,
            resume="allow",
            reinit="create_new",
            settings=wandb.Settings(quiet=True, console="off", x_disable_stats=True),
        )
        self.run.define_metric("iteration")
        self.run.define_metric("*", step_metric="iteration")

    def log(self, row: Mapping[str, Any]) -> None:
        self.run.log(dict(row))

    def logged(self) -> list[dict[str, Any]]:
        """The rows the earlier starts of this run stored: read back from their folders
        (``offline-run-*``, ``run-*``) with ``wandb leet inspect``."""
        current = Path(self.run.dir).parent
        rows: list[dict[str, Any]] = []
        for segment in sorted((self.directory / "wandb").glob(f"*run-*-{self.run.id}")):
            if segment.resolve() != current.resolve():
                rows += read_wandb_history(segment)
        return rows

    def log_table(self, key: str, records: Sequence[Mapping[str, Any]],
                  iteration: int | None = None) -> None:
        columns = list(records[0]) if records else ["empty"]
        data = [[json.dumps(v) if isinstance(v, list | dict) else v for v in r.values()]
                for r in records]
        self._log_media(key, self._wandb.Table(columns=columns, data=data), iteration)

    def log_image(self, key: str, path: Path, iteration: int | None = None) -> None:
        self._log_media(key, self._wandb.Image(str(path)), iteration)

    def log_video(self, key: str, path: Path, iteration: int | None = None) -> None:
        """Log a video file (GIF, MP4, WebM, OGG); a file path needs no encoder."""
        self._log_media(key, self._wandb.Video(str(path)), iteration)

    def _log_media(self, key: str, media: Any, iteration: int | None) -> None:
        self.run.log({key: media, **({} if iteration is None else {"iteration": iteration})})

    def finish(self, exit_code: int, stopped: bool = False) -> None:
        """End the run; a stopped one is marked preempted (to be resumed), then ends with
        the signal's exit code."""
        if stopped:
            self.run.mark_preempting()
        self.run.finish(exit_code=exit_code)


def read_wandb_history(segment: str | Path) -> list[dict[str, Any]]:
    """The history rows one W&B run folder stored, without W&B's own ``_`` keys (read with
    ``wandb leet inspect``; a folder it cannot read holds none, with a warning)."""
    result = subprocess.run([sys.executable, "-m", "wandb", "leet", "inspect", "--json",
                             str(segment)], capture_output=True, text=True)
    if result.returncode != 0:
        warnings.warn(f"could not read the W&B run in {segment}: {result.stderr.strip()}",
                      stacklevel=2)
        return []
    records = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    return [{key: value for key, value in record["history"]["item"].items()
             if not key.startswith("_")}
            for record in records if record.get("type") == "history"]


def _has_credentials() -> bool:
    """Whether W&B can log in: an API key or identity token in the environment, or a
    ``wandb login`` entry in the netrc file for its host."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(host or "") is not None
    except (OSError, netrc.NetrcParseError):
        return False
