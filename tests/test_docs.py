"""The documentation site: it builds with no warning (every link and anchor valid), and its
reference pages, generated from the code at every build, say what the code declares."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from procmem.envs.gridworld import GridWorld
from procmem.settings import settings_of

ROOT = Path(__file__).resolve().parents[1]


def reference_pages() -> ModuleType:
    """docs/reference_pages.py, the hook that generates the reference pages."""
    spec = importlib.util.spec_from_file_location("reference_pages",
                                                  ROOT / "docs" / "reference_pages.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_config_reference_gives_a_setting_its_type_default_and_range():
    page = reference_pages().PAGES["reference/config.md"]()
    gridworld = page.split("### env=gridworld", 1)[1].split("\n### ", 1)[0]
    assert "Builds `procmem.envs.gridworld.GridWorld`." in gridworld
    assert "| `env.max_steps` | int | `300` | >= 1 | - |" in gridworld
    assert "| `env.layout` | str | `random` | one of fixed, random | - |" in gridworld
    assert "| `env.walls` | float | `0.0` | >= 0.0, < 0.5 | - |" in gridworld
    # The figures come from the constructor, not from a copy.
    assert settings_of(GridWorld)["max_steps"].default == 300


def test_the_config_reference_covers_every_group_option_and_setting():
    pages = reference_pages()
    page = pages.PAGES["reference/config.md"]()
    for group in (*pages.GROUPS, "experiment"):
        for option in pages.group_options_all(group):
            assert f"### {group}={option} " in page, (group, option)
    assert "| `trainer.iterations` | int | `200` | >= 1 | - |" in page
    assert "| `seed` | int | `0` | >= 0 | - |" in page
    assert "| `memory.top_k` | int | `3` | >= 1 | - |" in page
    assert ("| `callbacks.early_stopping.patience` | int | `0` | >= 0 | - |") in page
    assert ("| `agent.env_model_run` | run dir \\| None | `null` | a run dir that left "
            "`env_model.pt`, or the file | - |") in page


def test_the_api_reference_names_every_configured_class_and_no_page_is_committed():
    pages = reference_pages()
    api = pages.PAGES["reference/api.md"]()
    assert "::: procmem.envs.gridworld.GridWorld" in api
    assert "::: procmem.algorithms.protocols" in api
    assert not (ROOT / "docs" / "reference").exists()  # generated at build time only


@pytest.mark.slow
def test_the_site_builds_strictly(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert result.returncode == 0, result.stderr[-5000:]
    assert (tmp_path / "reference" / "config" / "index.html").is_file()
    assert "env.max_steps" in (tmp_path / "reference" / "config" / "index.html").read_text()


@pytest.mark.parametrize("group", ["env", "agent", "agent/network", "memory", "curriculum",
                                   "logger", "experiment"])
def test_the_configuration_page_names_every_option_of_a_group(group):
    page = (ROOT / "docs" / "concepts" / "configuration.md").read_text(encoding="utf-8")
    row = next(line for line in page.splitlines() if line.startswith(f"| `{group}` |"))
    options = sorted(path.stem for path in (ROOT / "conf" / group).glob("*.yaml"))
    assert options and [o for o in options if f"`{o}`" not in row] == []
