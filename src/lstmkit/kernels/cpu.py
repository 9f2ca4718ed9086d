"""Backend "cpu": each recurrence of one layer and direction as a single compiled Numba call.

``NumbaLoops`` plugs into the shared ``lstm_function.LSTMLayer`` (which does the input side and
the parameter gradients as whole-sequence matrix products in PyTorch). Inside one call per
direction and pass, every step runs the recurrent matrix product on BLAS (Numba's ``np.dot``,
SciPy's OpenBLAS, in the blocks of ``_blocked`` that take its small-matrix path; for float32 on
Intel processors, and where OpenBLAS has no such path, MKL's gemm from a W packed once per call,
``mkl``) and the gate arithmetic of
every variant of ``contract`` fused, unit by unit, with no Python between steps.
Calls with enough work split the batch into ranges of sequences that run on torch's own threads
(``_parts``, ``pool.run``), and compute the input side step by step in each where W_ih is small
enough (``_steps_input``); a long call whose recurrence runs on one thread computes the input side
itself instead, in ranges of steps shared with a second thread (``_project``). It computes the
formulas of docs/variants.md in the order of ``torch_ops.TorchLoops``; both are tested against
``reference_variants``.

Compiled code is cached on disk (``cache=True``); it depends on dtype (float32 or float64), never
on shapes. Arrays absent for a configuration are passed as empty arrays, with a flag.

Shapes: N rows, B sequences, H cell size, P hidden size; gates along 4H as (i, f, g, o).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import itertools
import math
import os
import threading
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from . import mkl, pool
from .contract import LAYER_NORM_EPS, NO_MASKS, PLAIN, LSTMMasks, LSTMOptions, LSTMWeights
from .lstm_function import Gradients, Workspace, lstm_layer_with
from .matmul import linear

try:
    import numba
    import scipy.linalg  # noqa: F401  (Numba's np.dot calls SciPy's BLAS)
    from threadpoolctl import ThreadpoolController
except ImportError:  # the backend reports itself unavailable
    numba = None

DTYPES = (torch.float32, torch.float64)
_NUMPY_DTYPES = {torch.float32: np.dtype(np.float32), torch.float64: np.dtype(np.float64)}
# no "nnan"/"ninf": non-finite inputs must propagate as they do in the reference
_FASTMATH = {"nsz", "arcp", "contract", "reassoc"}


def available() -> bool:
    return numba is not None


def cache_directory() -> str:
    """Where Numba caches this module's compiled code (its ``__pycache__``, ``NUMBA_CACHE_DIR``, or
    a user-wide folder where the package cannot be written)."""
    return _forward._cache.cache_path


# The files whose functions Numba compiles and caches. It keys a cache entry on its own function's
# file alone (modification time and size), but the kernels of cpu_split.py, cpu_step.py and
# cpu_rnn.py inline helpers of this file: after an edit of this file only, they ran the old helpers,
# loaded from the cache. An installation writes every file anew; a working checkout does not.
SOURCES = ("cpu.py", "cpu_rnn.py", "cpu_split.py", "cpu_step.py", "masks.py")
SOURCES_DIGEST = "lstmkit-kernel-sources.sha256"


def sources_digest(sources: Iterable[Path]) -> str:
    """A digest of the files' contents, each apart: code moved from the end of one file to the
    start of the next changes it."""
    return hashlib.sha256(
        b"".join(hashlib.sha256(Path(s).read_bytes()).digest() for s in sources)
    ).hexdigest()


def drop_stale_entries(directory: Path, sources: Iterable[Path]) -> bool:
    """Remove Numba's cache entries (``*.nbi``, ``*.nbc``) from ``directory`` unless the file
    ``SOURCES_DIGEST`` there holds ``sources_digest(sources)``, then write that digest. Returns
    whether it removed them. Another process's entries may go too (it compiles them again);
    Numba treats an entry whose file went missing as absent."""
    digest = sources_digest(sources)
    mark = directory / SOURCES_DIGEST
    with contextlib.suppress(OSError):
        if mark.read_text() == digest:
            return False
    for entry in [*directory.glob("*.nbi"), *directory.glob("*.nbc")]:
        entry.unlink(missing_ok=True)
    written = mark.with_name(f"{mark.name}.{os.getpid()}")
    written.write_text(digest)
    written.replace(mark)  # whole or not at all, for the processes that read it meanwhile
    return True


def target_machine() -> tuple[str, str, str]:
    """What LLVM compiles for here (triple, processor, features): part of every cache entry's key."""
    from numba.core.registry import cpu_target

    return cpu_target.target_context.codegen().magic_tuple()


@functools.cache
def _blas_libraries() -> list:
    """threadpoolctl's controllers of the BLAS libraries in the process."""
    return ThreadpoolController().select(user_api="blas").lib_controllers


# OpenBLAS's kernels for AVX-512 processors multiply small products on a path of their own, without
# packing (``SMALL_PRODUCT``); its others (Haswell's, which it also runs on AMD's Zen cores without
# AVX-512) pack both operands at every call. On the 2-core `znver3` (AVX2, OpenBLAS "Haswell"), one
# core, float32, a recurrence's step products in ``_blocked``'s blocks ran at 16-20 GFLOP/s
# ((16 x 128) @ (128 x 512) 134 µs, (32 x 256) @ (256 x 1024) 856 µs), whole at 41-57, and on MKL's
# packed gemm at 49-89 (37 and 224 µs): whole calls on MKL / on OpenBLAS 0.39-0.63 of the time.
SMALL_PATH_CORES = frozenset({"skylakex", "cooperlake", "sapphirerapids"})


@functools.cache
def small_path() -> bool:
    """Whether the OpenBLAS that the kernels' ``np.dot`` calls (SciPy's; NumPy's loads its own
    copy) has its small-matrix path: every OpenBLAS in the process runs AVX-512 kernels, by the
    core type it reports (``OPENBLAS_CORETYPE`` forces one)."""
    cores = {lib.architecture.lower() for lib in _blas_libraries() if lib.internal_api == "openblas"}
    return bool(cores) and cores <= SMALL_PATH_CORES


# float32's per-step products on MKL's packed gemm where MKL is the faster BLAS (``mkl``: Intel
# processors) or OpenBLAS has no small-matrix path (``small_path``), else on that path in blocks
# (``_blocked``); a single row's on MKL only where it is the faster BLAS: elsewhere
# ``_row_product`` and OpenBLAS multiplied one row faster than MKL's packed gemm (the `znver3`, one
# core: (1 x 128) @ (128 x 512) 6.4 µs against 8.0, (1 x 64) @ (64 x 256) 1.4 against 2.1, the
# backward's (1 x 512) @ (512 x 128) 4.8 against 10.2; whole inference calls (1000, 1, 128) 0.76
# and 0.83 of the time, two runs, (200, 1, 64) 0.97 and 0.95)
MKL_PRODUCTS = available() and mkl.available() and (mkl.preferred() or not small_path())
MKL_SINGLE_ROWS = mkl.preferred()


def step_products() -> str:
    """Which library multiplies the kernels' float32 per-step products here, in words."""
    if MKL_PRODUCTS:
        return "MKL's packed gemm" + ("" if MKL_SINGLE_ROWS else " (single rows: OpenBLAS)")
    return f"OpenBLAS ({'its' if small_path() else 'no'} small-matrix path)"


class _BlasThreads(NamedTuple):
    """A BLAS library's thread count: read it, set it."""

    get: Callable[[], int]
    set: Callable[[int], object]


def _openblas_threads(library) -> _BlasThreads | None:
    """OpenBLAS's own ``openblas_get_num_threads`` and ``openblas_set_num_threads`` (under the
    names a build gives them), or None for another library, or one on OpenMP's threads."""
    if library.internal_api != "openblas" or library.threading_layer == "openmp":
        return None
    handle = ctypes.CDLL(library.filepath)
    for prefix, suffix in itertools.product(("", "scipy_"), ("", "64_", "_64")):
        get, set_ = (
            getattr(handle, f"{prefix}openblas_{verb}_num_threads{suffix}", None) for verb in ("get", "set")
        )
        if get is not None and set_ is not None:
            get.restype, get.argtypes, set_.restype, set_.argtypes = ctypes.c_int, [], None, [ctypes.c_int]
            return _BlasThreads(get, set_)
    return None


@functools.cache
def _blas_threads_controls() -> list[_BlasThreads]:
    """How ``_OneBlasThread`` reads and sets each BLAS library's threads: OpenBLAS's own functions
    where they are found, else threadpoolctl's controller. threadpoolctl lets only the first
    Python thread that sets OpenBLAS's count change it (its "controlling thread"): a kernel called
    from any other thread ran on OpenBLAS's two threads (measured: the counts inside a kernel
    called from a second thread were [2, 2]). Switching to one thread and back took 5.9-6.7 µs of
    a short call through threadpoolctl, 3.6-4.1 µs through these (after the input product of a
    (100, 32, 128) call 16 against 9 µs, at (100, 64, 256) 58 against 37)."""
    return [
        _openblas_threads(library) or _BlasThreads(library.get_num_threads, library.set_num_threads)
        for library in _blas_libraries()
    ]


