"""Character-level language modelling: predict each next character of a text.

The vocabulary is every character of the text given to training. Splits are spans of the text in
order (training, validation, test), cut into non-overlapping sequences of ``window`` characters,
each paired with the same sequence shifted by one character.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from ..data import DataError, spans
from ..metrics import bits_per_character
from ._base import Task


@dataclass(frozen=True)
class LanguageSpec:
    vocabulary: str  # sorted characters
    window: int  # characters per training sequence
    text_column: str | None  # for tables: the column whose rows are joined into the text
    unigram: list[float]  # training character frequencies, in vocabulary order: the baseline


class LanguageTask(Task):
    spec_class = LanguageSpec
    name = "language-model"

    def __init__(self, spec: LanguageSpec) -> None:
        super().__init__(spec)
        self._index = {c: i for i, c in enumerate(spec.vocabulary)}

    @classmethod
    def prepare(
        cls,
        text: str,
        *,
        window: int = 128,
        text_column: str | None = None,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
    ) -> tuple[LanguageTask, dict[str, Tensor]]:
        if window < 1:
            raise DataError(f"window must be >= 1, got {window}")
        n_train, n_val, n_test = spans(len(text), val_fraction, test_fraction)
        too_short = (
            n_train < window + 1
            or (val_fraction and n_val < window + 1)
            or (test_fraction and n_test < window + 1)
        )
        if too_short:
            raise DataError(
                f"text too short for window={window}: {len(text)} characters split {n_train}/{n_val}/{n_test} "
                f"(train/validation/test), each span needs at least window + 1 = {window + 1}"
            )
        vocabulary = "".join(sorted(set(text)))
        counts = Counter(text[:n_train])
        unigram = [(counts[c] + 1) / (n_train + len(vocabulary)) for c in vocabulary]  # add-one smoothing
        task = cls(LanguageSpec(vocabulary, window, text_column, unigram))
        bounds = {
            "train": (0, n_train),
            "val": (n_train, n_train + n_val),
            "test": (n_train + n_val, len(text)),
        }
        return task, {name: task.chunks(text[a:b]) for name, (a, b) in bounds.items() if b - a > window}

    def model_sizes(self) -> tuple[int, int]:
        return len(self.spec.vocabulary), len(self.spec.vocabulary)

    def encode(self, text: str) -> Tensor:
        unseen = sorted(set(text) - self._index.keys())
        if unseen:
            raise DataError(
                f"character(s) {''.join(unseen)!r} never appear in the training text; the model knows "
                f"{len(self._index)} characters"
            )
        return torch.tensor([self._index[c] for c in text], dtype=torch.long)

    def chunks(self, text: str) -> Tensor:
        """(N, window + 1) ids: non-overlapping sequences and the character after each."""
        ids = self.encode(text)
        count = (len(ids) - 1) // self.spec.window
        starts = torch.arange(count) * self.spec.window
        return torch.stack([ids[s : s + self.spec.window + 1] for s in starts.tolist()])

    def tensors(self, chunks: Tensor) -> tuple[Tensor, Tensor]:
        return chunks[:, :-1], chunks[:, 1:]

    def loss(self, model: nn.Module, inputs: Tensor, targets: Tensor) -> Tensor:
        logits = model(inputs)
        return nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten())

    @torch.no_grad()
    def evaluate(self, model: nn.Module, chunks: Tensor) -> dict[str, dict[str, float]]:
        model.eval()
        inputs, targets = self.tensors(chunks)
        losses = [
            self.loss(model, inputs[i : i + 64], targets[i : i + 64]) * len(inputs[i : i + 64])
            for i in range(0, len(inputs), 64)
        ]
        loss = float(sum(losses) / len(inputs))
        unigram = -float(np.mean(np.log(np.asarray(self.spec.unigram)[targets.flatten().numpy()])))
        uniform = math.log(len(self.spec.vocabulary))
        return {
            name: {"loss": value, "bits per character": bits_per_character(value)}
            for name, value in (("lstmkit", loss), ("unigram", unigram), ("uniform", uniform))
        }

    @torch.no_grad()
    def generate(
        self, model: nn.Module, prompt: str, length: int, temperature: float = 1.0, seed: int = 0
    ) -> str:
        """The prompt followed by ``length`` sampled characters."""
        if temperature <= 0:
            raise DataError(f"temperature must be > 0, got {temperature}")
        model.eval()
        generator = torch.Generator().manual_seed(seed)
        start = prompt or ("\n" if "\n" in self._index else self.spec.vocabulary[0])
        logits, state = model.step(self.encode(start)[None], None)
        out = []
        for _ in range(length):
            probabilities = torch.softmax(logits[0, -1] / temperature, -1)
            index = int(torch.multinomial(probabilities, 1, generator=generator))
            out.append(self.spec.vocabulary[index])
            logits, state = model.step(torch.tensor([[index]]), state)
        return prompt + "".join(out)

    def explain_input(self, text: str) -> tuple[Tensor, list[str]]:
        if not text:
            raise DataError("--prompt must not be empty")
        return self.encode(text)[None], list(text)
