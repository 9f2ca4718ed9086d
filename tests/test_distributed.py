"""lstmkit.distributed's batch shares, simulated for every process of a group."""

import pytest
import torch

from lstmkit import distributed


@pytest.mark.parametrize("size", [2, 3, 5])
@pytest.mark.parametrize("batch", [1, 2, 7, 16, 17])
def test_weighted_shares_average_to_the_whole_batch(monkeypatch, size, batch):
    """For every process r, (rows_r, w_r) = share(batch): DDP's average over the processes of
    w_r * mean(loss over rows_r) is the mean over the whole batch, and the shares cover it once
    (or, for a batch smaller than the group, every process takes all of it)."""
    losses = torch.rand(100, dtype=torch.float64)
    indices = torch.randperm(100)[:batch]
    shares = []
    for rank in range(size):
        monkeypatch.setattr(distributed, "rank_and_size", lambda rank=rank: (rank, size))
        shares.append(distributed.share(indices))
    average = sum(weight * losses[rows].mean() for rows, weight in shares) / size
    torch.testing.assert_close(average, losses[indices].mean())
    covered = torch.cat([rows for rows, _ in shares])
    if batch >= size:
        assert torch.equal(covered, indices)
    else:
        assert all(torch.equal(rows, indices) and weight == 1.0 for rows, weight in shares)


def test_a_lone_process_is_its_own_group():
    assert distributed.rank_and_size() == (0, 1) and distributed.writes()
    batch = torch.arange(5)
    rows, weight = distributed.share(batch)
    assert rows is batch and weight == 1.0 and distributed.total(2.5) == 2.5
    model = torch.nn.Linear(2, 2)
    assert distributed.wrap(model) is model and distributed.join_from_environment() is False
