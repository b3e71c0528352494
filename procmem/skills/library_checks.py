"""Checks of a saved skill library: a checkpoint's ``state_dict`` or a library file.

:func:`check_state` checks every field for its type, range and consistency with the other
fields before the library allocates or changes anything. A refusal is a one-line
:class:`SkillLibraryError` naming the field, e.g. ``skills[3].uses: -2 is out of range: must
be >= 0``. Fields are named by a :data:`FieldName` function: :func:`state_field` names those
of a state dict (``uses[3]``), a library file names its own.

Bounds: counts, the clock and skill indices are integers in ``[0, MAX_COUNT]``; actions are
integers in ``[0, MAX_ACTION]`` (the library does not know its env's number of actions);
embeddings are finite unit vectors (norm within ``UNIT_TOLERANCE`` of 1).
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any

import numpy as np
import torch
from torch import Tensor

MAX_COUNT = 2**53  # exact as a float64; a sum of up to 1023 of them still fits int64
MAX_ACTION = 2**16 - 1  # far above the action count of any env here
UNIT_TOLERANCE = 1e-3  # stored embeddings are unit vectors up to float32 rounding
COUNTERS = ("next_index", "clock", "adds", "merges", "evictions", "retrievals", "hits",
            "skill_uses")

FieldName = Callable[[str, int | None], str]  # (state key, skill row or None) -> field name


class SkillLibraryError(ValueError):
    """A skill library file or state that is corrupt or of an unsupported format."""


@dataclass(frozen=True)
class CheckedState:
    """The skills of a state in index order, and its counters, all checked."""

    names: list[str]
    actions: list[tuple[int, ...]]
    indices: Tensor  # [n] int64, ascending
    embeddings: Tensor  # [n, d] float32 unit vectors
    preconditions: Tensor  # [n, P] bool
    successes: Tensor  # [n] int64, each of these three
    uses: Tensor
    support: Tensor
    last_active: Tensor
    counters: dict[str, int]


def state_field(key: str, row: int | None = None) -> str:
    """The name of a state dict's field: ``hits``, ``uses[3]``."""
    return key if row is None else f"{key}[{row}]"


def shown(value: Any, limit: int = 40) -> str:
    """``repr(value)``, shortened to ``limit`` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_state(
    state: Mapping[str, Any],
    embedding_dim: int,
    precondition_keys: Sequence[str],
    field: FieldName = state_field,
) -> CheckedState:
    """The skills and counters of ``state``, every field checked (see the module docstring).

    Columns are tensors, or lists with one entry per skill (a precondition entry may map
    each key to its flag).
    """
    counters = _counters(state, field)
    names = _names(_get(state, "names", field), field)
    n = len(names)
    columns = {key: _integer_column(_get(state, key, field), n, low, field, key)
               for key, low in (("indices", 0), ("successes", 0), ("uses", 0), ("support", 1),
                                ("last_active", 0))}
    _check_indices(columns["indices"], counters["next_index"], field)
    _check_at_most(columns["successes"], columns["uses"], "uses", field, "successes")
    _check_at_most(columns["last_active"], counters["clock"], "clock", field, "last_active")
    return CheckedState(
        names=names,
        actions=_actions(_get(state, "actions", field), n, field),
        embeddings=_embeddings(_get(state, "embeddings", field), n, embedding_dim, field),
        preconditions=_flags(_get(state, "preconditions", field), n, precondition_keys, field),
        counters=counters,
        **columns,
    )


def check_actions(values: Any, name: str) -> tuple[int, ...]:
    """A skill's actions: a non-empty list of integers in ``[0, MAX_ACTION]``."""
    if not _is_sequence(values):
        raise SkillLibraryError(f"{name}: {shown(values)} is not a list")
    if not len(values):
        raise SkillLibraryError(f"{name}: no actions: a skill needs at least one")
    return tuple(_integers(values, 0, MAX_ACTION, lambda j: f"{name}[{j}]"))


# --- fields -----------------------------------------------------------------------------------


def _actions(values: Any, n: int, field: FieldName) -> list[tuple[int, ...]]:
    """Each skill's actions (see :func:`check_actions`), all checked at once when plain."""
    rows = _rows(values, n, field, "actions")
    if set(map(type, rows)) <= {list, tuple}:
        actions = list(map(tuple, rows))
        if all(actions) and _plain_ints_within(list(chain.from_iterable(actions)), 0, MAX_ACTION):
            return actions
    return [check_actions(row_actions, field("actions", row))
            for row, row_actions in enumerate(rows)]


