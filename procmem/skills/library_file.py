"""The saved forms of a skill library: its format version and its human-readable JSON file.

A library file is one JSON object: ``format_version``, ``settings`` (the constructor's
settings), ``counters`` and ``skills``, one object per stored skill in index order.
Reading one checks the header (:func:`file_header`) before the library is built, then hands
the skills on as the columns of a state dict (:func:`file_state`), whose fields
:func:`file_field` names as they appear in the file (``counters.hits``,
``skills[3].uses``); :func:`file_errors` gives every refusal the file's name.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from procmem.io import atomic_write_json
from procmem.settings import SettingError, check_settings, settings_of
from procmem.skills.library_checks import SkillLibraryError, shown
from procmem.skills.storage import Skill, skill_record

SKILL_LIBRARY_FORMAT_VERSION = 2
# Where each skill column of a state lives in a skill of a library file
_SKILL_FIELDS = {"indices": "index", "names": "name", "actions": "actions",
                 "embeddings": "embedding", "preconditions": "preconditions",
                 "successes": "successes", "uses": "uses", "support": "support",
                 "last_active": "last_active"}


def check_format_version(version: Any) -> None:
    """Refuse a saved library of another format version."""
    if type(version) is not int or version != SKILL_LIBRARY_FORMAT_VERSION:
        raise SkillLibraryError(
            f"unsupported format_version {version!r} (expected {SKILL_LIBRARY_FORMAT_VERSION})"
        )


def write_library_file(path: str | os.PathLike, settings: Mapping[str, Any],
                       counters: Mapping[str, int], skills: Sequence[Skill]) -> Path:
    """Write a library file, atomically: the settings, counters and skills of a library."""
    return atomic_write_json(
        path,
        {
            "format_version": SKILL_LIBRARY_FORMAT_VERSION,
            "settings": dict(settings),
            "counters": dict(counters),
            "skills": [
                {**skill_record(skill), "last_active": skill.last_active,
                 "embedding": list(skill.embedding)}
                for skill in skills
            ],
        },
    )


def read_library_file(path: Path) -> dict[str, Any]:
    """The JSON object of a library file, unchecked."""
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise SkillLibraryError("expected a JSON object at the top level")
    return data


def file_header(data: dict[str, Any], component: type) -> tuple[dict[str, Any], dict[str, Any]]:
    """The settings and counters of a library file: its format version checked, every
    setting present and checked as ``component``'s constructor checks them."""
    check_format_version(data.get("format_version"))
    settings = _json_object(data["settings"], "settings")
    unsaved = getattr(component, "unsaved_settings", ())  # settings of a run, not of a file
    missing = [name for name in settings_of(component)
               if name not in settings and name not in unsaved]
    if missing:
        raise SkillLibraryError(f"settings: missing field {missing[0]!r}")
    try:
        check_settings(component, settings)
    except SettingError as err:
        raise SkillLibraryError(str(err.under("settings"))) from err
    return settings, _json_object(data["counters"], "counters")


def file_state(data: dict[str, Any], settings: Mapping[str, Any],
               counters: Mapping[str, Any]) -> dict[str, Any]:
    """A library file as a state dict: its header, and its skills as the state's columns."""
    skills = data["skills"]
    if not isinstance(skills, list):
        raise SkillLibraryError(f"skills: {shown(skills)} is not a list")
    for row, skill in enumerate(skills):
        skill = _json_object(skill, f"skills[{row}]")
        missing = [field for field in _SKILL_FIELDS.values() if field not in skill]
        if missing:
            raise SkillLibraryError(f"skills[{row}]: missing field {missing[0]!r}")
    columns = {key: [skill[field] for skill in skills] for key, field in _SKILL_FIELDS.items()}
    return {"format_version": data["format_version"], **settings, **counters, **columns}


def file_field(key: str, row: int | None = None) -> str:
    """Where a state field lives in a library file: ``counters.hits``, ``skills[3].uses``."""
    if key not in _SKILL_FIELDS:
        return f"counters.{key}"
    return "skills" if row is None else f"skills[{row}].{_SKILL_FIELDS[key]}"


def describe(err: Exception) -> str:
    """A refusal's message: ``missing field 'x'`` for a missing key."""
    return f"missing field {err}" if isinstance(err, KeyError) else str(err)


@contextmanager
def file_errors(path: Path) -> Iterator[None]:
    """Raise what goes wrong reading the library file ``path`` as a one-line
    :class:`SkillLibraryError` naming the file."""
    try:
        yield
    except json.JSONDecodeError as err:
        raise SkillLibraryError(f"{path}: not valid JSON ({err})") from err
    except RecursionError as err:
        raise SkillLibraryError(f"{path}: not valid JSON (nested too deeply)") from err
    except (KeyError, TypeError, ValueError) as err:
        raise SkillLibraryError(f"{path}: {describe(err)}") from err


def _json_object(value: Any, name: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise SkillLibraryError(f"{name}: {shown(value)} is not an object")
    return value
