"""The Hydra app: the only code that imports Hydra. It composes and checks configs
(:mod:`~procmem.app.config`), builds runs from them (:mod:`~procmem.app.build`) and runs
the commands of ``train.py`` and ``evaluate.py`` (:mod:`~procmem.app.training`,
:mod:`~procmem.app.evaluation`, and :mod:`~procmem.app.cli` for their errors' one line and
exit code). Importing it registers the config schemas and resolvers,
so Hydra can compose the tree."""

from procmem.app import config
from procmem.app.config import ConfigError, check_config, compose_config
from procmem.app.evaluation import compare_runs, evaluate_run, format_metrics
from procmem.app.training import train

config.register_resolvers()
config.register_schemas()

__all__ = ["ConfigError", "check_config", "compare_runs", "compose_config", "evaluate_run",
           "format_metrics", "train"]
