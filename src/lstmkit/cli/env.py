"""Versions, threads and available backends, as a block to paste into bug reports."""

from __future__ import annotations

import platform
from importlib.metadata import PackageNotFoundError, version

import torch

from .. import __version__, compilation, functional
from ..kernels import cpu
from ._common import console, friendly

NAME = "env"
EPILOG = "Example:\n\n  lstmkit env"


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def _compiled() -> str:
    """Which of the compiled kernels are in the disk cache, and where it is."""
    names = [
        f"{family} {compilation.NAMES[dtype]}"
        for dtype in compilation.DTYPES
        for family in compilation.FAMILIES
        if compilation.mark(dtype, family).exists()
    ]
    return f"compiled: {', '.join(names) or 'none yet'}; cache {compilation.cache_directory()}"


@friendly
def command() -> None:
    lines = {
        "lstmkit": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torch threads": torch.get_num_threads(),
        "cuda available": torch.cuda.is_available(),
        "LSTM backends": ", ".join(functional.available("lstm")),
        "RNN backends": ", ".join(functional.available("rnn")),
        # what the compiled kernel's float32 speed depends on most (README, backend "cpu")
        "cpu products": cpu.step_products() if cpu.available() else "Numba not installed",
        "cpu kernels": _compiled() if cpu.available() else "Numba not installed",
        "onnx (export)": _version("onnx"),
        "DDP (gloo)": torch.distributed.is_available() and torch.distributed.is_gloo_available(),
    }
    for key, value in lines.items():
        console.print(f"{key + ':':16} {value}", highlight=False)
