"""The applications' model: an lstmkit.LSTM with an input layer and a head for each task.

- forecast: (B, T, F) windows -> (B, horizon * targets), from the top layer's final states;
- classify: (B, T, F) sequences -> (B, classes) logits, likewise;
- language-model: (B, T) character ids -> (B, T, vocabulary) next-character logits, through an
  embedding; ``step`` carries the state for generation.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor, nn

from .nn import LSTM

TASKS = ("forecast", "classify", "language-model")


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a model; saved as JSON beside its weights."""

    task: str
    input_size: int  # features per step; vocabulary size for language models
    output_size: int  # horizon * targets, classes, or vocabulary size
    hidden_size: int = 64
    num_layers: int = 2
    bidirectional: bool = False
    dropout: float = 0.0
    proj_size: int = 0
    embedding_size: int = 32  # language models only
    options: dict = field(default_factory=dict)  # lstmkit.LSTM variant options (docs/variants.md)
    backend: str = "auto"

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> ModelConfig:
        data = dict(data)
        if isinstance(data.get("options", {}).get("zoneout"), list):  # JSON has no tuples
            data["options"] = {**data["options"], "zoneout": tuple(data["options"]["zoneout"])}
        return cls(**data)


class SequenceModel(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        language = config.task == "language-model"
        self.embedding = nn.Embedding(config.input_size, config.embedding_size) if language else None
        self.lstm = LSTM(
            config.embedding_size if language else config.input_size,
            config.hidden_size,
            config.num_layers,
            batch_first=True,
            dropout=config.dropout,
            bidirectional=config.bidirectional,
            proj_size=config.proj_size,
            backend=config.backend,
            **config.options,
        )
        directions = 2 if config.bidirectional else 1
        self.head = nn.Linear(directions * (config.proj_size or config.hidden_size), config.output_size)

    def features(self, x: Tensor) -> Tensor:
        """What the LSTM reads: x itself, or the embedding of character ids."""
        return x if self.embedding is None else self.embedding(x)

    def forward(self, x: Tensor) -> Tensor:
        """x (B, T, F) or (B, T) ids -> (B, output_size), or (B, T, vocabulary) for language models."""
        output, (hidden, _) = self.lstm(self.features(x))
        if self.embedding is not None:
            return self.head(output)
        directions = 2 if self.config.bidirectional else 1
        top = hidden[-directions:]  # (D, B, P): the top layer's final states, both directions
        return self.head(torch.cat(list(top), dim=-1))

    def step(self, ids: Tensor, state: tuple[Tensor, Tensor] | None) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """Language models: ids (B, T) and a carried state -> (logits (B, T, V), new state)."""
        output, state = self.lstm(self.features(ids), state)
        return self.head(output), state