def _counters(state: Mapping[str, Any], field: FieldName) -> dict[str, int]:
    counters = {key: _integer(_get(state, key, field), 0, MAX_COUNT, field(key, None))
                for key in COUNTERS}
    if counters["hits"] > counters["retrievals"]:
        raise _out_of_range(field("hits", None), counters["hits"],
                            f"<= retrievals ({counters['retrievals']})")
    return counters


def _names(values: Any, field: FieldName) -> list[str]:
    if not _is_sequence(values):
        raise SkillLibraryError(f"{field('names', None)}: {shown(values)} is not a list")
    names = list(values)
    if not set(map(type, names)) <= {str}:  # else all are plain strings, checked at once
        for row, name in enumerate(names):
            if not isinstance(name, str):
                raise SkillLibraryError(f"{field('names', row)}: {shown(name)} is not a string")
    return names


def _integer_column(values: Any, n: int, low: int, field: FieldName, key: str) -> Tensor:
    """Column ``key``: ``n`` integers in ``[low, MAX_COUNT]``, as an int64 tensor."""
    if not _is_array(values):
        rows = _rows(values, n, field, key)
        return torch.tensor(_integers(rows, low, MAX_COUNT, lambda row: field(key, row)),
                            dtype=torch.long)
    column = _tensor(values, (n,), field, key)
    if column.dtype == torch.bool or column.is_floating_point() or column.is_complex():
        raise SkillLibraryError(f"{field(key, None)}: {column.dtype} values are not integers")
    column = column.long()
    row = _first((column < low) | (column > MAX_COUNT))
    if row is not None:
        _integer(column[row].item(), low, MAX_COUNT, field(key, row))  # raises
    return column


def _check_indices(indices: Tensor, next_index: int, field: FieldName) -> None:
    """Skill indices ascend and lie below ``next_index``."""
    row = _first(indices.diff() <= 0)
    if row is not None:
        raise _out_of_range(field("indices", row + 1), indices[row + 1].item(),
                            f"> the previous skill's index ({indices[row].item()})")
    if len(indices) and indices[-1] >= next_index:
        raise _out_of_range(field("next_index", None), next_index,
                            f"> the largest skill index ({indices[-1].item()})")


def _check_at_most(values: Tensor, limit: Tensor | int, limit_name: str, field: FieldName,
                   key: str) -> None:
    """Each of ``values`` is at most ``limit`` (a tensor: one limit per row)."""
    limits = torch.as_tensor(limit).expand_as(values)
    row = _first(values > limits)
    if row is not None:
        raise _out_of_range(field(key, row), values[row].item(),
                            f"<= {limit_name} ({limits[row].item()})")


def _flags(values: Any, n: int, keys: Sequence[str], field: FieldName) -> Tensor:
    """Preconditions ``[n, P]`` bool: a tensor, or per skill a list or a mapping of flags."""
    if _is_array(values):
        flags = _tensor(values, (n, len(keys)), field, "preconditions")
        if flags.dtype != torch.bool:
            raise SkillLibraryError(
                f"{field('preconditions', None)}: {flags.dtype} values are not booleans")
        return flags
    rows = _rows(values, n, field, "preconditions")
    flags = [_flag_row(row_flags, keys, field("preconditions", row))
             for row, row_flags in enumerate(rows)]
    return torch.tensor(flags, dtype=torch.bool).reshape(n, len(keys))


def _flag_row(values: Any, keys: Sequence[str], name: str) -> list[bool]:
    """One skill's precondition flags: a list in key order, or a mapping of each key."""
    flags = values
    if isinstance(values, Mapping):
        if set(values) != set(keys):
            raise SkillLibraryError(f"{name}: keys {list(values)} do not match {list(keys)}")
        flags = [values[key] for key in keys]
    if (not _is_sequence(flags) or len(flags) != len(keys)
            or not all(isinstance(flag, bool | np.bool_) for flag in flags)):
        raise SkillLibraryError(f"{name}: {shown(values)} is not {len(keys)} true/false flags")
    return [bool(flag) for flag in flags]


