"""Forecasts, labels or generated text from a saved model, as CSV (or text) to stdout or a file.

Forecast: the next horizon values after the last row of --data. Classify: a label and its
probability for every row of --data. Language model: --length characters sampled after --prompt.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from ..data import DataError, read_table
from ..files import atomic_write
from ..runs import load_run
from ._common import DataOption, OutOption, RunDir, compile_kernels, friendly

NAME = "predict"
EPILOG = """Examples:

  lstmkit predict runs/co2 --data recent.csv --output forecast.csv

  lstmkit predict runs/digits --data new_digits.csv

  lstmkit predict runs/genesis --prompt "And God said" --length 300 --temperature 0.8
"""


@friendly
def command(
    run_dir: RunDir,
    data: DataOption = None,
    output: OutOption = None,
    prompt: Annotated[str, typer.Option(help="Language model: the text to continue.")] = "",
    length: Annotated[int, typer.Option(help="Language model: characters to generate.")] = 200,
    temperature: Annotated[float, typer.Option(help="Language model: sampling temperature (> 0).")] = 1.0,
    seed: Annotated[int, typer.Option(help="Language model: sampling seed.")] = 0,
) -> None:
    run = load_run(run_dir)
    compile_kernels()
    task = run.task
    if task.name == "language-model":
        text = task.generate(run.model, prompt, length, temperature, seed) + "\n"
    else:
        if data is None:
            raise DataError(f"a {task.name} model predicts from --data (a table of rows)")
        table = read_table(Path(data))
        frame = (
            task.forecast(run.model, table, data)
            if task.name == "forecast"
            else task.classify(run.model, table, data)
        )
        text = frame.to_csv(index=False)
    if output is None:
        sys.stdout.write(text)
    else:
        atomic_write(output, text.encode())
