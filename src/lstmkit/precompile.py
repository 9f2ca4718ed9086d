"""Compile the compiled CPU kernels now: ``python -m lstmkit.precompile [float32] [float64]``.

What ``backend="auto"`` runs in a background process the first time a call needs kernels that
are not in the disk cache (``compilation``), and what a program or a container's build can run
ahead of time instead. Each family of kernels (``compilation.FAMILIES``) compiles (or
loads) for a dtype through small calls of every path onto it, then a mark beside Numba's cache
says it is there.
"""

from __future__ import annotations

import argparse
import contextlib
import os
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


def compile_kernels(
    dtypes: Iterable[torch.dtype] = compilation.DTYPES, families: Iterable[str] = compilation.FAMILIES
) -> None:
    """Compile (or load from the disk cache) the compiled CPU kernels of ``families``
    (``compilation.FAMILIES``) for ``dtypes``, and mark them compiled: after it, ``"auto"``
    takes them at once in every process that shares the cache."""
    dtypes, families = list(dtypes), list(families)
    for dtype in dtypes:
        if dtype not in compilation.DTYPES:
            names = [compilation.NAMES[d] for d in compilation.DTYPES]
            raise ValueError(f"the compiled kernels take {names}, got {dtype}")
    for family in families:
        if family not in EXERCISES:
            raise ValueError(f"the compiled kernels' families are {list(EXERCISES)}, got {family!r}")
    if not cpu.available():
        raise RuntimeError("the compiled CPU kernels need Numba, which is not installed")
    for dtype in dtypes:
        for family in families:
            with _lock():
                mark = compilation.mark(dtype, family)
                if not mark.exists():
                    # the program's random numbers go on the same whether the cache held the kernels
                    with torch.random.fork_rng(devices=[]):
                        EXERCISES[family](dtype)
                    mark.touch()
            compilation.record(dtype, family)


# Small calls of every path onto each family's kernels, so that each kernel compiles for the
# argument types that real calls give it.


def _sequences(dtype: torch.dtype) -> None:
    """The LSTM over sequences: inference and training, both directions, padded lengths, a
    projection, every variant and mask; a batch large enough to be split over threads and a
    sequence long enough for the input side's helper (``kernels.cpu``)."""
    size, kept = 8, {"dtype": dtype, "backend": "cpu"}
    x = torch.randn(5, 3, size, dtype=dtype)
    for module in (
        LSTM(size, size, num_layers=2, bidirectional=True, **kept),
        LSTM(size, size, proj_size=4, **kept),
        LSTM(size, size, layer_norm=True, peephole=True, zoneout=0.1, **kept),
        LSTM(size, size, 2, dropout=0.2, recurrent_dropout=0.2, weight_dropout=0.2, **kept),
        LSTM(size, size, cell_clip=1.0, coupled_input_forget=True, **kept),
    ):
        with torch.no_grad():
            module(x)
        module(x, lengths=[5, 4, 2])[0].sum().backward()
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # the threaded paths exist from two threads on; their calls are tiny
    try:
        for shape in ((10, 64), (200, 1)):  # a batch split over threads; the input side's helper
            with torch.no_grad():
                LSTM(64, 64, **kept)(torch.randn(*shape, 64, dtype=dtype))
    finally:
        torch.set_num_threads(threads)


def _steps(dtype: torch.dtype) -> None:
    """One LSTM step: cells and sequences of one step, inference and training, with and without
    peepholes and masks (``kernels.cpu_step``)."""
    size, kept = 8, {"dtype": dtype, "backend": "cpu"}
    step = torch.randn(2, size, dtype=dtype)
    for cell in (
        LSTMCell(size, size, **kept),
        LSTMCell(size, size, peephole=True, recurrent_dropout=0.2, **kept),
    ):
        with torch.no_grad():
            cell(step)
        cell(step)[0].sum().backward()
    module = LSTM(size, size, num_layers=2, bidirectional=True, **kept)
    with torch.no_grad():
        module(step[None])
    module(step[None])[0].sum().backward()


def _rnn(dtype: torch.dtype) -> None:
    """The plain RNN: sequences and one step, inference and training (``kernels.cpu_rnn``)."""
    size, kept = 8, {"dtype": dtype, "backend": "cpu"}
    x = torch.randn(5, 3, size, dtype=dtype)
    rnn, cell = RNN(size, size, bidirectional=True, **kept), RNNCell(size, size, **kept)
    with torch.no_grad():
        rnn(x)
        cell(x[0])
    rnn(x, lengths=[5, 4, 2])[0].sum().backward()
    cell(x[0]).sum().backward()


EXERCISES = {"lstm": _sequences, "step": _steps, "rnn": _rnn}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m lstmkit.precompile",
        description="Compile lstmkit's compiled CPU kernels into Numba's disk cache now.",
    )
    parser.add_argument("dtypes", nargs="*", choices=list(compilation.NAMES.values()), help="default: all")
    parser.add_argument(
        "--family", action="append", choices=compilation.FAMILIES, help="only these (repeat; default: all)"
    )
    parser.add_argument(
        "--background", action="store_true", help="at low priority, as backend='auto' starts it"
    )
    args = parser.parse_args(argv)
    if args.background:
        with contextlib.suppress(OSError):
            os.nice(10)
    by_name = {name: dtype for dtype, name in compilation.NAMES.items()}
    compile_kernels(
        [by_name[name] for name in args.dtypes] or compilation.DTYPES, args.family or compilation.FAMILIES
    )


if __name__ == "__main__":
    main()
