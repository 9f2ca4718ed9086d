"""Experiments that test what the seeds claim."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.table import Table

from .. import experiments, plots
from ..checkpoint import write_json
from ..data import DataError
from ._common import compile_kernels, console, friendly

app = typer.Typer(help="Experiments that test what the seeds claim.", no_args_is_help=True)


@app.command(
    "long-memory",
    epilog="Examples:\n\n  lstmkit experiment long-memory\n\n  lstmkit experiment long-memory --lags 50,100 --seeds 3",
)
@friendly
def long_memory(
    out: Annotated[Path, typer.Option("--out", help="Report folder.")] = Path("lstmkit-long-memory"),
    lags: Annotated[str, typer.Option(help="Sequence lengths T, comma-separated.")] = "50,100,200,400",
    iterations: Annotated[int, typer.Option(help="Training batches per model.")] = 2000,
    hidden: Annotated[int, typer.Option(help="Hidden size of both models.")] = 32,
    batch: Annotated[int, typer.Option(help="Sequences per batch.")] = 32,
    lr: Annotated[float, typer.Option(help="Adam learning rate.")] = 0.01,
    seeds: Annotated[int, typer.Option(help="Runs per model and lag.")] = 1,
    quick: Annotated[
        bool, typer.Option(help="Tiny lags and few iterations: checks that everything runs.")
    ] = False,
) -> None:
    """Plain RNN against LSTM on the adding problem as the lag grows (SPEC.md §2, the seeds' central
    claim): test MSE and success rate against the trivial baseline, and the norm of ∂loss/∂h_t
    over t at initialisation and after training."""
    try:
        lag_list = [int(v) for v in lags.split(",")]
    except ValueError:
        raise DataError(f"--lags must be comma-separated integers, got {lags!r}") from None
    if quick:
        lag_list, iterations = [8, 16], 30
    if min(lag_list) < 2 or iterations < 1 or seeds < 1:
        raise DataError("lags must be >= 2 and iterations and seeds >= 1")
    compile_kernels(("lstm", "rnn"))
    results = []
    with console.status("training") as status:
        for lag in lag_list:
            for kind in ("rnn", "lstm"):
                for seed in range(seeds):
                    status.update(f"training {kind.upper()} at T={lag}, seed {seed}")
                    results.append(
                        experiments.run(
                            kind, lag, hidden=hidden, iterations=iterations, batch=batch, lr=lr, seed=seed
                        )
                    )
    table = Table(title=f"adding problem: test MSE (trivial baseline {experiments.BASELINE_MSE:.3f})")
    table.add_column("T", justify="right")
    for kind in ("RNN", "LSTM"):
        table.add_column(f"{kind} MSE", justify="right")
        table.add_column(f"{kind} solved", justify="right")
    summary = {}
    for lag in lag_list:
        row = [str(lag)]
        for kind in ("rnn", "lstm"):
            runs = [r for r in results if r.lag == lag and r.model == kind]
            mse = float(np.median([r.test_mse for r in runs]))
            solved = sum(r.success for r in runs)
            summary[f"{kind} T={lag}"] = {"median_test_mse": mse, "solved": solved, "runs": len(runs)}
            row += [f"{mse:.4f}", f"{solved}/{len(runs)}"]
        table.add_row(*row)
    console.print(table)
    settings = {
        "lags": lag_list,
        "iterations": iterations,
        "hidden": hidden,
        "batch": batch,
        "lr": lr,
        "seeds": seeds,
    }
    write_json(
        out / "results.json",
        {"settings": settings, "summary": summary, "runs": [r.to_json() for r in results]},
    )
    curves = {
        kind.upper(): (
            np.array(lag_list),
            np.array([summary[f"{kind} T={lag}"]["median_test_mse"] for lag in lag_list]),
        )
        for kind in ("rnn", "lstm")
    }
    curves["trivial baseline"] = (np.array(lag_list), np.full(len(lag_list), experiments.BASELINE_MSE))
    plots.save(
        plots.lines(curves, "Adding problem: test MSE", "lag T", "MSE", log=True), out / "mse_vs_lag.png"
    )
    for lag in lag_list:
        norms = {}
        for r in results:
            if r.lag == lag and r.seed == 0:
                steps = np.arange(lag)
                norms[f"{r.model.upper()} at initialisation"] = (steps, np.array(r.grad_norm_init))
                norms[f"{r.model.upper()} trained"] = (steps, np.array(r.grad_norm_trained))
        figure = plots.lines(norms, f"‖∂loss/∂h_t‖, T={lag}", "step t", "gradient norm", log=True)
        plots.save(figure, out / f"gradient_norms_T{lag}.png")
    console.print(f"wrote {out}/results.json, mse_vs_lag.png and gradient_norms_T*.png")
