"""MKL, as torch's own library carries it: whether it is the faster BLAS here, and its packed gemm.

torch's x86-64 Linux wheels link MKL into ``libtorch_cpu`` and export, among its functions,
``cblas_sgemm_pack`` and ``cblas_sgemm_compute``: a product's right-hand matrix packed once into
MKL's internal layout, then multiplied many times. A recurrence multiplies by the same W_hh at
every step, so each kernel call packs it once (replacing the transposed copy that OpenBLAS needs)
and every step computes with it. The input side that a helper thread computes beside the
recurrence, in ranges of steps, multiplies by W_ih once per range: there the Fortran ``sgemm_``
reads W_ih as the module holds it, without a pack before the call (``cpu._input_side``).

MKL runs its AVX-512 code on Intel processors only; on others it takes its AVX2 code, and oneDNN
(the whole-sequence products, ``matmul``) and OpenBLAS (the compiled kernel's per-step products,
``cpu``) were measured faster there, at 2-2.3x MKL's rate on the AMD machines of this project
with AVX-512. On an AMD EPYC without it (LLVM's `znver3`, AVX2), where OpenBLAS runs its Haswell
kernels, which have no small-matrix path, MKL's packed gemm multiplied a recurrence's steps of
several rows 2.5-4 times as fast as OpenBLAS ((16 x 128) @ (128 x 512) 37 µs against 134 in
blocks, 51 whole; one row was the exception: ``cpu.MKL_SINGLE_ROWS``), while oneDNN stayed the
faster for the whole-sequence products (torch.matmul's MKL took 1.07-1.09 times as long for
whole calls at (100, 64, 256) and (50, 128, 256)).
On an Intel Xeon (family 6 model 207, LLVM's `emeraldrapids`; 2 cores), one core, float32, MKL was
the faster:

- a recurrence's step from packed W: (16 x 128) @ (128 x 512) 142 GFLOP/s, (32 x 256) @ (256 x
  1024) 168, against 76-100 and 72-100 for OpenBLAS's small-matrix path in its best row blocks
  and column panels, and 142-153 and 115-119 for MKL's plain sgemm; one row, (1 x 128) @ (128 x
  512), 2.3 µs against OpenBLAS's 3.0-4.3;
- the input projection (3200 x 128) @ (128 x 512) on 2 cores: 1.82 ms against oneDNN's 2.21 ms,
  the weight gradient 2.35 against 2.95 ms (``matmul``).

Packing (K x N) = (128 x 512) costs 15 µs, (256 x 1024) 66 µs, and 80-90 µs where W has left the
caches. MKL has no packed dgemm in this build, so float64 stays on OpenBLAS. The compiled kernel
gets the functions' addresses, not ctypes functions: Numba cannot cache code that holds a ctypes
function (its address differs from process to process).
"""

from __future__ import annotations

import ctypes
import functools
import os
from collections.abc import Callable
from typing import NamedTuple

import torch

# CBLAS's enumerations
ROW_MAJOR, NO_TRANSPOSE, TRANSPOSE, PACKED, B_MATRIX = 101, 111, 112, 151, 162


class _MKL(NamedTuple):
    pack_get_size: Callable[..., int]
    pack_address: int
    compute_address: int
    threads_address: int
    gemm_address: int


@functools.cache
def _mkl() -> _MKL | None:
    """torch's MKL entry points, or None where this torch build does not export them all."""
    try:
        library = ctypes.CDLL(os.path.join(os.path.dirname(torch.__file__), "lib", "libtorch_cpu.so"))
    except OSError:  # another platform's build
        return None
    names = (
        "cblas_sgemm_pack_get_size",
        "cblas_sgemm_pack",
        "cblas_sgemm_compute",
        "MKL_Set_Num_Threads_Local",
        "sgemm_",
    )
    if not all(hasattr(library, name) for name in names):
        return None
    size = library.cblas_sgemm_pack_get_size
    size.restype, size.argtypes = ctypes.c_size_t, [ctypes.c_int] * 4

    def address(name: str) -> int:
        return ctypes.cast(getattr(library, name), ctypes.c_void_p).value

    return _MKL(
        size,
        address("cblas_sgemm_pack"),
        address("cblas_sgemm_compute"),
        address("MKL_Set_Num_Threads_Local"),
        address("sgemm_"),
    )


@functools.cache
def intel() -> bool:
    """Whether this is an Intel processor (Linux's /proc/cpuinfo says so)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as info:
            for line in info:
                if line.startswith("vendor_id"):
                    return line.split(":", 1)[1].strip() == "GenuineIntel"
    except OSError:
        pass
    return False


def preferred() -> bool:
    """Whether MKL is the BLAS to multiply with here: an Intel processor, and torch built with it."""
    return intel() and torch.backends.mkl.is_available()


def available() -> bool:
    """Whether torch exports the packed float32 gemm, the plain one and the thread setting."""
    return _mkl() is not None


def addresses() -> tuple[int, int, int]:
    """(``cblas_sgemm_compute``, ``int MKL_Set_Num_Threads_Local(int)``, the Fortran ``sgemm_``):
    the compiled kernel's entry points, by address."""
    mkl = _mkl()
    return mkl.compute_address, mkl.threads_address, mkl.gemm_address


def pack_addresses() -> tuple[int, int]:
    """(``cblas_sgemm_pack``, ``int MKL_Set_Num_Threads_Local(int)``): the compiled pack's
    entry points (``cpu._pack``), by address."""
    mkl = _mkl()
    return mkl.pack_address, mkl.threads_address


@functools.lru_cache(maxsize=64)
def pack_floats(rows: int, width: int, depth: int) -> int:
    """The float32s of a (depth x width) matrix packed for up to ``rows`` rows: a pure function
    of the shape, asked once (after other work the call took 18 µs of a 60 µs pack). MKL sizes
    every pack at 7.5 MB plus five times the matrix."""
    return -(-_mkl().pack_get_size(B_MATRIX, rows, width, depth) // 4)