class _OneBlasThread:
    """Run the BLAS calls of kernels on one thread each, and restore the setting after.

    OpenBLAS's worker threads spin for a while after each call; inside a recurrence of small
    products they stay awake and steal the cores from torch's threads (measured: nn.LSTM ran at
    half speed after a multi-threaded kernel call). The kernel's parts (``_parts``) use the cores
    instead, on torch's own threads. Kernel calls from several Python threads at once share one
    saved setting: the first in saves it, the last out restores it. The library handles are looked
    up once (a fresh lookup costs about 20 µs).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running = 0
        self._saved: list[int] = []

    def __enter__(self) -> None:
        with self._lock:
            if self._running == 0:
                self._saved = [library.get() for library in _blas_threads_controls()]
                for library in _blas_threads_controls():
                    library.set(1)
            self._running += 1

    def __exit__(self, *_: object) -> None:
        with self._lock:
            self._running -= 1
            if self._running == 0:
                for library, threads in zip(_blas_threads_controls(), self._saved, strict=True):
                    library.set(threads)


_one_blas_thread = _OneBlasThread()


def _blas_threads(like: np.ndarray, rows: int) -> contextlib.AbstractContextManager:
    """OpenBLAS on one thread for a kernel call that multiplies on it (products of up to ``rows``
    rows); MKL's setting is the kernel's own (``_one_mkl_thread``)."""
    return contextlib.nullcontext() if _on_mkl(like.dtype, rows) else _one_blas_thread


# The least work per thread (multiply-adds of one call's recurrent products) worth splitting for:
# a parallel region of torch's pool costs about 50 µs (``pool``). Measured against nn.LSTM on the
# 2-core machines, split in two / whole: (T, B, H) = (100, 8, 128), 2.6e7 per thread, inference
# 1.32x / 1.61x; (100, 4, 128), 1.3e7, 1.50x / 1.46x; (100, 2, 64), 1.31x / 1.19x.
MIN_THREAD_WORK = 2**24


def _parts(batch_sizes: Sequence[int], step_work: int) -> list[tuple[int, int]]:
    """The batch split into contiguous ranges of sequences [first, last) with about equal work,
    one per thread: at most torch's thread count, each with ``MIN_THREAD_WORK`` or more.

    ``batch_sizes`` (T,) is non-increasing; ``step_work`` is one sequence's multiply-adds a step.
    Sequences are independent in the recurrences, so the ranges run in parallel with no locks.
    """
    batch = int(batch_sizes[0])
    threads = torch.get_num_threads()
    most = len(batch_sizes) * batch * step_work
    if threads < 2 or batch < 2 or most < 2 * MIN_THREAD_WORK:
        return [(0, batch)]  # without the searches below, which cost more than a short call (5 µs)
    if batch_sizes[-1] == batch:
        # every sequence runs every step: equal shares, without NumPy's searches, which took 24 µs
        # of a (100, 32, 128) inference call and 111 µs at (100, 64, 256), twice a call (measured)
        threads = min(threads, batch, most // MIN_THREAD_WORK)
        bounds = [-(-batch * k // threads) for k in range(threads + 1)]
        return list(zip(bounds[:-1], bounds[1:], strict=True))
    batch_sizes = np.asarray(batch_sizes)
    lengths = np.searchsorted(-batch_sizes, -np.arange(batch), side="left")  # (B,) steps each
    work = np.cumsum(lengths) * step_work
    threads = min(threads, batch, int(work[-1]) // MIN_THREAD_WORK)
    if threads <= 1:
        return [(0, batch)]
    cuts = np.searchsorted(work, work[-1] * np.arange(1, threads) / threads) + 1
    bounds = [0, *sorted({int(c) for c in cuts if 0 < c < batch}), batch]
    return list(zip(bounds[:-1], bounds[1:], strict=True))


def _jit(function, inline: str = "never"):
    """numba.njit with this module's settings. Helpers called inside the loops are inlined all the
    same, by LLVM, and the loops still vectorise. Numba's own inlining (``inline="always"``, which
    copies and re-types the body at every call site) only lengthened the first compilation, for
    the same speed (measured: with it for the gate functions 14.6 s, for ``_exp`` and
    ``_add_product`` only 9.2 s, for none 8.3 s, forward and backward in float32)."""
    if numba is None:
        return function
    # error_model="numpy": no zero-division checks, which would stop the loops from vectorising
    return numba.njit(cache=True, fastmath=_FASTMATH, error_model="numpy", nogil=True, inline=inline)(
        function
    )


# The row helpers that the sequence kernels share with the one-step ones (``cpu_step``): LLVM
# leaves functions of their size as calls, with a reference count per array argument and without
# the caller's vector width, and the sequence kernels ran 8-9% slower (inference and training at
# (100, 32, 128), one process); marked ``alwaysinline`` for LLVM, 7-11%. Numba's inlining keeps
# them within the noise of the code written in place (1.017-1.045 of it, where two copies of the
# same code measured 1.021), for about 0.5 s more of first compilation.
_jit_inline = functools.partial(_jit, inline="always")


# --- the gate functions, vectorisable ---------------------------------------------------------
# Numba has no vector maths library, and libm's exp/tanh are scalar calls (about 3 and 13 ns each
# here), so the gates use functions that LLVM vectorises. float32: tanh is the rational function
# x P(x²) / Q(x²) on |x| <= 9, clamped to [-1, 1] (degree 4 over 4 in x², fitted by
# scripts/fit_tanh.py; relative error 3.3e-7 measured), and σ(x) = (1 + tanh(x / 2)) / 2, whose
# absolute error is 1.3e-7. The gates of a unit took 1.30 ns with it against 2.50 ns with an exp
# polynomial of degree 8 (relative error 2.8e-7), on a machine with AVX-512 on 256-bit units.
# float64: both from exp, a Taylor polynomial of degree 12 after range reduction (relative error
# 3e-15; 2.4e-14 over [-700, 700]), and tanh near 0 from its series. Constants come in a tuple
# ``k`` of the kernel's dtype (``constants``), so that float32 kernels compute in float32 (a
# Python float would be float64).

ONE, TWO, ZERO, LOW, HIGH, LOG2E, LN2_HIGH, LN2_LOW, EPS, INV_GATES, INV_SIZE, HALF, BOUND, POLY = range(14)
_TAYLOR = [1.0 / math.factorial(n) for n in range(12, -1, -1)]  # 1/12!, ..., 1/1!, 1
RATIONAL = POLY + len(_TAYLOR)  # P's five coefficients from x^0 up, then Q's
_P = (
    0.9999999800515714,
    0.13381177532551675,
    0.003495763873588229,
    2.0611778542823742e-05,
    1.335799592938424e-08,
)
_Q = (1.0, 0.4671449337301084, 0.025877662853736084, 0.0003285913967050311, 7.778009901806786e-07)


_VALUES = (
    1.0, 2.0, 0.0,
    -708.0, 709.0,  # float64's exp: its input range, in which 2**n stays a normal number
    1.4426950408889634, 6.93147180369123816490e-01, 1.90821492927058770002e-10,  # log2(e), ln 2 in two parts
    LAYER_NORM_EPS, None, None, 0.5,  # None: INV_GATES and INV_SIZE, which depend on the cell size
    9.0,  # float32's tanh: beyond it, ±1
    *_TAYLOR, *_P, *_Q,
)  # fmt: skip


@functools.cache
def constants(dtype: np.dtype, size: int) -> tuple:
    """The ``k`` tuple for a sequence kernel of ``dtype`` and cell size ``size``: a tuple, not an
    array, so that no store into the kernel's arrays can alias the constants."""
    values = list(_VALUES)
    values[INV_GATES], values[INV_SIZE] = 1.0 / (4 * size), 1.0 / size
    return tuple(dtype.type(v) for v in values)


def step_constants(like, size):
    """``constants`` made inside a kernel on arrays like ``like``, for the one-step kernels: passed
    in, the tuple of 36 NumPy scalars cost 4 µs of each call's dispatch (measured: a kernel of 12
    arguments 2.2 µs, with the tuple 6.2), a tenth of an LSTMCell's step at batch 1. The sequence
    kernels take theirs as an argument all the same: with the values in their code they ran 1-4%
    slower at (T, B, H) = (100, 16-32, 128) and (50, 64, 256) (LLVM's code differs; one process,
    interleaved), and their call is long."""


def _sigmoid(x, k):
    """1 / (1 + e^-x), by the dtype's method."""


def _packed_product(address, a, packed, out):
    """out = a @ B for B packed by ``_mkl_pack`` (float32 only)."""


def _times_transposed(address, a, w, out):
    """out = a @ w.T: MKL's sgemm at ``address`` for float32 where the kernel multiplies on MKL,
    else Numba's np.dot (OpenBLAS), both reading w (N, K) as it is."""


def _tanh(x, k):
    """tanh(x), by the dtype's method."""


@_jit
def _series(r, k):
    """exp(r) for |r| <= ln(2) / 2 by its Taylor series to r^12 / 12! (the next term is below
    1.7e-16); a constant trip count, unrolled by LLVM."""
    p = k[POLY]
    for i in range(POLY + 1, RATIONAL):
        p = p * r + k[i]
    return p


