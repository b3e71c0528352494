"""The fault matrix: what a run does when it is killed or stopped by a signal, its files are
damaged, its disk fills, its training diverges, or a job of a multirun fails or is refused.
The table of faults and bad inputs (docs/faults.md) names the test of each row."""

from __future__ import annotations

import errno
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from procmem import app, io
from procmem.run.checkpoint import CheckpointError, CheckpointManager
from procmem.run.loggers import MetricLogger, read_metrics, read_wandb_history
from procmem.run.run_dir import RunDir
from procmem.run.status import STOPPED, RunStatus
from procmem.skills.library import SkillLibrary, SkillLibraryError

from helpers import ROOT, TINY, finished_tiny_run, run_cli, wandb_summary, without_perf


def final_rows(run_dir: Path) -> list[dict]:
    return without_perf(read_metrics(run_dir / "metrics.jsonl"))


def checkpoint_names(run_dir: Path) -> list[str]:
    return sorted(p.name for p in (run_dir / "checkpoints").iterdir())


# --- SIGKILL, SIGTERM, SIGINT -----------------------------------------------------------------

KILLED_RUNS = {
    "procedural_gridworld": ["trainer.iterations=40", "trainer.checkpoint_every=3",
                             "trainer.eval_every=10", "trainer.eval_episodes=3"],
    "a2c_minigrid": ["trainer.iterations=120", "trainer.checkpoint_every=7",
                     "trainer.eval_every=40", "trainer.eval_episodes=4"],
    "a2c_skills_gridworld": ["trainer.iterations=90", "trainer.checkpoint_every=7",
                             "trainer.eval_every=30", "trainer.eval_episodes=4"],
}


def rows_in(run_dir: Path) -> int:
    metrics = run_dir / "metrics.jsonl"
    return metrics.read_text().count("\n") if metrics.is_file() else 0


def signal_at_random_moment(command: list[str], run_dir: Path, rng: random.Random,
                            signum: int = signal.SIGKILL, times: int = 1
                            ) -> tuple[str, subprocess.CompletedProcess]:
    """Start ``command``; once it has logged a new metric row, send it ``signum`` after a
    random delay (up to 1.5 s), ``times`` times in a row. Returns what happened (for failure
    messages) and the finished process."""
    before = rows_in(run_dir)
    process = subprocess.Popen([sys.executable, *command], cwd=ROOT, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while rows_in(run_dir) <= before and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    delay = rng.uniform(0.0, 1.5)
    time.sleep(delay)
    for _ in range(times):
        process.send_signal(signum)
    stdout, stderr = process.communicate(timeout=300)
    history = (f"{signal.Signals(signum).name} x{times} {delay:.3f} s after a new row, at row "
               f"{rows_in(run_dir)}, {checkpoint_names(run_dir)}")
    return history, subprocess.CompletedProcess(process.args, process.returncode, stdout,
                                                stderr)


def run_whole(tmp_path: Path, overrides: list[str]) -> Path:
    run_cli("train.py", *overrides, f"hydra.run.dir={tmp_path / 'whole'}")
    return tmp_path / "whole"


def stopped_overrides(experiment: str) -> list[str]:
    return [f"experiment={experiment}", "logger=none", "trainer.progress=false",
            *KILLED_RUNS[experiment]]


@pytest.mark.slow
@pytest.mark.parametrize("experiment", sorted(KILLED_RUNS))
def test_sigkill_at_a_random_moment_then_resume_ends_as_if_never_stopped(
    tmp_path: Path, experiment: str
) -> None:
    overrides = stopped_overrides(experiment)
    whole = run_whole(tmp_path, overrides)
    run_dir = tmp_path / "killed"
    rng = random.Random(experiment)
    history = [signal_at_random_moment(["train.py", *overrides, f"hydra.run.dir={run_dir}"],
                                       run_dir, rng)[0]]
    history.append(signal_at_random_moment(["train.py", f"resume={run_dir}"], run_dir, rng)[0])
    run_cli("train.py", f"resume={run_dir}")

    assert final_rows(run_dir) == final_rows(whole), history
    assert checkpoint_names(run_dir) == checkpoint_names(whole), history
    assert RunDir(run_dir).status().status == "finished"


@pytest.mark.slow
@pytest.mark.parametrize("experiment", sorted(KILLED_RUNS))
@pytest.mark.parametrize(("signum", "times"), [(signal.SIGTERM, 1), (signal.SIGINT, 1),
                                               (signal.SIGTERM, 2)],
                         ids=["SIGTERM", "SIGINT", "SIGTERM twice"])
def test_a_stop_signal_at_a_random_moment_stops_cleanly_and_resume_ends_as_if_never_stopped(
    tmp_path: Path, experiment: str, signum: int, times: int
) -> None:
    """One signal: the iteration ends, is saved, and the run says ``stopped`` with the
    command that resumes it; a second one stops at once. Either way the resumed run ends as
    if it had never stopped."""
    overrides = stopped_overrides(experiment)
    whole = run_whole(tmp_path, overrides)
    run_dir = tmp_path / "stopped"
    history, stopped = signal_at_random_moment(
        ["train.py", *overrides, f"hydra.run.dir={run_dir}"], run_dir,
        random.Random(f"{experiment}{signum}{times}"), signum, times)

    status = RunDir(run_dir).status()
    assert stopped.returncode == 128 + signum, (history, stopped.stderr[-2000:])
    assert (status.status, status.resume) == ("stopped", f"python train.py resume={run_dir}")
    assert status.reason.startswith(signal.Signals(signum).name)
    assert stopped.stderr.splitlines()[-1].startswith(
        f"stopped by {signal.Signals(signum).name}"), stopped.stderr[-2000:]
    assert "Traceback" not in stopped.stderr
    if times == 1 and "after iteration" in status.reason:  # the iteration it stopped after
        iteration = int(status.reason.split("after iteration ")[1].split(",")[0])
        assert CheckpointManager.load(RunDir(run_dir).checkpoints().latest())[
            "iteration"] == iteration, history

    run_cli("train.py", f"resume={run_dir}")
    assert final_rows(run_dir) == final_rows(whole), history
    assert RunDir(run_dir).status().status == "finished"


@pytest.mark.slow
def test_resuming_a_run_that_is_still_alive_is_refused_and_compare_says_it_runs(
    tmp_path: Path,
) -> None:
    run_dir = tmp_path / "run"
    command = [sys.executable, "train.py", "experiment=a2c_minigrid", "logger=none",
               "trainer.progress=false", "trainer.iterations=100000", f"hydra.run.dir={run_dir}"]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        while rows_in(run_dir) == 0 and process.poll() is None:
            time.sleep(0.05)
        result = run_cli("train.py", f"resume={run_dir}", check=False)
        report = run_cli("evaluate.py", f"compare={run_dir}", check=False)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"run dir error: {run_dir} is in use by pid {process.pid} ({' '.join(command)}); "
        "wait for it to end (or stop it) first")
    assert report.returncode == 2
    assert f"{run_dir}: running (pid {process.pid} on {socket.gethostname()})" in report.stderr
    assert RunDir(run_dir).status().status == "stopped"


