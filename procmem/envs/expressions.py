"""Tool use where the program depends on the problem: random arithmetic expressions.

In the stage table of :mod:`procmem.envs.toolenv_stages` one token program solves every
problem of a stage, so a policy may ignore the context. Here every problem is a random
expression over ``+ - *`` that the context spells out, and the program must follow it.

**Expressions.** The machine of :mod:`procmem.envs.toolenv_machine` (an accumulator, one memory
register, operands read in order, the register the right operand once every operand is read)
evaluates exactly the expressions made of a *chain* ``((a o b) o c) ...`` or of two chains
joined, ``(a o b ...) o (x o y ...)``, where the right chain has at least two operands.
Problems are drawn from those: stage ``s`` holds expressions of depth ``d = s + 1`` (operator
nesting depth; a chain of ``n`` operators has depth ``n``, joined chains one more than the
deeper chain). For depth ``d`` the shape is drawn uniformly from the ``2d - 1`` shapes of that
depth (the chain of ``d`` operators; the left chain of ``d - 1`` operators joined with a right
chain of ``1..d-1``; a left chain of ``0..d-2`` operators joined with a right chain of
``d - 1``), every operator uniformly from ``MUL, ADD, SUB`` and every operand uniformly from
``operand_low..operand_high``.

**Context.** ``CTX``, then the expression in postfix (reverse Polish) order, which needs no
parentheses: operands as ``width`` digit tokens, operators as their tool tokens, padded with
``EOS``. ``(a*b+c)-(d*e)`` is ``a b MUL c ADD d e MUL SUB``.

**Programs.** :func:`reference_program`: the left chain's operators, then for joined chains
``STO``, the right chain's operators, and the join (``ADD``/``MUL`` take the register as
right operand and commute; ``SUB`` needs ``RCL SUB``), then ``ANS``: at most ``2d + 2``
tokens at depth ``d``, so ``max_steps`` of ``2 * max_depth + 2`` reaches every stage.
Rewards, shaping (the partial results are the values of every operator node but the root),
auto-reset and the info keys are those of :class:`~procmem.envs.toolenv.ToolEnv`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

import numpy as np

from procmem.envs.toolenv import MaxSteps, Problems, ToolEnv, digit_tokens
from procmem.envs.toolenv_machine import ADD, ANS, CTX, EOS, MUL, RCL, STO, SUB, VOCAB, binary_op
from procmem.settings import AtLeast, configurable

OPERATORS = np.array([MUL, ADD, SUB], dtype=np.int64)
_SYMBOL = {MUL: "*", ADD: "+", SUB: "-"}


def reference_program(left: int, right: int, operators: Sequence[int]) -> list[int]:
    """The tool tokens that evaluate an expression: a left chain of ``left`` operators,
    joined (when ``right > 0``) with a right chain of ``right`` operators; ``operators`` in
    postfix order (left chain, right chain, join)."""
    program = [int(op) for op in operators[:left]]
    if right > 0:
        join = int(operators[left + right])
        program += [STO, *(int(op) for op in operators[left: left + right])]
        program += [RCL, SUB] if join == SUB else [join]
    return [*program, ANS]


def infix(left: int, right: int, operators: Sequence[int], operands: Sequence[int]) -> str:
    """An expression as text with the parentheses its evaluation order needs."""
    def wrap(text: str) -> str:
        return text if text.isdigit() else f"({text})"

    def chain(start: int, ops: Sequence[int]) -> str:
        text = str(operands[start])
        for i, op in enumerate(ops):
            text = f"{wrap(text)}{_SYMBOL[int(op)]}{operands[start + i + 1]}"
        return text

    text = chain(0, operators[:left])
    if right > 0:
        join = _SYMBOL[int(operators[left + right])]
        text = f"{wrap(text)}{join}{wrap(chain(left + 1, operators[left: left + right]))}"
    return text


@configurable
class ExpressionEnv(ToolEnv):
    """Batched tool use on random expressions whose postfix form is the context (see the
    module docstring); stage ``s`` = depth ``s + 1``, ``max_depth`` stages in all, and
    ``max_steps`` tokens per problem (depth ``d`` needs up to ``2d + 2``). The other settings
    are :class:`~procmem.envs.toolenv.ToolEnv`'s. ``eval_stages`` beyond ``stages`` measure
    depths never trained on."""

    state_arrays = (*ToolEnv.state_arrays, "left", "right", "operators")

    def __init__(
        self,
        *,
        max_depth: Annotated[int, AtLeast(1)] = 4,
        max_steps: MaxSteps = 10,
        **settings: Any,
    ) -> None:
        self.num_stages = self.max_depth = max_depth
        super().__init__(max_steps=max_steps, **settings)
        self.left = np.zeros(self.num_envs, dtype=np.int64)
        self.right = np.zeros(self.num_envs, dtype=np.int64)
        self.operators = np.zeros((self.num_envs, 2 * max_depth - 1), dtype=np.int64)

    def _sizes(self) -> tuple[int, int, int]:
        d = self.max_depth
        return 2 * d, max(1, 2 * d - 2), 1 + 2 * d * self.digits + 2 * d - 1

    def _draw(self, rows: np.ndarray, stages: np.ndarray) -> Problems:
        """Random expressions of depth ``stages + 1``; their shapes are kept for ``describe``."""
        n, d, rng = len(stages), stages + 1, self._rng
        index = np.arange(n)
        shape = rng.integers(0, 2 * d - 1)
        chain = shape == 0
        left = np.where(chain, d, np.where(shape < d, d - 1, shape - d))
        right = np.where(chain, 0, np.where(shape < d, shape, d - 1))
        joined = right > 0
        operators = OPERATORS[rng.integers(0, 3, size=(n, self.operators.shape[1]))]
        num_operands = left + 1 + np.where(joined, right + 1, 0)
        k = self.max_operands
        operands = rng.integers(self.operand_low, self.operand_high + 1, size=(n, k))
        operands[np.arange(k) >= num_operands[:, None]] = 0
        last_operator = operators.shape[1] - 1

        partials = np.zeros((n, self.partials.shape[1]), dtype=np.int64)
        value = operands[:, 0]
        for i in range(self.max_depth):
            live = i < left
            value = np.where(live, binary_op(operators[:, i], value, operands[:, i + 1]), value)
            partials[live, i] = value[live]
        # Indices are clipped where they would run past the arrays on rows they do not
        # apply to (masked by ``live`` / ``joined``).
        right_value = operands[index, np.minimum(left + 1, k - 1)]
        for j in range(self.max_depth - 1):
            live = j < right
            following = operands[index, np.minimum(left + 2 + j, k - 1)]
            step = binary_op(operators[index, left + j], right_value, following)
            right_value = np.where(live, step, right_value)
            partials[index[live], (left + j)[live]] = right_value[live]
        join = operators[index, np.minimum(left + right, last_operator)]
        target = np.where(joined, binary_op(join, value, right_value), value)
        # A chain's last operator node is the root: not a partial result.
        num_partials = np.where(joined, left + right, left - 1)

        self.left[rows], self.right[rows], self.operators[rows] = left, right, operators
        context = self._postfix(left, right, operators, operands)
        return Problems(operands, num_operands, target, partials, num_partials, context)

    def _postfix(
        self, left: np.ndarray, right: np.ndarray, operators: np.ndarray, operands: np.ndarray
    ) -> np.ndarray:
        """``CTX`` and the postfix tokens of every problem, ``EOS``-padded: [n, context_length].

        The postfix sequence is laid out as items (an operand or an operator each), then the
        items are expanded into tokens (``digits`` per operand, one per operator)."""
        n, d = len(left), self.max_depth
        rows = np.arange(n)
        item_operand = np.full((n, 4 * d - 1), -1)  # operand index at an item, or -1
        item_operator = np.full((n, 4 * d - 1), -1)  # operator token at an item, or -1
        item_operand[:, 0] = 0
        for i in range(d):
            r = rows[i < left]
            item_operand[r, 2 * i + 1] = i + 1
            item_operator[r, 2 * i + 2] = operators[r, i]
        r, base = rows[right > 0], 2 * left[right > 0]
        item_operand[r, base + 1] = left[r] + 1
        for j in range(d - 1):
            live = j < right[r]
            rj, bj = r[live], base[live]
            item_operand[rj, bj + 2 + 2 * j] = left[rj] + 2 + j
            item_operator[rj, bj + 3 + 2 * j] = operators[rj, left[rj] + j]
        item_operator[r, base + 2 + 2 * right[r]] = operators[r, left[r] + right[r]]

        is_operand = item_operand >= 0
        length = np.where(is_operand, self.digits, (item_operator >= 0).astype(np.int64))
        start = 1 + np.cumsum(length, axis=1) - length
        context = np.full((n, self.context_length), EOS, dtype=np.int64)
        context[:, 0] = CTX
        item_rows, items = np.nonzero(item_operator >= 0)
        context[item_rows, start[item_rows, items]] = item_operator[item_rows, items]
        item_rows, items = np.nonzero(is_operand)
        values = operands[item_rows, item_operand[item_rows, items]]
        digits = digit_tokens(values, self.digits)  # [m, digits]
        for place in range(self.digits):
            context[item_rows, start[item_rows, items] + place] = digits[:, place]
        return context

    def describe(self) -> list[dict[str, Any]]:
        """The current problem of every env: stage, depth, expression (infix), operands,
        target and the reference program."""
        problems = []
        for i, stage in enumerate(self.stage):
            left, right, operators = int(self.left[i]), int(self.right[i]), self.operators[i]
            operands = self.operands[i, : self.num_operands[i]].tolist()
            problems.append({
                "stage": int(stage), "depth": int(stage) + 1,
                "expression": infix(left, right, operators, operands), "operands": operands,
                "target": int(self.target[i]),
                "reference": " ".join(VOCAB[t] for t in reference_program(left, right, operators)),
            })
        return problems