if numba is not None:
    from llvmlite import ir
    from numba import types
    from numba.core import cgutils
    from numba.extending import intrinsic, overload

    @intrinsic
    def _bits_to_float(typingctx, bits):
        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], context.get_value_type(types.float64))

        return types.float64(bits), codegen

    @intrinsic
    def _wide_vectors(typingctx):
        """Mark the calling function ``"prefer-vector-width"="512"``, as clang's
        ``-mprefer-vector-width=512`` does: LLVM's tuning for Intel's AVX-512 processors prefers
        256-bit vectors, so the gate loops ran on half the width they have (the gates of a
        recurrence's step 40% faster with 512: 0.71-0.79 against 1.27-1.38 ms at (100, 16, 128),
        the recurrence with its products 16%, medians of six runs each). LLVM's tunings for AMD's
        znver4 and znver5 already prefer 512 bits, and without AVX-512 there is none: no change
        there. llvmlite admits only the attributes it lists, hence the set's own ``add``."""

        def codegen(context, builder, signature, args):
            attributes = builder.function.attributes
            set.add(attributes, '"prefer-vector-width"="512"')
            return context.get_dummy_value()

        return types.void(), codegen

    @intrinsic
    def _borrowed(typingctx, array):
        """``array`` without its reference count (a null NRT meminfo). The loops take views of
        rows at every step, and each view of a counted array costs an atomic increment and
        decrement: 13.8% of a float32 recurrence's perf samples at (T, B, H) = (100, 16, 128) on
        an Intel Xeon, 3.4% once the arguments were borrowed, none with the scratch arrays too;
        the recurrence 2-9% faster (A/B in one process). Valid while something else keeps the
        array alive: the kernel's caller for its arguments, ``_keep_alive`` for its own arrays."""
        if not isinstance(array, types.Array):
            return None

        def codegen(context, builder, signature, args):
            view = context.make_array(signature.args[0])(context, builder, value=args[0])
            view.meminfo = context.get_constant_null(types.MemInfoPointer(types.voidptr))
            return view._getvalue()

        return array(array), codegen

    @intrinsic
    def _call_int(typingctx, address, value):
        """``int f(int)`` at ``address``, called with ``value``."""
        if not isinstance(address, types.Integer) or not isinstance(value, types.Integer):
            return None

        def codegen(context, builder, signature, args):
            int32 = ir.IntType(32)
            function = builder.inttoptr(args[0], ir.FunctionType(int32, [int32]).as_pointer())
            return builder.call(function, [context.cast(builder, args[1], signature.args[1], types.int32)])

        return types.int32(address, value), codegen

    @intrinsic
    def _call_count(typingctx, address):
        """``int f(void)`` at ``address``, called: OpenMP's ``omp_get_num_threads``."""
        if not isinstance(address, types.Integer):
            return None

        def codegen(context, builder, signature, args):
            function = builder.inttoptr(args[0], ir.FunctionType(ir.IntType(32), []).as_pointer())
            return builder.call(function, [])

        return types.int32(address), codegen

    @intrinsic
    def _sgemm_compute(typingctx, address, a, packed, out):
        """out = a @ B by ``cblas_sgemm_compute`` at ``address``, for B packed by ``_mkl_pack``:
        row-major float32 matrices whose rows are contiguous."""

        def codegen(context, builder, signature, args):
            int32, pointer = ir.IntType(32), ir.IntType(8).as_pointer()
            arrays = [
                context.make_array(t)(context, builder, v)
                for t, v in zip(signature.args[1:], args[1:], strict=True)
            ]
            a_, packed_, out_ = arrays
            item = context.get_constant(types.intp, 4)

            def size(array, axis):
                return builder.trunc(builder.extract_value(array.shape, axis), int32)

            def leading(array):
                return builder.trunc(builder.sdiv(builder.extract_value(array.strides, 0), item), int32)

            def constant(value):
                return ir.Constant(int32, value)

            # (layout, transa, transb, m, n, k, a, lda, b, ldb, beta, c, ldc)
            function_type = ir.FunctionType(
                ir.VoidType(), [int32] * 6 + [pointer, int32, pointer, int32, ir.FloatType(), pointer, int32]
            )
            function = builder.inttoptr(args[0], function_type.as_pointer())
            builder.call(
                function,
                [
                    constant(mkl.ROW_MAJOR), constant(mkl.NO_TRANSPOSE), constant(mkl.PACKED),
                    size(a_, 0), size(out_, 1), size(a_, 1),
                    builder.bitcast(a_.data, pointer), leading(a_),
                    builder.bitcast(packed_.data, pointer), size(out_, 1),
                    ir.Constant(ir.FloatType(), 0.0),
                    builder.bitcast(out_.data, pointer), leading(out_),
                ],
            )  # fmt: skip
            return context.get_dummy_value()

        valid = isinstance(address, types.Integer) and all(
            isinstance(t, types.Array) and t.ndim == n and t.dtype == types.float32 and t.layout == "C"
            for t, n in ((a, 2), (packed, 1), (out, 2))
        )
        return (types.void(address, a, packed, out), codegen) if valid else None

    @intrinsic
    def _sgemm_pack(typingctx, address, trans, rows, width, depth, w, packed):
        """packed = B (depth x width), for products of up to ``rows`` rows, by ``cblas_sgemm_pack``
        at ``address``: B = w (trans NO_TRANSPOSE) or w.T (TRANSPOSE) for a C-contiguous float32
        w, as the module holds it."""

        def codegen(context, builder, signature, args):
            int32, pointer = ir.IntType(32), ir.IntType(8).as_pointer()
            w_, packed_ = (
                context.make_array(t)(context, builder, v)
                for t, v in zip(signature.args[5:], args[5:], strict=True)
            )
            # w is C-contiguous: its row length is its leading dimension (a stride can be
            # anything along an axis of size 1)
            leading = builder.trunc(builder.extract_value(w_.shape, 1), int32)
            numbers = [
                context.cast(builder, v, t, types.int32)
                for t, v in zip(signature.args[1:5], args[1:5], strict=True)
            ]
            # (layout, identifier, trans, m, n, k, alpha, src, ld, dest)
            function_type = ir.FunctionType(
                ir.VoidType(), [int32] * 6 + [ir.FloatType(), pointer, int32, pointer]
            )
            function = builder.inttoptr(args[0], function_type.as_pointer())
            builder.call(
                function,
                [
                    ir.Constant(int32, mkl.ROW_MAJOR), ir.Constant(int32, mkl.B_MATRIX), *numbers,
                    ir.Constant(ir.FloatType(), 1.0), builder.bitcast(w_.data, pointer), leading,
                    builder.bitcast(packed_.data, pointer),
                ],
            )  # fmt: skip
            return context.get_dummy_value()

        valid = all(isinstance(t, types.Integer) for t in (address, trans, rows, width, depth)) and all(
            isinstance(t, types.Array) and t.ndim == n and t.dtype == types.float32 and t.layout == "C"
            for t, n in ((w, 2), (packed, 1))
        )
        return (types.void(address, trans, rows, width, depth, w, packed), codegen) if valid else None

    @intrinsic
    def _sgemm_nt(typingctx, address, a, w, out):
        """out = a @ w.T by MKL's Fortran ``sgemm_`` at ``address`` (no packed operand): row-major
        float32 matrices whose rows are contiguous, w (N, K) as the module holds W_ih. Row-major
        out (r, N) is column-major out.T = op(w) @ a.T with op transposing: sgemm_("T", "N", N, r,
        K, 1, w, K, a, K, 0, out, N), every argument by pointer."""

        def codegen(context, builder, signature, args):
            int32, pointer = ir.IntType(32), ir.IntType(8).as_pointer()
            a_, w_, out_ = (
                context.make_array(t)(context, builder, v)
                for t, v in zip(signature.args[1:], args[1:], strict=True)
            )
            item = context.get_constant(types.intp, 4)

            def by_pointer(value):
                return builder.bitcast(cgutils.alloca_once_value(builder, value), pointer)

            def size(array, axis):
                return by_pointer(builder.trunc(builder.extract_value(array.shape, axis), int32))

            def leading(array):
                rows = builder.sdiv(builder.extract_value(array.strides, 0), item)
                return by_pointer(builder.trunc(rows, int32))

            def data(array):
                return builder.bitcast(array.data, pointer)

            character, number = ir.IntType(8), ir.FloatType()
            function = builder.inttoptr(args[0], ir.FunctionType(ir.VoidType(), [pointer] * 13).as_pointer())
            builder.call(
                function,
                [
                    by_pointer(ir.Constant(character, ord("T"))), by_pointer(ir.Constant(character, ord("N"))),
                    size(w_, 0), size(a_, 0), size(a_, 1), by_pointer(ir.Constant(number, 1.0)),
                    data(w_), leading(w_), data(a_), leading(a_), by_pointer(ir.Constant(number, 0.0)),
                    data(out_), leading(out_),
                ],
            )  # fmt: skip
            return context.get_dummy_value()

        valid = isinstance(address, types.Integer) and all(
            isinstance(t, types.Array) and t.ndim == 2 and t.dtype == types.float32 and t.layout == "C"
            for t in (a, w, out)
        )
        return (types.void(address, a, w, out), codegen) if valid else None

    def _flag(context, builder, signature, args):
        """The address of flags[index] for an intrinsic's (flags, index, ...) arguments."""
        flags = context.make_array(signature.args[0])(context, builder, args[0])
        return builder.gep(flags.data, [context.cast(builder, args[1], signature.args[1], types.intp)])

    def _flags_and_index(flags, index):
        return (
            isinstance(flags, types.Array) and flags.dtype == types.int64 and flags.ndim == 1
        ) and isinstance(index, types.Integer)

    @intrinsic
    def _load_acquire(typingctx, flags, index):
        """flags[index], read with acquire order: what another thread wrote before it stored the
        value (``_store_release``) is visible after; never hoisted out of a waiting loop."""

        def codegen(context, builder, signature, args):
            return builder.load_atomic(_flag(context, builder, signature, args), ordering="acquire", align=8)

        return (types.int64(flags, index), codegen) if _flags_and_index(flags, index) else None

    @intrinsic
    def _store_release(typingctx, flags, index, value):
        """flags[index] = value, with release order (``_load_acquire``)."""

        def codegen(context, builder, signature, args):
            number = context.cast(builder, args[2], signature.args[2], types.int64)
            builder.store_atomic(
                number, _flag(context, builder, signature, args), ordering="release", align=8
            )
            return context.get_dummy_value()

        valid = _flags_and_index(flags, index) and isinstance(value, types.Integer)
        return (types.void(flags, index, value), codegen) if valid else None

    @intrinsic
    def _fetch_add(typingctx, flags, index):
        """flags[index] += 1 in one atomic step; returns the value before."""

        def codegen(context, builder, signature, args):
            one = ir.Constant(ir.IntType(64), 1)
            return builder.atomic_rmw(
                "add", _flag(context, builder, signature, args), one, ordering="acq_rel"
            )

        return (types.int64(flags, index), codegen) if _flags_and_index(flags, index) else None

    @intrinsic
    def _block_product(typingctx, a, panel, out, first, vectors):
        """out[first : first + n] += a @ panel[:, first : first + n] for one row a (K,), a panel
        (K, N) whose rows are contiguous and a contiguous out, n = ``vectors`` (a literal) times
        the numbers of a 32-byte vector: each vector's sum is one register over all K rows, where
        ``cpu_split._add_rows``'s loop over the columns loads and stores ``out`` every four rows.
        Each sum adds the rows in order, one multiply-add a row. Bounds are not checked."""
        numbers = (types.float32, types.float64)
        valid = (
            all(isinstance(t, types.Array) and t.dtype in numbers for t in (a, panel, out))
            and a.dtype == panel.dtype == out.dtype
            and (a.ndim, panel.ndim, out.ndim) == (1, 2, 1)
            and isinstance(first, types.Integer)
            and isinstance(vectors, types.IntegerLiteral)
        )
        if not valid:
            return None
        count = vectors.literal_value

        def codegen(context, builder, signature, args):
            a_, panel_, out_ = (
                context.make_array(t)(context, builder, v)
                for t, v in zip(signature.args[:3], args[:3], strict=True)
            )
            start = context.cast(builder, args[3], signature.args[3], types.intp)
            number = context.get_value_type(signature.args[0].dtype)
            size = context.get_abi_sizeof(number)
            lanes = 32 // size
            vector = ir.VectorType(number, lanes)
            intp = context.get_value_type(types.intp)

            def constant(value):
                return ir.Constant(intp, value)

            def at(array, index):
                return builder.bitcast(builder.gep(array.data, [index]), vector.as_pointer())

            # fused where the processor has FMA, a multiply and an add where not (``contract``)
            multiply_add = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(vector, [vector] * 3), f"llvm.fmuladd.v{lanes}f{8 * size}"
            )
            rows = builder.extract_value(a_.shape, 0)
            a_step, panel_step = (
                builder.sdiv(builder.extract_value(x.strides, 0), constant(size)) for x in (a_, panel_)
            )
            targets = [at(out_, builder.add(start, constant(v * lanes))) for v in range(count)]
            sums = [builder.load(p, align=size) for p in targets]
            entry = builder.block
            loop, done = builder.append_basic_block("block.rows"), builder.append_basic_block("block.done")
            builder.cbranch(builder.icmp_signed(">", rows, constant(0)), loop, done)
            builder.position_at_end(loop)
            k = builder.phi(intp)
            k.add_incoming(constant(0), entry)
            running = []
            for value in sums:
                running.append(builder.phi(vector))
                running[-1].add_incoming(value, entry)
            factor = builder.load(builder.gep(a_.data, [builder.mul(k, a_step)]))
            zero = ir.Constant(ir.IntType(32), 0)
            lanes_zero = ir.Constant(ir.VectorType(ir.IntType(32), lanes), [0] * lanes)
            undefined = ir.Constant(vector, ir.Undefined)
            broadcast = builder.shuffle_vector(
                builder.insert_element(undefined, factor, zero), undefined, lanes_zero
            )
            row = builder.add(builder.mul(k, panel_step), start)
            loaded = [
                builder.load(at(panel_, builder.add(row, constant(v * lanes))), align=size)
                for v in range(count)
            ]
            updated = [
                builder.call(multiply_add, [broadcast, p, s]) for p, s in zip(loaded, running, strict=True)
            ]
            following = builder.add(k, constant(1))
            k.add_incoming(following, loop)
            for phi, value in zip(running, updated, strict=True):
                phi.add_incoming(value, loop)
            builder.cbranch(builder.icmp_signed("<", following, rows), loop, done)
            builder.position_at_end(done)
            results = []
            for before, after in zip(sums, updated, strict=True):
                results.append(builder.phi(vector))
                results[-1].add_incoming(before, entry)
                results[-1].add_incoming(after, loop)
            for value, target in zip(results, targets, strict=True):
                builder.store(value, target, align=size)
            return context.get_dummy_value()

        return types.void(a, panel, out, first, vectors), codegen

    @intrinsic
    def _address(typingctx, array):
        """The address of a C-contiguous array's first element."""

        def codegen(context, builder, signature, args):
            data = context.make_array(signature.args[0])(context, builder, args[0]).data
            return builder.ptrtoint(data, ir.IntType(64))

        valid = isinstance(array, types.Array) and array.layout == "C"
        return (types.int64(array), codegen) if valid else None

    @intrinsic
    def _pointer(typingctx, address, dtype):
        """``address`` as a pointer to numbers of ``dtype`` (a NumPy scalar type), for ``carray``."""
        if not isinstance(address, types.Integer) or not isinstance(dtype, types.NumberClass):
            return None
        target = types.CPointer(dtype.instance_type)

        def codegen(context, builder, signature, args):
            return builder.inttoptr(args[0], context.get_value_type(target))

        return target(address, dtype), codegen

    @intrinsic
    def _region_start(typingctx, address, member, data, threads):
        """``GOMP_parallel_start(member, data, threads)`` at ``address``: the other members of a
        region of up to ``threads`` call ``member(data)``, and the caller goes on."""

        def codegen(context, builder, signature, args):
            pointer, int32 = ir.IntType(8).as_pointer(), ir.IntType(32)
            function_type = ir.FunctionType(ir.VoidType(), [pointer, pointer, int32])
            function = builder.inttoptr(args[0], function_type.as_pointer())
            member_, data_ = (builder.inttoptr(v, pointer) for v in args[1:3])
            builder.call(
                function, [member_, data_, context.cast(builder, args[3], signature.args[3], types.int32)]
            )
            return context.get_dummy_value()

        valid = all(isinstance(t, types.Integer) for t in (address, member, data, threads))
        return (types.void(address, member, data, threads), codegen) if valid else None

    @intrinsic
    def _region_end(typingctx, address):
        """``GOMP_parallel_end()`` at ``address``: wait for the region's other members."""

        def codegen(context, builder, signature, args):
            function = builder.inttoptr(args[0], ir.FunctionType(ir.VoidType(), []).as_pointer())
            builder.call(function, [])
            return context.get_dummy_value()

        return (types.void(address), codegen) if isinstance(address, types.Integer) else None

    @_jit
    def _exp(x, k):
        """e^x in float64."""
        x = min(max(x, k[LOW]), k[HIGH])
        n = np.floor(x * k[LOG2E] + k[HALF])
        r = x - n * k[LN2_HIGH] - n * k[LN2_LOW]
        return _series(r, k) * _bits_to_float((np.int64(n) + 1023) << 52)  # times 2**n

    @_jit
    def _rational_tanh(x, k):
        """tanh(x) in float32."""
        x = min(max(x, -k[BOUND]), k[BOUND])
        t = x * x
        p, q = k[RATIONAL + 4], k[RATIONAL + 9]
        for i in range(3, -1, -1):
            p = p * t + k[RATIONAL + i]
            q = q * t + k[RATIONAL + 5 + i]
        return min(max(x * p / q, -k[ONE]), k[ONE])

    @_jit
    def _exp_tanh(x, k):
        """tanh(x) in float64: 1 - 2 / (1 + e^2x), which cancels near 0 (relative error 1e-6 at
        x = 1e-10), so below |x| = 0.01 its series, whose next term is below 1e-22 of x there.
        Float64 only: the literals are float64."""
        x2 = x * x
        series = x * (1.0 - x2 * (1.0 / 3 - x2 * (2.0 / 15 - x2 * (17.0 / 315 - x2 * (62.0 / 2835)))))
        value = k[ONE] - k[TWO] / (k[ONE] + _exp(k[TWO] * x, k))
        return series if abs(x) < 0.01 else value

    _GATE_OPTIONS = dict(fastmath=_FASTMATH, error_model="numpy")

    @overload(_tanh, jit_options=_GATE_OPTIONS)
    def _tanh_overload(x, k):
        if x == types.float32:
            return lambda x, k: _rational_tanh(x, k)
        return lambda x, k: _exp_tanh(x, k)

    @overload(_sigmoid, jit_options=_GATE_OPTIONS)
    def _sigmoid_overload(x, k):
        if x == types.float32:
            return lambda x, k: k[HALF] + k[HALF] * _rational_tanh(k[HALF] * x, k)
        return lambda x, k: k[ONE] / (k[ONE] + _exp(-x, k))

    @overload(_times_transposed, jit_options=_GATE_OPTIONS)
    def _times_transposed_overload(address, a, w, out):
        if a.dtype == types.float32:

            def times(address, a, w, out):
                if address != 0:
                    _sgemm_nt(address, a, w, out)
                else:
                    np.dot(a, w.T, out)

            return times
        return lambda address, a, w, out: np.dot(a, w.T, out)  # float64: OpenBLAS

    @overload(_packed_product, jit_options=_GATE_OPTIONS)
    def _packed_product_overload(address, a, packed, out):
        if a.dtype == types.float32:
            return lambda address, a, packed, out: _sgemm_compute(address, a, packed, out)
        return lambda address, a, packed, out: None  # no packed dgemm: float64 is never packed

    @overload(step_constants, jit_options=_GATE_OPTIONS)
    def _step_constants_overload(like, size):
        scalar = np.float32 if like.dtype == types.float32 else np.float64
        items = [f"scalar({v!r})" for v in _VALUES]
        items[INV_GATES], items[INV_SIZE] = "scalar(1.0 / (4 * size))", "scalar(1.0 / size)"
        # one tuple expression of literals: a sequence kernel with the tuple built by concatenating
        # constant tuples ran 3-8% slower than with it passed in, with this 1-3% (measured)
        namespace = {"scalar": scalar}
        exec(f"def impl(like, size):\n    return ({', '.join(items)},)", namespace)
        return namespace["impl"]


