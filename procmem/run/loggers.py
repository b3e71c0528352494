"""Metric logging: the run's metrics file always, plus optional sinks such as W&B."""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Protocol

from procmem.io import atomic_write_text
from procmem.run.metrics import UnknownMetricWarning, metric_of
from procmem.settings import NonEmpty, OneOf, configurable


class Sink(Protocol):
    """Somewhere besides ``metrics.jsonl`` that metrics go."""

    def log(self, row: Mapping[str, Any]) -> None: ...

    def log_table(self, key: str, records: Sequence[Mapping[str, Any]]) -> None: ...

    def log_image(self, key: str, path: Path) -> None: ...

    def log_video(self, key: str, path: Path) -> None: ...

    def finish(self, exit_code: int) -> None: ...


def _plain(value: Any) -> Any:
    """A JSON-safe scalar (numpy and torch scalars become Python numbers)."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


class MetricLogger:
    """Appends one JSON object per logged point to the JSON-lines file ``path`` and fans out
    to sinks.

    Every row carries ``iteration``. When a run resumes from the checkpoint of iteration
    ``k``, rows after ``k`` (written after that checkpoint by the stopped process) are
    dropped, so the file ends up as if the run had never stopped. A key outside the metric
    vocabulary (:mod:`procmem.run.metrics`) is logged with a warning, once.
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
        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in self.rows))

    def log(self, iteration: int, metrics: Mapping[str, Any]) -> None:
        if not metrics:
            return
        self._warn_unknown(metrics)
        row = {"iteration": int(iteration), **{k: _plain(v) for k, v in metrics.items()}}
        self.rows.append(row)
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        for sink in self.sinks:
            sink.log(row)

    def last_values(self) -> dict[str, Any]:
        """The last logged value of every metric, rows kept from before a resume included."""
        last: dict[str, Any] = {}
        for row in self.rows:
            last.update(row)
        last.pop("iteration", None)
        return last

    def _warn_unknown(self, keys: Mapping[str, Any] | Sequence[str]) -> None:
        for key in keys:
            if key not in self.unknown_keys and metric_of(key) is None:
                self.unknown_keys.add(key)
                warnings.warn(f"metric {key!r} is not in the metric vocabulary "
                              "(procmem/run/metrics.py)", UnknownMetricWarning, stacklevel=3)

    def log_table(self, key: str, records: Sequence[Mapping[str, Any]]) -> None:
        self._warn_unknown([key])
        for sink in self.sinks:
            sink.log_table(key, records)

    def log_image(self, key: str, path: Path) -> None:
        self._warn_unknown([key])
        for sink in self.sinks:
            sink.log_image(key, path)

    def log_video(self, key: str, path: Path) -> None:
        self._warn_unknown([key])
        for sink in self.sinks:
            sink.log_video(key, path)

    def finish(self, exit_code: int = 0) -> None:
        for sink in self.sinks:
            sink.finish(exit_code)


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a ``metrics.jsonl`` file; a bad line raises ``ValueError`` naming the file.

    Every row ends with a newline, so text after the last newline is a write the process
    was killed in the middle of; it is left out."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"missing metrics file: {path}")
    rows = []
    complete = path.read_text().split("\n")[:-1]
    for number, line in enumerate(complete, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}:{number}: not valid JSON ({error.msg})") from None
        if not isinstance(row, dict):
            raise ValueError(f"{path}:{number}: expected a JSON object")
        rows.append(row)
    return rows


@configurable
class WandbSink:
    """A Weights & Biases run kept in ``<directory>/wandb``, in ``project`` (of ``entity``)
    with ``tags``; ``mode`` is online, offline or disabled, and ``None`` takes
    ``WANDB_MODE``, else offline.

    ``run_id`` names the run: a resumed training run passes the id it had, so it continues
    the same W&B run. Metrics are plotted against ``iteration``.
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
        directory = Path(directory)
        (directory / "wandb").mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(
            project=project,
            entity=entity,
            dir=str(directory),
            mode=mode or os.environ.get("WANDB_MODE") or "offline",
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

    def log_table(self, key: str, records: Sequence[Mapping[str, Any]]) -> None:
        columns = list(records[0]) if records else ["empty"]
        data = [[json.dumps(v) if isinstance(v, list | dict) else v for v in r.values()]
                for r in records]
        self.run.log({key: self._wandb.Table(columns=columns, data=data)})

    def log_image(self, key: str, path: Path) -> None:
        self.run.log({key: self._wandb.Image(str(path))})

    def log_video(self, key: str, path: Path) -> None:
        """Log a video file (GIF, MP4, WebM, OGG); a file path needs no encoder."""
        self.run.log({key: self._wandb.Video(str(path))})

    def finish(self, exit_code: int) -> None:
        self.run.finish(exit_code=exit_code)
