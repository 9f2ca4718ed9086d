"""Compile every compiled CPU kernel now: ``python -m lstmkit.precompile [float32] [float64]``.

What ``backend="auto"`` runs in a background process the first time it meets a dtype whose
kernels are not in the disk cache (``compilation``), and what a program or a container's build
can run ahead of time instead. Each dtype's kernels compile (or load) through small calls of
every path onto them, then a mark beside Numba's cache says they are there.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterable

import torch

from . import compilation
from .kernels import cpu
from .nn import LSTM, RNN, LSTMCell, RNNCell


@contextlib.contextmanager
def _lock():
    """One compilation at a time per cache: the others wait, then find the mark."""
    directory = compilation.cache_directory()
    directory.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # not POSIX: concurrent compilations only repeat each other's work
        yield
        return
    with open(directory / "lstmkit-compile.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def compile_kernels(dtypes: Iterable[torch.dtype] = compilation.DTYPES) -> None:
    """Compile (or load from the disk cache) every compiled CPU kernel for ``dtypes``, and mark
    them compiled: after it, ``"auto"`` takes them at once in every process that shares the cache."""
    dtypes = list(dtypes)
    for dtype in dtypes:
        if dtype not in compilation.DTYPES:
            raise ValueError(
                f"the compiled kernels take {[compilation.NAMES[d] for d in compilation.DTYPES]}, got {dtype}"
            )
    if not cpu.available():
        raise RuntimeError("the compiled CPU kernels need Numba, which is not installed")
    for dtype in dtypes:
        with _lock():
            mark = compilation.mark(dtype)
            if not mark.exists():
                _exercise(dtype)
                mark.touch()
        compilation.record(dtype)


def _exercise(dtype: torch.dtype) -> None:
    """A small call of every path onto the compiled kernels, so that each kernel compiles for the
    argument types that real calls give it: sequences (inference, training, both directions,
    padded lengths, a projection, every variant and mask), one step, the one-step kernels, the
    plain RNN, a batch large enough to be split over threads and a sequence long enough for the
    input side's helper (``kernels.cpu``)."""
    size, kept = 8, {"dtype": dtype, "backend": "cpu"}
    sequences = [
        LSTM(size, size, num_layers=2, bidirectional=True, **kept),
        LSTM(size, size, proj_size=4, **kept),
        LSTM(size, size, layer_norm=True, peephole=True, zoneout=0.1, **kept),
        LSTM(size, size, 2, dropout=0.2, recurrent_dropout=0.2, weight_dropout=0.2, **kept),
        LSTM(size, size, cell_clip=1.0, coupled_input_forget=True, **kept),
        RNN(size, size, bidirectional=True, **kept),
    ]
    for x, lengths in (
        (torch.randn(5, 3, size, dtype=dtype), [5, 4, 2]),
        (torch.randn(1, 2, size, dtype=dtype), None),
    ):
        for module in sequences:
            with torch.no_grad():
                module(x)
            module(x, lengths=lengths)[0].sum().backward()
    step = torch.randn(2, size, dtype=dtype)
    for cell in (
        LSTMCell(size, size, **kept),
        LSTMCell(size, size, peephole=True, **kept),
        RNNCell(size, size, **kept),
    ):
        with torch.no_grad():
            cell(step)
        output = cell(step)
        (output[0] if isinstance(output, tuple) else output).sum().backward()
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # the threaded paths exist from two threads on; their calls are tiny
    try:
        for shape in ((10, 64), (200, 1)):  # a batch split over threads; the input side's helper
            with torch.no_grad():
                LSTM(64, 64, **kept)(torch.randn(*shape, 64, dtype=dtype))
    finally:
        torch.set_num_threads(threads)


def main(argv: list[str] | None = None) -> None:
    """``python -m lstmkit.precompile [float32] [float64]`` (both by default); ``--background``
    as ``"auto"`` starts it: at low priority (Numba compiles on one thread)."""
    names = sys.argv[1:] if argv is None else argv
    by_name = {name: dtype for dtype, name in compilation.NAMES.items()}
    if "--background" in names:
        names = [name for name in names if name != "--background"]
        with contextlib.suppress(OSError):
            os.nice(10)
    unknown = [name for name in names if name not in by_name]
    if unknown:
        raise SystemExit(
            f"usage: python -m lstmkit.precompile [--background] [{' | '.join(by_name)}]...; got {unknown}"
        )
    compile_kernels([by_name[name] for name in names] or compilation.DTYPES)


if __name__ == "__main__":
    main()