@_jit
def _normalise(source, hat, inverse_count, k):
    """hat = (source - mean) / sqrt(var + eps) over one row; returns 1 / sqrt(var + eps)."""
    mean = k[ZERO]
    for j in range(source.shape[0]):
        mean += source[j]
    mean *= inverse_count
    var = k[ZERO]
    for j in range(source.shape[0]):
        d = source[j] - mean
        var += d * d
    rstd = k[ONE] / np.sqrt(var * inverse_count + k[EPS])
    for j in range(source.shape[0]):
        hat[j] = (source[j] - mean) * rstd
    return rstd


@_jit
def _normalise_backward(d_hat, hat, rstd, inverse_count, result, k):
    """dL/dz of one row from dL/dẑ, for ẑ = LN(z); ``result`` may be ``d_hat``."""
    mean_d = k[ZERO]
    mean_dh = k[ZERO]
    for j in range(d_hat.shape[0]):
        mean_d += d_hat[j]
        mean_dh += d_hat[j] * hat[j]
    mean_d *= inverse_count
    mean_dh *= inverse_count
    for j in range(d_hat.shape[0]):
        result[j] = rstd * (d_hat[j] - mean_d - hat[j] * mean_dh)


@_jit
def _clip(values, inside, bound):
    """Clamp ``values`` to [-bound, bound] in place, recording where they were inside."""
    for j in range(values.shape[0]):
        v = values[j]
        inside[j] = (v >= -bound) & (v <= bound)
        values[j] = min(max(v, -bound), bound)


@_jit
def _add_product(target, a, b):
    """target += a * b, elementwise."""
    for j in range(target.shape[0]):
        target[j] += a[j] * b[j]


@_jit
def _transpose_rows(rows, target, column):
    """target[:, column + b] = rows[b] for each row b of ``rows`` (m, F), into target (F, N)."""
    for j in range(rows.shape[1]):
        for b in range(rows.shape[0]):
            target[j, column + b] = rows[b, j]


@_jit
def _copy(source, target):
    """target[:] = source, 1-D. A loop rather than a slice assignment: Numba compiles each slice
    assignment into a broadcasting routine of its own, and those took 4.4 s of the kernels' first
    compilation (Numba's compile events)."""
    for j in range(target.shape[0]):
        target[j] = source[j]


# A single row's product by panels this wide or wider runs in ``_row_product``: it ran faster than
# OpenBLAS's (one core, float32, the result on a cache line: (1 x 64) @ (64 x 256) 0.40 against
# 0.54-0.57 µs, (1 x 128) @ (128 x 512) 1.40-1.47 against 2.11-2.24, (1 x 256) @ (256 x 1024)
# 7.98 against 9.13, the backward's (1 x 1024) @ (1024 x 256) 8.08 against 8.89), but not by
# narrower ones, where it stores each result four times as often for the same loads ((1 x 512)
# @ (512 x 128) 2.14 against 2.18, (1 x 256) @ (256 x 64) 0.95 against 0.57).
ROW_PRODUCT_WIDTH = 256


@_jit
def _row_product(a, panel, out):
    """out = a @ panel for one row a (K,) and a panel (K, n): the panel's rows scaled and added in
    turn, W streaming from L2 at about 50 bytes a cycle (unrolled over 4 or 8 of them it ran
    slower)."""
    for j in range(out.shape[0]):
        out[j] = 0
    for k in range(a.shape[0]):
        factor, row = a[k], panel[k]
        for j in range(out.shape[0]):
            out[j] += factor * row[j]


@_jit
def _product(a, weight, out, mkl_addresses):
    """out = a @ W for W (K, N) given as ``_blocked(W)`` = (panels (N / n, K, n), rows, packed):
    packed for MKL, else in row blocks of ``rows`` times column panels of n, the sizes that
    OpenBLAS's small-matrix path multiplies fastest, or for a single row by ``_row_product``."""
    panels, rows, packed = weight
    if packed.shape[0] > 0:
        _packed_product(mkl_addresses[0], a, packed, out)
        return
    count, _, width = panels.shape
    if a.shape[0] == 1 and width >= ROW_PRODUCT_WIDTH:
        for p in range(count):
            _row_product(a[0], panels[p], out[0, p * width : (p + 1) * width])
        return
    scratch = np.empty((min(rows, a.shape[0]), width), dtype=out.dtype) if count > 1 else out
    for r0 in range(0, a.shape[0], rows):
        r1 = min(r0 + rows, a.shape[0])
        if count == 1:
            np.dot(a[r0:r1], panels[0], out[r0:r1])
        else:
            for p in range(count):
                np.dot(a[r0:r1], panels[p], scratch[: r1 - r0])
                for i in range(r1 - r0):
                    _copy(scratch[i], out[r0 + i, p * width : (p + 1) * width])


@_jit
def _aligned_empty(rows, width, like):
    """An uninitialised (rows, width) array of ``like``'s dtype that starts on a cache line
    (``ALIGNMENT``; Numba aligns its arrays to 32 bytes), for the kernels' own results of
    ``_product``: ``_row_product`` stores them in whole vectors, and a result 32 bytes off a line
    took 2.36 µs of a (1 x 128) @ (128 x 512) product, one on a line 1.46."""
    spare = ALIGNMENT // like.itemsize
    buffer = np.empty(rows * width + spare, dtype=like.dtype)
    start = (-_address(buffer) % ALIGNMENT) // like.itemsize
    return buffer[start : start + rows * width].reshape((rows, width))


@_jit
def _keep_alive(owners):
    """Nothing; a use of ``owners`` at the end of a kernel, so that the arrays whose borrowed
    views it works on live until then (Numba frees an array after its last use)."""


@_jit
def _one_mkl_thread(mkl_addresses):
    """MKL on one thread for the calling thread (the kernel's parts are the threads; see
    ``_OneBlasThread``), when the kernel multiplies on MKL; returns the previous setting."""
    compute, threads, _ = mkl_addresses
    return _call_int(threads, 1) if compute != 0 else np.int32(0)


@_jit
def _restore_mkl_threads(mkl_addresses, previous):
    compute, threads, _ = mkl_addresses
    if compute != 0:
        _call_int(threads, previous)


@_jit
def _pack(pack_addresses, w, transposed, packed, rows):
    """``packed`` = W (or W.T with ``transposed``) for ``_packed_product`` of up to ``rows`` rows,
    w as the module holds it; on one MKL thread, as the products run. ``pack_addresses`` =
    (``cblas_sgemm_pack``, ``MKL_Set_Num_Threads_Local``)."""
    width, depth = (w.shape[0], w.shape[1]) if transposed else (w.shape[1], w.shape[0])
    previous = _call_int(pack_addresses[1], 1)
    trans = mkl.TRANSPOSE if transposed else mkl.NO_TRANSPOSE
    _sgemm_pack(pack_addresses[0], trans, rows, width, depth, w, packed)
    _call_int(pack_addresses[1], previous)


@_jit
def _mix(keep, old, new, result, k):
    """result = keep * old + (1 - keep) * new, elementwise: zoneout."""
    for j in range(result.shape[0]):
        result[j] = keep[j] * old[j] + (k[ONE] - keep[j]) * new[j]


# --- one row of a step, shared by the sequence kernels and the one-step ones (``cpu_step``) ------


@_jit_inline
def _activate(a, c_prev, c_new, p_i, p_f, p_o, gate_inside, row, coupled, clip, k):
    """One row's gates from their pre-activations a (4H,), in place, and the new cell
    c' = f c_{t-1} + i g (H,) into ``c_new``: peepholes, clipping (flags in ``gate_inside[row]``),
    the coupled input gate, the activations."""
    size = c_new.shape[0]
    one = k[ONE]
    # the four gates as views: loops that start at 0 prove their indices non-negative, which lets
    # LLVM drop Numba's wraparound checks and vectorise them
    a_i, a_f, a_g, a_o = a[:size], a[size : 2 * size], a[2 * size : 3 * size], a[3 * size :]
    clipping = clip < np.inf
    if p_i.shape[0] > 0:
        _add_product(a_i, p_i, c_prev)
    if p_f.shape[0] > 0:
        _add_product(a_f, p_f, c_prev)
    if clipping:
        _clip(a[: 3 * size], gate_inside[row, : 3 * size], clip)
    for j in range(size):
        a_f[j] = _sigmoid(a_f[j], k)
    if coupled:
        for j in range(size):
            a_i[j] = one - a_f[j]
    else:
        for j in range(size):
            a_i[j] = _sigmoid(a_i[j], k)
    for j in range(size):
        a_g[j] = _tanh(a_g[j], k)
    for j in range(size):
        c_new[j] = a_f[j] * c_prev[j] + a_i[j] * a_g[j]
    if p_o.shape[0] > 0:
        _add_product(a_o, p_o, c_new)
    if clipping:
        _clip(a_o, gate_inside[row, 3 * size :], clip)
    for j in range(size):
        a_o[j] = _sigmoid(a_o[j], k)


@_jit_inline
def _squash(output_gate, c_new, target, k):
    """target = o * tanh(c'), the hidden state without layer norm."""
    for j in range(target.shape[0]):
        target[j] = output_gate[j] * _tanh(c_new[j], k)


