"""Sequence classification: each table row is one sequence and its label.

The feature columns of a row, in order, are read as ``steps`` steps of equal width (the 64 pixel
columns of an 8x8 image with steps=8 are 8 rows of 8 pixels; a univariate series of T columns is
T steps of 1). Values are scaled with the training rows' mean and standard deviation. Splits
follow the file's row order: training, then validation, then test.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from ..data import DataError, numeric, require_columns, spans
from ..metrics import accuracy, macro_f1
from ._base import Task


@dataclass(frozen=True)
class ClassifySpec:
    target: str
    features: list[str]
    steps: int
    labels: list  # the training labels, in class-index order (ints or strings, as in the data)
    mean: float
    std: float


@dataclass
class Rows:
    values: np.ndarray  # (B, T*F) raw feature values
    labels: np.ndarray  # (B,) class indices


def _label_values(table: pd.DataFrame, target: str, path: Path | str) -> list:
    require_columns(table, [target], path)
    column = table[target]
    if column.isna().any():
        row = int(np.flatnonzero(column.isna().to_numpy())[0])
        raise DataError(f"label column {target!r} in {str(path)!r} is empty at row {row + 1}")
    if pd.api.types.is_integer_dtype(column):
        return [int(v) for v in column]
    return [str(v) for v in column]


class ClassifyTask(Task):
    spec_class = ClassifySpec
    name = "classify"

    def __init__(self, spec: ClassifySpec) -> None:
        super().__init__(spec)
        self._index = {label: i for i, label in enumerate(spec.labels)}

    @classmethod
    def prepare(
        cls,
        table: pd.DataFrame,
        path: Path | str,
        *,
        targets: list[str],
        features: list[str] = (),
        steps: int | None = None,
        val_fraction: float = 0.15,
        test_fraction: float = 0.15,
    ) -> tuple[ClassifyTask, dict[str, Rows]]:
        if len(targets) != 1:
            raise DataError(f"classification takes exactly one --target (label) column, got {len(targets)}")
        target = targets[0]
        labels = _label_values(table, target, path)
        features = list(features) or [c for c in table.columns if c != target]
        values = numeric(table, features, path)
        steps = steps or len(features)
        if steps < 1 or len(features) % steps:
            raise DataError(
                f"the {len(features)} feature columns do not split into steps={steps} equal steps"
            )
        n_train, n_val, n_test = spans(len(values), val_fraction, test_fraction)
        if n_train < 1 or (val_fraction and n_val < 1) or (test_fraction and n_test < 1):
            raise DataError(f"too few rows ({len(values)}) for a train/validation/test split")
        known = sorted(set(labels[:n_train]), key=lambda v: (str(type(v)), v))
        std = float(values[:n_train].std())
        spec = ClassifySpec(
            target, features, steps, known, float(values[:n_train].mean()), std if std > 0 else 1.0
        )
        task = cls(spec)
        bounds = {
            "train": (0, n_train),
            "val": (n_train, n_train + n_val),
            "test": (n_train + n_val, len(values)),
        }
        splits = {
            name: Rows(values[a:b], task._indices(labels[a:b], path, f"the {name} rows"))
            for name, (a, b) in bounds.items()
            if b > a
        }
        return task, splits

    def model_sizes(self) -> tuple[int, int]:
        return len(self.spec.features) // self.spec.steps, len(self.spec.labels)

    def _indices(self, labels: list, path: Path | str, where: str) -> np.ndarray:
        unseen = [label for label in labels if label not in self._index]
        if unseen:
            known = ", ".join(map(str, self.spec.labels))
            raise DataError(
                f"label {unseen[0]!r} in {where} of {str(path)!r} was never seen in training (known: {known})"
            )
        return np.array([self._index[label] for label in labels], dtype=np.int64)

    def rows(self, table: pd.DataFrame, path: Path | str, with_labels: bool = True) -> Rows:
        values = numeric(table, self.spec.features, path)
        if not with_labels:
            return Rows(values, np.zeros(len(values), dtype=np.int64))
        return Rows(values, self._indices(_label_values(table, self.spec.target, path), path, "the rows"))

    def encode(self, values: np.ndarray) -> Tensor:
        scaled = (values - self.spec.mean) / self.spec.std
        return torch.as_tensor(scaled.reshape(len(values), self.spec.steps, -1), dtype=torch.float32)

    def tensors(self, rows: Rows) -> tuple[Tensor, Tensor]:
        return self.encode(rows.values), torch.as_tensor(rows.labels)

    def loss(self, model: nn.Module, inputs: Tensor, targets: Tensor) -> Tensor:
        return nn.functional.cross_entropy(model(inputs), targets)

    @torch.no_grad()
    def probabilities(self, model: nn.Module, values: np.ndarray) -> np.ndarray:
        model.eval()
        return torch.softmax(model(self.encode(values)), -1).numpy()

    def evaluate(self, model: nn.Module, rows: Rows) -> dict[str, dict[str, float]]:
        predicted = self.probabilities(model, rows.values).argmax(-1)
        classes = len(self.spec.labels)
        majority = np.full_like(rows.labels, np.bincount(rows.labels, minlength=classes).argmax())
        return {
            name: {
                "accuracy": accuracy(rows.labels, guess),
                "macro-F1": macro_f1(rows.labels, guess, classes),
            }
            for name, guess in (("lstmkit", predicted), ("majority class", majority))
        }

    def classify(self, model: nn.Module, table: pd.DataFrame, path: Path | str) -> pd.DataFrame:
        """The predicted label and its probability for every row."""
        probabilities = self.probabilities(model, self.rows(table, path, with_labels=False).values)
        return pd.DataFrame(
            {
                "row": np.arange(1, len(probabilities) + 1),
                "prediction": [self.spec.labels[i] for i in probabilities.argmax(-1)],
                "probability": probabilities.max(-1).round(4),
            }
        )

    def explain_input(
        self, table: pd.DataFrame, path: Path | str, index: int | None
    ) -> tuple[Tensor, list[str]]:
        values = self.rows(table, path, with_labels=False).values
        row = 0 if index is None else index
        if not 0 <= row < len(values):
            raise DataError(f"--row must lie in [0, {len(values) - 1}], got {row}")
        return self.encode(values[row : row + 1]), [str(t) for t in range(self.spec.steps)]
