"""The fault matrix: what a run does when it is killed, its files are damaged, its disk fills,
its loss diverges, one job of a multirun fails, or an override names no option.

| case                                   | expected                                           |
|----------------------------------------|----------------------------------------------------|
| SIGKILL at a random moment, resume     | same metrics as a run never stopped                |
| truncated/garbage/empty/foreign ckpt   | exit 4, names the file and the previous checkpoint |
| corrupt skill library file             | SkillLibraryError naming the file                  |
| corrupt env model file                 | exit 4, names the file                             |
| disk full writing a checkpoint         | CheckpointError; previous checkpoint intact        |
| disk full writing skills.json          | OSError naming the file; old file intact           |
| NaN/inf loss                           | exit 3, names iteration, loss and saved checkpoint |
| one job of a multirun fails            | others finish; failed in W&B, status and compare   |
| unknown group option                   | Hydra lists the group's options                    |
"""

from __future__ import annotations

import errno
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from procmem import app, io
from procmem.run.checkpoint import CheckpointError, CheckpointManager
from procmem.run.loggers import MetricLogger, read_metrics
from procmem.run.run_dir import RunDir
from procmem.skills.library import SkillLibrary, SkillLibraryError

from helpers import ROOT, TINY, run_cli, wandb_summary, without_perf


def final_rows(run_dir: Path) -> list[dict]:
    return without_perf(read_metrics(run_dir / "metrics.jsonl"))


def checkpoint_names(run_dir: Path) -> list[str]:
    return sorted(p.name for p in (run_dir / "checkpoints").iterdir())


# --- SIGKILL ---------------------------------------------------------------------------------

KILLED_RUNS = {
    "procedural_gridworld": ["trainer.iterations=40", "trainer.checkpoint_every=3",
                             "trainer.eval_every=10", "trainer.eval_episodes=3"],
    "a2c_minigrid": ["trainer.iterations=120", "trainer.checkpoint_every=7",
                     "trainer.eval_every=40", "trainer.eval_episodes=4"],
}


