"""Files one run reads from another (checkpoints, ``env_model.pt``, a policy run's
checkpoint) are data: a file that carries code is refused naming it, and its code never
runs; a checkpoint of another run is refused before the run's files change."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from procmem import app
from procmem.run.run_dir import RunDir
from procmem.run.status import STOPPED, RunStatus
from procmem.safe_load import UnsafeFileError, load_data_file

from helpers import TINY, finished_tiny_run, run_cli, wandb_summary


class PlantedCode:
    """Loading a pickle of this runs ``touch <marker>``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return os.system, (f"touch {self.marker}",)


def plant(path: Path, marker: Path, **payload: object) -> None:
    """Write a checkpoint-looking file at ``path`` whose loading would run code."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"format_version": 1, "iteration": 99, "algorithm": PlantedCode(marker),
                **payload}, path)


def snapshot(run_dir: Path) -> dict[str, bytes]:
    """Every file of a dir with its content."""
    return {str(p.relative_to(run_dir)): p.read_bytes()
            for p in sorted(run_dir.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny finished skill-library run logged to W&B."""
    return finished_tiny_run(tmp_path_factory.mktemp("finished"), logger="wandb")


def stopped_copy(run_dir: Path, to: Path) -> Path:
    """A copy of a finished run that says it was stopped after its last iteration."""
    copy = Path(shutil.copytree(run_dir, to, symlinks=True))
    RunDir(copy).write_status(RunStatus(STOPPED, "SIGTERM after iteration 12"))
    return copy


def test_loading_a_file_that_carries_code_refuses_it_without_running_it(tmp_path: Path
                                                                        ) -> None:
    marker = tmp_path / "marker"
    plant(tmp_path / "file.pt", marker)
    with pytest.raises(UnsafeFileError, match="file.pt: refused: it holds posix.system"):
        load_data_file(tmp_path / "file.pt")
    assert not marker.exists()


def test_data_a_run_saves_loads_back_as_it_was(tmp_path: Path) -> None:
    state = {"empty": np.zeros((0, 3), dtype=np.int64), "array": np.arange(4.0),
             "scalar": np.float32(1.5), "rng": np.random.default_rng(3).bit_generator.state,
             "generator": np.random.default_rng(4), "tensor": torch.ones(2), "text": b"ab",
             "nothing": b""}
    torch.save(state, tmp_path / "state.pt")
    loaded = load_data_file(tmp_path / "state.pt")
    assert loaded["empty"].shape == (0, 3) and loaded["empty"].dtype == np.int64
    assert loaded["array"].tolist() == [0.0, 1.0, 2.0, 3.0] and loaded["scalar"] == 1.5
    assert loaded["rng"] == state["rng"]
    assert loaded["generator"].random() == np.random.default_rng(4).random()
    assert loaded["tensor"].tolist() == [1.0, 1.0]
    assert (loaded["text"], loaded["nothing"]) == (b"ab", b"")


@pytest.mark.parametrize("command", [pytest.param("evaluate", marks=pytest.mark.slow), "resume"])
def test_a_planted_newest_checkpoint_is_refused_and_its_code_never_runs(
        finished_run: Path, tmp_path: Path, command: str) -> None:
    run_dir = stopped_copy(finished_run, tmp_path / "run")
    marker = tmp_path / "marker"
    planted = run_dir / "checkpoints" / "ckpt_00000099.pt"
    plant(planted, marker)
    before = snapshot(run_dir)

    arguments = {"evaluate": ("evaluate.py", f"run={run_dir}"),
                 "resume": ("train.py", f"resume={run_dir}")}[command]
    result = run_cli(*arguments, check=False)

    assert result.returncode == 4, result.stderr[-2000:]
    assert result.stderr.strip() == (
        f"checkpoint error: {planted}: refused: it holds posix.system, not data (tensors, "
        "arrays, numbers, strings); loading it could run code; the previous checkpoint "
        f"{run_dir / 'checkpoints' / 'ckpt_00000012.pt'} is kept: remove ckpt_00000099.pt to "
        "resume from it")
    assert not marker.exists()
    assert snapshot(run_dir) == before


