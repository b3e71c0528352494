"""Curricula: the staged schedule follows the run length, the adaptive one advances on its
threshold and replays earlier stages, state round-trips, and every conf option checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate

from procmem.app import ConfigError, check_config, compose_config
from procmem.app.build import build_run
from procmem.curricula import (
    AdaptiveCurriculum,
    FixedCurriculum,
    StagedCurriculum,
)

CONF = Path(__file__).resolve().parents[1] / "conf"
OPTIONS = sorted(path.stem for path in (CONF / "curriculum").glob("*.yaml"))
ORIGINAL = [0, 0, 0, 1, 1, 2]


def staged_stages(total: int, schedule: list[int] = ORIGINAL) -> list[int]:
    curriculum = StagedCurriculum(schedule=schedule)
    stages = []
    for iteration in range(1, total + 1):
        curriculum.on_iteration(iteration, total)
        stages.append(curriculum.stage)
    return stages


def adaptive(**kwargs) -> AdaptiveCurriculum:
    return AdaptiveCurriculum(**{"num_stages": 3, "threshold": 0.95, "replay": 0.3, **kwargs})


def accuracy(stage: int, value: float) -> dict[str, float]:
    return {f"eval/success_rate_stage{stage}": value}


# --- fixed ----------------------------------------------------------------------------------


def test_fixed_samples_its_stage_and_never_moves():
    curriculum = FixedCurriculum(stage=2)
    curriculum.on_iteration(1, 10)
    curriculum.update(1, accuracy(2, 1.0))
    stages = curriculum.sample(5, np.random.default_rng(0))
    assert stages.tolist() == [2] * 5
    assert curriculum.metrics() == {"curriculum/stage": 2.0}


# --- staged ---------------------------------------------------------------------------------


def test_staged_original_schedule_over_60_iterations():
    assert staged_stages(60) == [0] * 30 + [1] * 20 + [2] * 10


@pytest.mark.parametrize(
    ("total", "expected"),
    [
        (6, ORIGINAL),
        (7, [0, 0, 0, 0, 1, 1, 2]),
        (3, [0, 0, 1]),
        (1, [0]),
        (100, [0] * 50 + [1] * 34 + [2] * 16),
    ],
)
def test_staged_schedule_scales_to_any_length(total, expected):
    assert staged_stages(total) == expected


@pytest.mark.parametrize("total", [6, 13, 61, 1000])
def test_staged_gives_every_slot_an_even_share(total):
    schedule = list(range(6))  # one stage per slot: the counts are the slots' shares
    counts = np.bincount(staged_stages(total, schedule), minlength=6)
    assert counts.max() - counts.min() <= 1
    assert counts.sum() == total


def test_staged_samples_only_the_current_stage():
    curriculum = StagedCurriculum(schedule=ORIGINAL)
    curriculum.on_iteration(55, 60)
    curriculum.update(55, accuracy(2, 0.0))
    assert curriculum.sample(7, np.random.default_rng(0)).tolist() == [2] * 7
    assert curriculum.metrics() == {"curriculum/stage": 2.0, "curriculum/replay_share": 0.0}


@pytest.mark.parametrize(("iteration", "total"), [(0, 10), (11, 10)])
def test_staged_rejects_iteration_outside_run(iteration, total):
    with pytest.raises(ValueError, match="iteration"):
        StagedCurriculum(schedule=ORIGINAL).on_iteration(iteration, total)


# --- adaptive -------------------------------------------------------------------------------


def test_adaptive_advances_at_threshold_not_below():
    curriculum = adaptive()
    curriculum.update(1, accuracy(0, 0.949))
    assert curriculum.stage == 0
    curriculum.update(2, accuracy(0, 0.95))
    assert curriculum.stage == 1


def test_adaptive_reads_only_the_current_stage_metric():
    curriculum = adaptive()
    curriculum.update(1, {**accuracy(0, 0.5), **accuracy(1, 1.0), **accuracy(2, 1.0)})
    assert curriculum.stage == 0
    curriculum.update(2, {**accuracy(0, 1.0), **accuracy(1, 1.0), **accuracy(2, 1.0)})
    assert curriculum.stage == 1  # one stage per evaluation


def test_adaptive_missing_metric_changes_nothing():
    curriculum = adaptive()
    curriculum.update(1, {"eval/success_rate": 1.0, **accuracy(1, 1.0)})
    assert curriculum.stage == 0


def test_adaptive_custom_metric_template():
    curriculum = adaptive(metric="eval/solved_{stage}", threshold=0.5)
    curriculum.update(1, {"eval/solved_0": 0.5})
    assert curriculum.stage == 1


def test_adaptive_never_goes_beyond_last_stage():
    curriculum = adaptive()
    for iteration in range(10):
        curriculum.update(iteration, {**accuracy(0, 1.0), **accuracy(1, 1.0), **accuracy(2, 1.0)})
    assert curriculum.stage == 2
    assert curriculum.sample(10_000, np.random.default_rng(0)).max() == 2


def test_adaptive_single_stage_stays_at_zero():
    curriculum = adaptive(num_stages=1)
    curriculum.update(1, accuracy(0, 1.0))
    assert curriculum.stage == 0


def test_adaptive_stage_zero_has_nothing_to_replay():
    curriculum = adaptive(replay=0.9)
    assert curriculum.sample(1000, np.random.default_rng(0)).tolist() == [0] * 1000
    assert curriculum.metrics() == {"curriculum/stage": 0.0, "curriculum/replay_share": 0.0}


@pytest.mark.parametrize("replay", [0.0, 0.3, 0.7])
def test_adaptive_replay_share_and_uniform_earlier_stages(replay):
    curriculum = adaptive(replay=replay)
    curriculum.load_state_dict({"stage": 2})
    n = 200_000
    counts = np.bincount(curriculum.sample(n, np.random.default_rng(1)), minlength=3) / n
    assert counts[2] == pytest.approx(1 - replay, abs=0.005)
    assert counts[0] == pytest.approx(replay / 2, abs=0.005)
    assert counts[1] == pytest.approx(replay / 2, abs=0.005)
    assert curriculum.metrics() == {"curriculum/stage": 2.0, "curriculum/replay_share": replay}


def test_adaptive_sampling_is_reproducible():
    curriculum = adaptive()
    curriculum.load_state_dict({"stage": 2})
    first = curriculum.sample(100, np.random.default_rng(7))
    assert np.array_equal(first, curriculum.sample(100, np.random.default_rng(7)))


# --- every curriculum -----------------------------------------------------------------------


CURRICULA = {
    "fixed": lambda: FixedCurriculum(stage=1),
    "staged": lambda: StagedCurriculum(schedule=ORIGINAL),
    "adaptive": lambda: adaptive(),
}


@pytest.mark.parametrize("name", CURRICULA)
@pytest.mark.parametrize("n", [0, 1, 33])
def test_sample_shape_and_dtype(name, n):
    stages = CURRICULA[name]().sample(n, np.random.default_rng(0))
    assert isinstance(stages, np.ndarray)
    assert stages.shape == (n,)
    assert stages.dtype == np.int64


@pytest.mark.parametrize("name", CURRICULA)
def test_state_dict_round_trip(name):
    curriculum = CURRICULA[name]()
    curriculum.on_iteration(40, 60)
    curriculum.update(40, {**accuracy(0, 1.0), **accuracy(1, 1.0)})
    curriculum.update(45, {**accuracy(0, 1.0), **accuracy(1, 1.0)})

    restored = CURRICULA[name]()
    restored.load_state_dict(curriculum.state_dict())
    assert restored.stage == curriculum.stage
    assert restored.metrics() == curriculum.metrics()
    assert np.array_equal(restored.sample(50, np.random.default_rng(3)),
                          curriculum.sample(50, np.random.default_rng(3)))


BAD_ARGS = [
    (FixedCurriculum, {"stage": -1}, "stage"),
    (StagedCurriculum, {"schedule": []}, "empty"),
    (StagedCurriculum, {"schedule": [0, -1]}, "schedule"),
    (AdaptiveCurriculum, {"num_stages": 0, "threshold": 0.9, "replay": 0.3}, "num_stages"),
    (AdaptiveCurriculum, {"num_stages": 3, "threshold": 1.5, "replay": 0.3}, "threshold"),
    (AdaptiveCurriculum, {"num_stages": 3, "threshold": -0.1, "replay": 0.3}, "threshold"),
    (AdaptiveCurriculum, {"num_stages": 3, "threshold": 0.9, "replay": 1.0}, "replay"),
    (AdaptiveCurriculum, {"num_stages": 3, "threshold": 0.9, "replay": -0.1}, "replay"),
    (AdaptiveCurriculum,
     {"num_stages": 3, "threshold": 0.9, "replay": 0.3, "metric": "eval/success_rate"},
     "metric"),
]


@pytest.mark.parametrize(("cls", "kwargs", "match"), BAD_ARGS)
def test_constructor_rejects_bad_arguments(cls, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cls(**kwargs)


# --- config ---------------------------------------------------------------------------------


def test_curriculum_options():
    assert {"none", "fixed", "staged", "adaptive"} <= set(OPTIONS)


def training_stages(overrides: list[str], iterations: int = 5) -> np.ndarray:
    """The stages of the problems a tool-use run trains on in its first iterations."""
    cfg = compose_config(["experiment=model_native_toolenv", "env.num_envs=64", *overrides])
    check_config(cfg)
    built = build_run(cfg, torch.device("cpu"))
    stages = [built.env.stage.copy()]
    for _ in range(iterations):
        built.algorithm.train_iteration()
        stages.append(built.env.stage.copy())
    return np.concatenate(stages)


def test_without_a_curriculum_the_env_draws_from_its_own_stages():
    """curriculum=none trains the stages env.stages names, each as often (the fix: it used to
    draw from every stage, whatever env.stages said)."""
    assert set(training_stages(["curriculum=none", "env.stages=[0]"])) == {0}
    assert set(training_stages(["curriculum=none", "env.stages=[1,2]"])) == {1, 2}
    counts = np.bincount(training_stages(["curriculum=none", "env.stages=[0,1,2]"], 20))
    assert counts.tolist() == pytest.approx([counts.sum() / 3] * 3, rel=0.1)


def test_the_app_plugs_the_curriculum_into_an_env_with_stages():
    stages = training_stages(["curriculum=fixed", "curriculum.stage=1", "env.stages=[0]"])
    assert set(stages) == {1}


@pytest.mark.parametrize("option", OPTIONS)
def test_option_composes_checks_and_builds(option):
    cfg = compose_config(["experiment=model_native_toolenv", f"curriculum={option}"])
    check_config(cfg)
    if option == "none":
        assert len(cfg.curriculum) == 0
        return
    curriculum = instantiate(cfg.curriculum)
    curriculum.on_iteration(1, cfg.trainer.iterations)
    curriculum.update(1, {})
    stages = curriculum.sample(64, np.random.default_rng(0))
    assert stages.dtype == np.int64 and stages.shape == (64,)
    assert 0 <= stages.min() and stages.max() <= curriculum.stage
    assert curriculum.metrics()["curriculum/stage"] == float(curriculum.stage)
    assert curriculum.state_dict()


def test_conf_values_match_the_original_and_adaptive_defaults():
    staged = instantiate(compose_config(["curriculum=staged"]).curriculum)
    assert staged.schedule == ORIGINAL
    cfg = compose_config(["curriculum=adaptive"]).curriculum
    assert (cfg.num_stages, cfg.threshold, cfg.replay) == (3, 0.99, 0.3)
    assert cfg.metric.format(stage=1) == "eval/success_rate_stage1"


BAD_VALUES = [
    ("curriculum=fixed", "curriculum.stage=-1", "curriculum.stage"),
    ("curriculum=staged", "curriculum.schedule=[]", "curriculum.schedule"),
    ("curriculum=staged", "curriculum.schedule=[0,-1]", "curriculum.schedule"),
    ("curriculum=staged", "curriculum.schedule=[0,a]", "curriculum.schedule"),
    ("curriculum=adaptive", "curriculum.num_stages=0", "curriculum.num_stages"),
    ("curriculum=adaptive", "curriculum.threshold=1.5", "curriculum.threshold"),
    ("curriculum=adaptive", "curriculum.replay=1.0", "curriculum.replay"),
    ("curriculum=adaptive", "curriculum.metric=eval/success_rate", "curriculum.metric"),
    ("curriculum=adaptive", "+curriculum.foo=1", "curriculum.foo"),
]


@pytest.mark.parametrize(("option", "override", "key"), BAD_VALUES,
                         ids=[override for _, override, _ in BAD_VALUES])
def test_bad_value_is_one_line_error_naming_key(option, override, key):
    cfg = compose_config(["experiment=model_native_toolenv", option, override])
    with pytest.raises(ConfigError) as info:
        check_config(cfg)
    assert "\n" not in str(info.value)
    assert info.value.key.startswith(key), str(info.value)