def kill_at_random_moment(command: list[str], run_dir: Path, rng: random.Random) -> str:
    """Start ``command``; once it has logged a new metric row, SIGKILL it after a random
    delay (up to 1.5 s). Returns what happened, for failure messages."""
    metrics = run_dir / "metrics.jsonl"

    def rows() -> int:
        return metrics.read_text().count("\n") if metrics.is_file() else 0

    before = rows()
    process = subprocess.Popen([sys.executable, *command], cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while rows() <= before and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    delay = rng.uniform(0.0, 1.5)
    time.sleep(delay)
    process.send_signal(signal.SIGKILL)
    process.wait()
    return f"killed {delay:.3f} s after a new row, at row {rows()}, {checkpoint_names(run_dir)}"


@pytest.mark.slow
@pytest.mark.parametrize("experiment", sorted(KILLED_RUNS))
def test_sigkill_at_a_random_moment_then_resume_ends_as_if_never_stopped(
    tmp_path: Path, experiment: str
) -> None:
    overrides = [f"experiment={experiment}", "logger=none", "trainer.progress=false",
                 *KILLED_RUNS[experiment]]
    run_cli("train.py", *overrides, f"hydra.run.dir={tmp_path / 'whole'}")

    run_dir = tmp_path / "killed"
    rng = random.Random(experiment)
    history = [kill_at_random_moment(["train.py", *overrides, f"hydra.run.dir={run_dir}"],
                                     run_dir, rng)]
    history.append(kill_at_random_moment(["train.py", f"resume={run_dir}"], run_dir, rng))
    run_cli("train.py", f"resume={run_dir}")

    assert final_rows(run_dir) == final_rows(tmp_path / "whole"), history
    assert checkpoint_names(run_dir) == checkpoint_names(tmp_path / "whole"), history
    assert RunDir(run_dir).status().status == "finished"


def test_a_metrics_row_cut_off_by_a_kill_is_left_out(tmp_path: Path) -> None:
    logger = MetricLogger(tmp_path / "metrics.jsonl")
    for iteration in (1, 2, 3):
        logger.log(iteration, {"train/loss_value": float(iteration)})
    with (tmp_path / "metrics.jsonl").open("a") as f:
        f.write('{"iteration": 4, "train/lo')  # the kill came mid-write
    assert [r["iteration"] for r in read_metrics(tmp_path / "metrics.jsonl")] == [1, 2, 3]
    MetricLogger(tmp_path / "metrics.jsonl", resume_iteration=2)
    assert (tmp_path / "metrics.jsonl").read_text().splitlines() == [
        '{"iteration": 1, "train/loss_value": 1.0}', '{"iteration": 2, "train/loss_value": 2.0}']


def test_the_next_save_removes_a_checkpoint_write_cut_off_by_a_kill(tmp_path: Path) -> None:
    checkpoints = CheckpointManager(tmp_path)
    checkpoints.save(1, {"x": 1})
    (tmp_path / ".ckpt_00000002.pt.abc123.tmp").write_bytes(b"half a checkpoint")
    assert checkpoints.latest() == tmp_path / "ckpt_00000001.pt"
    checkpoints.save(2, {"x": 2})
    assert sorted(os.listdir(tmp_path)) == ["ckpt_00000001.pt", "ckpt_00000002.pt"]


# --- damaged files ---------------------------------------------------------------------------

DAMAGE = {
    "truncated": lambda data: data[: len(data) // 2],
    "garbage": lambda data: bytes(random.Random(0).randbytes(len(data))),
    "empty": lambda data: b"",
}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny finished skill-library run: checkpoints 4, 8 and 12, and skills.json."""
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    run_cli("train.py", *TINY, "logger=none", f"hydra.run.dir={run_dir}")
    return run_dir


def copy_run(run_dir: Path, to: Path) -> Path:
    return Path(shutil.copytree(run_dir, to))


@pytest.mark.parametrize("damage", [*DAMAGE, "foreign"])
def test_a_damaged_latest_checkpoint_stops_resume_naming_it_and_keeps_the_previous(
    finished_run: Path, tmp_path: Path, damage: str
) -> None:
    run_dir = copy_run(finished_run, tmp_path / "run")
    latest = run_dir / "checkpoints" / "ckpt_00000012.pt"
    if damage == "foreign":
        torch.save({"weights": torch.zeros(3)}, latest)
    else:
        latest.write_bytes(DAMAGE[damage](latest.read_bytes()))
    metrics_before = (run_dir / "metrics.jsonl").read_text()

    result = run_cli("train.py", f"resume={run_dir}", check=False)

    assert result.returncode == 4, result.stderr[-2000:]
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith(f"checkpoint error: {latest}: ")
    assert message.endswith(f"the previous checkpoint {latest.with_name('ckpt_00000008.pt')} "
                            "is kept: remove ckpt_00000012.pt to resume from it")
    assert checkpoint_names(run_dir) == [f"ckpt_0000000{i}.pt" for i in (4, 8)] + [latest.name]
    assert CheckpointManager.load(latest.with_name("ckpt_00000008.pt"))["iteration"] == 8
    assert (run_dir / "metrics.jsonl").read_text() == metrics_before
    assert RunDir(run_dir).status().status == "failed"


@pytest.mark.slow
def test_removing_the_damaged_checkpoint_resumes_from_the_previous_one(
    finished_run: Path, tmp_path: Path
) -> None:
    run_dir = copy_run(finished_run, tmp_path / "run")
    latest = run_dir / "checkpoints" / "ckpt_00000012.pt"
    latest.write_bytes(DAMAGE["truncated"](latest.read_bytes()))
    assert run_cli("train.py", f"resume={run_dir}", check=False).returncode == 4
    latest.unlink()  # as the message says
    run_cli("train.py", f"resume={run_dir}")
    assert final_rows(run_dir) == final_rows(finished_run)
    assert RunDir(run_dir).status().status == "finished"


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_skill_library_file_is_refused_naming_it(
    finished_run: Path, tmp_path: Path, damage: str
) -> None:
    path = tmp_path / "skills.json"
    path.write_bytes(DAMAGE[damage]((finished_run / "skills.json").read_bytes()))
    with pytest.raises(SkillLibraryError, match=re.escape(str(path))):
        SkillLibrary.load(path)


def test_a_damaged_env_model_file_stops_the_run_naming_it(tmp_path: Path) -> None:
    (tmp_path / "env_model").mkdir()
    model_file = tmp_path / "env_model" / "env_model.pt"
    model_file.write_bytes(b"\x80\x02not a model")
    result = run_cli("train.py", "experiment=i2a_minipacman", "logger=none",
                     f"agent.env_model_run={model_file.parent}", "trainer.iterations=1",
                     f"hydra.run.dir={tmp_path / 'run'}", check=False)
    assert result.returncode == 4, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1].startswith(
        f"checkpoint error: {model_file}: unreadable env model (")


# --- a full disk -----------------------------------------------------------------------------


@pytest.fixture
def full_disk(monkeypatch: pytest.MonkeyPatch):
    """``full_disk(prefix, after=k)``: from the ``k+1``-th atomic write of a file whose name
    starts with ``prefix``, the disk is full: the data went into the temp file, but ``fsync``
    (where a full disk shows up for buffered writes) fails with ENOSPC."""

    def fill(prefix: str, after: int = 0) -> None:
        make_temp, sync = io.tempfile.mkstemp, io.os.fsync
        names: dict[int, str] = {}
        writes = []

        def mkstemp(*args, **kwargs):
            fd, name = make_temp(*args, **kwargs)
            names[fd] = Path(name).name
            return fd, name

        def fsync(fd: int) -> None:
            if names.get(fd, "").startswith(f".{prefix}"):
                writes.append(fd)
                if len(writes) > after:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            sync(fd)

        monkeypatch.setattr(io.tempfile, "mkstemp", mkstemp)
        monkeypatch.setattr(io.os, "fsync", fsync)

    return fill


def test_disk_full_while_writing_a_checkpoint_keeps_the_previous_one(
    tmp_path: Path, full_disk, monkeypatch: pytest.MonkeyPatch, one_torch_thread
) -> None:
    cfg = app.compose_config([*TINY, "logger=none"])
    app.train(cfg, tmp_path / "whole")
    run_dir = tmp_path / "run"
    full_disk("ckpt_", after=1)

    with pytest.raises(CheckpointError) as raised:
        app.train(cfg, run_dir)

    previous = run_dir / "checkpoints" / "ckpt_00000004.pt"
    assert str(raised.value) == (
        f"{run_dir / 'checkpoints' / 'ckpt_00000008.pt'}: could not write the checkpoint "
        f"(No space left on device); the previous checkpoint {previous} is intact")
    assert os.listdir(run_dir / "checkpoints") == [previous.name]  # no half-written file
    assert CheckpointManager.load(previous)["iteration"] == 4
    assert RunDir(run_dir).status().error == f"CheckpointError: {raised.value}"

    monkeypatch.undo()  # space freed: the run resumes from the intact checkpoint
    app.train(cfg, run_dir, resume=True)
    assert final_rows(run_dir) == final_rows(tmp_path / "whole")


def test_disk_full_while_writing_the_skill_library_keeps_the_old_file(
    finished_run: Path, tmp_path: Path, full_disk
) -> None:
    path = tmp_path / "skills.json"
    path.write_bytes((finished_run / "skills.json").read_bytes())
    library = SkillLibrary.load(path)
    library.add("more", [1, 2], {name: True for name in library.precondition_keys},
                torch.ones(library.embedding_dim))
    full_disk("skills.json")
    with pytest.raises(OSError, match=re.escape(f"No space left on device: '{path}'")):
        library.save(path)
    assert path.read_bytes() == (finished_run / "skills.json").read_bytes()
    assert os.listdir(tmp_path) == ["skills.json"]


# --- a diverging loss ------------------------------------------------------------------------


def test_an_inf_loss_stops_the_run_with_exit_3_after_saving_the_last_good_state(
    tmp_path: Path,
) -> None:
    result = run_cli("train.py", "experiment=a2c_minigrid", "logger=none",
                     "trainer.progress=false", "agent.optimizer=adam", "agent.lr=1e30",
                     "trainer.iterations=5", f"hydra.run.dir={tmp_path}", check=False)
    assert result.returncode == 3, result.stderr[-2000:]
    message = result.stderr.strip().splitlines()[-1]
    saved = re.fullmatch(r"training stopped: iteration (\d+): the A2C loss is (nan|inf); "
                         r"training stopped, the last good state is saved in (\S+)", message)
    assert saved, message
    iteration, path = int(saved.group(1)), Path(saved.group(3))
    assert CheckpointManager.load(path)["iteration"] == iteration - 1
    assert RunDir(tmp_path).status().status == "failed"


# --- a failing job in a multirun -------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["basic", "joblib"])
def test_a_failing_multirun_job_leaves_the_others_running_and_is_reported_failed(
    tmp_path: Path, launcher: str
) -> None:
    sweep = tmp_path / "sweep"
    result = run_cli("train.py", "-m", "experiment=a2c_minigrid", "logger=wandb",
                     "trainer.progress=false", "trainer.iterations=4", "trainer.eval_every=4",
                     "trainer.eval_episodes=2", "agent.optimizer=adam", "agent.lr=1e-3,1e30,1e-3",
                     f"hydra/launcher={launcher}", f"hydra.sweep.dir={sweep}", check=False)

    assert result.returncode == 1
    assert re.search(rf"job {sweep / '1'} failed: training stopped: iteration \d+: the A2C "
                     r"loss is (nan|inf)", result.stderr), result.stderr[-2000:]
    for job, state in (("0", "finished"), ("1", "failed"), ("2", "finished")):
        assert RunDir(sweep / job).status().status == state
        assert wandb_summary(sweep / job)["exit_code"] == (state == "failed")
    assert "eval/episode_return" in wandb_summary(sweep / "2")["summary"]

    report = run_cli("evaluate.py", f"compare={sweep}", "report=true").stdout
    assert re.search(rf"left out: {sweep / '1'}: failed \(NonFiniteLossError: iteration \d+: "
                     r"the A2C loss", report), report
    markdown = (sweep / "comparison.md").read_text()
    assert "| (defaults) | eval/episode_return | 2 |" in markdown  # the two finished runs
    assert f"- `{sweep / '1'}`: failed (NonFiniteLossError: iteration" in markdown

    logged = wandb_summary(sweep)  # the report run, beside the jobs in their W&B group
    assert (logged["name"], logged["exit_code"]) == ("compare sweep", 0)
    assert logged["summary"]["compare/summary"]["nrows"] == len(
        (sweep / "comparison.csv").read_text().splitlines()) - 1
    runs_table = json.loads(next(sweep.glob("wandb/offline-run-*/files/" + logged["summary"][
        "compare/runs"]["path"])).read_text())
    assert [row[:2] + row[3:] for row in runs_table["data"]] == [
        [str(sweep / "0"), "(defaults)", "finished", None],
        [str(sweep / "1"), "(left out)", "failed", RunDir(sweep / "1").status().error],
        [str(sweep / "2"), "(defaults)", "finished", None]]
    assert {"compare/comparison", "compare/curves"} <= set(logged["summary"])


# --- a mistyped override ---------------------------------------------------------------------


def test_an_unknown_group_option_lists_the_available_ones(tmp_path: Path) -> None:
    result = run_cli("train.py", "agent=i2b", "logger=none", f"hydra.run.dir={tmp_path}",
                     check=False)
    assert result.returncode == 1
    assert "Could not find 'agent/i2b'" in result.stderr
    listed = result.stderr.split("Available options in 'agent':", 1)[1].split()
    assert {p.stem for p in (ROOT / "conf" / "agent").glob("*.yaml")} <= set(listed)
