"""Helpers for tests that run the command line (tiny runs, W&B read-back, metric rows), and
the tool machine run one token at a time."""

from __future__ import annotations

import json
import operator
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch.serialization import get_unsafe_globals_in_checkpoint

from procmem.envs.gridworld import GridWorld
from procmem.envs.toolenv_machine import ADD, ANS, MUL, RCL, STO, SUB, TOOL_TOKENS
from procmem.safe_load import load_data_file

ROOT = Path(__file__).resolve().parents[1]
WANDB = Path(sys.executable).parent / "wandb"
TINY = [
    "trainer.iterations=12",
    "trainer.eval_every=6",
    "trainer.eval_episodes=3",
    "trainer.checkpoint_every=4",
    "trainer.progress=false",
    "env.max_steps=20",
]


def run_cli(script: str, *overrides: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``python <script> <overrides>`` in the repository; with ``check``, it must pass."""
    result = subprocess.run(
        [sys.executable, script, *overrides], cwd=ROOT, capture_output=True, text=True,
        timeout=300,
    )
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


# What torch.save writes for numpy arrays (and an empty one's data); plain values name no
# global at all.
ARRAY_GLOBALS = {"_reconstruct", "ndarray", "dtype", "bytes"}


def checkpoint_round_trip(state: Any, path: Path) -> Any:
    """``state`` as a checkpoint holds it: saved with ``torch.save`` and loaded by the safe
    loader, after checking that the file holds only plain values, tensors and numpy arrays."""
    torch.save(state, path)
    names = {name.rsplit(".", 1)[-1] for name in get_unsafe_globals_in_checkpoint(path)}
    assert names <= ARRAY_GLOBALS, f"the state holds objects: {names - ARRAY_GLOBALS}"
    return load_data_file(path)


def finished_tiny_run(directory: Path, logger: str = "none") -> Path:
    """A tiny finished skill-library run in ``<directory>/run``: :data:`TINY`, so
    checkpoints 4, 8 and 12, and skills.json."""
    run_dir = directory / "run"
    run_cli("train.py", *TINY, f"logger={logger}", f"hydra.run.dir={run_dir}")
    return run_dir


def wandb_summary(run_dir: Path) -> dict:
    """What the W&B run in ``<run_dir>/wandb`` logged (summary, exit code, state)."""
    out = subprocess.run([str(WANDB), "leet", "inspect", "--summary", "--json",
                          str(run_dir / "wandb")], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def without_perf(rows: list[dict]) -> list[dict]:
    """Metric rows without the timing metrics (they differ between identical runs)."""
    return [{k: v for k, v in row.items() if not k.startswith("perf/")} for row in rows]


def fixed_gridworld(**settings: object) -> GridWorld:
    """The original gridworld: the fixed 5x5 layout, 50 steps an episode."""
    return GridWorld(**{"layout": "fixed", "size": 5, "max_steps": 50, **settings})


class Step(NamedTuple):
    """The tool machine after one tool token."""

    token: int
    acc: int
    mem: int
    pointer: int


_BINARY = {MUL: operator.mul, ADD: operator.add, SUB: operator.sub}


def wrap_int64(value: int) -> int:
    """``value`` as int64 arithmetic leaves it (two's complement wrap-around)."""
    return (value + 2**63) % 2**64 - 2**63


def run_program(tokens: Sequence[int], operands: Sequence[int]) -> tuple[int | None, list[Step]]:
    """Run tool tokens on one problem, in plain Python: (``acc`` at ``ANS``, or None, and the
    trace); the tests hold the vectorised machine
    (:func:`~procmem.envs.toolenv_machine.apply_tools`) to it.

    The answer is None when a token is invalid (``STO`` with no operand left) or no ``ANS``
    comes; the trace has one :class:`Step` per token executed, up to the first ``ANS``.
    """
    if not operands:
        raise ValueError("operands must not be empty")
    acc, mem, pointer = int(operands[0]), 0, 1
    trace: list[Step] = []
    for token in tokens:
        if token not in TOOL_TOKENS:
            raise ValueError(f"tokens must be tool tokens {TOOL_TOKENS}, got {token}")
        has_next = pointer < len(operands)
        if token == STO:
            if not has_next:
                return None, trace
            mem, acc, pointer = acc, int(operands[pointer]), pointer + 1
        elif token == RCL:
            acc, mem = mem, acc
        elif token in _BINARY:
            right = int(operands[pointer]) if has_next else mem
            acc, pointer = wrap_int64(_BINARY[token](acc, right)), pointer + has_next
        trace.append(Step(token, acc, mem, pointer))
        if token == ANS:
            return acc, trace
    return None, trace
