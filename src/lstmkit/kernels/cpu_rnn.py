"""Backend "cpu" for the plain RNN: each recurrence of one layer and direction as one Numba call.

``NumbaRNNLoops`` plugs into the shared ``rnn_function.RNNLayer``, as ``cpu.NumbaLoops`` into the
LSTM's, and uses the same machinery: each step's W_hh product on BLAS (``cpu._product``: MKL's
gemm from a packed W for float32 on Intel processors and where OpenBLAS has no small-matrix
path, that path elsewhere),
the activation fused with the addition of the product, the batch split over torch's threads
when the call has the work for it (``cpu._parts``). It computes what ``torch_ops.TorchRNNLoops``
computes, in the same order; both are tested against the reference.

Shapes: N rows, B sequences, H hidden size.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
from torch import Tensor

from . import pool
from .cpu import (
    ONE,
    ZERO,
    _aligned_empty,
    _blas_threads,
    _blocked,
    _borrowed,
    _copy,
    _jit,
    _keep_alive,
    _mkl_addresses,
    _one_mkl_thread,
    _parts,
    _product,
    _restore_mkl_threads,
    _rows,
    _tanh,
    _wide_vectors,
    constants,
)
from .rnn_function import rnn_layer_with


@_jit
def _forward(k, mkl_addresses, out, hidden, w_hh_t, offsets, batch_sizes, first, last, reverse, relu):
    """Sequences [first, last): out's rows += h_{t-1} @ W_hh.T, activated; hidden h0 -> h_n."""
    _wide_vectors()
    out, hidden = _borrowed(out), _borrowed(hidden)
    steps = batch_sizes.shape[0]
    batch, size = hidden.shape
    zero = k[ZERO]
    owners = (_aligned_empty(batch, size, out),)
    z = _borrowed(owners[0])  # W_hh h_{t-1}
    threads = _one_mkl_thread(mkl_addresses)
    for s in range(steps):
        t = steps - 1 - s if reverse else s
        start, stop = offsets[t], min(batch_sizes[t], last)
        if stop <= first:
            continue
        _product(hidden[first:stop], w_hh_t, z[first:stop], mkl_addresses)
        for b in range(first, stop):
            row, product = out[start + b], z[b]
            if relu:  # NaN stays NaN, as in torch's relu
                for j in range(size):
                    value = row[j] + product[j]
                    row[j] = zero if value < zero else value
            else:
                for j in range(size):
                    row[j] = _tanh(row[j] + product[j], k)
            _copy(row, hidden[b])
    _restore_mkl_threads(mkl_addresses, threads)
    _keep_alive(owners)


@_jit
def _backward(
    k, mkl_addresses, d_pre, dh, d_out, out, w_hh, offsets, batch_sizes, first, last, reverse, relu
):
    """Sequences [first, last), the forward steps backwards: d_pre's rows = (dh + d_out)
    times the activation's derivative; dh dL/dh_n -> dL/dh0."""
    _wide_vectors()
    d_pre, dh, d_out, out = _borrowed(d_pre), _borrowed(dh), _borrowed(d_out), _borrowed(out)
    steps = batch_sizes.shape[0]
    size = dh.shape[1]
    one, zero = k[ONE], k[ZERO]
    threads = _one_mkl_thread(mkl_addresses)
    for s in range(steps - 1, -1, -1):
        t = steps - 1 - s if reverse else s
        start, stop = offsets[t], min(batch_sizes[t], last)
        if stop <= first:
            continue
        for b in range(first, stop):
            row = start + b
            hidden, carried, given, d = out[row], dh[b], d_out[row], d_pre[row]
            if relu:
                for j in range(size):
                    d[j] = carried[j] + given[j] if hidden[j] > zero else zero
            else:
                for j in range(size):
                    d[j] = (carried[j] + given[j]) * (one - hidden[j] * hidden[j])
        _product(d_pre[start + first : start + stop], w_hh, dh[first:stop], mkl_addresses)
    _restore_mkl_threads(mkl_addresses, threads)


class NumbaRNNLoops:
    """The plain RNN's recurrences as one compiled call each (see ``rnn_function.RNNLoops``)."""

    def forward(
        self, out: Tensor, hidden: Tensor, w_hh: Tensor, batch_sizes: Sequence[int], reverse: bool,
        nonlinearity: str,
    ) -> None:  # fmt: skip
        like = out.numpy()
        sizes, offsets = _rows(batch_sizes)
        arguments = (
            constants(like.dtype, hidden.shape[1]), _mkl_addresses(like, hidden.shape[0]), like, hidden.numpy(),
            _blocked(w_hh, like, hidden.shape[0], transpose=True), offsets, sizes,
        )  # fmt: skip
        self._run(_forward, arguments, like, sizes, w_hh, (reverse, nonlinearity == "relu"))

    def backward(
        self, d_pre: Tensor, dh: Tensor, d_out: Tensor, out: Tensor, w_hh: Tensor, batch_sizes: Sequence[int],
        reverse: bool, nonlinearity: str,
    ) -> None:  # fmt: skip
        like = out.numpy()
        sizes, offsets = _rows(batch_sizes)
        arguments = (
            constants(like.dtype, dh.shape[1]), _mkl_addresses(like, dh.shape[0]), d_pre.numpy(), dh.numpy(),
            d_out.numpy(),
            like, _blocked(w_hh, like, dh.shape[0]), offsets, sizes,
        )  # fmt: skip
        self._run(_backward, arguments, like, sizes, w_hh, (reverse, nonlinearity == "relu"))

    @staticmethod
    def _run(
        kernel, arguments: tuple, like: np.ndarray, sizes: np.ndarray, w_hh: Tensor, after: tuple
    ) -> None:
        """``kernel`` over the batch's parts (``cpu._parts``), on one BLAS thread each."""
        calls = [functools.partial(kernel, *arguments, *part, *after) for part in _parts(sizes, w_hh.numel())]
        with _blas_threads(like, int(sizes[0])):
            pool.run(calls)


rnn_layer = rnn_layer_with(NumbaRNNLoops())
