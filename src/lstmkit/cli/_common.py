"""What the commands share: error handling, console, option types, progress and tables."""

from __future__ import annotations

import contextlib
import functools
import os
from pathlib import Path
from typing import Annotated

import torch
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .. import compilation, precompile
from ..data import DataError
from ..kernels import cpu

console = Console()
errors = Console(stderr=True)


def friendly(command):
    """Run ``command``; a user-facing error becomes one red line and exit status 1, anything else
    a one-line internal error with exit status 2. LSTMKIT_DEBUG=1 re-raises instead."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except (DataError, ValueError, TypeError, OSError, ImportError) as error:
            if os.environ.get("LSTMKIT_DEBUG"):
                raise
            errors.print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True, markup=True)
            raise typer.Exit(1) from None
        except Exception as error:
            if os.environ.get("LSTMKIT_DEBUG"):
                raise
            errors.print(f"internal error: {error!r}; set LSTMKIT_DEBUG=1 for the traceback", markup=False)
            raise typer.Exit(2) from None

    return wrapper


def epoch_progress(epochs: int, done: int = 0, show: bool = True) -> tuple[Progress, callable]:
    """A rich progress bar over epochs (hidden unless ``show``), and the on_epoch callback that
    advances it."""
    progress = Progress(
        TextColumn("[bold]training[/]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
        disable=not show,
    )
    task = progress.add_task("", total=epochs, completed=done)

    def on_epoch(record: dict) -> None:
        losses = f"train {record['train_loss']:.4f}"
        if "val_loss" in record:
            losses += f"  val {record['val_loss']:.4f}"
        progress.update(task, completed=record["epoch"], description=losses)

    return progress, on_epoch


def compile_kernels(families: tuple[str, ...] = ("lstm",), show: bool = True) -> None:
    """The compiled CPU kernels of ``families`` (``compilation.FAMILIES``) for the commands' models
    (float32 on the CPU), compiled before a command's work where they are not in the disk cache
    yet, under a status line on stderr (once per machine). With ``main``'s
    ``LSTMKIT_COMPILE=wait``, a command's calls take the compiled kernels from the first (any
    other family compiles at its first call), so that a seeded run computes the same numbers
    whether the cache was warm or not."""
    if not cpu.available() or all(compilation.mark(torch.float32, f).exists() for f in families):
        return
    status = errors.status("compiling the CPU kernels (once per machine, about 10 s)")
    with status if show else contextlib.nullcontext():
        precompile.compile_kernels([torch.float32], families)


def metrics_table(title: str, results: dict[str, dict[str, float]]) -> Table:
    """Rows: the model and its baselines; columns: the metrics."""
    names = list(next(iter(results.values())))
    table = Table(title=title, title_justify="left")
    table.add_column("")
    for name in names:
        table.add_column(name, justify="right")
    for row, values in results.items():
        table.add_row(row, *(f"{values[n]:.4f}" for n in names), style="bold" if row == "lstmkit" else None)
    return table


RunDir = Annotated[Path, typer.Argument(help="A run folder written by `lstmkit train` (or `demo`).")]
DataOption = Annotated[
    str | None,
    typer.Option("--data", help="A CSV, CSV.gz, TSV or Parquet file (a .txt file for language models)."),
]
OutOption = Annotated[
    Path | None, typer.Option("--output", "-o", help="Write to this file instead of stdout.")
]
