"""Envs in worker processes (env.vectorization=async) and stop signals: the main process
alone stops a run; the workers end quietly and the run resumes where it stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from procmem.run.loggers import read_metrics
from procmem.run.run_dir import RunDir

from helpers import ROOT, run_cli, without_perf

ASYNC_CARTPOLE = ["experiment=a2c_cartpole", "env.vectorization=async", "env.num_envs=4",
                  "logger=none", "trainer.progress=false", "trainer.iterations=400",
                  "trainer.log_every=10", "trainer.eval_every=200", "trainer.eval_episodes=4",
                  "trainer.checkpoint_every=200"]


@pytest.fixture(scope="module")
def whole_run(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    """The metric rows of the run never stopped."""
    run_dir = tmp_path_factory.mktemp("whole") / "run"
    run_cli("train.py", *ASYNC_CARTPOLE, f"hydra.run.dir={run_dir}")
    return without_perf(read_metrics(run_dir / "metrics.jsonl"))


def first_row_written(run_dir: Path, process: subprocess.Popen) -> None:
    metrics = run_dir / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while process.poll() is None and time.monotonic() < deadline:
        if metrics.is_file() and metrics.read_text():
            return
        time.sleep(0.01)
    raise AssertionError(f"no metric row in {metrics}")


@pytest.mark.slow
@pytest.mark.parametrize("to_group", [False, True], ids=["SIGTERM", "SIGINT to the group"])
def test_async_envs_stop_quietly_and_the_run_resumes_as_if_never_stopped(
    tmp_path: Path, whole_run: list[dict], to_group: bool
) -> None:
    """SIGTERM to the run, or SIGINT to its process group (Ctrl-C): the run finishes its
    iteration, saves it and stops with no traceback from any worker."""
    run_dir = tmp_path / "stopped"
    process = subprocess.Popen([sys.executable, "train.py", *ASYNC_CARTPOLE,
                                f"hydra.run.dir={run_dir}"], cwd=ROOT, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               start_new_session=True)
    first_row_written(run_dir, process)
    if to_group:
        os.killpg(process.pid, signal.SIGINT)
    else:
        process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)

    signum = signal.SIGINT if to_group else signal.SIGTERM
    assert process.returncode == 128 + signum, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    assert RunDir(run_dir).status().status == "stopped"
    run_cli("train.py", f"resume={run_dir}")
    assert without_perf(read_metrics(run_dir / "metrics.jsonl")) == whole_run
    assert RunDir(run_dir).status().status == "finished"
