"""The config tree and its checks: schemas derived from the components, composed and
checked before anything is built.

Every option of a component group (``conf/<group>/<option>.yaml`` with a ``_target_``) is
backed by a schema node, ``schema/<group>/<option>``, derived from its class's declared
settings (:func:`procmem.settings.settings_of`): every setting with its default. The option
file extends it (``defaults: [/schema/<group>/<option>@_here_, _self_]``) and holds only its
presets, so ``env.size=12`` works whether or not the file mentions ``size``. The primary
config extends ``schema/run`` (the top-level keys, :class:`RunSettings`) and puts
``schema/trainer`` (the runner's settings) at ``trainer``.

:func:`check_config` checks a composed config against the same declarations, so an unknown
key, a wrong type or an out-of-range value stops a run before anything is built, with one
line naming the full key.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ValueType
from omegaconf import MISSING, DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from procmem.algorithms.protocols import run_inputs_of
from procmem.app.catalogue import CONFIG_DIR, ConfigError, group_options, import_target, run_config
from procmem.app.compatibility import check_compatible
from procmem.run.callbacks import Callback
from procmem.run.run_dir import RunDir
from procmem.run.runner import Runner
from procmem.settings import (
    AtLeast,
    NonEmpty,
    OneOf,
    SettingError,
    check_settings,
    components_of,
    settings_of,
)

GROUPS = ("env", "agent", "memory", "curriculum", "logger")
DEVICES = ("auto", "cpu", "cuda")
# Constructor arguments the app loads from another run: config key -> argument.


RUN_NAME = "${hydra:runtime.choices.agent}_${hydra:runtime.choices.env}"  # e.g. a2c_gridworld


@dataclass
class RunSettings:
    """The top-level keys of a run config (the rest are the groups and ``trainer``)."""

    # Names the output dir and the W&B run; an experiment sets its own.
    experiment_name: Annotated[str, NonEmpty()] = RUN_NAME
    seed: Annotated[int, AtLeast(0)] = 0  # seeds Python, numpy, torch and every env
    device: Annotated[str, OneOf(DEVICES)] = "auto"
    torch_threads: Annotated[int, AtLeast(0)] = 1  # torch CPU threads; 0: torch's default
    resume: str | None = None  # a run dir: continue that run from its last checkpoint


def resume_config(run: RunDir, overrides: Sequence[str]) -> DictConfig:
    """The config that continues the run in ``run``: the one it started with. Overrides
    besides ``resume=`` are refused: a run keeps its config for its life."""
    extra = [o for o in overrides if not o.startswith("resume=")]
    if extra:
        raise ConfigError("resume", f"continues a run with its saved config; drop "
                                    f"{' '.join(extra)}")
    run.require_run()
    return run_config(run)


def schema_node(target: type, target_path: str | None = None) -> dict[str, Any]:
    """The config node of a component with every default: ``_target_`` (when given), the
    settings, its nested components (``???``: picked by their own group) and the keys of
    arguments loaded from other runs."""
    node: dict[str, Any] = {} if target_path is None else {"_target_": target_path}
    for name, setting in settings_of(target).items():
        node[name] = MISSING if setting.required else _plain(setting.default)
    if not dataclasses.is_dataclass(target):
        node.update({name: MISSING for name in components_of(target)})
        node.update({run_input.setting: None for run_input in run_inputs_of(target).values()})
    return node


def register_schemas() -> None:
    """Put every schema node in Hydra's ConfigStore (see the module docstring)."""
    store = ConfigStore.instance()
    store.store(group="schema", name="run", node=schema_node(RunSettings))
    store.store(group="schema", name="trainer", node=schema_node(Runner))
    groups = {path.parent.relative_to(CONFIG_DIR).as_posix()
              for path in CONFIG_DIR.glob("*/**/*.yaml")}
    for group in sorted(groups):
        for option, target in group_options(group):
            store.store(group=f"schema/{group}", name=option,
                        node=schema_node(import_target(target), target))


def register_resolvers() -> None:
    """``${procmem.if_null:value,then,else}`` lets ``resume`` pick the run dir in the config;
    ``${procmem.sweep_name:}`` names a multirun's dir (:func:`sweep_name`)."""
    OmegaConf.register_new_resolver(
        "procmem.if_null", lambda value, then, otherwise: then if value is None else otherwise,
        replace=True,
    )
    OmegaConf.register_new_resolver("procmem.sweep_name", sweep_name, replace=True)


def sweep_name(_root_: DictConfig) -> str:
    """The name of a multirun, from its config (``hydra`` node included): the experiment's
    name when one is set, else ``<agent>_<env>`` as single runs are named, each part the
    option chosen or the options swept joined by ``+`` (``-m agent=procedural,a2c`` ->
    ``procedural+a2c_gridworld``; ``-m experiment=a,b`` -> ``a+b``). It reads the choices
    from the config itself: when a sweep starts, the ``hydra:`` resolver has nothing to read
    yet."""
    swept = _swept_options(_root_.hydra.overrides.task)
    if "experiment" in swept:
        return "+".join(swept["experiment"])
    if _root_._get_node("experiment_name")._value() != RUN_NAME:
        return str(_root_.experiment_name)
    choices = _root_.hydra.runtime.choices
    return "_".join("+".join(swept.get(group) or [str(choices[group])])
                    for group in ("agent", "env"))


