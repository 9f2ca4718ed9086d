"""A run: the user's data turned into a task, a model built for it, trained, saved and reloaded.

The glue between the command line and the library: ``prepare`` reads and checks the data for a
task, ``start_run`` builds a model for it in a run folder (``lstmkit.train.fit`` then trains it),
``load_run`` rebuilds a saved model and its preprocessing from the folder alone (JSON and
safetensors, no pickle), ``held_out`` picks what to evaluate on.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from . import __version__, distributed
from .checkpoint import CHECKPOINT, CONFIG, MODEL, read_json, read_safetensors, write_json
from .data import DataError, bundled, bundled_path, read_table, read_text
from .models import TASKS, ModelConfig, SequenceModel
from .tasks import TASK_CLASSES, task_from_spec
from .train import TrainConfig


@dataclass(frozen=True)
class DataSettings:
    """Where the data is and how the task reads it; None means the task's (or dataset's) default."""

    task: str | None = None
    data: str | None = None  # a file path
    dataset: str | None = None  # or a bundled dataset's name
    targets: list[str] = field(default_factory=list)
    features: list[str] = field(default_factory=list)
    time_column: str | None = None
    window: int | None = None
    horizon: int | None = None
    season: int | None = None
    transform: str = "delta"
    steps: int | None = None
    val_fraction: float = 0.15
    test_fraction: float = 0.15

    def resolved(self) -> DataSettings:
        """Fill what the bundled dataset implies; check that the data and task are named."""
        if (self.data is None) == (self.dataset is None):
            raise DataError("give the data as --data PATH or --dataset NAME (one of them)")
        settings = self
        if self.dataset is not None:
            dataset = bundled(self.dataset)
            defaults = {k: v for k, v in dataset.defaults.items() if getattr(self, k) in (None, [])}
            settings = replace(self, task=self.task or dataset.task, **defaults)
        if settings.data is not None:  # a run folder must still find its data from elsewhere
            settings = replace(settings, data=str(Path(settings.data).resolve()))
        if settings.task not in TASKS:
            raise DataError(f"--task must be one of {', '.join(TASKS)}, got {settings.task!r}")
        return settings

    def path(self) -> Path:
        return bundled_path(self.dataset) if self.dataset else Path(self.data)


def prepare(settings: DataSettings):
    """(task, splits) for the settings, with every data problem raised as DataError."""
    s = settings.resolved()
    path = s.path()
    fractions = {"val_fraction": s.val_fraction, "test_fraction": s.test_fraction}
    if s.task == "language-model":
        column = s.targets[0] if s.targets else None
        text = read_text(path, column)
        return TASK_CLASSES[s.task].prepare(text, window=s.window or 128, text_column=column, **fractions)
    table = read_table(path)
    if s.task == "forecast":
        return TASK_CLASSES[s.task].prepare(
            table,
            path,
            targets=s.targets,
            features=s.features,
            window=s.window or 24,
            horizon=s.horizon or 1,
            season=s.season or 1,
            transform=s.transform,
            time_column=s.time_column,
            **fractions,
        )
    return TASK_CLASSES[s.task].prepare(
        table, path, targets=s.targets, features=s.features, steps=s.steps, **fractions
    )


@dataclass
class Run:
    model: SequenceModel
    task: object
    config: dict  # what config.json holds


def build(task, settings: DataSettings, model_args: dict, train: TrainConfig) -> Run:
    """A fresh model for ``task``, initialised from ``train.seed``."""
    input_size, output_size = task.model_sizes()
    model_config = ModelConfig(task=task.name, input_size=input_size, output_size=output_size, **model_args)
    if task.name == "language-model" and model_config.bidirectional:
        raise DataError("a language model cannot be bidirectional: it would read the characters it predicts")
    if model_config.dropout and model_config.num_layers == 1:
        raise DataError("--dropout acts between LSTM layers, so it needs --num-layers 2 or more")
    torch.manual_seed(train.seed)
    try:
        model = SequenceModel(model_config)
    except (TypeError, ValueError) as error:  # lstmkit's own argument checks
        raise DataError(str(error)) from error
    config = {
        "lstmkit": __version__,
        "task": task.name,
        "data": asdict(settings.resolved()),
        "spec": task.to_json(),
        "model": model_config.to_json(),
        "train": train.to_json(),
    }
    return Run(model, task, config)


def start_run(
    out: Path, settings: DataSettings, model_args: dict, train: TrainConfig, *, resume: bool = False
) -> tuple[Run, dict, bool]:
    """Check everything, prepare the data, build the model and write ``out/config.json``.

    Returns (run, splits, resume): ``resume`` is False when there is no checkpoint yet to resume
    (a run killed before its first epoch ended starts afresh).
    """
    train.check()
    if resume and (out / CONFIG).is_file():
        given = {"data": asdict(settings.resolved()), "model": model_args, "train": train.to_json()}
        _same_run(read_json(out / CONFIG), json.loads(json.dumps(given)))
    elif not resume and ((out / CONFIG).exists() or (out / CHECKPOINT).exists()):
        raise DataError(
            f"{str(out)!r} already holds a run; pass --resume to continue it, or choose another --out"
        )
    task, splits = prepare(settings)
    run = build(task, settings, model_args, train)
    distributed.barrier()  # every process has seen the folder as it was before process 0 writes
    if distributed.writes():
        write_json(out / CONFIG, run.config)
    return run, splits, resume and (out / CHECKPOINT).is_file()


def _same_run(saved: dict, given: dict) -> None:
    """--resume continues the saved run: every setting given must be the saved one, but for the
    number of epochs, which may grow to train a finished run further."""
    for section, values in given.items():
        for key, value in values.items():
            if (
                key in saved[section]
                and saved[section][key] != value
                and (section, key) != ("train", "epochs")
            ):
                raise DataError(
                    f"--resume continues the saved run: {key} was {saved[section][key]!r}, now {value!r}"
                )


def load_run(folder: Path) -> Run:
    """The model and preprocessing saved in a run folder."""
    if not (folder / CONFIG).is_file() or not (folder / MODEL).is_file():
        raise DataError(f"no trained model in {str(folder)!r}: expected {CONFIG} and {MODEL} there")
    config = read_json(folder / CONFIG)
    task = task_from_spec(config["task"], config["spec"])
    model = SequenceModel(ModelConfig.from_json(config["model"]))
    model.load_state_dict(read_safetensors(folder / MODEL)[0])
    return Run(model.eval(), task, config)


def held_out(run: Run, data: str | None):
    """What to evaluate on: every window/row/text of ``data``, or the run's own test split."""
    task = run.task
    if data is None:
        splits = prepare(DataSettings(**run.config["data"]))[1]
        if "test" not in splits:
            raise DataError("the run was trained without a test span (test_fraction=0); pass --data")
        return splits["test"]
    path = Path(data)
    if task.name == "language-model":
        return task.chunks(read_text(path, task.spec.text_column))
    table = read_table(path)
    return task.windows(table, path) if task.name == "forecast" else task.rows(table, path)