@_jit_inline
def _gate_gradients(
    k, g, dg, c_prev, c_new, dr, d_c, d_new, tanh_squashed, carry_c, keep, zoneout_c, p_i, p_f, p_o,
    gate_inside, cell_hat, cell_rstd, ln_cw, ln_cb, gains, row, coupled, clip,
):  # fmt: skip
    """One row's dL/d(gate pre-activations) into ``dg`` (4H,), from dr = dL/d(o * tanh(LN_c(c')))
    (H,) and d_c = dL/dc_t (H,), which becomes dL/dc_{t-1}. With layer norm of the cell, its
    gains' gradients are added into ``gains``; zoneout of the cell keeps ``keep`` of c_{t-1}.
    ``d_new``, ``tanh_squashed`` and ``carry_c`` are scratch (H,)."""
    size = c_new.shape[0]
    one, zero = k[ONE], k[ZERO]
    layer_norm = ln_cw.shape[0] > 0
    clipping = clip < np.inf
    input_gate, forget_gate, candidate, output_gate = (
        g[:size],
        g[size : 2 * size],
        g[2 * size : 3 * size],
        g[3 * size :],
    )
    d_i, d_f, d_g, d_o = dg[:size], dg[size : 2 * size], dg[2 * size : 3 * size], dg[3 * size :]
    if layer_norm:
        hat = cell_hat[row]
        for j in range(size):
            tanh_squashed[j] = _tanh(hat[j] * ln_cw[j] + ln_cb[j], k)
    else:
        for j in range(size):
            tanh_squashed[j] = _tanh(c_new[j], k)
    for j in range(size):
        d_o[j] = dr[j] * tanh_squashed[j] * output_gate[j] * (one - output_gate[j])
        d_new[j] = dr[j] * output_gate[j] * (one - tanh_squashed[j] * tanh_squashed[j])
    if clipping:
        inside = gate_inside[row, 3 * size :]
        for j in range(size):
            d_o[j] = d_o[j] if inside[j] else zero
    if layer_norm:  # d_new is dL/dLN_c(c') here: the cell gains' gradients
        hat = cell_hat[row]
        for j in range(size):
            gains[4 * size + j] += d_new[j] * hat[j]
            gains[5 * size + j] += d_new[j]
            d_new[j] *= ln_cw[j]
        _normalise_backward(d_new, cell_hat[row], cell_rstd[row, 0], k[INV_SIZE], d_new, k)
    if zoneout_c:
        for j in range(size):
            carry_c[j] = d_c[j] * keep[j]
            d_new[j] += d_c[j] * (one - keep[j])
    else:
        for j in range(size):
            d_new[j] += d_c[j]
    if p_o.shape[0] > 0:
        _add_product(d_new, d_o, p_o)
    for j in range(size):
        d_g[j] = d_new[j] * input_gate[j] * (one - candidate[j] * candidate[j])
        d_f[j] = d_new[j] * c_prev[j]
    if coupled:  # i = 1 - f: the forget gate takes the input gate's gradient, negated
        for j in range(size):
            d_f[j] -= d_new[j] * candidate[j]
            d_i[j] = zero
    else:
        for j in range(size):
            d_i[j] = d_new[j] * candidate[j] * input_gate[j] * (one - input_gate[j])
    for j in range(size):
        d_f[j] *= forget_gate[j] * (one - forget_gate[j])
    if clipping:
        inside = gate_inside[row]
        for j in range(3 * size):
            dg[j] = dg[j] if inside[j] else zero
    for j in range(size):
        d_c[j] = d_new[j] * forget_gate[j] + carry_c[j]
    if p_i.shape[0] > 0:
        _add_product(d_c, d_i, p_i)
    if p_f.shape[0] > 0:
        _add_product(d_c, d_f, p_f)


# --- the input side beside the recurrence ----------------------------------------------------
# A recurrence that runs on one thread (``_parts``) leaves the other cores idle, while the input
# side before it (W_ih x of every row, one large product) makes it wait: 0.5 of a 3.5 ms call at
# (T, B, H) = (1000, 1, 128). With ``NumbaLoops.projects_input`` the product is cut into ranges of
# steps in the order the recurrence visits them, short first (``_ranges``), and shared out: the
# recurrence kernel opens a region of torch's OpenMP runtime of two (``pool.region_addresses``),
# whose second member (``_project``, by way of a compiled C callback, ``_helper``) takes the next
# range not yet taken while the recurrence runs; the recurrence takes one itself whenever it
# reaches a range nobody has taken. It never waits on a thread that has not started, so it runs
# even where the runtime gives it no second thread; the results are the same whoever computes a
# range. ``claims`` = (ranges taken, then one flag per range: 0 pending, 1 done). No member enters
# Python: a region whose members called back into Python cost 38 µs (``pool.run``), this one 2-7.


@_jit
def _project_range(mkl_addresses, x, w_ih, gates, bounds, claims, offsets, batch_sizes, reverse, r):
    """gates = x @ W_ih.T on the rows of range ``r`` (steps bounds[r] to bounds[r + 1] in visiting
    order), from W_ih (4H, I) as the module holds it: nothing to pack or copy before the call."""
    steps = batch_sizes.shape[0]
    low, high = (steps - bounds[r + 1], steps - bounds[r]) if reverse else (bounds[r], bounds[r + 1])
    rows = slice(offsets[low], offsets[high - 1] + batch_sizes[high - 1])
    _times_transposed(mkl_addresses[2], x[rows], w_ih, gates[rows])
    _store_release(claims, 1 + r, 1)


@_jit
def _project(mkl_addresses, x, w_ih, gates, bounds, claims, offsets, batch_sizes, reverse):
    """The helper: every range not yet taken, in order."""
    threads = _one_mkl_thread(mkl_addresses)
    r = _fetch_add(claims, 0)
    while r < bounds.shape[0] - 1:
        _project_range(mkl_addresses, x, w_ih, gates, bounds, claims, offsets, batch_sizes, reverse, r)
        r = _fetch_add(claims, 0)
    _restore_mkl_threads(mkl_addresses, threads)


@_jit
def _input_ready(mkl_addresses, x, w_ih, gates, bounds, claims, offsets, batch_sizes, reverse, r):
    """Return once range ``r`` is done, computing ranges nobody has taken meanwhile."""
    while _load_acquire(claims, 1 + r) == 0:
        if _load_acquire(claims, 0) <= r:
            taken = _fetch_add(claims, 0)
            if taken < bounds.shape[0] - 1:
                _project_range(
                    mkl_addresses, x, w_ih, gates, bounds, claims, offsets, batch_sizes, reverse, taken
                )


# ``_project``'s arguments for the helper, as the numbers of an int64 array: the three MKL
# addresses, then x's address, rows and width, W_ih's address and rows, gates' address, bounds'
# address and length (claims' too), claims' address, offsets' address and length (the steps),
# batch_sizes' address, reverse
_DESCRIPTION = 16


@_jit
def _describe(mkl_addresses, x, w_ih, gates, bounds, claims, offsets, batch_sizes, reverse):
    """``_project``'s arguments for the helper (``_DESCRIPTION``), valid while the arrays live."""
    d = np.empty(_DESCRIPTION, dtype=np.int64)
    d[0], d[1], d[2] = mkl_addresses
    d[3], d[4], d[5] = _address(x), x.shape[0], x.shape[1]
    d[6], d[7], d[8] = _address(w_ih), w_ih.shape[0], _address(gates)
    d[9], d[10], d[11] = _address(bounds), bounds.shape[0], _address(claims)
    d[12], d[13], d[14] = _address(offsets), offsets.shape[0], _address(batch_sizes)
    d[15] = reverse
    return d


@_jit
def _help(data, dtype):
    """``_project`` on the arrays that ``_describe`` wrote to ``data`` (a pointer), of ``dtype``."""
    d = numba.carray(data, (_DESCRIPTION,), np.int64)
    rows, width, gate_width, ranges, steps = d[4], d[5], d[7], d[10], d[13]
    _project(
        (d[0], d[1], d[2]), numba.carray(_pointer(d[3], dtype), (rows, width)),
        numba.carray(_pointer(d[6], dtype), (gate_width, width)),
        numba.carray(_pointer(d[8], dtype), (rows, gate_width)),
        numba.carray(_pointer(d[9], np.int64), (ranges,)), numba.carray(_pointer(d[11], np.int64), (ranges,)),
        numba.carray(_pointer(d[12], np.int64), (steps,)), numba.carray(_pointer(d[14], np.int64), (steps,)),
        d[15] != 0,
    )  # fmt: skip


@functools.cache
def _helper_address(dtype: np.dtype) -> int:
    """The address of ``void helper(void *data)``, ``_help`` for arrays of ``dtype``: the C
    function that the region's second member calls. Compiled (or loaded from the disk cache) on
    first use, not at import."""
    scalar = dtype.type

    @_callback
    def helper(data):
        _help(data, scalar)

    return helper.address


def _callback(function: Callable) -> numba.core.ccallback.CFunc:
    """``void function(void *data)`` compiled as a C function with this module's settings, cached
    on disk: the body of a region's members (``_region_start``)."""
    return numba.cfunc(
        types.void(types.voidptr), cache=True, nopython=True, fastmath=_FASTMATH, error_model="numpy"
    )(function)


def _helper(like: np.ndarray) -> tuple[int, int, int]:
    """``_forward``'s ``helper``: (``GOMP_parallel_start``, ``GOMP_parallel_end``, the helper's
    address) for a kernel on arrays like ``like``; zeros where torch's OpenMP is not at hand."""
    start, end = pool.region_addresses()
    return (start, end, _helper_address(like.dtype)) if start else (0, 0, 0)


# --- the recurrences --------------------------------------------------------------------------


