"""The batched MiniPacman against the plain one-env implementation of the same rules
(:mod:`procmem.envs.minipacman_oracle`) under a uniformly random policy.

The two draw different random numbers, so they are compared in distribution: per mode, the
means over whole episodes of the episode length, the return and the food, pills and ghosts
eaten (:mod:`procmem.envs.minipacman_statistics`).
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from procmem.envs.minipacman import MODES
from procmem.envs.minipacman_statistics import (
    STATISTICS,
    env_first_episodes,
    mean_and_error,
    oracle_episodes,
)

EPISODES = 20_000  # per side and mode
Z = 4.0  # tolerance, in combined standard errors
SHIFT = 0.08  # a shift in mean length the comparison must be able to see


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
def test_random_policy_statistics_match_the_oracle(mode):
    """Over 20,000 episodes per side (frame cap 1000, uniform random actions), each mean
    (length, return, food, pills, ghosts per episode) of the env and of the oracle differ by at
    most 4 combined standard errors: |mean_env - mean_oracle| <= 4 sqrt(se_env^2 +
    se_oracle^2). And the test can see a real difference: 4 combined standard errors of the
    mean length stay below 8 % of it (lengths are heavy-tailed: in regular and rush about
    0.5 % of episodes run to the cap once the only ghost is eaten).

    Means measured: length about 56 (regular), 51 (avoid), 50 (hunt, ambush), 54 (rush);
    regular return about 9.5. Runs in about 15 s a mode on an idle CPU."""
    env = env_first_episodes(mode, EPISODES, seed=1)
    oracle = oracle_episodes(mode, EPISODES, seed=2)
    (env_mean, env_se), (oracle_mean, oracle_se) = mean_and_error(env), mean_and_error(oracle)
    se = np.hypot(env_se, oracle_se)
    report = {name: (round(e, 3), round(o, 3), round((e - o) / s, 2))
              for name, e, o, s in zip(STATISTICS, env_mean, oracle_mean, se, strict=True)}
    assert SHIFT * oracle_mean[0] > Z * se[0], report
    assert (np.abs(env_mean - oracle_mean) <= Z * se).all(), report
    # Sanity: every statistic varies, and the episodes are whole (ended by death or the cap).
    assert (se > 0).all() and (env[:, 0] >= 1).all() and (env[:, 0] <= 1000).all()


def test_random_policy_matches_the_spec_figures():
    """The reference's random-policy figures in regular mode (spec: length about 55, return
    about 9.5; the oracle gives 55.9 and 9.5): the means of 2,000 first episodes lie within 4
    standard errors of the oracle's (about 7.8 steps and 0.67). The return tells apart the
    dynamics the spec warns of (fresh ghosts chasing from their first step, 135 food and a
    symmetric spawn box: about 50 steps and a return below 8)."""
    stats = env_first_episodes("regular", 2000, seed=3)
    mean, se = mean_and_error(stats)
    assert abs(mean[0] - 55.9) < 4 * se[0], mean
    assert abs(mean[1] - 9.5) < 4 * se[1], mean


def run_benchmark(script: str, *args: str) -> str:
    """Run ``benchmarks/<script>`` with ``args`` and return what it printed."""
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root)}
    result = subprocess.run([sys.executable, str(root / "benchmarks" / script), *args],
                            cwd=root, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_throughput_benchmark_times_the_reference_beside_the_batch():
    out = run_benchmark("env_throughput.py", "--envs", "minipacman", "--batch-sizes", "4", "64",
                        "--threads", "1", "2", "--seconds", "0.2")
    rows = [line for line in out.splitlines() if line.startswith("minipacman")]
    assert [row.split()[1:3] for row in rows] == [["1", "4"], ["1", "64"], ["2", "4"], ["2", "64"]]
    reference = float(re.search(r"reference .*: ([\d,]+) steps/s", out)[1].replace(",", ""))
    for row in rows:
        rate, ratio = float(row.split()[3].replace(",", "")), float(row.split()[4][:-1])
        assert ratio == pytest.approx(rate / reference, rel=0.01, abs=0.06)


def test_throughput_benchmark_times_gymnasium_envs_beside_gymnasiums_own():
    out = run_benchmark("env_throughput.py", "--envs", "cartpole", "--batch-sizes", "4", "512",
                        "--seconds", "0.3")
    rows = [line.split() for line in out.splitlines() if line.startswith("cartpole")]
    assert [row[2] for row in rows] == ["4"]  # 512 Python envs are left out
    rate, ratio = float(rows[0][3].replace(",", "")), float(rows[0][4][:-1])
    baseline = float(re.search(r"gymnasium.make_vec \(([\d,]+)\)", out)[1].replace(",", ""))
    assert ratio == pytest.approx(rate / baseline, rel=0.01, abs=0.006)


def test_random_policy_benchmark_prints_both_implementations_per_mode():
    out = run_benchmark("minipacman_random_policy.py", "--episodes", "50", "--modes", "hunt",
                        "rush")
    rows = [line.split(" | ")[:2] for line in out.splitlines() if line.startswith("| hunt")
            or line.startswith("| rush")]
    assert rows == [["| hunt", "batched"], ["| hunt", "oracle"], ["| rush", "batched"],
                    ["| rush", "oracle"]]
