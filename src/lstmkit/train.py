"""The training loop: mini-batches, a learning-rate schedule, early stopping and checkpoints.

Reads top to bottom like nanoGPT's train.py, as functions: ``lr_at`` gives each epoch's learning
rate, ``fit`` runs the epochs. Every epoch ends with a checkpoint (weights, optimizer and random
generators, written atomically), so that ``fit(..., resume=True)`` continues a killed run at the
next epoch and ends with the same weights as a run that was never interrupted. The library never
prints: ``on_epoch`` receives each epoch's record.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from . import distributed
from .checkpoint import CHECKPOINT, MODEL, load_checkpoint, read_safetensors, save_checkpoint, save_model
from .data import DataError

OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}
SCHEDULES = ("constant", "cosine", "step")


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 50
    batch_size: int = 32
    lr: float = 3e-3
    optimizer: str = "adam"  # adam | adamw | sgd (with momentum 0.9)
    weight_decay: float = 0.0
    schedule: str = (
        "constant"  # constant | cosine (to 0 at the last epoch) | step (x0.1 every third of the run)
    )
    patience: int = 10  # epochs without a better validation loss before stopping; 0 = never stop early
    grad_clip: float = 1.0  # max global gradient norm; 0 = no clipping
    seed: int = 0

    def check(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise DataError(f"epochs and batch_size must be >= 1, got {self.epochs} and {self.batch_size}")
        if not self.lr > 0:
            raise DataError(f"lr must be > 0, got {self.lr}")
        if self.optimizer not in OPTIMIZERS:
            raise DataError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            raise DataError(f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if self.patience < 0 or self.grad_clip < 0 or self.weight_decay < 0:
            raise DataError("patience, grad_clip and weight_decay must be >= 0")

    def to_json(self) -> dict:
        return asdict(self)


def lr_at(config: TrainConfig, epoch: int) -> float:
    """The learning rate of epoch ``epoch`` (0-based); a pure function, so resuming needs no state."""
    if config.schedule == "cosine":
        return config.lr * 0.5 * (1 + math.cos(math.pi * epoch / config.epochs))
    if config.schedule == "step":
        return config.lr * 0.1 ** (3 * epoch // config.epochs)
    return config.lr


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    extra = {"momentum": 0.9} if config.optimizer == "sgd" else {}
    return OPTIMIZERS[config.optimizer](
        model.parameters(), lr=config.lr, weight_decay=config.weight_decay, **extra
    )


@torch.no_grad()
def mean_loss(task, model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, batch_size: int) -> float:
    model.eval()
    total = 0.0
    for start in range(0, len(inputs), batch_size):
        stop = start + batch_size
        total += float(task.loss(model, inputs[start:stop], targets[start:stop])) * len(inputs[start:stop])
    return total / len(inputs)


def fit(
    task,
    model: nn.Module,
    splits: dict,
    config: TrainConfig,
    out: Path,
    run_config: dict,
    *,
    resume: bool = False,
    on_epoch: Callable[[dict], None] | None = None,
) -> dict:
    """Train ``model`` on ``splits["train"]``, select on ``splits["val"]`` (the training loss if there
    is none), checkpoint into ``out``. Returns the training state: history, best epoch, and whether
    it stopped early. Leaves the best weights in ``model``.

    In a process group (``lstmkit.distributed``), every process calls ``fit`` alike: each trains
    on its share of every batch inside DDP, all select alike, process 0 writes and reports."""
    config.check()
    checkpoint = out / CHECKPOINT
    optimizer = make_optimizer(model, config)
    shuffle = torch.Generator().manual_seed(config.seed)
    state = {
        "epoch": 0,
        "history": [],
        "best_loss": math.inf,
        "best_epoch": None,
        "bad_epochs": 0,
        "stopped": False,
    }
    if resume:
        if not checkpoint.is_file():
            raise DataError(f"nothing to resume: {str(checkpoint)!r} does not exist")
        generators, state = load_checkpoint(checkpoint, model, optimizer)
        torch.set_rng_state(generators["torch"])
        shuffle.set_state(generators["shuffle"])
    elif checkpoint.exists():
        raise DataError(
            f"{str(out)!r} already holds a run; pass --resume to continue it, or choose another --out"
        )

    trained = distributed.wrap(model)  # the same parameters, behind DDP's gradient averaging
    writes = distributed.writes()
    processes = distributed.rank_and_size()[1]
    inputs, targets = task.tensors(splits["train"])
    validation = task.tensors(splits["val"]) if "val" in splits else None
    for epoch in range(state["epoch"], config.epochs):
        if state["stopped"]:
            break
        lr = lr_at(config, epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        model.train()
        total = 0.0
        for batch in torch.randperm(len(inputs), generator=shuffle).split(config.batch_size):
            rows, weight = distributed.share(batch)
            loss = task.loss(trained, inputs[rows], targets[rows])
            optimizer.zero_grad(set_to_none=True)
            (loss * weight).backward()
            if config.grad_clip:
                nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            total += loss.item() * len(batch) * weight / processes
        record = {"epoch": epoch + 1, "lr": lr, "train_loss": distributed.total(total) / len(inputs)}
        if validation is not None:
            # every process computes it; their mean, the same number everywhere, decides, so that
            # float noise between machines cannot make one process stop early without the others
            loss = mean_loss(task, model, *validation, config.batch_size)
            record["val_loss"] = distributed.total(loss) / processes
        selected = record.get("val_loss", record["train_loss"])
        if selected < state["best_loss"]:
            state |= {"best_loss": selected, "best_epoch": epoch + 1, "bad_epochs": 0}
            if writes:
                save_model(out / MODEL, model, run_config)
        else:
            state["bad_epochs"] += 1
        state["history"].append(record)
        state["epoch"] = epoch + 1
        state["stopped"] = bool(config.patience) and state["bad_epochs"] >= config.patience
        generators = {"torch": torch.get_rng_state(), "shuffle": shuffle.get_state()}
        if writes:
            save_checkpoint(checkpoint, model, optimizer, generators, state)
            if on_epoch is not None:
                on_epoch(record)

    distributed.barrier()  # process 0 has written the best weights
    model.load_state_dict(read_safetensors(out / MODEL)[0])
    return state