def test_a_planted_env_model_is_refused_and_its_code_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    model_file = tmp_path / "model_run" / "env_model.pt"
    plant(model_file, marker)
    result = run_cli("train.py", "experiment=i2a_minipacman", "logger=none",
                     f"agent.env_model_run={model_file.parent}", "trainer.iterations=1",
                     f"hydra.run.dir={tmp_path / 'run'}", check=False)
    assert result.returncode == 4, result.stderr[-2000:]
    assert result.stderr.strip() == (f"checkpoint error: {model_file}: refused: it holds "
                                     "posix.system, not data (tensors, arrays, numbers, "
                                     "strings); loading it could run code")
    assert not marker.exists()
    assert not (tmp_path / "run").exists()


def test_a_planted_policy_checkpoint_is_refused_and_its_code_never_runs(tmp_path: Path
                                                                         ) -> None:
    marker = tmp_path / "marker"
    policy_run = RunDir(tmp_path / "policy_run")
    policy_run.write_config(app.compose_config(["experiment=a2c_minipacman"]))
    plant(policy_run.path / "checkpoints" / "ckpt_00000001.pt", marker)
    result = run_cli("train.py", "experiment=envmodel_minipacman", "logger=none",
                     f"agent.policy_run={policy_run.path}", "trainer.iterations=1",
                     f"hydra.run.dir={tmp_path / 'run'}", check=False)
    assert result.returncode == 4, result.stderr[-2000:]
    assert result.stderr.strip().startswith(
        f"checkpoint error: {policy_run.path / 'checkpoints' / 'ckpt_00000001.pt'}: refused: "
        "it holds posix.system")
    assert not marker.exists()
    assert not (tmp_path / "run").exists()


@pytest.fixture(scope="module")
def other_agents_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The newest checkpoint of a tiny A2C run on the gridworld."""
    run_dir = tmp_path_factory.mktemp("a2c") / "run"
    run_cli("train.py", "agent=a2c", *TINY, "logger=none", f"hydra.run.dir={run_dir}")
    return RunDir(run_dir).checkpoints().latest()


@pytest.mark.parametrize("stamped", [pytest.param(True, marks=pytest.mark.slow),
                                     pytest.param(False, marks=pytest.mark.slow)],
                         ids=["stamped", "written before stamps"])
def test_another_runs_checkpoint_is_refused_before_any_file_changes(
        finished_run: Path, other_agents_checkpoint: Path, tmp_path: Path, stamped: bool
) -> None:
    run_dir = stopped_copy(finished_run, tmp_path / "run")
    foreign = run_dir / "checkpoints" / "ckpt_00000016.pt"
    checkpoint = load_data_file(other_agents_checkpoint)
    if not stamped:
        del checkpoint["owner"]
    torch.save(checkpoint, foreign)
    before = snapshot(run_dir)

    result = run_cli("train.py", f"resume={run_dir}", check=False)

    assert result.returncode == 4, result.stderr[-2000:]
    other_id = RunDir(other_agents_checkpoint.parents[1]).run_id()
    reason = (f"belongs to another run (it was saved by run {other_id}; this run is "
              f"{RunDir(run_dir).run_id()})" if stamped
              else "does not fit this run (KeyError: 'memory')")
    assert result.stderr.strip() == (
        f"checkpoint error: {foreign}: {reason}; the previous checkpoint "
        f"{run_dir / 'checkpoints' / 'ckpt_00000012.pt'} is kept: remove ckpt_00000016.pt to "
        "resume from it")
    assert snapshot(run_dir) == before  # metrics.jsonl, status.json and wandb/ included

    if not stamped:
        return  # the rest is as for a stamped one
    foreign.unlink()  # as the message says
    run_cli("train.py", f"resume={run_dir}")
    assert RunDir(run_dir).metrics() == RunDir(finished_run).metrics()
    assert RunDir(run_dir).status().status == "finished"
    assert wandb_summary(run_dir)["summary"]["iteration"] == 12


@pytest.mark.slow
def test_a_checkpoint_written_before_stamps_still_resumes(finished_run: Path, tmp_path: Path
                                                          ) -> None:
    run_dir = stopped_copy(finished_run, tmp_path / "run")
    latest = RunDir(run_dir).checkpoints().latest()
    checkpoint = load_data_file(latest)
    del checkpoint["owner"]
    torch.save(checkpoint, latest)
    run_cli("train.py", f"resume={run_dir}")
    assert RunDir(run_dir).status().status == "finished"
