"""Index arithmetic on packed rows (the layout described in ``lstmkit.kernels``)."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor


def step_ranges(batch_sizes: Sequence[int], reverse: bool) -> list[tuple[int, int, int]]:
    """(start, stop, active) rows of every step, in the order the recurrence visits them."""
    ranges, start = [], 0
    for active in batch_sizes:
        ranges.append((start, start + active, active))
        start += active
    return ranges[::-1] if reverse else ranges


# The index tensors below depend on the batch sizes only, and a training loop on padded batches
# repeats one or two of them; they are cached (and shared: read only). Building them took about
# 90 µs of a 0.86 ms training step at (T, B, H) = (20, 16, 32). A few layouts only: each holds
# int64 tensors of N rows (5 MB at T = 1000, B = 128), and packed batches of varied lengths rarely
# repeat one.
CACHED_LAYOUTS = 8


@functools.lru_cache(maxsize=CACHED_LAYOUTS)
def _coordinates(batch_sizes: tuple[int, ...]) -> tuple[Tensor, Tensor, Tensor]:
    """(step (N,), position in the batch (N,), first row of each step (T,)) of the packed rows."""
    sizes = torch.tensor(batch_sizes, dtype=torch.long)
    step = torch.repeat_interleave(torch.arange(len(sizes)), sizes)
    offsets = torch.cumsum(sizes, 0) - sizes
    return step, torch.arange(int(sizes.sum())) - offsets[step], offsets


def row_positions(batch_sizes: Sequence[int], device: torch.device) -> Tensor:
    """(N,) position in the batch of every packed row (shared: read only)."""
    return _coordinates(tuple(batch_sizes))[1].to(device)


class Previous(NamedTuple):
    """Where each packed row's step starts from: the state its sequence left at the neighbouring
    step (t - 1 forward, t + 1 in reverse), or its initial state when that neighbour does not
    exist for it. Gather with ``states.index_select(0, rows)``, then overwrite ``starts`` with
    ``initial_states.index_select(0, sequences)``."""

    rows: Tensor  # (N,) the state row each row reads (a valid row, unused, for ``starts``)
    starts: Tensor  # (S,) the rows that read an initial state instead
    sequences: Tensor  # (S,) whose initial state


@functools.lru_cache(maxsize=CACHED_LAYOUTS)
def _previous(batch_sizes: tuple[int, ...], reverse: bool) -> Previous:
    step, seq, offsets = _coordinates(batch_sizes)
    sizes = torch.tensor(batch_sizes, dtype=torch.long)
    neighbour = step + 1 if reverse else step - 1
    # one zero-sized step past each end makes neighbours -1 and T "not running"
    padded_sizes = torch.cat([sizes, sizes.new_zeros(1)])
    padded_offsets = torch.cat([offsets, offsets.new_zeros(1)])
    running = seq < padded_sizes[neighbour]
    starts = torch.nonzero(~running).squeeze(1)
    rows = torch.where(running, padded_offsets[neighbour] + seq, 0)
    return Previous(rows, starts, seq[starts])


def previous_rows(batch_sizes: Sequence[int], reverse: bool, device: torch.device) -> Previous:
    """The ``Previous`` of every packed row (shared: read only)."""
    return Previous(*(t.to(device) for t in _previous(tuple(batch_sizes), reverse)))
