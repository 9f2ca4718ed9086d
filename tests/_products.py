"""Backends as test parameters: the cpu backend's two product libraries, "cpu[openblas]" and
"cpu[mkl]", and the layer count and hypothesis examples that suit Triton's interpreter.

Backend "cpu" multiplies its per-step float32 products on MKL's packed gemm on Intel processors
and where OpenBLAS has no small-matrix path, and on OpenBLAS elsewhere (``kernels.cpu.MKL_PRODUCTS``,
``MKL_SINGLE_ROWS``); the tests run both on every machine whose torch exports MKL's, whichever the
machine would pick.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from hypothesis import settings

from lstmkit.kernels import cpu, mkl

LIBRARIES = ["openblas", *(["mkl"] if cpu.available() and mkl.available() else [])]


def expand(backends: list[str]) -> list[str]:
    """``backends`` with "cpu" replaced by one name per product library."""
    return [name for b in backends for name in ([f"cpu[{lib}]" for lib in LIBRARIES] if b == "cpu" else [b])]


# Triton's interpreter takes about a second a hypothesis example (the compiled backends some
# milliseconds): its property tests run a quarter of the examples (read after conftest's profile)
triton_examples = settings(max_examples=max(1, settings().max_examples // 4))


def layers_for(backend: str) -> int:
    """Two layers, where the second takes the first's output; one in Triton's interpreter (a
    layer direction's forward and backward take it 0.3 s), whose kernels see one at a time."""
    return 1 if backend == "triton" else 2


@contextlib.contextmanager
def selected(name: str) -> Iterator[str]:
    """Within the block, the product library that ``name`` asks for; yields the backend's name."""
    if not name.startswith("cpu["):
        yield name
        return
    before = cpu.MKL_PRODUCTS, cpu.MKL_SINGLE_ROWS
    cpu.MKL_PRODUCTS = cpu.MKL_SINGLE_ROWS = name == "cpu[mkl]"  # every product, single rows too
    try:
        yield "cpu"
    finally:
        cpu.MKL_PRODUCTS, cpu.MKL_SINGLE_ROWS = before
