"""The metric vocabulary: every key any run logs, with its meaning, in one table.

Every family uses the same name for the same quantity (``train/episode_return`` is a mean
episode return whichever agent logged it). Scalars sit in fixed namespaces (``train/``,
``eval/``, ``memory/``, ``curriculum/``, ``envmodel/``, ``perf/``, and ``eval_<policy>/``
for an evaluation by a policy other than the run's own); images, videos and tables
logged to W&B sit under ``media/`` (runs) and ``compare/`` (comparisons). A key with a
``{placeholder}`` stands for a family of keys (``eval/success_rate_stage{k}``). The
documentation's metric reference is :func:`markdown_table`; ``plots/training.png`` draws the
metrics that have a ``panel`` title, in this order.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache


class UnknownMetricWarning(UserWarning):
    """A run logged a key that is not in the vocabulary."""


@dataclass(frozen=True)
class Metric:
    """One key (or family of keys) of the vocabulary."""

    key: str
    meaning: str
    panel: str | None = None  # its panel title on plots/training.png, if it gets one
    kind: str = "scalar"  # scalar | image | video | table

    def matches(self, key: str) -> bool:
        return _pattern(self.key).fullmatch(key) is not None


ENV_MODEL_METRICS = (  # (name, meaning, panel title)
    ("loss", "pixel loss + weighted event loss", "Env-model loss"),
    ("pixel_loss", "cross-entropy of the next frame's pixel classes", None),
    ("event_loss", "cross-entropy of the event counts", None),
    ("pixel_accuracy", "share of pixels of the right class", "Env-model pixel accuracy"),
    ("frame_accuracy", "share of frames with every pixel right", None),
    ("event_accuracy", "share of transitions with every event count right", None),
    ("reward_accuracy", "share of transitions whose reward is right", None),
)

VOCABULARY: tuple[Metric, ...] = (
    # --- training ---------------------------------------------------------------------------
    Metric("train/episode_return", "mean return of episodes (skill library: this iteration's; "
           "A2C: the last `agent.stats_window`)", "Episode return"),
    Metric("train/success_rate", "share of those episodes solved (envs that report success)",
           "Success rate"),
    Metric("train/episode_steps", "mean length of this iteration's episodes", "Episode steps"),
    Metric("train/solved_steps", "mean length of this iteration's solved episodes"),
    Metric("train/env_steps", "env steps taken so far (all envs)"),
    Metric("train/episodes", "episodes finished so far"),
    Metric("train/loss_policy", "policy-gradient loss"),
    Metric("train/loss_value", "value loss (MSE to the n-step returns)", "Value loss"),
    Metric("train/entropy", "mean policy entropy", "Policy entropy"),
    Metric("train/grad_norm", "gradient norm before clipping"),
    Metric("train/loss_distill", "I2A: cross-entropy of the rollout policy against the agent's"),
    Metric("train/lr", "learning rate of this iteration"),
    Metric("train/buffer_size", "transitions held in the replay ring"),
    # --- evaluation -------------------------------------------------------------------------
    Metric("eval/episode_return", "mean return of evaluation episodes", "Eval episode return"),
    Metric("eval/success_rate", "share of evaluation episodes solved (staged envs: mean over "
           "the trained stages)", "Eval success rate"),
    Metric("eval/success_rate_stage{k}", "share of stage-k problems answered exactly"),
    Metric("eval/episode_steps", "mean length of evaluation episodes"),
    Metric("eval/solved_steps", "mean length of solved evaluation episodes"),
    Metric("eval/reuse_rate", "share of evaluation steps taken by skills"),
    Metric("eval/skill_decision_share", "share of the evaluation's decisions that chose a "
                                        "skill (A2C with skills as options)"),
    Metric("eval_{policy}/{name}", "`evaluate.py run= eval_policy=<policy>` with a policy other "
           "than the run's own (`agent.eval_policy`): the `eval/{name}` of that policy"),
    Metric("eval/envmodel/rollout_pixel_accuracy_{k}", "pixels right after k open-loop steps"),
    Metric("eval/envmodel/rollout_frame_accuracy_{k}", "whole frames right after k open-loop "
           "steps"),
    # --- procedural memory ------------------------------------------------------------------
    Metric("memory/skills", "skills in the library", "Skills in library"),
    Metric("memory/skill_uses", "skill uses so far", "Cumulative skill uses"),
    Metric("memory/reuse_rate", "share of this iteration's steps taken by skills"),
    Metric("memory/avg_success_rate", "mean success rate of the skills used so far"),
    Metric("memory/merges", "near-duplicate skills merged so far"),
    Metric("memory/evictions", "skills evicted so far"),
    Metric("memory/retrievals", "retrievals so far"),
    Metric("memory/hits", "retrievals that found a usable skill"),
    Metric("memory/hit_rate", "hits / retrievals"),
    Metric("memory/skill_decision_share", "share of this iteration's decisions that chose a "
                                          "skill (A2C with skills as options)"),
    Metric("memory/loaded_skills", "skills of the library the run started from (memory.load)"),
    Metric("memory/bc_loss_{subgoal}", "cloning loss of a closed-loop subgoal policy"),
    # --- curriculum -------------------------------------------------------------------------
    Metric("curriculum/stage", "newest stage trained"),
    Metric("curriculum/replay_share", "expected share of new problems from earlier stages"),
    # --- environment model (training batches; the same under eval/ for held-out data) ---
    *(metric for name, meaning, panel in ENV_MODEL_METRICS for metric in (
        Metric(f"envmodel/{name}", f"env model on training batches: {meaning}", panel),
        Metric(f"eval/envmodel/{name}", f"env model on held-out transitions: {meaning}"))),
    # --- speed ------------------------------------------------------------------------------
    Metric("perf/sps", "env steps per second of the iteration"),
    Metric("perf/iterations_per_second", "iterations per second since the last logged row"),
    # --- media (W&B) ------------------------------------------------------------------------
    Metric("media/training_curves", "plots/training.png", kind="image"),
    Metric("media/episode", "a greedy episode (image observations)", kind="video"),
    Metric("media/imagination", "I2A: real frames over the frames it imagines", kind="image"),
    Metric("media/skills", "the skill library at the end", kind="table"),
    Metric("compare/summary", "`evaluate.py compare`: mean and interval per group and metric",
           kind="table"),
    Metric("compare/runs", "`evaluate.py compare`: every run, its group and status",
           kind="table"),
    Metric("compare/comparison", "`evaluate.py compare`: comparison.png", kind="image"),
    Metric("compare/curves", "`evaluate.py compare`: curves.png", kind="image"),
)


@cache
def _pattern(key: str) -> re.Pattern[str]:
    parts = re.split(r"\{[a-z_]+\}", key)
    return re.compile(r"[A-Za-z0-9_]+".join(re.escape(part) for part in parts))


def metric_of(key: str) -> Metric | None:
    """The vocabulary entry of a logged key, or ``None`` for a key outside it."""
    return next((metric for metric in VOCABULARY if metric.matches(key)), None)


def panels(logged: set[str]) -> list[tuple[str, str]]:
    """``(key, title)`` of every panelled metric in ``logged``, in vocabulary order."""
    return [(m.key, m.panel) for m in VOCABULARY if m.panel is not None and m.key in logged]


def markdown_table() -> str:
    """The vocabulary as a Markdown table (the documentation's metric reference)."""
    lines = ["| key | kind | meaning |", "|---|---|---|"]
    lines += [f"| `{m.key}` | {m.kind} | {m.meaning} |" for m in VOCABULARY]
    return "\n".join(lines)
