"""The runner with a fake algorithm: cadences, curriculum hooks, resume and the reporters."""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from procmem.curricula import AdaptiveCurriculum, StagedCurriculum
from procmem.run.callbacks import Callback, EarlyStopping
from procmem.run.checkpoint import CheckpointManager
from procmem.run.loggers import MetricLogger, read_metrics
from procmem.run.runner import Runner, progress_postfix
from procmem.run.signals import RunStopped, StopSignals
from procmem.runtime import (
    NonFiniteLossError,
    NonFiniteParametersError,
    check_finite,
    seed_everything,
)

from helpers import without_perf

# The fake algorithm's metrics (train/noise, train/done) are not in the vocabulary.
pytestmark = pytest.mark.filterwarnings("ignore:metric .* is not in the metric vocabulary")


class FakeAlgorithm:
    """Counts iterations, draws from the global RNG and records what the runner calls."""

    def __init__(self, curriculum: Any, events: list[tuple]) -> None:
        self.curriculum = curriculum
        self.events = events
        self.done = 0

    def train_iteration(self) -> dict[str, float]:
        self.done += 1
        stage = None if self.curriculum is None else self.curriculum.stage
        self.events.append(("train", self.done, stage))
        return {"train/noise": float(np.random.random()), "train/done": float(self.done)}

    def evaluate(self, episodes: int) -> dict[str, float]:
        self.events.append(("evaluate", self.done, episodes))
        return {"eval/success_rate_stage0": 1.0, "eval/success_rate_stage1": 0.5}

    def state_dict(self) -> dict[str, Any]:
        return {"done": self.done}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.done = state["done"]


