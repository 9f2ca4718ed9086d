"""The ``lstmkit`` command line: train, evaluate and forecast on real sequence data.

One command per module; each is wrapped by ``_common.friendly``, which turns lstmkit's own errors
into one line and a non-zero exit (LSTMKIT_DEBUG=1 shows the traceback). rich output lives here
only; the library never prints.
"""

from __future__ import annotations

import os

import typer

from .. import compilation, memory
from . import demo, env, evaluate, experiment, explain, export, predict, train

app = typer.Typer(
    name="lstmkit",
    help="Train, evaluate and forecast with LSTMs on real sequence data.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
for module in (demo, train, evaluate, predict, explain, export, env):
    app.command(name=module.NAME, help=module.__doc__, epilog=module.EPILOG)(module.command)
app.add_typer(experiment.app, name="experiment")


def main() -> None:
    """Entry point of the ``lstmkit`` script. A training loop is the process's whole job here, so
    malloc keeps freed memory for the next step (``lstmkit.memory``), and the compiled kernels
    compile before it (``_common.compile_kernels``) rather than in the background
    (``lstmkit.compilation``): a seeded run is the same run every time."""
    memory.keep_freed_memory()
    os.environ.setdefault(compilation.ENVIRONMENT, "wait")
    app()
