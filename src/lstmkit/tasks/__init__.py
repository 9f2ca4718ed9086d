"""The three tasks of the command line: data preparation, loss, evaluation and prediction.

Each task turns the user's data into tensors for the generic training loop (``lstmkit.train``),
keeps a JSON ``spec`` of its preprocessing (columns, scalers, labels, vocabulary) so that a saved
model can be rebuilt and fed new data, and evaluates with the task's metrics and baselines.
"""

from __future__ import annotations

from .classify import ClassifyTask
from .forecast import ForecastTask
from .language import LanguageTask

TASK_CLASSES = {"forecast": ForecastTask, "classify": ClassifyTask, "language-model": LanguageTask}


def task_from_spec(name: str, spec: dict):
    return TASK_CLASSES[name].from_spec(spec)


__all__ = ["ClassifyTask", "ForecastTask", "LanguageTask", "TASK_CLASSES", "task_from_spec"]