class RecordingCallback(Callback):
    """Records each moment the runner calls it at: (hook, iteration, what it was given)."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def on_iteration(self, runner: Runner, metrics: dict[str, float]) -> None:
        self.calls.append(("iteration", runner.iteration, metrics["train/done"]))

    def on_evaluation(self, runner: Runner, metrics: dict[str, float]) -> None:
        self.calls.append(("evaluation", runner.iteration, sorted(metrics)[0]))

    def on_checkpoint(self, runner: Runner, path: Path) -> None:
        self.calls.append(("checkpoint", runner.iteration, path.name))

    def on_train_end(self, runner: Runner) -> None:
        self.calls.append(("end", runner.iteration, runner.algorithm.done))


class RecordingCurriculum(AdaptiveCurriculum):
    """The adaptive curriculum, recording its hooks."""

    def __init__(self, events: list[tuple]) -> None:
        super().__init__(num_stages=3, threshold=0.9, replay=0.3)
        self.events = events

    def on_iteration(self, iteration: int, total: int) -> None:
        self.events.append(("on_iteration", iteration, total))

    def update(self, iteration: int, eval_metrics: Mapping[str, float]) -> None:
        self.events.append(("update", iteration, dict(eval_metrics)))
        super().update(iteration, eval_metrics)


def make_runner(run_dir: Path, algorithm_cls: type = FakeAlgorithm, curriculum: Any = "adaptive",
                resume_iteration: int | None = None, callbacks: tuple = (),
                stop: StopSignals | None = None, sinks: tuple = (),
                **settings: int) -> Runner:
    events: list[tuple] = []
    curriculum = RecordingCurriculum(events) if curriculum == "adaptive" else curriculum
    settings = {"iterations": 10, "eval_every": 4, "eval_episodes": 3, "checkpoint_every": 5,
                "log_every": 3, "keep_checkpoints": 100, **settings}
    return Runner(
        algorithm_cls(curriculum, events),
        curriculum,
        MetricLogger(run_dir / "metrics.jsonl", sinks, resume_iteration=resume_iteration),
        CheckpointManager(run_dir / "checkpoints"),
        callbacks,
        stop,
        progress=False,
        **settings,
    )


def iterations_with(rows: list[dict], key: str) -> list[int]:
    return [row["iteration"] for row in rows if key in row]


def checkpoint_iterations(runner: Runner) -> list[int]:
    return [CheckpointManager.load(path)["iteration"] for path in runner.checkpoints.paths()]


def test_cadences(tmp_path):
    runner = make_runner(tmp_path)
    runner.run()
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert iterations_with(rows, "train/done") == [3, 6, 9, 10]
    assert iterations_with(rows, "perf/iterations_per_second") == [3, 6, 9, 10]
    assert iterations_with(rows, "eval/success_rate_stage0") == [4, 8, 10]
    assert iterations_with(rows, "curriculum/stage") == [4, 8, 10]
    assert checkpoint_iterations(runner) == [5, 10]
    evaluations = [event for event in runner.algorithm.events if event[0] == "evaluate"]
    assert evaluations == [("evaluate", 4, 3), ("evaluate", 8, 3), ("evaluate", 10, 3)]


def test_every_zero_means_after_the_last_iteration(tmp_path):
    runner = make_runner(tmp_path, eval_every=0, checkpoint_every=0, log_every=1)
    final = runner.run()
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert iterations_with(rows, "train/done") == list(range(1, 11))
    assert iterations_with(rows, "eval/success_rate_stage0") == [10]
    assert checkpoint_iterations(runner) == [10]
    assert final["train/done"] == 10.0
    assert final["eval/success_rate_stage1"] == 0.5


def test_curriculum_hooks_order_and_arguments(tmp_path):
    runner = make_runner(tmp_path, iterations=6, eval_every=3)
    runner.run()
    evaluation = {"eval/success_rate_stage0": 1.0, "eval/success_rate_stage1": 0.5}
    expected: list[tuple] = []
    stage = 0
    for iteration in range(1, 7):
        expected += [("on_iteration", iteration, 6), ("train", iteration, stage)]
        if iteration % 3 == 0:
            expected += [("evaluate", iteration, 3), ("update", iteration, evaluation)]
            stage = 1  # stage 0 is solved; stage 1 (0.5) is not
    assert runner.algorithm.events == expected
    # The evaluation rows carry the curriculum's metrics after its update.
    eval_rows = [row for row in read_metrics(tmp_path / "metrics.jsonl")
                 if "curriculum/stage" in row]
    assert [row["curriculum/stage"] for row in eval_rows] == [1.0, 1.0]
    assert [row["curriculum/replay_share"] for row in eval_rows] == [0.3, 0.3]


def test_staged_curriculum_follows_the_run_length(tmp_path):
    runner = make_runner(tmp_path, curriculum=StagedCurriculum(schedule=[0, 0, 0, 1, 1, 2]),
                         iterations=12)
    runner.run()
    stages = [event[2] for event in runner.algorithm.events if event[0] == "train"]
    assert stages == [0] * 6 + [1] * 4 + [2] * 2


@pytest.mark.parametrize("stop", [4, 5])
def test_restore_continues_where_the_checkpoint_left_off(tmp_path, stop):
    seed_everything(0)
    full = make_runner(tmp_path / "full", checkpoint_every=stop)
    full_final = full.run()

    resumed_dir = tmp_path / "resumed"
    shutil.copytree(tmp_path / "full", resumed_dir)
    checkpoint = CheckpointManager.load(full.checkpoints.paths()[0])
    assert checkpoint["iteration"] == stop
    np.random.seed(123)  # the checkpoint's RNG state must win over this
    resumed = make_runner(resumed_dir, checkpoint_every=stop, resume_iteration=stop)
    resumed.restore(checkpoint)
    assert resumed.iteration == stop
    resumed_final = resumed.run()

    events = resumed.algorithm.events
    assert events[:2] == [("on_iteration", stop + 1, 10), ("train", stop + 1, 1)]
    assert resumed.algorithm.done == 10
    assert resumed.curriculum.stage == full.curriculum.stage
    assert without_perf(read_metrics(resumed_dir / "metrics.jsonl")) == without_perf(
        read_metrics(tmp_path / "full" / "metrics.jsonl"))
    assert without_perf([resumed_final]) == without_perf([full_final])


def test_a_run_resumed_after_its_last_iteration_returns_the_whole_runs_final_metrics(
    tmp_path,
):
    """A run killed between its last checkpoint and its exit has nothing left to train."""
    seed_everything(0)
    full = make_runner(tmp_path, checkpoint_every=10)
    final = full.run()
    resumed = make_runner(tmp_path, checkpoint_every=10, resume_iteration=10)
    resumed.restore(CheckpointManager.load(full.checkpoints.latest()))
    assert resumed.run() == final
    assert not [event for event in resumed.algorithm.events if event[0] == "train"]


def test_callbacks_are_called_at_each_moment_in_order(tmp_path):
    first, second = RecordingCallback(), RecordingCallback()
    runner = make_runner(tmp_path, callbacks=(first, second), iterations=5)
    runner.run()
    assert first.calls == second.calls == [
        ("iteration", 1, 1.0), ("iteration", 2, 2.0), ("iteration", 3, 3.0),
        ("iteration", 4, 4.0), ("evaluation", 4, "curriculum/replay_share"),
        ("iteration", 5, 5.0), ("evaluation", 5, "curriculum/replay_share"),
        ("checkpoint", 5, "ckpt_00000005.pt"),
        ("end", 5, 5)]


def test_a_run_without_curriculum_logs_and_saves_none(tmp_path):
    runner = make_runner(tmp_path, curriculum=None)
    runner.run()
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert not [key for row in rows for key in row if key.startswith("curriculum/")]
    saved = CheckpointManager.load(runner.checkpoints.latest())
    assert saved["curriculum"] is None
    resumed = make_runner(tmp_path, curriculum=None, resume_iteration=10)
    resumed.restore(saved)
    assert resumed.run()["train/done"] == 10.0


class DivergingAlgorithm(FakeAlgorithm):
    """Its 7th iteration's loss is NaN: it raises before changing anything."""

    def train_iteration(self) -> dict[str, float]:
        if self.done == 6:
            check_finite("the fake loss", torch.tensor(float("nan")))
        return super().train_iteration()


