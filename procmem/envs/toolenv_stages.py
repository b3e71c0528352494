"""The stages of the tool-use env: arithmetic expressions over named operands.

Every problem belongs to a stage of :data:`STAGES`: an arithmetic expression over its
operands, named ``a, b, c, ...`` in reading order. The answer is checked against the
stage's own expression:

====== ======================== ======== ===========================================
stage  target                   operands shortest program (tokens)
====== ======================== ======== ===========================================
0      ``a*b+c``                3        ``MUL ADD ANS`` (3)
1      ``(a*b+c)-d``            4        ``MUL ADD SUB ANS`` (4)
2      ``(a*b+c)-(d*e)``        5        ``MUL ADD STO MUL RCL SUB ANS`` (7)
3      ``(a*b+c)-(d*e+f)``      6        ``MUL ADD STO MUL ADD RCL SUB ANS`` (8)
====== ======================== ======== ===========================================

With the default ``max_steps=7`` stage 3 is unreachable: it needs ``max_steps >= 8``.
Stages 2 and 3 cannot be solved without the memory tools (``STO``, ``RCL``). Adding a
:class:`Stage` to :data:`STAGES` adds a stage.

The *partial results* of a problem are the values of its expression's operator
subexpressions other than the whole target: ``a*b`` at stage 0; ``a*b``, ``a*b+c`` at
stage 1; ``a*b``, ``a*b+c``, ``d*e`` at stage 2; ``a*b``, ``a*b+c``, ``d*e``, ``d*e+f`` at
stage 3.
"""

from __future__ import annotations

import ast
import functools
import operator
import string
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

OPERAND_NAMES = string.ascii_lowercase
_AST_OPERATORS = {ast.Mult: operator.mul, ast.Add: operator.add, ast.Sub: operator.sub}


@functools.cache
def _parse(expression: str, num_operands: int) -> ast.expr:
    """The syntax tree of ``expression``; only ``+ - *`` over the first operand names."""
    tree = ast.parse(expression, mode="eval").body
    names = OPERAND_NAMES[:num_operands]
    for node in ast.walk(tree):
        if isinstance(node, ast.BinOp) and type(node.op) in _AST_OPERATORS:
            continue
        if isinstance(node, ast.Name) and node.id in names:
            continue
        if isinstance(node, (ast.operator, ast.expr_context)):
            continue
        raise ValueError(f"expression {expression!r}: only + - * over {', '.join(names)}")
    return tree


def _operator_nodes(node: ast.expr) -> Iterator[ast.BinOp]:
    """The operator nodes of a tree, children before parents (post-order)."""
    if isinstance(node, ast.BinOp):
        yield from _operator_nodes(node.left)
        yield from _operator_nodes(node.right)
        yield node


def _evaluate(node: ast.expr, operands: Sequence[Any]) -> Any:
    if isinstance(node, ast.Name):
        return operands[OPERAND_NAMES.index(node.id)]
    return _AST_OPERATORS[type(node.op)](
        _evaluate(node.left, operands), _evaluate(node.right, operands)
    )


@dataclass(frozen=True)
class Stage:
    """A problem family: ``expression`` over ``num_operands`` operands named a, b, c, ..."""

    name: str
    num_operands: int
    expression: str

    def __post_init__(self) -> None:
        if not 1 <= self.num_operands <= len(OPERAND_NAMES):
            raise ValueError(f"num_operands must be in [1, {len(OPERAND_NAMES)}]")
        _parse(self.expression, self.num_operands)

    def evaluate(self, operands: Sequence[Any]) -> Any:
        """The target; operands are ints or equally shaped int64 arrays (one per operand)."""
        return _evaluate(_parse(self.expression, self.num_operands), operands)

    def partial_results(self, operands: Sequence[Any]) -> list[Any]:
        """Values of the operator subexpressions other than the whole target, post-order."""
        nodes = list(_operator_nodes(_parse(self.expression, self.num_operands)))
        return [_evaluate(node, operands) for node in nodes[:-1]]


STAGES = (
    Stage("mul_add", 3, "a*b+c"),
    Stage("mul_add_sub", 4, "(a*b+c)-d"),
    Stage("two_products", 5, "(a*b+c)-(d*e)"),
    Stage("nested", 6, "(a*b+c)-(d*e+f)"),
)
