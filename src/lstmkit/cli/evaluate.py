"""Metrics of a saved model on held-out data, next to naive baselines.

Forecast: MAE, RMSE, sMAPE and MASE against the last-value and seasonal-naive forecasts.
Classify: accuracy and macro-F1 against the majority class. Language model: loss and bits per
character against the unigram and uniform models. Without --data, the run's own test span.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..checkpoint import write_json
from ..runs import held_out, load_run
from ._common import DataOption, RunDir, compile_kernels, console, friendly, metrics_table

NAME = "evaluate"
EPILOG = """Examples:

  lstmkit evaluate runs/co2

  lstmkit evaluate runs/sales --data sales_2025.csv --json metrics.json
"""


@friendly
def command(
    run_dir: RunDir,
    data: DataOption = None,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Also write the metrics to this JSON file.")
    ] = None,
) -> None:
    run = load_run(run_dir)
    compile_kernels()
    results = run.task.evaluate(run.model, held_out(run, data))
    console.print(metrics_table(f"{run.task.name}: {data or 'the run’s test span'}", results))
    if json_path:
        write_json(json_path, results)
