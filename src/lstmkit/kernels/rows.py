"""Index arithmetic on packed rows (the layout described in ``lstmkit.kernels``)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def step_ranges(batch_sizes: Sequence[int], reverse: bool) -> list[tuple[int, int, int]]:
    """(start, stop, active) rows of every step, in the order the recurrence visits them."""
    ranges, start = [], 0
    for active in batch_sizes:
        ranges.append((start, start + active, active))
        start += active
    return ranges[::-1] if reverse else ranges


def _coordinates(batch_sizes: Sequence[int]) -> tuple[Tensor, Tensor]:
    """(step (N,), position in the batch (N,)) of every packed row."""
    sizes = torch.tensor(batch_sizes, dtype=torch.long)
    step = torch.repeat_interleave(torch.arange(len(sizes)), sizes)
    offsets = torch.cumsum(sizes, 0) - sizes  # (T,) first row of each step
    return step, torch.arange(int(sizes.sum())) - offsets[step]


def row_positions(batch_sizes: Sequence[int], device: torch.device) -> Tensor:
    """(N,) position in the batch of every packed row."""
    return _coordinates(batch_sizes)[1].to(device)


def previous_rows(batch_sizes: Sequence[int], reverse: bool, device: torch.device) -> Tensor:
    """(N,) index into ``cat([states (N, .), initial (B, .)])`` of the state each row started from.

    A row's step reads the state its sequence left at the neighbouring step (t - 1 forward,
    t + 1 in reverse), or the initial state when that neighbour does not exist for it.
    """
    step, seq = _coordinates(batch_sizes)
    sizes = torch.tensor(batch_sizes, dtype=torch.long)
    offsets = torch.cumsum(sizes, 0) - sizes
    neighbour = step + 1 if reverse else step - 1
    # one zero-sized step past each end makes neighbours -1 and T "not running"
    padded_sizes = torch.cat([sizes, sizes.new_zeros(1)])
    padded_offsets = torch.cat([offsets, offsets.new_zeros(1)])
    running = seq < padded_sizes[neighbour]
    index = torch.where(running, padded_offsets[neighbour] + seq, len(seq) + seq)
    return index.to(device)
