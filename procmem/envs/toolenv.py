"""Batched arithmetic tool use: compose a problem's target from tool tokens, one per step.

**Problems.** Every problem belongs to a stage of
:data:`~procmem.envs.toolenv_stages.STAGES` (an arithmetic expression over its operands,
see :mod:`procmem.envs.toolenv_stages`), its operands drawn uniformly from
``operand_low..operand_high`` (0..9 by default). The actions ``0..5`` are the tool tokens
:data:`~procmem.envs.toolenv_machine.TOOL_TOKENS`, run on each problem's accumulator
machine (:mod:`procmem.envs.toolenv_machine`).

**Rewards.** ``ANS`` submits ``acc`` and terminates the episode; it earns 1.0 if ``acc``
equals the target, else 0, plus ``shaping`` times the number of distinct partial results
of the problem (see :mod:`~procmem.envs.toolenv_stages`; equal values count once) that
``acc`` held after any tool token of the episode. An invalid token terminates the episode
with reward 0; no ``ANS`` within ``max_steps`` tokens truncates it with reward 0.

**Stages per env.** Every new problem (``reset`` and the same-step auto-reset of envs that
ended) draws its stage from the stage sampler: uniform over ``stages`` unless
:meth:`ToolEnv.set_stage_sampler` plugs in another (a curriculum's ``sample``);
``reset(options={"stages": ...})`` forces the stages of the problems it starts, for
evaluation.
``eval_stages`` (default: ``stages``) are the stages an evaluation reports; stages there and
not in ``stages`` measure generalisation to problems never trained on.

**Observations** are a dict of int64 arrays:

- ``context`` [B, context_length]: ``CTX``, then each operand as ``width`` digit tokens
  (most significant first, zero-padded; ``width`` = the digits of ``operand_high``, 1 by
  default), padded with ``EOS`` up to the largest stage's operand count;
- ``stage`` [B]: the problem's stage;
- ``prev_token`` [B]: the vocab id of the last tool token, ``CTX`` at the start;
- ``step`` [B]: tool tokens emitted so far in the episode.

``acc`` and ``mem`` are not observed: the agent tracks them itself. ``step`` returns the info
``final_obs`` (the obs before the auto-reset), ``final_target``, ``final_answer`` (``acc``
after this step: the submitted answer where ``ANS`` was emitted), ``success`` (it was right),
``final_stage``, ``answered``, ``invalid`` and ``episode_steps``, all [B]: the values of the
episode each env ran this step, meaningful where it ended.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, NamedTuple

import numpy as np
from gymnasium import spaces

from procmem.envs.batched import ArrayState, BatchedVectorEnv, check_actions
from procmem.envs.protocols import StagedEnv, StageSampler
from procmem.envs.toolenv_machine import ANS, CTX, EOS, TOOL_TOKENS, VOCAB, apply_tools, decode
from procmem.envs.toolenv_stages import STAGES
from procmem.settings import AtLeast, NonEmpty, SettingError, configurable

MaxSteps = Annotated[int, AtLeast(1)]  # tool tokens a problem may take

_NUM_OPERANDS = np.array([stage.num_operands for stage in STAGES], dtype=np.int64)
_NUM_PARTIALS = np.array(
    [len(stage.partial_results(range(stage.num_operands))) for stage in STAGES], dtype=np.int64
)
STATE_ARRAYS = (
    "stage", "operands", "num_operands", "target", "partials", "partial_mask", "partial_hit",
    "context", "acc", "mem", "pointer", "steps", "prev_token",
)


def digit_tokens(values: np.ndarray, width: int) -> np.ndarray:
    """Non-negative ints as ``width`` digit tokens each, most significant first: [..., width]."""
    place = 10 ** np.arange(width - 1, -1, -1, dtype=np.int64)
    return np.asarray(values)[..., None] // place % 10


def distinct_partials(partials: np.ndarray, num_partials: np.ndarray) -> np.ndarray:
    """Mask [n, P] of the partial results that count: the first ``num_partials`` of each row,
    equal values once (the first of them)."""
    present = np.arange(partials.shape[1]) < num_partials[:, None]
    earlier = np.tril(np.ones((partials.shape[1],) * 2, dtype=bool), k=-1)
    repeated = (partials[:, :, None] == partials[:, None, :]) & present[:, None, :] & earlier
    return present & ~repeated.any(axis=2)


class Problems(NamedTuple):
    """New problems as a task family draws them (``n`` rows, int64)."""

    operands: np.ndarray  # [n, max_operands], 0 past num_operands
    num_operands: np.ndarray  # [n]
    target: np.ndarray  # [n]
    partials: np.ndarray  # [n, max_partials], the first num_partials of a row count
    num_partials: np.ndarray  # [n]
    context: np.ndarray  # [n, context_length], the observed problem


@configurable
class ToolEnv(ArrayState, BatchedVectorEnv, StagedEnv):
    """Batched arithmetic tool-use env, Gymnasium-shaped (see the module docstring).

    Settings: ``num_envs`` problems at a time, ``max_steps`` tool tokens per problem,
    operands drawn from ``operand_low..operand_high``, the ``shaping`` reward per partial
    result, the ``stages`` trained when no curriculum picks them and the ``eval_stages``
    evaluated (default: ``stages``).

    Envs that end are reset within the same ``step`` call, drawing their next problem's
    stage from the stage sampler and its operands from the env's generator (seeded by
    ``reset(seed=...)``). ``state_dict`` holds every problem, machine and the generator;
    the stage sampler belongs to whoever plugged it in.
    """

    state_arrays = STATE_ARRAYS
    num_actions = len(TOOL_TOKENS)
    vocab_size = len(VOCAB)
    pad_token = EOS  # pads the context of stages with fewer operands
    num_stages = len(STAGES)
    action_names = tuple(VOCAB[token] for token in TOOL_TOKENS)

    def __init__(
        self,
        *,
        num_envs: Annotated[int, AtLeast(1)] = 1,
        max_steps: MaxSteps = 7,
        operand_low: Annotated[int, AtLeast(0)] = 0,  # the vocabulary has no sign token
        operand_high: Annotated[int, AtLeast(0)] = 9,
        shaping: Annotated[float, AtLeast(0.0)] = 0.0,
        stages: Annotated[Sequence[int], NonEmpty()] = (0, 1, 2),
        eval_stages: Annotated[Sequence[int], NonEmpty()] | None = None,
    ) -> None:
        if operand_high < operand_low:
            raise SettingError("operand_high", f"{operand_high} is out of range: must be >= "
                                               f"operand_low ({operand_low})")
        stages = self._stage_list(stages, "stages")
        if eval_stages is not None:
            eval_stages = self._stage_list(eval_stages, "eval_stages")
        self.num_envs = num_envs
        self.max_steps = max_steps
        self.operand_low = operand_low
        self.operand_high = operand_high
        self.shaping = shaping
        self.stages = stages
        self.eval_stages = stages if eval_stages is None else eval_stages
        self.digits = len(str(operand_high))
        self.max_operands, max_partials, self.context_length = self._sizes()

        b, k, p = num_envs, self.max_operands, max_partials
        self.stage = np.zeros(b, dtype=np.int64)
        self.operands = np.zeros((b, k), dtype=np.int64)
        self.num_operands = np.ones(b, dtype=np.int64)
        self.target = np.zeros(b, dtype=np.int64)
        self.partials = np.zeros((b, p), dtype=np.int64)
        self.partial_mask = np.zeros((b, p), dtype=bool)
        self.partial_hit = np.zeros((b, p), dtype=bool)
        self.context = np.full((b, self.context_length), EOS, dtype=np.int64)
        self.acc = np.zeros(b, dtype=np.int64)
        self.mem = np.zeros(b, dtype=np.int64)
        self.pointer = np.ones(b, dtype=np.int64)
        self.steps = np.zeros(b, dtype=np.int64)
        self.prev_token = np.full(b, CTX, dtype=np.int64)
        self._tool_ids = np.array(TOOL_TOKENS, dtype=np.int64)
        self._sampler: StageSampler = self._uniform_stages
        self._rng = np.random.default_rng()
        self._needs_reset = True
        self._set_spaces(spaces.Dict({
            "context": spaces.MultiDiscrete(np.full(self.context_length, len(VOCAB))),
            "stage": spaces.Discrete(self.num_stages),
            "prev_token": spaces.Discrete(len(VOCAB)),
            "step": spaces.Discrete(max_steps + 1),
        }))

    def set_stage_sampler(self, sampler: StageSampler | None) -> None:
        """Draw new problems' stages with ``sampler(n, rng) -> int [n]``; None: uniform."""
        if sampler is not None and not callable(sampler):
            raise TypeError(f"sampler must be callable or None, got {sampler!r}")
        self._sampler = self._uniform_stages if sampler is None else sampler

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Start a new problem in every env; ``seed`` reseeds, ``options["stages"]`` (one
        stage, or one per env) forces their stages."""
        stages = (options or {}).get("stages")
        forced = None if stages is None else self._check_stages(stages, "stages")
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        self._new_problems(np.arange(self.num_envs), forced)
        self._needs_reset = False
        return self._obs(), {}

    def step(
        self, actions: np.ndarray
    ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Emit one tool token per env; returns (obs, reward, terminated, truncated, info)."""
        tokens = self._tool_ids[check_actions(self, actions)]
        self.acc, self.mem, self.pointer, valid = apply_tools(
            tokens, self.acc, self.mem, self.pointer, self.operands, self.num_operands
        )
        self.steps += 1
        self.prev_token = tokens
        self.partial_hit |= (self.acc[:, None] == self.partials) & self.partial_mask
        answered = tokens == ANS
        correct = answered & (self.acc == self.target)
        reward = correct.astype(np.float32)
        reward += answered * np.float32(self.shaping) * self.partial_hit.sum(axis=1)
        terminated = answered | ~valid
        truncated = ~terminated & (self.steps >= self.max_steps)
        info = {
            "final_obs": self._obs(),
            "_final_obs": terminated | truncated,
            "final_target": self.target.copy(),
            "final_answer": self.acc.copy(),
            "success": correct,
            "final_stage": self.stage.copy(),
            "answered": answered,
            "invalid": ~valid,
            "episode_steps": self.steps.copy(),
        }
        done = terminated | truncated
        if done.any():
            self._new_problems(np.flatnonzero(done), None)
        return self._obs(), reward, terminated, truncated, info

    def _stage_list(self, stages: Sequence[int], name: str) -> tuple[int, ...]:
        """``stages`` as a tuple; each must be a stage of this env."""
        stages = tuple(int(stage) for stage in stages)
        for stage in stages:
            if not 0 <= stage < self.num_stages:
                raise SettingError(name, f"{stage!r} is out of range: stages are "
                                         f"0..{self.num_stages - 1}")
        return stages

    def _uniform_stages(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return rng.choice(np.array(self.stages, dtype=np.int64), size=n)

    def _check_stages(self, stages: Any, name: str, n: int | None = None) -> np.ndarray:
        """``stages`` as int64 [n] (a scalar applies to all), each a stage of the table."""
        n = self.num_envs if n is None else n
        stages = np.asarray(stages)
        if stages.ndim == 0:
            stages = np.full(n, stages)
        if stages.shape != (n,) or not np.issubdtype(stages.dtype, np.integer):
            raise ValueError(f"{name} must be integers of shape ({n},), got {stages!r}")
        if np.any((stages < 0) | (stages >= self.num_stages)):
            raise ValueError(f"{name} must lie in [0, {self.num_stages}), got {stages}")
        return stages.astype(np.int64)

    def _new_problems(self, rows: np.ndarray, stages: np.ndarray | None) -> None:
        """Draw new problems (stages, then the problems) for ``rows``; reset their machines."""
        if stages is None:
            n = len(rows)
            stages = self._check_stages(self._sampler(n, self._rng), "stage sampler output", n)
        problems = self._draw(rows, stages)
        self.stage[rows] = stages
        self.operands[rows] = problems.operands
        self.num_operands[rows] = problems.num_operands
        self.target[rows] = problems.target
        self.partials[rows] = problems.partials
        self.partial_mask[rows] = distinct_partials(problems.partials, problems.num_partials)
        self.partial_hit[rows] = False
        self.context[rows] = problems.context
        self.acc[rows] = problems.operands[:, 0]
        self.mem[rows] = 0
        self.pointer[rows] = 1
        self.steps[rows] = 0
        self.prev_token[rows] = CTX

    # --- the task family: the stage table (a subclass may draw other problems) ---------------

    def _sizes(self) -> tuple[int, int, int]:
        """The most operands and partial results a problem has, and the context length."""
        max_operands = int(_NUM_OPERANDS.max())
        return max_operands, int(_NUM_PARTIALS.max()), 1 + max_operands * self.digits

    def _draw(self, rows: np.ndarray, stages: np.ndarray) -> Problems:
        """New problems of the given stages for envs ``rows``: operands, target, partial
        results and context (a family that keeps more per problem stores it here)."""
        n, k = len(stages), self.max_operands
        operands = self._rng.integers(self.operand_low, self.operand_high + 1, size=(n, k))
        num_operands = _NUM_OPERANDS[stages]
        unused = np.arange(k) >= num_operands[:, None]
        operands[unused] = 0
        target = np.zeros(n, dtype=np.int64)
        partials = np.zeros((n, self.partials.shape[1]), dtype=np.int64)
        for stage in np.unique(stages):
            of_stage = stages == stage
            columns = list(operands[of_stage].T)
            target[of_stage] = STAGES[stage].evaluate(columns)
            for j, value in enumerate(STAGES[stage].partial_results(columns)):
                partials[of_stage, j] = value
        digits = digit_tokens(operands, self.digits)
        digits[unused] = EOS
        context = np.concatenate(
            [np.full((n, 1), CTX, dtype=np.int64), digits.reshape(n, -1)], axis=1
        )
        return Problems(operands, num_operands, target, partials, _NUM_PARTIALS[stages], context)

    def describe(self) -> list[dict[str, Any]]:
        """The current problem of every env: stage, expression, operands and target."""
        return [
            {"stage": int(stage), "expression": STAGES[stage].expression,
             "operands": self.operands[i, : STAGES[stage].num_operands].tolist(),
             "target": int(self.target[i])}
            for i, stage in enumerate(self.stage)
        ]

    @staticmethod
    def program(actions: Sequence[int]) -> str:
        """Actions as the tool tokens they emit, e.g. ``"MUL ADD ANS"``."""
        return decode([TOOL_TOKENS[action] for action in actions])

    def _obs(self) -> dict[str, np.ndarray]:
        return {
            "context": self.context.copy(),
            "stage": self.stage.copy(),
            "prev_token": self.prev_token.copy(),
            "step": self.steps.copy(),
        }
