"""One process per run dir: two processes started on one dir at once, one runs and the other
is refused having changed nothing; a lock left by a killed process never blocks."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from procmem.run.lock import RunDirLocked
from procmem.run.loggers import read_metrics
from procmem.run.run_dir import RunDir

from helpers import ROOT, run_cli, without_perf

HOLD = """
import sys, time
from procmem.run.run_dir import RunDir
with RunDir(sys.argv[1]).lock():
    print("locked", flush=True)
    time.sleep(60)
"""
# A run long enough (several seconds) for a second process to start while it trains.
LONG = ["trainer.iterations=60", "trainer.eval_every=20", "trainer.eval_episodes=2",
        "trainer.checkpoint_every=5", "trainer.progress=false", "env.max_steps=40"]


def hold_lock(run_dir: Path) -> subprocess.Popen:
    """A process holding the lock of ``run_dir`` until it is killed."""
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir)], cwd=ROOT,
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    return holder


def test_a_held_run_dir_is_refused_naming_the_holder_until_the_holder_is_killed(
        tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    holder = hold_lock(run.path)
    try:
        with pytest.raises(RunDirLocked) as refused:
            run.lock().acquire()
        assert str(refused.value).startswith(f"{run.path} is in use by pid {holder.pid} (")
        assert HOLD.strip().splitlines()[0] in str(refused.value)  # its command line
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with run.lock():  # the kernel let go of the killed process's lock
        assert (run.path / ".lock").exists()
    assert not (run.path / ".lock").exists()  # the lock file lives while the lock is held


def start(*overrides: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "train.py", *overrides], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def finish(process: subprocess.Popen) -> tuple[int, str]:
    _, stderr = process.communicate(timeout=300)
    return process.returncode, stderr


def wandb_starts(run_dir: Path) -> int:
    return len(list((run_dir / "wandb").glob("offline-run-*")))


def uninterrupted_rows(tmp_path: Path) -> list[dict]:
    """The metric rows of the run alone, start to end, without timings."""
    alone = tmp_path / "alone"
    run_cli("train.py", *LONG, "logger=none", f"hydra.run.dir={alone}")
    return without_perf(read_metrics(alone / "metrics.jsonl"))


@pytest.mark.slow
def test_two_new_runs_started_on_one_dir_at_once_one_runs_and_the_other_changes_nothing(
        tmp_path: Path) -> None:
    expected = uninterrupted_rows(tmp_path)
    run_dir = tmp_path / "run"
    first, second = (start(*LONG, f"hydra.run.dir={run_dir}") for _ in range(2))
    results = [finish(first), finish(second)]

    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    refused = next(stderr for code, stderr in results if code == 2)
    winner = first if first.returncode == 0 else second
    assert refused.strip() == (f"run dir error: {run_dir} is in use by pid {winner.pid} "
                               f"({sys.executable} train.py {' '.join(LONG)} "
                               f"hydra.run.dir={run_dir}); wait for it to end (or stop it) "
                               "first")
    assert without_perf(read_metrics(run_dir / "metrics.jsonl")) == expected
    assert wandb_starts(run_dir) == 1
    assert (run_dir / "train.log").read_text().count("run dir: ") == 1


@pytest.mark.slow
def test_two_resumes_started_at_once_one_resumes_and_the_other_changes_nothing(
        tmp_path: Path) -> None:
    expected = uninterrupted_rows(tmp_path)
    run_dir = tmp_path / "run"
    process = start(*LONG, f"hydra.run.dir={run_dir}")
    while not (run_dir / "checkpoints").is_dir():  # stopped after its first checkpoint
        time.sleep(0.01)
    process.send_signal(signal.SIGTERM)
    assert finish(process)[0] == 143

    first, second = (start(f"resume={run_dir}") for _ in range(2))
    results = [finish(first), finish(second)]

    assert sorted(code for code, _ in results) == [0, 2], results
    refused = next(stderr for code, stderr in results if code == 2)
    assert refused.strip().startswith(f"run dir error: {run_dir} is in use by pid ")
    assert len(refused.strip().splitlines()) == 1
    assert without_perf(read_metrics(run_dir / "metrics.jsonl")) == expected
    assert wandb_starts(run_dir) == 2  # the first start and one resume
    assert (run_dir / "train.log").read_text().count("resumed at iteration") == 1
    assert RunDir(run_dir).status().status == "finished"
