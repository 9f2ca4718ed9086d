"""Train an LSTM on your data (CSV, Parquet or text) and save it with checkpoints.

Tasks: forecast (the next --horizon values of the --target columns from --window past rows),
classify (one sequence per row, labelled by the --target column), language-model (next
character of a text). The run folder (--out) gets config.json, model.safetensors (best
validation loss), checkpoint.safetensors (every epoch) and loss.png; --resume continues a
killed run. Started by torchrun, several processes (or machines) train one run with DDP.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .. import distributed, plots
from ..checkpoint import CHECKPOINT, completed_epochs
from ..runs import DataSettings, start_run
from ..train import TrainConfig, fit
from ._common import DataOption, compile_kernels, console, epoch_progress, friendly, metrics_table

NAME = "train"
EPILOG = """Examples:

  lstmkit train --dataset co2 --out runs/co2 --epochs 60

  lstmkit train --data sales.csv --task forecast --target units --feature price --time-column date --window 28 --horizon 7 --out runs/sales

  lstmkit train --dataset digits --out runs/digits --bidirectional --layer-norm

  lstmkit train --data book.txt --task language-model --window 100 --out runs/book

  torchrun --nproc-per-node 2 -m lstmkit train --dataset co2 --out runs/co2
"""

Opt = typer.Option


@friendly
def command(
    out: Annotated[Path, Opt("--out", help="Run folder for the model, checkpoints and config.")],
    data: DataOption = None,
    dataset: Annotated[
        str | None, Opt(help="A bundled dataset instead of --data: co2, digits or genesis.")
    ] = None,
    task: Annotated[
        str | None, Opt(help="forecast, classify or language-model (a bundled dataset implies it).")
    ] = None,
    target: Annotated[
        list[str] | None, Opt(help="Target column (repeat for several); the label column for classify.")
    ] = None,
    feature: Annotated[
        list[str] | None, Opt(help="Input feature column (repeat); classify defaults to all others.")
    ] = None,
    time_column: Annotated[str | None, Opt(help="Forecast: the column that orders the rows.")] = None,
    window: Annotated[
        int | None, Opt(help="Forecast: past rows per input (24); language-model: characters (128).")
    ] = None,
    horizon: Annotated[int | None, Opt(help="Forecast: steps ahead to predict (1).")] = None,
    season: Annotated[
        int | None, Opt(help="Forecast: seasonal period for the baseline and MASE (1: none).")
    ] = None,
    transform: Annotated[
        str, Opt(help="Forecast: predict 'delta' (change from the last value) or 'level'.")
    ] = "delta",
    steps: Annotated[
        int | None, Opt(help="Classify: steps each row's features split into (default: one per column).")
    ] = None,
    val_fraction: Annotated[
        float, Opt(help="Validation span, taken in time order before the test span.")
    ] = 0.15,
    test_fraction: Annotated[float, Opt(help="Test span, the last rows.")] = 0.15,
    hidden_size: Annotated[int, Opt(help="LSTM hidden size.")] = 64,
    num_layers: Annotated[int, Opt(help="Stacked LSTM layers.")] = 2,
    bidirectional: Annotated[bool, Opt(help="Bi-LSTM (not for language models).")] = False,
    dropout: Annotated[float, Opt(help="Dropout between LSTM layers.")] = 0.0,
    proj_size: Annotated[int, Opt(help="LSTM projection size (0: none).")] = 0,
    embedding_size: Annotated[int, Opt(help="Language model: character embedding size.")] = 32,
    forget_bias: Annotated[float, Opt(help="Added to the forget-gate bias at initialisation.")] = 0.0,
    layer_norm: Annotated[bool, Opt(help="Layer-normalised LSTM.")] = False,
    peephole: Annotated[bool, Opt(help="Peephole connections.")] = False,
    coupled_input_forget: Annotated[bool, Opt(help="Coupled input and forget gates (i = 1 - f).")] = False,
    cell_clip: Annotated[float | None, Opt(help="Clip gate pre-activations to [-x, x].")] = None,
    zoneout: Annotated[float, Opt(help="Zoneout probability on cell and hidden state.")] = 0.0,
    recurrent_dropout: Annotated[float, Opt(help="Variational dropout on h feeding the gates.")] = 0.0,
    weight_dropout: Annotated[float, Opt(help="DropConnect on the recurrent weights.")] = 0.0,
    backend: Annotated[str, Opt(help="lstmkit backend: auto, torch or reference.")] = "auto",
    epochs: Annotated[int, Opt(help="Maximum epochs.")] = 50,
    batch_size: Annotated[int, Opt(help="Sequences per batch.")] = 32,
    lr: Annotated[float, Opt(help="Learning rate.")] = 3e-3,
    optimizer: Annotated[str, Opt(help="adam, adamw or sgd.")] = "adam",
    weight_decay: Annotated[float, Opt(help="Weight decay.")] = 0.0,
    schedule: Annotated[str, Opt(help="Learning-rate schedule: constant, cosine or step.")] = "constant",
    patience: Annotated[
        int, Opt(help="Stop after this many epochs without a better validation loss (0: never).")
    ] = 10,
    grad_clip: Annotated[float, Opt(help="Clip the gradient norm (0: no clipping).")] = 1.0,
    seed: Annotated[int, Opt(help="Random seed: weights, batches, dropout.")] = 0,
    resume: Annotated[bool, Opt(help="Continue the run in --out from its last checkpoint.")] = False,
) -> None:
    settings = DataSettings(
        task=task,
        data=data,
        dataset=dataset,
        targets=target or [],
        features=feature or [],
        time_column=time_column,
        window=window,
        horizon=horizon,
        season=season,
        transform=transform,
        steps=steps,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
    )
    options = {
        "forget_bias": forget_bias,
        "layer_norm": layer_norm,
        "peephole": peephole,
        "coupled_input_forget": coupled_input_forget,
        "cell_clip": cell_clip,
        "zoneout": zoneout,
        "recurrent_dropout": recurrent_dropout,
        "weight_dropout": weight_dropout,
    }
    model_args = {
        "hidden_size": hidden_size,
        "num_layers": num_layers,
        "bidirectional": bidirectional,
        "dropout": dropout,
        "proj_size": proj_size,
        "embedding_size": embedding_size,
        "options": {k: v for k, v in options.items() if v not in (0.0, False, None)},
        "backend": backend,
    }
    train = TrainConfig(
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        optimizer=optimizer,
        weight_decay=weight_decay,
        schedule=schedule,
        patience=patience,
        grad_clip=grad_clip,
        seed=seed,
    )
    joined = distributed.join_from_environment()  # started by torchrun: train with DDP
    writer = distributed.writes()
    try:
        run, splits, resume = start_run(out, settings, model_args, train, resume=resume)
        compile_kernels(show=writer)
        done = completed_epochs(out / CHECKPOINT) if resume else 0
        progress, on_epoch = epoch_progress(epochs, done, show=writer)
        with progress:
            state = fit(run.task, run.model, splits, train, out, run.config, resume=resume, on_epoch=on_epoch)
    finally:
        if joined:
            distributed.leave()
    if not writer:
        return
    plots.save(plots.loss_curves(state["history"]), out / "loss.png")
    stopped = " (early stop)" if state["stopped"] else ""
    console.print(f"best epoch {state['best_epoch']} of {state['epoch']}{stopped}; saved to {out}")
    if "test" in splits:
        console.print(metrics_table("test span", run.task.evaluate(run.model, splits["test"])))
