"""The Hydra app: the only code that imports Hydra. It composes and checks configs
(:mod:`~procmem.app.config`), builds runs from them (:mod:`~procmem.app.build`) and runs
the commands of ``train.py`` and ``evaluate.py`` (:mod:`~procmem.app.training`,
:mod:`~procmem.app.evaluation`)."""

from procmem.app.config import ConfigError, check_config, compose_config, register_resolvers
from procmem.app.config import register_schemas as _register_schemas
from procmem.app.evaluation import compare_runs, evaluate_run, format_metrics
from procmem.app.training import train

register_resolvers()
_register_schemas()

__all__ = ["ConfigError", "check_config", "compare_runs", "compose_config", "evaluate_run",
           "format_metrics", "train"]
