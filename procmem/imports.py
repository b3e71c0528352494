"""Objects named by their import path, as configs and registries name them."""

from __future__ import annotations

import importlib
from typing import Any


def import_object(path: str) -> Any:
    """The object at ``module.Name`` or ``module:Name``; ``ImportError`` or
    ``AttributeError`` when there is none."""
    module, separator, name = path.partition(":")
    if not separator:
        module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)
