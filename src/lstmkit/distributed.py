"""Training on several processes or machines with PyTorch's DistributedDataParallel (DDP).

``lstmkit train`` started by torchrun, which describes the job in each process's environment
(RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT), joins that process group. Every process reads the
data and draws the same shuffled batches; each trains on its contiguous share of every batch,
weighted so that DDP's average of the processes' gradients is the whole batch's gradient (a run
on N processes computes what one process computes, up to the order of float sums; dropout masks
differ, being drawn per share). The weights therefore stay equal everywhere; process 0 alone
writes the run folder and reports. The command line trains on CPUs, so the group talks over gloo.

    torchrun --nproc-per-node 2 -m lstmkit train --dataset co2 --out runs/co2
    # on each of two machines, --node-rank 0 and 1:
    torchrun --nnodes 2 --node-rank 0 --master-addr HOST --master-port 29500 \\
             --nproc-per-node 2 -m lstmkit train --dataset co2 --out runs/co2
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel


def join_from_environment() -> bool:
    """Join the process group described by torchrun's environment variables; False (and nothing
    done) for a single process. The caller leaves with ``leave`` when its work is done."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return dist.is_initialized()
    dist.init_process_group("gloo")
    return True


def leave() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def rank_and_size() -> tuple[int, int]:
    """This process's rank and the number of processes: (0, 1) outside a process group."""
    if not dist.is_initialized():
        return 0, 1
    return dist.get_rank(), dist.get_world_size()


def writes() -> bool:
    """Whether this process writes files and reports: process 0 of the group, or a lone process."""
    return rank_and_size()[0] == 0


def barrier() -> None:
    """Wait for every process of the group (nothing outside one)."""
    if rank_and_size()[1] > 1:
        dist.barrier()


def wrap(model: nn.Module) -> nn.Module:
    """``model`` for training: inside DDP in a group of several processes, else itself."""
    return DistributedDataParallel(model) if rank_and_size()[1] > 1 else model


def share(batch: Tensor) -> tuple[Tensor, float]:
    """This process's rows of ``batch`` (B,) and the weight of their mean loss.

    DDP averages the processes' gradients; a share of B_r rows weighted B_r * N / B makes that
    average the mean over all B rows. A batch smaller than the group (its last) is computed whole
    by every process, with weight 1: the average of N equal gradients is that gradient.
    """
    rank, size = rank_and_size()
    if size == 1 or len(batch) < size:
        return batch, 1.0
    rows = batch.tensor_split(size)[rank]
    return rows, len(rows) * size / len(batch)


def total(value: float) -> float:
    """The sum of ``value`` over the processes of the group (``value`` itself outside one)."""
    if rank_and_size()[1] == 1:
        return value
    summed = torch.tensor(value, dtype=torch.float64)
    dist.all_reduce(summed)
    return float(summed)
