"""Saving and loading runs without pickle: tensors in safetensors files, everything else in JSON.

Every file is written under a temporary name in its folder and renamed over the old one, so a
kill never leaves a half-written file: the old version stays whole until the new one is.
A run folder holds:

- ``config.json``: the task's preprocessing, the model's and the training's configuration;
- ``model.safetensors``: the best weights so far (the config is repeated in its metadata);
- ``checkpoint.safetensors``: the last epoch's weights, optimizer state and random-generator
  states, with the epoch and the training history in its metadata, for ``--resume``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save
from torch import nn

from .files import atomic_write

CONFIG = "config.json"
MODEL = "model.safetensors"
CHECKPOINT = "checkpoint.safetensors"


def write_json(path: Path, data: dict) -> None:
    atomic_write(path, (json.dumps(data, indent=2) + "\n").encode())


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def _weights(module: nn.Module) -> dict[str, torch.Tensor]:
    return {name: t.detach().contiguous() for name, t in module.state_dict().items()}


def save_model(path: Path, model: nn.Module, config: dict) -> None:
    atomic_write(path, save(_weights(model), metadata={"config": json.dumps(config)}))


def read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of a safetensors file."""
    with safe_open(str(path), framework="pt") as handle:
        return {key: handle.get_tensor(key) for key in handle.keys()}, handle.metadata() or {}


def save_checkpoint(
    path: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    generators: dict[str, torch.Tensor],
    state: dict,
) -> None:
    """Weights, optimizer state (tensors flattened; the rest as JSON) and generator states."""
    tensors = {f"model.{name}": t for name, t in _weights(model).items()}
    optimizer_state = optimizer.state_dict()
    scalars = {}
    for index, values in optimizer_state["state"].items():
        for key, value in values.items():
            if torch.is_tensor(value):
                tensors[f"optimizer.{index}.{key}"] = value.contiguous()
            else:
                scalars[f"{index}.{key}"] = value
    tensors |= {f"generator.{name}": value for name, value in generators.items()}
    metadata = {
        "state": json.dumps(state),
        "optimizer": json.dumps({"param_groups": optimizer_state["param_groups"], "scalars": scalars}),
    }
    atomic_write(path, save(tensors, metadata=metadata))


def completed_epochs(path: Path) -> int:
    """How many epochs the checkpoint at ``path`` has completed (0 when there is none)."""
    if not path.is_file():
        return 0
    with safe_open(str(path), framework="pt") as handle:
        return json.loads(handle.metadata()["state"])["epoch"]


def load_checkpoint(
    path: Path, model: nn.Module, optimizer: torch.optim.Optimizer
) -> tuple[dict[str, torch.Tensor], dict]:
    """Restore model and optimizer in place; return (generator states, training state)."""
    tensors, metadata = read_safetensors(path)
    model.load_state_dict({k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")})
    meta = json.loads(metadata["optimizer"])
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    for key, value in meta["scalars"].items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    generators = {k.removeprefix("generator."): v for k, v in tensors.items() if k.startswith("generator.")}
    return generators, json.loads(metadata["state"])
