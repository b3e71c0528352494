"""The tool-use machine: its token vocabulary and the tool tokens, run on many problems at
once.

Each problem runs an accumulator ``acc``, a read pointer over the operands and a memory
register ``mem``. At a problem's start ``acc`` is the first operand, the pointer is at the
second, ``mem`` is 0. The tool tokens :data:`TOOL_TOKENS` are:

- ``MUL``, ``ADD``, ``SUB``: ``acc = acc * right``, ``acc + right``, ``acc - right``,
  where ``right`` is the next unread operand (the pointer then advances) or, once every
  operand has been read, ``mem``;
- ``STO``: ``mem = acc``, then ``acc`` = the next unread operand (the pointer advances);
  invalid when no operand is left;
- ``RCL``: swap ``acc`` and ``mem``;
- ``ANS``: submit ``acc``.

Arithmetic is on int64 and wraps around on overflow (only long programs on large operands
get there).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

VOCAB = (*"0123456789", "CTX", "MUL", "ADD", "SUB", "ANS", "STO", "RCL", "EOS")
CTX, MUL, ADD, SUB, ANS, STO, RCL, EOS = (VOCAB.index(name) for name in VOCAB[10:])
TOOL_TOKENS = (MUL, ADD, SUB, STO, RCL, ANS)


def binary_op(tokens: np.ndarray, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """``left (MUL|ADD|SUB) right`` elementwise by operator token; ``left`` for other tokens."""
    return np.select(
        [tokens == MUL, tokens == ADD, tokens == SUB], [left * right, left + right, left - right],
        left,
    )


def apply_tools(
    tokens: np.ndarray,
    acc: np.ndarray,
    mem: np.ndarray,
    pointer: np.ndarray,
    operands: np.ndarray,
    num_operands: np.ndarray | int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One tool token per problem, vectorised: the new (acc, mem, pointer) and ``valid``.

    ``operands`` is [..., K] (padding past ``num_operands`` is ignored); the other arrays
    broadcast against ``operands[..., 0]``. ``ANS`` and invalid tokens change nothing.
    """
    has_next = pointer < num_operands
    slots = np.arange(operands.shape[-1])
    next_operand = np.sum(operands * (slots == np.asarray(pointer)[..., None]), axis=-1)
    right = np.where(has_next, next_operand, mem)
    result = binary_op(tokens, acc, right)
    binary = (tokens == MUL) | (tokens == ADD) | (tokens == SUB)
    store = (tokens == STO) & has_next
    recall = tokens == RCL
    new_acc = np.where(store, next_operand, np.where(recall, mem, result))
    new_mem = np.where(store | recall, acc, mem)
    new_pointer = pointer + ((binary | store) & has_next)
    valid = (tokens != STO) | has_next
    return new_acc, new_mem, new_pointer, valid


def decode(tokens: Sequence[int]) -> str:
    """Token ids as text, e.g. ``"MUL ADD ANS"``."""
    for token in tokens:
        if not 0 <= token < len(VOCAB):
            raise ValueError(f"tokens must lie in [0, {len(VOCAB)}), got {token}")
    return " ".join(VOCAB[token] for token in tokens)
