"""Settings: what a component can be configured with, declared once in its constructor.

A component (an env, an algorithm, a network, a memory, a curriculum, a logger sink, the
runner) takes the objects it works with as positional arguments and its *settings* as
keyword-only arguments. Each setting's type, default and range are written once, in the
signature::

    @configurable
    class GridWorld:
        def __init__(self, *, size: Annotated[int, AtLeast(3)] = 8, ...) -> None: ...

:func:`configurable` checks every setting against its declaration whenever the class is
built, directly or from a config, and records the values as ``self.settings``. The config
layer reads the same declarations through :func:`settings_of`: they give each config key its
default, and :func:`check_settings` checks a config before anything is built. Rules that tie
several settings together stay in the constructor and raise :class:`SettingError` naming one
of the keys.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import numbers
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar, Union

import numpy as np

REQUIRED = inspect.Parameter.empty  # the default of a setting that has none

C = TypeVar("C", bound=type)


class SettingError(ValueError):
    """An invalid setting; ``str()`` is one line, ``<key>: <reason>``."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason

    def __reduce__(self) -> tuple[type, tuple[str, str]]:
        """Picklable, so errors cross process boundaries (launchers, process pools)."""
        return type(self), (self.key, self.reason)

    def under(self, prefix: str) -> SettingError:
        """The same error with its key inside ``prefix`` (``size`` -> ``env.size``)."""
        return type(self)(f"{prefix}.{self.key}" if prefix else self.key, self.reason)


# --- constraints ----------------------------------------------------------------------------


class Constraint:
    """A rule a setting's value must follow; :meth:`violation` says how a value breaks it."""

    def violation(self, value: Any) -> str | None:
        raise NotImplementedError


@dataclass(frozen=True)
class AtLeast(Constraint):
    minimum: float

    def violation(self, value: Any) -> str | None:
        if value >= self.minimum:
            return None
        return f"{value!r} is out of range: must be >= {self.minimum}"


@dataclass(frozen=True)
class AtMost(Constraint):
    maximum: float

    def violation(self, value: Any) -> str | None:
        if value <= self.maximum:
            return None
        return f"{value!r} is out of range: must be <= {self.maximum}"


@dataclass(frozen=True)
class Above(Constraint):
    bound: float

    def violation(self, value: Any) -> str | None:
        return None if value > self.bound else f"{value!r} is out of range: must be > {self.bound}"


@dataclass(frozen=True)
class Below(Constraint):
    bound: float

    def violation(self, value: Any) -> str | None:
        return None if value < self.bound else f"{value!r} is out of range: must be < {self.bound}"


@dataclass(frozen=True)
class OneOf(Constraint):
    options: tuple[Any, ...]

    def violation(self, value: Any) -> str | None:
        if value in self.options:
            return None
        return f"{value!r} is not one of: {', '.join(map(str, self.options))}"


@dataclass(frozen=True)
class NonEmpty(Constraint):
    def violation(self, value: Any) -> str | None:
        return None if len(value) else "must not be empty"


@dataclass(frozen=True)
class Even(Constraint):
    def violation(self, value: Any) -> str | None:
        return None if value % 2 == 0 else f"{value!r} must be even"


@dataclass(frozen=True)
class Contains(Constraint):
    text: str

    def violation(self, value: Any) -> str | None:
        return None if self.text in value else f"{value!r} must contain {self.text}"


@dataclass(frozen=True)
class StartsWith(Constraint):
    prefix: str

    def violation(self, value: Any) -> str | None:
        return None if value.startswith(self.prefix) else f"{value!r} must start with {self.prefix}"


@dataclass(frozen=True)
class Each(Constraint):
    """Every item of a sequence follows ``constraint``."""

    constraint: Constraint

    def violation(self, value: Any) -> str | None:
        for item in value:
            if (reason := self.constraint.violation(item)) is not None:
                return reason
        return None


@dataclass(frozen=True)
class Component:
    """Marks a constructor parameter that is itself a component, built from its own config
    node (``agent.network``); :func:`components_of` lists them."""


# --- declarations -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Setting:
    """One declared setting: its name, value type, default, whether it may be ``None``, and
    its constraints."""

    name: str
    kind: Any
    default: Any = REQUIRED
    optional: bool = False
    constraints: tuple[Constraint, ...] = ()

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    def check(self, value: Any) -> None:
        """Raise :class:`SettingError` naming this setting when ``value`` does not fit."""
        if value is None and self.optional:
            return
        problem = _type_problem(self.kind, value)
        for constraint in self.constraints:
            if problem is None:
                problem = constraint.violation(value)
        if problem is not None:
            raise SettingError(self.name, problem)


def settings_of(target: type | Callable[..., Any]) -> dict[str, Setting]:
    """The settings of a component: the keyword-only parameters of a class's constructor
    (with those of its base class where the constructor forwards ``**kwargs`` to it, but
    the base's settings it names in a ``withheld_settings`` class attribute), of a
    function, or the fields of a dataclass."""
    if dataclasses.is_dataclass(target):
        hints = typing.get_type_hints(target, include_extras=True)
        return {f.name: _setting(f.name, hints[f.name], _field_default(f))
                for f in dataclasses.fields(target) if f.init}
    if isinstance(target, type):
        return _class_settings(target)
    return _function_settings(inspect.unwrap(target))


