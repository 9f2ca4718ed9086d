"""Train an LSTM forecaster on a real, bundled dataset and compare it with naive forecasts.

The data: monthly mean CO2 at Mauna Loa, 1965-2001 (public domain, ships with lstmkit). The
model reads 36 months and predicts the next 12; the last 15% of the months are the test span.
Writes a report folder: metrics.json, the model (model.safetensors + config.json), loss.png and
forecast.png; prints the test metrics next to the last-value and seasonal-naive forecasts.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import numpy as np
import pandas as pd
import typer

from .. import plots
from ..checkpoint import write_json
from ..data import bundled_path
from ..runs import DataSettings, start_run
from ..train import TrainConfig, fit
from ._common import compile_kernels, console, epoch_progress, friendly, metrics_table

NAME = "demo"
EPILOG = """Examples:

  lstmkit demo                      # about a minute on 2 cores; report in lstmkit-demo/

  lstmkit demo --quick --out /tmp/demo
"""

RUN_FILES = (
    "config.json",
    "model.safetensors",
    "checkpoint.safetensors",
    "metrics.json",
    "loss.png",
    "forecast.png",
)


def _forecast_figure(run, windows):
    """Actual CO2 over the test span with the 1-month and 12-month-ahead forecasts for each month."""
    months = pd.read_csv(bundled_path("co2"))["month"].tolist()
    predicted = run.task.predict(run.model, windows)[..., 0]  # (B, H)
    seasonal = run.task.baselines(windows)["seasonal naive"][..., 0]
    horizon = predicted.shape[1]
    first = windows.origins[0] + 1
    rows = np.arange(first, windows.origins[-1] + horizon + 1)  # every month some forecast reaches
    actual, one_ahead, last_ahead, naive = (np.full(len(rows), np.nan) for _ in range(4))
    for b, origin in enumerate(windows.origins):
        actual[origin + 1 - first : origin + 1 + horizon - first] = windows.targets[b, :, 0]
        one_ahead[origin + 1 - first] = predicted[b, 0]
        last_ahead[origin + horizon - first] = predicted[b, -1]
        naive[origin + horizon - first] = seasonal[b, -1]
    forecasts = {
        "lstmkit, 1 month ahead": one_ahead,
        f"lstmkit, {horizon} months ahead": last_ahead,
        f"seasonal naive, {horizon} months ahead": naive,
    }
    return plots.forecast_vs_actual(
        [months[r] for r in rows], actual, forecasts, "Mauna Loa CO2, test span", "CO2 (ppm)"
    )


@friendly
def command(
    out: Annotated[Path, typer.Option("--out", help="Report folder.")] = Path("lstmkit-demo"),
    quick: Annotated[bool, typer.Option(help="A few epochs only: checks that everything runs.")] = False,
    epochs: Annotated[
        int, typer.Option(help="Maximum epochs (early stopping on the validation span).")
    ] = 150,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    overwrite: Annotated[bool, typer.Option(help="Replace the report already in --out.")] = False,
) -> None:
    if overwrite:
        for name in RUN_FILES:
            (out / name).unlink(missing_ok=True)
    settings = DataSettings(dataset="co2")
    model_args = {"hidden_size": 64, "num_layers": 2}
    train = TrainConfig(epochs=3 if quick else epochs, batch_size=32, lr=3e-3, patience=30, seed=seed)
    console.print(f"[bold]lstmkit demo[/]: forecasting monthly CO2 at Mauna Loa 12 months ahead -> {out}/")
    compile_kernels()  # before the clock: the report's seconds are the training's
    start = time.perf_counter()
    run, splits, _ = start_run(out, settings, model_args, train)
    progress, on_epoch = epoch_progress(train.epochs)
    with progress:
        state = fit(run.task, run.model, splits, train, out, run.config, on_epoch=on_epoch)
    seconds = time.perf_counter() - start
    test = splits["test"]
    results = run.task.evaluate(run.model, test)
    months = pd.read_csv(bundled_path("co2"))["month"]
    span = f"{months[test.origins[0] + 1]} to {months[test.origins[-1] + test.targets.shape[1]]}"
    console.print(metrics_table(f"test span {span}: every 12-month forecast", results))
    model_mae, seasonal_mae = results["lstmkit"]["MAE"], results["seasonal naive"]["MAE"]
    gain = 100 * (1 - model_mae / seasonal_mae)
    verdict = "lower" if gain > 0 else "higher"
    console.print(
        f"lstmkit's MAE {model_mae:.3f} ppm is {abs(gain):.0f}% {verdict} than the seasonal-naive "
        f"forecast's {seasonal_mae:.3f} ppm (best epoch {state['best_epoch']} of {state['epoch']}, {seconds:.0f} s)"
    )
    write_json(
        out / "metrics.json",
        {
            "test": results,
            "mae_reduction_vs_seasonal_naive_percent": gain,
            "best_epoch": state["best_epoch"],
            "epochs": state["epoch"],
            "seconds": seconds,
            "history": state["history"],
        },
    )
    plots.save(plots.loss_curves(state["history"]), out / "loss.png")
    plots.save(_forecast_figure(run, splits["test"]), out / "forecast.png")
    console.print(f"report: {', '.join(sorted(p.name for p in out.iterdir() if not p.name.startswith('.')))}")
