"""Helpers for tests that run the command line: tiny runs, W&B read-back, metric rows."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from procmem.envs.gridworld import GridWorld

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
