import torch

from procmem.models import distinct
from procmem.models.distinct import distinct_rows, per_distinct_row, row_hashes


def rows_with_repeats() -> torch.Tensor:
    """12 rows of 40 values, 5 of them distinct, the repeats scattered."""
    torch.manual_seed(0)
    base = (torch.rand(5, 40) > 0.5).float()
    return base[torch.tensor([3, 0, 3, 1, 4, 4, 2, 0, 3, 1, 2, 4])]


def check_groups(keys: torch.Tensor, groups: int) -> None:
    first, inverse = distinct_rows(keys)
    assert len(first) == groups
    assert torch.equal(keys[first][inverse], keys)
    assert len(torch.unique(keys[first], dim=0)) == groups


def test_equal_rows_are_grouped_and_distinct_ones_left_alone():
    keys = rows_with_repeats()
    check_groups(keys, 5)
    assert distinct_rows(torch.unique(keys, dim=0)) is None
    assert distinct_rows(keys.view(12, 4, 10)) is not None  # rows of any shape


def test_rows_that_share_a_hash_are_still_told_apart(monkeypatch):
    monkeypatch.setattr(distinct, "row_hashes", lambda keys: keys[:, 0].long())
    check_groups(rows_with_repeats(), 5)


def test_hashes_follow_the_bits():
    keys = rows_with_repeats()
    hashes = row_hashes(keys)
    assert torch.equal(hashes[0], hashes[2]) and len(torch.unique(hashes)) == 5
    flipped = keys.clone()
    flipped[:, 17] = torch.nextafter(flipped[:, 17], torch.tensor(2.0))
    assert (row_hashes(flipped) != hashes).all()


def test_a_function_runs_on_distinct_rows_and_gradients_sum_over_copies():
    keys = rows_with_repeats().requires_grad_()
    seen = []

    def double(x: torch.Tensor) -> torch.Tensor:
        seen.append(len(x))
        return 2 * x

    out = per_distinct_row(double, keys.detach(), keys)
    assert seen == [5] and torch.equal(out, 2 * keys)
    (out * torch.arange(12.0)[:, None]).sum().backward()
    first, inverse = distinct_rows(keys.detach())
    # Each group's row gets twice the sum of its copies' weights; the other copies get 0.
    expected = torch.zeros(12).index_add_(0, first, torch.zeros(5).index_add_(
        0, inverse, 2 * torch.arange(12.0)))
    assert torch.equal(keys.grad[:, 0], expected)