@pytest.mark.slow
def test_after_a_kill_and_a_resume_wandb_holds_each_logged_row_exactly_once(
    tmp_path: Path,
) -> None:
    overrides = ["experiment=a2c_minigrid", "logger=wandb", "trainer.progress=false",
                 *KILLED_RUNS["a2c_minigrid"]]
    run_dir = tmp_path / "run"
    rng = random.Random("wandb")
    history = [signal_at_random_moment(["train.py", *overrides, f"hydra.run.dir={run_dir}"],
                                       run_dir, rng)[0]]
    run_cli("train.py", f"resume={run_dir}")

    segments = sorted((run_dir / "wandb").glob("offline-run-*"))
    assert len(segments) == 2, history
    logged = [plain_numbers(row) for segment in segments
              for row in read_wandb_history(segment)
              if not any(key.startswith("media/") for key in row)]  # the end's plots
    assert sorted(logged, key=row_key) == sorted(
        (plain_numbers(row) for row in read_metrics(run_dir / "metrics.jsonl")), key=row_key)


def plain_numbers(row: dict) -> dict:
    return {k: float(v) if isinstance(v, int | float) else v for k, v in row.items()}


def row_key(row: dict) -> tuple:
    return row["iteration"], sorted(row)


@pytest.mark.slow
def test_a_multirun_job_preempted_by_submitit_resumes_to_the_uninterrupted_metrics(
    tmp_path: Path,
) -> None:
    """submitit's local launcher runs each job under a controller that forwards SIGTERM to
    it, as a cluster's preemption does."""
    overrides = stopped_overrides("a2c_minigrid")
    whole = run_whole(tmp_path, overrides)
    sweep = tmp_path / "sweep"
    launcher = subprocess.Popen(
        [sys.executable, "train.py", "-m", *overrides, "hydra/launcher=submitit_local",
         f"hydra.sweep.dir={sweep}"], cwd=ROOT, text=True, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE)
    job = sweep / "0"
    while rows_in(job) < 3 and launcher.poll() is None:
        time.sleep(0.01)
    task = RunDir(job).status().pid
    controller = int(Path(f"/proc/{task}/stat").read_text().rsplit(")", 1)[1].split()[1])
    os.kill(controller, signal.SIGTERM)  # what the launcher's controller gets on preemption
    _, stderr = launcher.communicate(timeout=300)

    status = RunDir(job).status()
    assert status.status == "stopped", stderr[-3000:]
    assert status.resume == f"python train.py resume={job}"
    run_cli("train.py", f"resume={job}")
    assert final_rows(job) == final_rows(whole)


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
    return finished_tiny_run(tmp_path_factory.mktemp("finished"))


def copy_run(run_dir: Path, to: Path) -> Path:
    return Path(shutil.copytree(run_dir, to))