def test_a_nan_loss_stops_the_run_after_saving_the_last_good_state(tmp_path):
    runner = make_runner(tmp_path, DivergingAlgorithm, checkpoint_every=5)
    with pytest.raises(NonFiniteLossError,
                       match=r"iteration 7: the fake loss is nan; training stopped, the last "
                             r"good state is saved in .*ckpt_00000006\.pt"):
        runner.run()
    assert checkpoint_iterations(runner) == [5, 6]
    saved = CheckpointManager.load(runner.checkpoints.latest())
    assert saved["algorithm"] == {"done": 6}
    resumed = make_runner(tmp_path, checkpoint_every=5, resume_iteration=6)
    resumed.restore(saved)
    resumed.run()  # a run that no longer diverges goes on from iteration 7
    assert resumed.algorithm.done == 10


class CountingEnvSteps(FakeAlgorithm):
    """Takes 7 env steps an iteration."""

    def train_iteration(self) -> dict[str, float]:
        metrics = super().train_iteration()
        return {**metrics, "train/env_steps": 7.0 * self.done}


def test_an_env_step_budget_ends_the_run_at_the_iteration_that_reaches_it(tmp_path):
    runner = make_runner(tmp_path, CountingEnvSteps, iterations=100, env_steps=30,
                         eval_every=50, checkpoint_every=50, log_every=10)
    final = runner.run()
    assert runner.algorithm.done == 5 and final["train/env_steps"] == 35.0  # 5 x 7 >= 30
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert iterations_with(rows, "train/done") == [5]  # the last iteration is logged,
    assert iterations_with(rows, "eval/success_rate_stage0") == [5]  # evaluated
    assert checkpoint_iterations(runner) == [5]  # and saved
    resumed = make_runner(tmp_path, CountingEnvSteps, iterations=100, env_steps=30,
                          resume_iteration=5)
    resumed.restore(CheckpointManager.load(runner.checkpoints.latest()))
    assert resumed.run()["train/env_steps"] == 35.0 and resumed.algorithm.done == 5


class BlowsUpItsParameters(FakeAlgorithm):
    """Its 7th iteration's optimizer step leaves parameters NaN: its state is bad."""

    def train_iteration(self) -> dict[str, float]:
        metrics = super().train_iteration()
        if self.done == 7:
            raise NonFiniteParametersError("the fake step made parameters nan or inf")
        return metrics


def test_parameters_an_optimizer_step_made_nan_stop_the_run_without_saving_them(tmp_path):
    runner = make_runner(tmp_path, BlowsUpItsParameters, checkpoint_every=5)
    with pytest.raises(NonFiniteParametersError,
                       match=r"iteration 7: the fake step made parameters nan or inf; training "
                             r"stopped, the last good state is the checkpoint .*ckpt_0+5\.pt"):
        runner.run()
    assert checkpoint_iterations(runner) == [5]  # the bad state of iteration 7 is not saved


class Stopper(FakeAlgorithm):
    """Asks the runner to stop, as a stop signal would, during its ``stop_at``-th iteration."""

    stop_at = 7

    def __init__(self, curriculum: Any, events: list[tuple]) -> None:
        super().__init__(curriculum, events)
        self.stop: StopSignals | None = None

    def train_iteration(self) -> dict[str, float]:
        metrics = super().train_iteration()
        if self.done == self.stop_at and self.stop is not None:
            self.stop.requested = 15  # SIGTERM
        return metrics


class RecordingSink:
    """Records the rows the logger sends on; ``stored`` are the rows an earlier start of its
    run kept (a killed process may have sent more)."""

    def __init__(self, stored: list[dict] | None = None) -> None:
        self.rows: list[dict] = []
        self.stored = stored or []

    def log(self, row: Mapping[str, Any]) -> None:
        self.rows.append(dict(row))

    def logged(self) -> list[dict]:
        return self.stored

    def finish(self, exit_code: int, stopped: bool = False) -> None:
        pass