@_jit
def _forward(
    k, mkl_addresses, gates, bias, cell_new, cells, out, inputs, inputs_t, previous_t, unprojected,
    hh_hat, hh_rstd, cell_hat, cell_rstd, gate_inside, hidden, cell, w_hh_t, w_hr_t, w_ih_t, p_i, p_f,
    p_o, ln_hh, ln_cw, ln_cb,
    recurrent, keep_c, keep_c_value, keep_h, keep_h_value, offsets, batch_sizes, x, w_ih, bounds,
    claims, helper, first, last, reverse, coupled, clip,
):  # fmt: skip
    _wide_vectors()
    # every array whose rows the loops view, borrowed (``_borrowed``)
    gates, cell_new, cells, out = _borrowed(gates), _borrowed(cell_new), _borrowed(cells), _borrowed(out)
    inputs, inputs_t, previous_t = _borrowed(inputs), _borrowed(inputs_t), _borrowed(previous_t)
    unprojected, hh_hat, cell_hat = _borrowed(unprojected), _borrowed(hh_hat), _borrowed(cell_hat)
    gate_inside, hidden, cell = _borrowed(gate_inside), _borrowed(hidden), _borrowed(cell)
    keep_c, keep_h = _borrowed(keep_c), _borrowed(keep_h)
    steps = batch_sizes.shape[0]
    size = cell.shape[1]
    batch, hidden_size = hidden.shape
    layer_norm = ln_hh.shape[0] > 0
    project = unprojected.shape[0] > 0  # its buffer exists only with a projection
    by_step = w_ih_t[0].shape[0] > 0 or w_ih_t[2].shape[0] > 0  # the input side, step by step
    # inference's gates, c' and clipping flags: one row a sequence, written again every step
    compact = gates.shape[0] < out.shape[0]
    owners = (
        np.empty_like(hidden),
        _aligned_empty(batch, 4 * size, gates),
        _aligned_empty(batch, hidden_size, gates),
        np.full(size, keep_c_value, dtype=gates.dtype),
        np.full(hidden_size, keep_h_value, dtype=gates.dtype),
        _describe(mkl_addresses, x, w_ih, gates, bounds, claims, offsets, batch_sizes, reverse),
    )
    h_in, z, h_new = _borrowed(owners[0]), _borrowed(owners[1]), _borrowed(owners[2])  # z: W_hh h
    keep_row_c, keep_row_h = _borrowed(owners[3]), _borrowed(owners[4])
    start_region, end_region, helper_address = helper
    beside = start_region != 0 and x.shape[0] > 0  # the input side's helper (``_project``)
    if beside:
        _region_start(start_region, helper_address, _address(owners[5]), 2)
    threads = _one_mkl_thread(mkl_addresses)
    r = -1  # the range of steps whose input side is in ``gates`` (``_input_ready``)
    for s in range(steps):
        if s >= bounds[r + 1]:
            r += 1
            _input_ready(mkl_addresses, x, w_ih, gates, bounds, claims, offsets, batch_sizes, reverse, r)
        t = steps - 1 - s if reverse else s
        start, stop = offsets[t], min(batch_sizes[t], last)
        if stop <= first:
            continue
        base = 0 if compact else start  # the step's first row of gates, cell_new, cells, gate_inside
        if by_step:
            _product(
                inputs[start + first : start + stop], w_ih_t, gates[base + first : base + stop], mkl_addresses
            )
        if recurrent.shape[0] > 0:
            for b in range(first, stop):
                for j in range(hidden_size):
                    h_in[b, j] = hidden[b, j] * recurrent[b, j]
            _product(h_in[first:stop], w_hh_t, z[first:stop], mkl_addresses)
            if previous_t.shape[0] > 0:
                _transpose_rows(h_in[first:stop], previous_t, start + first)
        else:
            _product(hidden[first:stop], w_hh_t, z[first:stop], mkl_addresses)
            if previous_t.shape[0] > 0:
                _transpose_rows(hidden[first:stop], previous_t, start + first)
        if inputs_t.shape[0] > 0:
            _transpose_rows(inputs[start + first : start + stop], inputs_t, start + first)
        for b in range(first, stop):
            row, g = start + b, base + b
            a = gates[g]
            a_o = a[3 * size :]
            c_prev = cell[b]
            c_new = cell_new[g]
            if layer_norm:
                hh_rstd[row, 0] = _normalise(z[b], hh_hat[row], k[INV_GATES], k)
                hat = hh_hat[row]
                for j in range(4 * size):
                    a[j] += hat[j] * ln_hh[j] + bias[j]
            else:
                for j in range(4 * size):
                    a[j] += z[b, j] + bias[j]
            _activate(a, c_prev, c_new, p_i, p_f, p_o, gate_inside, g, coupled, clip, k)
            target = unprojected[row] if project else h_new[b]
            if layer_norm:
                cell_rstd[row, 0] = _normalise(c_new, cell_hat[row], k[INV_SIZE], k)
                hat = cell_hat[row]
                for j in range(size):
                    target[j] = a_o[j] * _tanh(hat[j] * ln_cw[j] + ln_cb[j], k)
            else:
                _squash(a_o, c_new, target, k)
            if keep_c.shape[0] > 0:
                _mix(keep_c[row], c_prev, c_new, cells[g], k)
            elif keep_c_value > 0:
                _mix(keep_row_c, c_prev, c_new, cells[g], k)
            _copy(cells[g], c_prev)
        if project:
            _product(unprojected[start + first : start + stop], w_hr_t, h_new[first:stop], mkl_addresses)
        for b in range(first, stop):
            row = start + b
            if keep_h.shape[0] > 0:
                _mix(keep_h[row], hidden[b], h_new[b], out[row], k)
            elif keep_h_value > 0:
                _mix(keep_row_h, hidden[b], h_new[b], out[row], k)
            else:
                _copy(h_new[b], out[row])
            _copy(out[row], hidden[b])
    _restore_mkl_threads(mkl_addresses, threads)
    if beside:
        _region_end(end_region)
    _keep_alive(owners)


@_jit
def _backward(
    k, mkl_addresses, gates, cell_new, hh_hat, hh_rstd, cell_hat, cell_rstd, gate_inside, cell_prev,
    d_out, dh, dc, d_gates, d_recurrent, d_projected,
    w_hh, w_hr, p_i, p_f, p_o, ln_hh, ln_cw, ln_cb,
    recurrent, keep_c, keep_c_value, keep_h, keep_h_value, offsets, batch_sizes, first, last, gains,
    reverse, coupled, clip,
):  # fmt: skip
    _wide_vectors()
    # every array whose rows the loops view, borrowed (``_borrowed``)
    gates, cell_new, hh_hat = _borrowed(gates), _borrowed(cell_new), _borrowed(hh_hat)
    cell_hat, gate_inside, cell_prev = _borrowed(cell_hat), _borrowed(gate_inside), _borrowed(cell_prev)
    dh, dc, d_gates = _borrowed(dh), _borrowed(dc), _borrowed(d_gates)
    d_recurrent, d_projected = _borrowed(d_recurrent), _borrowed(d_projected)
    keep_c, keep_h = _borrowed(keep_c), _borrowed(keep_h)
    steps = batch_sizes.shape[0]
    size = dc.shape[1]
    batch, hidden_size = dh.shape
    one = k[ONE]
    layer_norm = ln_hh.shape[0] > 0
    project = d_projected.shape[0] > 0
    zoneout_h = keep_h.shape[0] > 0 or keep_h_value > 0
    zoneout_c = keep_c.shape[0] > 0 or keep_c_value > 0
    owners = (
        np.empty_like(dh),  # d_hidden: dL/dh'_t of the step's rows
        np.zeros_like(dh),  # carry_h: the part of dL/dh_t that zoneout passes to h_{t-1}
        _aligned_empty(batch, size, dh),  # d_r: dL/d(o * tanh(LN_c(c')))
        _aligned_empty(batch, hidden_size, dh),  # dh_in
        np.empty(size, dtype=dh.dtype),  # d_new: dL/dc'
        np.zeros(size, dtype=dh.dtype),  # carry_c: the part of dL/dc_t that zoneout passes to c_{t-1}
        np.empty(size, dtype=dh.dtype),  # tanh_squashed
        np.full(size, keep_c_value, dtype=dh.dtype),  # keep_row_c
    )
    d_hidden, carry_h = _borrowed(owners[0]), _borrowed(owners[1])
    d_r, dh_in = _borrowed(owners[2]), _borrowed(owners[3])
    d_new, carry_c = _borrowed(owners[4]), _borrowed(owners[5])
    tanh_squashed, keep_row_c = _borrowed(owners[6]), _borrowed(owners[7])
    scaled = np.empty(4 * size, dtype=dh.dtype)
    keep_row_h = np.full(hidden_size, keep_h_value, dtype=dh.dtype)
    threads = _one_mkl_thread(mkl_addresses)
    for s in range(steps):
        t = s if reverse else steps - 1 - s  # the forward order, reversed
        start, stop = offsets[t], min(batch_sizes[t], last)
        if stop <= first:
            continue
        for b in range(first, stop):
            row = start + b
            for j in range(hidden_size):
                d_hidden[b, j] = dh[b, j] + d_out[row, j]
            if zoneout_h:
                keep = keep_h[row] if keep_h.shape[0] > 0 else keep_row_h
                for j in range(hidden_size):
                    carry_h[b, j] = d_hidden[b, j] * keep[j]
                    d_hidden[b, j] *= one - keep[j]
            if project:
                _copy(d_hidden[b], d_projected[row])
        if project:
            _product(d_hidden[first:stop], w_hr, d_r[first:stop], mkl_addresses)
        else:
            for b in range(first, stop):
                _copy(d_hidden[b], d_r[b])
        for b in range(first, stop):
            row = start + b
            dg = d_gates[row]
            keep = keep_c[row] if keep_c.shape[0] > 0 else keep_row_c
            _gate_gradients(
                k, gates[row], dg, cell_prev[row], cell_new[row], d_r[b], dc[b], d_new, tanh_squashed,
                carry_c, keep, zoneout_c, p_i, p_f, p_o, gate_inside, cell_hat, cell_rstd, ln_cw, ln_cb,
                gains, row, coupled, clip,
            )  # fmt: skip
            if layer_norm:
                hat = hh_hat[row]
                for j in range(4 * size):
                    gains[j] += dg[j] * hat[j]
                    scaled[j] = dg[j] * ln_hh[j]
                _normalise_backward(scaled, hh_hat[row], hh_rstd[row, 0], k[INV_GATES], d_recurrent[row], k)
        _product(d_recurrent[start + first : start + stop], w_hh, dh_in[first:stop], mkl_addresses)
        for b in range(first, stop):
            for j in range(hidden_size):
                value = dh_in[b, j]
                if recurrent.shape[0] > 0:
                    value *= recurrent[b, j]
                dh[b, j] = value + carry_h[b, j]
    _restore_mkl_threads(mkl_addresses, threads)
    _keep_alive(owners)


@functools.cache
def _empty(dtype: np.dtype, dims: int) -> np.ndarray:
    """The size-0 array that stands for an absent one, made once (a call passes a dozen)."""
    return np.empty((0,) * dims, dtype=dtype)


def _numpy(tensor: Tensor) -> np.ndarray:
    """A CPU tensor's memory as a NumPy array. For a tensor that requires grad (a parameter),
    ``numpy(force=True)`` detaches it in one torch call: 3.0 µs against 3.9 for ``detach()`` and
    ``numpy()`` after other work; for one that does not, plain ``numpy()`` 2.8 against 3.0
    (medians of 30000 interleaved calls)."""
    return tensor.numpy(force=True) if tensor.requires_grad else tensor.numpy()


def _array(tensor: Tensor | None, like: np.ndarray, dims: int) -> np.ndarray:
    """A tensor as a contiguous NumPy array; None as an empty one of the same dtype."""
    if tensor is None:
        return _empty(like.dtype, dims)
    # NumPy's checks: each torch call costs 1-3 µs of a short call
    array = _numpy(tensor)
    return array if array.flags.c_contiguous else np.ascontiguousarray(array)


# OpenBLAS multiplies small products (M * N * K up to 1e6 in its sgemm and dgemm for AVX-512) on a
# separate path without packing, about twice as fast here for a recurrence's shapes as its general
# path (measured on one core, float32: (32 x 128) @ (128 x 512) 65 GFLOP/s whole, 115 in blocks of
# 12 rows; (64 x 256) @ (256 x 1024) 84 whole, 107 in blocks of 16 rows and 128 columns).
SMALL_PRODUCT = 10**6


def _on_mkl(dtype: np.dtype, rows: int) -> bool:
    """Whether a kernel on arrays of ``dtype`` whose products have up to ``rows`` rows multiplies
    on MKL (float32, ``MKL_PRODUCTS``, ``MKL_SINGLE_ROWS``)."""
    return MKL_PRODUCTS and dtype == np.float32 and (rows > 1 or MKL_SINGLE_ROWS)


def _mkl_addresses(like: np.ndarray, rows: int) -> tuple[int, int]:
    """The kernels' ``mkl_addresses``: MKL's packed gemm and thread setting, or zeros."""
    return mkl.addresses() if _on_mkl(like.dtype, rows) else (0, 0, 0)