def components_of(target: type | Callable[..., Any]) -> tuple[str, ...]:
    """The constructor (or function) parameters of ``target`` marked :class:`Component`."""
    init = inspect.unwrap(target.__init__ if isinstance(target, type) else target)
    hints = typing.get_type_hints(init, include_extras=True)

    def marked(name: str) -> bool:
        metadata = getattr(hints.get(name), "__metadata__", ())
        return any(isinstance(item, Component) for item in metadata)

    return tuple(name for name in inspect.signature(init).parameters if marked(name))


@functools.cache
def _class_settings(cls: type) -> dict[str, Setting]:
    owner = next(c for c in cls.__mro__ if "__init__" in c.__dict__)
    init = inspect.unwrap(owner.__init__)
    own = _function_settings(init)
    forwards = any(p.kind is inspect.Parameter.VAR_KEYWORD
                   for p in inspect.signature(init).parameters.values())
    bases = owner.__mro__[1:]
    if not forwards or not bases or bases[0] is object:
        return own
    withheld = owner.__dict__.get("withheld_settings", ())  # base settings it never passes
    inherited = {k: v for k, v in _class_settings(bases[0]).items() if k not in withheld}
    return {**inherited, **own}


@functools.cache
def _function_settings(function: Callable[..., Any]) -> dict[str, Setting]:
    hints = typing.get_type_hints(function, include_extras=True)
    return {name: _setting(name, hints.get(name, Any), parameter.default)
            for name, parameter in inspect.signature(function).parameters.items()
            if parameter.kind is inspect.Parameter.KEYWORD_ONLY}


def check_settings(target: type | Callable[..., Any], values: Mapping[str, Any]) -> None:
    """Check ``values`` against the settings of ``target``: every key must be a setting, every
    value must fit it, and every required setting must be given."""
    declared = settings_of(target)
    for key in values:
        if key not in declared:
            raise SettingError(key, f"not a setting of {_name(target)} "
                                    f"(its settings: {', '.join(declared) or 'none'})")
    for name, setting in declared.items():
        if name in values:
            setting.check(values[name])
        elif setting.required:
            raise SettingError(name, "missing: it has no default")


def configurable(cls: C) -> C:
    """Class decorator: every construction checks the constructor's keyword-only settings
    against their declarations before the constructor runs (settings it forwards through
    ``**kwargs`` are checked by the base class's constructor), then records all of them as
    ``self.settings``."""
    init = cls.__init__
    signature = inspect.signature(init)

    @functools.wraps(init)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        bound = signature.bind(self, *args, **kwargs)
        bound.apply_defaults()
        own = _function_settings(inspect.unwrap(init))
        for name, setting in own.items():
            setting.check(bound.arguments[name])
        init(self, *args, **kwargs)
        recorded = {**getattr(self, "settings", {}),
                    **{name: bound.arguments[name] for name in own}}
        self.settings = {name: _plain(recorded[name]) for name in settings_of(cls)}

    cls.__init__ = __init__
    return cls


# --- helpers ----------------------------------------------------------------------------------


def _setting(name: str, hint: Any, default: Any) -> Setting:
    """A :class:`Setting` from a type hint: ``Annotated`` metadata are its constraints and a
    ``None`` in a union makes it optional."""
    constraints: tuple[Constraint, ...] = ()
    hint, optional = _without_none(hint)
    if typing.get_origin(hint) is Annotated:
        hint, *metadata = typing.get_args(hint)
        constraints = tuple(m for m in metadata if isinstance(m, Constraint))
        hint, inner_optional = _without_none(hint)
        optional |= inner_optional
    return Setting(name, hint, default, optional or default is None, constraints)


def _without_none(hint: Any) -> tuple[Any, bool]:
    """``hint`` without ``None`` in it, and whether it held one (``int | None`` -> int)."""
    if not (_is_union(hint) and type(None) in typing.get_args(hint)):
        return hint, False
    rest = tuple(arg for arg in typing.get_args(hint) if arg is not type(None))
    return (rest[0] if len(rest) == 1 else Union[rest]), True  # noqa: UP007


def _field_default(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return REQUIRED


def _is_union(hint: Any) -> bool:
    return typing.get_origin(hint) in (Union, types.UnionType)


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _is_sequence(value: Any) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, str | bytes)


def _type_problem(kind: Any, value: Any) -> str | None:
    """Why ``value`` is not of ``kind`` (bool, int, float, str or a sequence of them; other
    kinds are not checked), or ``None``."""
    if kind is bool:
        ok = isinstance(value, bool | np.bool_)
    elif kind is int:
        ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    elif kind is float:
        ok = _is_number(value)
    elif kind is str:
        ok = isinstance(value, str)
    elif typing.get_origin(kind) in (list, tuple, Sequence):
        if not _is_sequence(value):
            return f"{value!r} is not a list"
        item_kinds = [arg for arg in typing.get_args(kind) if arg is not Ellipsis]
        for item in value:
            if item_kinds and (problem := _type_problem(item_kinds[0], item)) is not None:
                return problem
        return None
    else:
        return None
    return None if ok else f"{value!r} is not {_article(kind)} {kind.__name__}"


def _article(kind: type) -> str:
    return "an" if kind.__name__[0] in "aeiou" else "a"


def _plain(value: Any) -> Any:
    """Sequences as tuples, so settings compare equal however they were given."""
    return tuple(_plain(item) for item in value) if _is_sequence(value) else value


def _name(target: Any) -> str:
    return getattr(target, "__qualname__", repr(target))
