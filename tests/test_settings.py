"""Settings declared in a constructor: derived, checked when built and recorded."""

from __future__ import annotations

import pickle
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np
import pytest

from procmem.settings import (
    REQUIRED,
    Above,
    AtLeast,
    AtMost,
    Below,
    Component,
    Contains,
    Each,
    Even,
    NonEmpty,
    OneOf,
    SettingError,
    StartsWith,
    check_settings,
    components_of,
    configurable,
    settings_of,
)


@configurable
class Base:
    def __init__(self, thing: Annotated[Callable, Component()], built: object = None, *,
                 size: Annotated[int, AtLeast(1)] = 4, rate: Annotated[float, Above(0.0)] = 0.5,
                 mode: Annotated[str, OneOf(("a", "b"))] = "a",
                 stages: Annotated[Sequence[int], NonEmpty(), Each(AtLeast(0))] = (0, 1),
                 cap: Annotated[int, AtLeast(1)] | None = None) -> None:
        self.size = size


@configurable
class Child(Base):
    """Changes one default of its base and adds a setting; the rest are forwarded."""

    def __init__(self, thing: Callable, *, size: Annotated[int, AtLeast(1)] = 8,
                 extra: bool = False, **settings: Any) -> None:
        super().__init__(thing, size=size, **settings)


@dataclass
class Top:
    name: Annotated[str, NonEmpty()]
    seed: Annotated[int, AtLeast(0)] = 0


def test_settings_come_from_keyword_only_arguments_with_their_defaults_and_ranges():
    declared = settings_of(Base)
    assert list(declared) == ["size", "rate", "mode", "stages", "cap"]
    assert declared["size"].default == 4 and declared["size"].kind is int
    assert declared["stages"].default == (0, 1)
    assert declared["cap"].optional and not declared["size"].optional
    assert components_of(Base) == ("thing",)


def test_a_subclass_that_forwards_keywords_has_its_bases_settings_with_its_own_defaults():
    declared = settings_of(Child)
    assert list(declared) == ["size", "rate", "mode", "stages", "cap", "extra"]
    assert declared["size"].default == 8
    child = Child(print, rate=2.0)
    assert child.size == 8
    assert child.settings == {"size": 8, "rate": 2.0, "mode": "a", "stages": (0, 1),
                              "cap": None, "extra": False}
    with pytest.raises(SettingError, match="^rate: -1.0 is out of range: must be > 0.0$"):
        Child(print, rate=-1.0)  # forwarded, checked by the base


def test_a_dataclass_declares_its_fields():
    declared = settings_of(Top)
    assert declared["name"].default is REQUIRED and declared["name"].required
    assert declared["seed"].default == 0


def test_construction_checks_every_setting_before_the_constructor_runs():
    built = Base(print, size=2, stages=[3, 4], cap=7)
    assert built.settings == {"size": 2, "rate": 0.5, "mode": "a", "stages": (3, 4), "cap": 7}
    for kwargs, message in [
        ({"size": 0}, "size: 0 is out of range: must be >= 1"),
        ({"size": 1.5}, "size: 1.5 is not an int"),
        ({"size": True}, "size: True is not an int"),
        ({"mode": "c"}, "mode: 'c' is not one of: a, b"),
        ({"stages": []}, "stages: must not be empty"),
        ({"stages": [0, -1]}, "stages: -1 is out of range: must be >= 0"),
        ({"stages": "01"}, "stages: '01' is not a list"),
        ({"cap": 0}, "cap: 0 is out of range: must be >= 1"),
    ]:
        with pytest.raises(SettingError) as info:
            Base(print, **kwargs)
        assert str(info.value) == message


def test_numpy_scalars_pass_as_their_kinds():
    Base(print, size=np.int64(3), rate=np.float32(0.25))


def test_check_settings_names_unknown_and_missing_keys():
    check_settings(Base, {"size": 3, "mode": "b"})
    with pytest.raises(SettingError, match="^sise: not a setting of Base"):
        check_settings(Base, {"sise": 3})
    with pytest.raises(SettingError, match="^name: missing: it has no default$"):
        check_settings(Top, {"seed": 1})


def test_each_constraint_says_how_a_value_breaks_it():
    cases = [(AtLeast(1), 0, "0 is out of range: must be >= 1"),
             (AtMost(1.0), 1.5, "1.5 is out of range: must be <= 1.0"),
             (Above(0.0), 0.0, "0.0 is out of range: must be > 0.0"),
             (Below(0.5), 0.5, "0.5 is out of range: must be < 0.5"),
             (OneOf(("x",)), "y", "'y' is not one of: x"),
             (NonEmpty(), (), "must not be empty"),
             (Even(), 3, "3 must be even"),
             (Contains("{k}"), "a", "'a' must contain {k}"),
             (StartsWith("Mini"), "Cart", "'Cart' must start with Mini"),
             (Each(Even()), [2, 5], "5 must be even")]
    for constraint, bad, reason in cases:
        assert constraint.violation(bad) == reason
    assert all(c.violation(good) is None for c, good in zip(
        (c for c, _, _ in cases), (1, 1.0, 0.1, 0.4, "x", (1,), 2, "{k}", "Mini", [2]),
        strict=True))


def test_setting_errors_name_the_key_under_a_prefix_and_survive_pickling():
    error = SettingError("size", "0 is out of range")
    assert str(error.under("env")) == "env.size: 0 is out of range"
    again = pickle.loads(pickle.dumps(error.under("env")))
    assert (again.key, again.reason) == ("env.size", "0 is out of range")


def test_a_subclass_withholds_the_base_settings_it_never_passes():
    from procmem.algorithms.a2c import A2C
    from procmem.algorithms.i2a import I2A

    assert {"skill_kind", "skill_step_budget"} <= settings_of(A2C).keys()
    assert not {"skill_kind", "skill_step_budget", "skill_features"} & settings_of(I2A).keys()
    assert {"n_steps", "gamma", "depth"} <= settings_of(I2A).keys()
