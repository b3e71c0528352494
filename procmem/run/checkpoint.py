"""Checkpoints: versioned, written atomically, the newest few kept."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from procmem.io import atomic_torch_save
from procmem.run.status import describe_error

CHECKPOINT_FORMAT_VERSION = 1
_NAME = re.compile(r"^ckpt_(\d+)\.pt$")


class CheckpointError(RuntimeError):
    """A checkpoint (or saved model) that cannot be written or used; the message names the
    file and, where one is left, the previous good checkpoint."""


class CheckpointManager:
    """Saves and loads ``ckpt_<iteration>.pt`` files in one folder."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

    def paths(self) -> list[Path]:
        """Checkpoint files, oldest first."""
        if not self.directory.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in self.directory.iterdir()
                 if (m := _NAME.match(p.name))]
        return [p for _, p in sorted(found)]

    def latest(self) -> Path | None:
        paths = self.paths()
        return paths[-1] if paths else None

    def save(self, iteration: int, state: dict[str, Any], keep: int = 3) -> Path:
        """Write the checkpoint of ``iteration``, then drop all but the newest ``keep``.

        A failed write (a full disk) leaves the earlier checkpoints as they were and raises
        :class:`CheckpointError` naming the file and the newest intact one."""
        payload = {"format_version": CHECKPOINT_FORMAT_VERSION, "iteration": iteration, **state}
        path = self.directory / f"ckpt_{iteration:08d}.pt"
        self._remove_interrupted_writes()
        try:
            atomic_torch_save(payload, path)
        except OSError as error:
            kept = self.latest()
            raise CheckpointError(
                f"{path}: could not write the checkpoint ({error.strerror or error}); "
                + (f"the previous checkpoint {kept} is intact" if kept else
                   "no earlier checkpoint was written")) from error
        for old in self.paths()[:-keep]:
            old.unlink(missing_ok=True)
        return path

    @staticmethod
    def load(path: str | Path) -> dict[str, Any]:
        """Load one checkpoint written by :meth:`save`."""
        path = Path(path)
        try:
            # Files this program wrote itself; they hold numpy RNG states as well as tensors.
            payload = torch.load(path, map_location="cpu", weights_only=False)
        except FileNotFoundError:
            raise
        except Exception as error:
            raise CheckpointError(
                f"{path}: unreadable checkpoint ({describe_error(error)})") from error
        if not isinstance(payload, dict) or "format_version" not in payload:
            raise CheckpointError(f"{path}: not a procmem checkpoint")
        if payload["format_version"] != CHECKPOINT_FORMAT_VERSION:
            raise CheckpointError(
                f"{path}: checkpoint format {payload['format_version']} is not supported "
                f"(this version reads {CHECKPOINT_FORMAT_VERSION})"
            )
        return payload

    def load_latest(self) -> dict[str, Any] | None:
        """The newest checkpoint, or ``None`` when there is none. When it is unusable the
        error says which earlier one is left to resume from (nothing is deleted)."""
        path = self.latest()
        if path is None:
            return None
        try:
            return self.load(path)
        except CheckpointError as error:
            earlier = self.paths()[:-1]
            raise CheckpointError(
                f"{error}; " + (f"the previous checkpoint {earlier[-1]} is kept: remove "
                                f"{path.name} to resume from it" if earlier else
                                "there is no earlier checkpoint")) from error

    def _remove_interrupted_writes(self) -> None:
        """Temp files of writes a killed process never finished (see ``atomic_write_bytes``)."""
        if self.directory.is_dir():
            for partial in self.directory.glob(".ckpt_*.tmp"):
                partial.unlink(missing_ok=True)