def _blocked(
    weight: Tensor | None, like: np.ndarray, batch: int, transpose: bool = False
) -> tuple[np.ndarray, int, np.ndarray]:
    """W (K, N), or W.T with ``transpose``, as ``_product`` takes it for products of up to
    ``batch`` rows: (column panels (N / n, K, n), rows per block, MKL's packed W). For MKL, W
    packed (and empty panels); else no packed W and, on OpenBLAS's small-matrix path, n halved
    from N until 8 rows fit a small product, with as many rows as fit (a multiple of 4, at most
    16); W whole if no 4 rows fit or the path is missing (``small_path``). None: empty arrays."""
    no_panels, not_packed = _empty(like.dtype, 3), _empty(like.dtype, 1)
    if weight is None:
        return no_panels, 1, not_packed
    matrix = weight.detach().t() if transpose else weight.detach()
    if _on_mkl(like.dtype, batch):
        return no_panels, 1, _mkl_pack(matrix.numpy(), batch)
    depth, width = matrix.shape
    rows = 0
    if small_path():
        while 8 * depth * width > SMALL_PRODUCT and width % 2 == 0 and width > 16:
            width //= 2
        rows = min(16, 4 * (SMALL_PRODUCT // (4 * depth * width)))
    if rows == 0:
        return _panels(matrix, matrix.shape[1]), 2**62, not_packed
    return _panels(matrix, width), rows, not_packed


# OpenBLAS's small-matrix path multiplied 20-27% faster from panels that start on a cache line
# (64 bytes) than from panels 16-48 bytes past one (one core, float32, aligned / not: (16 x 128)
# @ (128 x 512) 221 / 174 GFLOP/s, (16 x 64) @ (64 x 256) 201 / 163, the backward's (16 x 512) @
# (512 x 128) 213 / 184; one row 56 / 50); the rows' and the results' alignment made no
# difference. NumPy's allocations start anywhere 16 bytes apart, torch's on a cache line (c10's
# allocator aligns to 64 bytes).
ALIGNMENT = 64


def _panels(matrix: Tensor, width: int) -> np.ndarray:
    """A (K, N) matrix as C-contiguous column panels (N / width, K, width) that start on a
    cache line (``ALIGNMENT``); without a copy where it is such a panel already.

    The copy is torch's: its blocked transposing copy makes a panel of W.T (the transpose of a
    block of W's rows) faster than NumPy's strided copy, which besides needs an aligned buffer
    made by hand (one core: W_hh.T at H = 64 12 µs against 13, H = 128 30 against 54, H = 256
    106 against 218, H = 512 385 against 1375). Whole inference calls, aligned panels by torch's
    copy / NumPy's unaligned ones (one process, interleaved): (100, 32, 128) 0.94, (100, 16, 128)
    0.94, (2, 32, 128) 0.91-0.92, (200, 1, 64) 0.99-1.03, (1000, 1, 128) 1.01-1.02.
    """
    depth, columns = matrix.shape
    if width == columns and matrix.is_contiguous() and matrix.data_ptr() % ALIGNMENT == 0:
        return matrix.numpy()[None]
    panels = torch.empty((columns // width, depth, width), dtype=matrix.dtype)
    for p in range(columns // width):
        panels[p].copy_(matrix[:, p * width : (p + 1) * width])
    return panels.numpy()


def _mkl_pack(matrix: np.ndarray, rows: int) -> np.ndarray:
    """A float32 (K, N) matrix, C-contiguous or the transpose of one, packed by MKL as the
    right-hand operand of ``_packed_product``'s (m x K) @ (K x N) for any m up to ``rows``: an
    opaque buffer, valid only at its own address. Packed in compiled code (``_pack``): through
    ctypes, after other work, the argument conversions and the two arrays' addresses took longer
    than the packing itself."""
    transposed = not matrix.flags.c_contiguous and matrix.T.flags.c_contiguous
    held = matrix.T if transposed else np.ascontiguousarray(matrix)
    packed = np.empty(mkl.pack_floats(rows, matrix.shape[1], matrix.shape[0]), dtype=np.float32)
    _pack(mkl.pack_addresses(), held, transposed, packed, rows)
    return packed


_BOOL = np.dtype(np.bool_)


def _flags(tensor: Tensor | None) -> np.ndarray:
    """The clipping flags as a boolean array; an empty one without clipping."""
    return _empty(_BOOL, 2) if tensor is None else tensor.numpy()


def _discarded_flags(options: LSTMOptions, rows: int, gates: int) -> np.ndarray:
    """Room for the clipping flags (rows, gates) that a kernel writes and no backward will read
    (inference); an empty array without clipping."""
    return _flags(None) if options.clip is None else np.empty((rows, gates), np.bool_)


def _keep(mask: Tensor | None, like: np.ndarray) -> tuple[np.ndarray, np.generic]:
    """A zoneout mask as (per-row array or empty, constant value): evaluation's masks are 0-d."""
    if mask is None or mask.dim() == 0:
        return _array(None, like, 2), like.dtype.type(0.0 if mask is None else float(mask))
    return _array(mask, like, 2), like.dtype.type(0.0)


def _read_only(*arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    """The arrays, marked read-only. Batch sizes, row offsets and the input side's ranges reach
    the kernels read-only whether cached (``_padded_rows``, ``_ranges``) or made for one call, so
    both share one compiled signature."""
    for array in arrays:
        array.flags.writeable = False
    return arrays


@functools.lru_cache(maxsize=64)
def _padded_rows(steps: int, batch: int) -> tuple[np.ndarray, ...]:
    """(batch sizes (T,), row offsets (T,)) of a padded batch, made once per shape and shared by
    every call of it, so read-only."""
    return _read_only(
        np.full(steps, batch, dtype=np.int64), np.arange(0, steps * batch, batch, dtype=np.int64)
    )


def _rows(batch_sizes: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """(batch sizes (T,), row offsets (T,)) as the kernels take them, read-only."""
    steps, batch = len(batch_sizes), batch_sizes[0]
    # padded input (sizes never grow, so equal ends mean all equal): no conversion of a list,
    # which took 18 µs at T = 1000
    if batch_sizes[-1] == batch:
        return _padded_rows(steps, batch)
    sizes = np.array(batch_sizes, dtype=np.int64)
    return _read_only(sizes, np.cumsum(sizes) - sizes)


_NO_VECTORS = (None,) * 6


def _shared(w: LSTMWeights, masks: LSTMMasks, like: np.ndarray, batch_sizes, options: LSTMOptions) -> tuple:
    """The arguments that forward and backward take in the same order, after their own."""
    vectors = (
        w.peephole_i,
        w.peephole_f,
        w.peephole_o,
        w.layer_norm_hh,
        w.layer_norm_cell_weight,
        w.layer_norm_cell_bias,
    )
    sizes, offsets = _rows(batch_sizes)
    if vectors == _NO_VECTORS and (masks is NO_MASKS or masks == NO_MASKS):
        options_part, last = _plain_options(like.dtype, options)
        return (*options_part, offsets, sizes), last
    keep_c, keep_c_value = _keep(masks.keep_cell, like)
    keep_h, keep_h_value = _keep(masks.keep_hidden, like)
    return (
        *(_array(v, like, 1) for v in vectors),
        _array(masks.recurrent, like, 2),
        keep_c,
        keep_c_value,
        keep_h,
        keep_h_value,
        offsets,
        sizes,
    ), _last(like.dtype, options)


@functools.cache
def _last(dtype: np.dtype, options: LSTMOptions) -> tuple:
    """The kernels' last arguments: (coupled, clip bound in ``dtype``)."""
    return options.coupled, dtype.type(math.inf if options.clip is None else options.clip)


@functools.cache
def _plain_options(dtype: np.dtype, options: LSTMOptions) -> tuple[tuple, tuple]:
    """``_shared``'s arguments before the rows', and its last ones, for a layer without peepholes,
    layer norm or masks: the same for every call, made once (they cost 10-15 µs of a short call)."""
    like = _empty(dtype, 2)
    absent = (*(_empty(dtype, 1) for _ in range(6)), like, *_keep(None, like), *_keep(None, like))
    return absent, _last(dtype, options)


def _bias(w: LSTMWeights, like: np.ndarray) -> np.ndarray:
    """b_ih + b_hh (4H,), which the forward kernel adds (``ADDS_BIAS``); zeros without biases."""
    if w.b_ih is None:
        return np.zeros(like.shape[1], dtype=like.dtype)
    # in NumPy: a torch operation costs 2-3 µs of a short call more
    return np.add(_numpy(w.b_ih), _numpy(w.b_hh))


def _step_work(w: LSTMWeights) -> int:
    """Multiply-adds of one sequence's step: the recurrent product, and the projection if any."""
    work = w.w_hh.numel()
    return work if w.w_hr is None else work + w.w_hr.numel()


# The least input-side work (multiply-adds of W_ih x over all rows) worth sharing out beside the
# recurrence (``_project``): below it the ranges' own products and the region's start cost more
# than the one product on every core that they replace. Measured on the 2-core Intel machine,
# whole inference calls, beside / before (medians of 300-400 interleaved calls, one process):
# (T, B, H) = (20, 1, 32), 8e4, 1.04; (50, 1, 32), 2e5, 1.07; (10, 1, 128), 6.6e5, 0.99;
# (20, 2, 64), 6.6e5, 1.01; (50, 1, 64), 8.2e5, 0.99-1.01; (100, 1, 64), 1.6e6, 0.97;
# (30, 1, 128), 2e6, 0.94; (200, 1, 64), 3.3e6, 0.93-0.96; (100, 4, 64), 6.6e6, 0.94;
# (1000, 1, 128), 6.6e7, 0.86. (With a helper that called back into Python, whose region cost
# 38 µs, the threshold was 2e7.)
MIN_PROJECT_WORK = 2**20
# The ranges of ``_project`` in rows: the first short, so that the recurrence starts soon, then
# twice as long each time up to the longest
FIRST_PROJECT_ROWS = 8
MOST_PROJECT_ROWS = 256
# ``_forward``'s ranges and claims when the input side is in ``gates`` before the call: one range,
# done (never written: the kernel writes a claim only where one is pending)
_ONE_RANGE = _read_only(np.array([0, np.iinfo(np.int64).max]))[0], np.ones(2, dtype=np.int64)
_NO_HELPER = (0, 0, 0)


def _ranges(steps: int, batch: int) -> np.ndarray:
    """The ranges' bounds, in steps of visiting order, from 0 to ``steps``: ``FIRST_PROJECT_ROWS``
    rows first, then twice as many each time up to ``MOST_PROJECT_ROWS``; read-only."""
    return _range_bounds(steps, batch, FIRST_PROJECT_ROWS, MOST_PROJECT_ROWS)


@functools.lru_cache(maxsize=64)
def _range_bounds(steps: int, batch: int, first: int, most: int) -> np.ndarray:
    """``_ranges``, made once per shape: the loop took 40 µs of a short call after other work."""
    count, most = max(1, first // batch), max(1, most // batch)
    bounds = [0]
    while bounds[-1] < steps:
        bounds.append(min(bounds[-1] + count, steps))
        count = min(2 * count, most)
    return _read_only(np.array(bounds, dtype=np.int64))[0]


@functools.cache
def _no_input_side(dtype: np.dtype) -> tuple:
    """``_input_side`` without x: in ``gates`` before the call."""
    return _empty(dtype, 2), _empty(dtype, 2), *_ONE_RANGE, _NO_HELPER


def _input_side(x: Tensor | None, w_ih: Tensor, like: np.ndarray, batch_sizes: Sequence[int]) -> tuple:
    """``_forward``'s (x, w_ih, bounds, claims, helper): with ``x``, the input side to compute in
    ranges (``_project``), beside the recurrence where a helper can start; without, none. W_ih
    goes as it is, multiplied by MKL's plain sgemm (``_sgemm_nt``) or OpenBLAS: packing it for
    MKL's packed product first took 167 µs of a (1000, 1, 128) call after other work, before the
    recurrence's first step. One layer's forward, new / packed, medians of 150 interleaved calls:
    (300, 1, 256) 0.89, (100, 4, 128) 0.94, (500, 1, 128) 0.97, (1000, 1, 128) 0.97-1.00 (there
    the recurrence computes the first short ranges itself, each sgemm call packing W_ih inside MKL
    again)."""
    if x is None:
        return _no_input_side(like.dtype)
    bounds = _ranges(len(batch_sizes), batch_sizes[0])
    claims = np.zeros(len(bounds), dtype=np.int64)
    return _array(x, like, 2), _array(w_ih, like, 2), bounds, claims, _helper(like)


def _recur(
    gates: np.ndarray, cell_new: np.ndarray, cells: np.ndarray, out: np.ndarray, transposes: tuple,
    buffers: tuple, gate_inside: np.ndarray, hidden: np.ndarray, cell: np.ndarray, w: LSTMWeights,
    masks: LSTMMasks, batch_sizes: Sequence[int], reverse: bool, options: LSTMOptions, x: Tensor | None,
) -> None:  # fmt: skip
    """The forward recurrence over NumPy arrays (``NumbaLoops.forward``'s workspace, or
    ``lstm_inference``'s own): the parts of the batch on torch's threads. With ``x`` the kernel
    computes the input side too: beside a recurrence of one part (``_project``), step by step in
    each part of a split one (``_steps_input``; ``transposes[0]`` is then x). ``hidden`` and
    ``cell`` (B, P), (B, H) come in as the initial state and leave as the final one;
    ``transposes`` = (x (N, I), x.T (I, N), the h_{t-1}'s transpose (P, N)) and ``buffers`` =
    (unprojected, hh_hat, hh_rstd, cell_hat, cell_rstd), empty where unasked or an option is off."""
    shared, last = _shared(w, masks, gates, batch_sizes, options)
    batch = cell.shape[0]
    parts = _parts(shared[-1], _step_work(w))
    by_step = x is not None and len(parts) > 1
    input_side = _input_side(None if by_step else x, w.w_ih, gates, batch_sizes)
    arguments = (
        constants(gates.dtype, cell.shape[1]), _mkl_addresses(gates, batch), gates, _bias(w, gates), cell_new,
        cells, out, *transposes, *buffers, gate_inside, hidden, cell,
        _blocked(w.w_hh, gates, batch, transpose=True), _blocked(w.w_hr, gates, batch, transpose=True),
        _blocked(w.w_ih if by_step else None, gates, batch, transpose=True), *shared, *input_side,
    )  # fmt: skip
    with _blas_threads(gates, batch):
        if len(parts) == 1:  # without pool.run's partial, a copy of the 40 arguments
            _forward(*arguments, *parts[0], reverse, *last)
        else:
            pool.run([functools.partial(_forward, *arguments, *part, reverse, *last) for part in parts])


# The input side step by step in each part of a split recurrence (``_recur``), where W_ih.T
# (I, 4H) is one panel of OpenBLAS's small-matrix path (``_blocked``) of at least
# ``LEAST_STEP_INPUT`` floats: each step's gate rows are then written just before the pass that
# adds W_hh h to them, in cache, where one product of every row beforehand left them in memory.
# Measured on the 2-core `znver5`, step by step / before, whole calls in one process, each round
# in a shuffled order with nn.LSTM's (medians of 40-60 rounds; in a fixed order the call after
# nn.LSTM's came out up to 13% slower): inference (T, B, I=H) = (100, 32, 64) 0.92, (100, 16,
# 128) 0.96, (100, 32, 128) 0.94, (100, 64, 128) 0.92; training (100, 32, 64) 0.98, (100, 32,
# 128) 0.98, (200, 16, 64) 0.98, (100, 64, 128) 0.99. Step by step where W_ih.T is wider (OpenBLAS
# multiplies it in several panels), inference: H = 192 1.03, H = 256 1.04, I = 64, H = 256 1.02,
# I = 256, H = 128 1.01, I = 512, H = 64 1.00; where it is small, H = 32: 1.01. On MKL's packed
# products (the `znver3`, no AVX-512) it was slower: (100, 32, 128) inference 1.035, training
# 0.999, (100, 16, 128) 1.12, (100, 64, 128) 0.986, (100, 64, 256) 1.065 and 1.029; OpenBLAS
# without its small-matrix path multiplies W_ih.T whole like any W, and was not measured so.
LEAST_STEP_INPUT = 2**14


def _steps_input(x: Tensor, w: LSTMWeights, batch_sizes: Sequence[int]) -> bool:
    """Whether the kernel computes the input side step by step in each part of the recurrence
    (on OpenBLAS's small-matrix path only: ``LEAST_STEP_INPUT``)."""
    floats = w.w_ih.numel()
    return (
        LEAST_STEP_INPUT <= floats
        and 8 * floats <= SMALL_PRODUCT
        and small_path()
        and not _on_mkl(_NUMPY_DTYPES[x.dtype], batch_sizes[0])
        and len(_parts(batch_sizes, _step_work(w))) > 1
    )


def _projects_beside(x: Tensor, w: LSTMWeights, batch_sizes: Sequence[int]) -> bool:
    """Whether the recurrence runs on one thread of several (``_parts``), W_ih x is worth a second
    (``MIN_PROJECT_WORK``) and torch's OpenMP can start one (``pool.region_addresses``): then
    ``_project`` computes it there, range of steps by range."""
    return (
        x.shape[0] * w.w_ih.numel() >= MIN_PROJECT_WORK
        and torch.get_num_threads() > 1
        and pool.region_addresses()[0] != 0
        and len(_parts(batch_sizes, _step_work(w))) == 1
    )


class NumbaLoops:
    """The LSTM recurrences as one compiled call each (see ``lstm_function.Loops``)."""

    SUMS_GAINS = True
    ADDS_BIAS = True  # in the pass that adds W_hh h, while the row is in cache
    TRANSPOSES = True

    def projects_input(self, x: Tensor, w: LSTMWeights, batch_sizes: Sequence[int]) -> bool:
        """Step by step in each part of a split recurrence (``_steps_input``), or beside a
        recurrence on one thread (``_projects_beside``)."""
        return _steps_input(x, w, batch_sizes) or _projects_beside(x, w, batch_sizes)

    def forward(
        self, ws: Workspace, h0: Tensor, c0: Tensor, w: LSTMWeights, masks: LSTMMasks,
        batch_sizes: Sequence[int], reverse: bool, options: LSTMOptions, x: Tensor | None = None,
        project: bool = False,
    ) -> tuple[Tensor, Tensor]:  # fmt: skip
        hidden, cell = (s.detach().clone(memory_format=torch.contiguous_format) for s in (h0, c0))
        like = ws.gates.numpy()
        inputs = x if ws.inputs_t is not None or project else None
        transposes = tuple(_array(t, like, 2) for t in (inputs, ws.inputs_t, ws.previous_t))
        buffers = tuple(
            _array(t, like, 2) for t in (ws.unprojected, ws.hh_hat, ws.hh_rstd, ws.cell_hat, ws.cell_rstd)
        )
        _recur(
            like, ws.cell_new.numpy(), ws.cells.numpy(), ws.out.numpy(), transposes, buffers, _flags(ws.gate_inside),
            hidden.numpy(), cell.numpy(), w, masks, batch_sizes, reverse, options, x if project else None,
        )  # fmt: skip
        return hidden, cell

    def backward(
        self, ws: Workspace, gs: Gradients, d_out: Tensor, d_hn: Tensor, d_cn: Tensor, w: LSTMWeights,
        masks: LSTMMasks, batch_sizes: Sequence[int], reverse: bool, options: LSTMOptions,
    ) -> tuple[Tensor, Tensor]:  # fmt: skip
        dh, dc = d_hn.clone().contiguous(), d_cn.clone().contiguous()
        like = ws.gates.numpy()
        shared, last = _shared(w, masks, like, batch_sizes, options)
        buffers = (ws.hh_hat, ws.hh_rstd, ws.cell_hat, ws.cell_rstd)
        batch = d_cn.shape[0]
        arguments = (
            constants(like.dtype, d_cn.shape[1]), _mkl_addresses(like, batch), like, ws.cell_new.numpy(),
            *(_array(t, like, 2) for t in buffers), _flags(ws.gate_inside), gs.cell_prev.numpy(),
            d_out.numpy(), dh.numpy(), dc.numpy(), gs.d_gates.numpy(), gs.d_recurrent.numpy(),
            _array(gs.d_projected, like, 2), _blocked(w.w_hh, like, batch), _blocked(w.w_hr, like, batch),
            *shared,
        )  # fmt: skip
        parts = _parts(shared[-1], _step_work(w))
        # each part's own float64 sums of the gains' gradients (no two threads add into one)
        gains = np.zeros((len(parts), 0 if gs.gains is None else gs.gains.shape[0]))
        calls = [
            functools.partial(_backward, *arguments, *part, gains[k], reverse, *last)
            for k, part in enumerate(parts)
        ]
        with _blas_threads(like, batch):
            pool.run(calls)
        if gs.gains is not None:
            gs.gains.add_(torch.from_numpy(gains.sum(0)))
        return dh, dc


_LOOPS = NumbaLoops()
lstm_layer = lstm_layer_with(_LOOPS)


def _layer_inference(
    rows: Tensor, w: LSTMWeights, hidden: np.ndarray, cell: np.ndarray, batch_sizes: Sequence[int],
    reverse: bool, options: LSTMOptions,
) -> np.ndarray:  # fmt: skip
    """One layer direction of ``lstm_inference``: rows (N, I) -> out (N, P); ``hidden`` and
    ``cell`` (B, P), (B, H) come in as the initial state and leave as the final one. With the
    input side step by step, the gates, c' and clipping flags that no backward reads take one
    row a sequence, written again every step (inference (100, 32, 128) and (100, 64, 128) 0.96
    of the time of N rows, (100, 32, 64) 0.99: 6.5 MB fewer writes at (100, 32, 128))."""
    size = cell.shape[1]
    by_step = _steps_input(rows, w, batch_sizes)
    projecting = by_step or _projects_beside(rows, w, batch_sizes)
    room = batch_sizes[0] if by_step else rows.shape[0]  # rows of gates, c' and the clipping flags
    gates = np.empty((room, 4 * size), hidden.dtype) if projecting else linear(rows, w.w_ih).numpy()
    none = _empty(gates.dtype, 2)
    cell_new = np.empty((room, size), gates.dtype)
    out = np.empty((rows.shape[0], hidden.shape[1]), gates.dtype)
    unprojected = none if w.w_hr is None else np.empty((rows.shape[0], size), gates.dtype)
    clipped = _discarded_flags(options, *gates.shape)
    inputs = _array(rows, gates, 2) if projecting else none
    _recur(
        gates, cell_new, cell_new, out, (inputs, none, none), (unprojected, none, none, none, none), clipped,
        hidden, cell, w, NO_MASKS, batch_sizes, reverse, options, rows if projecting else None,
    )  # fmt: skip
    return out


def lstm_inference(
    x: Tensor, state: tuple[Tensor, Tensor] | None, weights: Sequence[LSTMWeights], *,
    bidirectional: bool = False, options: LSTMOptions = PLAIN, layer: Callable | None = None,
) -> tuple[Tensor, tuple[Tensor, Tensor]]:  # fmt: skip
    """A stacked LSTM's forward over a padded batch, with nothing to differentiate and nothing
    kept for backward: the layers of ``lstm_layer`` (the same products and recurrences, so the
    same numbers) with NumPy arrays from end to end. A short call is mostly its Python: each
    torch call costs 3-10 µs after other work, and ``lstm_layer``'s autograd-ready workspace,
    state copies and views took 50-100 µs of a (200, 1, 64) call of 450-650 µs (measured).

    x (T, B, I) float32 or float64 on the CPU; state (h_0 (L*D, B, P), c_0 (L*D, B, H)), or None
    for zeros; one ``LSTMWeights`` per layer and direction, in h_0's row order, without peepholes
    or layer norm (a projection is fine); no masks; ``layer`` runs a layer direction, with
    ``_layer_inference``'s arguments (by default that). Returns out (T, B, D*P) and (h_n, c_n).
    """
    layer = layer or _layer_inference
    steps, batch = x.shape[:2]
    directions = 2 if bidirectional else 1
    size, hidden_size = weights[0].w_hh.shape[0] // 4, weights[0].w_hh.shape[1]
    rows = (x.detach() if x.requires_grad else x).reshape(steps * batch, x.shape[2])
    dtype = _NUMPY_DTYPES[x.dtype]
    if state is None:
        hidden = np.zeros((len(weights), batch, hidden_size), dtype)
        cell = np.zeros((len(weights), batch, size), dtype)
    else:  # the kernels carry the state in place: copies, whose rows become h_n and c_n
        hidden, cell = (np.array(_numpy(s), order="C") for s in state)
    batch_sizes = [batch] * steps
    for level in range(len(weights) // directions):
        outs = [
            layer(rows, weights[k], hidden[k], cell[k], batch_sizes, k % directions == 1, options)
            for k in range(level * directions, (level + 1) * directions)
        ]
        rows = torch.from_numpy(outs[0] if directions == 1 else np.concatenate(outs, axis=1))
    return rows.view(steps, batch, -1), (torch.from_numpy(hidden), torch.from_numpy(cell))


if numba is not None:
    with contextlib.suppress(OSError):  # where the cache cannot be written, Numba keeps nothing either
        drop_stale_entries(Path(cache_directory()), [Path(__file__).with_name(name) for name in SOURCES])