def copy_stopped_run(run_dir: Path, to: Path) -> Path:
    """A copy of a finished run that says it was stopped at its last iteration (a resume
    has its reporters to run yet)."""
    copy = copy_run(run_dir, to)
    RunDir(copy).write_status(RunStatus(STOPPED, "SIGTERM after iteration 12"))
    return copy


def snapshot(run_dir: Path) -> dict[str, bytes]:
    """Every file of a dir with its content."""
    return {str(p.relative_to(run_dir)): p.read_bytes()
            for p in sorted(run_dir.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("damage", [
    *(pytest.param(d, marks=pytest.mark.slow) for d in ("truncated", "garbage", "empty",
                                                        "foreign"))])
def test_a_damaged_latest_checkpoint_stops_resume_naming_it_and_keeps_the_previous(
    finished_run: Path, tmp_path: Path, damage: str
) -> None:
    run_dir = copy_stopped_run(finished_run, tmp_path / "run")
    latest = run_dir / "checkpoints" / "ckpt_00000012.pt"
    if damage == "foreign":
        torch.save({"weights": torch.zeros(3)}, latest)
    else:
        latest.write_bytes(DAMAGE[damage](latest.read_bytes()))
    before = snapshot(run_dir)

    result = run_cli("train.py", f"resume={run_dir}", check=False)

    assert result.returncode == 4, result.stderr[-2000:]
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith(f"checkpoint error: {latest}: ")
    assert message.endswith(f"the previous checkpoint {latest.with_name('ckpt_00000008.pt')} "
                            "is kept: remove ckpt_00000012.pt to resume from it")
    assert len(result.stderr.strip().splitlines()) == 1
    assert CheckpointManager.load(latest.with_name("ckpt_00000008.pt"))["iteration"] == 8
    assert snapshot(run_dir) == before  # a refused resume changes nothing, status included


def test_resuming_a_finished_run_says_so_and_changes_nothing(
    finished_run: Path, tmp_path: Path
) -> None:
    run_dir = copy_run(finished_run, tmp_path / "run")
    latest = run_dir / "checkpoints" / "ckpt_00000012.pt"
    latest.write_bytes(DAMAGE["truncated"](latest.read_bytes()))  # not even read
    before = snapshot(run_dir)
    result = run_cli("train.py", f"resume={run_dir}")
    assert f"{run_dir} finished already; nothing to resume" in result.stdout
    assert snapshot(run_dir) == before
    assert RunDir(run_dir).status().status == "finished"


@pytest.mark.slow
def test_removing_the_damaged_checkpoint_resumes_from_the_previous_one(
    finished_run: Path, tmp_path: Path
) -> None:
    run_dir = copy_stopped_run(finished_run, tmp_path / "run")
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
        f"checkpoint error: {model_file}: unreadable file (")


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
    assert RunDir(run_dir).status().reason == f"CheckpointError: {raised.value}"

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


@pytest.mark.slow
def test_parameters_an_optimizer_step_made_nan_stop_the_run_with_exit_3(tmp_path: Path) -> None:
    result = run_cli("train.py", "agent=a2c", "logger=none", "trainer.progress=false",
                     "agent.lr=1e38", "trainer.iterations=5", "trainer.checkpoint_every=0",
                     f"hydra.run.dir={tmp_path}", check=False)
    assert result.returncode == 3, result.stderr[-2000:]
    assert result.stderr.strip().splitlines() == [
        "training stopped: iteration 1: the A2C step made parameters nan or inf (is the "
        "learning rate too high?); training stopped, the last good state is the start: no "
        "checkpoint was saved"]
    assert not (tmp_path / "checkpoints").exists()  # the bad state is not saved
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
        [str(sweep / "1"), "(left out)", "failed", RunDir(sweep / "1").status().reason],
        [str(sweep / "2"), "(defaults)", "finished", None]]
    assert {"compare/comparison", "compare/curves"} <= set(logged["summary"])


# --- a mistyped override ---------------------------------------------------------------------


def test_an_unknown_group_option_lists_the_available_ones(tmp_path: Path) -> None:
    result = run_cli("train.py", "agent=i2b", "logger=none", f"hydra.run.dir={tmp_path / 'run'}",
                     check=False)
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert line.startswith("config error: In 'config': Could not find 'agent/i2b'; ")
    listed = line.split("Available options in 'agent': ", 1)[1].split(", ")
    assert {p.stem for p in (ROOT / "conf" / "agent").glob("*.yaml")} == set(listed)
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_a_refused_job_of_a_multirun_leaves_no_run_dir_and_the_others_run(tmp_path: Path):
    sweep = tmp_path / "sweep"
    result = run_cli("train.py", "-m", "agent=a2c", "env=gridworld,minipacman",
                     "memory=none", "curriculum=none,staged", "logger=none",
                     "trainer.progress=false", "trainer.iterations=2",
                     f"hydra.sweep.dir={sweep}", check=False)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith(
        f"job {sweep / '1'} failed: config error: curriculum=staged needs problems in stages")
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0", "2"]
    assert [RunDir(sweep / job).status().status for job in ("0", "2")] == ["finished"] * 2
