"""The reference pages, made from the code at every build (an MkDocs hook, see mkdocs.yml).

- ``reference/config.md``: every config group and option of ``conf/``, each setting with its
  type, default and range, read from the constructor declarations
  (:func:`procmem.settings.settings_of`); the runner's and the top-level settings the same way.
- ``reference/metrics.md``: the metric vocabulary (:func:`procmem.run.metrics.markdown_table`).
- ``reference/api.md``: mkdocstrings directives for the public classes: the protocols, the
  settings module, the runner and run dir, and every class a config option names.

Nothing here is written to ``docs/``: the pages exist only in the build, so they cannot
drift from the code.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from typing import Any

import yaml

from procmem.algorithms.protocols import run_inputs_of
from procmem.app.catalogue import CONFIG_DIR, group_options, import_target
from procmem.app.config import RunSettings
from procmem.run.metrics import markdown_table
from procmem.run.runner import Runner
from procmem.settings import (
    Above,
    AtLeast,
    AtMost,
    Below,
    Constraint,
    Contains,
    Each,
    Even,
    NonEmpty,
    OneOf,
    Setting,
    StartsWith,
    components_of,
    settings_of,
)

# The component groups in the order a run config lists them; experiment presets come last.
GROUPS = ("env", "agent", "agent/network", "memory", "curriculum", "logger")
# Modules and classes documented beside the ones config options name.
CORE_API = {
    "Settings": ["procmem.settings"],
    "Environments": ["procmem.envs.protocols", "procmem.envs.batched.BatchedVectorEnv"],
    "Algorithms": ["procmem.algorithms.protocols"],
    "Networks": [],
    "Memory": [],
    "Curricula": ["procmem.curricula"],
    "Run": ["procmem.run.runner.Runner", "procmem.run.run_dir.RunDir",
            "procmem.run.callbacks", "procmem.run.metrics"],
}
API_GROUPS = {"env": "Environments", "agent": "Algorithms", "agent/network": "Networks",
              "memory": "Memory", "curriculum": "Curricula", "logger": "Run"}


# --- values ---------------------------------------------------------------------------------


def value_text(value: Any) -> str:
    """A value as it is written on the command line (``true``, ``null``, ``[a, b]``)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value if value else "''"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(value_text(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {value_text(v)}" for k, v in value.items()) + "}"
    return repr(value)


def type_text(setting: Setting) -> str:
    """``int``, ``float | None``, ``list of str``."""
    kind = setting.kind
    if isinstance(kind, type):
        text = kind.__name__
    else:
        text = re.sub(r"\b(typing|collections\.abc)\.", "", str(kind))
        text = re.sub(r"^Sequence\[(.*)\]$", r"list of \1", text)
        text = re.sub(r"^Mapping\[str, Any\]$", "mapping", text)
    return f"{text} \\| None" if setting.optional else text


def constraint_text(constraint: Constraint) -> str:
    """One constraint in words."""
    match constraint:
        case AtLeast(minimum):
            return f">= {value_text(minimum)}"
        case AtMost(maximum):
            return f"<= {value_text(maximum)}"
        case Above(bound):
            return f"> {value_text(bound)}"
        case Below(bound):
            return f"< {value_text(bound)}"
        case OneOf(options):
            return "one of " + ", ".join(value_text(option) for option in options)
        case NonEmpty():
            return "not empty"
        case Even():
            return "even"
        case Contains(text):
            return f"contains {text}"
        case StartsWith(prefix):
            return f"starts with {prefix}"
        case Each(inner):
            return f"each {constraint_text(inner)}"
    return type(constraint).__name__


def range_text(setting: Setting) -> str:
    return ", ".join(constraint_text(c) for c in setting.constraints) or "-"


def cell(text: str) -> str:
    """Text for a Markdown table cell, as code."""
    return "`" + text.replace("|", "\\|") + "`" if text != "-" else "-"


# --- config ---------------------------------------------------------------------------------


def prose(text: str) -> str:
    """A config file's comment as Markdown text: code spans kept, everything else literal."""
    parts = re.split(r"(`[^`]*`)", text)
    return "".join(part if part.startswith("`") else
                   re.sub(r"([*_\\[\]])", r"\\\1", html.escape(part, quote=False))
                   for part in parts)


def option_file(group: str, option: str) -> tuple[str, dict[str, Any]]:
    """The leading comment of an option file, in one paragraph, and its values."""
    text = (CONFIG_DIR / group / f"{option}.yaml").read_text(encoding="utf-8")
    comment = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        if not line.startswith("# @package"):
            comment.append(line.lstrip("#").strip())
    return prose(" ".join(comment)), yaml.safe_load(text) or {}


def settings_table(prefix: str, target: Any, presets: dict[str, Any] | None = None) -> str:
    """One row per setting of ``target`` under ``prefix`` (``env.``): type, default, range,
    and the value the option file presets where it sets one."""
    presets = presets or {}
    rows = ["| key | type | default | range | preset |", "|---|---|---|---|---|"]
    for name, setting in settings_of(target).items():
        default = "required" if setting.required else value_text(setting.default)
        preset = value_text(presets[name]) if name in presets else "-"
        rows.append(f"| `{prefix}{name}` | {type_text(setting)} | {cell(default)} | "
                    f"{range_text(setting)} | {cell(preset)} |")
    if isinstance(target, type):
        for name in components_of(target):
            rows.append(f"| `{prefix}{name}` | component | the `{prefix.replace('.', '/')}"
                        f"{name}` group | - | - |")
        for run_input in run_inputs_of(target).values():
            rows.append(f"| `{prefix}{run_input.setting}` | run dir \\| None | `null` | a run "
                        f"dir that left `{run_input.artifact}`, or the file | - |")
    return "\n".join(rows) if len(rows) > 2 else "No settings."


def anchor(group: str, option: str) -> str:
    """The anchor of an option's section: ``env-gridworld``, ``agent-network-tool_gru``."""
    return f"{group.replace('/', '-')}-{option}"


def group_options_all(group: str) -> list[str]:
    """Every option of a group, with a ``_target_`` or not (``memory=none``)."""
    return sorted(path.stem for path in (CONFIG_DIR / group).glob("*.yaml"))


def config_reference() -> str:
    """The page of every config group and option."""
    out = [
        "# Config reference",
        "",
        "Generated from the code at every build: each option of `conf/<group>/`, and each "
        "setting with the type, default and range its component's constructor declares "
        "(`procmem/settings.py`). *preset* is the value the option file sets instead of the "
        "default. Change one with `<key>=<value>`, pick an option with `<group>=<option>`; "
        "`python train.py --cfg job` prints a run's every value.",
        "",
        "## Top-level keys",
        "",
        settings_table("", RunSettings),
        "",
        "## trainer",
        "",
        "The runner's settings (`procmem.run.runner.Runner`), the same for every family.",
        "",
        settings_table("trainer.", Runner),
        "",
    ]
    for group in GROUPS:
        targets = dict(group_options(group))
        prefix = group.replace("/", ".") + "."
        out += [f"## {group}", "",
                "Options: " + ", ".join(f"`{group}={o}`" for o in group_options_all(group)),
                ""]
        for option in group_options_all(group):
            comment, values = option_file(group, option)
            out += [f"### {group}={option} {{#{anchor(group, option)}}}", ""]
            if comment:
                out += [comment, ""]
            if option not in targets:
                out += ["Builds nothing.", ""]
                continue
            out += [f"Builds `{targets[option]}`.", ""]
            presets = {k: v for k, v in values.items() if k not in ("defaults", "_target_",
                                                                   "_partial_")}
            out += [settings_table(prefix, import_target(targets[option]), presets), ""]
    out += ["## callbacks", "",
            "Training callbacks (`procmem/run/callbacks.py`), any number at once: "
            "`callbacks=[<option>,...]`, or `+callbacks.<name>._target_=<class>` for your own. "
            "Each option's keys are under `callbacks.<option>.`.", ""]
    for option, target in group_options("callbacks"):
        comment, values = option_file("callbacks", option)
        out += [f"### callbacks={option} {{#{anchor('callbacks', option)}}}", ""]
        if comment:
            out += [comment, ""]
        out += [f"Builds `{target}`.", "",
                settings_table(f"callbacks.{option}.", import_target(target),
                               {k: v for k, v in values.items()
                                if k not in ("defaults", "_target_")}), ""]
    out += ["## experiment", "",
            "Presets of the groups above (`experiment=<name>`; none by default). Each file as "
            "it is in `conf/experiment/`.", ""]
    for option in group_options_all("experiment"):
        text = (CONFIG_DIR / "experiment" / f"{option}.yaml").read_text(encoding="utf-8")
        out += [f"### experiment={option} {{#{anchor('experiment', option)}}}", "",
                "```yaml", text.rstrip(), "```", ""]
    out += ["## evaluate.py", "",
            "The keys of `python evaluate.py` (`conf/evaluate.yaml`):", "", "```yaml",
            (CONFIG_DIR / "evaluate.yaml").read_text(encoding="utf-8").rstrip(), "```", ""]
    return "\n".join(out)


# --- metrics and API --------------------------------------------------------------------------


def metrics_reference() -> str:
    """The page of the metric vocabulary."""
    return "\n".join([
        "# Metric reference",
        "",
        "Every family uses the same name for the same quantity. The vocabulary is one table, "
        "`procmem/run/metrics.py`: the plots draw from it, this page prints it (generated at "
        "every build), and a test runs every experiment and fails on any key it logs that is "
        "not in it (a run that logs one warns). A `{placeholder}` stands for a family of keys. "
        "Names that changed are in the [changelog](../changelog.md).",
        "",
        markdown_table(),
        "",
    ])


def api_reference() -> str:
    """The page of mkdocstrings directives for the public classes."""
    sections = {title: list(paths) for title, paths in CORE_API.items()}
    for group in GROUPS:
        for _, target in group_options(group):
            paths = sections[API_GROUPS[group]]
            if not any(target == path or target.startswith(path + ".") for path in paths):
                paths.append(target)  # not yet documented with its module
    out = ["# API reference", "",
           "The public classes, rendered from their docstrings at every build. A component's "
           "settings are its constructor's keyword-only arguments; their types, defaults and "
           "ranges are listed in the [config reference](config.md).", ""]
    for title, paths in sections.items():
        out += [f"## {title}", ""]
        for path in paths:
            out += [f"::: {path}", "    options:", "      heading_level: 3", ""]
    return "\n".join(out)


PAGES: dict[str, Callable[[], str]] = {
    "reference/config.md": config_reference,
    "reference/metrics.md": metrics_reference,
    "reference/api.md": api_reference,
}


def on_files(files: Any, config: Any) -> Any:
    """MkDocs hook: add the generated pages to the build."""
    from mkdocs.structure.files import File

    for path, make in PAGES.items():
        files.append(File.generated(config, path, content=make()))
    return files