def _swept_options(overrides: Sequence[str]) -> dict[str, list[str]]:
    """The options each group override of a sweep lists (``agent=a2c,i2a`` -> ``agent:
    [a2c, i2a]``); sweeps that do not list them (``glob``) are left out."""
    swept = {}
    for override in OverridesParser.create().parse_overrides(list(overrides)):
        if override.value_type in (ValueType.SIMPLE_CHOICE_SWEEP, ValueType.CHOICE_SWEEP):
            swept[override.key_or_group] = list(override.sweep_string_iterator())
    return swept


def compose_config(overrides: Sequence[str] = (), return_hydra_config: bool = False) -> DictConfig:
    """The config ``train.py <overrides>`` would run with (for tests, notebooks, benchmarks),
    its run name resolved."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=list(overrides), return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    name_run(cfg)
    if not return_hydra_config:
        with open_dict(cfg):
            del cfg["hydra"]
    return cfg


def name_run(cfg: DictConfig) -> None:
    """Resolve ``experiment_name`` (by default the agent and env choices) in ``cfg``, so the
    config a run keeps reads the same outside Hydra."""
    cfg.experiment_name = cfg.experiment_name


def check_config(cfg: DictConfig) -> None:
    """Check a composed run config; raise :class:`ConfigError` on the first bad value."""
    for group in GROUPS:
        if group not in cfg:
            raise ConfigError(group, "missing config group")
    check_compatible(cfg)  # first: a wrong pairing explains the settings that do not fit
    for group in GROUPS:
        check_component(cfg[group], group)
    _check_node(Runner, cfg.trainer, "trainer")
    for name, node in (cfg.get("callbacks") or {}).items():
        _check_callback(node, f"callbacks.{name}")
    top = [key for key in cfg.keys() if key not in (*GROUPS, "trainer", "callbacks", "hydra")]
    _check_node(RunSettings, OmegaConf.masked_copy(cfg, top), "")


def _check_callback(node: DictConfig, prefix: str) -> None:
    """A callback's node names a :class:`~procmem.run.callbacks.Callback` and its settings."""
    target = node.get("_target_") if isinstance(node, DictConfig) else None
    if target is not None:
        try:
            cls = import_target(target)
        except ConfigError as error:
            raise error.under(prefix) from None
        if not (isinstance(cls, type) and issubclass(cls, Callback)):
            raise ConfigError(f"{prefix}._target_", f"{cls.__name__} does not follow "
                                                    f"{Callback.__module__}.{Callback.__name__}")
    check_component(node, prefix)


def check_component(node: DictConfig | None, prefix: str) -> None:
    """Check one component node (empty means none, as ``memory=none``) and the components
    nested in it."""
    if node is None or len(node) == 0:
        return
    if "_target_" not in node:
        raise ConfigError(f"{prefix}._target_", "missing: every component names its class")
    try:
        cls = import_target(node._target_)
    except ConfigError as error:
        raise error.under(prefix) from None
    nested = components_of(cls)
    inputs = run_inputs_of(cls).values()
    for run_input in inputs:
        value = node.get(run_input.setting)
        if value is not None and not isinstance(value, str):
            raise ConfigError(f"{prefix}.{run_input.setting}", f"{value!r} must be a run dir "
                              f"(or its {run_input.artifact}), or null")
    settings = OmegaConf.create({key: value for key, value in node.items()
                                 if not key.startswith("_") and key not in nested
                                 and key not in {run_input.setting for run_input in inputs}})
    _check_node(cls, settings, prefix)
    for name in nested:
        if name not in node:
            raise ConfigError(f"{prefix}.{name}", "missing: pick one from its config group")
        check_component(node[name], f"{prefix}.{name}")


def _check_node(target: type, node: DictConfig, prefix: str) -> None:
    try:
        values = OmegaConf.to_container(node, resolve=True, throw_on_missing=True)
        check_settings(target, values)
    except SettingError as error:
        raise error.under(prefix) from None
    except OmegaConfBaseException as error:
        key = str(error.full_key or error.key or "")
        reason = str(error.msg).splitlines()[0] if error.msg else type(error).__name__
        raise ConfigError(f"{prefix}.{key}" if prefix and key else key or prefix, reason) from None


def _constructor_parameters(target: type | Any) -> tuple[str, ...]:
    return tuple(inspect.signature(target).parameters)


def _plain(value: Any) -> Any:
    """A default as a config value (tuples become lists)."""
    return [_plain(item) for item in value] if isinstance(value, tuple) else value

