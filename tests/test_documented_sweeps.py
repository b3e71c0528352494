"""The documented sweep commands, run as written (with tiny budgets) from a fresh working dir:
a sweep command that the documentation (docs/ and README.md) shows and that cannot start
fails the suite."""

from __future__ import annotations

import functools
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from helpers import ROOT, run_cli

# Set on every command, in place of the documented value where it gives one: a budget of a few
# iterations, and no W&B files.
BUDGET = {"trainer.iterations": "2", "trainer.env_steps": "0", "trainer.eval_every": "2",
          "trainer.eval_episodes": "1", "trainer.checkpoint_every": "2",
          "trainer.progress": "false", "logger": "none", "hydra.sweeper.n_trials": "2"}
# Commands that need a cluster this machine does not have, by what marks them.
NEEDS_A_CLUSTER = ("hydra.launcher.ray.init.address=auto", "hydra/launcher=submitit_slurm")
# The documentation's stand-ins for an environment model run, by the model kind they hold
# (made tiny by a fixture).
ENV_MODEL_RUNS = {"<step 2 run dir>": "pixel", "<env model run>": "pixel",
                  "<ssm env model run>": "ssm"}
# ... and for skill-library runs whose library another run loads, by the env they learnt on.
LIBRARY_RUNS = {"<DoorKey-8x8 library run>": ["env=minigrid",
                                               "env.env_id=MiniGrid-DoorKey-8x8-v0",
                                               "agent.skill_features=direction"]}
# The sweeps page's commands on the default launcher are fast; the rest (launchers,
# sweepers, env models, and the sweeps of other pages, which run more jobs) are slow.
SWEEPS_PAGE = ROOT / "docs" / "how-to" / "sweeps.md"
# Where sweep commands are shown: every page of the documentation site, and the README.
PAGES = sorted((ROOT / "docs").rglob("*.md")) + [ROOT / "README.md"]


def documented_sweep_commands() -> list[str]:
    """Every ``python train.py -m ...`` command of :data:`PAGES`, in code blocks (continuation
    lines joined, trailing comments dropped) and in inline code, each once."""
    commands: dict[str, None] = {}
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        lines = [line for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S)
                 for line in block.replace("\\\n", " ").splitlines()]
        lines += re.findall(r"`([^`\n]*python train\.py -m [^`\n]*)`", text)
        for line in lines:
            line = re.sub(r"\s+#.*$", "", line).strip()
            if re.match(r"^(\w+=\S+ )*python train\.py -m ", line):
                commands[" ".join(line.split())] = None
    return list(commands)


def _budgeted(arguments: list[str]) -> list[str]:
    """The arguments with :data:`BUDGET` in place of the values the page gives (and added
    where it gives none; the trial count only for sweeps with a sweeper)."""
    given = {word.partition("=")[0] for word in arguments}
    kept = [word for word in arguments if word.partition("=")[0] not in BUDGET]
    return kept + [f"{key}={value}" for key, value in BUDGET.items()
                   if not key.startswith("hydra.") or key in given]


def _expected_jobs(arguments: list[str]) -> int:
    """Jobs a sweep makes: the product of its comma lists, or the trials of a sweeper."""
    for word in arguments:
        if word.startswith("hydra.sweeper.n_trials="):
            return int(word.partition("=")[2])
    count = 1
    for word in arguments:
        key, _, value = word.partition("=")
        if not key.startswith("hydra") and "," in value and "(" not in value:
            count *= len(value.split(","))
    return count


COMMANDS = documented_sweep_commands()
RUNNABLE = [c for c in COMMANDS if not any(mark in c for mark in NEEDS_A_CLUSTER)]


def test_the_documentation_shows_sweeps_and_only_the_cluster_ones_are_left_out() -> None:
    assert len(COMMANDS) >= 11
    assert len(COMMANDS) - len(RUNNABLE) == len(NEEDS_A_CLUSTER)


