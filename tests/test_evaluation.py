"""An evaluation records the checkpoint it evaluated and the run's status then; compare uses
it only while it is of the run's last checkpoint."""

from __future__ import annotations

import json
import os
import shutil
import socket
from pathlib import Path

import pytest

from procmem import app
from procmem.app.evaluation import progress_note
from procmem.run.run_dir import RunDir
from procmem.run.status import FINISHED, RunStatus

from helpers import TINY, run_cli


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny run, finished at iteration 12 with a checkpoint there."""
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    app.train(app.compose_config([*TINY, "logger=none"]), run_dir)
    return run_dir


@pytest.fixture
def running_run(finished_run: Path, tmp_path: Path) -> Path:
    """A copy of the tiny run whose status says this process is still running it."""
    run_dir = tmp_path / "run"
    shutil.copytree(finished_run, run_dir)
    RunDir(run_dir).write_status(RunStatus.of_this_process())
    return run_dir


@pytest.mark.slow
def test_evaluating_a_running_run_records_and_prints_that_it_is_in_progress(running_run):
    result = run_cli("evaluate.py", f"run={running_run}", "episodes=1", "log=false")

    running = f"running (pid {os.getpid()} on {socket.gethostname()})"
    assert (f"note: evaluating checkpoint 12 of a run still in progress ({running}); compare "
            "uses it only if it stays the run's last checkpoint") in result.stdout.splitlines()
    evaluation = json.loads((running_run / "eval.json").read_text())
    assert (evaluation["iteration"], evaluation["run_status"], evaluation["in_progress"]) == (
        12, running, True)


def test_an_evaluation_made_while_the_run_went_on_is_stale_in_compare(running_run, tmp_path):
    app.evaluate_run(running_run, episodes=1, log=False)
    checkpoints = RunDir(running_run).checkpoints()  # the run saves a later one and ends
    state = checkpoints.load_latest()
    checkpoints.save(16, {k: v for k, v in state.items() if k not in ("format_version",
                                                                       "iteration")})
    RunDir(running_run).write_status(FINISHED)

    table, _ = app.compare_runs([running_run], tmp_path / "out")
    assert (f"stale evaluation left out: {running_run}: eval.json is of checkpoint 12, the "
            f"run's last is 16; run evaluate.py run={running_run} again") in table.splitlines()

    result, _ = app.evaluate_run(running_run, episodes=1, log=False)  # evaluated again
    assert (result["iteration"], result["run_status"], result["in_progress"]) == (
        16, FINISHED, False)
    assert progress_note(result) is None
    table, _ = app.compare_runs([running_run], tmp_path / "out")
    assert "stale" not in table