def _embeddings(values: Any, n: int, dim: int, field: FieldName) -> Tensor:
    """Embeddings ``[n, dim]`` float32, each a finite unit vector."""
    if _is_array(values):
        vectors = _tensor(values, (n, dim), field, "embeddings")
        if not vectors.is_floating_point():
            raise SkillLibraryError(
                f"{field('embeddings', None)}: {vectors.dtype} values are not floats")
    else:
        rows = _rows(values, n, field, "embeddings")
        for row, vector in enumerate(rows):
            if (not _is_sequence(vector) or len(vector) != dim
                    or not all(_is_number(x) for x in vector)):
                raise SkillLibraryError(
                    f"{field('embeddings', row)}: {shown(vector)} is not a list of {dim} numbers")
        vectors = torch.tensor(rows, dtype=torch.float32).reshape(n, dim)
    vectors = vectors.float()
    finite = torch.isfinite(vectors)
    row = _first(~finite.all(dim=1))
    if row is not None:
        value = vectors[row][~finite[row]][0].item()
        raise SkillLibraryError(f"{field('embeddings', row)}: {value} is not finite")
    norms = vectors.norm(dim=1)
    row = _first((norms - 1).abs() > UNIT_TOLERANCE)
    if row is not None:
        raise SkillLibraryError(f"{field('embeddings', row)}: norm {norms[row].item():.6g} is "
                                f"out of range: must be 1 (within {UNIT_TOLERANCE})")
    return vectors


def _get(state: Mapping[str, Any], key: str, field: FieldName) -> Any:
    if key not in state:
        raise SkillLibraryError(f"missing field {field(key, None)!r}")
    return state[key]


# --- values -----------------------------------------------------------------------------------


def _integer(value: Any, low: int, high: int, name: str) -> int:
    """``value`` when it is an integer (not a bool) in ``[low, high]``."""
    if not isinstance(value, numbers.Integral) or isinstance(value, bool):
        raise SkillLibraryError(f"{name}: {shown(value)} is not an integer")
    if value < low:
        raise _out_of_range(name, value, f">= {low}")
    if value > high:
        raise _out_of_range(name, value, f"<= {high}")
    return int(value)


def _integers(values: Sequence[Any], low: int, high: int,
              name_of: Callable[[int], str]) -> list[int]:
    """``values`` when each is an integer in ``[low, high]`` (``name_of(i)`` names the i-th)."""
    values = list(values)
    if _plain_ints_within(values, low, high):
        return values
    return [_integer(v, low, high, name_of(i)) for i, v in enumerate(values)]


def _plain_ints_within(values: list[Any], low: int, high: int) -> bool:
    """Whether ``values`` are all plain ints in ``[low, high]``: the common case, checked
    without a Python call per value."""
    return set(map(type, values)) <= {int} and (
        not values or (low <= min(values) and max(values) <= high))


def _rows(values: Any, n: int, field: FieldName, key: str) -> list[Any]:
    """``values`` as a list of ``n`` rows, one per skill."""
    if not _is_sequence(values):
        raise SkillLibraryError(f"{field(key, None)}: {shown(values)} is not a list")
    if len(values) != n:
        raise SkillLibraryError(f"{field(key, None)}: {len(values)} rows, expected {n} "
                                "(one per skill name)")
    return list(values)


def _tensor(values: Tensor | np.ndarray, shape: tuple[int, ...], field: FieldName,
            key: str) -> Tensor:
    """``values`` as a tensor of ``shape`` (an empty one of any shape when there are no rows)."""
    tensor = torch.as_tensor(values)
    if shape[0] == 0 and tensor.numel() == 0:
        return tensor.reshape(shape)
    if tensor.shape != shape:
        raise SkillLibraryError(
            f"{field(key, None)}: shape {list(tensor.shape)}, expected {list(shape)}")
    return tensor


def _out_of_range(name: str, value: Any, rule: str) -> SkillLibraryError:
    return SkillLibraryError(f"{name}: {shown(value)} is out of range: must be {rule}")


def _first(mask: Tensor) -> int | None:
    """Position of the first ``True`` of a 1-d ``mask``, or ``None``."""
    hits = torch.nonzero(mask)
    return int(hits[0, 0]) if len(hits) else None


def _is_array(value: Any) -> bool:
    return isinstance(value, Tensor | np.ndarray)


def _is_sequence(value: Any) -> bool:
    return isinstance(value, Sequence | np.ndarray) and not isinstance(value, str | bytes)


def _is_number(value: Any) -> bool:
    return isinstance(value, float | int) and not isinstance(value, bool)
