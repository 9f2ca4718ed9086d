"""Heatmaps of a saved model's gate activations and cell state over one input sequence.

For every step of the sequence (x axis) and every unit of one layer and direction (y axis):
the input gate i, forget gate f, candidate C̃, output gate o, and the cell state C.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import torch
import typer

from .. import plots
from ..data import DataError, read_table
from ..runs import load_run
from ._common import DataOption, RunDir, compile_kernels, console, friendly

NAME = "explain"
EPILOG = """Examples:

  lstmkit explain runs/co2 --data recent.csv --out gates.png

  lstmkit explain runs/digits --data digits.csv --row 3 --out digit3.png

  lstmkit explain runs/genesis --prompt "In the beginning" --out gates.png
"""


@friendly
def command(
    run_dir: RunDir,
    out: Annotated[Path, typer.Option("--out", help="PNG file to write.")] = Path("gates.png"),
    data: DataOption = None,
    row: Annotated[
        int | None, typer.Option(help="Forecast: the window's last row; classify: the row (0-based).")
    ] = None,
    prompt: Annotated[str, typer.Option(help="Language model: the text to read.")] = "",
    layer: Annotated[int, typer.Option(help="Layer to show (0 = the first; -1 = the top).")] = -1,
    reverse: Annotated[bool, typer.Option(help="Show the backward direction of a Bi-LSTM.")] = False,
) -> None:
    run = load_run(run_dir)
    compile_kernels()
    task, model = run.task, run.model
    if task.name == "language-model":
        inputs, labels = task.explain_input(prompt)
    else:
        if data is None:
            raise DataError(f"explain reads a sequence from --data for a {task.name} model")
        inputs, labels = task.explain_input(read_table(Path(data)), data, row)
    lstm = model.lstm
    if not -lstm.num_layers <= layer < lstm.num_layers:
        raise DataError(f"--layer must lie in [{-lstm.num_layers}, {lstm.num_layers - 1}], got {layer}")
    if reverse and not lstm.bidirectional:
        raise DataError("--reverse needs a bidirectional model")
    with torch.no_grad():
        _, _, gates = lstm(model.features(inputs), return_gates=True)
    directions = 2 if lstm.bidirectional else 1
    k = (layer % lstm.num_layers) * directions + int(reverse)
    names = ("input gate", "forget gate", "candidate", "output gate", "cell state")
    panels = {name: values[k, 0].numpy() for name, values in zip(names, gates, strict=True)}  # (T, H) each
    title = (
        f"{task.name}: gates of layer {layer % lstm.num_layers}{' (reverse direction)' if reverse else ''}"
    )
    plots.save(plots.gate_heatmaps(panels, labels, title), out)
    console.print(f"wrote {out}")