def test_a_stop_request_ends_the_iteration_saves_it_and_a_resume_ends_as_if_never_stopped(
    tmp_path,
):
    seed_everything(0)
    make_runner(tmp_path / "whole").run()
    seed_everything(0)
    stop, sink = StopSignals(), RecordingSink()
    runner = make_runner(tmp_path / "run", Stopper, stop=stop, sinks=(sink,))
    runner.algorithm.stop = stop
    with pytest.raises(RunStopped, match="SIGTERM after iteration 7") as stopped:
        runner.run()
    assert stopped.value.exit_code == 143
    assert checkpoint_iterations(runner) == [5, 7]  # the cadence's, and the stop's
    assert [row["iteration"] for row in sink.rows] == [3, 4, 6]  # rows of saved iterations

    sink = RecordingSink(stored=sink.rows)
    resumed = make_runner(tmp_path / "run", resume_iteration=7, sinks=(sink,))
    resumed.restore(CheckpointManager.load(runner.checkpoints.latest()))
    resumed.run()
    assert without_perf(read_metrics(tmp_path / "run" / "metrics.jsonl")) == without_perf(
        read_metrics(tmp_path / "whole" / "metrics.jsonl"))
    assert [row["iteration"] for row in sink.rows] == [8, 9, 10, 10]  # the rest, once


def test_sinks_get_each_row_once_across_a_kill_between_checkpoints(tmp_path):
    sink = RecordingSink()
    logger = MetricLogger(tmp_path / "metrics.jsonl", [sink])
    for iteration in range(1, 8):
        logger.log(iteration, {"train/loss_value": float(iteration)})
        if iteration == 5:
            logger.commit(5)  # after the checkpoint of iteration 5
    assert [row["iteration"] for row in sink.rows] == [1, 2, 3, 4, 5]  # 6, 7: not yet
    # Killed after iteration 7; the resumed run restarts from checkpoint 5 and logs 6, 7 again.
    resumed_sink = RecordingSink(stored=sink.rows)
    resumed = MetricLogger(tmp_path / "metrics.jsonl", [resumed_sink], resume_iteration=5)
    for iteration in (6, 7):
        resumed.log(iteration, {"train/loss_value": float(iteration)})
    resumed.commit(7)
    assert [row["iteration"] for row in sink.rows + resumed_sink.rows] == [1, 2, 3, 4, 5, 6, 7]


def test_a_resumed_logger_first_sends_the_rows_its_sink_never_stored(tmp_path):
    """Killed at once: rows 3 to 5 were sent after checkpoint 5, but never stored."""
    logger = MetricLogger(tmp_path / "metrics.jsonl", [RecordingSink()])
    for iteration in range(1, 6):
        logger.log(iteration, {"train/loss_value": float(iteration)})
    stored = [{"iteration": i, "train/loss_value": float(i)} for i in (1, 2)]
    sink = RecordingSink(stored)
    MetricLogger(tmp_path / "metrics.jsonl", [sink], resume_iteration=5)
    assert [row["iteration"] for row in sink.rows] == [3, 4, 5]


def test_the_progress_bar_names_eval_and_train_figures_apart():
    metrics = {"train/episode_return": 1.234, "eval/success_rate": 0.5, "memory/skills": 3.0,
               "eval/episode_return": 2.0}
    assert progress_postfix(metrics, "eval/episode_return") == {
        "eval/episode_return": "2", "train/episode_return": "1.23", "eval/success_rate": "0.5"}


def test_a_callback_that_stops_training_decides_the_same_after_a_resume(tmp_path):
    def stopping_runner(run_dir, **settings):
        patience = EarlyStopping(metric="train/done", mode="min", patience=3)
        return make_runner(run_dir, callbacks=(patience,), checkpoint_every=2, **settings)

    full = stopping_runner(tmp_path / "full")
    full.run()
    assert (full.iteration, full.stop_reason) == (4, "early stopping: train/done did not "
                                                     "improve on 1 for 3 values, at iteration 4")
    assert checkpoint_iterations(full) == [2, 4]  # it ends where it stopped, saved

    shutil.copytree(tmp_path / "full", tmp_path / "resumed")
    resumed = stopping_runner(tmp_path / "resumed", resume_iteration=2)
    resumed.restore(CheckpointManager.load(full.checkpoints.paths()[0]))
    resumed.run()  # its callback remembers the best and the count: it stops at 4 too
    assert (resumed.iteration, resumed.stop_reason) == (full.iteration, full.stop_reason)
