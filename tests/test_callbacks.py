"""Training callbacks: a callback written outside procmem runs from the command line, early
stopping ends a run at its threshold (status ``finished`` with the reason), a failing
callback is one line naming it, and a resumed run's callbacks decide as an uninterrupted
run's would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest

from procmem import app
from procmem.run.callbacks import EarlyStopping
from procmem.run.loggers import read_metrics
from procmem.run.run_dir import RunDir
from procmem.settings import SettingError

from helpers import ROOT, TINY

OUTSIDE = '''
from procmem.run.callbacks import Callback


class Journal(Callback):
    """Writes each moment it is called at to a file, one line each."""

    def __init__(self, *, path: str) -> None:
        self.path = path

    def _write(self, text):
        with open(self.path, "a") as f:
            f.write(text + "\\n")

    def on_evaluation(self, runner, metrics):
        self._write(f"evaluation {runner.iteration} {sorted(metrics)[0]}")

    def on_checkpoint(self, runner, path):
        self._write(f"checkpoint {runner.iteration}")

    def on_train_end(self, runner):
        self._write(f"end {runner.iteration} {type(runner.algorithm).__name__}")


class Boom(Callback):
    def on_evaluation(self, runner, metrics):
        raise ValueError("no room for this")
'''


def train(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    """``train.py`` with ``overrides``, the tmp package ``mine`` importable."""
    package = tmp_path / "pkg" / "mine"
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text("")
    (package / "callbacks.py").write_text(textwrap.dedent(OUTSIDE))
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "pkg")}
    return subprocess.run([sys.executable, "train.py", *TINY, "logger=none", *overrides],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_a_callback_from_outside_procmem_runs_from_the_command_line(tmp_path: Path) -> None:
    journal = tmp_path / "journal.txt"
    result = train(tmp_path, "+callbacks.journal._target_=mine.callbacks.Journal",
                   f"+callbacks.journal.path={journal}", f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 0, result.stderr[-2000:]
    assert journal.read_text().splitlines() == [
        "checkpoint 4", "evaluation 6 eval/episode_return", "checkpoint 8",
        "evaluation 12 eval/episode_return", "checkpoint 12", "end 12 ProceduralMemoryAgent"]


def test_early_stopping_ends_the_run_at_its_threshold(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"  # the command line's config, run in this process
    app.train(app.compose_config([*TINY, "logger=none", "callbacks=[early_stopping]",
                                  "callbacks.early_stopping.metric=eval/reuse_rate",
                                  "callbacks.early_stopping.threshold=1.0"]), run_dir)
    status = RunDir(run_dir).status()
    assert (status.status, status.reason) == ("finished", "early stopping: eval/reuse_rate "
                                              "reached 1 (threshold 1) at iteration 6")
    assert read_metrics(run_dir / "metrics.jsonl")[-1]["iteration"] == 6
    assert RunDir(run_dir).checkpoints().latest().name == "ckpt_00000006.pt"
    assert (run_dir / "skills.json").is_file()  # the end-of-training callbacks ran


@pytest.mark.slow
def test_a_failing_callback_is_one_line_naming_it(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    result = train(tmp_path, "+callbacks.boom._target_=mine.callbacks.Boom",
                   f"hydra.run.dir={run_dir}")
    assert result.returncode == 70, result.stderr[-2000:]
    assert result.stderr.strip().splitlines() == [
        "callback error: callback Boom.on_evaluation: ValueError: no room for this"]
    assert json.loads((run_dir / "status.json").read_text())["status"] == "failed"


def test_a_callback_that_is_not_one_is_a_config_error(tmp_path: Path) -> None:
    result = train(tmp_path, "+callbacks.odd._target_=collections.OrderedDict",
                   f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines() == [
        "config error: callbacks.odd._target_: OrderedDict does not follow "
        "procmem.run.callbacks.Callback"]
    assert not (tmp_path / "run").exists()


def stopped_at(callback: EarlyStopping, values: list[float]) -> int | None:
    """The 1-based index of the value at which ``callback`` asks to stop, or ``None``."""
    for index, value in enumerate(values, 1):
        runner = SimpleNamespace(iteration=index, stop=None)
        runner.request_stop = lambda reason, runner=runner: setattr(runner, "stop", reason)
        callback.on_evaluation(runner, {"eval/success_rate": value})
        if runner.stop is not None:
            return index
    return None


def test_early_stopping_by_patience_resumes_to_the_same_decision() -> None:
    values = [0.2, 0.5, 0.4, 0.5, 0.45, 0.9]
    assert stopped_at(EarlyStopping(patience=3), values) == 5
    assert stopped_at(EarlyStopping(patience=3, min_delta=0.2), values[:2]) is None
    first = EarlyStopping(patience=3)
    assert stopped_at(first, values[:3]) is None  # stopped (SIGTERM) after the third value
    resumed = EarlyStopping(patience=3)
    resumed.load_state_dict(json.loads(json.dumps(first.state_dict())))
    assert stopped_at(resumed, values[3:]) == 2  # the fifth value, as without the stop
    assert stopped_at(EarlyStopping(threshold=0.9), values) == 6
    assert stopped_at(EarlyStopping(threshold=0.3, mode="min"), values) == 1


def test_early_stopping_needs_a_rule() -> None:
    with pytest.raises(SettingError, match="^threshold: set a threshold, or a patience above 0"):
        EarlyStopping()


def test_early_stopping_waits_for_a_full_window_of_episodes() -> None:
    callback = EarlyStopping(metric="train/success_rate", threshold=0.9, min_episodes=100)
    stops = []
    for iteration, (episodes, rate) in enumerate([(16, 1.0), (64, 1.0), (96, 0.95),
                                                  (112, 0.85), (128, 0.92)], 1):
        runner = SimpleNamespace(iteration=iteration, request_stop=stops.append)
        callback.on_iteration(runner, {"train/episodes": episodes, "train/success_rate": rate})
    assert stops == ["early stopping: train/success_rate reached 0.92 (threshold 0.9) at "
                     "iteration 5"]


@pytest.mark.slow
def test_a_run_stopped_early_by_a_training_metric_is_evaluated_at_its_last_iteration(
        tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    result = train(tmp_path, "callbacks=[early_stopping]", "trainer.eval_every=0",
                   "trainer.log_every=5", "callbacks.early_stopping.metric=train/episodes",
                   "callbacks.early_stopping.threshold=6", f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr[-2000:]
    rows = read_metrics(run_dir / "metrics.jsonl")
    last = rows[-1]["iteration"]
    assert last < 12  # stopped before the budget
    assert any(r["iteration"] == last and "train/episodes" in r for r in rows)  # logged
    assert any(r["iteration"] == last and "eval/success_rate" in r for r in rows)  # evaluated
