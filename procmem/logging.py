"""Metric logging: ``metrics.jsonl`` always, plus optional sinks such as W&B."""

from __future__ import annotations

import json
import math
import os
import secrets
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from procmem.io import atomic_write_text

METRICS_FILE = "metrics.jsonl"


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
    """Appends one JSON object per logged point to ``metrics.jsonl`` and fans out to sinks.

    Every row carries ``iteration``. When a run resumes from the checkpoint of iteration
    ``k``, rows after ``k`` (written after that checkpoint by the stopped process) are
    dropped, so the file ends up as if the run had never stopped.
    """

    def __init__(
        self, run_dir: str | Path, sinks: Sequence[Sink] = (), resume_iteration: int | None = None
    ) -> None:
        self.path = Path(run_dir) / METRICS_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.sinks = list(sinks)
        self.rows: list[dict[str, Any]] = []
        if resume_iteration is not None and self.path.exists():
            self.rows = [r for r in read_metrics(self.path) if r["iteration"] <= resume_iteration]
        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in self.rows))

    def log(self, iteration: int, metrics: Mapping[str, Any]) -> None:
        if not metrics:
            return
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

    def log_table(self, key: str, records: Sequence[Mapping[str, Any]]) -> None:
        for sink in self.sinks:
            sink.log_table(key, records)

    def log_image(self, key: str, path: Path) -> None:
        for sink in self.sinks:
            sink.log_image(key, path)

    def log_video(self, key: str, path: Path) -> None:
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


class WandbSink:
    """Weights & Biases run kept in ``<run_dir>/wandb``; offline unless ``WANDB_MODE`` says.

    The run id is stored beside the run's files, so a resumed training run continues the
    same W&B run. Metrics are plotted against ``iteration``.
    """

    def __init__(
        self,
        project: str,
        run_dir: str | Path,
        run_config: Mapping[str, Any] | None = None,
        entity: str | None = None,
        mode: str | None = None,
        tags: Sequence[str] = (),
        group: str | None = None,
        name: str | None = None,
        job_type: str = "train",
    ) -> None:
        import wandb

        self._wandb = wandb
        run_dir = Path(run_dir)
        (run_dir / "wandb").mkdir(parents=True, exist_ok=True)
        run_id = self._run_id(run_dir, job_type)
        self.run = wandb.init(
            project=project,
            entity=entity,
            dir=str(run_dir),
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

    def _run_id(self, run_dir: Path, job_type: str) -> str:
        """The training run keeps one id for its life; other jobs get a fresh one each."""
        if job_type != "train":
            return secrets.token_hex(4)
        id_file = run_dir / "wandb" / "train_run_id"
        if id_file.exists():
            return id_file.read_text().strip()
        run_id = secrets.token_hex(4)
        atomic_write_text(id_file, run_id)
        return run_id

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
