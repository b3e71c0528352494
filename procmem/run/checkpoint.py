"""Checkpoints: versioned, written atomically, the newest few kept, loaded as data only and
stamped with the run they belong to."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from procmem.io import atomic_torch_save
from procmem.run.status import describe_error
from procmem.safe_load import UnsafeFileError, load_data_file

CHECKPOINT_FORMAT_VERSION = 1
_NAME = re.compile(r"^ckpt_(\d+)\.pt$")


class CheckpointError(RuntimeError):
    """A checkpoint (or saved model) that cannot be written or used; the message names the
    file and, where one is left, the previous good checkpoint."""


class CheckpointManager:
    """Saves and loads ``ckpt_<iteration>.pt`` files in one folder.

    ``owner`` is the id of the run the checkpoints belong to: :meth:`save` stamps it into
    each checkpoint and :meth:`load_latest` refuses one stamped by another run. Checkpoints
    written before the stamp carry none and are not refused by it."""

    def __init__(self, directory: str | Path, owner: str | None = None) -> None:
        self.directory = Path(directory)
        self.owner = owner

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
        payload = {"format_version": CHECKPOINT_FORMAT_VERSION, "iteration": iteration,
                   **({} if self.owner is None else {"owner": self.owner}), **state}
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
        """Load one checkpoint written by :meth:`save`, as data only: a file that holds other
        objects is refused (:mod:`procmem.safe_load`)."""
        path = Path(path)
        try:
            payload = load_data_file(path)
        except FileNotFoundError:
            raise
        except UnsafeFileError as error:
            raise CheckpointError(str(error)) from None
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

    def load_latest(self, accept: Callable[[dict[str, Any]], None] | None = None
                    ) -> dict[str, Any] | None:
        """The newest checkpoint, or ``None`` when there is none. ``accept`` puts it to use
        (loads it into what it is for) and raises when it does not fit. When it is unusable
        (unreadable, another owner's, or refused by ``accept``) the :class:`CheckpointError`
        names it and the earlier one left to resume from (nothing is deleted)."""
        path = self.latest()
        if path is None:
            return None
        try:
            payload = self.load(path)
            owner = payload.get("owner")
            if self.owner is not None and owner is not None and owner != self.owner:
                raise CheckpointError(f"{path}: belongs to another run (it was saved by run "
                                      f"{owner}; this run is {self.owner})")
            if accept is not None:
                _accepted(path, payload, accept)
            return payload
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


def _accepted(path: Path, payload: dict[str, Any], accept: Callable[[dict[str, Any]], None]
              ) -> None:
    """Run ``accept`` on a checkpoint; its error is a :class:`CheckpointError` naming it."""
    try:
        accept(payload)
    except CheckpointError:
        raise
    except Exception as error:
        raise CheckpointError(f"{path}: does not fit this run ({describe_error(error)})"
                              ) from error
