"""The trained model of a run, with its input scaling and output decoding, as an ONNX file.

Any ONNX runtime then forecasts, classifies or generates without Python or lstmkit: ONNX's own
LSTM operator runs each layer (a Scan of one step where the model has layer norm, a projection
or zoneout). Forecast: window (B, W, columns) in the data's units -> forecast
(B, horizon, targets). Classify: values (B, steps * features) -> probabilities (B, classes).
Language model: ids (B, T) and the state (h0, c0) -> logits, h_n, c_n. The file's metadata
names the columns, labels or vocabulary. Needs the onnx package (pip install 'lstmkit[onnx]').
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..onnx_export import export_run
from ..runs import load_run
from ._common import RunDir, console, friendly

NAME = "export"
EPILOG = """Examples:

  lstmkit export runs/co2                      # writes runs/co2/model.onnx

  lstmkit export runs/digits --output digits.onnx
"""


@friendly
def command(
    run_dir: RunDir,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="The ONNX file (default: RUN_DIR/model.onnx).")
    ] = None,
) -> None:
    run = load_run(run_dir)
    path = output or run_dir / "model.onnx"
    model = export_run(run, path)
    inputs, outputs = (
        ", ".join(v.name for v in values) for values in (model.graph.input, model.graph.output)
    )
    console.print(f"wrote {path}: inputs {inputs} -> outputs {outputs}", highlight=False)