def _is_slow(command: str) -> bool:
    sweeps = SWEEPS_PAGE.read_text(encoding="utf-8")
    return ("hydra/launcher=" in command or "hydra/sweeper=" in command
            or command not in " ".join(sweeps.split()))


def runnable_params() -> list:
    return [pytest.param(c, id=c.removeprefix("python train.py -m "),
                         marks=[pytest.mark.slow] if _is_slow(c) else [])
            for c in RUNNABLE]


@pytest.fixture(scope="module")
def env_model_runs(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """Tiny environment model runs by model kind (each made when first asked for), trained on
    one tiny A2C policy run."""
    root = tmp_path_factory.mktemp("docs")
    tiny = ["logger=none", "trainer.progress=false", "trainer.iterations=2",
            "trainer.checkpoint_every=2", "env.num_envs=2"]
    run_cli("train.py", "experiment=a2c_minipacman", *tiny, f"hydra.run.dir={root / 'policy'}")

    @functools.cache
    def run_of(kind: str) -> Path:
        model = root / f"model_{kind}"
        run_cli("train.py", "experiment=envmodel_minipacman", *tiny, f"agent.model={kind}",
                f"agent.policy_run={root / 'policy'}", "agent.collect_steps=8",
                f"hydra.run.dir={model}")
        return model

    return run_of


@pytest.fixture(scope="module")
def library_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny skill-library runs, one per stand-in of :data:`LIBRARY_RUNS`."""
    runs = {}
    for stand_in, env in LIBRARY_RUNS.items():
        runs[stand_in] = tmp_path_factory.mktemp("library") / "run"
        run_cli("train.py", "agent=procedural", *env, "env.num_envs=4", "logger=none",
                "trainer.progress=false", "trainer.iterations=4", "trainer.eval_every=0",
                f"hydra.run.dir={runs[stand_in]}")
    return runs


@pytest.mark.parametrize("command", runnable_params())
def test_a_documented_sweep_command_starts_and_runs_every_job(
        command: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    for stand_in, kind in ENV_MODEL_RUNS.items():
        if stand_in in command:
            env_model_run = request.getfixturevalue("env_model_runs")(kind)
            command = command.replace(stand_in, str(env_model_run))
    for stand_in in LIBRARY_RUNS:
        if stand_in in command:
            command = command.replace(stand_in,
                                      str(request.getfixturevalue("library_runs")[stand_in]))
    words = shlex.split(command)
    environment = dict(word.split("=", 1) for word in words[:words.index("python")])
    assert words[words.index("python"):][:2] == ["python", "train.py"]
    arguments = _budgeted(words[words.index("python") + 2:])
    result = subprocess.run([sys.executable, str(ROOT / "train.py"), *arguments],
                            cwd=tmp_path, capture_output=True, text=True, timeout=1800,
                            env={**os.environ, **environment})
    assert result.returncode == 0, result.stderr[-3000:]

    sweeps = list((tmp_path / "outputs" / "multiruns").glob("*/*"))
    assert len(sweeps) == 1, sweeps  # every job in one multirun dir
    jobs = [p for p in sweeps[0].iterdir() if p.is_dir() and p.name.isdigit()]
    assert len(jobs) == _expected_jobs(arguments)
    for job in jobs:
        assert '"status": "finished"' in (job / "status.json").read_text()


@pytest.mark.slow
def test_a_sweep_over_agents_is_named_after_the_agents_and_holds_each_job(
        tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, str(ROOT / "train.py"), "-m",
                             *_budgeted(["agent=procedural,a2c"])],
                            cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    sweeps = list((tmp_path / "outputs" / "multiruns").glob("*/*"))
    assert [p.parent.name for p in sweeps] == ["procedural+a2c_gridworld"]
    configs = sorted((job / ".hydra" / "config.yaml").read_text()
                     for job in sweeps[0].iterdir() if job.is_dir())
    assert [("experiment_name: a2c_gridworld" in c, "procedural_gridworld" in c)
            for c in configs] == [(True, False), (False, True)]
