import pytest
import torch
from torch import Tensor

from procmem.models import row_memory
from procmem.models.row_memory import RowMemory


class Counted:
    """A row-wise function (the row sum and its square) that records how many rows it
    was asked for."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def __call__(self, rows: Tensor) -> tuple[Tensor, Tensor]:
        self.calls.append(len(rows))
        total = rows.sum(1)
        return total, torch.stack([total, total**2], dim=1)


def rows(*values: float) -> Tensor:
    return torch.tensor([[v, -v, 0.5] for v in values]).reshape(-1, 3)


def check(memory: RowMemory, function: Counted, keys: Tensor, version: int = 0) -> None:
    expected = Counted()(keys)
    got = memory(function, keys, keys, version=version)
    for a, b in zip(got, expected, strict=True):
        assert torch.equal(a, b)


def test_remembered_rows_are_not_computed_again():
    memory, function = RowMemory(rows=16), Counted()
    check(memory, function, rows(1, 2, 3))
    check(memory, function, rows(3, 4, 1, 5))  # hits and misses, in any order
    check(memory, function, rows(5, 2))
    assert function.calls == [3, 2]  # the last call was all hits
    assert (memory.hits, memory.misses) == (4, 5)


def test_the_oldest_rows_are_forgotten_first():
    memory, function = RowMemory(rows=4), Counted()
    check(memory, function, rows(1, 2, 3))
    check(memory, function, rows(4, 5))  # overwrites the slot of 1
    check(memory, function, rows(2, 3, 4, 5))
    assert function.calls == [3, 2]
    check(memory, function, rows(1))
    assert function.calls == [3, 2, 1]
    check(memory, function, rows(*range(10, 20)))  # more new rows than it holds
    check(memory, function, rows(16, 17, 18, 19))
    assert function.calls == [3, 2, 1, 10]


def test_a_new_version_forgets_everything():
    memory, function = RowMemory(rows=8), Counted()
    check(memory, function, rows(1, 2), version=0)
    check(memory, function, rows(1, 2), version=1)
    check(memory, function, rows(1, 2), version=1)
    assert function.calls == [2, 2]


def test_rows_with_equal_hashes_are_told_apart(monkeypatch):
    """A hash only finds a candidate; the rows themselves decide."""
    memory, function = RowMemory(rows=8), Counted()
    monkeypatch.setattr(row_memory, "row_hashes",
                        lambda keys: torch.zeros(len(keys), dtype=torch.long))
    check(memory, function, rows(1, 2, 3))
    check(memory, function, rows(3, 2, 1))
    check(memory, function, rows(7))
    assert sum(function.calls) < 7  # some rows were still found


def test_rows_that_differ_in_one_bit_are_different_rows():
    memory, function = RowMemory(rows=8), Counted()
    check(memory, function, rows(1.0))
    check(memory, function, rows(torch.nextafter(torch.tensor(1.0), torch.tensor(2.0)).item()))
    check(memory, function, torch.tensor([[0.0, -0.0, 0.5]]))
    check(memory, function, torch.tensor([[-0.0, 0.0, 0.5]]))
    assert function.calls == [1, 1, 1, 1]


def test_an_empty_batch_and_bad_sizes():
    memory, function = RowMemory(rows=2), Counted()
    check(memory, function, rows())
    check(memory, function, rows(1))
    check(memory, function, rows())
    with pytest.raises(ValueError, match="rows must be >= 1"):
        RowMemory(rows=0)
