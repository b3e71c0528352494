"""Loading torch files as data: a file from another run or another person never runs code.

``torch.save`` writes a pickle, and a pickle can name any Python callable to be called when
it is loaded. :func:`load_data_file` loads with ``torch.load(weights_only=True)``, which
builds only tensors and plain values (dicts, lists, tuples, strings, numbers), plus the few
types of :func:`allowed_globals`: bytes, numpy arrays, dtypes and scalars (RNG and env
states), and the objects checkpoints of MiniGrid runs held before env states were plain data.
A file that names anything else is refused with :class:`UnsafeFileError` before any of it is
built.
"""

from __future__ import annotations

import functools
import os
import pickle
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

_NUMPY_GLOBALS: list[Any] = [
    np.ndarray,
    np.dtype,
    np.random.Generator,
    *(getattr(np.dtypes, name) for name in dir(np.dtypes) if name.endswith("DType")),
    *(getattr(np.random, name) for name in ("PCG64", "MT19937", "Philox", "SFC64",
                                             "SeedSequence")),
]
for _module, _name in (("numpy._core.multiarray", "_reconstruct"),
                       ("numpy._core.multiarray", "scalar"),
                       ("numpy.random._pickle", "__generator_ctor"),
                       ("numpy.random._pickle", "__bit_generator_ctor"),
                       ("numpy.random.bit_generator", "__pyx_unpickle_SeedSequence")):
    try:
        _NUMPY_GLOBALS.append(getattr(__import__(_module, fromlist=[_name]), _name))
    except (ImportError, AttributeError):  # numpy 1.x names its core module numpy.core
        _NUMPY_GLOBALS.append(getattr(__import__(_module.replace("_core", "core"),
                                                 fromlist=[_name]), _name))


def _minigrid_globals() -> list[Any]:
    """MiniGrid's grid, world objects and actions: what MiniGrid checkpoints written before
    env states were plain data hold. Plain data classes: loading one sets its attributes and
    calls nothing else."""
    try:
        from minigrid.core import actions, grid, world_object
    except ImportError:
        return []
    objects = [cls for cls in vars(world_object).values()
               if isinstance(cls, type) and issubclass(cls, world_object.WorldObj)]
    return [grid.Grid, actions.Actions, *objects]


@functools.cache
def allowed_globals() -> tuple[Any, ...]:
    """What a data file may name: ``bytes`` (pickle protocol 2, torch's, writes an empty bytes
    object, such as the data of an empty numpy array, as a call ``bytes()``), numpy's arrays
    and generators, and MiniGrid's plain data classes (imported at the first load, not
    before)."""
    return (bytes, *_NUMPY_GLOBALS, *_minigrid_globals())


class UnsafeFileError(ValueError):
    """A file that holds Python objects other than data, which loading would build (and so
    could run code); the message names the file and the first such object."""


def load_data_file(path: str | os.PathLike) -> Any:
    """What ``torch.save`` wrote to ``path``, loaded onto the CPU as data only (see the
    module docstring). A file that names other objects raises :class:`UnsafeFileError`; a
    missing file ``FileNotFoundError``; a damaged one the error ``torch.load`` gives."""
    path = Path(path)
    with torch.serialization.safe_globals(list(allowed_globals())):
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as error:
            found = re.search(r"GLOBAL ([\w.]+)", str(error))
            if found is None:
                raise
            raise UnsafeFileError(
                f"{path}: refused: it holds {found.group(1)}, not data (tensors, arrays, "
                "numbers, strings); loading it could run code") from None
