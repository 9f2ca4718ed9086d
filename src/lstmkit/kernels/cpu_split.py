"""One sequence's inference recurrence split by cell units over two cores (``layer_inference``).

At batch 1 a step's recurrent product is a mat-vec, h_{t-1} (H,) @ W_hh.T (H, 4H), that streams
all of W_hh from the cache: one core spends 4.6 µs a step on it at H = 128 (256 KB of float32, at
about 23 bytes a cycle from L2), and ``cpu._forward`` has nothing for the second core to do but
the input side. Here the two members of one region of torch's OpenMP runtime
(``pool.region_addresses``) each own half of the cell units: the four gates' rows of W_hh and
W_ih for those units, gathered by the member itself into its own cache, the units' c, and their
half of h. A step needs the whole of h_{t-1}, so each member publishes its half of h_t into a
shared double buffer and then the step it has finished (``_store_release``); the other waits for
that before its next step (``_load_acquire``). The input side goes with the units: every
``CHUNK`` steps each member multiplies the chunk's rows of x by its own rows of W_ih.

Measured on the 2-core `znver3`, whole inference calls, split / ``cpu._forward`` (one process,
shuffled order, medians of 60 rounds): float32 (T, B, H) = (200, 1, 32) 0.68, (200, 1, 48) 0.71,
(200, 1, 64) 0.60; float64 (200, 1, 32) 0.56, (200, 1, 64) 0.59, (1000, 1, 128) 0.56; in
separate processes, float32 (1000, 1, 128) 3.27 against 5.11 ms, (300, 1, 256) 3.95 against 6.52.
``CHUNK``: 32 and 128 steps took 0.99-1.06 and 1.14-1.27 of the time of 64 (before the four-row
passes of ``_add_rows``). A panel under ``BLOCKED_BYTES`` is multiplied a block of columns at a time
with the sums in registers (``_add_blocks``): (200, 1, 64) 0.89 of the time of the row passes.

The arithmetic of a unit is ``cpu._activate`` and ``cpu._squash``, the sequence kernels' own, on
the member's slice of the gates (i, f, g, o), so the numbers are theirs: the same products up to
BLAS's order of summation, checked against nn.LSTM and the reference (tests/test_split.py).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numba
import numpy as np
import torch
from torch import Tensor

from . import cpu, pool
from .contract import LSTMOptions, LSTMWeights
from .cpu import (
    ALIGNMENT,
    _activate,
    _address,
    _aligned_empty,
    _bias,
    _block_product,
    _borrowed,
    _call_count,
    _callback,
    _copy,
    _jit,
    _keep_alive,
    _load_acquire,
    _mkl_addresses,
    _one_mkl_thread,
    _pointer,
    _region_end,
    _region_start,
    _restore_mkl_threads,
    _squash,
    _store_release,
    _times_transposed,
    _wide_vectors,
    step_constants,
)

# Steps whose input side a member computes in one product: (CHUNK, I) @ (I, 4H / 2), on MKL's
# sgemm where the step products are (``cpu.MKL_PRODUCTS``; OpenBLAS took 1.09-1.17 of its time).
CHUNK = 64
# The least W_hh worth splitting, in bytes: a member gains half the mat-vec and pays the hand-off
# of h between the cores at every step (some hundreds of nanoseconds), so the split pays where
# one core streams W_hh slowly. On the `znver3` (AVX2, 32 bytes a cycle from L2) it did from the
# smallest size measured (module docstring; H = 32 in float32 is 16 KB). On the AVX-512 machines
# of earlier sessions (an Intel Xeon, a `znver5`: twice the width from L2) prototypes of the same
# split took 1.05 against 0.68 and 0.82-0.86 against 0.80 µs a step at H = 64 (64 KB), and
# 1.8 against 2.55 µs at H = 128 (256 KB): there it starts at 256 KB.
MIN_SPLIT_BYTES = 2**14
MIN_SPLIT_BYTES_AVX512 = 2**18
# A member's panel (its units' columns of W_hh.T, in bytes) below which it multiplies by
# ``_add_blocks``, above by ``_add_rows``. Measured on the `znver3`, the split kernel with one
# and with the other in one process (medians of 600 interleaved calls, T = 400, blocks / row
# passes): float32 H = 32 (a panel of 8 KB) 0.86, H = 48 0.92, H = 64 (32 KB) 0.85, H = 96 0.88,
# H = 112 (100 KB) 0.90, H = 128 (128 KB) 1.14; float64 H = 32 0.84, H = 64 (64 KB) 0.94, H = 96
# (144 KB) 0.98. Where the panel streams from L2 every step, the row passes read it in order and
# the blocks across its rows. Both add the rows in order (on the `znver3` to the same bits: LLVM
# fuses the row passes' products into the same chain of multiply-adds). On AVX-512 processors
# the split starts at panels of 128 KB (``MIN_SPLIT_BYTES_AVX512``): no blocks there.
BLOCKED_BYTES = 2**17
# ``_member``'s progress flags: each on a cache line of its own (the flags array is 32-byte
# aligned, so 16 int64 apart are on different lines)
_FLAG = 16


@functools.cache
def _least_bytes() -> int:
    """``MIN_SPLIT_BYTES``, or ``MIN_SPLIT_BYTES_AVX512`` where LLVM compiles for AVX-512."""
    return MIN_SPLIT_BYTES_AVX512 if "+avx512f" in cpu.target_machine()[2].split(",") else MIN_SPLIT_BYTES


def splits(rows: Tensor, w: LSTMWeights, batch_sizes: Sequence[int]) -> bool:
    """Whether ``layer_inference`` splits this layer direction: one sequence of two steps or more,
    no projection, a W_hh of ``_least_bytes()`` or more, two or more torch threads and torch's
    OpenMP at hand."""
    return (
        batch_sizes[0] == 1
        and len(batch_sizes) > 1
        and w.w_hr is None
        and w.w_hh.numel() * w.w_hh.element_size() >= _least_bytes()
        and torch.get_num_threads() > 1
        and pool.region_addresses()[0] != 0
        and pool.team_size_address() != 0
    )


def _cut(size: int, itemsize: int) -> int:
    """The first unit of the second member: half of ``size``, rounded to a whole cache line of h
    so that the members never write the same line, where that moves it by a sixteenth of the
    units or less (a member with more units makes the other wait at every step)."""
    line = ALIGNMENT // itemsize
    cut = (size // 2 + line // 2) // line * line
    return cut if 16 * abs(2 * cut - size) <= 2 * size else size // 2


@_jit
def _add_rows(a, panel, out):
    """out += a @ panel for one row a (K,) and a panel (K, n): ``cpu._row_product``'s pass over
    the panel's rows, four rows to a pass over ``out``, which stores ``out`` a quarter as often
    (one core of the `znver3`, one member's step in a loop of its own, H = 128 split / whole:
    2.69 / 4.58 µs a row at a time, 2.13 / 3.68 four at a time; H = 64 0.91 / 1.24 and 0.80 /
    1.07; on the AVX-512 `znver5` four at a time was slower for the whole W, and the split was
    not measured there)."""
    n = a.shape[0]
    for k in range(0, n - 3, 4):
        f0, f1, f2, f3 = a[k], a[k + 1], a[k + 2], a[k + 3]
        r0, r1, r2, r3 = panel[k], panel[k + 1], panel[k + 2], panel[k + 3]
        for j in range(out.shape[0]):
            out[j] += f0 * r0[j] + f1 * r1[j] + f2 * r2[j] + f3 * r3[j]
    for k in range(n - n % 4, n):
        factor, row = a[k], panel[k]
        for j in range(out.shape[0]):
            out[j] += factor * row[j]


@_jit
def _add_blocks(a, panel, out):
    """out += a @ panel as ``_add_rows``, a block of columns at a time whose sums stay in
    registers over all of the panel's rows (``cpu._block_product``): blocks of eight 32-byte
    vectors (eight sums and a broadcast of 16 AVX2 registers), then of four, two and one, then
    the last columns, fewer than a vector, one by one."""
    lanes = 32 // out.itemsize
    n = out.shape[0]
    j = 0
    while j + 8 * lanes <= n:
        _block_product(a, panel, out, j, 8)
        j += 8 * lanes
    if j + 4 * lanes <= n:
        _block_product(a, panel, out, j, 4)
        j += 4 * lanes
    if j + 2 * lanes <= n:
        _block_product(a, panel, out, j, 2)
        j += 2 * lanes
    if j + lanes <= n:
        _block_product(a, panel, out, j, 1)
        j += lanes
    for k in range(a.shape[0]):
        factor, row = a[k], panel[k]
        for c in range(j, n):
            out[c] += factor * row[c]


@_jit
def _add_panel(a, panel, out, blocked):
    """out += a @ panel by ``_add_blocks`` where ``blocked``, else by ``_add_rows``."""
    if blocked:
        _add_blocks(a, panel, out)
    else:
        _add_rows(a, panel, out)


@_jit
def _member(
    m, cut, solo, mkl_addresses, x, w_ih, w_hh, bias, out, hidden, cell, shared, flags, reverse, coupled,
    clip,
):  # fmt: skip
    """Member ``m``'s units of the recurrence over x (T, I) -> out (T, H): units [0, cut) for the
    first, [cut, H) for the second, all of them ``solo``. ``shared`` (2, H') holds h_{t-1} in row
    t % 2 (h_0 in row 0 before the call); hidden (1, H) and cell (1, H) come in as the initial
    state (cell) and leave as the final one. W_ih (4H, I), W_hh (4H, H) as the module holds them;
    ``bias`` (4H,) = b_ih + b_hh."""
    _wide_vectors()
    steps, size = x.shape[0], cell.shape[1]
    low, high = (0, size) if solo else ((0, cut) if m == 0 else (cut, size))
    units = high - low
    k = step_constants(x, units)
    # this member's rows of W_ih and of W_hh.T's columns, gate by gate (i, f, g, o): in its cache
    w_in = np.empty((4 * units, x.shape[1]), dtype=x.dtype)
    panel = np.empty((size, 4 * units), dtype=x.dtype)
    b = np.empty(4 * units, dtype=x.dtype)
    for q in range(4):
        for j in range(units):
            _copy(w_ih[q * size + low + j], w_in[q * units + j])
            b[q * units + j] = bias[q * size + low + j]
    for i in range(size):  # W_hh's rows for the units, 16 KB at H = 128, stay in L1 over i
        target = panel[i]
        for q in range(4):
            for j in range(units):
                target[q * units + j] = w_hh[q * size + low + j, i]
    owners = (_aligned_empty(CHUNK, 4 * units, x), _aligned_empty(1, 4 * units, x))
    x_in, z = _borrowed(owners[0]), _borrowed(owners[1])[0]  # x_in: the chunk's W_ih x
    shared, out = _borrowed(shared), _borrowed(out)
    a = np.empty(4 * units, dtype=x.dtype)
    c = np.empty(units, dtype=x.dtype)
    c_new = np.empty(units, dtype=x.dtype)
    h = np.empty(units, dtype=x.dtype)
    _copy(cell[0, low:high], c)
    none = np.empty(0, dtype=x.dtype)  # no peepholes
    inside = np.empty((1 if clip < np.inf else 0, 4 * units), dtype=np.bool_)  # clipping flags, unread
    mine, other = _FLAG * m, _FLAG * (1 - m)
    blocked = panel.size * panel.itemsize < BLOCKED_BYTES
    threads = _one_mkl_thread(mkl_addresses)
    first = 0  # the chunk's first row of x
    for s in range(steps):
        if s % CHUNK == 0:
            n = min(CHUNK, steps - s)
            first = steps - s - n if reverse else s
            _times_transposed(mkl_addresses[2], x[first : first + n], w_in, x_in[:n])
        t = steps - 1 - s if reverse else s
        previous = shared[s % 2, :size]
        # the rows of this member's own units first, whose h it wrote itself: the other's half
        # crosses between the cores meanwhile
        for j in range(4 * units):
            z[j] = 0
        _add_panel(previous[low:high], panel[low:high], z, blocked)
        if not solo:
            while _load_acquire(flags, other) < s:
                pass
            _add_panel(previous[:low], panel[:low], z, blocked)
            _add_panel(previous[high:], panel[high:], z, blocked)
        row = x_in[t - first]
        for j in range(4 * units):
            a[j] = z[j] + row[j] + b[j]
        _activate(a, c, c_new, none, none, none, inside, 0, coupled, clip, k)
        _squash(a[3 * units :], c_new, h, k)
        _copy(c_new, c)
        _copy(h, shared[(s + 1) % 2, low:high])
        _copy(h, out[t, low:high])
        _store_release(flags, mine, s + 1)
    _restore_mkl_threads(mkl_addresses, threads)
    _copy(c, cell[0, low:high])
    _copy(h, hidden[0, low:high])
    _keep_alive(owners)


# ``_member``'s arguments for the second member, as the numbers of an int64 array: the three MKL
# addresses, x's address, rows and width, W_ih's and W_hh's addresses, the cell size, the
# addresses of bias, out, hidden, cell, shared, shared's width, flags' address, cut, reverse,
# coupled, the address of clip (one float64)
_DESCRIPTION = 20


@_jit
def _describe(
    mkl_addresses, x, w_ih, w_hh, bias, out, hidden, cell, shared, flags, cut, reverse, coupled, clip
):
    """``_member``'s arguments for the second member (``_DESCRIPTION``), valid while they live."""
    d = np.empty(_DESCRIPTION, dtype=np.int64)
    d[0], d[1], d[2] = mkl_addresses
    d[3], d[4], d[5] = _address(x), x.shape[0], x.shape[1]
    d[6], d[7], d[8] = _address(w_ih), _address(w_hh), cell.shape[1]
    d[9], d[10], d[11], d[12] = _address(bias), _address(out), _address(hidden), _address(cell)
    d[13], d[14], d[15] = _address(shared), shared.shape[1], _address(flags)
    d[16], d[17], d[18], d[19] = cut, reverse, coupled, _address(clip)
    return d


@_jit
def _help(data, dtype):
    """The second member on the arrays that ``_describe`` wrote to ``data`` (a pointer)."""
    d = numba.carray(data, (_DESCRIPTION,), np.int64)
    steps, width, size = d[4], d[5], d[8]
    _member(
        1, d[16], False, (d[0], d[1], d[2]), numba.carray(_pointer(d[3], dtype), (steps, width)),
        numba.carray(_pointer(d[6], dtype), (4 * size, width)),
        numba.carray(_pointer(d[7], dtype), (4 * size, size)), numba.carray(_pointer(d[9], dtype), (4 * size,)),
        numba.carray(_pointer(d[10], dtype), (steps, size)), numba.carray(_pointer(d[11], dtype), (1, size)),
        numba.carray(_pointer(d[12], dtype), (1, size)), numba.carray(_pointer(d[13], dtype), (2, d[14])),
        numba.carray(_pointer(d[15], np.int64), (2 * _FLAG,)), d[17] != 0, d[18] != 0,
        numba.carray(_pointer(d[19], np.float64), (1,))[0],
    )  # fmt: skip


@functools.cache
def _member_address(dtype: np.dtype) -> int:
    """The address of ``void member(void *data)``, ``_help`` for arrays of ``dtype``: the C
    function that the region's second member calls, compiled (or loaded from the disk cache) on
    first use."""
    scalar = dtype.type

    @_callback
    def member(data):
        _help(data, scalar)

    return member.address


@_jit
def _split(region, mkl_addresses, x, w_ih, w_hh, bias, out, hidden, cell, cut, reverse, coupled, clip):
    """The recurrence on two members of a region (``region`` = the addresses of
    ``GOMP_parallel_start``, ``GOMP_parallel_end``, ``omp_get_num_threads`` and the second
    member's function), or on one where the runtime gives the region no second thread (a region
    within a region): that one never waits for a member that will not come."""
    start, end, team, member = region
    size = cell.shape[1]
    line = ALIGNMENT // x.itemsize
    shared = _aligned_empty(2, (size + line - 1) // line * line, x)
    _copy(hidden[0], shared[0, :size])
    flags = np.zeros(2 * _FLAG, dtype=np.int64)
    clip_box = np.full(1, clip, dtype=np.float64)
    d = _describe(
        mkl_addresses, x, w_ih, w_hh, bias, out, hidden, cell, shared, flags, cut, reverse, coupled, clip_box
    )
    _region_start(start, member, _address(d), 2)
    solo = _call_count(team) < 2
    _member(
        0, cut, solo, mkl_addresses, x, w_ih, w_hh, bias, out, hidden, cell, shared, flags, reverse, coupled,
        clip,
    )  # fmt: skip
    _region_end(end)
    _keep_alive((shared, flags, clip_box, d))


def layer_inference(
    rows: Tensor, w: LSTMWeights, hidden: np.ndarray, cell: np.ndarray, batch_sizes: Sequence[int],
    reverse: bool, options: LSTMOptions,
) -> np.ndarray:  # fmt: skip
    """One layer direction of ``cpu.lstm_inference``: rows (N, I) -> out (N, H); ``hidden`` and
    ``cell`` (B, H) come in as the initial state and leave as the final one. Split over two cores
    where ``splits`` says so, else ``cpu._layer_inference``."""
    if not splits(rows, w, batch_sizes):
        return cpu._layer_inference(rows, w, hidden, cell, batch_sizes, reverse, options)
    size = cell.shape[1]
    x = cpu._array(rows, hidden, 2)
    w_ih, w_hh = (cpu._array(m, hidden, 2) for m in (w.w_ih, w.w_hh))
    bias = _bias(w, np.empty((0, 4 * size), x.dtype))
    out = np.empty((x.shape[0], size), x.dtype)
    start, end = pool.region_addresses()
    region = (start, end, pool.team_size_address(), _member_address(x.dtype))
    clip = np.inf if options.clip is None else float(options.clip)
    with cpu._blas_threads(x, CHUNK):
        _split(
            region, _mkl_addresses(x, CHUNK), x, w_ih, w_hh, bias, out, hidden, cell, _cut(size, x.itemsize),
            reverse, options.coupled, clip,
        )  # fmt: skip
    return out
