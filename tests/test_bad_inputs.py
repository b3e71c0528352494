"""Bad inputs a user can give the command line: each ends in one line on stderr and its exit
code, and changes no file (the table of docs/faults.md lists them)."""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from procmem import app
from procmem.run.run_dir import RunDir
from procmem.run.status import STOPPED, RunStatus

from helpers import ROOT, TINY, run_cli


@dataclass(frozen=True)
class Case:
    """``args`` for ``script`` (``{run}``: a stopped tiny run, ``{finished}``: a finished one,
    ``{tmp}``: an empty temp dir), the exit ``code`` and the stderr ``line`` (a regex, after
    the same substitutions) it must end in, ``env`` variables, and ``slow`` for the CLI runs
    the fast suite leaves out."""

    args: tuple[str, ...]
    code: int
    line: str
    script: str = "train.py"
    env: dict[str, str] = field(default_factory=dict)
    slow: bool = True


CASES = {
    # --- train.py: run dirs --------------------------------------------------------------------
    "new run in a dir holding a run": Case(
        ("seed=7", "trainer.iterations=120", "hydra.run.dir={finished}"), 2,
        r"run dir error: {finished} holds a run already: continue it with `python train\.py "
        r"resume={finished}`, or give a new run another dir", slow=False),
    "resume with other overrides": Case(
        ("resume={run}", "seed=5"), 2,
        r"config error: resume: continues a run with its saved config; drop seed=5"),
    "resume a missing dir": Case(
        ("resume={tmp}/typo",), 2,
        r"run dir error: {tmp}/typo: no run here \(the dir is missing or empty\)"),
    "resume a dir that is not a run": Case(
        ("resume={tmp}/notes",), 2,
        r"run dir error: {tmp}/notes: not a run dir \(it has no \.hydra/config\.yaml\); give "
        r"a dir train\.py made"),
    "resume with garbage in metrics.jsonl": Case(
        ("resume={run}",), 4,
        r"metrics error: {run}/metrics\.jsonl:3: not valid JSON \(.*\)"),
    # --- train.py: config, device, logger --------------------------------------------------------
    "an unknown key": Case(
        ("agent.foo=1", "hydra.run.dir={tmp}/new"), 2,
        r"config error: Could not override 'agent\.foo': Key 'foo' is not in struct\. To "
        r"append to your config use \+agent\.foo=1"),
    "an override Hydra cannot parse": Case(
        ("agent.lr=[", "hydra.run.dir={tmp}/new"), 2,
        r"config error: .*no viable alternative at input '\['.*"),
    "an out-of-range value": Case(
        ("env.max_steps=-1", "hydra.run.dir={tmp}/new"), 2,
        r"config error: env\.max_steps: -1 is out of range.*"),
    "an unknown key in a multirun": Case(
        ("-m", "seed=0,1", "agent.foo=1", "hydra.sweep.dir={tmp}/new"), 2,
        r"config error: Could not override 'agent\.foo'.*"),
    "device=cuda without a GPU": Case(
        ("device=cuda", "hydra.run.dir={tmp}/new"), 2,
        r"config error: device: cuda was asked for, but torch sees no CUDA device on this "
        r"machine: use device=cpu, or device=auto"),
    "W&B online without credentials": Case(
        ("hydra.run.dir={tmp}/new",), 2,
        r"config error: logger\.mode: online needs W&B credentials: run `wandb login` or set "
        r"WANDB_API_KEY, or log offline \(WANDB_MODE=offline\)",
        env={"WANDB_MODE": "online", "WANDB_API_KEY": "", "NETRC": "{tmp}/no-netrc"}),
    "an unknown MiniGrid env id": Case(
        ("experiment=a2c_minigrid", "env.env_id=MiniGrid-Nope-v0", "hydra.run.dir={tmp}/new"),
        2, r"config error: env\.env_id: 'MiniGrid-Nope-v0': Environment `MiniGrid-Nope` "
           r"doesn't exist\..*"),
    "an output dir that cannot be written": Case(
        ("logger=none", "hydra.run.dir=/sys/kernel/procmem_run"), 74,
        r"file error: \[Errno \d+\] .*: '/sys/kernel/procmem_run'"),
    # --- evaluate.py -----------------------------------------------------------------------------
    "evaluate a missing dir": Case(
        ("run={tmp}/typo",), 2, r"run dir error: {tmp}/typo: no run here \(the dir is missing "
                                r"or empty\)", script="evaluate.py"),
    "evaluate a dir that is not a run": Case(
        ("run={tmp}/notes",), 2, r"run dir error: {tmp}/notes: not a run dir .*",
        script="evaluate.py"),
    "evaluate a run without checkpoints": Case(
        ("run={tmp}/no_checkpoints",), 4,
        r"checkpoint error: {tmp}/no_checkpoints: no checkpoint to evaluate \(the run stopped "
        r"before it saved one\)", script="evaluate.py"),
    "evaluate a truncated checkpoint": Case(
        ("run={run}",), 4,
        r"checkpoint error: {run}/checkpoints/ckpt_00000012\.pt: unreadable checkpoint \(.*\); "
        r"the previous checkpoint .*ckpt_00000008\.pt is kept: remove ckpt_00000012\.pt to "
        r"resume from it", script="evaluate.py"),
    "evaluate 0 episodes": Case(
        ("run={finished}", "episodes=0"), 2,
        r"config error: episodes: 0 is out of range: evaluate at least 1 episode",
        script="evaluate.py"),
    "evaluate -5 episodes": Case(
        ("run={finished}", "episodes=-5"), 2,
        r"config error: episodes: -5 is out of range: evaluate at least 1 episode",
        script="evaluate.py"),
    "evaluate neither a run nor a comparison": Case(
        (), 2, r"usage error: evaluate\.py needs exactly one of run=<run dir> or "
               r"compare=<multirun dir>", script="evaluate.py"),
    "compare a metric no run logged": Case(
        ("compare={finished}", "metrics=[eval/nosuch]"), 2,
        r"config error: metrics: eval/nosuch: logged by none of the finished runs; they "
        r"logged .*eval/success_rate.*", script="evaluate.py"),
    "compare with an unknown interval": Case(
        ("compare={finished}", "interval=wide"), 2,
        r"config error: interval: 'wide' is not one of bootstrap, t", script="evaluate.py"),
    "compare a dir without runs": Case(
        ("compare={tmp}/notes",), 2,
        r"run dir error: no runs \(folders with metrics\.jsonl or status\.json\) found in "
        r"{tmp}/notes", script="evaluate.py"),
}


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny finished run (checkpoints 4, 8, 12), compared once so it has earlier outputs."""
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    app.train(app.compose_config([*TINY, "logger=none"]), run_dir)
    app.compare_runs([run_dir], run_dir)
    app.evaluate_run(run_dir, episodes=2)
    return run_dir


def stopped_copy(finished: Path, to: Path, case: str) -> Path:
    """The finished run as if stopped at its end, damaged as ``case`` needs."""
    run_dir = Path(shutil.copytree(finished, to))
    RunDir(run_dir).write_status(RunStatus(STOPPED, "SIGTERM after iteration 12"))
    if case == "resume with garbage in metrics.jsonl":
        lines = (run_dir / "metrics.jsonl").read_text().splitlines(keepends=True)
        lines[2] = "{garbage\n"
        (run_dir / "metrics.jsonl").write_text("".join(lines))
    if case == "evaluate a truncated checkpoint":
        latest = run_dir / "checkpoints" / "ckpt_00000012.pt"
        latest.write_bytes(latest.read_bytes()[:100])
    return run_dir


def snapshot(*dirs: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for d in dirs if d.is_dir()
            for p in sorted(d.rglob("*")) if p.is_file()}


def skip_reason(name: str) -> str | None:
    if name == "device=cuda without a GPU" and torch.cuda.is_available():
        return "this machine has a GPU"
    if name == "an output dir that cannot be written":
        try:
            Path("/sys/kernel/procmem_probe").mkdir()
        except OSError:
            return None
        return "/sys/kernel is writable here"
    return None


@pytest.mark.parametrize("name", [pytest.param(name, marks=[pytest.mark.slow] if case.slow
                                               else []) for name, case in CASES.items()])
def test_a_bad_input_is_one_line_and_its_exit_code_and_changes_nothing(
    name: str, finished: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if reason := skip_reason(name):
        pytest.skip(reason)
    case = CASES[name]
    run = stopped_copy(finished, tmp_path / "run", name)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("not a run\n")
    no_checkpoints = Path(shutil.copytree(finished, tmp_path / "no_checkpoints"))
    shutil.rmtree(no_checkpoints / "checkpoints")
    places = {"{run}": str(run), "{finished}": str(finished), "{tmp}": str(tmp_path)}

    def fill(text: str, escape: bool = False) -> str:
        for key, value in places.items():
            text = text.replace(key, re.escape(value) if escape else value)
        return text

    for key, value in case.env.items():
        monkeypatch.setenv(key, fill(value))
    before = snapshot(finished, tmp_path)
    entries = sorted(os.listdir(tmp_path))

    result = run_cli(case.script, *(fill(arg) for arg in case.args), check=False)

    assert result.returncode == case.code, result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr[-3000:]
    assert re.fullmatch(fill(case.line, escape=True), lines[0]), lines[0]
    assert snapshot(finished, tmp_path) == before
    assert sorted(os.listdir(tmp_path)) == entries  # no run dir or sweep dir was left


def test_the_fault_page_lists_every_fault_and_bad_input_with_its_test() -> None:
    """Each row of the table of docs/faults.md names the test that holds it; that test
    exists."""
    page = (ROOT / "docs" / "faults.md").read_text()
    table = page[page.index("| fault or bad input |"):].split("\n\n", 1)[0]
    rows = table.splitlines()[2:]
    named_tests = [re.findall(r"`(tests/\S+\.py)::(\w+)`", row) for row in rows]
    assert all(named_tests), [row for row, named in zip(rows, named_tests, strict=True)
                              if not named]
    for path, function in {test for named in named_tests for test in named}:
        assert re.search(rf"^def {function}\(", (ROOT / path).read_text(), re.MULTILINE), (
            f"{path}::{function}")
    named = {row.split("|")[1].strip() for row in rows}
    assert set(CASES) <= named, set(CASES) - named
